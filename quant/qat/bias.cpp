// bias.cpp: a layer's bias on its accumulator grid (bias.h).
#include "quant/qat/bias.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/tensor.h"

namespace qatlab {

double bias_code(float b, double scale) { return std::nearbyint(static_cast<double>(b) / scale); }

int32_t quantize_bias(float b, double scale) {
  return static_cast<int32_t>(std::clamp(bias_code(b, scale), static_cast<double>(std::numeric_limits<int32_t>::min()),
                                         static_cast<double>(std::numeric_limits<int32_t>::max())));
}

Tensor fake_quantize_bias(const Tensor& b, const QParams& input, const QParams& weights, const char* op) {
  Tensor y = Tensor::empty(b.shape());  // (C)
  const int64_t channels = b.numel();
  for (int64_t c = 0; c < channels; ++c) {
    const double scale = bias_scale(input.scale[0], weights.scale[weights.per_channel() ? c : 0]);
    y.data()[c] = static_cast<float>(bias_code(b.data()[c], scale) * scale);
  }
  record_op(y, op, {b}, [b, channels](const Tensor& gy) {
    float* gb = b.mutable_grad();
    for (int64_t c = 0; c < channels; ++c) gb[c] += gy.data()[c];
  });
  return y;
}

}  // namespace qatlab
