// test_onnx_import.cpp: ONNX float models into network descriptions. A zoo model exported with float
// operators and imported back computes bit-identical outputs (MLP, LeNet-5, CIFAR CNN, ResNet-20, the
// MobileNet-style net); the model PyTorch exported (tests/onnx/fixtures/, made by make_torch_fixture.py)
// reproduces PyTorch's logits to float rounding; bad models (not ONNX, truncated, unsupported op, shapes
// that do not fit, a graph that is not layers and residual blocks, a clamp the description lacks) are
// refused with one line naming the node.
//
// Shape letters: N images, C channels, H x W image, K outputs.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/rng.h"
#include "nn/model_description.h"
#include "nn/zoo.h"
#include "quant/onnx/onnx_float_export.h"
#include "quant/onnx/onnx_import.h"
#include "quant/quant_test_util.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(__FILE__).parent_path() / "fixtures";

// The CIFAR networks on 16x16 images: every layer as on 32x32, a quarter of the arithmetic.
ModelSpec spec_for(const std::string& name) {
  return name == "resnet20" || name == "cifar-cnn" || name == "mobilenet-cifar" ? ModelSpec{3, 16, 16, 10}
                                                                                : ModelSpec{1, 28, 28, 10};
}

Tensor run(const ModulePtr& model, const Tensor& x) {
  NoGradGuard no_grad;
  return model->forward(x);
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The message import_onnx_model throws for `bytes` ("" when it imports).
std::string import_error(const std::string& bytes) {
  try {
    import_onnx_model(bytes, "bad", "test");
  } catch (const OnnxImportError& e) {
    return e.what();
  }
  return "";
}

void expect_one_line_with(const std::string& message, const std::vector<std::string>& parts) {
  EXPECT_FALSE(message.empty()) << "the model was imported";
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  for (const auto& p : parts) EXPECT_NE(message.find(p), std::string::npos) << "'" << p << "' not in: " << message;
}

// ------------------------------------------------------------------------------------ round trip

class RoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(RoundTrip, ExportedAndImportedBackGivesBitIdenticalOutputs) {
  const ModelSpec spec = spec_for(GetParam());
  Rng rng(21);
  const ModulePtr model = test::random_float_model(GetParam(), spec, rng);
  const std::string bytes = onnx_float_model_bytes(*model, {spec.channels, spec.height, spec.width});
  const OnnxImport imported = import_onnx_model(bytes, GetParam(), "round trip");
  EXPECT_EQ(imported.spec.channels, spec.channels);
  EXPECT_EQ(imported.spec.height, spec.height);
  EXPECT_EQ(imported.spec.num_classes, spec.num_classes);
  EXPECT_EQ(imported.description.name, GetParam());
  const ModulePtr back = imported_model(imported);
  EXPECT_EQ(back->parameter_count(), model->parameter_count());

  const Tensor x = test::random_input({5, spec.channels, spec.height, spec.width}, rng);
  const Tensor want = run(model, x), got = run(back, x);
  EXPECT_TRUE(test::same_bits(got, want)) << "the description:\n" << imported.description.text;
  float largest = 0.0f;
  for (int64_t k = 0; k < want.numel(); ++k) largest = std::max(largest, std::fabs(want.data()[k]));
  EXPECT_GT(largest, 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Zoo, RoundTrip, ::testing::Values("mlp", "lenet5", "cifar-cnn", "resnet20", "mobilenet-cifar"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

// Every layer type the export writes that the zoo's round trips above leave out: average pools with
// padding, grouped and depthwise convolutions, ReLU6, dropout, batch norm on features, a linear layer
// without bias, a residual block without ReLU whose shortcut is a projection.
constexpr const char* kEveryLayer = R"(qatlab-model: 1
name: every-layer
layers:
  - conv: {out: 8, kernel: 3, padding: 1, bias: false}
  - batchnorm: {eps: 0.001}
  - relu6
  - avgpool: {kernel: 3, stride: 2, padding: 1}
  - conv: {kernel: 3, padding: 1, depthwise: true}
  - relu
  - residual:
      relu: false
      body:
        - conv: {out: 12, kernel: 1, groups: 4, bias: false}
        - batchnorm
      shortcut:
        - conv: {out: 12, kernel: 1}
  - maxpool: {kernel: 3, stride: 2, padding: 1}
  - avgpool: {kernel: 2}
  - flatten
  - dropout: {p: 0.3}
  - linear: {out: 20, bias: false}
  - batchnorm
  - relu
  - linear: {out: classes}
)";

// The network `text` describes, random, with batch-norm statistics moved by a few training-mode batches.
ModulePtr described_model(const std::string& text, const ModelSpec& spec, Rng& rng) {
  const ModulePtr model = build_model(parse_model_description(text, "test"), spec, rng);
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(test::random_input({8, spec.channels, spec.height, spec.width}, rng));
  }
  model->eval();
  return model;
}

TEST(OnnxImport, EveryLayerTypeRoundTripsBitIdentically) {
  Rng rng(9);
  const ModulePtr model = described_model(kEveryLayer, {2, 15, 15, 7}, rng);
  const OnnxImport imported = import_onnx_model(onnx_float_model_bytes(*model, {2, 15, 15}), "every-layer", "test");
  const std::string& text = imported.description.text;
  for (const char* layer :
       {"- avgpool: {kernel: 3, stride: 2, padding: 1}", "- conv: {out: 8, kernel: 3, padding: 1, groups: 8}",
        "- relu6", "- conv: {out: 12, kernel: 1, groups: 4, bias: false}", "- batchnorm: {eps: 0.001}", "relu: false",
        "shortcut:", "- linear: {out: 20, bias: false}", "- linear: {out: 7}"})
    EXPECT_NE(text.find(layer), std::string::npos) << layer << " not in:\n" << text;
  EXPECT_EQ(text.find("dropout"), std::string::npos) << text;  // nothing at inference, so not exported
  const Tensor x = test::random_input({4, 2, 15, 15}, rng);
  EXPECT_TRUE(test::same_bits(run(imported_model(imported), x), run(model, x)));
}

TEST(OnnxImport, MatMulThenAddIsALinearLayerWithItsBias) {
  Rng rng(6);
  const ModulePtr model = test::random_float_model("mlp", {1, 28, 28, 10}, rng);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(onnx_float_model_bytes(*model, {1, 28, 28})));
  // Each Gemm (x, W (OUT, IN), b) with transB becomes MatMul (x, W^T) and Add (b, product).
  onnx::GraphProto* g = proto.mutable_graph();
  std::vector<onnx::NodeProto> nodes(g->node().begin(), g->node().end());
  g->clear_node();
  for (onnx::NodeProto& n : nodes) {
    if (n.op_type() != "Gemm") {
      *g->add_node() = n;
      continue;
    }
    onnx::TensorProto* w = nullptr;
    for (auto& t : *g->mutable_initializer())
      if (t.name() == n.input(1)) w = &t;
    ASSERT_NE(w, nullptr);
    const int64_t rows = w->dims(0), cols = w->dims(1);
    std::vector<float> v(static_cast<size_t>(rows * cols)), t(v.size());
    std::memcpy(v.data(), w->raw_data().data(), v.size() * 4);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = v[static_cast<size_t>(r * cols + c)];
    onnx::TensorProto* wt = g->add_initializer();
    wt->set_name(n.input(1) + "_t");
    wt->set_data_type(onnx::TensorProto::FLOAT);
    wt->add_dims(cols);
    wt->add_dims(rows);
    wt->set_raw_data(std::string(reinterpret_cast<const char*>(t.data()), t.size() * 4));
    onnx::NodeProto* mm = g->add_node();
    mm->set_op_type("MatMul");
    mm->set_name(n.name() + "/matmul");
    mm->add_input(n.input(0));
    mm->add_input(wt->name());
    mm->add_output(n.output(0) + "_product");
    onnx::NodeProto* add = g->add_node();
    add->set_op_type("Add");
    add->set_name(n.name() + "/add");
    add->add_input(n.input(2));  // the constant first: the importer finds the data input either way
    add->add_input(mm->output(0));
    add->add_output(n.output(0));
  }
  std::string bytes;
  proto.SerializeToString(&bytes);
  const OnnxImport imported = import_onnx_model(bytes, "mlp", "test");
  EXPECT_EQ(count(imported.description.text, "- linear: {out: "), 2u) << imported.description.text;
  EXPECT_EQ(count(imported.description.text, "bias: false"), 0u) << imported.description.text;
  const Tensor x = test::random_input({3, 1, 28, 28}, rng);
  EXPECT_TRUE(test::same_bits(run(imported_model(imported), x), run(model, x)));

  // An Add of a constant after anything else is no layer.
  for (auto& n : *g->mutable_node())
    if (n.op_type() == "MatMul") {
      n.set_op_type("Relu");
      n.mutable_input()->RemoveLast();
      break;
    }
  proto.SerializeToString(&bytes);
  expect_one_line_with(import_error(bytes), {"Add '", "imported only as the bias of the MatMul or Gemm"});
}

TEST(OnnxImport, ResNet20BecomesNineResidualBlocksTwoWithAProjection) {
  Rng rng(3);
  const ModulePtr model = make_model("resnet20", {3, 32, 32, 10}, rng);
  const OnnxImport imported = import_onnx_model(onnx_float_model_bytes(*model, {3, 32, 32}), "r20", "test");
  const std::string& text = imported.description.text;
  EXPECT_EQ(count(text, "- residual:"), 9u) << text;
  EXPECT_EQ(count(text, "shortcut:"), 2u) << text;
  EXPECT_EQ(count(text, "relu: true"), 9u) << text;
  EXPECT_EQ(count(text, "- global-avgpool"), 1u) << text;
  EXPECT_EQ(count(text, "- flatten"), 0u) << text;  // the Flatten after the global pool is no layer
  EXPECT_NE(text.find("stage2.0.shortcut"), std::string::npos) << text;  // comments name the nodes
}

TEST(OnnxImport, AMeanOverHAndWThenASqueezeIsAGlobalPool) {
  Rng rng(5);
  const ModulePtr model = described_model(R"(qatlab-model: 1
name: pooled
layers:
  - conv: {out: 6, kernel: 3}
  - batchnorm
  - relu
  - global-avgpool
  - linear: {out: classes}
)",
                                          {3, 12, 12, 10}, rng);
  onnx::ModelProto proto;
  ASSERT_TRUE(proto.ParseFromString(onnx_float_model_bytes(*model, {3, 12, 12})));
  // GlobalAveragePool -> Flatten becomes ReduceMean over (2, 3), keeping them, -> Squeeze of (2, 3), as
  // other exporters write x.mean((2, 3)).
  onnx::GraphProto* g = proto.mutable_graph();
  for (auto& n : *g->mutable_node()) {
    if (n.op_type() == "GlobalAveragePool") {
      n.set_op_type("ReduceMean");
      onnx::AttributeProto* axes = n.add_attribute();
      axes->set_name("axes");
      axes->set_type(onnx::AttributeProto::INTS);
      axes->add_ints(-1);
      axes->add_ints(2);
    } else if (n.op_type() == "Flatten") {
      n.set_op_type("Squeeze");
      n.add_input("squeeze_axes");
    }
  }
  onnx::TensorProto* axes = g->add_initializer();
  axes->set_name("squeeze_axes");
  axes->set_data_type(onnx::TensorProto::INT64);
  axes->add_dims(2);
  axes->add_int64_data(2);
  axes->add_int64_data(3);
  std::string bytes;
  proto.SerializeToString(&bytes);
  const OnnxImport imported = import_onnx_model(bytes, "mean", "test");
  EXPECT_EQ(count(imported.description.text, "- global-avgpool  # ReduceMean"), 1u) << imported.description.text;
  const Tensor x = test::random_input({2, 3, 12, 12}, rng);
  EXPECT_TRUE(test::same_bits(run(imported_model(imported), x), run(model, x)));

  // A mean over the channels is no global pool.
  for (auto& n : *g->mutable_node())
    if (n.op_type() == "ReduceMean") n.mutable_attribute(0)->set_ints(0, 1);
  proto.SerializeToString(&bytes);
  expect_one_line_with(import_error(bytes), {"ReduceMean", "averages over the axes (1, 2)", "axes 2 and 3"});
}

