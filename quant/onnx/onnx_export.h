// onnx_export.h: an integer graph (Int8Graph) as a standard ONNX model that ONNX Runtime runs with its
// integer kernels (QLinearConv, QLinearAdd, MaxPool and Gather on 8-bit tensors, ...).
//
// The model reads what the integer graph reads: raw 8-bit pixels "pixels" (uint8, (N, C, H, W)) through
// the pixel table, or, for a graph without a table, normalised floats "input" (float, (N, C, H, W)).
// It has two outputs: "codes" (int8, (N, K)), the output codes, and "logits" (float, (N, K)), the codes
// dequantized on the output grid. How each op is written and where ONNX Runtime's float requantization
// can land one step away from ours: quant/onnx/README.md.
#pragma once

#include <string>
#include <vector>

#include "quant/engine/int8_graph.h"

namespace qatlab {

// What an export wrote.
struct OnnxExportSummary {
  int64_t nodes = 0;                  // ONNX nodes
  std::vector<std::string> op_types;  // the distinct ONNX op types used, in first-use order
  int64_t bytes = 0;                  // the serialized model's size
  std::string input_name;             // "pixels" or "input"
};

// How activations are typed. Our codes are int8; uint8_activations writes every activation tensor as
// uint8 holding code + 128 (zero points, clip bounds and the pixel table moved with it; weights stay
// int8): the same integers, in the u8 x s8 form ONNX Runtime's x86 kernels are fastest at
// (quant/onnx/README.md). The outputs are the same either way: 'codes' int8, 'logits' float.
struct OnnxExportOptions {
  bool uint8_activations = true;
};

// The serialized ONNX model (ModelProto bytes) of `graph`, checked by onnx::checker::check_model.
// Throws std::invalid_argument naming the op for anything ONNX Runtime cannot run in integer (the LSTM
// and its row / last-step reshapes) or the exporter cannot express exactly (an average pool over more than
// 4096 values), and std::runtime_error when the checker refuses the model.
std::string onnx_model_bytes(const Int8Graph& graph, const OnnxExportOptions& options = {},
                             OnnxExportSummary* summary = nullptr);

// onnx_model_bytes written to `path` atomically (core/atomic_file.h): on any failure the file that was
// there is left as it was.
OnnxExportSummary save_onnx(const Int8Graph& graph, const std::string& path, const OnnxExportOptions& options = {});

// The float that, as ONNX Runtime forms a QLinearConv's output scale, fl(fl(x_scale * w) / y_scale),
// gives the float nearest `multiplier` (the fixed-point multiplier's exact value), or the closest such
// product when none does. Exposed for the tests.
float onnx_weight_scale_for(double multiplier, float x_scale, float y_scale);

}  // namespace qatlab
