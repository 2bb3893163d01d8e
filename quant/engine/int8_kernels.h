// int8_kernels.h: the reference integer kernels of the int8 graph (conv, fully connected, pooling,
// residual add, quantize / dequantize), written as plain loops that are obviously right.
//
// The optimized conv / fully connected kernels (int8_gemm.h) must match these bit for bit.
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, IN / OUT features of a fully connected layer.
//
// Conventions (TFLite int8):
// - activations are int8 codes q with real = scale * (q - zero_point), zero_point in [-128, 127];
// - weights are int8, symmetric (zero point 0) per output channel, values in [-127, 127]; weights of
//   2 to 4 bits may instead be stored packed (packed_codes.h), several to a byte;
// - bias is int32 with scale S_in * S_w[oc] and zero point 0;
// - `input_offset` = -input zero point, `output_offset` = +output zero point (TFLite's signs);
// - the accumulator is int32. It is the exact sum whenever that fits in int32, which it always does
//   for K = C/G * KH * KW (or IN) <= 65536 and |bias| < 2^30; beyond that every path wraps it modulo
//   2^32 in the same way, so the paths still agree bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace qatlab {

// Feeds, for each output (n, oc, oy, ox), with g = oc / (OC / G):
//   acc = bias[oc] + sum_{c < C/G, ky < KH, kx < KW} (input[n, g*C/G + c, oy*stride_h - pad_h + ky,
//                                                          ox*stride_w - pad_w + kx] + input_offset)
//                                                   * filter[oc, c, ky, kx]
//   output[n, oc, oy, ox] = requantize(acc, output_multiplier[oc], output_shift[oc], output_offset,
//                                      quantized_activation_min, quantized_activation_max)
// A padded position holds the input zero point, so its term (zero_point + input_offset) * w is 0.
// ReLU / ReLU6 are folded into [quantized_activation_min, quantized_activation_max].
struct ConvInt8Params {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t groups = 1;
  int32_t input_offset = 0;   // = -input zero point, in [-127, 128]
  int32_t output_offset = 0;  // = output zero point, in [-128, 127]
  int32_t quantized_activation_min = -128, quantized_activation_max = 127;
  std::vector<int32_t> output_multiplier;  // (OC), each in [0, 2^31) (from quantize_multiplier)
  std::vector<int> output_shift;           // (OC), each in [-31, 30]
};

// Checks the params against the shapes and returns the output shape (N, OC, OH, OW).
// in_shape (N, C, H, W), f_shape (OC, C/G, KH, KW). Throws std::invalid_argument naming what is wrong.
Shape conv2d_int8_output_shape(const ConvInt8Params& params, const Shape& in_shape, const Shape& f_shape);

// input (N, C, H, W), filter (OC, C/G, KH, KW), bias (OC) or null -> output (N, OC, OH, OW).
void conv2d_int8_reference(const ConvInt8Params& params, const int8_t* input, const Shape& in_shape,
                           const int8_t* filter, const Shape& f_shape, const int32_t* bias, int8_t* output);

// The same with the filter stored packed: `filter` holds its codes (flattened (OC, C/G, KH, KW)) at
// `filter_bits` bits each (2 or 4; 8 is plain int8), laid out as packed_codes.h says, and each weight
// is read from its byte as the loop reaches it. Same loop, same sums: bit-identical to
// conv2d_int8_reference on the unpacked filter.
void conv2d_packed_reference(const ConvInt8Params& params, const int8_t* input, const Shape& in_shape,
                             const uint8_t* filter, int filter_bits, const Shape& f_shape, const int32_t* bias,
                             int8_t* output);

// Feeds, for each output (n, o):
//   acc = bias[o] + sum_{i < IN} (input[n, i] + input_offset) * weights[o, i]
//   output[n, o] = requantize(acc, output_multiplier[o], output_shift[o], output_offset,
//                             quantized_activation_min, quantized_activation_max)
struct FullyConnectedInt8Params {
  int32_t input_offset = 0;   // = -input zero point, in [-127, 128]
  int32_t output_offset = 0;  // = output zero point, in [-128, 127]
  int32_t quantized_activation_min = -128, quantized_activation_max = 127;
  std::vector<int32_t> output_multiplier;  // (OUT), each in [0, 2^31)
  std::vector<int> output_shift;           // (OUT), each in [-31, 30]
};

// Checks the params against the shapes and returns the output shape (N, OUT).
// in_shape (N, IN), w_shape (OUT, IN).
Shape fully_connected_int8_output_shape(const FullyConnectedInt8Params& params, const Shape& in_shape,
                                        const Shape& w_shape);

