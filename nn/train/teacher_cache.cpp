// teacher_cache.cpp: computing, storing and reading a teacher's outputs ahead of training (teacher_cache.h).
#include "nn/train/teacher_cache.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/cpu_features.h"
#include "core/format.h"
#include "core/h5io.h"
#include "core/ops.h"
#include "core/sha256.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

constexpr const char* kFormat = kTeacherCacheFormat;
constexpr int64_t kVersion = 1;
// A build keeps its work in this many parts (build).
constexpr int64_t kParts = 20;

std::string floats_str(const std::vector<float>& v) {
  std::string s = "[";
  s += floats_text(v);
  s += "]";
  return s;
}

// The first field in which `have` (the file's) differs from `want` (the run's), "" when none does.
std::string key_difference(const TeacherCacheKey& have, const TeacherCacheKey& want) {
  const auto differs = [](const std::string& field, const std::string& a, const std::string& b) {
    return "made for " + field + " " + a + ", this run has " + b;
  };
  if (have.teachers != want.teachers) {
    const auto shortened = [](const std::vector<std::string>& hashes) {
      std::string s;
      for (const std::string& h : hashes) {
        if (!s.empty()) s += ',';
        s.append(h, 0, 12);
      }
      return s;
    };
    const std::string a = shortened(have.teachers), b = shortened(want.teachers);
    return differs("teachers (SHA-256)", a, b);
  }
  if (have.dataset != want.dataset) return differs("dataset", have.dataset, want.dataset);
  if (have.samples != want.samples)
    return differs("training images", std::to_string(have.samples), std::to_string(want.samples));
  if (have.classes != want.classes) return differs("classes", std::to_string(have.classes), std::to_string(want.classes));
  if (have.crop_pad != want.crop_pad)
    return differs("crop_pad", std::to_string(have.crop_pad), std::to_string(want.crop_pad));
  if (have.hflip != want.hflip) return differs("hflip", have.hflip ? "on" : "off", want.hflip ? "on" : "off");
  if (have.mean != want.mean) return differs("mean", floats_str(have.mean), floats_str(want.mean));
  if (have.std != want.std) return differs("std", floats_str(have.std), floats_str(want.std));
  if (have.kernels != want.kernels)
    return differs("the float kernels", have.kernels, want.kernels) +
           " (other kernels round differently: build the cache again on this machine)";
  return "";
}

}  // namespace

int64_t teacher_cache_variants(int64_t crop_pad, bool hflip) {
  return (2 * crop_pad + 1) * (2 * crop_pad + 1) * (hflip ? 2 : 1);
}

int64_t teacher_cache_variant(const SampleOrigin& o, int64_t crop_pad, bool hflip) {
  const int64_t side = 2 * crop_pad + 1;
  return ((o.oy + crop_pad) * side + (o.ox + crop_pad)) * (hflip ? 2 : 1) + (o.flip ? 1 : 0);
}

TeacherCacheKey teacher_cache_key(const std::vector<std::string>& paths, const DataBundle& data) {
  TeacherCacheKey k;
  for (const std::string& p : paths) k.teachers.push_back(sha256_file_hex(p));
  k.dataset = data.source;
  k.samples = data.train.n;
  k.classes = data.spec.num_classes;
  k.crop_pad = data.crop_pad;
  k.hflip = data.hflip;
  k.mean = data.mean;
  k.std = data.std;
  k.kernels = float_path_name(active_float_path());
  return k;
}

namespace {

// The key a cache file was made for, from its attributes. Throws std::runtime_error (without the path) for
// a file that is not a cache of this version.
TeacherCacheKey read_key(const H5File& f) {
  if (!f.has_format(kFormat))
    throw std::runtime_error(std::string("not a teacher cache (no format attribute '") + kFormat + "')");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version != kVersion)
    throw std::runtime_error("teacher cache version " + std::to_string(version) + ", this qatlab reads version " +
                             std::to_string(kVersion));
  TeacherCacheKey k;
  const int64_t teachers = f.get_attr_int("/", "teachers_count");
  if (teachers < 1 || teachers > 64)
    throw std::runtime_error("teachers_count " + std::to_string(teachers) + ", expected 1..64");
  for (int64_t t = 0; t < teachers; ++t) k.teachers.push_back(f.get_attr_string("/", "teacher_" + std::to_string(t)));
  k.dataset = f.get_attr_string("/", "dataset");
  k.samples = f.get_attr_int("/", "samples");
  k.classes = f.get_attr_int("/", "classes");
  k.crop_pad = f.get_attr_int("/", "crop_pad");
  k.hflip = f.get_attr_int("/", "hflip") != 0;
  k.mean = f.get_attr_floats("/", "mean");
  k.std = f.get_attr_floats("/", "std");
  k.kernels = f.get_attr_string("/", "kernels");
  if (k.crop_pad < 0 || k.crop_pad > 64 || k.samples < 1 || k.classes < 1)
    throw std::runtime_error("crop_pad " + std::to_string(k.crop_pad) + ", samples " + std::to_string(k.samples) +
                             ", classes " + std::to_string(k.classes) + ": out of range");
  return k;
}

