// test_prepare.cpp: prepare_qat on the zoo's models and on hand-built Sequentials: which modules are fused
// and replaced, that tensors are shared, how the quantizers chain (each layer's input grid is the previous
// block's output grid), per-layer bit overrides, the refusals, and the whole-model switches.
#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/gradcheck.h"

#include <cmath>
#include <functional>
#include <stdexcept>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "nn/zoo.h"
#include "quant/engine/int8_kernels.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

using test::random_input;


QConfig bits(int w, int a, const std::vector<std::string>& layer_bits = {}) {
  return QConfig::from_options(w, a, true, "minmax", "ema", layer_bits);
}

// Gives every BatchNorm of the tree distinct, non-trivial statistics and affine parameters, the same for
// two models built alike, so that folding has something to fold.
void set_bn_stats(const ModulePtr& model) {
  for (const auto& [name, m] : model->named_modules(model)) {
    if (m->type() != "BatchNorm2d" && m->type() != "BatchNorm1d") continue;
    auto& bn = static_cast<BatchNorm&>(*m);
    for (int64_t c = 0; c < bn.channels; ++c) {
      bn.gamma.data()[c] = 0.7f + 0.15f * static_cast<float>(c % 5);
      bn.beta.data()[c] = -0.3f + 0.1f * static_cast<float>(c % 7);
      bn.running_mean.data()[c] = 0.2f - 0.05f * static_cast<float>(c % 6);
      bn.running_var.data()[c] = 0.5f + 0.3f * static_cast<float>(c % 4);
    }
  }
}

std::vector<std::string> child_types(const Module& seq) {
  std::vector<std::string> types;
  for (const auto& [name, m] : seq.children()) types.push_back(m->type());
  return types;
}

std::vector<std::string> child_names(const Module& seq) {
  std::vector<std::string> names;
  for (const auto& [name, m] : seq.children()) names.push_back(name);
  return names;
}

QatLayer& layer_at(const ModulePtr& root, const std::string& dotted) {
  const ModulePtr m = root->submodule(dotted);
  EXPECT_TRUE(m->type() == "QatConv2d" || m->type() == "QatLinear") << dotted << " is a " << m->type();
  return static_cast<QatLayer&>(*m);
}

// Every module of the tree of one of the given types, in execution order (named_modules lists parents
// before children in registration order).
std::vector<ModulePtr> modules_of(const ModulePtr& root, const std::vector<std::string>& types) {
  std::vector<ModulePtr> out;
  for (const auto& [name, m] : root->named_modules(root))
    for (const auto& t : types)
      if (m->type() == t) out.push_back(m);
  return out;
}

// --------------------------------------------------------------------------------- fusion patterns

struct Pattern {
  const char* name;
  std::function<ModulePtr(Rng&)> build;
  size_t layer_index;                       // where the fused layer sits
  std::vector<std::string> types_after;     // the children's types after prepare_qat
  bool has_bn;
  FusedActivation act;
};

ModulePtr seq(std::vector<ModulePtr> ms) {
  auto s = std::make_shared<Sequential>();
  for (auto& m : ms) s->add(m);
  return s;
}

ModulePtr conv(Rng& rng, bool bias) { return std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, bias}, rng); }
ModulePtr fc(Rng& rng, int64_t in = 48, int64_t out = 6) { return std::make_shared<Linear>(in, out, true, rng); }

std::vector<Pattern> patterns() {
  using A = FusedActivation;
  const auto bn2 = [] { return std::make_shared<BatchNorm2d>(4); };
  const auto bn1 = [] { return std::make_shared<BatchNorm1d>(6); };
  const auto pool = [] { return std::make_shared<MaxPool2d>(2); };
  const auto relu = [] { return std::make_shared<ReLU>(); };
  const auto flat = [] { return std::make_shared<Flatten>(); };
  return {
      {"Conv2d_BatchNorm2d_ReLU", [=](Rng& r) { return seq({conv(r, false), bn2(), relu(), pool()}); }, 0,
       {"QatConv2d", "Identity", "Identity", "MaxPool2d"}, true, A::ReLU},
      {"Conv2d_BatchNorm2d_ReLU6",
       [=](Rng& r) { return seq({conv(r, false), bn2(), std::make_shared<ReLU6>(), pool()}); }, 0,
       {"QatConv2d", "Identity", "Identity", "MaxPool2d"}, true, A::ReLU6},
      {"Conv2d_BatchNorm2d", [=](Rng& r) { return seq({conv(r, true), bn2(), pool()}); }, 0,
       {"QatConv2d", "Identity", "MaxPool2d"}, true, A::None},
      {"Conv2d_ReLU", [=](Rng& r) { return seq({conv(r, true), relu(), pool()}); }, 0,
       {"QatConv2d", "Identity", "MaxPool2d"}, false, A::ReLU},
      {"Conv2d", [=](Rng& r) { return seq({conv(r, true), pool()}); }, 0, {"QatConv2d", "MaxPool2d"}, false, A::None},
      {"Linear_ReLU", [=](Rng& r) { return seq({flat(), fc(r), relu(), fc(r, 6, 3)}); }, 1,
       {"Flatten", "QatLinear", "Identity", "QatLinear"}, false, A::ReLU},
      {"Linear_BatchNorm1d_ReLU", [=](Rng& r) { return seq({flat(), fc(r), bn1(), relu(), fc(r, 6, 3)}); }, 1,
       {"Flatten", "QatLinear", "Identity", "Identity", "QatLinear"}, true, A::ReLU},
      {"Linear_BatchNorm1d", [=](Rng& r) { return seq({flat(), fc(r), bn1(), fc(r, 6, 3)}); }, 1,
       {"Flatten", "QatLinear", "Identity", "QatLinear"}, true, A::None},
  };
}

