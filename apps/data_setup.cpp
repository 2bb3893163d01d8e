// data_setup.cpp: --dataset values to files, normalisation (options, model, constants or statistics),
// augmentation options, subset limits, and whether a dataset fits a model.
#include "apps/data_setup.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "data/hdf5_dataset.h"
#include "data/image_folder.h"
#include "data/mnist_fetch.h"

namespace qatlab {

namespace fs = std::filesystem;

void add_data_options(po::options_description& desc, DataSettings& s) {
  desc.add_options()
      ("dataset", po::value(&s.dataset)->default_value(s.dataset), "mnist | fashion-mnist | cifar10, or a dataset from files: FILE.h5, an image folder DIR (DIR/train/<class>/*.png|jpg), a folder of IDX files, or hdf5:FILE | folder:DIR | idx:DIR to name the kind")
      ("data-dir", po::value(&s.data_dir), "directory holding the built-in dataset files (default: $QATLAB_DATA_DIR, else ~/.cache/qatlab; MNIST is fetched there when absent)")
      ("train-limit", po::value(&s.train_limit)->default_value(0), "use only the first N training images (0 = all)")
      ("test-limit", po::value(&s.test_limit)->default_value(0), "use only the first N test images (0 = all)")
      ("mean", po::value(&s.mean), "per-channel mean of pixel / 255, one value or one per channel (default: the model's, else the dataset's)")
      ("std", po::value(&s.std), "per-channel standard deviation of pixel / 255, likewise")
      ("augment", po::value(&s.augment), "training augmentation: none, or a list of pad-crop[:P] (random crop of the image zero-padded by P pixels, default 4), flip and cutout[:S] (a random SxS square set to the mean, default 16) (default: when training on from a model, as qat and sweep's QAT cells do, the augmentation that model was trained with; else pad-crop:4,flip for cifar10, none otherwise)");
}

std::string data_settings_ini(const DataSettings& s) {
  SettingsIni ini;
  ini.add("dataset", s.dataset);
  ini.add_if_given("data-dir", s.data_dir);
  ini.add("train-limit", s.train_limit);
  ini.add("test-limit", s.test_limit);
  ini.add_if_given("mean", s.mean);
  ini.add_if_given("std", s.std);
  ini.add_if_given("augment", s.augment);
  return ini.text();
}

namespace {

const char* const kDatasetForms =
    "mnist, fashion-mnist, cifar10, an existing .h5 file or folder, or hdf5:FILE, folder:DIR, idx:DIR";

void truncate(ImageDataset& d, int64_t limit) {
  if (limit <= 0 || limit >= d.n) return;
  d.n = limit;
  d.pixels.resize(limit * d.c * d.h * d.w);
  d.labels.resize(limit);
}

std::string mnist_dir(const std::string& explicit_dir) {
  // An explicit directory that already holds the files is used as it is; otherwise MNIST lives (and is
  // fetched into) <dir>/mnist.
  if (!explicit_dir.empty() && has_idx_dataset_files(explicit_dir)) return explicit_dir;
  return ensure_mnist(explicit_dir.empty() ? default_data_dir() : explicit_dir);
}

bool is_builtin(const std::string& name) { return name == "mnist" || name == "fashion-mnist" || name == "cifar10"; }

const char* kind_prefix(DatasetKind k);

// The dataset as files record it: a built-in name, or the kind and the absolute path.
std::string dataset_source(const DatasetRef& ref) {
  return ref.kind == DatasetKind::Builtin ? ref.name : std::string(kind_prefix(ref.kind)) + ":" + ref.path;
}

const char* kind_prefix(DatasetKind k) {
  switch (k) {
    case DatasetKind::Hdf5: return "hdf5";
    case DatasetKind::Folder: return "folder";
    case DatasetKind::Idx: return "idx";
    default: return "";
  }
}

// "1,2,3" or "0.5" -> values; UsageError naming the option otherwise.
std::vector<float> parse_floats(const std::string& option, const std::string& text) {
  std::vector<float> out;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find(',', start);
    const std::string item = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used > 0 && used == item.size() && std::isfinite(v) && std::fabs(v) < 1e6,
            "--" + option + " must be one number or a comma-separated list of numbers, got '" + printable(text, 60) + "'");
    out.push_back(static_cast<float>(v));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  require(out.size() <= static_cast<size_t>(kMaxModelChannels),
          "--" + option + " has " + std::to_string(out.size()) + " values, more than any dataset has channels");
  return out;
}

// One value per channel: a single value applies to every channel.
std::vector<float> per_channel(const std::string& option, const std::string& text, int64_t channels,
                               const std::string& source) {
  std::vector<float> v = parse_floats(option, text);
  if (v.size() == 1) v.assign(static_cast<size_t>(channels), v[0]);
  require(static_cast<int64_t>(v.size()) == channels, "--" + option + " has " + std::to_string(v.size()) +
                                                          " values; " + source + " has " + std::to_string(channels) +
                                                          " channels (give one value, or one per channel)");
  return v;
}

// The N of an augmentation item "NAME" or "NAME:N" (N in 1..64; `fallback` when absent), or a usage error.
int64_t augment_size(const std::string& item, const std::string& name, int64_t fallback, const std::string& usage) {
  if (item.size() == name.size()) return fallback;
  require(item[name.size()] == ':' && item.size() > name.size() + 1 && item.size() <= name.size() + 3, usage);
  int64_t n = 0;
  for (size_t i = name.size() + 1; i < item.size(); ++i) {
    require(item[i] >= '0' && item[i] <= '9', usage);
    n = n * 10 + (item[i] - '0');
  }
  require(n >= 1 && n <= 64, usage);
  return n;
}

void parse_augment(const std::string& text, DataBundle& b) {
  const std::string usage = "--augment must be none, or a comma-separated list of pad-crop[:P], flip and cutout[:S] "
                            "(P, S in 1..64), each at most once, got '" + printable(text, 60) + "'";
  if (text == "none") return;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find(',', start);
    const std::string item = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    const auto named = [&](const std::string& name) {
      return item.rfind(name, 0) == 0 && (item.size() == name.size() || item[name.size()] == ':');
    };
    if (item == "flip" && !b.hflip) {
      b.hflip = true;
    } else if (named("pad-crop") && b.crop_pad == 0) {
      b.crop_pad = augment_size(item, "pad-crop", 4, usage);
    } else if (named("cutout") && b.cutout == 0) {
      b.cutout = augment_size(item, "cutout", 16, usage);
    } else {
      throw UsageError(usage);
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

// One split of a dataset from files.
ImageDataset load_file_split(const DatasetRef& ref, Split split, const std::string& source) {
  switch (ref.kind) {
    case DatasetKind::Hdf5: return load_hdf5_dataset(ref.path, split, source);
    case DatasetKind::Folder: return load_image_folder(ref.path, split, source);
    case DatasetKind::Idx: return load_idx_dataset(ref.path, split, source, /*num_classes=*/0);
    default: throw std::logic_error("load_file_split: a built-in dataset");
  }
}

std::string shape_of(const ImageDataset& d) { return shape_str({d.c, d.h, d.w}); }

}  // namespace

DatasetRef resolve_dataset(const std::string& value) {
  DatasetRef ref;
  if (is_builtin(value)) {
    ref.name = value;
    return ref;
  }
  std::error_code ec;
  const size_t colon = value.find(':');
  const std::string prefix = colon == std::string::npos ? "" : value.substr(0, colon);
  if (prefix == "hdf5" || prefix == "folder" || prefix == "idx") {
    ref.kind = prefix == "hdf5" ? DatasetKind::Hdf5 : prefix == "folder" ? DatasetKind::Folder : DatasetKind::Idx;
    const std::string path = value.substr(colon + 1);
    require(!path.empty(), "--dataset " + prefix + ": needs a path after the colon");
    ref.path = fs::absolute(path, ec).lexically_normal().string();
    if (ec) ref.path = path;
    const bool want_dir = ref.kind != DatasetKind::Hdf5;
    if (!fs::exists(ref.path, ec))
      throw std::runtime_error(ref.path + ": no such " + std::string(want_dir ? "folder" : "file") + " (--dataset " +
                               printable(value, 200) + ")");
    if (want_dir != fs::is_directory(ref.path, ec))
      throw std::runtime_error(ref.path + ": " + (want_dir ? "not a folder" : "a folder, not a file") + " (--dataset " +
                               prefix + ": takes " + (want_dir ? "a folder" : "an HDF5 file") + ")");
    return ref;
  }
  const std::string usage = "--dataset '" + printable(value, 200) + "' names no dataset: expected " + kDatasetForms;
  if (!fs::exists(value, ec)) throw UsageError(usage + " (no such file or folder)");
  ref.path = fs::absolute(value, ec).lexically_normal().string();
  if (ec) ref.path = value;
  if (fs::is_directory(value, ec)) {
    if (has_idx_dataset_files(value)) {
      ref.kind = DatasetKind::Idx;
    } else if (looks_like_image_folder(value)) {
      ref.kind = DatasetKind::Folder;
    } else {
      throw UsageError(usage + " (the folder holds neither train/<class>/ image folders nor the four IDX files)");
    }
    return ref;
  }
  if (!fs::is_regular_file(value, ec) || !looks_like_hdf5(value))
    throw UsageError(usage + " (" + printable(value, 200) + " is not an HDF5 file)");
  ref.kind = DatasetKind::Hdf5;
  return ref;
}

DataBundle load_data(const DataSettings& s, bool with_train, const DataRecord* model) {
  require(s.train_limit >= 0 && s.test_limit >= 0, "--train-limit and --test-limit must be >= 0");
  const DatasetRef ref = resolve_dataset(s.dataset);
  DataBundle b;
  bool have_train = with_train;
  if (ref.kind == DatasetKind::Builtin) {
    b.source = b.label = ref.name;
    if (ref.name == "mnist" || ref.name == "fashion-mnist") {
      const bool fashion = ref.name == "fashion-mnist";
      const std::string dir = fashion ? find_fashion_mnist(s.data_dir) : mnist_dir(s.data_dir);
      if (with_train) b.train = load_idx_dataset(dir, Split::Train, ref.name);
      b.test = load_idx_dataset(dir, Split::Test, ref.name);
      if (fashion)
        b.test.class_names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                              "Ankle boot"};
    } else {
      const std::string dir = find_cifar10(s.data_dir);
      if (with_train) b.train = load_cifar10(dir, Split::Train);
      b.test = load_cifar10(dir, Split::Test);
    }
  } else {
    require(s.data_dir.empty(), "--data-dir applies to the built-in datasets; --dataset " + printable(s.dataset, 200) +
                                    " names its files itself");
    b.source = dataset_source(ref);
    b.label = fs::path(ref.path).filename().string();
    if (b.label.empty()) b.label = fs::path(ref.path).parent_path().filename().string();
    if (ref.kind == DatasetKind::Hdf5) b.label = fs::path(b.label).stem().string();
    for (char& c : b.label)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
    // The normalisation comes from the training split unless something else gives it.
    const bool need_stats = (s.mean.empty() || s.std.empty()) && (!model || model->mean.empty());
    have_train = with_train || need_stats;
    if (have_train) b.train = load_file_split(ref, Split::Train, b.source);
    b.test = load_file_split(ref, Split::Test, b.source);
    if (have_train && (b.train.c != b.test.c || b.train.h != b.test.h || b.train.w != b.test.w))
      throw std::runtime_error(ref.path + ": the training images are " + shape_of(b.train) + ", the test images " +
                               shape_of(b.test) + ": both splits need images of one shape");
    if (have_train && b.train.num_classes != b.test.num_classes)
      throw std::runtime_error(ref.path + ": the training split has " + std::to_string(b.train.num_classes) +
                               " classes, the test split " + std::to_string(b.test.num_classes));
  }
  b.class_names = b.test.class_names;
  b.spec = ModelSpec{b.test.c, b.test.h, b.test.w, b.test.num_classes};
  try {
    validate_model_spec(b.spec);
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(b.source + ": images " + shape_of(b.test) + " and " + std::to_string(b.test.num_classes) +
                             " classes are beyond what a model may be built for: " + e.what());
  }

  // Normalisation: options, then the model's, then the constants, then the training split's statistics.
  const int64_t channels = b.test.c;
  if (model && static_cast<int64_t>(model->mean.size()) == channels && model->std.size() == model->mean.size()) {
    b.mean = model->mean;
    b.std = model->std;
    b.norm_origin = "the model's";
  } else if (ref.kind == DatasetKind::Builtin) {
    const Normalisation norm = dataset_normalisation(ref.name);
    b.mean = norm.mean;
    b.std = norm.std;
    b.norm_origin = ref.name + "'s constants";
  } else if (!s.mean.empty() && !s.std.empty()) {
    b.norm_origin = "--mean / --std";
  } else {
    if (b.train.n == 0) b.train = load_file_split(ref, Split::Train, b.source);
    channel_mean_std(b.train, b.mean, b.std);
    b.norm_origin = "the training split's";
  }
  if (!s.mean.empty()) b.mean = per_channel("mean", s.mean, channels, b.source);
  if (!s.std.empty()) {
    b.std = per_channel("std", s.std, channels, b.source);
    for (float v : b.std) require(v > 0, "--std must be > 0 for every channel, got '" + printable(s.std, 60) + "'");
  }
  if (!s.mean.empty() || !s.std.empty()) b.norm_origin = "--mean / --std";
  for (float& v : b.std) {
    // A channel that never changes (all pixels equal) has no spread: scale it as if it had 1/255.
    if (!(v > 0)) v = 1.0f / 255.0f;
  }

  parse_augment(s.augment.empty() ? (ref.kind == DatasetKind::Builtin && ref.name == "cifar10" ? "pad-crop:4,flip" : "none")
                                  : s.augment,
                b);
  if (!with_train) b.train = ImageDataset{};
  truncate(b.train, s.train_limit);
  truncate(b.test, s.test_limit);
  return b;
}

DataRecord data_record_for(const DataSettings& s, int64_t channels) {
  const DatasetRef ref = resolve_dataset(s.dataset);
  DataRecord r;
  r.dataset = dataset_source(ref);
  if (!s.mean.empty() || !s.std.empty()) {
    require(!s.mean.empty() && !s.std.empty(), "give --mean and --std together");
    r.mean = per_channel("mean", s.mean, channels, "the model");
    r.std = per_channel("std", s.std, channels, "the model");
    for (float v : r.std) require(v > 0, "--std must be > 0 for every channel, got '" + printable(s.std, 60) + "'");
  } else if (ref.kind == DatasetKind::Builtin) {
    const Normalisation norm = dataset_normalisation(ref.name);
    r.mean = norm.mean;
    r.std = norm.std;
  }
  return r;
}

void use_model_dataset(DataSettings& s, bool dataset_defaulted, const DataRecord& model) {
  if (dataset_defaulted && !model.dataset.empty()) s.dataset = model.dataset;
}

void check_data_fits(const DataBundle& data, const std::string& model_path, const ModelSpec& m,
                     const std::vector<std::string>& model_classes, bool allow_mismatch) {
  const Shape model_shape{m.channels, m.height, m.width}, data_shape{data.spec.channels, data.spec.height, data.spec.width};
  require(model_shape == data_shape, model_path + " takes " + shape_str(model_shape) + " images; " + data.source +
                                         " has " + shape_str(data_shape) + " (no option can change that)");
  const auto list = [](const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < 4; ++i) s += (i ? ", " : "") + printable(names[i], 30);
    return s + (names.size() > 4 ? ", ..." : "");
  };
  const bool count_differs = m.num_classes != data.spec.num_classes;
  const bool names_differ = !model_classes.empty() && !data.class_names.empty() && model_classes != data.class_names;
  if (count_differs && data.spec.num_classes > m.num_classes)
    require(false, model_path + " gives " + std::to_string(m.num_classes) + " scores per image; " + data.source + " has " +
                       std::to_string(data.spec.num_classes) + " classes, whose labels it cannot score" +
                       (allow_mismatch ? " (not even with --allow-dataset-mismatch)" : ""));
  if (allow_mismatch || (!count_differs && !names_differ)) return;
  throw UsageError(model_path + " was trained on " + std::to_string(m.num_classes) + " classes" +
                   (model_classes.empty() ? "" : " (" + list(model_classes) + ")") + "; " + data.source + " has " +
                   std::to_string(data.spec.num_classes) + " (" + list(data.class_names) +
                   "): pass --allow-dataset-mismatch to evaluate it anyway");
}

}  // namespace qatlab
