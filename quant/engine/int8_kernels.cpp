// int8_kernels.cpp: reference int8 conv / fully connected, pooling, residual add and the float <-> int8
// entry and exit, as plain loops (see int8_kernels.h for the formulas).
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, CG = C / G, OCG = OC / G, IN / OUT features.
#include "quant/engine/int8_kernels.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/ops.h"
#include "quant/engine/packed_codes.h"
#include "quant/engine/requantize.h"

namespace qatlab {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

// Checks the parts shared by conv and fully connected: per-channel multipliers and the offsets.
void check_output_stage(const char* op, int64_t channels, const std::vector<int32_t>& multipliers,
                        const std::vector<int>& shifts, int32_t input_offset, int32_t output_offset,
                        int32_t act_min, int32_t act_max) {
  const std::string name = op;
  QATLAB_CHECK(static_cast<int64_t>(multipliers.size()) == channels && static_cast<int64_t>(shifts.size()) == channels,
            name + ": expected " + str(channels) + " output multipliers and shifts (one per output channel), got " +
                str(static_cast<int64_t>(multipliers.size())) + " and " + str(static_cast<int64_t>(shifts.size())));
  for (int64_t c = 0; c < channels; ++c) {
    QATLAB_CHECK(multipliers[c] >= 0, name + ": output_multiplier[" + str(c) + "] = " + str(multipliers[c]) +
                                       " must be in [0, 2^31)");
    QATLAB_CHECK(shifts[c] >= -31 && shifts[c] <= 30,
              name + ": output_shift[" + str(c) + "] = " + str(shifts[c]) + " must be in [-31, 30]");
  }
  QATLAB_CHECK(input_offset >= -127 && input_offset <= 128,
            name + ": input_offset " + str(input_offset) + " must be in [-127, 128] (minus a zero point)");
  QATLAB_CHECK(output_offset >= -128 && output_offset <= 127,
            name + ": output_offset " + str(output_offset) + " must be in [-128, 127]");
  QATLAB_CHECK(-128 <= act_min && act_min <= act_max && act_max <= 127,
            name + ": activation range [" + str(act_min) + ", " + str(act_max) + "] must lie in [-128, 127]");
}

// Weights are narrow-range ([-127, 127]); the converter guarantees it, a debug build checks it.
[[maybe_unused]] bool narrow_range(const int8_t* w, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (w[i] == -128) return false;
  return true;
}

}  // namespace

// ----------------------------------------------------------------------------------------------- conv

Shape conv2d_int8_output_shape(const ConvInt8Params& p, const Shape& in_shape, const Shape& f_shape) {
  QATLAB_CHECK(in_shape.size() == 4 && shape_numel(in_shape) > 0,
            "conv2d_int8: input must be a non-empty (N, C, H, W), got " + shape_str(in_shape));
  QATLAB_CHECK(f_shape.size() == 4 && shape_numel(f_shape) > 0,
            "conv2d_int8: filter must be a non-empty (OC, C/groups, KH, KW), got " + shape_str(f_shape));
  QATLAB_CHECK(p.groups >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
            "conv2d_int8: groups " + str(p.groups) + ", strides " + str(p.stride_h) + "x" + str(p.stride_w) +
                " and padding " + str(p.pad_h) + "x" + str(p.pad_w) + ": expected groups, strides >= 1, padding >= 0");
  const int64_t c = in_shape[1], oc = f_shape[0];
  QATLAB_CHECK(c % p.groups == 0 && oc % p.groups == 0,
            "conv2d_int8: channels " + str(c) + " -> " + str(oc) + " not divisible by groups " + str(p.groups));
  QATLAB_CHECK(f_shape[1] == c / p.groups, "conv2d_int8: filter " + shape_str(f_shape) + " does not fit input " +
                                            shape_str(in_shape) + " with groups " + str(p.groups));
  const int64_t oh = conv_out_size(in_shape[2], f_shape[2], p.stride_h, p.pad_h);
  const int64_t ow = conv_out_size(in_shape[3], f_shape[3], p.stride_w, p.pad_w);
  QATLAB_CHECK(in_shape[2] + 2 * p.pad_h >= f_shape[2] && in_shape[3] + 2 * p.pad_w >= f_shape[3] && oh > 0 && ow > 0,
            "conv2d_int8: filter " + shape_str(f_shape) + " larger than the padded input " + shape_str(in_shape));
  check_output_stage("conv2d_int8", oc, p.output_multiplier, p.output_shift, p.input_offset, p.output_offset,
                     p.quantized_activation_min, p.quantized_activation_max);
  return {in_shape[0], oc, oh, ow};
}