// ------------------------------------------------------------------------- another framework's model

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// An ONNX TensorProto file of float32 values (the ONNX test-data format).
Tensor read_tensor_pb(const fs::path& p) {
  onnx::TensorProto t;
  EXPECT_TRUE(t.ParseFromString(read_file(p))) << p;
  Shape dims(t.dims().begin(), t.dims().end());
  Tensor out = Tensor::zeros(dims);
  EXPECT_EQ(t.raw_data().size(), static_cast<size_t>(out.numel()) * 4) << p;
  std::memcpy(out.data(), t.raw_data().data(), std::min(t.raw_data().size(), static_cast<size_t>(out.numel()) * 4));
  return out;
}

TEST(OnnxImport, PyTorchsModelReproducesPyTorchsLogits) {
  const OnnxImport imported = import_onnx_file((kFixtures / "torch_cnn.onnx").string(), "torch-cnn");
  const std::string& text = imported.description.text;
  EXPECT_EQ(count(text, "- residual:"), 1u) << text;
  EXPECT_EQ(count(text, "shortcut:"), 0u) << text;  // the identity: the Add's first input is the block's input
  EXPECT_EQ(count(text, "relu: true"), 1u) << text;
  EXPECT_NE(text.find("- maxpool: {kernel: 2}"), std::string::npos) << text;
  EXPECT_NE(text.find("- conv: {out: 16, kernel: 3, stride: 2, padding: 1}"), std::string::npos) << text;  // with bias
  EXPECT_NE(text.find("- linear: {out: 10}"), std::string::npos) << text;
  EXPECT_EQ(imported.spec.channels, 1);
  EXPECT_EQ(imported.spec.height, 28);
  EXPECT_EQ(imported.spec.num_classes, 10);

  const Tensor x = read_tensor_pb(kFixtures / "torch_cnn_input_0.pb");
  const Tensor want = read_tensor_pb(kFixtures / "torch_cnn_output_0.pb");
  ASSERT_EQ(x.shape(), (Shape{4, 1, 28, 28}));
  const Tensor got = run(imported_model(imported), x);
  ASSERT_EQ(got.shape(), want.shape());
  float largest = 0.0f, worst = 0.0f;
  for (int64_t k = 0; k < want.numel(); ++k) {
    largest = std::max(largest, std::fabs(want.data()[k]));
    worst = std::max(worst, std::fabs(got.data()[k] - want.data()[k]));
  }
  EXPECT_GT(largest, 0.1f);
  EXPECT_LE(worst, 1e-5f * largest + 1e-6f) << "largest logit " << largest;
}

