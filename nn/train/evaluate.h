// evaluate.h: a model's loss, accuracy and predictions over a whole test set.
#pragma once

#include <cstdint>
#include <vector>

#include "data/loader.h"
#include "nn/module.h"

namespace qatlab {

struct EvalResult {
  double loss = 0.0, accuracy = 0.0;  // mean cross-entropy; top-1 accuracy in [0, 1]
  int64_t count = 0;                  // images
  double seconds = 0.0;
  std::vector<int32_t> predictions;   // top-1 class per test image, in dataset order
};

// Runs `model` in eval mode over every batch of the loader's epoch 0 (no gradients) and restores its
// training mode after.
EvalResult evaluate(Module& model, DataLoader& loader);

}  // namespace qatlab
