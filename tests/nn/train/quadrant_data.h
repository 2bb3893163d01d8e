// quadrant_data.h: a small synthetic task for the training tests (tests/nn/train, tests/quant/workflow):
// 8 x 8 byte images of noise with one bright 3 x 3 square; the class is the quadrant it lies in. A few
// epochs of a small conv net learn it to well above 90 %.
//
// Shape letters: N images.
#pragma once

#include <cstdint>
#include <string>

#include "core/rng.h"
#include "nn/train/data_bundle.h"

namespace qatlab::test {

inline constexpr int64_t kQuadrantSide = 8, kQuadrantClasses = 4;

// n images (N, 1, 8, 8), labels the quadrant of the square.
inline ImageDataset quadrant_images(int64_t n, Rng& rng, const std::string& name) {
  constexpr int64_t side = kQuadrantSide;
  ImageDataset d;
  d.name = name;
  d.n = n, d.c = 1, d.h = side, d.w = side, d.num_classes = kQuadrantClasses;
  d.class_names = numbered_class_names(kQuadrantClasses);
  d.pixels.resize(static_cast<size_t>(n * side * side));
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* img = d.pixels.data() + i * side * side;
    for (int64_t p = 0; p < side * side; ++p) img[p] = static_cast<uint8_t>(rng.below(100));
    const int32_t quadrant = static_cast<int32_t>(rng.below(kQuadrantClasses));
    const int64_t y0 = (quadrant / 2) * 4 + static_cast<int64_t>(rng.below(2));
    const int64_t x0 = (quadrant % 2) * 4 + static_cast<int64_t>(rng.below(2));
    for (int64_t y = y0; y < y0 + 3; ++y)
      for (int64_t x = x0; x < x0 + 3; ++x) img[y * side + x] = static_cast<uint8_t>(180 + rng.below(76));
    d.labels.push_back(quadrant);
  }
  return d;
}

// 512 training and 128 test images ("quadrants"), normalised with mean 0.3 and std 0.3.
inline DataBundle quadrant_data() {
  Rng rng(11);
  DataBundle b;
  b.source = b.label = "quadrants";
  b.train = quadrant_images(512, rng, b.source);
  b.test = quadrant_images(128, rng, b.source);
  b.mean = {0.3f};
  b.std = {0.3f};
  b.norm_origin = "the test's";
  b.spec = {1, kQuadrantSide, kQuadrantSide, kQuadrantClasses};
  b.class_names = numbered_class_names(kQuadrantClasses);
  return b;
}

// A small conv net for it, as a model description (nn/model_description.h).
inline const char* const kQuadrantNetwork = R"(qatlab-model: 1
name: quadrant-net
layers:
  - conv: {out: 8, kernel: 3, padding: 1}
  - relu
  - conv: {out: 8, kernel: 3, padding: 1}
  - relu
  - maxpool: {kernel: 2}
  - flatten
  - linear: {out: classes}
)";

// The same task's network with batch norms (what weight averaging recomputes, what QAT folds).
inline const char* const kQuadrantNetworkWithBatchNorms = R"(qatlab-model: 1
name: quadrant-bn-net
layers:
  - conv: {out: 8, kernel: 3, padding: 1}
  - batchnorm
  - relu
  - conv: {out: 8, kernel: 3, padding: 1}
  - batchnorm
  - relu
  - maxpool: {kernel: 2}
  - flatten
  - linear: {out: classes}
)";

}  // namespace qatlab::test
