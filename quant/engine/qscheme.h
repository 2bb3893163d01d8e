// qscheme.h: how a tensor is quantized (bit width, signedness, symmetry, granularity) and the choice of
// scale and zero point from an observed range.
//
// The arithmetic everything else rests on:
//   real = scale * (q - zero_point),  q = clamp(zero_point + round_half_even(real / scale), qmin, qmax)
// with real 0 always exactly representable (q = zero_point).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace qatlab {

// The smallest scale choose_qparams ever returns: float epsilon (2^-23, as PyTorch's observers use).
// A zero-width range (an all-zero or constant tensor) gets this scale instead of 0, so 1 / scale, the
// integer multipliers derived from it and everything downstream stay finite.
inline constexpr double kMinScale = 1.1920928955078125e-07;

// Integer code ranges (b = bits):
//   signed:            [-2^(b-1),     2^(b-1) - 1]   e.g. int8 [-128, 127]
//   signed, narrow:    [-2^(b-1) + 1, 2^(b-1) - 1]   e.g. int8 [-127, 127]  (TFLite's int8 weights)
//   unsigned:          [0,            2^b - 1]       e.g. uint8 [0, 255]
//   unsigned, narrow:  [1,            2^b - 1]       e.g. uint8 [1, 255]    (TensorFlow's fake_quant
//                                                                            narrow_range)
//   mid-rise:          odd q in [-(2^b - 1), 2^b - 1]  e.g. 2 bits {-3, -1, 1, 3}
// Narrow range always drops the lowest code: the code count becomes odd (2^b - 1), so a symmetric
// range puts zero exactly in the middle and -qmax is representable, which is what lets int8 weight
// products avoid the lone -128 * -128 overflow case.
//
// Mid-rise (weights of 2 to 7 bits, signed symmetric): the 2^b levels sit symmetrically around 0 with 0
// itself not among them, +-1/2, +-3/2, ... steps (DoReFa's and PACT's weight grid). Written on codes, they
// are the odd integers q on a scale half the distance between levels: real = scale * q. The one grid here
// without an exact 0: a weight is never 0, which a weight may afford (it is never padding) and an
// activation may not. At 2 bits it has 19 % less squared error on a trained ResNet-20's weights than the
// full grid [-2, 1] (experiments/cifar10_resnet20/analysis/weight_grid_mse.md).
struct QScheme {
  int bits = 8;
  bool is_signed = true;
  bool symmetric = false;
  bool per_channel = false;
  int axis = 0;  // the channel axis when per_channel (0 for conv / linear weights: OC)
  bool narrow_range = false;
  bool mid_rise = false;  // odd codes (above); needs signed, symmetric, not narrow, bits <= 7

  int32_t quant_min() const;
  int32_t quant_max() const;
  // Throws std::invalid_argument: "bits must be in 2..8, got 9", a negative per-channel axis, or a
  // mid-rise scheme that is not signed symmetric of at most 7 bits.
  void validate() const;
  // One line, e.g. "8-bit signed affine per-tensor, q in [-128, 127]".
  std::string describe() const;
};

// Weight codes the integer kernels take: zero point 0 and [-q, q] (narrow, and mid-rise's odd codes) or
// [-q - 1, q] (full, below 8 bits), never -128 (the int8 contract; quant/README.md section 1).
inline bool is_int8_weight_range(int32_t quant_min, int32_t quant_max) {
  return quant_max >= 1 && quant_max <= 127 && quant_min >= -127 &&
         (quant_min == -quant_max || quant_min == -quant_max - 1);
}

// The parameters a quantize / dequantize step uses: one (scale, zero_point) pair per tensor (axis == -1)
// or one per slice along `axis`. Feeds q = clamp(zp + nearbyint(x * (1.0f / scale)), quant_min, quant_max)
// and real = scale * (float)(q - zp).
//
// odd_codes (a mid-rise scheme's grid): q = quantize_odd_value(x, 1.0f / scale, quant_max) instead, the
// odd integer nearest x / scale (quant/engine/requantize.h); zero points 0, quant_min = -quant_max.
struct QParams {
  std::vector<float> scale;        // (1) per tensor, (C) per channel
  std::vector<int32_t> zero_point; // same size as scale
  int axis = -1;                   // -1 per tensor
  int32_t quant_min = -128, quant_max = 127;
  bool odd_codes = false;

  bool per_channel() const { return axis >= 0; }
  // The number of codes a value can take: quant_max - quant_min + 1, or half of one more with odd codes.
  int64_t levels() const;
  // Throws std::invalid_argument unless sizes agree, every scale is finite and > 0, every zero point
  // lies in [quant_min, quant_max] and quant_min < quant_max; with odd codes, unless every zero point is
  // 0 and the range is [-q, q] for an odd q.
  void validate() const;
};

// The fields of QParams a scheme fixes (axis, code range, odd codes), with `channels` scales and zero
// points (1 per tensor) for the caller to fill. Every QParams made from a scheme starts here.
QParams grid_of(const QScheme& scheme, size_t channels);

// One (scale, zero_point) pair for the range [min_val, max_val] (see choose_qparams for the rules).
struct ScaleZeroPoint {
  float scale = 1.0f;
  int32_t zero_point = 0;
};
ScaleZeroPoint choose_scale_zero_point(const QScheme& scheme, float min_val, float max_val);

// Scale and zero point from observed ranges: one entry per tensor, or one per channel (per_channel
// schemes; the result's axis is scheme.axis). Rules, computed in double and stored as float:
//   - the range is first widened to contain 0 (min <= 0 <= max), so zero is exactly representable;
//   - affine:    scale = (max - min) / (qmax - qmin),
//                zero_point = qmin - round(min / scale) clamped into [qmin, qmax] (the "nudge"; round
//                half to even, with the scale as stored in float);
//   - symmetric: scale = max(-min, max) / ((qmax - qmin) / 2) (mid-rise: max / qmax, the outer levels
//                at -max and max),
//                zero_point = 0 when signed, the midpoint (qmin + qmax + 1) / 2 when unsigned;
//   - scale is never below kMinScale (a zero range stays usable).
// Throws std::invalid_argument for a non-finite bound ("non-finite range"), min > max, a size mismatch,
// or a per-tensor scheme given more than one range.
QParams choose_qparams(const QScheme& scheme, std::span<const float> min_vals, std::span<const float> max_vals);

}  // namespace qatlab
