// onnx_import.cpp: an ONNX graph -> a network description and its parameters: the walk over the graph
// (chains of layers, residual blocks found where two branches of one tensor meet at an Add) and the
// table of op handlers, one per ONNX op type (handlers()).
//
// Shape letters: N batch, C channels, H x W image, OC output channels, IN / OUT features.
#include "quant/onnx/onnx_import.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "core/format.h"

namespace qatlab {

namespace {

constexpr int64_t kMaxOnnxBytes = int64_t{1} << 30;  // protobuf itself stops at 2 GiB
// The join search runs a graph walk per candidate node: quadratic in the worst case, fine for the networks
// a description can hold (ResNet-20 has 70 nodes, a ResNet-152 about 500).
constexpr int kMaxNodes = 4096;
// Residual blocks inside residual blocks, as deep as the description's blocks may nest.
constexpr int kMaxNesting = 32;

// What flows between layers, per image: (C, H, W), or C features after a flatten or a global pool.
// `pooled`: features that ONNX still holds as (N, C, 1, 1), after GlobalAveragePool (or a ReduceMean that
// keeps its dimensions) and before the Flatten, Reshape or Squeeze that makes them (N, C).
struct Value {
  bool image = true;
  int64_t c = 0, h = 0, w = 0;
  bool pooled = false;
  int64_t features() const { return image ? c * h * w : c; }
  std::string str() const {
    return image ? std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w)
                 : std::to_string(c) + " features";
  }
  bool operator==(const Value& o) const {
    return image == o.image && c == o.c && h == o.h && w == o.w && pooled == o.pooled;
  }
};

// The kinds of layer the importer writes, and their keys in the description format.
enum class LayerKind { Conv, Linear, BatchNorm, ReLU, ReLU6, MaxPool, AvgPool, GlobalAvgPool, Flatten, Residual };

const char* layer_key(LayerKind kind) {
  switch (kind) {
    case LayerKind::Conv: return "conv";
    case LayerKind::Linear: return "linear";
    case LayerKind::BatchNorm: return "batchnorm";
    case LayerKind::ReLU: return "relu";
    case LayerKind::ReLU6: return "relu6";
    case LayerKind::MaxPool: return "maxpool";
    case LayerKind::AvgPool: return "avgpool";
    case LayerKind::GlobalAvgPool: return "global-avgpool";
    case LayerKind::Flatten: return "flatten";
    case LayerKind::Residual: return "residual";
  }
  throw std::logic_error("layer_key: unknown LayerKind");
}

// One layer of the description being written: `- key: {settings}`, or a residual block with its branches.
struct Layer {
  LayerKind kind = LayerKind::Conv;
  std::vector<std::pair<std::string, std::string>> settings;  // in the order written
  std::vector<Layer> body, shortcut;                          // a residual's branches; no shortcut: identity
  std::string node;                                           // the ONNX node it comes from, for a comment
  NamedTensors tensors;                                       // named as the module names them ("weight")

  void set(const std::string& key, const std::string& value) {
    for (auto& [k, v] : settings)
      if (k == key) {
        v = value;
        return;
      }
    settings.emplace_back(key, value);
  }
  void set(const std::string& key, int64_t value) { set(key, std::to_string(value)); }
};

// The shortest decimal text that reads back (as a double, then a float, as the description builder
// reads it) to exactly v.
std::string exact_float_text(float v) {
  char buf[32];
  for (int digits = 6; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(v));
    if (static_cast<float>(std::strtod(buf, nullptr)) == v) break;
  }
  return buf;
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + ")";
}

// A text for a YAML comment: one line, no control bytes.
std::string comment_text(const std::string& s) { return printable(s, 100); }

// The layers as YAML lines at `indent`, and their tensors into `state` under the module names the
// builder gives them (list entries numbered, a residual's branches "body" and "shortcut").
void write_layers(const std::vector<Layer>& layers, int indent, const std::string& prefix, std::ostringstream& yaml,
                  NamedTensors& state) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    const std::string path = prefix + std::to_string(i) + ".";
    const std::string comment = l.node.empty() ? "" : "  # " + comment_text(l.node);
    if (l.kind == LayerKind::Residual) {
      yaml << pad << "- residual:" << comment << "\n";
      for (const auto& [k, v] : l.settings) yaml << pad << "    " << k << ": " << v << "\n";
      yaml << pad << "    body:\n";
      write_layers(l.body, indent + 6, path + "body.", yaml, state);
      if (!l.shortcut.empty()) {
        yaml << pad << "    shortcut:\n";
        write_layers(l.shortcut, indent + 6, path + "shortcut.", yaml, state);
      }
      continue;
    }
    yaml << pad << "- " << layer_key(l.kind);
    if (!l.settings.empty()) {
      yaml << ": {";
      for (size_t k = 0; k < l.settings.size(); ++k)
        yaml << (k ? ", " : "") << l.settings[k].first << ": " << l.settings[k].second;
      yaml << "}";
    }
    yaml << comment << "\n";
    for (const auto& [name, t] : l.tensors) state.emplace_back(path + name, t);
  }
}

// The network's name as descriptions allow it: letters, digits, '_' and '-', at most 64.
std::string description_name(const std::string& wanted) {
  std::string s;
  for (char ch : wanted.substr(0, 64))
    s += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-') ? ch : '-';
  return s.empty() ? "imported" : s;
}

// A float32 initializer's shape and values.
struct Param {
  std::vector<int64_t> dims;
  std::vector<float> values;
  Tensor tensor() const { return Tensor::from_vector(Shape(dims.begin(), dims.end()), values); }
};

class Importer {
 public:
  Importer(const onnx::ModelProto& model, const std::string& source)
      : model_(model), g_(model.graph()), source_(source) {}