namespace {

// The reference convolution, the weight of flat index i given by weight_at(i): a plain array read
// (int8 filter) or a field of a packed byte (packed filter). One loop for both, so the two kernels
// cannot drift apart. The shapes are checked (out_shape from conv2d_int8_output_shape).
template <class WeightAt>
void conv2d_reference_loop(const ConvInt8Params& p, const int8_t* input, const Shape& in_shape, const Shape& f_shape,
                           const Shape& out_shape, WeightAt weight_at, const int32_t* bias, int8_t* output) {
  const int64_t N = in_shape[0], C = in_shape[1], H = in_shape[2], W = in_shape[3];
  const int64_t OC = f_shape[0], KH = f_shape[2], KW = f_shape[3], OH = out_shape[2], OW = out_shape[3];
  const int64_t CG = C / p.groups, OCG = OC / p.groups;

  // Images over threads, when there is enough work to pay for waking them (tests run tiny cases).
#pragma omp parallel for schedule(static) if (N > 1 && N * OC * OH * OW * CG * KH * KW > (int64_t{1} << 20))
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t oc = 0; oc < OC; ++oc) {
      const int64_t g = oc / OCG;
      for (int64_t oy = 0; oy < OH; ++oy) {
        for (int64_t ox = 0; ox < OW; ++ox) {
          // Summed in int64 (exact), then reduced modulo 2^32 by the conversion (C++20), which is what
          // an int32 accumulator that wraps would hold: the optimized paths wrap the same way.
          int64_t acc = bias ? bias[oc] : 0;
          for (int64_t c = 0; c < CG; ++c) {
            for (int64_t ky = 0; ky < KH; ++ky) {
              const int64_t iy = oy * p.stride_h - p.pad_h + ky;
              if (iy < 0 || iy >= H) continue;  // padding: (zero_point + input_offset) * w == 0
              for (int64_t kx = 0; kx < KW; ++kx) {
                const int64_t ix = ox * p.stride_w - p.pad_w + kx;
                if (ix < 0 || ix >= W) continue;
                const int32_t x = input[((n * C + g * CG + c) * H + iy) * W + ix];
                const int32_t w = weight_at(((oc * CG + c) * KH + ky) * KW + kx);
                acc += static_cast<int64_t>(x + p.input_offset) * w;
              }
            }
          }
          output[((n * OC + oc) * OH + oy) * OW + ox] =
              requantize(static_cast<int32_t>(acc), p.output_multiplier[oc], p.output_shift[oc], p.output_offset,
                         p.quantized_activation_min, p.quantized_activation_max);
        }
      }
    }
  }
}

// The reference fully connected layer, weight (o, i) given by weight_at(o * IN + i) (see above); the
// shapes are checked.
template <class WeightAt>
void fully_connected_reference_loop(const FullyConnectedInt8Params& p, const int8_t* input, const Shape& in_shape,
                                    const Shape& w_shape, WeightAt weight_at, const int32_t* bias, int8_t* output) {
  const int64_t N = in_shape[0], IN = in_shape[1], OUT = w_shape[0];
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OUT; ++o) {
      int64_t acc = bias ? bias[o] : 0;  // exact, then wrapped to int32 as in conv2d_reference_loop
      for (int64_t i = 0; i < IN; ++i)
        acc += static_cast<int64_t>(input[n * IN + i] + p.input_offset) * weight_at(o * IN + i);
      output[n * OUT + o] = requantize(static_cast<int32_t>(acc), p.output_multiplier[o], p.output_shift[o],
                                       p.output_offset, p.quantized_activation_min, p.quantized_activation_max);
    }
  }
}

}  // namespace