class FusionPattern : public ::testing::TestWithParam<Pattern> {};

TEST_P(FusionPattern, ReplacesFusesAndShares) {
  const Pattern& p = GetParam();
  Rng rng(11);
  const ModulePtr float_model = p.build(rng);
  set_bn_stats(float_model);
  const std::vector<std::string> names_before = child_names(*float_model);
  const ModulePtr original = float_model->children()[p.layer_index].second;
  const bool is_conv = original->type() == "Conv2d";
  const Tensor w = is_conv ? static_cast<Conv2d&>(*original).weight : static_cast<Linear&>(*original).weight;
  const Tensor b = is_conv ? static_cast<Conv2d&>(*original).bias : static_cast<Linear&>(*original).bias;
  // Held by a shared pointer: prepare_qat replaces the BatchNorm in the tree, and the comparisons below
  // read it afterwards (a raw pointer was a use-after-free).
  const std::shared_ptr<BatchNorm> bn =
      p.has_bn ? std::static_pointer_cast<BatchNorm>(float_model->children()[p.layer_index + 1].second) : nullptr;
  const Tensor gamma = bn ? bn->gamma : Tensor(), beta = bn ? bn->beta : Tensor();
  const Tensor mean = bn ? bn->running_mean : Tensor(), var = bn ? bn->running_var : Tensor();

  const auto model = prepare_qat(float_model, bits(8, 8));
  ASSERT_TRUE(model->child("body") == float_model);
  EXPECT_EQ(child_types(*float_model), p.types_after);
  EXPECT_EQ(child_names(*float_model), names_before);  // dotted names unchanged

  const auto& layer = static_cast<const QatLayer&>(*float_model->children()[p.layer_index].second);
  EXPECT_EQ(layer.type(), is_conv ? "QatConv2d" : "QatLinear");
  EXPECT_EQ(layer.is_conv(), is_conv);
  EXPECT_EQ(layer.has_bn(), p.has_bn);
  EXPECT_EQ(layer.activation(), p.act);
  // Shared handles, not copies: training the QAT model trains the float model's tensors.
  EXPECT_TRUE(layer.weight.same(w));
  EXPECT_EQ(layer.bias.defined(), b.defined());
  if (b.defined()) {
    EXPECT_TRUE(layer.bias.same(b));
  }
  if (bn) {
    EXPECT_TRUE(layer.bn_gamma.same(gamma));
    EXPECT_TRUE(layer.bn_beta.same(beta));
    EXPECT_TRUE(layer.bn_mean.same(mean));
    EXPECT_TRUE(layer.bn_var.same(var));
    EXPECT_EQ(layer.bn_eps, bn->eps);
    EXPECT_EQ(layer.bn_momentum, bn->momentum);
  }
  // The float layer's parameter keeps its dotted name.
  bool found = false;
  const std::string key = "body." + std::to_string(p.layer_index) + ".weight";
  for (const auto& [name, t] : model->named_parameters()) found = found || (name == key && t.same(w));
  EXPECT_TRUE(found) << key;
  EXPECT_EQ(layer.weight_quant().scheme().per_channel, true);
  EXPECT_EQ(layer.output_quant().scheme().per_channel, false);
  EXPECT_TRUE(layer.input_quant.get() == &model->input_quant());
}

// With fake-quant off and in evaluation, the fused QAT block computes what the float modules it replaced
// computed: the fusion kept every module's effect (BN folded, activation applied).
TEST_P(FusionPattern, WithoutFakeQuantEqualsTheFloatModules) {
  const Pattern& p = GetParam();
  Rng r1(21), r2(21);
  const ModulePtr reference = p.build(r1), float_model = p.build(r2);
  set_bn_stats(reference);
  set_bn_stats(float_model);
  reference->eval();
  const auto model = prepare_qat(float_model, bits(8, 8));
  set_fake_quant_enabled(*model, false);
  model->eval();
  Rng rng(3);
  NoGradGuard no_grad;
  const Tensor x = random_input({2, 3, 4, 4}, rng, 4.0f);  // large enough for ReLU6 to cap
  const Tensor expected = reference->forward(x), actual = model->forward(x);
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < actual.numel(); ++i)
    ASSERT_NEAR(actual.data()[i], expected.data()[i], 1e-4f * (1.0f + std::abs(expected.data()[i]))) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Patterns, FusionPattern, ::testing::ValuesIn(patterns()),
                         [](const auto& info) { return std::string(info.param.name); });

// ------------------------------------------------------------------------------------- zoo models