// ------------------------------------------------------------------------------------ bad models

// LeNet-5 (random weights) exported, as a proto to spoil.
onnx::ModelProto lenet5_proto() {
  Rng rng(4);
  const ModulePtr model = make_model("lenet5", {1, 28, 28, 10}, rng);
  onnx::ModelProto proto;
  EXPECT_TRUE(proto.ParseFromString(onnx_float_model_bytes(*model, {1, 28, 28})));
  return proto;
}

std::string bytes_of(const onnx::ModelProto& proto) {
  std::string s;
  proto.SerializeToString(&s);
  return s;
}

onnx::NodeProto* first_node(onnx::ModelProto& proto, const std::string& op_type) {
  for (auto& n : *proto.mutable_graph()->mutable_node())
    if (n.op_type() == op_type) return &n;
  ADD_FAILURE() << "no " << op_type << " node";
  return nullptr;
}

onnx::TensorProto* initializer(onnx::ModelProto& proto, const std::string& name) {
  for (auto& t : *proto.mutable_graph()->mutable_initializer())
    if (t.name() == name) return &t;
  ADD_FAILURE() << "no initializer " << name;
  return nullptr;
}

TEST(OnnxImport, NotOnnxOrTruncatedIsOneLine) {
  expect_one_line_with(import_error("this is a text file, not a model\n"), {"not an ONNX model"});
  expect_one_line_with(import_error(""), {"not an ONNX model"});
  const std::string whole = bytes_of(lenet5_proto());
  ASSERT_EQ(import_error(whole), "");
  for (const size_t keep : {whole.size() / 2, whole.size() - 3, size_t{40}})
    EXPECT_NE(import_error(whole.substr(0, keep)), "") << "truncated to " << keep << " bytes was imported";
}