void conv2d_int8_reference(const ConvInt8Params& p, const int8_t* input, const Shape& in_shape, const int8_t* filter,
                           const Shape& f_shape, const int32_t* bias, int8_t* output) {
  const Shape out_shape = conv2d_int8_output_shape(p, in_shape, f_shape);
  assert(narrow_range(filter, shape_numel(f_shape)));
  conv2d_reference_loop(p, input, in_shape, f_shape, out_shape, [filter](int64_t i) { return int32_t{filter[i]}; },
                        bias, output);
}

void conv2d_packed_reference(const ConvInt8Params& p, const int8_t* input, const Shape& in_shape,
                             const uint8_t* filter, int filter_bits, const Shape& f_shape, const int32_t* bias,
                             int8_t* output) {
  check_storage_bits(filter_bits, "conv2d_packed_reference");
  const Shape out_shape = conv2d_int8_output_shape(p, in_shape, f_shape);
  conv2d_reference_loop(p, input, in_shape, f_shape, out_shape,
                        [filter, filter_bits](int64_t i) { return int32_t{packed_code(filter, i, filter_bits)}; }, bias,
                        output);
}

// ------------------------------------------------------------------------------------ fully connected

Shape fully_connected_int8_output_shape(const FullyConnectedInt8Params& p, const Shape& in_shape,
                                        const Shape& w_shape) {
  QATLAB_CHECK(in_shape.size() == 2 && shape_numel(in_shape) > 0,
            "fully_connected_int8: input must be a non-empty (N, IN), got " + shape_str(in_shape));
  QATLAB_CHECK(w_shape.size() == 2 && shape_numel(w_shape) > 0 && w_shape[1] == in_shape[1],
            "fully_connected_int8: weights " + shape_str(w_shape) + " do not fit input " + shape_str(in_shape) +
                ": expected (OUT, " + str(in_shape[1]) + ")");
  check_output_stage("fully_connected_int8", w_shape[0], p.output_multiplier, p.output_shift, p.input_offset,
                     p.output_offset, p.quantized_activation_min, p.quantized_activation_max);
  return {in_shape[0], w_shape[0]};
}

void fully_connected_int8_reference(const FullyConnectedInt8Params& p, const int8_t* input, const Shape& in_shape,
                                    const int8_t* weights, const Shape& w_shape, const int32_t* bias,
                                    int8_t* output) {
  fully_connected_int8_output_shape(p, in_shape, w_shape);
  assert(narrow_range(weights, shape_numel(w_shape)));
  fully_connected_reference_loop(p, input, in_shape, w_shape, [weights](int64_t i) { return int32_t{weights[i]}; },
                                 bias, output);
}

void fully_connected_packed_reference(const FullyConnectedInt8Params& p, const int8_t* input, const Shape& in_shape,
                                      const uint8_t* weights, int weight_bits, const Shape& w_shape,
                                      const int32_t* bias, int8_t* output) {
  check_storage_bits(weight_bits, "fully_connected_packed_reference");
  fully_connected_int8_output_shape(p, in_shape, w_shape);
  fully_connected_reference_loop(
      p, input, in_shape, w_shape,
      [weights, weight_bits](int64_t i) { return int32_t{packed_code(weights, i, weight_bits)}; }, bias, output);
}

// -------------------------------------------------------------------------------------------- pooling

Shape pool2d_int8_output_shape(const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad) {
  QATLAB_CHECK(in_shape.size() == 4 && shape_numel(in_shape) > 0,
            "pool2d_int8: input must be a non-empty (N, C, H, W), got " + shape_str(in_shape));
  QATLAB_CHECK(kernel >= 1 && stride >= 1 && pad >= 0 && 2 * pad <= kernel,
            "pool2d_int8: kernel " + str(kernel) + ", stride " + str(stride) + ", padding " + str(pad) +
                ": expected kernel, stride >= 1 and 0 <= padding <= kernel / 2");
  QATLAB_CHECK(in_shape[2] + 2 * pad >= kernel && in_shape[3] + 2 * pad >= kernel,
            "pool2d_int8: window " + str(kernel) + " larger than the padded input " + shape_str(in_shape));
  return {in_shape[0], in_shape[1], conv_out_size(in_shape[2], kernel, stride, pad),
          conv_out_size(in_shape[3], kernel, stride, pad)};
}