TEST(PrepareZoo, Lenet5IsFusedWithItsNamesKept) {
  Rng rng(1);
  const ModulePtr float_model = make_model("lenet5", ModelSpec{}, rng);
  std::vector<std::string> names_before;
  for (const auto& [name, m] : float_model->named_modules(float_model)) names_before.push_back(name);
  const auto model = prepare_qat(float_model, bits(8, 8));
  const ModulePtr body = model->child("body");
  EXPECT_EQ(child_types(*body->child("features")),
            (std::vector<std::string>{"QatConv2d", "Identity", "Identity", "MaxPool2d", "QatConv2d", "Identity",
                                      "Identity", "MaxPool2d"}));
  EXPECT_EQ(body->child("flatten")->type(), "Flatten");
  EXPECT_EQ(child_types(*body->child("classifier")),
            (std::vector<std::string>{"QatLinear", "Identity", "QatLinear", "Identity", "QatLinear"}));
  // Every dotted name of the float model still names a module of the QAT model's body.
  for (const auto& name : names_before)
    if (!name.empty()) {
      EXPECT_NO_THROW(body->submodule(name)) << name;
    }

  EXPECT_EQ(layer_at(body, "features.0").activation(), FusedActivation::ReLU);
  EXPECT_TRUE(layer_at(body, "features.0").has_bn());
  EXPECT_TRUE(layer_at(body, "features.4").has_bn());
  EXPECT_EQ(layer_at(body, "classifier.0").activation(), FusedActivation::ReLU);
  EXPECT_EQ(layer_at(body, "classifier.2").activation(), FusedActivation::ReLU);
  EXPECT_EQ(layer_at(body, "classifier.4").activation(), FusedActivation::None);
  EXPECT_FALSE(layer_at(body, "classifier.4").has_bn());

  // The chain of grids: max pooling and flatten keep theirs, so each layer reads the previous output's.
  EXPECT_TRUE(layer_at(body, "features.0").input_quant.get() == &model->input_quant());
  EXPECT_TRUE(layer_at(body, "features.4").input_quant.get() == &layer_at(body, "features.0").output_quant());
  EXPECT_TRUE(layer_at(body, "classifier.0").input_quant.get() == &layer_at(body, "features.4").output_quant());
  EXPECT_TRUE(layer_at(body, "classifier.2").input_quant.get() == &layer_at(body, "classifier.0").output_quant());
  EXPECT_TRUE(layer_at(body, "classifier.4").input_quant.get() == &layer_at(body, "classifier.2").output_quant());
  // Quantizers are distinct objects.
  EXPECT_FALSE(&layer_at(body, "features.0").output_quant() == &layer_at(body, "features.4").output_quant());
}

TEST(PrepareZoo, MlpIsFusedAndChained) {
  Rng rng(2);
  const ModulePtr float_model = make_model("mlp", ModelSpec{}, rng);
  const Tensor fc1_weight = static_cast<Linear&>(*float_model->child("fc1")).weight;
  const auto model = prepare_qat(float_model, bits(8, 8));
  const ModulePtr body = model->child("body");
  EXPECT_EQ(child_names(*body), (std::vector<std::string>{"flatten", "fc1", "relu1", "fc2"}));
  EXPECT_EQ(child_types(*body), (std::vector<std::string>{"Flatten", "QatLinear", "Identity", "QatLinear"}));
  EXPECT_TRUE(layer_at(body, "fc1").weight.same(fc1_weight));
  EXPECT_EQ(layer_at(body, "fc1").activation(), FusedActivation::ReLU);
  EXPECT_EQ(layer_at(body, "fc2").activation(), FusedActivation::None);
  EXPECT_TRUE(layer_at(body, "fc1").input_quant.get() == &model->input_quant());
  EXPECT_TRUE(layer_at(body, "fc2").input_quant.get() == &layer_at(body, "fc1").output_quant());
  // The model runs and trains the shared tensor.
  model->train();
  Tensor loss = sum(model->forward(random_input({4, 1, 28, 28}, rng)));
  loss.backward();
  EXPECT_TRUE(fc1_weight.has_grad());
}

TEST(PrepareZoo, FakeQuantOffGivesTheFloatLenet5) {
  Rng r1(9), r2(9);
  const ModulePtr reference = make_model("lenet5", ModelSpec{}, r1), float_model = make_model("lenet5", ModelSpec{}, r2);
  set_bn_stats(reference);
  set_bn_stats(float_model);
  reference->eval();
  const auto model = prepare_qat(float_model, bits(4, 4));
  set_fake_quant_enabled(*model, false);
  model->eval();
  Rng rng(4);
  NoGradGuard no_grad;
  const Tensor x = random_input({3, 1, 28, 28}, rng);
  const Tensor expected = reference->forward(x), actual = model->forward(x);
  for (int64_t i = 0; i < actual.numel(); ++i) ASSERT_NEAR(actual.data()[i], expected.data()[i], 1e-4f) << i;
}

// A model with average pooling: with fake-quant switched off everywhere, the QAT model must be the float
// model too (and must not need quantization parameters that were never observed).
TEST(PrepareZoo, FakeQuantOffGivesTheFloatModelWithAveragePooling) {
  const auto build = [](Rng& r) {
    return seq({std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, true}, r), std::make_shared<ReLU>(),
                std::make_shared<AvgPool2d>(2), std::make_shared<Conv2d>(4, 5, 1, Conv2dOptions{1, 0, 1, true}, r),
                std::make_shared<GlobalAvgPool2d>(), std::make_shared<Linear>(5, 3, true, r)});
  };
  Rng r1(5), r2(5);
  const ModulePtr reference = build(r1), float_model = build(r2);
  reference->eval();
  const auto model = prepare_qat(float_model, bits(8, 8));
  set_fake_quant_enabled(*model, false);
  Rng rng(6);
  const Tensor x = random_input({2, 3, 6, 6}, rng);
  const Tensor expected = reference->forward(x);
  NoGradGuard no_grad;
  // Evaluation before any training batch: nothing has been observed, and nothing needs to be.
  model->eval();
  EXPECT_NO_THROW(model->forward(x));
  // Training mode (observers running), then evaluation: the float model's values both times.
  for (bool training : {true, false}) {
    model->set_training(training);
    const Tensor y = model->forward(x);
    ASSERT_EQ(y.shape(), expected.shape());
    float worst = 0.0f;
    for (int64_t i = 0; i < y.numel(); ++i) worst = std::max(worst, std::abs(y.data()[i] - expected.data()[i]));
    EXPECT_LE(worst, 1e-5f) << (training ? "training" : "evaluation") << ": largest difference from the float model";
  }
}