  OnnxImport run(const std::string& name) {
    if (g_.node_size() > kMaxNodes)
      throw OnnxImportError("the graph has " + std::to_string(g_.node_size()) + " nodes, more than the " +
                            std::to_string(kMaxNodes) + " an import takes");
    index_graph();
    const std::string input = graph_input();
    output_ = graph_output();
    Value v{true, spec_.channels, spec_.height, spec_.width};
    std::vector<Layer> layers;
    chain(input, output_, v, layers);
    for (int k = 0; k < g_.node_size(); ++k)
      if (!used_[static_cast<size_t>(k)] && !constant_node_[static_cast<size_t>(k)])
        throw OnnxImportError(describe(g_.node(k)) +
                              ": lies off the path from the input to the output (a second "
                              "input or output, or a side branch that is never added back)");
    if (v.image)
      throw OnnxImportError("the network ends in an image " + v.str() +
                            ", not one score per class (flatten it or pool "
                            "it globally, then a Gemm)");
    spec_.num_classes = v.c;
    check_declared_output(v.c);
    try {
      validate_model_spec(spec_);
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(std::string("the model's input or classes are beyond what a qatlab model may have: ") +
                            e.what());
    }

    OnnxImport out;
    out.spec = spec_;
    std::ostringstream yaml;
    const std::string net = description_name(name);
    yaml << "# " << net << ": imported from " << comment_text(source_) << " (producer '"
         << comment_text(model_.producer_name() + " " + model_.producer_version())
         << "'), one comment per layer naming its ONNX node\n";
    yaml << kModelFormat << ": " << kModelFormatVersion << "\nname: " << net << "\nlayers:\n";
    write_layers(layers, 2, "", yaml, out.state);
    out.description = parse_model_description(yaml.str(), "<imported from " + printable(source_, 200) + ">");
    out.nodes = g_.node_size();
    for (int k = 0; k < g_.node_size(); ++k) {
      const std::string& t = g_.node(k).op_type();
      if (used_[static_cast<size_t>(k)] && std::find(out.op_types.begin(), out.op_types.end(), t) == out.op_types.end())
        out.op_types.push_back(t);
    }
    return out;
  }

 private:
  // Handlers: one per ONNX op type. Each reads node n whose data input is tensor x, appends its layers
  // (none for an op that does nothing at inference), updates v and returns the tensor the data continues
  // from (its output).
  using Handler = std::string (Importer::*)(const onnx::NodeProto& n, const std::string& x, Value& v,
                                            std::vector<Layer>& out);
  static const std::map<std::string, Handler>& handlers() {
    static const std::map<std::string, Handler> table{
        {"Add", &Importer::add_bias},
        {"AveragePool", &Importer::average_pool},
        {"BatchNormalization", &Importer::batch_norm},
        {"Clip", &Importer::clip},
        {"Conv", &Importer::conv},
        {"Dropout", &Importer::nothing},
        {"Flatten", &Importer::flatten},
        {"Gemm", &Importer::gemm},
        {"GlobalAveragePool", &Importer::global_average_pool},
        {"Identity", &Importer::nothing},
        {"LSTM", &Importer::lstm},
        {"MatMul", &Importer::matmul},
        {"MaxPool", &Importer::max_pool},
        {"Relu", &Importer::relu},
        {"ReduceMean", &Importer::reduce_mean},
        {"Reshape", &Importer::reshape},
        {"Squeeze", &Importer::squeeze},
    };
    return table;
  }

  // ---------------------------------------------------------------------------------- op handlers