// Runs f, turning what it throws into std::runtime_error "<path>: ...".
template <class F>
auto naming(const std::string& path, F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    if (what.rfind(path, 0) == 0) throw std::runtime_error(what);
    throw std::runtime_error(path + ": " + what);
  }
}

// The key's fields as attributes of "/" (read back by read_key).
void write_key(H5File& f, const TeacherCacheKey& key) {
  f.set_attr("/", "format", kFormat);
  f.set_attr("/", "format_version", kVersion);
  f.set_attr("/", "teachers_count", static_cast<int64_t>(key.teachers.size()));
  for (size_t t = 0; t < key.teachers.size(); ++t) f.set_attr("/", "teacher_" + std::to_string(t), key.teachers[t]);
  f.set_attr("/", "dataset", key.dataset);
  f.set_attr("/", "samples", key.samples);
  f.set_attr("/", "classes", key.classes);
  f.set_attr("/", "crop_pad", key.crop_pad);
  f.set_attr("/", "hflip", int64_t{key.hflip ? 1 : 0});
  f.set_attr_floats("/", "mean", {static_cast<int64_t>(key.mean.size())}, key.mean);
  f.set_attr_floats("/", "std", {static_cast<int64_t>(key.std.size())}, key.std);
  f.set_attr("/", "kernels", key.kernels);
}