// input (N, IN), weights (OUT, IN), bias (OUT) or null -> output (N, OUT).
void fully_connected_int8_reference(const FullyConnectedInt8Params& params, const int8_t* input,
                                    const Shape& in_shape, const int8_t* weights, const Shape& w_shape,
                                    const int32_t* bias, int8_t* output);

// The same with the weights stored packed at `weight_bits` bits (flattened (OUT, IN); see
// conv2d_packed_reference): bit-identical to fully_connected_int8_reference on the unpacked weights.
void fully_connected_packed_reference(const FullyConnectedInt8Params& params, const int8_t* input,
                                      const Shape& in_shape, const uint8_t* weights, int weight_bits,
                                      const Shape& w_shape, const int32_t* bias, int8_t* output);

// ------------------------------------------------------------------------------------------ pooling
// Input and output share scale and zero point, so pooling works on the codes directly.
// Square windows `kernel` x `kernel`, 0 <= pad <= kernel / 2 (so every window holds a real pixel).

// Output shape (N, C, OH, OW) of a pooling window over in_shape (N, C, H, W); checks the settings.
Shape pool2d_int8_output_shape(const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad);

// input (N, C, H, W) -> output (N, C, OH, OW): the largest code of each window; padding never wins.
// max_pool2d_int8_reference is the plain loop over each window; max_pool2d_int8 gives the same
// result with a fast path for the common 2x2 window of stride 2 (written to vectorise).
void max_pool2d_int8_reference(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride,
                               int64_t pad, int8_t* output);
void max_pool2d_int8(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad,
                     int8_t* output);

// input (N, C, H, W) -> output (N, C, OH, OW):
//   output = round_half_away_from_zero(sum / (kernel * kernel))
// where the sum runs over the whole window and a padded position contributes the zero point code
// (count_include_pad = true, PyTorch's default: the float op averages zeros there, and the zero point
// code is real 0). TFLite instead divides by the count of real pixels; we follow the float model we
// train. That is why the zero point is a parameter (it only matters when pad > 0). The rounding is
// done in integers:
//   sum >= 0: (sum + count / 2) / count;   sum < 0: -((-sum + count / 2) / count).
void avg_pool2d_int8(const int8_t* input, const Shape& in_shape, int64_t kernel, int64_t stride, int64_t pad,
                     int32_t zero_point, int8_t* output);

// input (N, C, H, W) -> output (N, C): the mean of each plane, rounded as avg_pool2d_int8 with
// count = H * W.
void global_avg_pool_int8(const int8_t* input, const Shape& in_shape, int8_t* output);

// The integer division of avg pooling: sum / count rounded to nearest, ties away from zero; count > 0.
inline int32_t rounded_div_away_from_zero(int64_t sum, int64_t count) {
  return static_cast<int32_t>(sum >= 0 ? (sum + count / 2) / count : -((-sum + count / 2) / count));
}

// -------------------------------------------------------------------------------------- residual add
// TFLite's int8 ADD. Both inputs are brought to a common fixed-point scale with 20 bits of headroom,
// added, and rescaled to the output (|a + input1_offset| <= 255 and 255 * 2^20 < 2^31, so the shift
// cannot overflow):
//   s1  = multiply_by_quantized_multiplier((a + input1_offset) * 2^left_shift, input1_multiplier, input1_shift)
//   s2  = multiply_by_quantized_multiplier((b + input2_offset) * 2^left_shift, input2_multiplier, input2_shift)
//   out = clamp(output_offset + multiply_by_quantized_multiplier(s1 + s2, output_multiplier, output_shift),
//               quantized_activation_min, quantized_activation_max)
struct AddInt8Params {
  int left_shift = 20;
  int32_t input1_offset = 0, input2_offset = 0;  // = -zero point of each input
  int32_t output_offset = 0;                     // = output zero point
  int32_t input1_multiplier = 0, input2_multiplier = 0, output_multiplier = 0;
  int input1_shift = 0, input2_shift = 0, output_shift = 0;
  int32_t quantized_activation_min = -128, quantized_activation_max = 127;
};

// The multipliers, computed once offline in double (TFLite's recipe):
//   twice_max_input_scale = 2 * max(s1, s2)
//   input1 real multiplier = s1 / twice_max_input_scale          (<= 0.5)
//   input2 real multiplier = s2 / twice_max_input_scale          (<= 0.5)
//   output real multiplier = twice_max_input_scale / (2^left_shift * s_out)
// each turned into (multiplier, shift) by quantize_multiplier. Scales must be finite and > 0, zero
// points and the activation range within [-128, 127].
AddInt8Params make_add_params(float s1, int32_t z1, float s2, int32_t z2, float s_out, int32_t z_out, int32_t act_min,
                              int32_t act_max);