  std::string conv(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"kernel_shape", "strides", "pads", "dilations", "group", "auto_pad"});
    need_image(n, v);
    const Param w = param(n, 1, "weight");
    const int64_t groups = attr_int(n, "group", 1);
    if (w.dims.size() != 4) fail(n, "weight " + dims_str(w.dims) + ", expected (OC, C / group, k, k)");
    const int64_t oc = w.dims[0], k = w.dims[2];
    if (w.dims[3] != k)
      fail(n, "kernel " + std::to_string(k) + "x" + std::to_string(w.dims[3]) + ": only square kernels are imported");
    if (groups < 1 || v.c % groups != 0 || oc % groups != 0 || w.dims[1] != v.c / groups)
      fail(n, "weight " + dims_str(w.dims) + " with group " + std::to_string(groups) + " does not fit its input " +
                  v.str());
    if (attr_ints(n, "kernel_shape", {k, k}) != std::vector<int64_t>{k, k})
      fail(n, "kernel_shape " + dims_str(attr_ints(n, "kernel_shape", {})) + " differs from its weight " +
                  dims_str(w.dims));
    const int64_t stride = square(n, "strides", 1), pad = padding(n);
    if (square(n, "dilations", 1) != 1) fail(n, "dilations other than 1 are not imported");
    const int64_t h = window_out(n, v.h, k, stride, pad), wd = window_out(n, v.w, k, stride, pad);
    Layer l = layer(LayerKind::Conv, n);
    l.set("out", oc);
    l.set("kernel", k);
    if (stride != 1) l.set("stride", stride);
    if (pad != 0) l.set("padding", pad);
    if (groups != 1) l.set("groups", groups);
    l.tensors.emplace_back("weight", w.tensor());
    if (has_input(n, 2))
      l.tensors.emplace_back("bias", vector_param(n, 2, "bias", oc).tensor());
    else
      l.set("bias", "false");
    out.push_back(std::move(l));
    v = {true, oc, h, wd};
    return n.output(0);
  }

  // Gemm: y = x B (transB 0: B is (IN, OUT)) or x B^T (transB 1: (OUT, IN), PyTorch's Linear) plus C.
  std::string gemm(const onnx::NodeProto& n, const std::string& x, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"alpha", "beta", "transA", "transB"});
    if (n.input(0) != x) fail(n, "its data is the second operand: only x * weight is a linear layer");
    need_features(n, v);
    if (attr_float(n, "alpha", 1.0f) != 1.0f)
      fail(n, "alpha " + num_str(attr_float(n, "alpha", 1.0f)) + ": only alpha 1 is imported");
    if (attr_int(n, "transA", 0) != 0) fail(n, "transA 1: the input must be (N, IN)");
    const bool trans_b = attr_int(n, "transB", 0) != 0;
    Param w = param(n, 1, "weight");
    if (w.dims.size() != 2) fail(n, "weight " + dims_str(w.dims) + ", expected a matrix");
    if (!trans_b) w = transposed(w);  // (IN, OUT) -> (OUT, IN), the Linear module's layout
    Layer l = linear(n, w, v);
    if (has_input(n, 2)) {
      if (attr_float(n, "beta", 1.0f) != 1.0f)
        fail(n, "beta " + num_str(attr_float(n, "beta", 1.0f)) + ": only beta 1 is imported");
      l.tensors.emplace_back("bias", vector_param(n, 2, "bias", w.dims[0]).tensor());
    } else {
      l.set("bias", "false");
    }
    out.push_back(std::move(l));
    return n.output(0);
  }

  // MatMul: x (N, IN) times a constant (IN, OUT): a linear layer without bias; an Add of a constant right
  // after it becomes its bias (add_bias).
  std::string matmul(const onnx::NodeProto& n, const std::string& x, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {});
    if (n.input(0) != x) fail(n, "its data is the second operand: only x * weight is a linear layer");
    need_features(n, v);
    const Param w = param(n, 1, "weight");
    if (w.dims.size() != 2) fail(n, "weight " + dims_str(w.dims) + ", expected a matrix (IN, OUT)");
    Layer l = linear(n, transposed(w), v);
    l.set("bias", "false");
    out.push_back(std::move(l));
    return n.output(0);
  }

  // An Add that is not a residual sum: a constant added to the output of a bias-free linear layer.
  std::string add_bias(const onnx::NodeProto& n, const std::string& x, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {});
    const int bias_input = n.input(0) == x ? 1 : 0;
    if (!constants_.count(n.input(bias_input)))
      fail(n, "adds '" + printable(n.input(bias_input)) + "', which does not branch from the same tensor as '" +
                  printable(x) + "': only residual sums of two branches of one tensor are imported");
    Layer* prev = out.empty() ? nullptr : &out.back();
    const bool biasless_linear = prev && prev->kind == LayerKind::Linear && !prev->tensors.empty() && prev->tensors.size() == 1;
    if (!biasless_linear || v.image)
      fail(n, "adds a constant: imported only as the bias of the MatMul or Gemm without bias right before it");
    prev->tensors.emplace_back("bias", vector_param(n, bias_input, "bias", v.c).tensor());
    prev->settings.erase(
        std::remove_if(prev->settings.begin(), prev->settings.end(), [](const auto& kv) { return kv.first == "bias"; }),
        prev->settings.end());
    prev->node += ", " + describe(n);
    return n.output(0);
  }

  std::string batch_norm(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"epsilon", "momentum", "training_mode", "spatial", "is_test"});
    if (attr_int(n, "training_mode", 0) != 0) fail(n, "training_mode 1: export the model in inference mode");
    if (attr_int(n, "spatial", 1) != 1) fail(n, "spatial 0 (statistics per position) is not imported");
    Layer l = layer(LayerKind::BatchNorm, n);
    l.set("eps", exact_float_text(attr_float(n, "epsilon", 1e-5f)));
    // ONNX's momentum keeps the running value (0.9); ours, as PyTorch's, weighs the new batch (0.1).
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", 1.0 - static_cast<double>(attr_float(n, "momentum", 0.9f)));
    if (std::string(buf) != "0.1") l.set("momentum", buf);
    const char* names[] = {"weight", "bias", "running_mean", "running_var"};
    const char* what[] = {"scale", "B", "mean", "var"};
    for (int k = 0; k < 4; ++k) l.tensors.emplace_back(names[k], vector_param(n, k + 1, what[k], v.c).tensor());
    out.push_back(std::move(l));
    return n.output(0);
  }

  std::string relu(const onnx::NodeProto& n, const std::string&, Value&, std::vector<Layer>& out) {
    known_attributes(n, {});
    out.push_back(layer(LayerKind::ReLU, n));
    return n.output(0);
  }

  // Clip to [0, 6] is relu6, to [0, inf) relu: the description has no other clamp.
  std::string clip(const onnx::NodeProto& n, const std::string&, Value&, std::vector<Layer>& out) {
    known_attributes(n, {"min", "max"});
    const float inf = std::numeric_limits<float>::infinity();
    float lo = attr_float(n, "min", -inf), hi = attr_float(n, "max", inf);  // opset < 11: attributes
    if (has_input(n, 1)) lo = scalar_param(n, 1, "min");
    if (has_input(n, 2)) hi = scalar_param(n, 2, "max");
    if (lo == 0.0f && hi == 6.0f) {
      out.push_back(layer(LayerKind::ReLU6, n));
    } else if (lo == 0.0f && hi == inf) {
      out.push_back(layer(LayerKind::ReLU, n));
    } else {
      fail(n, "clips to [" + num_str(lo) + ", " + num_str(hi) +
                  "]: the description has relu (clip to [0, inf)) and relu6 "
                  "(clip to [0, 6]) only");
    }
    return n.output(0);
  }

  std::string max_pool(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"kernel_shape", "strides", "pads", "ceil_mode", "dilations", "storage_order", "auto_pad"});
    out.push_back(pool(LayerKind::MaxPool, n, v));
    return n.output(0);
  }

  std::string average_pool(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"kernel_shape", "strides", "pads", "ceil_mode", "count_include_pad", "auto_pad"});
    if (padding(n) != 0 && attr_int(n, "count_include_pad", 0) == 0)
      fail(n,
           "count_include_pad 0 with padding: the description's avgpool counts the padded zeros (count_include_pad 1)");
    out.push_back(pool(LayerKind::AvgPool, n, v));
    return n.output(0);
  }

  // (N, C, H, W) -> (N, C, 1, 1) in ONNX, (N, C) features in ours: a Flatten or Reshape after it does nothing.
  std::string global_average_pool(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {});
    need_image(n, v);
    out.push_back(layer(LayerKind::GlobalAvgPool, n));
    v = {false, v.c, 1, 1, /*pooled=*/true};
    return n.output(0);
  }

  // The mean over H and W (PyTorch's x.mean((2, 3))): a global average pool.
  std::string reduce_mean(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"axes", "keepdims"});
    need_image(n, v);
    std::vector<int64_t> axes = attr_ints(n, "axes", {});
    for (int64_t& a : axes) a = a < 0 ? a + 4 : a;
    std::sort(axes.begin(), axes.end());
    if (axes != std::vector<int64_t>{2, 3})
      fail(n, "averages over the axes " + dims_str(attr_ints(n, "axes", {})) +
                  ": only the mean over H and W (axes 2 and 3), "
                  "a global average pool, is imported");
    out.push_back(layer(LayerKind::GlobalAvgPool, n));
    v = {false, v.c, 1, 1, /*pooled=*/attr_int(n, "keepdims", 1) != 0};
    return n.output(0);
  }

  // Squeezing H and W of size 1: a flatten of a 1x1 image, nothing after a global pool.
  std::string squeeze(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"axes"});
    std::vector<int64_t> axes =
        has_input(n, 1) ? int_param(n, 1, "axes") : attr_ints(n, "axes", {});  // opset 13: an input
    for (int64_t& a : axes) a = a < 0 ? a + 4 : a;
    std::sort(axes.begin(), axes.end());
    const bool ones = v.pooled || (v.image && v.h == 1 && v.w == 1);
    if (axes != std::vector<int64_t>{2, 3} || !ones)
      fail(n, "squeezes the axes " + dims_str(axes) + " of " + v.str() +
                  ": only H and W of size 1 (to (N, C)) are imported");
    to_features(n, v, out);
    return n.output(0);
  }

  std::string flatten(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"axis"});
    const int64_t axis = attr_int(n, "axis", 1);
    const int64_t rank = v.image || v.pooled ? 4 : 2;
    if (axis != 1 && axis != 1 - rank)
      fail(n, "axis " + std::to_string(axis) + ": only a flatten to (N, features) (axis 1) is imported");
    to_features(n, v, out);
    return n.output(0);
  }

  // A Reshape to (N, C*H*W): a flatten. The shape is a constant (0 or -1 for the batch, or the graph's fixed
  // batch size; -1 or the feature count).
  std::string reshape(const onnx::NodeProto& n, const std::string&, Value& v, std::vector<Layer>& out) {
    known_attributes(n, {"allowzero"});
    const std::vector<int64_t> to = int_param(n, 1, "shape");
    const int64_t f = v.features();
    const bool batch_ok = to.size() == 2 && (to[0] == 0 || to[0] == -1 || (batch_ > 0 && to[0] == batch_));
    const bool features_ok = to.size() == 2 && (to[1] == f || (to[1] == -1 && to[0] != -1));
    if (!batch_ok || !features_ok || (attr_int(n, "allowzero", 0) != 0 && to[0] == 0))
      fail(n, "reshapes " + v.str() + " to " + dims_str(to) + ": only a flatten to (N, " + std::to_string(f) +
                  ") is imported");
    to_features(n, v, out);
    return n.output(0);
  }

  // Dropout and Identity do nothing at inference.
  std::string nothing(const onnx::NodeProto& n, const std::string&, Value&, std::vector<Layer>&) { return n.output(0); }

  std::string lstm(const onnx::NodeProto& n, const std::string&, Value&, std::vector<Layer>&) {
    fail(n,
         "not imported: the description's only LSTM is lstm-rows-classifier, a whole network over the image rows, "
         "not a layer an ONNX LSTM could become");
  }

  // ------------------------------------------------------------------------- the handlers' helpers

  Layer layer(LayerKind kind, const onnx::NodeProto& n) const {
    Layer l;
    l.kind = kind;
    l.node = describe(n);
    return l;
  }

  // A linear layer of weight w (OUT, IN) on features v.
  Layer linear(const onnx::NodeProto& n, const Param& w, Value& v) const {
    if (w.dims[1] != v.c)
      fail(n, "weight (OUT, IN) = " + dims_str(w.dims) + " takes " + std::to_string(w.dims[1]) +
                  " features, its input has " + v.str());
    Layer l = layer(LayerKind::Linear, n);
    l.set("out", w.dims[0]);
    l.tensors.emplace_back("weight", w.tensor());
    v = {false, w.dims[0], 1, 1};
    return l;
  }

  Layer pool(LayerKind kind, const onnx::NodeProto& n, Value& v) const {
    need_image(n, v);
    const std::vector<int64_t> ks = attr_ints(n, "kernel_shape", {});
    if (ks.size() != 2 || ks[0] != ks[1])
      fail(n, "kernel_shape " + dims_str(ks) + ": only square 2-D windows are imported");
    const int64_t k = ks[0], stride = square(n, "strides", 1), pad = padding(n);
    if (square(n, "dilations", 1) != 1) fail(n, "dilations other than 1 are not imported");
    if (attr_int(n, "storage_order", 0) != 0) fail(n, "storage_order 1 is not imported");
    if (pad > k / 2) fail(n, "padding " + std::to_string(pad) + " is more than half the window " + std::to_string(k));
    const int64_t h = window_out(n, v.h, k, stride, pad), w = window_out(n, v.w, k, stride, pad);
    if (attr_int(n, "ceil_mode", 0) != 0 && ((v.h + 2 * pad - k) % stride != 0 || (v.w + 2 * pad - k) % stride != 0))
      fail(n, "ceil_mode 1 gives another output size than the description's pools (rounded down) on " + v.str());
    Layer l = layer(kind, n);
    l.set("kernel", k);
    if (stride != k) l.set("stride", stride);  // the description's stride defaults to the window
    if (pad != 0) l.set("padding", pad);
    v = {true, v.c, h, w};
    return l;
  }

  void to_features(const onnx::NodeProto& n, Value& v, std::vector<Layer>& out) const {
    v.pooled = false;
    if (!v.image) return;  // (N, F) already, as after a global pool
    out.push_back(layer(LayerKind::Flatten, n));
    v = {false, v.features(), 1, 1};
  }

  // The output side of a window of k with stride s and padding p on `side` (rounded down, as ours).
  int64_t window_out(const onnx::NodeProto& n, int64_t side, int64_t k, int64_t s, int64_t p) const {
    if (k < 1 || s < 1 || p < 0)
      fail(n, "window " + std::to_string(k) + ", stride " + std::to_string(s) + ", padding " + std::to_string(p) +
                  " are not valid");
    if (side + 2 * p < k)
      fail(n, "window " + std::to_string(k) + " is larger than its padded input (side " + std::to_string(side) +
                  ", padding " + std::to_string(p) + ")");
    return (side + 2 * p - k) / s + 1;
  }

  // An attribute of two equal values (strides, dilations), or `fallback` when absent.
  int64_t square(const onnx::NodeProto& n, const std::string& attr, int64_t fallback) const {
    const std::vector<int64_t> v = attr_ints(n, attr, {fallback, fallback});
    if (v.size() != 2 || v[0] != v[1])
      fail(n, attr + " " + dims_str(v) + ": only equal values for both sides are imported");
    return v[0];
  }

  // The same padding on all four sides (pads begin_h, begin_w, end_h, end_w).
  int64_t padding(const onnx::NodeProto& n) const {
    const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
    if (auto_pad == "VALID") return 0;
    if (auto_pad != "NOTSET") fail(n, "auto_pad " + printable(auto_pad) + ": give the padding as pads");
    const std::vector<int64_t> p = attr_ints(n, "pads", {0, 0, 0, 0});
    if (p.size() != 4 || p[0] != p[1] || p[0] != p[2] || p[0] != p[3])
      fail(n, "pads " + dims_str(p) + ": only the same padding on every side is imported");
    return p[0];
  }

  void need_image(const onnx::NodeProto& n, const Value& v) const {
    if (!v.image) fail(n, "needs an image (N, C, H, W), gets " + v.str());
  }
  void need_features(const onnx::NodeProto& n, const Value& v) const {
    if (v.image) fail(n, "needs features (N, IN), gets an image " + v.str() + " (a Flatten before it makes them)");
    if (v.pooled)
      fail(n, "needs features (N, IN), gets (N, " + std::to_string(v.c) + ", 1, 1) (a Flatten before it makes them)");
  }

  // ------------------------------------------------------------------------------ reading the proto

  [[noreturn]] void fail(const onnx::NodeProto& n, const std::string& msg) const {
    throw OnnxImportError(describe(n) + ": " + msg);
  }

  std::string describe(const onnx::NodeProto& n) const {
    if (!n.name().empty()) return printable(n.op_type(), 40) + " '" + printable(n.name(), 80) + "'";
    for (int k = 0; k < g_.node_size(); ++k)
      if (&g_.node(k) == &n) return printable(n.op_type(), 40) + " (node " + std::to_string(k) + ", unnamed)";
    return printable(n.op_type(), 40);
  }

  const onnx::AttributeProto* attribute(const onnx::NodeProto& n, const std::string& name) const {
    for (const auto& a : n.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  void known_attributes(const onnx::NodeProto& n, const std::set<std::string>& known) const {
    for (const auto& a : n.attribute())
      if (!known.count(a.name())) fail(n, "attribute '" + printable(a.name(), 40) + "' is not imported");
  }
  int64_t attr_int(const onnx::NodeProto& n, const std::string& name, int64_t fallback) const {
    const onnx::AttributeProto* a = attribute(n, name);
    if (!a) return fallback;
    if (a->type() != onnx::AttributeProto::INT) fail(n, "attribute '" + name + "' is not an integer");
    return a->i();
  }
  float attr_float(const onnx::NodeProto& n, const std::string& name, float fallback) const {
    const onnx::AttributeProto* a = attribute(n, name);
    if (!a) return fallback;
    if (a->type() != onnx::AttributeProto::FLOAT) fail(n, "attribute '" + name + "' is not a float");
    return a->f();
  }
  std::string attr_string(const onnx::NodeProto& n, const std::string& name, const std::string& fallback) const {
    const onnx::AttributeProto* a = attribute(n, name);
    if (!a) return fallback;
    if (a->type() != onnx::AttributeProto::STRING) fail(n, "attribute '" + name + "' is not a string");
    return a->s();
  }
  std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const std::string& name,
                                 std::vector<int64_t> fallback) const {
    const onnx::AttributeProto* a = attribute(n, name);
    if (!a) return fallback;
    if (a->type() != onnx::AttributeProto::INTS) fail(n, "attribute '" + name + "' is not a list of integers");
    return {a->ints().begin(), a->ints().end()};
  }

  bool has_input(const onnx::NodeProto& n, int k) const { return n.input_size() > k && !n.input(k).empty(); }

  // The constant (initializer or Constant node) that input k of n names, with its shape checked against
  // the bytes it holds before anything is allocated from it.
  const onnx::TensorProto& constant(const onnx::NodeProto& n, int k, const std::string& what,
                                    std::vector<int64_t>* dims, int64_t* count) const {
    if (!has_input(n, k)) fail(n, "has no " + what);
    const auto it = constants_.find(n.input(k));
    if (it == constants_.end())
      fail(n, "its " + what + " '" + printable(n.input(k)) +
                  "' is computed in the graph: only constants (initializers) are imported");
    const onnx::TensorProto& t = *it->second;
    if (t.data_location() == onnx::TensorProto::EXTERNAL)
      fail(n, "its " + what + " is stored in an external file: save the model with its weights inside it");
    *count = 1;
    dims->assign(t.dims().begin(), t.dims().end());
    for (int64_t d : *dims) {
      if (d < 0 || d > (int64_t{1} << 31)) fail(n, "its " + what + " has the shape " + dims_str(*dims));
      *count *= d;
      if (*count > (int64_t{1} << 31)) fail(n, "its " + what + " " + dims_str(*dims) + " is too large");
    }
    return t;
  }

  Param param(const onnx::NodeProto& n, int k, const std::string& what) const {
    Param p;
    int64_t count = 0;
    const onnx::TensorProto& t = constant(n, k, what, &p.dims, &count);
    if (t.data_type() != onnx::TensorProto::FLOAT)
      fail(n, "its " + what + " is " + onnx::TensorProto_DataType_Name(t.data_type()) + ", expected FLOAT (float32)");
    p.values.resize(static_cast<size_t>(count));
    if (t.has_raw_data()) {
      if (t.raw_data().size() != static_cast<size_t>(count) * 4)
        fail(n, "its " + what + " " + dims_str(p.dims) + " holds " + std::to_string(t.raw_data().size()) +
                    " bytes, expected " + std::to_string(count * 4));
      std::memcpy(p.values.data(), t.raw_data().data(), t.raw_data().size());  // little-endian, as x86-64 and ARM
    } else {
      if (t.float_data_size() != count)
        fail(n, "its " + what + " " + dims_str(p.dims) + " holds " + std::to_string(t.float_data_size()) +
                    " values, expected " + std::to_string(count));
      std::copy(t.float_data().begin(), t.float_data().end(), p.values.begin());
    }
    return p;
  }

  // A parameter of `length` values, shape (length) or (1, length).
  Param vector_param(const onnx::NodeProto& n, int k, const std::string& what, int64_t length) const {
    Param p = param(n, k, what);
    if (p.dims != std::vector<int64_t>{length} && p.dims != std::vector<int64_t>{1, length})
      fail(n, "its " + what + " is " + dims_str(p.dims) + ", expected (" + std::to_string(length) + ")");
    p.dims = {length};
    return p;
  }

  float scalar_param(const onnx::NodeProto& n, int k, const std::string& what) const {
    const Param p = param(n, k, what);
    if (p.values.size() != 1) fail(n, "its " + what + " " + dims_str(p.dims) + " is not one value");
    return p.values[0];
  }

  std::vector<int64_t> int_param(const onnx::NodeProto& n, int k, const std::string& what) const {
    std::vector<int64_t> dims;
    int64_t count = 0;
    const onnx::TensorProto& t = constant(n, k, what, &dims, &count);
    if (t.data_type() != onnx::TensorProto::INT64) fail(n, "its " + what + " is not INT64");
    std::vector<int64_t> v(static_cast<size_t>(count));
    if (t.has_raw_data()) {
      if (t.raw_data().size() != static_cast<size_t>(count) * 8)
        fail(n, "its " + what + " holds the wrong number of bytes");
      std::memcpy(v.data(), t.raw_data().data(), t.raw_data().size());
    } else {
      if (t.int64_data_size() != count) fail(n, "its " + what + " holds the wrong number of values");
      std::copy(t.int64_data().begin(), t.int64_data().end(), v.begin());
    }
    return v;
  }

  static Param transposed(const Param& w) {
    Param t;
    t.dims = {w.dims[1], w.dims[0]};
    t.values.resize(w.values.size());
    for (int64_t r = 0; r < w.dims[0]; ++r)
      for (int64_t c = 0; c < w.dims[1]; ++c)
        t.values[static_cast<size_t>(c * w.dims[0] + r)] = w.values[static_cast<size_t>(r * w.dims[1] + c)];
    return t;
  }

  // ----------------------------------------------------------------------------------- the graph

  void index_graph() {
    used_.assign(static_cast<size_t>(g_.node_size()), false);
    constant_node_.assign(static_cast<size_t>(g_.node_size()), false);
    for (const auto& t : g_.initializer()) constants_[t.name()] = &t;
    for (int k = 0; k < g_.node_size(); ++k) {
      const onnx::NodeProto& n = g_.node(k);
      // Constants made by nodes: a Constant, and an Identity of a constant (PyTorch writes one where two
      // initializers hold the same values).
      if (n.op_type() == "Constant" && n.output_size() == 1) {
        const onnx::AttributeProto* value = attribute(n, "value");
        if (value && value->type() == onnx::AttributeProto::TENSOR) constants_[n.output(0)] = &value->t();
        constant_node_[static_cast<size_t>(k)] = true;
        continue;
      }
      if (n.op_type() == "Identity" && n.input_size() == 1 && n.output_size() == 1 && constants_.count(n.input(0))) {
        constants_[n.output(0)] = constants_.at(n.input(0));
        constant_node_[static_cast<size_t>(k)] = true;
        continue;
      }
      for (const auto& out : n.output()) producer_[out] = k;
      for (const auto& in : n.input())
        if (!in.empty() && !constants_.count(in)) {
          std::vector<int>& readers = consumers_[in];
          if (std::find(readers.begin(), readers.end(), k) == readers.end()) readers.push_back(k);
        }
    }
  }

  // The one graph input that is not an initializer: float (N, C, H, W) with C, H, W fixed.
  std::string graph_input() {
    std::vector<const onnx::ValueInfoProto*> inputs;
    for (const auto& in : g_.input())
      if (!constants_.count(in.name())) inputs.push_back(&in);
    if (inputs.size() != 1)
      throw OnnxImportError("the graph has " + std::to_string(inputs.size()) +
                            " inputs besides its weights; a qatlab model takes one image");
    const onnx::ValueInfoProto& in = *inputs[0];
    const std::string what = "input '" + printable(in.name(), 80) + "'";
    if (!in.type().has_tensor_type() || in.type().tensor_type().elem_type() != onnx::TensorProto::FLOAT)
      throw OnnxImportError(what + " is not a float tensor");
    const auto& shape = in.type().tensor_type().shape();
    std::vector<int64_t> dims;
    for (const auto& d : shape.dim()) dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
    if (dims.size() != 4 || dims[1] <= 0 || dims[2] <= 0 || dims[3] <= 0)
      throw OnnxImportError(what + " has the shape " + dims_str(dims) +
                            " (-1: not fixed); a qatlab model takes images "
                            "(N, C, H, W) with C, H and W fixed");
    batch_ = dims[0];
    spec_ = ModelSpec{dims[1], dims[2], dims[3], 2};
    try {
      validate_model_spec(spec_);
    } catch (const std::invalid_argument& e) {
      throw OnnxImportError(what + " " + dims_str(dims) + " is beyond what a qatlab model may take: " + e.what());
    }
    return in.name();
  }

  std::string graph_output() const {
    if (g_.output_size() != 1)
      throw OnnxImportError("the graph has " + std::to_string(g_.output_size()) +
                            " outputs; a qatlab model gives one (the scores)");
    return g_.output(0).name();
  }

  // The declared output shape, where it gives the classes, must be what the layers give.
  void check_declared_output(int64_t classes) const {
    const onnx::ValueInfoProto& out = g_.output(0);
    if (!out.type().has_tensor_type() || !out.type().tensor_type().has_shape()) return;
    const auto& dims = out.type().tensor_type().shape().dim();
    if (dims.size() == 2 && dims[1].has_dim_value() && dims[1].dim_value() != classes)
      throw OnnxImportError("output '" + printable(out.name(), 80) + "' is declared with " +
                            std::to_string(dims[1].dim_value()) + " scores, but its layers give " +
                            std::to_string(classes));
  }

  // Appends to `out` the layers from tensor x to tensor stop, beginning with node `first` when given (a
  // branch of a residual block), else with x's one reader. Returns stop.
  void chain(std::string x, const std::string& stop, Value& v, std::vector<Layer>& out, int first = -1) {
    while (x != stop) {
      int k = first;
      first = -1;
      if (k < 0) {
        const auto it = consumers_.find(x);
        const size_t readers = it == consumers_.end() ? 0 : it->second.size();
        if (readers == 0)
          throw OnnxImportError("tensor '" + printable(x, 80) + "' is read by no node and is not the output '" +
                                printable(stop, 80) + "'");
        if (readers > 1) {
          x = residual(x, v, out);
          continue;
        }
        k = it->second[0];
      }
      x = step(k, x, v, out);
    }
  }

  // Node k, reading the running tensor x, through its handler.
  std::string step(int k, const std::string& x, Value& v, std::vector<Layer>& out) {
    const onnx::NodeProto& n = g_.node(k);
    used_[static_cast<size_t>(k)] = true;
    if (!n.domain().empty() && n.domain() != "ai.onnx")
      fail(n, "an op of the domain '" + printable(n.domain(), 40) + "', which the importer does not read");
    const auto h = handlers().find(n.op_type());
    if (h == handlers().end()) {
      std::string known;
      for (const auto& [type, unused] : handlers()) known += (known.empty() ? "" : ", ") + type;
      fail(n, "unsupported op (the importer maps " + known + ")");
    }
    if (n.output_size() < 1) fail(n, "has no output");
    for (int i = 0; i < n.input_size(); ++i)
      if (!n.input(i).empty() && n.input(i) != x && !constants_.count(n.input(i)))
        fail(n, "reads '" + printable(n.input(i), 80) + "' beside '" + printable(x, 80) +
                    "': a second computed input fits only as the Add that ends a residual block");
    for (int i = 1; i < n.output_size(); ++i)
      if (!n.output(i).empty() && (consumers_.count(n.output(i)) || n.output(i) == output_))
        fail(n, "its output " + std::to_string(i + 1) + " ('" + printable(n.output(i), 80) +
                    "') is used: only the first is imported");
    return (this->*(h->second))(n, x, v, out);
  }

  // The residual block that starts at tensor x (read by two nodes): its two branches, the Add where they
  // meet, and a Relu right after it. Returns the tensor after the block.
  std::string residual(const std::string& x, Value& v, std::vector<Layer>& out) {
    const std::vector<int>& readers = consumers_.at(x);
    if (readers.size() != 2) {
      std::string names;
      for (int k : readers) names += (names.empty() ? "" : ", ") + describe(g_.node(k));
      throw OnnxImportError("tensor '" + printable(x, 80) + "' is read by " + std::to_string(readers.size()) +
                            " nodes (" + names +
                            "): only two branches that meet again at an Add (a residual block) are imported");
    }
    const int producer_of_output = producer_.count(output_) ? producer_.at(output_) : -1;
    for (int r : readers)
      if (!reaches(r, producer_of_output))
        fail(g_.node(r),
             "reads '" + printable(x, 80) + "' but never reaches the output: a side branch that is not added back");
    if (++nesting_ > kMaxNesting)
      throw OnnxImportError("residual blocks nest more than " + std::to_string(kMaxNesting) + " deep at tensor '" +
                            printable(x, 80) + "'");
    const int j = join_of(x);
    const onnx::NodeProto& add = g_.node(j);
    if (add.op_type() != "Add" || add.input_size() != 2)
      throw OnnxImportError("the two branches from tensor '" + printable(x, 80) + "' meet at " + describe(add) +
                            ", not at an Add: only residual sums are imported");
    if (add.input(0) == add.input(1)) fail(add, "adds a tensor to itself");
    known_attributes(add, {});
    used_[static_cast<size_t>(j)] = true;

    // Which reader starts the branch that ends in which input of the Add (x itself: the identity).
    std::string ends[2];
    int starts[2] = {-1, -1};
    for (int i = 0; i < 2; ++i) {
      ends[i] = add.input(i);
      if (ends[i] == x) continue;
      if (!producer_.count(ends[i])) fail(add, "adds '" + printable(ends[i], 80) + "', which no node computes");
      for (int r : readers)
        if (r != j && reaches(r, producer_.at(ends[i]))) starts[i] = starts[i] < 0 ? r : -2;
    }
    const bool crossed = starts[0] == -2 || starts[1] == -2 || (starts[0] == starts[1] && starts[0] >= 0) ||
                         (ends[0] != x && starts[0] < 0) || (ends[1] != x && starts[1] < 0);
    if (crossed)
      fail(add, "its inputs are not two separate branches from tensor '" + printable(x, 80) +
                    "' (they cross or share nodes)");

    Layer block = layer(LayerKind::Residual, add);
    std::vector<Layer> branch[2];
    Value got[2] = {v, v};
    for (int i = 0; i < 2; ++i)
      if (ends[i] != x) chain(x, ends[i], got[i], branch[i], starts[i]);
    if (!(got[0] == got[1]))
      fail(add, "adds " + got[0].str() + " and " + got[1].str() + ": both branches must give one shape");
    // The body is the longer branch (the Add's first input when they are as long): the shortcut is the
    // identity or a projection.
    const int body = branch[1].size() > branch[0].size() ? 1 : 0;
    block.body = std::move(branch[body]);
    block.shortcut = std::move(branch[1 - body]);
    if (block.body.empty()) fail(add, "adds two branches that do nothing: a residual block needs a body");
    v = got[0];

    std::string next = add.output(0);
    bool relu = false;
    const auto it = consumers_.find(next);
    if (next != output_ && it != consumers_.end() && it->second.size() == 1 &&
        g_.node(it->second[0]).op_type() == "Relu" && g_.node(it->second[0]).attribute_size() == 0) {
      relu = true;
      used_[static_cast<size_t>(it->second[0])] = true;
      block.node += ", " + describe(g_.node(it->second[0]));
      next = g_.node(it->second[0]).output(0);
    }
    block.set("relu", relu ? "true" : "false");
    out.push_back(std::move(block));
    --nesting_;
    return next;
  }

  // Whether node `to` is node `from` or is reached from its outputs.
  bool reaches(int from, int to) const { return to >= 0 && walk(from, -1)[static_cast<size_t>(to)]; }

  // Per node, whether it is reached from node `from` (itself included) without passing through `avoid`.
  std::vector<char> walk(int from, int avoid) const {
    std::vector<char> seen(static_cast<size_t>(g_.node_size()), 0);
    seen[static_cast<size_t>(from)] = 1;
    std::vector<int> todo{from};
    while (!todo.empty()) {
      const int k = todo.back();
      todo.pop_back();
      for (const auto& t : g_.node(k).output()) {
        const auto it = consumers_.find(t);
        if (it == consumers_.end()) continue;
        for (int r : it->second)
          if (r != avoid && !seen[static_cast<size_t>(r)]) {
            seen[static_cast<size_t>(r)] = 1;
            todo.push_back(r);
          }
      }
    }
    return seen;
  }

  // Where the branches from tensor x meet: the first node (in the graph's order, which is topological)
  // that every path from x to the output passes through.
  int join_of(const std::string& x) const {
    const std::vector<int>& readers = consumers_.at(x);
    std::vector<char> reachable(static_cast<size_t>(g_.node_size()), 0);
    for (int r : readers) {
      const std::vector<char> s = walk(r, -1);
      for (size_t k = 0; k < s.size(); ++k) reachable[k] |= s[k];
    }
    const int producer_of_output = producer_.count(output_) ? producer_.at(output_) : -1;
    for (int j = 0; j < g_.node_size() && producer_of_output >= 0; ++j) {
      if (!reachable[static_cast<size_t>(j)]) continue;
      bool cut = true;
      for (int r : readers)
        if (r != j && walk(r, j)[static_cast<size_t>(producer_of_output)]) cut = false;
      if (cut) return j;
    }
    throw OnnxImportError("the branches from tensor '" + printable(x, 80) + "' never meet again before the output");
  }

  const onnx::ModelProto& model_;
  const onnx::GraphProto& g_;
  std::string source_, output_;
  ModelSpec spec_;
  int64_t batch_ = -1;  // the graph input's batch size when fixed
  int nesting_ = 0;     // residual blocks open around the one being read
  std::map<std::string, const onnx::TensorProto*> constants_;
  std::map<std::string, int> producer_;
  std::map<std::string, std::vector<int>> consumers_;  // the nodes reading a computed tensor, in graph order
  std::vector<bool> used_;                             // nodes the walk has read
  std::vector<bool> constant_node_;                    // nodes that make a constant (read where it is used)
};

