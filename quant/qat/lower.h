// lower.h: a QAT layer's float parameters and quantizers -> the integer layer the graph runs
// (int8 or packed 2-4-bit weights, int32 bias, per-channel output multipliers and shifts, activation
// clamp).
//
// This is the only place where those integers are derived. convert uses it to build the Int8Graph, and
// exact-mode evaluation uses it to run the same integer arithmetic inside the QAT model: that is why
// the two agree bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_gemm.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

class QatLayer;
enum class FusedActivation;

struct LoweredLayer {
  bool is_conv = true;
  ConvInt8Params conv;            // when is_conv
  FullyConnectedInt8Params fc;    // otherwise
  Shape weight_shape;             // (OC, C/G, KH, KW) or (OUT, IN)
  // The weight codes, symmetric per output channel (zero point 0), flattened over weight_shape, in
  // one of two forms told by weight_bits, the bits each stored code takes:
  //   8:     `weight` holds them as int8 and weight_packed is empty (lower_layer's form);
  //   4, 2:  weight_packed holds them packed (packed_codes.h) and `weight` is empty (pack_weights()).
  int weight_bits = 8;
  std::vector<int8_t> weight;
  std::vector<uint8_t> weight_packed;
  std::vector<int32_t> bias;      // (OC), scale input_scale * weight_scale[oc], zero point 0
  QParams input, weights, output;

  // The stored codes as bytes in the form weight_bits says (int8 codes are bytes too, 8 bits each):
  // what the packed reference kernels and the packed optimized kernels take.
  const uint8_t* weight_data() const {
    return weight_bits == 8 ? reinterpret_cast<const uint8_t*>(weight.data()) : weight_packed.data();
  }
  int64_t weight_bytes() const {
    return static_cast<int64_t>(weight_bits == 8 ? weight.size() : weight_packed.size());
  }
  // The codes as int8 whichever the form (a copy; for tools and tests, not for the kernels).
  std::vector<int8_t> weight_codes() const;
};

// Integer form of `layer` with input on the grid `input` and output on `output`:
//   weight codes  q_w = quantize(folded_weight, weight qparams)          (the fake-quant's very codes)
//   bias          q_b[oc] = round_half_even(folded_bias[oc] / (s_in * s_w[oc])), saturated to int32
//   multiplier    M[oc] = s_in * s_w[oc] / s_out  -> quantize_multiplier -> (output_multiplier, output_shift)
//   offsets       input_offset = -z_in, output_offset = z_out
//   clamp         [qmin_out, qmax_out], narrowed to [z_out, ...] by a fused ReLU and to
//                 [..., quantize(6.0)] by ReLU6 (fake-quant after ReLU equals clamping the codes)
// Throws std::invalid_argument when the quantizers are not int8-compatible (weights must be signed
// symmetric narrow per-channel-or-tensor; activations signed with codes within int8).
LoweredLayer lower_layer(const QatLayer& layer, const QParams& input, const QParams& output);

// Moves weights whose grid fits 2 or 4 bits (storage_bits of the weight grid: ternary -> 2, 3 and 4
// bits -> 4) from `weight` to weight_packed; nothing to do for 8-bit grids or weights already packed.
// Throws std::invalid_argument if a code lies outside the bits of its grid.
void pack_weights(LoweredLayer& layer);

// The reference kernel of `layer` (conv2d_int8_reference / fully_connected_int8_reference, or their
// packed forms for packed weights): input (N, ...) in_shape -> output.
void run_lowered_reference(const LoweredLayer& layer, const int8_t* input, const Shape& in_shape, int8_t* output);

// The same integers on the kernels of `path`: Reference runs run_lowered_reference; the others pack the
// weights (PackedConvInt8 / PackedFullyConnectedInt8, equal to the reference bit for bit) and run them.
void run_lowered(const LoweredLayer& layer, const int8_t* input, const Shape& in_shape, int8_t* output,
                 KernelPath path);

// The activation clamp of an output grid after a fused activation, as [min, max] codes.
std::pair<int32_t, int32_t> activation_clamp(const QParams& output, FusedActivation act);

// The integer residual add of two code tensors on grids a and b into grid `out` (per tensor), with a ReLU
// after the sum or not: make_add_params with the output clamp. Convert, the simulation and inspect all
// take the add's constants from here.
AddInt8Params lower_add(const QParams& a, const QParams& b, const QParams& out, bool relu_after);

// Float tensor -> int8 codes on a per-tensor grid; and back.
std::vector<int8_t> quantize_tensor(const Tensor& x, const QParams& qp);
Tensor dequantize_codes(const std::vector<int8_t>& q, const Shape& shape, const QParams& qp);

}  // namespace qatlab