void max_pool2d_int8_reference(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride,
                               int64_t pad, int8_t* output) {
  const Shape out_shape = pool2d_int8_output_shape(in_shape, kernel, stride, pad);
  const int64_t planes = in_shape[0] * in_shape[1], H = in_shape[2], W = in_shape[3];
  const int64_t OH = out_shape[2], OW = out_shape[3];
#pragma omp parallel for schedule(static) if (planes * OH * OW * kernel * kernel > (int64_t{1} << 20))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int8_t* x = input + pl * H * W;  // (H, W)
    int8_t* y = output + pl * OH * OW;      // (OH, OW)
    for (int64_t oy = 0; oy < OH; ++oy) {
      // The window clipped to the real pixels: padding never wins (and pad <= kernel / 2 leaves at
      // least one real pixel in every window).
      const int64_t y0 = std::max<int64_t>(oy * stride - pad, 0), y1 = std::min(oy * stride - pad + kernel, H);
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t x0 = std::max<int64_t>(ox * stride - pad, 0), x1 = std::min(ox * stride - pad + kernel, W);
        int8_t best = -128;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) best = std::max(best, x[iy * W + ix]);
        y[oy * OW + ox] = best;
      }
    }
  }
}

namespace {

// One output row of the 2x2 stride-2 window from input rows r0 and r1. Without clipping, and with
// restrict pointers (no aliasing to guard against), the compiler vectorises this loop: the general
// loop of the reference costs about 20 times as much per output at LeNet's sizes.
void max_pool_row_2x2(const int8_t* __restrict r0, const int8_t* __restrict r1, int8_t* __restrict y, int64_t ow) {
  for (int64_t ox = 0; ox < ow; ++ox) {
    const int8_t top = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
    const int8_t bottom = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
    y[ox] = top > bottom ? top : bottom;
  }
}

}  // namespace

void max_pool2d_int8(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad,
                     int8_t* output) {
  if (kernel != 2 || stride != 2 || pad != 0)
    return max_pool2d_int8_reference(input, in_shape, kernel, stride, pad, output);
  const Shape out_shape = pool2d_int8_output_shape(in_shape, kernel, stride, pad);
  const int64_t planes = in_shape[0] * in_shape[1], H = in_shape[2], W = in_shape[3];
  const int64_t OH = out_shape[2], OW = out_shape[3];
#pragma omp parallel for schedule(static) if (planes * OH * OW > (int64_t{1} << 22))
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int8_t* r0 = input + (pl * H + 2 * oy) * W;  // input rows 2oy and 2oy + 1 of plane pl
      max_pool_row_2x2(r0, r0 + W, output + (pl * OH + oy) * OW, OW);
    }
}

void avg_pool2d_int8(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad,
                     int32_t zero_point, int8_t* output) {
  const Shape out_shape = pool2d_int8_output_shape(in_shape, kernel, stride, pad);
  QATLAB_CHECK(zero_point >= -128 && zero_point <= 127,
            "avg_pool2d_int8: zero point " + str(zero_point) + " must be in [-128, 127]");
  const int64_t planes = in_shape[0] * in_shape[1], H = in_shape[2], W = in_shape[3];
  const int64_t OH = out_shape[2], OW = out_shape[3];
  const int64_t count = kernel * kernel;  // every window lies inside the padded input: always full
#pragma omp parallel for schedule(static) if (planes * OH * OW * kernel * kernel > (int64_t{1} << 20))
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int8_t* x = input + pl * H * W;  // (H, W)
    int8_t* y = output + pl * OH * OW;      // (OH, OW)
    for (int64_t oy = 0; oy < OH; ++oy) {
      const int64_t y0 = std::max<int64_t>(oy * stride - pad, 0), y1 = std::min(oy * stride - pad + kernel, H);
      for (int64_t ox = 0; ox < OW; ++ox) {
        const int64_t x0 = std::max<int64_t>(ox * stride - pad, 0), x1 = std::min(ox * stride - pad + kernel, W);
        int64_t sum = 0;
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = x0; ix < x1; ++ix) sum += x[iy * W + ix];
        sum += (count - (y1 - y0) * (x1 - x0)) * zero_point;  // the padded positions, at real 0
        y[oy * OW + ox] = static_cast<int8_t>(rounded_div_away_from_zero(sum, count));
      }
    }
  }
}

