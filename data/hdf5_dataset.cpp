// hdf5_dataset.cpp: reads the HDF5 dataset layout of hdf5_dataset.h, checking every shape before
// anything is sized by it.
#include "data/hdf5_dataset.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

#include "core/format.h"
#include "core/h5io.h"

namespace qatlab {

namespace {

// The most pixel bytes one split may hold, as for IDX files.
constexpr int64_t kMaxPixelBytes = int64_t{1} << 31;

// Labels of any integer type h5py is likely to write, as int64.
std::vector<int64_t> read_labels(const H5File& f, const std::string& path) {
  std::vector<int64_t> out;
  try {
    return f.read_ints<int64_t>(path);
  } catch (const std::runtime_error&) {
  }
  const auto widen = [&](const auto& v) { out.assign(v.begin(), v.end()); };
  try {
    widen(f.read_ints<int32_t>(path));
    return out;
  } catch (const std::runtime_error&) {
  }
  try {
    widen(f.read_ints<int16_t>(path));
    return out;
  } catch (const std::runtime_error&) {
  }
  try {
    widen(f.read_ints<uint8_t>(path));
    return out;
  } catch (const std::runtime_error&) {
  }
  throw std::runtime_error(f.path() + ": " + path + ": labels must be stored as uint8, int16, int32 or int64");
}

void require_dataset(const H5File& f, const std::string& path) {
  if (!f.exists(path))
    throw std::runtime_error(f.path() + ": no dataset /" + path +
                             " (an HDF5 dataset file holds train/images, train/labels, test/images, test/labels)");
  if (f.is_group(path)) throw std::runtime_error(f.path() + ": /" + path + " is a group, expected a dataset");
}

// A string attribute, with a hint for the variable-length strings h5py writes from a Python str.
std::string string_attr(const H5File& f, const std::string& obj, const std::string& name) {
  try {
    return f.get_attr_string(obj, name);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find("variable-length") == std::string::npos) throw;
    throw std::runtime_error(f.path() + ": /" + (obj == "/" ? "" : obj) + " attribute " + name +
                             " is a variable-length string; qatlab reads fixed-length ones only (h5py: "
                             "attrs[\"" + name + "\"] = numpy.bytes_(text))");
  }
}

// The class names stored in the file (empty when none), checked.
std::vector<std::string> stored_class_names(const H5File& f) {
  if (!f.has_attr("/", "class_names")) return {};
  const std::string text = string_attr(f, "/", "class_names");
  const std::vector<std::string> names = split_lines(text);
  std::set<std::string> seen;
  for (const std::string& n : names) {
    const bool control = std::any_of(n.begin(), n.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
    if (n.empty() || control)
      throw std::runtime_error(f.path() + ": attribute class_names: class " + std::to_string(seen.size()) +
                               " has an empty name or one with control characters ('" + printable(n, 40) +
                               "'); write the names separated by single newlines");
    if (!seen.insert(n).second)
      throw std::runtime_error(f.path() + ": attribute class_names: '" + printable(n, 40) + "' appears twice");
  }
  return names;
}

}  // namespace

bool looks_like_hdf5(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char head[9] = {};
  in.read(head, 8);
  return in.gcount() == 8 && (std::memcmp(head, "\x89HDF\r\n\x1a\n", 8) == 0 || std::memcmp(head, "qatlab-h", 8) == 0);
}

ImageDataset load_hdf5_dataset(const std::string& path, Split split, const std::string& name) {
  const H5File f = H5File::open_read(path);
  const auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  const std::string split_dir = split_name(split);
  const std::string images_path = split_dir + "/images", labels_path = split_dir + "/labels";
  require_dataset(f, images_path);
  require_dataset(f, labels_path);

  // The class count, from the names, the attribute or both splits' labels.
  const std::vector<std::string> names = stored_class_names(f);
  int64_t classes = names.empty() ? 0 : static_cast<int64_t>(names.size());
  if (f.has_attr("/", "num_classes")) {
    const int64_t stated = f.get_attr_int("/", "num_classes");
    if (stated < 1 || stated > 65536) fail("attribute num_classes = " + std::to_string(stated) + ", expected 1..65536");
    if (classes != 0 && stated != classes)
      fail("attribute num_classes = " + std::to_string(stated) + " but class_names names " + std::to_string(classes) +
           " classes");
    classes = stated;
  }

  const Shape shape = f.dataset_shape(images_path);  // (N, H, W), (N, C, H, W) or (N, H, W, C)
  const std::string layout = f.has_attr(images_path, "layout") ? string_attr(f, images_path, "layout") : "NCHW";
  const bool nhwc = layout == "NHWC";
  if (!nhwc && layout != "NCHW")
    fail("/" + images_path + ": attribute layout = '" + printable(layout, 40) + "', expected NCHW or NHWC");
  if (shape.size() != 3 && shape.size() != 4)
    fail("/" + images_path + " has shape " + shape_str(shape) + ", expected (N, H, W), (N, C, H, W) or, with layout = "
         "\"NHWC\", (N, H, W, C)");
  if (nhwc && shape.size() != 4) fail("/" + images_path + ": layout NHWC needs 4 dimensions, found " + shape_str(shape));
  int64_t bytes = 1;
  for (int64_t d : shape) {
    if (d <= 0) fail("/" + images_path + " has shape " + shape_str(shape) + ": no images");
    if (d > kMaxPixelBytes || bytes > kMaxPixelBytes / d)
      fail("/" + images_path + " of shape " + shape_str(shape) + " holds more than " + std::to_string(kMaxPixelBytes) +
           " bytes; refused");
    bytes *= d;
  }
  const Shape label_shape = f.dataset_shape(labels_path);
  if (label_shape.size() != 1 || label_shape[0] != shape[0])
    fail("/" + labels_path + " has shape " + shape_str(label_shape) + ", expected (" + std::to_string(shape[0]) +
         "): one label per image of /" + images_path);

  ImageDataset ds;
  ds.name = name;
  ds.n = shape[0];
  ds.c = shape.size() == 3 ? 1 : (nhwc ? shape[3] : shape[1]);
  ds.h = shape.size() == 3 ? shape[1] : (nhwc ? shape[1] : shape[2]);
  ds.w = shape.size() == 3 ? shape[2] : (nhwc ? shape[2] : shape[3]);
  // The other split must have the same image size: a model is built for one.
  const std::string other = split == Split::Train ? "test/images" : "train/images";
  if (f.exists(other) && !f.is_group(other)) {
    const Shape other_shape = f.dataset_shape(other);
    if (other_shape.size() != shape.size() || !std::equal(shape.begin() + 1, shape.end(), other_shape.begin() + 1))
      fail("/" + other + " has shape " + shape_str(other_shape) + " but /" + images_path + " " + shape_str(shape) +
           ": both splits need images of one size");
  }

  std::vector<uint8_t> pixels = f.read_ints<uint8_t>(images_path);
  if (nhwc) {
    ds.pixels.resize(pixels.size());  // (N, C, H, W) from (N, H, W, C)
    const int64_t plane = ds.h * ds.w;
    for (int64_t i = 0; i < ds.n; ++i)
      for (int64_t p = 0; p < plane; ++p)
        for (int64_t ch = 0; ch < ds.c; ++ch)
          ds.pixels[(i * ds.c + ch) * plane + p] = pixels[(i * plane + p) * ds.c + ch];
  } else {
    ds.pixels = std::move(pixels);
  }

  const std::vector<int64_t> labels = read_labels(f, labels_path);
  if (classes == 0) {
    // No names and no count: the largest label of both splits decides.
    const std::string other_labels = split == Split::Train ? "test/labels" : "train/labels";
    std::vector<int64_t> all = labels;
    if (f.exists(other_labels) && !f.is_group(other_labels)) {
      const std::vector<int64_t> more = read_labels(f, other_labels);
      all.insert(all.end(), more.begin(), more.end());
    }
    for (int64_t v : all) classes = std::max(classes, v + 1);
    classes = std::min<int64_t>(classes, 65536);  // larger labels are reported below
  }
  ds.labels.resize(static_cast<size_t>(ds.n));  // (N)
  for (int64_t i = 0; i < ds.n; ++i) {
    if (labels[i] < 0 || labels[i] >= classes)
      fail("/" + labels_path + ": label " + std::to_string(labels[i]) + " of image " + std::to_string(i) +
           " is out of range, expected 0.." + std::to_string(classes - 1));
    ds.labels[i] = static_cast<int32_t>(labels[i]);
  }
  ds.num_classes = static_cast<int>(classes);
  ds.class_names = names.empty() ? numbered_class_names(ds.num_classes) : names;
  return ds;
}

}  // namespace qatlab
