// image_folder.cpp: reads a folder-per-class image dataset (image_folder.h) into one (N, C, H, W) buffer.
#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "core/format.h"
#include "data/image_codec.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

// The most pixel bytes one split may hold, as for IDX files.
constexpr int64_t kMaxPixelBytes = int64_t{1} << 31;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_image_name(const fs::path& p) {
  const std::string ext = lower(p.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// Entries of a directory sorted by name; throws naming the directory when it cannot be listed.
std::vector<fs::directory_entry> sorted_entries(const fs::path& dir) {
  std::vector<fs::directory_entry> entries;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(*it);
  if (ec) throw std::runtime_error(dir.string() + ": cannot list (" + ec.message() + ")");
  std::sort(entries.begin(), entries.end(),
            [](const fs::directory_entry& a, const fs::directory_entry& b) { return a.path().filename() < b.path().filename(); });
  return entries;
}

std::string describe(const Image& img) {
  return std::to_string(img.w) + "x" + std::to_string(img.h) + " " +
         (img.c == 1 ? std::string("gray") : img.c == 3 ? std::string("RGB") : std::to_string(img.c) + "-channel");
}

}  // namespace

bool looks_like_image_folder(const std::string& dir) {
  std::error_code ec;
  const fs::path train = fs::path(dir) / "train";
  if (!fs::is_directory(train, ec)) return false;
  for (fs::directory_iterator it(train, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) return true;
  return false;
}

std::vector<std::string> image_folder_classes(const std::string& dir) {
  const fs::path train = fs::path(dir) / "train";
  std::error_code ec;
  if (!fs::is_directory(train, ec))
    throw std::runtime_error(dir + ": no train/ folder (an image folder dataset holds train/<class>/ and test/<class>/)");
  std::vector<std::string> classes;
  for (const fs::directory_entry& e : sorted_entries(train)) {
    if (!e.is_directory(ec))
      throw std::runtime_error(e.path().string() + ": not a class folder (" + train.string() +
                               " may hold only one folder per class)");
    classes.push_back(e.path().filename().string());
    const std::string& n = classes.back();
    if (std::any_of(n.begin(), n.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
      throw std::runtime_error(printable(e.path().string()) + ": a class folder name with control characters");
  }
  if (classes.empty()) throw std::runtime_error(train.string() + ": no class folders");
  return classes;
}

ImageDataset load_image_folder(const std::string& dir, Split split, const std::string& name) {
  const std::vector<std::string> classes = image_folder_classes(dir);
  const fs::path root = fs::path(dir) / split_name(split);
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    throw std::runtime_error(dir + ": no " + std::string(split_name(split)) +
                             "/ folder (an image folder dataset holds train/<class>/ and test/<class>/)");

  // Every file, with its label, before decoding any: a misplaced file fails fast.
  std::vector<std::pair<fs::path, int32_t>> files;
  for (const fs::directory_entry& e : sorted_entries(root)) {
    if (!e.is_directory(ec))
      throw std::runtime_error(e.path().string() + ": not a class folder (" + root.string() +
                               " may hold only one folder per class)");
    const std::string cls = e.path().filename().string();
    const auto it = std::find(classes.begin(), classes.end(), cls);
    if (it == classes.end())
      throw std::runtime_error(printable(e.path().string()) + ": class '" + printable(cls, 60) + "' has no folder in " +
                               (fs::path(dir) / "train").string() + " (the training split defines the classes)");
    const auto label = static_cast<int32_t>(it - classes.begin());
    size_t count = 0;
    for (const fs::directory_entry& f : sorted_entries(e.path())) {
      if (f.is_directory(ec))
        throw std::runtime_error(printable(f.path().string()) + ": a folder inside a class folder; put the images directly in " +
                                 e.path().string());
      if (!f.is_regular_file(ec))
        throw std::runtime_error(printable(f.path().string()) + ": not a regular file");
      if (!is_image_name(f.path()))
        throw std::runtime_error(printable(f.path().string()) + ": not an image file (expected .png, .jpg or .jpeg)");
      files.push_back({f.path(), label});
      ++count;
    }
    if (count == 0) throw std::runtime_error(e.path().string() + ": empty class folder (no images)");
  }
  if (files.empty()) throw std::runtime_error(root.string() + ": no class folders");

  ImageDataset ds;
  ds.name = name;
  ds.num_classes = static_cast<int>(classes.size());
  ds.class_names = classes;
  ds.n = static_cast<int64_t>(files.size());
  ds.labels.resize(files.size());  // (N)
  std::string first;               // the image that set the size
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string path = printable(files[i].first.string(), 300);
    Image img = read_image(files[i].first.string());
    if (i == 0) {
      ds.c = img.c;
      ds.h = img.h;
      ds.w = img.w;
      first = path;
      const int64_t per_image = img.c * img.h * img.w;
      if (ds.n > kMaxPixelBytes / per_image)
        throw std::runtime_error(root.string() + ": " + std::to_string(ds.n) + " images of " + describe(img) +
                                 " hold more than " + std::to_string(kMaxPixelBytes) + " bytes; refused");
      ds.pixels.resize(static_cast<size_t>(ds.n * per_image));  // (N, C, H, W)
    } else if (img.c != ds.c || img.h != ds.h || img.w != ds.w) {
      throw std::runtime_error(path + ": a " + describe(img) + " image, but the dataset's images are " +
                               describe(Image{ds.c, ds.h, ds.w, {}}) + " (as " + first +
                               "); every image must have the same size and channels");
    }
    std::copy(img.pixels.begin(), img.pixels.end(), ds.pixels.begin() + static_cast<int64_t>(i) * ds.c * ds.h * ds.w);
    ds.labels[i] = files[i].second;
  }
  return ds;
}

}  // namespace qatlab