void global_avg_pool_int8(const int8_t* input, const Shape& in_shape, int8_t* output) {
  QATLAB_CHECK(in_shape.size() == 4 && shape_numel(in_shape) > 0,
            "global_avg_pool_int8: input must be a non-empty (N, C, H, W), got " + shape_str(in_shape));
  const int64_t planes = in_shape[0] * in_shape[1], HW = in_shape[2] * in_shape[3];
  for (int64_t pl = 0; pl < planes; ++pl) {
    const int8_t* x = input + pl * HW;  // (H * W)
    int64_t sum = 0;
    for (int64_t i = 0; i < HW; ++i) sum += x[i];
    output[pl] = static_cast<int8_t>(rounded_div_away_from_zero(sum, HW));
  }
}

// ----------------------------------------------------------------------------------------- residual add

AddInt8Params make_add_params(float s1, int32_t z1, float s2, int32_t z2, float s_out, int32_t z_out, int32_t act_min,
                              int32_t act_max) {
  for (float s : {s1, s2, s_out})
    QATLAB_CHECK(std::isfinite(s) && s > 0.0f, "make_add_params: scales (" + std::to_string(s1) + ", " +
                                                std::to_string(s2) + " -> " + std::to_string(s_out) +
                                                ") must be finite and > 0");
  for (int32_t z : {z1, z2, z_out})
    QATLAB_CHECK(z >= -128 && z <= 127, "make_add_params: zero point " + str(z) + " must be in [-128, 127]");
  QATLAB_CHECK(-128 <= act_min && act_min <= act_max && act_max <= 127,
            "make_add_params: activation range [" + str(act_min) + ", " + str(act_max) + "] must lie in [-128, 127]");
  AddInt8Params p;
  p.left_shift = 20;
  p.input1_offset = -z1;
  p.input2_offset = -z2;
  p.output_offset = z_out;
  p.quantized_activation_min = act_min;
  p.quantized_activation_max = act_max;
  // Both inputs are rescaled to the scale 2 * max(s1, s2) / 2^20, so their real multipliers are <= 0.5
  // and the 20 bits of left shift keep the rounding of that step far below one output step.
  const double twice_max_input_scale = 2.0 * std::max<double>(s1, s2);
  quantize_multiplier(s1 / twice_max_input_scale, &p.input1_multiplier, &p.input1_shift);
  quantize_multiplier(s2 / twice_max_input_scale, &p.input2_multiplier, &p.input2_shift);
  quantize_multiplier(twice_max_input_scale / (static_cast<double>(int64_t{1} << p.left_shift) * s_out),
                      &p.output_multiplier, &p.output_shift);
  return p;
}

void check_add_int8_params(const AddInt8Params& p) {
  QATLAB_CHECK(p.left_shift >= 0 && p.left_shift <= 20,
            "add_int8: left_shift " + str(p.left_shift) + " must be in [0, 20] (255 * 2^left_shift must fit int32)");
  QATLAB_CHECK(p.input1_offset >= -127 && p.input1_offset <= 128 && p.input2_offset >= -127 && p.input2_offset <= 128 &&
                p.output_offset >= -128 && p.output_offset <= 127,
            "add_int8: offsets " + str(p.input1_offset) + ", " + str(p.input2_offset) + " -> " + str(p.output_offset) +
                ": expected input offsets in [-127, 128] and an output offset in [-128, 127]");
  for (int shift : {p.input1_shift, p.input2_shift, p.output_shift})
    QATLAB_CHECK(shift >= -31 && shift <= 30, "add_int8: shift " + str(shift) + " must be in [-31, 30]");
  for (int32_t m : {p.input1_multiplier, p.input2_multiplier, p.output_multiplier})
    QATLAB_CHECK(m >= 0, "add_int8: multiplier " + str(m) + " must be >= 0");
  QATLAB_CHECK(-128 <= p.quantized_activation_min && p.quantized_activation_min <= p.quantized_activation_max &&
                p.quantized_activation_max <= 127,
            "add_int8: activation range [" + str(p.quantized_activation_min) + ", " +
                str(p.quantized_activation_max) + "] must lie in [-128, 127]");
}

