// bias.h: where a layer's bias goes in integer arithmetic, written once for every layer kind (conv,
// linear, LSTM) and for both sides of the pipeline: the QAT simulation (fake_quantize_bias) and the
// lowering to the integer graph (quantize_bias).
//
// The bias is added to the int32 accumulator, so it lives on the accumulator's grid: scale
// s_in * s_w (of its output channel, in double), zero point 0. Its code is b / (s_in * s_w) rounded
// half to even, as every other quantization rounds, and saturated to int32 (a bias that large would
// mean a broken scale).
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

// s_in * s_w in double: the grid of a bias added to s_in x s_w products.
inline double bias_scale(float s_in, float s_w) { return static_cast<double>(s_in) * static_cast<double>(s_w); }

// The bias code before saturation: nearbyint(b / scale) (ties to even, the current rounding mode).
double bias_code(float b, double scale);
// The int32 the integer graph holds: bias_code saturated to int32.
int32_t quantize_bias(float b, double scale);

// The simulation of that rounding for a bias b (C) of a layer whose channel c has weight scale
// weights.scale[c] (or [0] per tensor) and whose input has input.scale[0]: b's values replaced by
// bias_code * scale (as float), with a straight-through gradient. `op` names the autograd op (for
// profiles).
Tensor fake_quantize_bias(const Tensor& b, const QParams& input, const QParams& weights, const char* op);

}  // namespace qatlab
