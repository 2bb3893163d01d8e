// dataset.cpp: MNIST-format (IDX) and CIFAR-10 (binary batch) readers with validation.
#include "data/dataset.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "data/file_io.h"
#include "data/idx.h"

namespace qatlab {

namespace {

constexpr int kNumClasses = 10;  // MNIST, Fashion-MNIST and CIFAR-10 all have ten

constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarChannels = 3;
constexpr int64_t kCifarImageBytes = kCifarChannels * kCifarSide * kCifarSide;  // 3072
constexpr int64_t kCifarRecordBytes = 1 + kCifarImageBytes;                     // 3073

const char* const kCifarTrainFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                        "data_batch_4.bin", "data_batch_5.bin"};
const char* const kCifarTestFile = "test_batch.bin";
const char* const kCifarSubdir = "cifar-10-batches-bin";

std::string join(const std::string& dir, const std::string& name) {
  return (std::filesystem::path(dir) / name).string();
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

std::vector<std::string> cifar_files(Split split) {
  if (split == Split::Test) return {kCifarTestFile};
  return {std::begin(kCifarTrainFiles), std::end(kCifarTrainFiles)};
}

const char* const kCifarHint =
    "download the binary version (cifar-10-binary.tar.gz) and unpack it there, or pass --data-dir";

}  // namespace

const char* split_name(Split split) { return split == Split::Train ? "train" : "test"; }

std::vector<std::string> numbered_class_names(int num_classes) {
  std::vector<std::string> names;
  for (int k = 0; k < num_classes; ++k) names.push_back(std::to_string(k));
  return names;
}

void channel_mean_std(const ImageDataset& d, std::vector<float>& mean, std::vector<float>& std) {
  if (d.n <= 0 || d.c <= 0 || d.h * d.w <= 0)
    throw std::invalid_argument("channel_mean_std: " + d.name + " holds no images");
  const int64_t plane = d.h * d.w;
  mean.assign(static_cast<size_t>(d.c), 0.0f);
  std.assign(static_cast<size_t>(d.c), 0.0f);
  for (int64_t ch = 0; ch < d.c; ++ch) {
    // At most 2^31 bytes of pixels (the readers' limit): the sums of squares stay below 2^47.
    uint64_t sum = 0, sum_sq = 0;
    for (int64_t i = 0; i < d.n; ++i) {
      const uint8_t* p = d.pixels.data() + (i * d.c + ch) * plane;
      for (int64_t k = 0; k < plane; ++k) {
        sum += p[k];
        sum_sq += uint64_t{p[k]} * p[k];
      }
    }
    const double count = static_cast<double>(d.n * plane);
    const double m = static_cast<double>(sum) / count;                            // in pixel units
    const double var = std::max(0.0, static_cast<double>(sum_sq) / count - m * m);  // population
    mean[ch] = static_cast<float>(m / 255.0);
    std[ch] = static_cast<float>(std::sqrt(var) / 255.0);
  }
}

std::string find_idx_file(const std::string& dir, const std::string& file_name) {
  const std::string raw = join(dir, file_name);
  if (is_file(raw)) return raw;
  if (is_file(raw + ".gz")) return raw + ".gz";
  return "";
}

namespace {

// The images file of a split: ...-images-idx3-ubyte, else ...-images-idx4-ubyte (raw or .gz); "" if none.
std::string find_idx_images(const std::string& dir, const std::string& prefix) {
  const std::string idx3 = find_idx_file(dir, prefix + "-images-idx3-ubyte");
  return idx3.empty() ? find_idx_file(dir, prefix + "-images-idx4-ubyte") : idx3;
}

std::string missing_idx_message(const std::string& dir, const std::string& name, const std::string& file) {
  return name + " not found in " + dir + ": missing " + file + " (or " + file +
         ".gz); put the four IDX files there (raw or .gz) or pass --data-dir";
}

}  // namespace

bool has_idx_dataset_files(const std::string& dir) {
  for (const char* prefix : {"train", "t10k"}) {
    if (find_idx_images(dir, prefix).empty()) return false;
    if (find_idx_file(dir, std::string(prefix) + "-labels-idx1-ubyte").empty()) return false;
  }
  return true;
}

int idx_class_count(const std::string& dir, const std::string& name) {
  int classes = 0;
  for (const char* prefix : {"train", "t10k"}) {
    const std::string file = std::string(prefix) + "-labels-idx1-ubyte";
    const std::string path = find_idx_file(dir, file);
    if (path.empty()) throw std::runtime_error(missing_idx_message(dir, name, file));
    const IdxArray labels = read_idx(path);
    for (uint8_t label : labels.data) classes = std::max(classes, label + 1);
  }
  return classes;
}

ImageDataset load_idx_dataset(const std::string& dir, Split split, const std::string& name, int num_classes) {
  const std::string prefix = split == Split::Train ? "train" : "t10k";
  if (num_classes == 0) num_classes = idx_class_count(dir, name);
  std::string paths[2] = {find_idx_images(dir, prefix), find_idx_file(dir, prefix + "-labels-idx1-ubyte")};
  const std::string files[2] = {prefix + "-images-idx3-ubyte", prefix + "-labels-idx1-ubyte"};
  for (int i = 0; i < 2; ++i)
    if (paths[i].empty()) throw std::runtime_error(missing_idx_message(dir, name, files[i]));

  IdxArray images = read_idx(paths[0]);
  IdxArray labels = read_idx(paths[1]);
  if (images.dims.size() != 3 && images.dims.size() != 4) {
    throw std::runtime_error(paths[0] + ": expected images of shape (N, H, W) or (N, C, H, W), found " +
                             dims_str(images.dims));
  }
  if (labels.dims.size() != 1) {
    throw std::runtime_error(paths[1] + ": expected labels of shape (N), found " + dims_str(labels.dims));
  }
  const int64_t n = images.dims[0];
  if (labels.dims[0] != n) {
    throw std::runtime_error(dir + ": " + name + " " + split_name(split) + " images and labels disagree: " +
                             paths[0] + " holds " + std::to_string(n) + " images but " + paths[1] +
                             " holds " + std::to_string(labels.dims[0]) + " labels");
  }
  for (int64_t d : images.dims)
    if (d == 0) throw std::runtime_error(paths[0] + ": empty image set of shape " + dims_str(images.dims));

  ImageDataset ds;
  ds.name = name;
  ds.n = n;
  const bool planar = images.dims.size() == 4;
  ds.c = planar ? images.dims[1] : 1;
  ds.h = images.dims[planar ? 2 : 1];
  ds.w = images.dims[planar ? 3 : 2];
  ds.num_classes = num_classes;
  ds.class_names = numbered_class_names(num_classes);
  ds.labels.resize(n);  // (N)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t label = labels.data[i];
    if (label >= num_classes) {
      throw std::runtime_error(paths[1] + ": label " + std::to_string(label) + " of item " + std::to_string(i) +
                               " is out of range, expected 0.." + std::to_string(num_classes - 1));
    }
    ds.labels[i] = label;
  }
  // (N, H, W) bytes are already (N, 1, H, W), and (N, C, H, W) is our layout: take the buffer as it is.
  ds.pixels = std::move(images.data);
  return ds;
}

