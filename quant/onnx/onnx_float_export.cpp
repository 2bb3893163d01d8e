// onnx_float_export.cpp: float modules -> ONNX float operators, walking the model in execution order.
//
// Shape letters: N batch, C channels, H x W image, OC output channels, K outputs.
#include "quant/onnx/onnx_float_export.h"

#include <stdexcept>

#include "core/atomic_file.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "quant/onnx/onnx_builder.h"

namespace qatlab {

namespace {

class FloatExporter {
 public:
  explicit FloatExporter(onnx::GraphProto* g) : b_(g) {}

  // Appends the nodes of module m reading tensor x; returns the tensor it writes.
  std::string module(Module& m, const std::string& name, const std::string& x) {
    const std::string node_name = name.empty() ? m.type() : name;
    if (m.is<Sequential>()) {
      std::string y = x;
      for (const auto& [child_name, child] : m.children())
        y = module(*child, name.empty() ? child_name : name + "." + child_name, y);
      return y;
    }
    if (m.is<Identity>() || m.is<Dropout>()) return x;  // nothing at inference
    if (m.is<Residual>()) {
      const std::string body = module(*m.child("body"), name + ".body", x);
      const std::string shortcut = module(*m.child("shortcut"), name + ".shortcut", x);
      const std::string sum = b_.name("add");
      b_.node("Add", node_name, {body, shortcut}, sum);
      return module(*m.child("act"), name + ".act", sum);
    }
    const std::string y = b_.name(m.type());
    if (auto* c = m.as<Conv2d>()) {
      std::vector<std::string> in{x, tensor("weight", c->weight)};
      if (c->bias.defined()) in.push_back(tensor("bias", c->bias));
      onnx::NodeProto* n = b_.node("Conv", node_name, in, y);
      set_ints(n, "kernel_shape", {c->kernel, c->kernel});
      set_ints(n, "strides", {c->options.stride, c->options.stride});
      set_ints(n, "pads", {c->options.padding, c->options.padding, c->options.padding, c->options.padding});
      set_int(n, "group", c->options.groups);
    } else if (auto* l = m.as<Linear>()) {
      std::vector<std::string> in{x, tensor("weight", l->weight)};  // (OUT, IN): y = x W^T + b
      if (l->bias.defined()) in.push_back(tensor("bias", l->bias));
      set_int(b_.node("Gemm", node_name, in, y), "transB", 1);
    } else if (auto* bn = m.as<BatchNorm>()) {
      onnx::NodeProto* n = b_.node("BatchNormalization", node_name,
                                   {x, tensor("gamma", bn->gamma), tensor("beta", bn->beta),
                                    tensor("running_mean", bn->running_mean), tensor("running_var", bn->running_var)},
                                   y);
      onnx::AttributeProto* eps = n->add_attribute();
      eps->set_name("epsilon");
      eps->set_type(onnx::AttributeProto::FLOAT);
      eps->set_f(bn->eps);
    } else if (m.is<ReLU>()) {
      b_.node("Relu", node_name, {x}, y);
    } else if (m.is<ReLU6>()) {
      b_.node("Clip", node_name, {x, b_.float_scalar("zero", 0.0f), b_.float_scalar("six", 6.0f)}, y);
    } else if (auto* p = m.as<MaxPool2d>()) {
      pool(b_.node("MaxPool", node_name, {x}, y), p->kernel, p->stride, p->padding);
    } else if (auto* a = m.as<AvgPool2d>()) {
      onnx::NodeProto* n = b_.node("AveragePool", node_name, {x}, y);
      pool(n, a->kernel, a->stride, a->padding);
      set_int(n, "count_include_pad", 1);  // padding averages zeros, as ours
    } else if (m.is<GlobalAvgPool2d>()) {
      const std::string pooled = b_.name("global_pool");
      b_.node("GlobalAveragePool", node_name, {x}, pooled);
      b_.node("Flatten", node_name + "/flatten", {pooled}, y);  // (N, C, 1, 1) -> (N, C), as ours
    } else if (m.is<Flatten>()) {
      b_.node("Flatten", node_name, {x}, y);
    } else {
      throw std::invalid_argument("module '" + node_name + "' (" + m.type() +
                                  "): no float ONNX form in qatlab's exporter (conv, batch norm, linear, ReLU, ReLU6, "
                                  "pools, flatten, dropout and residual blocks have one)");
    }
    return y;
  }

 private:
  // A square window; stride 0 is the modules' default, the kernel.
  static void pool(onnx::NodeProto* n, int64_t kernel, int64_t stride, int64_t pad) {
    const int64_t s = stride == 0 ? kernel : stride;
    set_ints(n, "kernel_shape", {kernel, kernel});
    set_ints(n, "strides", {s, s});
    set_ints(n, "pads", {pad, pad, pad, pad});
  }

  std::string tensor(const std::string& stem, Tensor& t) {
    const float* p = t.data();
    return b_.float_tensor(stem, t.shape(), std::vector<float>(p, p + t.numel()));
  }

  OnnxGraphBuilder b_;
};

}  // namespace

std::string onnx_float_model_bytes(Module& model, const Shape& input_chw, OnnxExportSummary* summary) {
  onnx::ModelProto proto = onnx_model_header("qatlab float model (" + model.type() + ")", false);
  onnx::GraphProto* g = proto.mutable_graph();
  g->set_name("qatlab_float");
  value_info(g->add_input(), "input", onnx::TensorProto::FLOAT, input_chw);
  FloatExporter e(g);
  const std::string y = e.module(model, "", "input");
  // The walk's last tensor becomes "logits"; its width is the model's output, found by running it once.
  const bool was_training = model.training();
  model.eval();
  Tensor out;
  {
    NoGradGuard no_grad;
    out = model.forward(Tensor::zeros({1, input_chw[0], input_chw[1], input_chw[2]}));
  }
  if (was_training) model.train();
  onnx::NodeProto* n = g->add_node();
  n->set_op_type("Identity");
  n->set_name("logits");
  n->add_input(y);
  n->add_output("logits");
  Shape k(out.shape().begin() + 1, out.shape().end());
  value_info(g->add_output(), "logits", onnx::TensorProto::FLOAT, k);
  const std::string bytes = checked_model_bytes(proto);
  if (summary) {
    summary->nodes = g->node_size();
    summary->op_types.clear();
    for (const auto& node : g->node())
      if (std::find(summary->op_types.begin(), summary->op_types.end(), node.op_type()) == summary->op_types.end())
        summary->op_types.push_back(node.op_type());
    summary->bytes = static_cast<int64_t>(bytes.size());
    summary->input_name = "input";
  }
  return bytes;
}

OnnxExportSummary save_float_onnx(Module& model, const Shape& input_chw, const std::string& path) {
  OnnxExportSummary summary;
  atomic_write_text(path, onnx_float_model_bytes(model, input_chw, &summary));
  return summary;
}

}  // namespace qatlab
