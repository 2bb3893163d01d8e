// convert.h: QAT model -> Int8Graph, the integer-only inference graph.
#pragma once

#include "quant/engine/int8_graph.h"
#include "quant/qat/qat_layers.h"

namespace qatlab {

// Walks the QAT model in execution order (a Lowering, walk.h) and emits: Quantize (the input quantizer's
// grid), one integer op per QAT layer (lowered with lower_layer, see lower.h), max/avg pooling on codes,
// flatten, a clamp for a standalone ReLU, and Dequantize at the exit: each module its own (QatNode::lower). input_shape is one image's (C, H, W). Throws
// std::invalid_argument naming a module that has no integer form. The graph is prepare()d (packed).
Int8Graph convert(const QatModel& model, const Shape& input_shape);

// The input pipeline from raw 8-bit pixels: gives the graph's Quantize entry its pixel table (int8_graph.h).
// pixel_values (C, 256) holds what the data loader makes of byte values 0..255 in each channel
// (normalised_pixel_values in data/loader.h: the loader's own multiply-add); each is quantized on the
// entry's grid by quantize_value, as the simulation's input fake-quant and the graph's float entry do, so
// the table gives the simulation's input codes bit for bit. mean / std (C): the normalisation behind
// pixel_values, kept in the file for its readers. Throws std::invalid_argument for a (C, 256) that does
// not match the graph's input channels, or a NaN value.
void set_pixel_table(Int8Graph& graph, const Tensor& pixel_values, const std::vector<float>& mean,
                     const std::vector<float>& std);

}  // namespace qatlab
