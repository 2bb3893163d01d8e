// requantize.h: int32 accumulator -> int8 output, the fixed-point way (gemmlowp / TFLite arithmetic).
//
// These few functions are the single source of truth for integer rescaling: the integer kernels
// (reference and optimized), the integer graph and the exact mode of the QAT simulation all call
// them, so a value computed in training and at inference is rounded in exactly one way.
//
// A real multiplier M > 0 is stored as an int32 `multiplier` in [2^30, 2^31) and an int `shift` with
//   M ~= multiplier * 2^(shift - 31),
// and x * M is computed with one rounding, of the exact 64-bit product:
//   floor((x' * multiplier + 2^(30 + right)) / 2^(31 + right)),  x' = x * 2^max(shift, 0) saturated,
//   right = max(-shift, 0)
// (TFLite's single-rounding MultiplyByQuantizedMultiplier). gemmlowp's form rounds twice (a rounding
// doubling high multiply, then a rounding right shift); its two functions are kept below because the
// integer LSTM's cell arithmetic uses the rounding right shift, and quant/README.md section 6 says why
// the single rounding was chosen (the float simulation agrees far more often with it).
// Integer division below is C++ division (truncation toward zero) and `>>` on a negative int32 is an
// arithmetic shift (floor), both guaranteed since C++20.
#pragma once

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "core/round_odd.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

// (a * b * 2) / 2^32 rounded to nearest, computed as
//   ab = (int64) a * b;  nudge = ab >= 0 ? 2^30 : 1 - 2^30;  result = (ab + nudge) / 2^31  (truncating)
// which equals floor((a * b + 2^30) / 2^31): ties round toward +infinity (0.5 -> 1, -0.5 -> 0).
// The only product out of int32 range, INT32_MIN * INT32_MIN (the real value 1.0 * 1.0 doubled),
// saturates to INT32_MAX.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == std::numeric_limits<int32_t>::min() && b == std::numeric_limits<int32_t>::min())
    return std::numeric_limits<int32_t>::max();
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (int64_t{1} << 30) : (1 - (int64_t{1} << 30));
  return static_cast<int32_t>((ab + nudge) / (int64_t{1} << 31));
}