// out[i] = the formula above applied to a[i], b[i], for i < count (elementwise, same shape).
void add_int8_reference(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count);
// The same codes on 8 lanes at a time (quant/engine/kernels/add_avx2.cpp, x86 with AVX2 only) and on 16
// (add_avx512.cpp, AVX-512 F and BW only): callers choose through add_int8 (quant/engine/kernels/kernel_path.h),
// which knows the kernel path.
void add_int8_avx2(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count);
void add_int8_avx512(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count);
// Throws std::invalid_argument unless the params are in the ranges the formula needs (every kernel checks).
void check_add_int8_params(const AddInt8Params& params);

// ------------------------------------------------------------------------------------ requantization
// Codes on one per-tensor grid -> codes on another: where a layer reads a value at fewer bits than the
// grid it was written on (a residual stream kept at 8 bits, read by a conv at A bits: quant/README.md
// section 5, "A residual stream of its own"):
//   out = clamp(output_offset + multiply_by_quantized_multiplier(in + input_offset, multiplier, shift),
//               quantized_activation_min, quantized_activation_max)
// with (multiplier, shift) = quantize_multiplier(s_in / s_out): one rounding (ties toward +infinity).
struct RequantizeInt8Params {
  int32_t input_offset = 0;   // = -input zero point
  int32_t output_offset = 0;  // = output zero point
  int32_t multiplier = 0;
  int shift = 0;
  int32_t quantized_activation_min = -128, quantized_activation_max = 127;
};

// Scales finite and > 0, zero points and the activation range within [-128, 127].
RequantizeInt8Params make_requantize_params(float s_in, int32_t z_in, float s_out, int32_t z_out, int32_t act_min,
                                            int32_t act_max);
// Throws std::invalid_argument naming the field out of its range (offsets, multiplier, shift, activation range).
void check_requantize_int8_params(const RequantizeInt8Params& params);
// out[i] = the formula above applied to in[i], for i < count; in and out may be the same buffer. The
// reference applies it to every element; requantize_int8, the kernel, looks long tensors up in a
// 256-entry table the reference fills (the same codes, bit for bit, on every path: it is one portable
// loop). It costs a load per value of a tensor a conv then reads with a few hundred multiply-adds per value.
void requantize_int8_reference(const RequantizeInt8Params& params, const int8_t* in, int8_t* out, int64_t count);
void requantize_int8(const RequantizeInt8Params& params, const int8_t* in, int8_t* out, int64_t count);

// The residual add on float values, as the QAT simulation computes it: a and b quantized on their grids
// (quantize_float_to_int8_values), added as above, the codes dequantized on the output grid
// (dequantize_int8_to_float). The zero points are the params' offsets; here are the scales and the
// operands' code ranges.
struct AddValueGrids {
  float a_scale = 1.0f, b_scale = 1.0f, out_scale = 1.0f;
  int32_t a_min = -128, a_max = 127, b_min = -128, b_max = 127;
};
// out[i] for i < count; false if a or b holds a NaN (out is then partly written). The reference goes
// through those three functions tile by tile; the AVX-512 kernel (add_avx512.cpp) keeps the codes in
// registers, the same values bit for bit. Callers choose through add_int8_values (kernel_path.h).
bool add_int8_values_reference(const AddInt8Params& params, const AddValueGrids& grids, const float* a, const float* b,
                               float* out, int64_t count);
bool add_int8_values_avx512(const AddInt8Params& params, const AddValueGrids& grids, const float* a, const float* b,
                            float* out, int64_t count);

// ------------------------------------------------------------------------------ quantize / dequantize
// The integer graph's entry: q[i] = quantize_value(x[i], 1.0f / scale, zero_point, qmin, qmax)
// (float32, ties to even, saturating; see requantize.h). A NaN input throws std::invalid_argument
// naming its index (the first one). scale finite and > 0, -128 <= qmin <= zero_point <= qmax <= 127.
void quantize_float_to_int8(const float* x, int8_t* q, int64_t n, float scale, int32_t zero_point, int32_t qmin,
                            int32_t qmax);

// quantize_float_to_int8 without its checks, for callers that checked the parameters and scanned x for
// NaN themselves (a NaN here gives an unspecified code).
void quantize_float_to_int8_values(const float* x, int8_t* q, int64_t n, float scale, int32_t zero_point, int32_t qmin,
                                   int32_t qmax);

// The index of the first NaN among x[0, n), or -1.
int64_t find_first_nan(const float* x, int64_t n);

// The integer graph's exit: x[i] = scale * (float)(q[i] - zero_point), in float32.
void dequantize_int8_to_float(const int8_t* q, float* x, int64_t n, float scale, int32_t zero_point);

}  // namespace qatlab