// ---------------------------------------------------------------------------------- average pooling

TEST(PrepareAvgPool, PoolsBecomeQatAvgPoolOnTheirInputGrid) {
  Rng rng(7);
  const ModulePtr float_model =
      seq({std::make_shared<AvgPool2d>(2), std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, true}, rng),
           std::make_shared<ReLU>(), std::make_shared<AvgPool2d>(3, 1, 1),
           std::make_shared<Conv2d>(4, 5, 1, Conv2dOptions{1, 0, 1, true}, rng), std::make_shared<GlobalAvgPool2d>(),
           std::make_shared<Linear>(5, 3, true, rng)});
  const auto model = prepare_qat(float_model, bits(8, 8));
  EXPECT_EQ(child_types(*float_model), (std::vector<std::string>{"QatAvgPool", "QatConv2d", "Identity", "QatAvgPool",
                                                                 "QatConv2d", "QatAvgPool", "QatLinear"}));
  const auto& p0 = static_cast<const QatAvgPool&>(*float_model->child("0"));
  const auto& p3 = static_cast<const QatAvgPool&>(*float_model->child("3"));
  const auto& p5 = static_cast<const QatAvgPool&>(*float_model->child("5"));
  EXPECT_EQ(p0.kernel, 2);
  EXPECT_EQ(p0.stride, 2);
  EXPECT_EQ(p0.padding, 0);
  EXPECT_EQ(p3.kernel, 3);
  EXPECT_EQ(p3.stride, 1);
  EXPECT_EQ(p3.padding, 1);
  EXPECT_EQ(p5.kernel, 0);  // global
  EXPECT_TRUE(p0.input_quant.get() == &model->input_quant());
  EXPECT_TRUE(p3.input_quant.get() == &layer_at(float_model, "1").output_quant());
  EXPECT_TRUE(p5.input_quant.get() == &layer_at(float_model, "4").output_quant());
  // Pooling creates no grid of its own: the next layer reads the pool's input grid.
  EXPECT_TRUE(layer_at(float_model, "1").input_quant.get() == &model->input_quant());
  EXPECT_TRUE(layer_at(float_model, "4").input_quant.get() == &layer_at(float_model, "1").output_quant());
  EXPECT_TRUE(layer_at(float_model, "6").input_quant.get() == &layer_at(float_model, "4").output_quant());

  // The pooled values are the integer kernel's, on the input's grid: within one step of rounding the
  // float mean, and equal to exact mode.
  model->train();
  NoGradGuard no_grad;
  const Tensor x = random_input({2, 3, 6, 6}, rng);
  model->forward(x);
  model->eval();
  const Tensor xq = model->input_quant()(x);
  const QParams qp = model->input_quant().qparams();
  const Tensor pooled = float_model->child("0")->forward(xq);
  std::vector<int8_t> codes(pooled.numel());
  avg_pool2d_int8(quantize_tensor(xq, qp).data(), xq.shape(), 2, 2, 0, qp.zero_point[0], codes.data());
  EXPECT_EQ(pooled.to_vector(), dequantize_codes(codes, pooled.shape(), qp).to_vector());
  const std::vector<float> rounded_mean = fake_quantize(avg_pool2d(xq, 2, 2, 0), qp).to_vector();
  for (int64_t i = 0; i < pooled.numel(); ++i)
    EXPECT_LE(std::abs(pooled.data()[i] - rounded_mean[i]), qp.scale[0] * 1.001f) << i;
  set_exact_mode(*model, true);
  EXPECT_EQ(float_model->child("0")->forward(xq).to_vector(), pooled.to_vector());
  set_exact_mode(*model, false);
}

// Where a window's mean lies half-way between two codes, the simulation rounds as the integer kernel
// does (half away from zero on the raw codes), not as fake_quantize would (half to even).
TEST(PrepareAvgPool, SimulationRoundsTiesAsTheIntegerKernel) {
  const auto model = prepare_qat(seq({std::make_shared<GlobalAvgPool2d>()}), bits(8, 8));
  model->train();
  Rng rng(3);
  {
    NoGradGuard no_grad;
    model->forward(random_input({1, 2, 2, 2}, rng));
  }
  model->eval();
  const QParams qp = model->input_quant().qparams();
  // Plane 0: codes {z+1, z+2, z+2, z+2}: 1.75 steps above zero -> 2. Plane 1: raw codes {k, k+1, k, k+1},
  // mean k + 0.5, rounded away from zero to k + 1; with k - z even, fake_quantize's half-to-even rounding
  // of the mean (k + 0.5 - z steps) would give code k.
  const int32_t z = qp.zero_point[0];
  const int32_t k = 2 + (z & 1);
  const std::vector<int32_t> raw = {z + 1, z + 2, z + 2, z + 2, k, k + 1, k, k + 1};
  std::vector<float> xs;
  for (int32_t q : raw) xs.push_back(qp.scale[0] * static_cast<float>(q - z));
  const Tensor x = Tensor::from_vector({1, 2, 2, 2}, xs);
  EXPECT_EQ(quantize_tensor(fake_quantize(global_avg_pool2d(x), qp), qp)[1], k);  // what rounding the mean gives
  const std::vector<float> y = model->forward(x).to_vector();
  ASSERT_EQ(y.size(), 2u);
  EXPECT_NEAR(y[0] / qp.scale[0], 2.0f, 1e-4f);
  EXPECT_NEAR(y[1] / qp.scale[0] + static_cast<float>(z), static_cast<float>(k + 1), 1e-4f);
}

