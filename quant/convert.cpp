// convert.cpp: emitting integer ops for the QAT model's modules.
#include "quant/convert.h"

#include <stdexcept>

#include "nn/activation.h"
#include "quant/prepare.h"

namespace qatlab {

Int8Graph convert(const QatModel& model, const Shape& input_shape) {
  check_arg(input_shape.size() == 3, "convert: input shape must be (C, H, W), got " + shape_str(input_shape));
  Int8Graph g;
  g.input_shape = input_shape;
  QParams grid = model.input_quant().qparams();
  int slot = 0;
  // Every op writes a fresh slot: the graph stays a plain list that is easy to read and to check.
  const auto emit = [&](Int8Op op) {
    op.inputs = op.kind == Int8OpKind::Quantize ? std::vector<int>{} : std::vector<int>{slot};
    op.output = ++slot;
    g.ops.push_back(std::move(op));
  };
  Int8Op quantize;
  quantize.kind = Int8OpKind::Quantize;
  quantize.name = "input_quant";
  quantize.grid = grid;
  emit(quantize);

  // The body's modules, in execution order (ModulePtr needed for the walk; the model is not modified).
  for (const auto& [name, child] : model.children()) {
    if (name != "body") continue;
    for_each_in_execution_order(child, [&](const std::string& path, const ModulePtr& m) {
      const std::string full = "body." + path;
      const std::string& type = m->type();
      Int8Op op;
      op.name = full;
      if (type == "QatConv2d" || type == "QatLinear") {
        const auto& layer = static_cast<const QatLayer&>(*m);
        const QParams out = layer.output_quant().qparams();
        op.kind = layer.is_conv() ? Int8OpKind::Conv2d : Int8OpKind::FullyConnected;
        op.layer = lower_layer(layer, grid, out);
        grid = out;
      } else if (type == "MaxPool2d") {
        const auto& p = static_cast<const MaxPool2d&>(*m);
        op.kind = Int8OpKind::MaxPool2d;
        op.kernel = p.kernel, op.stride = p.stride, op.pad = p.padding;
      } else if (type == "QatAvgPool") {
        const auto& p = static_cast<const QatAvgPool&>(*m);
        op.kind = p.kernel == 0 ? Int8OpKind::GlobalAvgPool : Int8OpKind::AvgPool2d;
        op.kernel = p.kernel, op.stride = p.stride, op.pad = p.padding;
        op.grid = grid;
      } else if (type == "Flatten") {
        op.kind = Int8OpKind::Flatten;
      } else if (type == "ReLU") {
        op.kind = Int8OpKind::Clamp;
        op.clamp_min = std::max(grid.quant_min, grid.zero_point[0]);
        op.clamp_max = grid.quant_max;
      } else if (type == "Identity" || type == "Dropout") {
        return;  // nothing at inference
      } else {
        throw std::invalid_argument("convert: no integer form for " + type + " '" + full + "'");
      }
      emit(std::move(op));
    });
  }
  Int8Op dequantize;
  dequantize.kind = Int8OpKind::Dequantize;
  dequantize.name = "output";
  dequantize.grid = grid;
  emit(dequantize);
  g.num_slots = slot + 1;
  g.prepare();
  return g;
}

}  // namespace qatlab