// x / 2^exponent rounded to nearest, ties away from zero, exponent in [0, 31]:
//   mask = 2^exponent - 1;  remainder = x & mask;  threshold = (mask >> 1) + (x < 0 ? 1 : 0);
//   result = (x >> exponent) + (remainder > threshold ? 1 : 0).
// (x >> exponent) is floor(x / 2^exponent) and remainder = x - 2^exponent * floor(...) >= 0; rounding
// up needs remainder > half, or remainder >= half for negative x (so that -2.5 goes to -3, not -2).
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  assert(exponent >= 0 && exponent <= 31);
  const int32_t mask = static_cast<int32_t>((int64_t{1} << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

// x * 2^shift saturated to the int32 range, shift in [0, 30]. TFLite's reference multiplies in int32
// and leaves overflow undefined; we saturate, which is also what its vectorised kernels do, and which
// keeps the final clamp right: a saturated value times a multiplier >= 2^30 stays >= 2^30 in
// magnitude with the right sign (a positive shift has no right shift after it), so it clamps to the
// same int8 bound as the exact product would.
inline int32_t saturating_left_shift(int32_t x, int shift) {
  assert(shift >= 0 && shift <= 30);
  const int64_t v = static_cast<int64_t>(x) * (int64_t{1} << shift);  // |v| <= 2^61: no overflow
  return static_cast<int32_t>(std::clamp<int64_t>(v, std::numeric_limits<int32_t>::min(),
                                                  std::numeric_limits<int32_t>::max()));
}

// The two parts of a signed shift: the left shift applied to x, max(shift, 0), and the right shift of
// the 64-bit product, 31 + max(-shift, 0). The vector kernels store them per channel.
inline int requantize_left_shift(int shift) { return shift > 0 ? shift : 0; }
inline int requantize_total_shift(int shift) { return 31 + (shift > 0 ? 0 : -shift); }

// x * multiplier * 2^(shift - 31) rounded once, to nearest with ties toward +infinity, shift in [-31, 30],
// multiplier in [0, 2^31):
//   left = max(shift, 0), right = max(-shift, 0), total = 31 + right
//   result = floor((saturating_left_shift(x, left) * multiplier + 2^(total - 1)) / 2^total)   (in int64)
// The product and the nudge stay below 2^63 in magnitude (|x'| <= 2^31, multiplier < 2^31, nudge <=
// 2^61), and the result fits int32: |x' * multiplier| < 2^62 gives |result| <= 2^31 - 1 after rounding.
// With left > 0 this is one rounding of x * M whenever x * 2^left fits int32; when it does not, the
// saturated x' gives a result of magnitude >= 2^30 with x's sign, which every requantize() clamps to
// the same int8 bound as the exact product.
inline int32_t multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
  assert(shift >= -31 && shift <= 30 && multiplier >= 0);
  const int total = requantize_total_shift(shift);
  const int64_t product = static_cast<int64_t>(saturating_left_shift(x, requantize_left_shift(shift))) * multiplier;
  return static_cast<int32_t>((product + (int64_t{1} << (total - 1))) >> total);  // >>: floor (C++20)
}

// The real multiplier of a (multiplier, shift) pair: multiplier * 2^(shift - 31). For tests and docs.
inline double dequantize_multiplier(int32_t multiplier, int shift) {
  return std::ldexp(static_cast<double>(multiplier), shift - 31);
}

// real_multiplier = fraction * 2^exponent with fraction in [0.5, 1) (std::frexp), then
//   q = round(fraction * 2^31)   (ties away from zero; the product is exact)
//   if q == 2^31: q = 2^30, exponent += 1      (fraction rounded up to 1.0)
//   multiplier = q in [2^30, 2^31), shift = exponent.
// A multiplier so small that shift < -31 becomes multiplier 0, shift 0: every int32 times it rounds
// to 0 (|x * M| < 2^31 * 2^-33 < 0.5). real_multiplier must be finite and > 0, and shift > 30 (a
// multiplier of 2^30 or more) is rejected: no sane scale ratio is that large.
inline void quantize_multiplier(double real_multiplier, int32_t* multiplier, int* shift) {
  auto fail = [real_multiplier](const char* what) {
    char value[64];
    std::snprintf(value, sizeof value, "%.17g", real_multiplier);
    throw std::invalid_argument(std::string("quantize_multiplier: real multiplier ") + value + " " + what);
  };
  if (!std::isfinite(real_multiplier) || !(real_multiplier > 0.0)) fail("must be finite and > 0");
  int exponent = 0;
  const double fraction = std::frexp(real_multiplier, &exponent);
  int64_t q = std::llround(std::ldexp(fraction, 31));
  if (q == (int64_t{1} << 31)) {
    q /= 2;
    ++exponent;
  }
  if (exponent < -31) {
    *multiplier = 0;
    *shift = 0;
    return;
  }
  if (exponent > 30) fail("is too large (needs a shift above 30)");
  *multiplier = static_cast<int32_t>(q);
  *shift = exponent;
}

// The output stage of conv / fully connected / add:
//   clamp(output_offset + multiply_by_quantized_multiplier(acc, multiplier, shift), act_min, act_max)
// computed as output_offset + clamp(scaled, act_min - output_offset, act_max - output_offset): the same
// value, but clamping before the add means the add cannot overflow when `scaled` is near INT32_MAX.
inline int8_t requantize(int32_t acc, int32_t multiplier, int shift, int32_t output_offset, int32_t act_min,
                         int32_t act_max) {
  const int32_t scaled = multiply_by_quantized_multiplier(acc, multiplier, shift);
  return static_cast<int8_t>(output_offset + std::clamp(scaled, act_min - output_offset, act_max - output_offset));
}

// One float -> integer code, the formula shared by the integer graph's Quantize entry and fake-quant:
//   q = clamp(zero_point + (int32) nearbyint(x * inv_scale), qmin, qmax)
// in float32, nearbyint rounding ties to even (the default rounding mode), inv_scale = 1.0f / scale
// computed once by the caller. The clamp is done on the float before the conversion so that huge and
// infinite values saturate instead of overflowing the int conversion (bounds qmin - zero_point and
// qmax - zero_point are small integers, exact in float). NaN has no code: it maps to the zero point
// (real 0); callers that must not see NaN (quantize_float_to_int8) reject it before calling.
inline int32_t quantize_value(float x, float inv_scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  float r = std::nearbyint(x * inv_scale);
  if (std::isnan(r)) return zero_point;
  r = std::clamp(r, static_cast<float>(qmin - zero_point), static_cast<float>(qmax - zero_point));
  return zero_point + static_cast<int32_t>(r);
}

// The same on a mid-rise grid (odd codes, QParams::odd_codes): q = clamp(round_to_odd(x * inv_scale),
// -qmax, qmax), the odd integer nearest x / scale (core/round_odd.h), qmax odd. NaN maps to 0: not a
// code of the grid, but the value fake-quant gives NaN (real 0) and one no product counts.
inline int32_t quantize_odd_value(float x, float inv_scale, int32_t qmax) {
  const float r = round_to_odd(x * inv_scale);
  if (std::isnan(r)) return 0;
  return static_cast<int32_t>(std::clamp(r, static_cast<float>(-qmax), static_cast<float>(qmax)));
}

// A weight's code on its grid qp (zero point 0, as the integer graph's weights are; inv_scale the
// channel's 1.0f / scale): quantize_odd_value on a mid-rise grid, else quantize_value.
inline int32_t quantize_weight_value(float x, float inv_scale, const QParams& qp) {
  return qp.odd_codes ? quantize_odd_value(x, inv_scale, qp.quant_max)
                      : quantize_value(x, inv_scale, 0, qp.quant_min, qp.quant_max);
}

}  // namespace qatlab