// ------------------------------------------------------------------------------------------ residuals

using test::conv_bn;
ModulePtr residual_model(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(conv_bn(3, 4, 3, 1, true, rng));
  auto body1 = std::make_shared<Sequential>();
  body1->add(conv_bn(4, 4, 3, 1, true, rng));
  body1->add(conv_bn(4, 4, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body1, nullptr, true));
  auto body2 = std::make_shared<Sequential>();
  body2->add(conv_bn(4, 6, 3, 2, true, rng));
  body2->add(conv_bn(6, 6, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body2, conv_bn(4, 6, 1, 2, false, rng), false));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(6, 3, true, rng));
  return m;
}

TEST(PrepareResidual, BranchesReadTheBlockInputGridAndTheSumHasItsOwn) {
  Rng rng(8);
  const ModulePtr float_model = residual_model(rng);
  const auto model = prepare_qat(float_model, bits(8, 8, {"Residual=:6"}));
  ASSERT_EQ(float_model->child("1")->type(), "QatResidual");
  ASSERT_EQ(float_model->child("2")->type(), "QatResidual");
  const auto& r1 = static_cast<const QatResidual&>(*float_model->child("1"));
  const auto& r2 = static_cast<const QatResidual&>(*float_model->child("2"));
  EXPECT_TRUE(r1.relu_after);
  EXPECT_FALSE(r2.relu_after);
  EXPECT_EQ(r1.add_quant().scheme().bits, 6);  // the type override for sums
  const Quantizer& stem = layer_at(float_model, "0.0").output_quant();
  EXPECT_TRUE(layer_at(float_model, "0.0").input_quant.get() == &model->input_quant());
  // Block 1: the body starts from the stem's grid; the identity shortcut is that grid.
  EXPECT_TRUE(layer_at(float_model, "1.body.0.0").input_quant.get() == &stem);
  EXPECT_TRUE(layer_at(float_model, "1.body.1.0").input_quant.get() == &layer_at(float_model, "1.body.0.0").output_quant());
  EXPECT_TRUE(r1.body_quant.get() == &layer_at(float_model, "1.body.1.0").output_quant());
  EXPECT_TRUE(r1.shortcut_quant.get() == &stem);
  EXPECT_EQ(float_model->submodule("1.shortcut")->type(), "Identity");
  // Block 2: both branches start from block 1's sum.
  EXPECT_TRUE(layer_at(float_model, "2.body.0.0").input_quant.get() == &r1.add_quant());
  EXPECT_TRUE(layer_at(float_model, "2.shortcut.0").input_quant.get() == &r1.add_quant());
  EXPECT_TRUE(r2.shortcut_quant.get() == &layer_at(float_model, "2.shortcut.0").output_quant());
  EXPECT_TRUE(r2.body_quant.get() == &layer_at(float_model, "2.body.1.0").output_quant());
  const auto& gap = static_cast<const QatAvgPool&>(*float_model->child("3"));
  EXPECT_TRUE(gap.input_quant.get() == &r2.add_quant());
  EXPECT_TRUE(layer_at(float_model, "4").input_quant.get() == &r2.add_quant());
}

// "residual-branches=:A" reaches the layer that ends each branch (the body's last conv, the projection
// shortcut's conv) and nothing else: the sums, the other layers and identity shortcuts keep --abits; a
// layer's own name still beats it.
TEST(PrepareResidual, BranchOverrideReachesTheLayersTheAddsRead) {
  Rng rng(8);
  const ModulePtr float_model = residual_model(rng);
  prepare_qat(float_model, bits(2, 2, {"residual-branches=:8", "2.body.1.0=:5"}));
  const auto& r1 = static_cast<const QatResidual&>(*float_model->child("1"));
  const auto& r2 = static_cast<const QatResidual&>(*float_model->child("2"));
  EXPECT_EQ(layer_at(float_model, "1.body.1.0").output_quant().scheme().bits, 8);
  EXPECT_EQ(layer_at(float_model, "2.shortcut.0").output_quant().scheme().bits, 8);
  EXPECT_EQ(layer_at(float_model, "2.body.1.0").output_quant().scheme().bits, 5);  // its name beats it
  EXPECT_EQ(r1.body_quant->scheme().bits, 8);
  EXPECT_EQ(r1.shortcut_quant->scheme().bits, 2);  // identity: the stem's grid
  for (const char* name : {"0.0", "1.body.0.0", "2.body.0.0"})
    EXPECT_EQ(layer_at(float_model, name).output_quant().scheme().bits, 2) << name;
  EXPECT_EQ(r1.add_quant().scheme().bits, 2);
  EXPECT_EQ(r2.add_quant().scheme().bits, 2);
  for (const char* name : {"1.body.0.0", "1.body.1.0", "2.shortcut.0"})
    EXPECT_EQ(layer_at(float_model, name).weight_quant().scheme().bits, 2) << name;
}