// The checker's message on one line.
std::string one_line(const std::string& s) {
  std::string out;
  bool space = false;
  for (char ch : s) {
    if (ch == '\n' || ch == '\r' || ch == '\t' || ch == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += ch;
  }
  return printable(out, 300);
}

}  // namespace

OnnxImport import_onnx_model(const std::string& bytes, const std::string& name, const std::string& source) {
  onnx::ModelProto model;
  if (bytes.empty() || !model.ParseFromString(bytes))
    throw OnnxImportError(
        "not an ONNX model (its bytes do not parse as one: truncated, damaged or another kind of file)");
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw OnnxImportError("the ONNX checker refuses it: " + one_line(e.what()));
  }
  OnnxImport out = Importer(model, source).run(name);
  try {
    imported_model(out);  // the description builds and takes every parameter
  } catch (const std::exception& e) {
    throw OnnxImportError("the network read from it does not build: " + one_line(e.what()));
  }
  return out;
}

OnnxImport import_onnx_file(const std::string& path, const std::string& name) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw OnnxImportError(path + ": not a readable file");
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > static_cast<uintmax_t>(kMaxOnnxBytes))
    throw OnnxImportError(path + ": larger than 1 GiB, more than an import takes");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in && !in.eof()) throw OnnxImportError(path + ": cannot be read");
  try {
    return import_onnx_model(bytes.str(), name, path);
  } catch (const OnnxImportError& e) {
    throw OnnxImportError(path + ": " + e.what());
  }
}

ModulePtr imported_model(const OnnxImport& imported) {
  Rng unused(0);  // every value is overwritten by the imported state
  ModulePtr model = build_model(imported.description, imported.spec, unused);
  model->load_state_dict(std::map<std::string, Tensor>(imported.state.begin(), imported.state.end()));
  model->eval();
  return model;
}

}  // namespace qatlab
