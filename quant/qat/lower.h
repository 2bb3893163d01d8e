// lower.h: a QAT layer's float parameters and quantizers -> the integer layer the graph runs
// (LoweredLayer, quant/engine/lowered_layer.h: int8 or packed 2-4-bit weights, int32 bias, per-channel
// output multipliers and shifts, activation clamp); a QAT residual add -> the integer add's constants; a
// layer's input requantization -> its constants.
//
// This is the only place where those integers are derived. convert uses it to build the Int8Graph, and
// exact-mode evaluation uses it to run the same integer arithmetic inside the QAT model: that is why
// the two agree bit for bit.
#pragma once

#include <cstdint>
#include <utility>

#include "quant/engine/int8_kernels.h"
#include "quant/engine/lowered_layer.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

class QatLayer;
enum class FusedActivation;

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

// The activation clamp of an output grid after a fused activation, as [min, max] codes.
std::pair<int32_t, int32_t> activation_clamp(const QParams& output, FusedActivation act);

// The integer residual add of two code tensors on grids a and b into grid `out` (per tensor), with a ReLU
// after the sum or not: make_add_params with the output clamp. Convert, the simulation and inspect all
// take the add's constants from here.
AddInt8Params lower_add(const QParams& a, const QParams& b, const QParams& out, bool relu_after);

// Codes on the grid `in` -> the same values on the grid `out` (per tensor; a layer's input requantizer,
// qat_layers.h): make_requantize_params with out's whole code range as the clamp. Convert, the
// simulation and inspect all take the constants from here.
RequantizeInt8Params lower_requantize(const QParams& in, const QParams& out);

}  // namespace qatlab
