// onnx_float_export.h: a float model (nn modules: conv, batch norm, linear, ReLU / ReLU6, max and average
// pools, flatten, dropout, residual blocks) as an ONNX model of float operators, for a float checkpoint.
//
// Input "input": float, (N, C, H, W), the normalised image as the data loader gives it; output "logits":
// float, (N, K). Batch norm is exported as BatchNormalization on its running statistics (inference form).
#pragma once

#include <string>

#include "core/tensor.h"
#include "nn/module.h"
#include "quant/onnx/onnx_export.h"

namespace qatlab {

// The serialized model, checked by onnx::checker. input_chw: one image's (C, H, W). Throws
// std::invalid_argument naming the module for a module type without a float ONNX form here (an LSTM, a
// QAT module), std::runtime_error when the checker refuses the model.
std::string onnx_float_model_bytes(Module& model, const Shape& input_chw, OnnxExportSummary* summary = nullptr);

// onnx_float_model_bytes written to `path` atomically.
OnnxExportSummary save_float_onnx(Module& model, const Shape& input_chw, const std::string& path);

}  // namespace qatlab