void add_int8_reference(const AddInt8Params& p, const int8_t* a, const int8_t* b, int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const int32_t lo = p.quantized_activation_min - p.output_offset, hi = p.quantized_activation_max - p.output_offset;
  for (int64_t i = 0; i < count; ++i) {
    const int32_t v1 = (a[i] + p.input1_offset) * (1 << p.left_shift);  // |v| <= 255 * 2^20: fits
    const int32_t v2 = (b[i] + p.input2_offset) * (1 << p.left_shift);
    const int32_t s1 = multiply_by_quantized_multiplier(v1, p.input1_multiplier, p.input1_shift);
    const int32_t s2 = multiply_by_quantized_multiplier(v2, p.input2_multiplier, p.input2_shift);
    // s1 + s2 cannot overflow: each is at most |v| * 0.5 (input multipliers <= 0.5).
    const int32_t scaled = multiply_by_quantized_multiplier(s1 + s2, p.output_multiplier, p.output_shift);
    // Clamp before adding the offset (as in requantize()), so the add cannot overflow.
    out[i] = static_cast<int8_t>(p.output_offset + std::clamp(scaled, lo, hi));
  }
}

// ------------------------------------------------------------------------------------ requantization

RequantizeInt8Params make_requantize_params(float s_in, int32_t z_in, float s_out, int32_t z_out, int32_t act_min,
                                            int32_t act_max) {
  for (float s : {s_in, s_out})
    QATLAB_CHECK(std::isfinite(s) && s > 0.0f, "make_requantize_params: scales (" + std::to_string(s_in) + " -> " +
                                                std::to_string(s_out) + ") must be finite and > 0");
  for (int32_t z : {z_in, z_out})
    QATLAB_CHECK(z >= -128 && z <= 127, "make_requantize_params: zero point " + str(z) + " must be in [-128, 127]");
  QATLAB_CHECK(-128 <= act_min && act_min <= act_max && act_max <= 127,
               "make_requantize_params: activation range [" + str(act_min) + ", " + str(act_max) +
                   "] must lie in [-128, 127]");
  RequantizeInt8Params p;
  p.input_offset = -z_in;
  p.output_offset = z_out;
  p.quantized_activation_min = act_min;
  p.quantized_activation_max = act_max;
  quantize_multiplier(static_cast<double>(s_in) / s_out, &p.multiplier, &p.shift);
  return p;
}

void check_requantize_int8_params(const RequantizeInt8Params& p) {
  QATLAB_CHECK(p.input_offset >= -127 && p.input_offset <= 128 && p.output_offset >= -128 && p.output_offset <= 127,
               "requantize_int8: offsets " + str(p.input_offset) + " -> " + str(p.output_offset) +
                   ": expected an input offset in [-127, 128] and an output offset in [-128, 127]");
  QATLAB_CHECK(p.shift >= -31 && p.shift <= 30, "requantize_int8: shift " + str(p.shift) + " must be in [-31, 30]");
  QATLAB_CHECK(p.multiplier >= 0, "requantize_int8: multiplier " + str(p.multiplier) + " must be >= 0");
  QATLAB_CHECK(-128 <= p.quantized_activation_min && p.quantized_activation_min <= p.quantized_activation_max &&
                   p.quantized_activation_max <= 127,
               "requantize_int8: activation range [" + str(p.quantized_activation_min) + ", " +
                   str(p.quantized_activation_max) + "] must lie in [-128, 127]");
}

