// init.h: parameter initialisation: the PyTorch defaults so results compare with theirs, and He (Kaiming)
// normal initialisation for deep ReLU networks such as ResNets.
#pragma once

#include <cmath>
#include <string>

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

// He et al. 2015: N(0, 2 / fan) keeps the variance of ReLU activations (fan = fan_in) or of the
// gradients (fan = fan_out, what PyTorch's ResNets use for convs: OC * K * K) the same from layer to
// layer, so a 20-layer network trains from the start where the uniform default shrinks the signal.
inline void init_kaiming_normal(Tensor& t, int64_t fan, Rng& rng) {
  QATLAB_CHECK(fan > 0, "init_kaiming_normal: fan must be positive, got " + std::to_string(fan));
  const float stddev = std::sqrt(2.0f / static_cast<float>(fan));
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = stddev * rng.normal();
}

}  // namespace qatlab