// A model without residual blocks has nothing the override could reach: refused, as a misspelt name is;
// weight bits on it mean nothing, and are refused too.
TEST(PrepareResidual, BranchOverrideWithoutResidualsOrWithWeightBitsIsAnError) {
  Rng rng(9);
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(4, 4, {"residual-branches=:8"})); },
                                {"residual-branches", "no quantized layer"}));
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(residual_model(rng), bits(4, 4, {"residual-branches=8:8"})); },
                                {"residual-branches", "activation bits only"}));
}

// "residual-sums=:8" puts every sum on 8 bits, and the layers that read a sum (block 2's first conv and
// its projection shortcut: block 1 reads the stem's output; the classifier the pooled second sum) put it on
// their own activation bits first, each with a quantizer of its own of the activation method, after the
// block's ReLU or not. A layer whose own bits are not fewer (the classifier at 8 bits) reads the sum as it
// is, and so does every layer without the key.
TEST(PrepareResidual, SumsOverrideKeepsTheStreamAndRequantizesWhatReadsIt) {
  Rng rng(8);
  const ModulePtr float_model = residual_model(rng);
  prepare_qat(float_model, QConfig::from_options(2, 2, true, "minmax", "ema",
                                                 {"residual-branches=:8", "residual-sums=:8", "Linear=8:8"}, "lsq",
                                                 "pact"));
  const auto& r1 = static_cast<const QatResidual&>(*float_model->child("1"));
  const auto& r2 = static_cast<const QatResidual&>(*float_model->child("2"));
  EXPECT_EQ(r1.add_quant().scheme().bits, 8);
  EXPECT_EQ(r2.add_quant().scheme().bits, 8);
  for (const char* name : {"2.body.0.0", "2.shortcut.0"}) {
    const QatLayer& l = layer_at(float_model, name);
    ASSERT_NE(l.input_requant(), nullptr) << name;
    EXPECT_EQ(l.input_requant()->scheme().bits, 2) << name;
    EXPECT_EQ(l.input_requant()->method(), QuantizerMethod::Pact) << name << ": block 1 ends with a ReLU";
    EXPECT_EQ(l.read_quant(), l.input_requant()) << name;
    EXPECT_TRUE(l.input_quant.get() == &r1.add_quant()) << name << " still records the grid it is given";
  }
  EXPECT_NE(layer_at(float_model, "2.body.0.0").input_requant(), layer_at(float_model, "2.shortcut.0").input_requant());
  for (const char* name : {"0.0", "1.body.0.0", "1.body.1.0", "2.body.1.0", "4"})
    EXPECT_EQ(layer_at(float_model, name).input_requant(), nullptr) << name;

  // The classifier at 2 bits reads the second sum (no ReLU after it: an observer) requantized.
  const ModulePtr again = residual_model(rng);
  prepare_qat(again, QConfig::from_options(2, 2, true, "minmax", "ema", {"residual-sums=:8"}, "lsq", "pact"));
  const Quantizer* fc = layer_at(again, "4").input_requant();
  ASSERT_NE(fc, nullptr);
  EXPECT_EQ(fc->method(), QuantizerMethod::Observer);
  EXPECT_EQ(fc->scheme().bits, 2);

  // Without the key, the same sums at 8 bits (by type) are read as they are.
  const ModulePtr plain = residual_model(rng);
  prepare_qat(plain, bits(2, 2, {"Residual=:8"}));
  for (const char* name : {"2.body.0.0", "2.shortcut.0", "4"})
    EXPECT_EQ(layer_at(plain, name).input_requant(), nullptr) << name;
}

TEST(PrepareResidual, SumsOverrideWithoutResidualsOrWithWeightBitsIsAnError) {
  Rng rng(9);
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(4, 4, {"residual-sums=:8"})); },
                                {"residual-sums", "no quantized layer"}));
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(residual_model(rng), bits(4, 4, {"residual-sums=8:8"})); },
                                {"residual-sums", "activation bits only"}));
}

// --lsq-step-bounds reaches every LSQ weight quantizer, and no activation's.
TEST(PrepareBits, LsqStepBoundsReachEveryWeightStep) {
  Rng rng(12);
  QConfig q = QConfig::from_options(2, 2, true, "minmax", "ema", {"Linear=8:8"}, "lsq", "lsq");
  q.set_lsq_step_bounds(4.0f);
  const ModulePtr float_model = residual_model(rng);
  prepare_qat(float_model, q);
  int weights = 0;
  for (const auto& [name, m] : float_model->named_modules(float_model)) {
    if (const auto* lsq = m->as<LsqQuantizer>()) {
      const bool weight = name.size() > 12 && name.compare(name.size() - 12, 12, "weight_quant") == 0;
      EXPECT_EQ(lsq->step_bounds(), weight ? 4.0f : 0.0f) << name;
      weights += weight;
    }
  }
  EXPECT_EQ(weights, 7);
}

// ------------------------------------------------------------------------------------ bit widths

