// file_dataset_writers.h: small learnable datasets written in each file format qatlab reads (HDF5, image
// folder of PNG / JPEG files, IDX), for the data and CLI tests.
//
// Shape letters: N images, C channels, H height, W width.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/h5io.h"
#include "core/rng.h"
#include "data/idx.h"
#include "data/image_codec.h"

namespace qatlab::testing {

// What to write: n_train and n_test images of (c, h, w) in `classes` classes.
struct TinySpec {
  int64_t c = 1, h = 8, w = 8;
  int classes = 3;
  int64_t n_train = 24, n_test = 12;
  uint64_t seed = 7;
};

// Labels cycle 0, 1, ..., classes - 1; image i of class k is dark noise (0..59) with the columns
// 2k and 2k + 1 bright (200..255) in every channel, so a model that sees where the stripe is learns it.
inline void tiny_split(const TinySpec& s, int64_t n, uint64_t seed, std::vector<uint8_t>& pixels,
                       std::vector<int32_t>& labels) {
  Rng rng(seed);
  pixels.assign(static_cast<size_t>(n * s.c * s.h * s.w), 0);  // (N, C, H, W)
  labels.assign(static_cast<size_t>(n), 0);                    // (N)
  for (int64_t i = 0; i < n; ++i) {
    const int k = static_cast<int>(i % s.classes);
    labels[i] = k;
    for (int64_t ch = 0; ch < s.c; ++ch)
      for (int64_t y = 0; y < s.h; ++y)
        for (int64_t x = 0; x < s.w; ++x) {
          const bool bright = x / 2 == k % (s.w / 2);
          pixels[((i * s.c + ch) * s.h + y) * s.w + x] =
              static_cast<uint8_t>(bright ? 200 + rng.below(56) : rng.below(60));
        }
  }
}

enum class H5Layout { NHW, NCHW, NHWC };

// /train/images, /train/labels, /test/...: images in `layout`, labels int64 (h5py's default for Python
// ints); class_names ("" = none) as the root attribute.
inline void write_hdf5_dataset(const std::string& path, const TinySpec& s, H5Layout layout = H5Layout::NCHW,
                               const std::string& class_names = "") {
  H5File f = H5File::create(path);
  for (int split = 0; split < 2; ++split) {
    const std::string name = split == 0 ? "train" : "test";
    const int64_t n = split == 0 ? s.n_train : s.n_test;
    std::vector<uint8_t> px;
    std::vector<int32_t> labels;
    tiny_split(s, n, s.seed + split, px, labels);
    Shape shape{n, s.c, s.h, s.w};
    if (layout == H5Layout::NHW) shape = {n, s.h, s.w};
    if (layout == H5Layout::NHWC) {
      shape = {n, s.h, s.w, s.c};
      std::vector<uint8_t> hwc(px.size());
      const int64_t plane = s.h * s.w;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t p = 0; p < plane; ++p)
          for (int64_t ch = 0; ch < s.c; ++ch) hwc[(i * plane + p) * s.c + ch] = px[(i * s.c + ch) * plane + p];
      px = hwc;
    }
    f.write_ints<uint8_t>(name + "/images", shape, px);
    if (layout == H5Layout::NHWC) f.set_attr(name + "/images", "layout", "NHWC");
    f.write_ints<int64_t>(name + "/labels", {n}, std::vector<int64_t>(labels.begin(), labels.end()));
  }
  if (!class_names.empty()) f.set_attr("/", "class_names", class_names);
  f.close();
}

// dir/train/<names[k]>/img<i>.png (or .jpg when `jpeg`), dir/test/... likewise.
inline void write_image_folder(const std::string& dir, const TinySpec& s, const std::vector<std::string>& names,
                               bool jpeg = false) {
  for (int split = 0; split < 2; ++split) {
    const int64_t n = split == 0 ? s.n_train : s.n_test;
    std::vector<uint8_t> px;
    std::vector<int32_t> labels;
    tiny_split(s, n, s.seed + split, px, labels);
    for (int64_t i = 0; i < n; ++i) {
      const std::filesystem::path folder = std::filesystem::path(dir) / (split == 0 ? "train" : "test") / names.at(labels[i]);
      std::filesystem::create_directories(folder);
      Image img{s.c, s.h, s.w, std::vector<uint8_t>(px.begin() + i * s.c * s.h * s.w, px.begin() + (i + 1) * s.c * s.h * s.w)};
      char file[32];
      std::snprintf(file, sizeof file, "img%03lld.%s", static_cast<long long>(i), jpeg ? "jpg" : "png");
      if (jpeg)
        write_jpeg((folder / file).string(), img);
      else
        write_png((folder / file).string(), img);
    }
  }
}

// The four IDX files: images idx3 (N, H, W) when c == 1, else idx4 (N, C, H, W).
inline void write_idx_dataset(const std::string& dir, const TinySpec& s) {
  std::filesystem::create_directories(dir);
  for (int split = 0; split < 2; ++split) {
    const int64_t n = split == 0 ? s.n_train : s.n_test;
    const std::string prefix = split == 0 ? "train" : "t10k";
    std::vector<uint8_t> px;
    std::vector<int32_t> labels;
    tiny_split(s, n, s.seed + split, px, labels);
    const bool gray = s.c == 1;
    write_idx(dir + "/" + prefix + (gray ? "-images-idx3-ubyte" : "-images-idx4-ubyte"),
              {gray ? std::vector<int64_t>{n, s.h, s.w} : std::vector<int64_t>{n, s.c, s.h, s.w}, px}, false);
    write_idx(dir + "/" + prefix + "-labels-idx1-ubyte", {{n}, std::vector<uint8_t>(labels.begin(), labels.end())}, false);
  }
}

}  // namespace qatlab::testing