std::string find_cifar10_batches(const std::string& dir) {
  for (const std::string& cand : {dir, join(dir, kCifarSubdir)}) {
    bool all = is_file(join(cand, kCifarTestFile));
    for (const char* f : kCifarTrainFiles) all = all && is_file(join(cand, f));
    if (all) return cand;
  }
  return "";
}

ImageDataset load_cifar10(const std::string& dir, Split split) {
  const std::vector<std::string> files = cifar_files(split);
  // The files may sit in `dir` itself or, as the official archive unpacks, in dir/cifar-10-batches-bin.
  std::string where = dir;
  if (!is_file(join(dir, files[0])) && std::filesystem::is_directory(join(dir, kCifarSubdir))) {
    where = join(dir, kCifarSubdir);
  }

  // Check every file's presence and size before reading any, so a bad last file fails fast.
  std::vector<std::string> paths;
  int64_t total = 0;
  for (const std::string& f : files) {
    const std::string path = join(where, f);
    if (!is_file(path)) {
      throw std::runtime_error("CIFAR-10 not found in " + where + ": missing " + f + "; " + kCifarHint);
    }
    const auto size = static_cast<int64_t>(std::filesystem::file_size(path));
    if (size == 0 || size % kCifarRecordBytes != 0) {
      throw std::runtime_error(path + ": truncated or corrupt: " + std::to_string(size) +
                               " is not a multiple of 3073 (one label byte + 3072 pixel bytes per image)");
    }
    total += size / kCifarRecordBytes;
    paths.push_back(path);
  }

  ImageDataset ds;
  ds.name = "cifar10";
  ds.n = total;
  ds.c = kCifarChannels;
  ds.h = kCifarSide;
  ds.w = kCifarSide;
  ds.num_classes = kNumClasses;
  ds.class_names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  ds.pixels.resize(static_cast<size_t>(total * kCifarImageBytes));  // (N, 3, 32, 32)
  ds.labels.resize(static_cast<size_t>(total));                     // (N)

  int64_t next = 0;  // index of the next image in the dataset
  for (const std::string& path : paths) {
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    if (bytes.empty() || bytes.size() % kCifarRecordBytes != 0) {  // the file changed since we looked
      throw std::runtime_error(path + ": truncated or corrupt: " + std::to_string(bytes.size()) +
                               " is not a multiple of 3073");
    }
    const int64_t records = static_cast<int64_t>(bytes.size()) / kCifarRecordBytes;
    if (next + records > total) throw std::runtime_error(path + ": file grew while being read");
    for (int64_t r = 0; r < records; ++r) {
      const uint8_t* rec = bytes.data() + r * kCifarRecordBytes;
      if (rec[0] >= kNumClasses) {
        throw std::runtime_error(path + ": label " + std::to_string(rec[0]) + " of record " + std::to_string(r) +
                                 " is out of range, expected 0..9");
      }
      ds.labels[next] = rec[0];
      std::copy(rec + 1, rec + kCifarRecordBytes, ds.pixels.begin() + next * kCifarImageBytes);
      ++next;
    }
  }
  if (next != total) throw std::runtime_error(where + ": CIFAR-10 files shrank while being read");
  return ds;
}

void write_cifar10_batch(const std::string& path, const std::vector<uint8_t>& pixels,
                         const std::vector<int32_t>& labels) {
  const int64_t n = static_cast<int64_t>(labels.size());
  if (static_cast<int64_t>(pixels.size()) != n * kCifarImageBytes) {
    throw std::invalid_argument("write_cifar10_batch " + path + ": " + std::to_string(n) +
                                " labels need pixels (N, 3, 32, 32) = " + std::to_string(n * kCifarImageBytes) +
                                " bytes, found " + std::to_string(pixels.size()));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(n * kCifarRecordBytes));
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] < 0 || labels[i] >= kNumClasses) {
      throw std::invalid_argument("write_cifar10_batch " + path + ": label " + std::to_string(labels[i]) +
                                  " of image " + std::to_string(i) + " is out of range, expected 0..9");
    }
    uint8_t* rec = bytes.data() + i * kCifarRecordBytes;
    rec[0] = static_cast<uint8_t>(labels[i]);
    std::copy(pixels.begin() + i * kCifarImageBytes, pixels.begin() + (i + 1) * kCifarImageBytes, rec + 1);
  }
  write_file_bytes(path, bytes.data(), bytes.size());
}

}  // namespace qatlab