TEST(PrepareBits, ModelInputIsEightBitUnlessOverridden) {
  Rng rng(10);
  EXPECT_EQ(prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(4, 4))->input_quant().scheme().bits, 8);
  EXPECT_EQ(prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(8, 2))->input_quant().scheme().bits, 8);
  EXPECT_EQ(prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(4, 4, {"input=:6"}))->input_quant().scheme().bits, 6);
  EXPECT_EQ(prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(8, 8, {"input=:3"}))->input_quant().scheme().bits, 3);
  // The input quantizer is otherwise an activation quantizer: signed, affine, per tensor.
  const auto m = prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(4, 4));
  EXPECT_EQ(m->input_quant().scheme().quant_min(), -128);
  EXPECT_FALSE(m->input_quant().scheme().symmetric);
}

// "input=W:" sets only a weight width, which the input quantizer has no use for: its activation side is
// empty, so the input keeps its 8 bits rather than dropping to --abits.
TEST(PrepareBits, WeightOnlyInputOverrideKeepsEightBits) {
  Rng rng(10);
  EXPECT_EQ(prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(4, 4, {"input=4:"}))->input_quant().scheme().bits, 8);
}

// An override that names no quantized layer and no layer type (a typo) is an error naming the key and
// the names there are, not a setting that silently changes nothing.
TEST(PrepareBits, OverrideOfAnUnknownLayerIsAnError) {
  Rng rng(13);
  try {
    prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(4, 4, {"featurs.0=8:8"}));
    FAIL() << "a misspelt layer name was accepted";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("featurs.0"), std::string::npos) << what;
    EXPECT_NE(what.find("features.0"), std::string::npos) << what;  // the names it could have meant
    EXPECT_NE(what.find("Conv2d"), std::string::npos) << what;
  }
  // A type that the model has no layer of is refused too; one it has, and "input", are accepted.
  EXPECT_THROW(prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(4, 4, {"LSTM=8:8"})), std::invalid_argument);
  EXPECT_NO_THROW(prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(4, 4, {"Linear=8:8", "input=:8"})));
}

TEST(PrepareBits, LayerOverridesReachTheRightQuantizers) {
  Rng rng(12);
  const auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng),
                                 bits(4, 4, {"features.0=8:8", "Linear=:6", "classifier.4=2:3", "Conv2d=5:"}));
  const ModulePtr body = model->child("body");
  struct Expect {
    const char* name;
    int w, a;
  };
  for (const Expect& e : {Expect{"features.0", 8, 8}, Expect{"features.4", 5, 4}, Expect{"classifier.0", 4, 6},
                          Expect{"classifier.2", 4, 6}, Expect{"classifier.4", 2, 3}}) {
    const QatLayer& l = layer_at(body, e.name);
    EXPECT_EQ(l.weight_quant().scheme().bits, e.w) << e.name;
    EXPECT_EQ(l.output_quant().scheme().bits, e.a) << e.name;
    EXPECT_EQ(l.weight_quant().scheme().quant_max(), (1 << (e.w - 1)) - 1) << e.name;
    EXPECT_EQ(l.weight_quant().scheme().quant_min(), -((1 << (e.w - 1)) - 1)) << e.name;
    EXPECT_EQ(l.output_quant().scheme().quant_min(), -(1 << (e.a - 1))) << e.name;
  }
  EXPECT_EQ(model->input_quant().scheme().bits, 8);
  // The overrides' qparams really use those code ranges once data has been seen.
  model->train();
  NoGradGuard no_grad;
  model->forward(random_input({4, 1, 28, 28}, rng));
  const QParams w0 = layer_at(body, "classifier.4").weight_quant().qparams();
  EXPECT_EQ(w0.quant_min, -1);
  EXPECT_EQ(w0.quant_max, 1);
  EXPECT_EQ(w0.scale.size(), 10u);  // per output channel
  const QParams a0 = layer_at(body, "classifier.4").output_quant().qparams();
  EXPECT_EQ(a0.quant_min, -4);
  EXPECT_EQ(a0.quant_max, 3);
}

TEST(PrepareLsq, TheConfigsInitAndGradientScaleReachEveryLsqQuantizer) {
  Rng rng(13);
  QConfig q = QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq", "mse");
  q.set_lsq_grad_scale(LsqGradScale::Layer);
  const auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), q);
  const ModulePtr body = model->child("body");
  for (const char* name : {"features.0", "features.4", "classifier.0", "classifier.4"}) {
    const QatLayer& l = layer_at(body, name);
    for (const Quantizer* quantizer : {&l.weight_quant(), &l.output_quant()}) {
      const auto* lsq = dynamic_cast<const LsqQuantizer*>(quantizer);
      ASSERT_NE(lsq, nullptr) << name;
      EXPECT_EQ(lsq->init_method(), LsqInit::Mse) << name;
      EXPECT_EQ(lsq->grad_scale(), LsqGradScale::Layer) << name;
    }
  }
}

// ------------------------------------------------------------------------------------ refusals

class Mystery : public Module {
 public:
  Mystery() : Module("Mystery") {}
  Tensor forward(const Tensor& x) override { return x; }
};