TEST(OnnxImport, AnUnsupportedOpIsNamedWithItsNode) {
  onnx::ModelProto proto = lenet5_proto();
  onnx::NodeProto* relu = first_node(proto, "Relu");
  relu->set_op_type("Selu");
  expect_one_line_with(import_error(bytes_of(proto)), {"Selu '" + relu->name() + "'", "unsupported op"});
}

TEST(OnnxImport, AClampTheDescriptionLacksIsRefused) {
  onnx::ModelProto proto = lenet5_proto();
  onnx::NodeProto* relu = first_node(proto, "Relu");
  relu->set_op_type("Clip");
  onnx::TensorProto* lo = proto.mutable_graph()->add_initializer();
  lo->set_name("clip_lo");
  lo->set_data_type(onnx::TensorProto::FLOAT);
  lo->add_float_data(-1.0f);
  relu->add_input("clip_lo");
  expect_one_line_with(import_error(bytes_of(proto)), {"Clip '" + relu->name() + "'", "clips to [-1, inf]", "relu6"});
}

TEST(OnnxImport, ShapesThatDoNotFitAreRefusedNamingTheNode) {
  onnx::ModelProto proto = lenet5_proto();
  onnx::NodeProto* gemm = first_node(proto, "Gemm");
  onnx::TensorProto* w = initializer(proto, gemm->input(1));  // (120, 400)
  w->set_dims(1, 7);
  w->set_raw_data(std::string(120 * 7 * 4, '\0'));
  expect_one_line_with(import_error(bytes_of(proto)),
                       {"Gemm '" + gemm->name() + "'", "takes 7 features", "400 features"});

  onnx::ModelProto damaged = lenet5_proto();
  initializer(damaged, first_node(damaged, "Conv")->input(1))->set_raw_data("abc");
  expect_one_line_with(import_error(bytes_of(damaged)), {"Conv", "holds 3 bytes"});

  onnx::ModelProto declared = lenet5_proto();
  declared.mutable_graph()
      ->mutable_output(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(1)
      ->set_dim_value(7);
  expect_one_line_with(import_error(bytes_of(declared)), {"declared with 7 scores", "give 10"});

  onnx::ModelProto flat = lenet5_proto();
  auto* shape = flat.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape();
  shape->mutable_dim()->RemoveLast();
  shape->mutable_dim()->RemoveLast();
  expect_one_line_with(import_error(bytes_of(flat)), {"input 'input'", "(N, C, H, W)"});
}

// A graph input (N, 1, 4, 4) -> Relu -> two Relu branches that meet at `join`, then Flatten and Gemm to 2.
onnx::ModelProto two_branch_graph(const std::string& join) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("branches");
  const auto value = [](onnx::ValueInfoProto* v, const std::string& name, std::vector<int64_t> dims) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("N");
    for (int64_t d : dims) t->mutable_shape()->add_dim()->set_dim_value(d);
  };
  value(g->add_input(), "x", {1, 4, 4});
  value(g->add_output(), "y", {2});
  const auto node = [&](const std::string& op, const std::string& name, std::vector<std::string> in,
                        const std::string& out) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(name);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("Relu", "r", {"x"}, "a");
  node("Relu", "left", {"a"}, "b");
  node("Relu", "right", {"a"}, "c");
  node(join, "join", {"b", "c"}, "d");
  node("Flatten", "flat", {"d"}, "e");
  node("Gemm", "fc", {"e", "w"}, "y");
  onnx::TensorProto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(16);
  w->add_dims(2);
  for (int i = 0; i < 32; ++i) w->add_float_data(0.1f * static_cast<float>(i));
  return m;
}

