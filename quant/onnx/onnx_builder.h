// onnx_builder.h: what the ONNX exporters share: a graph builder (initializers, nodes, unique names), the
// model header (IR version, opsets) and the checked serialization. Internal to quant/onnx/.
#pragma once

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace qatlab {

// ONNX opset of the standard ops (QLinearConv, per-axis DequantizeLinear, Clip and MaxPool on 8-bit
// tensors: all there by 13) and of Microsoft's contrib domain (QLinearAdd), which ONNX Runtime implements.
inline constexpr int64_t kOnnxOpset = 13;
inline constexpr const char* kMicrosoftDomain = "com.microsoft";

inline std::string bytes_of(const void* p, size_t n) { return std::string(static_cast<const char*>(p), n); }

// Builds the graph: initializers, nodes, unique tensor names.
class OnnxGraphBuilder {
 public:
  explicit OnnxGraphBuilder(onnx::GraphProto* g) : g_(g) {}

  std::string name(const std::string& stem) { return stem + "_" + std::to_string(counter_++); }

  std::string int8_tensor(const std::string& stem, const std::vector<int64_t>& dims, const std::vector<int8_t>& v) {
    return tensor(stem, onnx::TensorProto::INT8, dims, bytes_of(v.data(), v.size()));
  }
  std::string int8_scalar(const std::string& stem, int32_t v) {
    const int8_t b = static_cast<int8_t>(v);
    return tensor(stem, onnx::TensorProto::INT8, {}, bytes_of(&b, 1));
  }
  // An activation code (scalar) in the export's activation type: int8 as it is, uint8 as code + 128.
  std::string act_scalar(const std::string& stem, int32_t code, bool u8) {
    if (!u8) return int8_scalar(stem, code);
    const uint8_t b = static_cast<uint8_t>(code + 128);
    return tensor(stem, onnx::TensorProto::UINT8, {}, bytes_of(&b, 1));
  }
  std::string act_tensor(const std::string& stem, const std::vector<int64_t>& dims, const std::vector<int8_t>& codes,
                         bool u8) {
    if (!u8) return int8_tensor(stem, dims, codes);
    std::vector<uint8_t> v(codes.size());
    for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<uint8_t>(codes[k] + 128);
    return tensor(stem, onnx::TensorProto::UINT8, dims, bytes_of(v.data(), v.size()));
  }
  std::string int32_tensor(const std::string& stem, const std::vector<int64_t>& dims, const std::vector<int32_t>& v) {
    return tensor(stem, onnx::TensorProto::INT32, dims, bytes_of(v.data(), v.size() * 4));
  }
  std::string int64_tensor(const std::string& stem, const std::vector<int64_t>& v) {
    return tensor(stem, onnx::TensorProto::INT64, {static_cast<int64_t>(v.size())}, bytes_of(v.data(), v.size() * 8));
  }
  std::string float_tensor(const std::string& stem, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    return tensor(stem, onnx::TensorProto::FLOAT, dims, bytes_of(v.data(), v.size() * 4));
  }
  std::string float_scalar(const std::string& stem, float v) { return float_tensor(stem, {}, {v}); }

  onnx::NodeProto* node(const std::string& op_type, const std::string& node_name, const std::vector<std::string>& in,
                        const std::string& out, const char* domain = "") {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op_type);
    n->set_name(node_name);
    if (*domain) n->set_domain(domain);
    for (const auto& s : in) n->add_input(s);
    n->add_output(out);
    if (std::find(op_types_.begin(), op_types_.end(), op_type) == op_types_.end()) op_types_.push_back(op_type);
    return n;
  }

  const std::vector<std::string>& op_types() const { return op_types_; }

 private:
  std::string tensor(const std::string& stem, int type, const std::vector<int64_t>& dims, const std::string& raw) {
    onnx::TensorProto* t = g_->add_initializer();
    const std::string n = name(stem);
    t->set_name(n);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(raw);  // little-endian, as ONNX's raw_data is defined (x86-64 and ARM are)
    return n;
  }

  onnx::GraphProto* g_;
  int counter_ = 0;
  std::vector<std::string> op_types_;
};

inline void set_ints(onnx::NodeProto* n, const std::string& attr, const std::vector<int64_t>& v) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(attr);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
inline void set_int(onnx::NodeProto* n, const std::string& attr, int64_t v) {
  onnx::AttributeProto* a = n->add_attribute();
  a->set_name(attr);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

inline void value_info(onnx::ValueInfoProto* v, const std::string& name, int elem_type, const std::vector<int64_t>& dims) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  onnx::TensorShapeProto* s = t->mutable_shape();
  s->add_dim()->set_dim_param("N");
  for (int64_t d : dims) s->add_dim()->set_dim_value(d);
}

// A model with qatlab as producer, opset kOnnxOpset (and com.microsoft 1 when `microsoft`).
inline onnx::ModelProto onnx_model_header(const std::string& doc, bool microsoft) {
  onnx::ModelProto model;
  model.set_ir_version(onnx::IR_VERSION);
  model.set_producer_name("qatlab");
  model.set_producer_version(QATLAB_VERSION);
  model.set_doc_string(doc);
  onnx::OperatorSetIdProto* std_opset = model.add_opset_import();
  std_opset->set_domain("");
  std_opset->set_version(kOnnxOpset);
  if (microsoft) {
    onnx::OperatorSetIdProto* ms_opset = model.add_opset_import();
    ms_opset->set_domain(kMicrosoftDomain);
    ms_opset->set_version(1);
  }
  return model;
}

// The model checked by onnx::checker::check_model (std::runtime_error when it refuses) and serialized.
inline std::string checked_model_bytes(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("the ONNX checker refused the exported model: ") + e.what());
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw std::runtime_error("the ONNX model could not be serialized");
  return bytes;
}

}  // namespace qatlab
