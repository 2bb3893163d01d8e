// convert.h: QAT model -> Int8Graph, the integer-only inference graph.
#pragma once

#include "quant/int8_graph.h"
#include "quant/qat_layers.h"

namespace qatlab {

// Walks the QAT model in execution order and emits: Quantize (the input quantizer's grid), one integer
// op per QAT layer (lowered with lower_layer, see lower.h), max/avg pooling on codes, flatten, a clamp for
// a standalone ReLU, and Dequantize at the exit. input_shape is one image's (C, H, W). Throws
// std::invalid_argument naming a module that has no integer form. The graph is prepare()d (packed).
Int8Graph convert(const QatModel& model, const Shape& input_shape);

}  // namespace qatlab