TEST(PrepareRefuses, LoneBatchNorm) {
  Rng rng(13);
  EXPECT_TRUE(test::throws_with([] { prepare_qat(seq({std::make_shared<BatchNorm2d>(3)}), bits(8, 8)); },
                           {"BatchNorm2d", "'0'", "must follow a Conv2d or Linear"}));
  // Nested, after a ReLU that broke the pattern.
  auto outer = std::make_shared<Sequential>();
  outer->add("features", seq({std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{}, rng), std::make_shared<ReLU>(),
                              std::make_shared<BatchNorm2d>(4)}));
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(outer, bits(8, 8)); }, {"BatchNorm2d", "'features.2'"}));
  // A batch norm of the wrong kind for its layer is not fused either.
  EXPECT_TRUE(test::throws_with(
      [&] { prepare_qat(seq({std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{}, rng), std::make_shared<BatchNorm1d>(4)}), bits(8, 8)); },
      {"BatchNorm1d", "'1'"}));
}

TEST(PrepareRefuses, UnknownModule) {
  auto outer = std::make_shared<Sequential>();
  auto inner = std::make_shared<Sequential>();
  inner->add("weird", std::make_shared<Mystery>());
  outer->add("block", inner);
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(outer, bits(8, 8)); }, {"cannot quantize", "Mystery", "'block.weird'"}));
}

TEST(PrepareRefuses, NonSequentialTopAndBadResidualBranch) {
  Rng rng(14);
  EXPECT_TRUE(test::throws_with([&] { prepare_qat(std::make_shared<Linear>(3, 2, true, rng), bits(8, 8)); },
                           {"Sequential", "Linear"}));
  EXPECT_TRUE(test::throws_with(
      [&] {
        prepare_qat(seq({std::make_shared<Residual>(std::make_shared<Conv2d>(3, 3, 1, Conv2dOptions{}, rng), nullptr, true)}),
                    bits(8, 8));
      },
      {"'0.body'"}));
  EXPECT_THROW(prepare_qat(nullptr, bits(8, 8)), std::invalid_argument);
}

// ------------------------------------------------------------------------------------ switches

TEST(PrepareSwitches, ReachEveryLayerAndQuantizer) {
  Rng rng(15);
  const ModulePtr float_model = residual_model(rng);
  const auto model = prepare_qat(float_model, bits(8, 8));
  const ModulePtr root = model;
  const auto layers = modules_of(root, {"QatConv2d", "QatLinear"});
  const auto quantizers = modules_of(root, {"FakeQuantize"});
  ASSERT_EQ(layers.size(), 7u);
  // 7 layers x (weight + output) + the input + 2 sums.
  ASSERT_EQ(quantizers.size(), 17u);

  set_bn_frozen(*model, true);
  for (const auto& m : layers) EXPECT_TRUE(static_cast<QatLayer&>(*m).bn_frozen());
  set_bn_frozen(*model, false);
  for (const auto& m : layers) EXPECT_FALSE(static_cast<QatLayer&>(*m).bn_frozen());

  set_exact_mode(*model, true);
  for (const auto& m : layers) EXPECT_TRUE(static_cast<QatLayer&>(*m).exact());
  set_exact_mode(*model, false);
  for (const auto& m : layers) EXPECT_FALSE(static_cast<QatLayer&>(*m).exact());

  set_observers_enabled(*model, false);
  for (const auto& m : quantizers) EXPECT_FALSE(static_cast<FakeQuantize&>(*m).observer_enabled());
  for (const auto& m : quantizers) EXPECT_TRUE(static_cast<FakeQuantize&>(*m).fake_quant_enabled());
  set_observers_enabled(*model, true);
  for (const auto& m : quantizers) EXPECT_TRUE(static_cast<FakeQuantize&>(*m).observer_enabled());

  set_fake_quant_enabled(*model, false);
  for (const auto& m : quantizers) EXPECT_FALSE(static_cast<FakeQuantize&>(*m).fake_quant_enabled());
  for (const auto& m : quantizers) EXPECT_TRUE(static_cast<FakeQuantize&>(*m).observer_enabled());
  set_fake_quant_enabled(*model, true);
  for (const auto& m : quantizers) EXPECT_TRUE(static_cast<FakeQuantize&>(*m).fake_quant_enabled());
}

// With observers off, training batches leave every range where it was.
TEST(PrepareSwitches, ObserversOffFreezeRanges) {
  Rng rng(16);
  const auto model = prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(8, 8));
  model->train();
  NoGradGuard no_grad;
  model->forward(random_input({4, 1, 28, 28}, rng));
  const QParams before = model->input_quant().qparams();
  set_observers_enabled(*model, false);
  model->forward(random_input({4, 1, 28, 28}, rng, 10.0f));
  EXPECT_EQ(model->input_quant().qparams().scale, before.scale);
  set_observers_enabled(*model, true);
  model->forward(random_input({4, 1, 28, 28}, rng, 10.0f));
  EXPECT_NE(model->input_quant().qparams().scale, before.scale);
}

// A frozen BN stops updating its running statistics in training.
TEST(PrepareSwitches, FrozenBnKeepsRunningStatistics) {
  Rng rng(17);
  const auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(8, 8));
  const QatLayer& l = layer_at(model->child("body"), "features.0");
  model->train();
  NoGradGuard no_grad;
  set_bn_frozen(*model, true);
  const std::vector<float> mean = l.bn_mean.to_vector(), var = l.bn_var.to_vector();
  model->forward(random_input({2, 1, 28, 28}, rng));
  EXPECT_EQ(l.bn_mean.to_vector(), mean);
  EXPECT_EQ(l.bn_var.to_vector(), var);
  set_bn_frozen(*model, false);
  model->forward(random_input({2, 1, 28, 28}, rng));
  EXPECT_NE(l.bn_mean.to_vector(), mean);
}

}  // namespace
}  // namespace qatlab