void requantize_int8_reference(const RequantizeInt8Params& p, const int8_t* in, int8_t* out, int64_t count) {
  check_requantize_int8_params(p);
  for (int64_t i = 0; i < count; ++i)
    out[i] = requantize(in[i] + p.input_offset, p.multiplier, p.shift, p.output_offset, p.quantized_activation_min,
                        p.quantized_activation_max);
}

void requantize_int8(const RequantizeInt8Params& p, const int8_t* in, int8_t* out, int64_t count) {
  // An int8 input has 256 values: past a few hundred of them, the formula once per value (the table,
  // by the reference itself, so every entry is the reference's code) and a lookup per element are faster
  // than the 64-bit product per element.
  constexpr int64_t kTableFrom = 512;
  if (count < kTableFrom) return requantize_int8_reference(p, in, out, count);
  int8_t all_codes[256], table[256];
  for (int q = 0; q < 256; ++q) all_codes[q] = static_cast<int8_t>(q - 128);
  requantize_int8_reference(p, all_codes, table, 256);
  for (int64_t i = 0; i < count; ++i) out[i] = table[static_cast<int32_t>(in[i]) + 128];
}

// ------------------------------------------------------------------------------- quantize / dequantize

int64_t find_first_nan(const float* x, int64_t n) {
  // Counting per block keeps the common case (no NaN) a branch-free loop that vectorises; the int32
  // count fills 8 lanes of a vector (an int64 count would take two conversions per compare).
  constexpr int64_t kBlock = 4096;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    int32_t nans = 0;
    for (int64_t i = i0; i < i1; ++i) nans += std::isnan(x[i]) ? 1 : 0;
    if (nans > 0) return std::find_if(x + i0, x + i1, [](float v) { return std::isnan(v); }) - x;
  }
  return -1;
}

void quantize_float_to_int8(const float* x, int8_t* q, int64_t n, float scale, int32_t zero_point, int32_t qmin,
                            int32_t qmax) {
  QATLAB_CHECK(std::isfinite(scale) && scale > 0.0f,
            "quantize_float_to_int8: scale " + std::to_string(scale) + " must be finite and > 0");
  QATLAB_CHECK(-128 <= qmin && qmin <= zero_point && zero_point <= qmax && qmax <= 127,
            "quantize_float_to_int8: expected -128 <= qmin <= zero_point <= qmax <= 127, got qmin " + str(qmin) +
                ", zero_point " + str(zero_point) + ", qmax " + str(qmax));
  // NaN first, in a pass of its own: both loops are then free of branches and vectorise (a test
  // inside the conversion loop kept it scalar, 5 % of the integer LeNet-5's time).
  const int64_t nan_at = find_first_nan(x, n);
  if (nan_at >= 0) throw std::invalid_argument("quantize_float_to_int8: input element " + str(nan_at) + " is NaN");
  quantize_float_to_int8_values(x, q, n, scale, zero_point, qmin, qmax);
}

void quantize_float_to_int8_values(const float* x, int8_t* q, int64_t n, float scale, int32_t zero_point, int32_t qmin,
                                   int32_t qmax) {
  // quantize_value() for non-NaN x, written out: same operations, same order, so the same codes.
  const float inv_scale = 1.0f / scale;
  const float lo = static_cast<float>(qmin - zero_point), hi = static_cast<float>(qmax - zero_point);
  for (int64_t i = 0; i < n; ++i) {
    float r = std::nearbyint(x[i] * inv_scale);
    r = r < lo ? lo : r;  // std::clamp(r, lo, hi)
    r = hi < r ? hi : r;
    q[i] = static_cast<int8_t>(zero_point + static_cast<int32_t>(r));
  }
}

void dequantize_int8_to_float(const int8_t* q, float* x, int64_t n, float scale, int32_t zero_point) {
  for (int64_t i = 0; i < n; ++i) x[i] = scale * static_cast<float>(q[i] - zero_point);
}

}  // namespace qatlab
