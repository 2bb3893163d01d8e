// init.h: parameter initialisation, the PyTorch defaults so results compare with theirs.
#pragma once

#include <cmath>

#include "core/rng.h"
#include "core/tensor.h"

namespace qatlab {

// Uniform in [-bound, bound].
inline void init_uniform(Tensor& t, float bound, Rng& rng) {
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(-bound, bound);
}

// PyTorch's default for Linear and Conv2d weights (kaiming_uniform with a = sqrt(5)) and biases: both
// reduce to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
inline void init_default(Tensor& t, int64_t fan_in, Rng& rng) {
  init_uniform(t, 1.0f / std::sqrt(static_cast<float>(fan_in)), rng);
}

}  // namespace qatlab