TEST(OnnxImport, AGraphThatIsNotLayersAndResidualBlocksIsRefused) {
  // Two branches joined by an Add: a residual block (left body, right "shortcut") that imports.
  EXPECT_EQ(import_error(bytes_of(two_branch_graph("Add"))), "");
  expect_one_line_with(import_error(bytes_of(two_branch_graph("Mul"))), {"meet at Mul 'join'", "only residual sums"});

  onnx::ModelProto three = two_branch_graph("Add");  // a third reader of 'a'
  onnx::NodeProto* extra = three.mutable_graph()->add_node();
  extra->set_op_type("Relu");
  extra->set_name("third");
  extra->add_input("a");
  extra->add_output("f");
  expect_one_line_with(import_error(bytes_of(three)), {"tensor 'a' is read by 3 nodes", "Relu 'third'"});

  onnx::ModelProto side = two_branch_graph("Add");  // a branch that ends nowhere
  onnx::NodeProto* dead = side.mutable_graph()->add_node();
  dead->set_op_type("Relu");
  dead->set_name("dead_end");
  dead->add_input("x");
  dead->add_output("g");
  expect_one_line_with(import_error(bytes_of(side)), {"Relu 'dead_end'", "never reaches the output"});
}

// Residual blocks nested `depth` deep, each an identity shortcut around a body that is a Relu and the block
// inside it: (N, 1, 4, 4) -> Relu -> blocks -> Flatten -> Gemm to 2.
onnx::ModelProto nested_blocks(int depth) {
  onnx::ModelProto m = two_branch_graph("Add");
  onnx::GraphProto* g = m.mutable_graph();
  g->clear_node();
  const auto node = [&](const std::string& op, std::vector<std::string> in, const std::string& out) {
    onnx::NodeProto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(out);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
  };
  node("Relu", {"x"}, "a0");
  for (int k = 1; k <= depth; ++k) node("Relu", {"a" + std::to_string(k - 1)}, "a" + std::to_string(k));
  node("Add", {"a" + std::to_string(depth - 1), "a" + std::to_string(depth)}, "c" + std::to_string(depth - 1));
  for (int k = depth - 2; k >= 0; --k)
    node("Add", {"a" + std::to_string(k), "c" + std::to_string(k + 1)}, "c" + std::to_string(k));
  node("Flatten", {"c0"}, "e");
  node("Gemm", {"e", "w"}, "y");
  return m;
}

TEST(OnnxImport, ResidualBlocksNestUpTo32Deep) {
  const OnnxImport imported = import_onnx_model(bytes_of(nested_blocks(32)), "nested", "test");
  EXPECT_EQ(count(imported.description.text, "- residual:"), 32u);
  expect_one_line_with(import_error(bytes_of(nested_blocks(33))), {"nest more than 32 deep"});
}

TEST(OnnxImport, TheCheckerRunsFirst) {
  onnx::ModelProto proto = lenet5_proto();
  first_node(proto, "Relu")->set_input(0, "no_such_tensor");
  expect_one_line_with(import_error(bytes_of(proto)), {"the ONNX checker refuses it", "no_such_tensor"});
}

}  // namespace
}  // namespace qatlab