// Part `part`'s logits ((end - begin), V, K) from its file when that was made for this key and range, else
// nothing (missing, or left by another build: made again).
std::optional<std::vector<float>> read_part(const std::string& file, const TeacherCacheKey& key, int64_t begin,
                                            int64_t end, int64_t V) {
  try {
    const H5File f = H5File::open_read(file);
    if (!key_difference(read_key(f), key).empty() || f.get_attr_int("/", "part_begin") != begin ||
        f.get_attr_int("/", "part_end") != end)
      return std::nullopt;
    Shape shape;
    std::vector<float> logits = f.read_floats("logits", &shape);
    if (shape != Shape{end - begin, V, key.classes}) return std::nullopt;
    return logits;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

void TeacherCache::build(Module& teacher, const DataLoader& loader, const TeacherCacheKey& key, const std::string& path,
                         int64_t batch, std::FILE* log) {
  const LoaderOptions& o = loader.options();
  if (o.cutout > 0 || o.crop_pad != key.crop_pad || o.hflip != key.hflip)
    throw std::invalid_argument("TeacherCache::build: the loader augments with crop_pad " + std::to_string(o.crop_pad) +
                                ", hflip " + (o.hflip ? "on" : "off") + ", cutout " + std::to_string(o.cutout) +
                                "; the key says crop_pad " + std::to_string(key.crop_pad) + ", hflip " +
                                (key.hflip ? "on" : "off") + " and cutout must be off");
  if (batch < 1) throw std::invalid_argument("TeacherCache::build: batch " + std::to_string(batch) + ", expected >= 1");
  const int64_t p = key.crop_pad, flips = key.hflip ? 2 : 1;
  const int64_t V = teacher_cache_variants(p, key.hflip), N = key.samples, K = key.classes;
  std::vector<float> logits(static_cast<size_t>(N * V * K));  // (N, V, K)
  // Each part of the images is kept in a file of its own as soon as it is done, so that a build stopped
  // (a session's end) goes on from the parts it finished.
  const std::string parts_dir = path + ".parts";
  fs::create_directories(parts_dir);
  std::vector<SampleOrigin> origins;
  origins.reserve(static_cast<size_t>(batch));
  Batch rows;
  teacher.eval();
  NoGradGuard no_grad;
  // The rows of `origins` through the teacher, into logits (every (sample, variant) in order, `batch` at a time).
  const auto flush = [&] {
    if (origins.empty()) return;
    loader.make_variants(origins, rows);
    const Tensor y = teacher.forward(rows.images);  // (rows, K)
    if (y.dim() != 2 || y.size(0) != static_cast<int64_t>(origins.size()) || y.size(1) != K)
      throw std::invalid_argument("TeacherCache::build: the teacher gives " + shape_str(y.shape()) + " for " +
                                  std::to_string(origins.size()) + " images of " + std::to_string(K) + " classes");
    for (size_t i = 0; i < origins.size(); ++i) {
      const int64_t v = teacher_cache_variant(origins[i], p, key.hflip);
      std::copy(y.data() + i * K, y.data() + (i + 1) * K, logits.begin() + (origins[i].sample * V + v) * K);
    }
    origins.clear();
  };
  const int64_t parts = std::min<int64_t>(kParts, N);
  for (int64_t part = 0; part < parts; ++part) {
    const int64_t begin = N * part / parts, end = N * (part + 1) / parts;
    const std::string file = parts_dir + "/part-" + std::to_string(part) + ".h5";
    if (const auto done = read_part(file, key, begin, end, V)) {
      std::copy(done->begin(), done->end(), logits.begin() + begin * V * K);
    } else {
      for (int64_t n = begin; n < end; ++n)
        for (int64_t oy = -p; oy <= p; ++oy)
          for (int64_t ox = -p; ox <= p; ++ox)
            for (int64_t f = 0; f < flips; ++f) {
              origins.push_back(SampleOrigin{n, static_cast<int32_t>(oy), static_cast<int32_t>(ox), f == 1, false});
              if (static_cast<int64_t>(origins.size()) == batch) flush();
            }
      flush();
      atomic_save_h5(file, [&](H5File& f) {
        write_key(f, key);
        f.set_attr("/", "part_begin", begin);
        f.set_attr("/", "part_end", end);
        f.write_floats("logits", {end - begin, V, K}, logits.data() + begin * V * K);
      });
    }
    if (log) {
      std::fprintf(log, "teacher cache: %lld of %lld images (%lld variants each)\n", static_cast<long long>(end),
                   static_cast<long long>(N), static_cast<long long>(V));
      std::fflush(log);
    }
  }
  atomic_save_h5(path, [&](H5File& f) {
    write_key(f, key);
    f.write_floats("logits", {N, V, K}, logits);
  });
  fs::remove_all(parts_dir);
}

TeacherCache TeacherCache::load(const std::string& path, const TeacherCacheKey& expected) {
  return naming(path, [&] {
    const H5File f = H5File::open_read(path);
    TeacherCache c;
    c.key_ = read_key(f);
    const TeacherCacheKey& k = c.key_;
    if (const std::string d = key_difference(k, expected); !d.empty()) throw std::runtime_error("teacher cache " + d);
    c.variants_ = teacher_cache_variants(k.crop_pad, k.hflip);
    Shape shape;
    c.logits_ = f.read_floats("logits", &shape);
    if (shape != Shape{k.samples, c.variants_, k.classes})
      throw std::runtime_error("logits " + shape_str(shape) + ", expected " +
                               shape_str({k.samples, c.variants_, k.classes}));
    return c;
  });
}

bool TeacherCache::up_to_date(const std::string& path, const TeacherCacheKey& key) {
  try {
    const H5File f = H5File::open_read(path);
    return key_difference(read_key(f), key).empty() &&
           f.dataset_shape("logits") == Shape{key.samples, teacher_cache_variants(key.crop_pad, key.hflip), key.classes};
  } catch (const std::exception&) {
    return false;
  }
}

std::pair<TeacherCacheKey, Shape> TeacherCache::read_header(const std::string& path) {
  return naming(path, [&] { return read_header(H5File::open_read(path)); });
}

std::pair<TeacherCacheKey, Shape> TeacherCache::read_header(const H5File& f) {
  return naming(f.path(), [&] { return std::pair<TeacherCacheKey, Shape>(read_key(f), f.dataset_shape("logits")); });
}

std::optional<Tensor> TeacherCache::rows(std::span<const SampleOrigin> origins) const {
  const int64_t K = key_.classes, p = key_.crop_pad;
  for (const SampleOrigin& o : origins) {
    if (o.cutout) return std::nullopt;
    if (o.sample < 0 || o.sample >= key_.samples || std::abs(o.oy) > p || std::abs(o.ox) > p || (o.flip && !key_.hflip))
      throw std::invalid_argument("TeacherCache: sample " + std::to_string(o.sample) + " crop (" + std::to_string(o.oy) +
                                  ", " + std::to_string(o.ox) + ")" + (o.flip ? " flipped" : "") +
                                  " is not among the cached rows");
  }
  Tensor out = Tensor::empty({static_cast<int64_t>(origins.size()), K});  // (rows, K)
  for (size_t i = 0; i < origins.size(); ++i) {
    const SampleOrigin& o = origins[i];
    const float* src = logits_.data() + (o.sample * variants_ + teacher_cache_variant(o, p, key_.hflip)) * K;
    std::copy(src, src + K, out.data() + static_cast<int64_t>(i) * K);
  }
  return out;
}

}  // namespace qatlab
