// test_qat_layers.cpp: the QAT modules: batch-norm folding against the float Conv2d + BatchNorm2d (eval,
// frozen and batch-statistics training), the folded weight and bias by hand, gradients through the
// folded layer, the straight-through gradient at the output clamp, QatResidual's sum, lower_layer's
// integers, and a state-dict round trip of a whole QAT model.
#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/optim.h"
#include "nn/residual.h"
#include "nn/zoo.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/requantize.h"
#include "quant/qat/convert.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/prepare.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_input;

using test::random_tensor;


// The default quantizers of a layer with oc outputs.
std::shared_ptr<FakeQuantize> weight_fq(int64_t oc, const QScheme& scheme = QConfig{}.weight.scheme) {
  return std::make_shared<FakeQuantize>(scheme, ObserverKind::MinMax, scheme.per_channel ? oc : 1);
}
std::shared_ptr<FakeQuantize> output_fq() { return std::make_shared<FakeQuantize>(QConfig{}.activation.scheme, ObserverKind::Ema, 1); }

void set_bn(BatchNorm& bn, uint64_t seed) {
  Rng rng(seed);
  for (int64_t c = 0; c < bn.channels; ++c) {
    bn.gamma.data()[c] = rng.uniform(0.5f, 1.5f);
    bn.beta.data()[c] = rng.uniform(-0.5f, 0.5f);
    bn.running_mean.data()[c] = rng.uniform(-0.3f, 0.3f);
    bn.running_var.data()[c] = rng.uniform(0.4f, 2.0f);
  }
}

void expect_close(const Tensor& actual, const Tensor& expected, float rel, const std::string& what) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  for (int64_t i = 0; i < actual.numel(); ++i)
    ASSERT_NEAR(actual.data()[i], expected.data()[i], rel * (1.0f + std::abs(expected.data()[i])))
        << what << ": element " << i;
}

// A float Conv2d + BatchNorm2d and an identical, independent pair folded into a QatConv2d.
struct ConvBnPair {
  std::shared_ptr<Conv2d> ref_conv, conv;
  std::shared_ptr<BatchNorm2d> ref_bn, bn;
  std::shared_ptr<QatLayer> layer;

  explicit ConvBnPair(bool bias, FusedActivation act = FusedActivation::None, int64_t in = 3, int64_t out = 5) {
    Rng r1(31), r2(31);
    ref_conv = std::make_shared<Conv2d>(in, out, 3, Conv2dOptions{1, 1, 1, bias}, r1);
    conv = std::make_shared<Conv2d>(in, out, 3, Conv2dOptions{1, 1, 1, bias}, r2);
    ref_bn = std::make_shared<BatchNorm2d>(out);
    bn = std::make_shared<BatchNorm2d>(out);
    set_bn(*ref_bn, 77);
    set_bn(*bn, 77);
    layer = QatLayer::from_conv(*conv, bn.get(), act, weight_fq(out), output_fq());
    set_fake_quant_enabled(*layer, false);
  }
  Tensor reference(const Tensor& x) { return ref_bn->forward(ref_conv->forward(x)); }
};

// ------------------------------------------------------------------------------- batch-norm folding

TEST(QatLayerFolding, EvalEqualsFloatConvBatchNorm) {
  for (bool bias : {false, true}) {
    ConvBnPair p(bias);
    p.ref_bn->eval();
    p.layer->eval();
    Rng rng(1);
    NoGradGuard no_grad;
    const Tensor x = random_input({3, 3, 6, 6}, rng);
    expect_close(p.layer->forward(x), p.reference(x), 1e-5f, bias ? "with bias" : "without bias");
  }
}

TEST(QatLayerFolding, FrozenBnInTrainingEqualsFloatEvalAndKeepsStatistics) {
  ConvBnPair p(true);
  p.ref_bn->eval();
  p.layer->train();
  p.layer->freeze_bn(true);
  const std::vector<float> mean = p.bn->running_mean.to_vector(), var = p.bn->running_var.to_vector();
  Rng rng(2);
  const Tensor x = random_input({3, 3, 6, 6}, rng);
  expect_close(p.layer->forward(x), p.reference(x), 1e-5f, "frozen");
  EXPECT_EQ(p.bn->running_mean.to_vector(), mean);
  EXPECT_EQ(p.bn->running_var.to_vector(), var);
}

TEST(QatLayerFolding, TrainingUsesBatchStatisticsAndMovesRunningStatisticsAlike) {
  for (bool bias : {false, true}) {
    ConvBnPair p(bias, FusedActivation::ReLU);
    p.ref_bn->train();
    p.layer->train();
    Rng rng(3);
    for (int step = 0; step < 3; ++step) {
      const Tensor x = random_input({4, 3, 5, 5}, rng, 2.0f);
      const Tensor expected = relu(p.reference(x));
      expect_close(p.layer->forward(x), expected, 1e-4f, "training step " + std::to_string(step));
      // The shared BN tensors of the QAT layer moved exactly like the float BN's.
      for (int64_t c = 0; c < 5; ++c) {
        EXPECT_NEAR(p.layer->bn_mean.data()[c], p.ref_bn->running_mean.data()[c], 1e-5f) << "mean, step " << step;
        EXPECT_NEAR(p.layer->bn_var.data()[c], p.ref_bn->running_var.data()[c], 1e-4f) << "var, step " << step;
      }
    }
    // And they did move.
    EXPECT_NE(p.layer->bn_mean.to_vector(), std::vector<float>(5, 0.0f));
  }
}

TEST(QatLayerFolding, FoldedWeightAndBiasByHand) {
  Rng rng(4);
  Conv2d conv(1, 2, 1, Conv2dOptions{1, 0, 1, true}, rng);
  const std::vector<float> w{2.0f, -3.0f}, b{0.5f, 1.0f}, gamma{1.5f, 0.5f}, beta{0.1f, -0.2f}, mean{0.2f, -1.0f},
      var{4.0f, 0.25f};
  std::copy(w.begin(), w.end(), conv.weight.data());
  std::copy(b.begin(), b.end(), conv.bias.data());
  BatchNorm2d bn(2);
  std::copy(gamma.begin(), gamma.end(), bn.gamma.data());
  std::copy(beta.begin(), beta.end(), bn.beta.data());
  std::copy(mean.begin(), mean.end(), bn.running_mean.data());
  std::copy(var.begin(), var.end(), bn.running_var.data());
  const auto layer = QatLayer::from_conv(conv, &bn, FusedActivation::None, weight_fq(2), output_fq());
  const Tensor fw = layer->folded_weight(), fb = layer->folded_bias();
  ASSERT_EQ(fw.shape(), (Shape{2, 1, 1, 1}));
  ASSERT_EQ(fb.shape(), (Shape{2}));
  EXPECT_FALSE(fw.requires_grad());
  EXPECT_FALSE(fb.requires_grad());
  for (int c = 0; c < 2; ++c) {
    const double sf = gamma[c] / std::sqrt(static_cast<double>(var[c]) + 1e-5);
    EXPECT_NEAR(fw.data()[c], w[c] * sf, 1e-6) << c;
    EXPECT_NEAR(fb.data()[c], beta[c] + (b[c] - mean[c]) * sf, 1e-6) << c;
  }

  // Linear with BN and no bias: b_fold = beta - mean * sf.
  Linear lin(2, 2, false, rng);
  BatchNorm1d bn1(2);
  std::copy(gamma.begin(), gamma.end(), bn1.gamma.data());
  std::copy(beta.begin(), beta.end(), bn1.beta.data());
  std::copy(mean.begin(), mean.end(), bn1.running_mean.data());
  std::copy(var.begin(), var.end(), bn1.running_var.data());
  const auto l1 = QatLayer::from_linear(lin, &bn1, FusedActivation::None, weight_fq(2), output_fq());
  for (int c = 0; c < 2; ++c) {
    const double sf = gamma[c] / std::sqrt(static_cast<double>(var[c]) + 1e-5);
    EXPECT_NEAR(l1->folded_bias().data()[c], beta[c] - mean[c] * sf, 1e-6) << c;
    for (int k = 0; k < 2; ++k)
      EXPECT_NEAR(l1->folded_weight().data()[c * 2 + k], lin.weight.data()[c * 2 + k] * sf, 1e-6) << c << "," << k;
  }

  // No BN: the layer's own weight and bias; no bias at all: zeros.
  Linear plain(3, 2, false, rng);
  const auto l2 = QatLayer::from_linear(plain, nullptr, FusedActivation::ReLU, weight_fq(2), output_fq());
  EXPECT_EQ(l2->folded_weight().to_vector(), plain.weight.to_vector());
  EXPECT_EQ(l2->folded_bias().to_vector(), std::vector<float>(2, 0.0f));
  Linear biased(3, 2, true, rng);
  const auto l3 = QatLayer::from_linear(biased, nullptr, FusedActivation::None, weight_fq(2), output_fq());
  EXPECT_EQ(l3->folded_bias().to_vector(), biased.bias.to_vector());
}

TEST(QatLayerFolding, MismatchedBatchNormIsRefused) {
  Rng rng(5);
  Conv2d conv(3, 4, 3, Conv2dOptions{}, rng);
  BatchNorm2d bn(6);
  EXPECT_TRUE(test::throws_with([&] { QatLayer::from_conv(conv, &bn, FusedActivation::None, weight_fq(4), output_fq()); },
                                {"6 channels", "4 outputs"}));
}

// ------------------------------------------------------------------------------------------ gradients

TEST(QatLayerGradients, ConvWithBatchNormInTraining) {
  ConvBnPair p(true, FusedActivation::None, 2, 3);  // small: each element costs two forward passes
  p.layer->train();
  set_observers_enabled(*p.layer, false);
  const Tensor mean0 = p.bn->running_mean.clone(), var0 = p.bn->running_var.clone();
  const auto layer = p.layer;
  const auto f = [layer, mean0, var0](const std::vector<Tensor>& in) {
    layer->weight = in[1];
    layer->bias = in[2];
    layer->bn_gamma = in[3];
    layer->bn_beta = in[4];
    // Every evaluation starts from the same running statistics (training updates them).
    layer->bn_mean.copy_from(mean0);
    layer->bn_var.copy_from(var0);
    return layer->forward(in[0]);
  };
  Rng rng(6);
  EXPECT_GRADS_OK(f, {random_tensor({3, 2, 4, 4}, rng), p.conv->weight.clone(), p.conv->bias.clone(),
                      random_tensor({3}, rng, 0.5f, 1.5f), random_tensor({3}, rng)});
}

TEST(QatLayerGradients, AnLsqStepOnTheFoldedWeightLearnsAsOneOnTheWeight) {
  // Layer B is layer A with twice the weights and half of gamma: the same folded weights W * sf, the
  // same outputs, but sf halved. A step on the folded weight is the step u = s / sf of one on W, so its
  // gradient carries sf^2 (LsqQuantizer, "Folded inputs"): B's is a quarter of A's.
  const QScheme w4{4, true, true, true, 0, true};
  std::vector<std::vector<float>> step_grads;
  Tensor y_a;
  for (const float k : {1.0f, 2.0f}) {
    Rng rng(41);
    Conv2d conv(2, 3, 3, Conv2dOptions{1, 1, 1, false}, rng);
    BatchNorm2d bn(3);
    set_bn(bn, 43);
    for (int64_t c = 0; c < 3; ++c) bn.running_mean.data()[c] = 0.0f;  // the folded bias is then beta
    for (int64_t i = 0; i < conv.weight.numel(); ++i) conv.weight.data()[i] *= k;
    for (int64_t c = 0; c < 3; ++c) bn.gamma.data()[c] /= k;
    auto wq = std::make_shared<LsqQuantizer>(w4, 3);
    const auto layer = QatLayer::from_conv(conv, &bn, FusedActivation::None, wq, output_fq());
    layer->train();
    layer->freeze_bn(true);
    Rng data(45);
    const Tensor x = random_tensor({2, 2, 5, 5}, data);
    Tensor y = layer->forward(x);
    y.backward(random_tensor(y.shape(), data));
    step_grads.push_back(wq->scale().grad().to_vector());
    if (k == 1.0f)
      y_a = y;
    else
      EXPECT_EQ(y.to_vector(), y_a.to_vector());
  }
  for (int c = 0; c < 3; ++c) {
    EXPECT_NE(step_grads[0][c], 0.0f) << c;
    EXPECT_NEAR(step_grads[1][c], step_grads[0][c] / 4, 1e-6f * std::abs(step_grads[0][c])) << c;
  }
}

TEST(QatLayerGradients, LinearWithFrozenBatchNorm) {
  Rng rng(7);
  Linear lin(5, 3, true, rng);
  BatchNorm1d bn(3);
  set_bn(bn, 8);
  const auto layer = QatLayer::from_linear(lin, &bn, FusedActivation::None, weight_fq(3), output_fq());
  set_fake_quant_enabled(*layer, false);
  set_observers_enabled(*layer, false);
  layer->train();
  layer->freeze_bn(true);
  const auto f = [layer](const std::vector<Tensor>& in) {
    layer->weight = in[1];
    layer->bias = in[2];
    layer->bn_gamma = in[3];
    layer->bn_beta = in[4];
    return layer->forward(in[0]);
  };
  EXPECT_GRADS_OK(f, {random_tensor({4, 5}, rng), lin.weight.clone(), lin.bias.clone(),
                      random_tensor({3}, rng, 0.5f, 1.5f), random_tensor({3}, rng)});
}

// With fake-quant on, the output quantizer's clamp stops the gradient (straight-through elsewhere).
TEST(QatLayerGradients, StraightThroughExceptWhereTheOutputIsClamped) {
  Rng rng(9);
  Linear lin(1, 1, false, rng);
  lin.weight.data()[0] = 0.5f;
  const auto layer = QatLayer::from_linear(lin, nullptr, FusedActivation::None, weight_fq(1), output_fq());
  layer->train();
  {
    // One batch sets the output range to [-1, 1] (the first batch of an ema observer sets it directly).
    NoGradGuard no_grad;
    layer->forward(Tensor::from_vector({2, 1}, {-2.0f, 2.0f}));
  }
  set_observers_enabled(*layer, false);
  const QParams out = layer->output_quant().qparams();
  ASSERT_NEAR(out.scale[0] * (out.quant_max - out.zero_point[0]), 1.0f, 0.01f);

  Tensor x = Tensor::from_vector({5, 1}, {-4.0f, -1.0f, 0.6f, 1.0f, 4.0f});
  x.set_requires_grad(true);
  layer->weight.zero_grad();
  Tensor y = layer->forward(x);
  // The outputs -2 and 2 are clamped to the grid's ends; the rest pass.
  EXPECT_NEAR(y.data()[0], out.scale[0] * (out.quant_min - out.zero_point[0]), 1e-6f);
  EXPECT_NEAR(y.data()[4], out.scale[0] * (out.quant_max - out.zero_point[0]), 1e-6f);
  y.backward(Tensor::ones({5, 1}));
  const std::vector<float> g = x.grad().to_vector();
  const float wq = layer->weight_quant()(layer->weight.detach()).data()[0];  // the quantized weight
  EXPECT_NEAR(wq, 0.5f, 1e-6f);
  EXPECT_EQ(g[0], 0.0f);
  EXPECT_NEAR(g[1], wq, 1e-7f);
  EXPECT_NEAR(g[2], wq, 1e-7f);
  EXPECT_NEAR(g[3], wq, 1e-7f);
  EXPECT_EQ(g[4], 0.0f);
  // The weight's gradient sums x over the unclamped outputs only: -1 + 0.6 + 1.
  EXPECT_NEAR(layer->weight.grad().data()[0], 0.6f, 1e-6f);
}

// ------------------------------------------------------------------------------------------ residual

ModulePtr conv_bn(int64_t in, int64_t out, bool relu, Rng& rng, int64_t k = 3) {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Conv2d>(in, out, k, Conv2dOptions{1, k / 2, 1, false}, rng));
  s->add(std::make_shared<BatchNorm2d>(out));
  if (relu) s->add(std::make_shared<ReLU>());
  return s;
}

// One residual block (conv-bn-relu, conv-bn; identity shortcut with a ReLU after the sum, or a
// projection without), prepared for QAT, its observers fed three batches, in evaluation. `net` is the
// float container whose child "0" became the QatResidual.
std::shared_ptr<QatModel> observed_residual(bool projection, Rng& rng, std::shared_ptr<Sequential>& net) {
  auto body = std::make_shared<Sequential>();
  body->add(conv_bn(3, 3, true, rng));
  body->add(conv_bn(3, 3, false, rng));
  net = std::make_shared<Sequential>();
  net->add(std::make_shared<Residual>(body, projection ? conv_bn(3, 3, false, rng, 1) : nullptr, !projection));
  const auto model = prepare_qat(net, QConfig{});
  model->train();
  NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) model->forward(random_input({2, 3, 5, 5}, rng));
  model->eval();
  return model;
}

TEST(QatResidualTest, OutputIsTheQuantizedSumInEval) {
  for (bool projection : {false, true}) {
    Rng rng(10);
    std::shared_ptr<Sequential> net;
    const auto model = observed_residual(projection, rng, net);
    NoGradGuard no_grad;
    const auto& res = static_cast<QatResidual&>(*net->child("0"));
    ASSERT_EQ(res.relu_after, !projection);
    const Tensor x = random_input({2, 3, 5, 5}, rng);
    const Tensor xq = model->input_quant()(x);
    const Tensor a = res.child("body")->forward(xq), b = res.child("shortcut")->forward(xq);
    Tensor sum = add(a, b);
    if (res.relu_after) sum = relu(sum);
    const QParams qa = res.body_quant->qparams(), qb = res.shortcut_quant->qparams(), qo = res.add_quant().qparams();
    // The integer add of the two code tensors, by hand:
    const AddInt8Params p = make_add_params(qa.scale[0], qa.zero_point[0], qb.scale[0], qb.zero_point[0], qo.scale[0],
                                            qo.zero_point[0], res.relu_after ? qo.zero_point[0] : -128, 127);
    std::vector<int8_t> codes(sum.numel());
    add_int8_reference(p, quantize_tensor(a, qa).data(), quantize_tensor(b, qb).data(), codes.data(), sum.numel());
    const Tensor y = model->forward(x);
    EXPECT_EQ(y.to_vector(), dequantize_codes(codes, sum.shape(), qo).to_vector()) << (projection ? "projection" : "identity");
    // ... which is the rounded float sum, give or take one step next to a rounding boundary.
    const Tensor rounded_sum = fake_quantize(sum, qo);
    for (int64_t i = 0; i < y.numel(); ++i) EXPECT_LE(std::abs(y.data()[i] - rounded_sum.data()[i]), qo.scale[0] * 1.001f);
    if (res.relu_after) {
      for (float v : y.to_vector()) EXPECT_GE(v, 0.0f);
    }
  }
}

// The simulation takes the integer add's values but the gradient of add -> (relu) -> add_quant: the
// input gradient equals the one through that float expression.
TEST(QatResidualTest, GradientIsTheFloatSumsStraightThroughGradient) {
  for (bool projection : {false, true}) {
    Rng rng(12);
    std::shared_ptr<Sequential> net;
    const auto model = observed_residual(projection, rng, net);
    auto& res = static_cast<QatResidual&>(*net->child("0"));
    const Tensor xq = model->input_quant()(random_input({2, 3, 5, 5}, rng)).detach();
    const Tensor weights = random_input({2, 3, 5, 5}, rng);  // a loss sum(w * y) with varied weights

    Tensor x1 = xq.detach();
    x1.set_requires_grad(true);
    sum(mul(res.forward(x1), weights)).backward();

    Tensor x2 = xq.detach();
    x2.set_requires_grad(true);
    Tensor s = add(res.child("body")->forward(x2), res.child("shortcut")->forward(x2));
    if (res.relu_after) s = relu(s);
    sum(mul(fake_quantize(s, res.add_quant().qparams()), weights)).backward();

    ASSERT_TRUE(x1.has_grad() && x2.has_grad());
    EXPECT_EQ(x1.grad().to_vector(), x2.grad().to_vector()) << (projection ? "projection" : "identity");
  }
}

// ------------------------------------------------------------------------------- deployed evaluation

// In evaluation a layer computes its deployed form on the integer codes (deployed_linear_op); in
// training with BN frozen and observers off it computes the same expression on the fake-quantized
// floats. The two agree to float rounding: the output codes differ only next to a rounding boundary
// (by one code, rarely), and the input gradient is the float expression's.
TEST(QatLayerDeployed, EvaluationOnCodesIsTheFloatExpressionUpToRounding) {
  for (int bits : {8, 4}) {
    Rng rng(21);
    auto net = std::make_shared<Sequential>();
    // No ReLU: where the accumulator is exactly 0, its gradient mask would take the code path's exact 0
    // but the float path's rounding noise around 0 (both valid subgradients).
    net->add(conv_bn(8, 16, false, rng));
    const auto model = prepare_qat(net, QConfig::from_options(bits, bits, true, "minmax", "ema", {}));
    model->train();
    {
      NoGradGuard no_grad;
      for (int i = 0; i < 3; ++i) model->forward(random_input({4, 8, 12, 12}, rng, 2.0f));
    }
    const Tensor x = random_input({4, 8, 12, 12}, rng, 2.0f);
    const Tensor weights = random_input({4, 16, 12, 12}, rng);  // a loss sum(w * y) with varied weights
    auto run = [&](Tensor& grad) {
      Tensor xi = x.detach();
      xi.set_requires_grad(true);
      const Tensor y = model->forward(xi);
      sum(mul(y, weights)).backward();
      grad = xi.grad();
      return y.to_vector();
    };
    model->eval();
    Tensor g_codes, g_float;
    const std::vector<float> y_codes = run(g_codes);
    set_observers_enabled(*model, false);
    set_bn_frozen(*model, true);
    model->train();
    const std::vector<float> y_float = run(g_float);

    const float step = static_cast<const QatLayer&>(*model->submodule("body.0.0")).output_quant().qparams().scale[0];
    int64_t differ = 0;
    for (size_t i = 0; i < y_codes.size(); ++i) {
      ASSERT_LE(std::abs(y_codes[i] - y_float[i]), step * 1.001f) << i;
      differ += y_codes[i] != y_float[i];
    }
    EXPECT_LE(differ, static_cast<int64_t>(y_codes.size()) / 1000) << "W" << bits << "A" << bits;
    expect_close(g_codes, g_float, 1e-4f, "input gradient");
  }
}

// ------------------------------------------------------------------------------------------ lowering

// A small prepared model whose observers and BN statistics have seen a few batches, in evaluation.
std::shared_ptr<QatModel> observed_model(Rng& rng, ModulePtr& body) {
  body = std::make_shared<Sequential>();
  auto& s = static_cast<Sequential&>(*body);
  s.add(std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, false}, rng));
  s.add(std::make_shared<BatchNorm2d>(4));
  s.add(std::make_shared<ReLU>());
  s.add(std::make_shared<Conv2d>(4, 5, 3, Conv2dOptions{2, 1, 1, true}, rng));
  s.add(std::make_shared<ReLU6>());
  s.add(std::make_shared<Flatten>());
  s.add(std::make_shared<Linear>(5 * 3 * 3, 3, true, rng));
  const auto model = prepare_qat(body, QConfig::from_options(6, 8, true, "minmax", "ema", {}));
  model->train();
  NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) model->forward(random_input({4, 3, 6, 6}, rng, 2.0f));
  model->eval();
  return model;
}

TEST(LowerLayer, IntegersFollowTheFormulas) {
  Rng rng(12);
  ModulePtr body;
  const auto model = observed_model(rng, body);
  NoGradGuard no_grad;
  for (const char* name : {"0", "3", "6"}) {
    SCOPED_TRACE(name);
    const auto& layer = static_cast<const QatLayer&>(*body->child(name));
    const QParams in = layer.input_quant->qparams(), out = layer.output_quant().qparams();
    const QParams wq = layer.weight_quant().qparams();
    const LoweredLayer l = lower_layer(layer, in, out);
    const int64_t oc = layer.out_channels();
    ASSERT_EQ(l.is_conv, layer.is_conv());
    ASSERT_EQ(l.bias.size(), static_cast<size_t>(oc));
    EXPECT_EQ(l.weights.scale, wq.scale);
    EXPECT_EQ(l.weight_shape, layer.weight.shape());
    const auto& mult = l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier;
    const auto& shift = l.is_conv ? l.conv.output_shift : l.fc.output_shift;
    ASSERT_EQ(mult.size(), static_cast<size_t>(oc));
    const Tensor fb = layer.folded_bias();
    // The weight codes are the fake-quant's: code * S_w is the value training used.
    const Tensor simulated = fake_quantize(layer.folded_weight(), wq);
    const int64_t per = layer.weight.numel() / oc;
    for (int64_t c = 0; c < oc; ++c) {
      const double s_w = wq.scale[c];
      const double real = static_cast<double>(in.scale[0]) * s_w / out.scale[0];
      EXPECT_NEAR(dequantize_multiplier(mult[c], shift[c]), real, real * std::ldexp(1.0, -30)) << "channel " << c;
      EXPECT_EQ(l.bias[c], static_cast<int32_t>(std::nearbyint(fb.data()[c] / (static_cast<double>(in.scale[0]) * s_w))))
          << "channel " << c;
      for (int64_t i = 0; i < per; ++i) {
        const int8_t q = l.weight[c * per + i];
        EXPECT_EQ(wq.scale[c] * static_cast<float>(q), simulated.data()[c * per + i]);
        EXPECT_LE(std::abs(int(q)), wq.quant_max);
      }
    }
    const int32_t in_off = l.is_conv ? l.conv.input_offset : l.fc.input_offset;
    const int32_t out_off = l.is_conv ? l.conv.output_offset : l.fc.output_offset;
    const int32_t lo = l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min;
    const int32_t hi = l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max;
    EXPECT_EQ(in_off, -in.zero_point[0]);
    EXPECT_EQ(out_off, out.zero_point[0]);
    if (layer.activation() == FusedActivation::None) {
      EXPECT_EQ(lo, out.quant_min);
      EXPECT_EQ(hi, out.quant_max);
    } else {
      EXPECT_EQ(lo, std::max(out.quant_min, out.zero_point[0]));  // ReLU: the code of 0
    }
  }
  const auto& strided = static_cast<const QatLayer&>(*body->child("3"));
  const LoweredLayer l3 = lower_layer(strided, strided.input_quant->qparams(), strided.output_quant().qparams());
  EXPECT_EQ(l3.conv.stride_h, 2);
  EXPECT_EQ(l3.conv.stride_w, 2);
  EXPECT_EQ(l3.conv.pad_h, 1);
  EXPECT_EQ(l3.conv.groups, 1);
}

// The clamp bounds on an explicit output grid where they are not the grid's ends.
TEST(LowerLayer, ReluClampsAtTheZeroPointAndRelu6AtTheCodeOfSix) {
  Rng rng(13);
  ModulePtr body;
  const auto model = observed_model(rng, body);
  QParams out;
  out.scale = {0.1f};
  out.zero_point = {-100};
  const auto& relu_layer = static_cast<const QatLayer&>(*body->child("0"));
  const auto& relu6_layer = static_cast<const QatLayer&>(*body->child("3"));
  const auto& plain = static_cast<const QatLayer&>(*body->child("6"));
  ASSERT_EQ(relu_layer.activation(), FusedActivation::ReLU);
  ASSERT_EQ(relu6_layer.activation(), FusedActivation::ReLU6);
  const LoweredLayer a = lower_layer(relu_layer, relu_layer.input_quant->qparams(), out);
  EXPECT_EQ(a.conv.quantized_activation_min, -100);
  EXPECT_EQ(a.conv.quantized_activation_max, 127);
  const LoweredLayer b = lower_layer(relu6_layer, relu6_layer.input_quant->qparams(), out);
  EXPECT_EQ(b.conv.quantized_activation_min, -100);
  EXPECT_EQ(b.conv.quantized_activation_max, -40);  // -100 + 6.0 / 0.1
  EXPECT_EQ(b.conv.quantized_activation_max, quantize_value(6.0f, 1.0f / 0.1f, -100, -128, 127));
  const LoweredLayer c = lower_layer(plain, plain.input_quant->qparams(), out);
  EXPECT_EQ(c.fc.quantized_activation_min, -128);
  EXPECT_EQ(c.fc.quantized_activation_max, 127);
  // activation_clamp on its own: 6.0 beyond the grid leaves the top code.
  QParams narrow;
  narrow.scale = {0.01f};
  narrow.zero_point = {0};
  EXPECT_EQ(activation_clamp(narrow, FusedActivation::ReLU6), (std::pair<int32_t, int32_t>{0, 127}));
  EXPECT_EQ(activation_clamp(narrow, FusedActivation::None), (std::pair<int32_t, int32_t>{-128, 127}));
}

template <class Fn>
::testing::AssertionResult invalid_one_line(Fn fn, const std::vector<std::string>& parts) {
  const auto r = test::throws_with(fn, parts);
  if (!r) return r;
  try {
    fn();
  } catch (const std::exception& e) {
    if (std::string(e.what()).find('\n') != std::string::npos)
      return ::testing::AssertionFailure() << "multi-line message: " << e.what();
  }
  return ::testing::AssertionSuccess();
}

TEST(LowerLayer, RejectsUnsignedActivationGrids) {
  Rng rng(14);
  ModulePtr body;
  const auto model = observed_model(rng, body);
  const auto& layer = static_cast<const QatLayer&>(*body->child("0"));
  QParams u8;
  u8.scale = {0.05f};
  u8.zero_point = {0};
  u8.quant_min = 0;
  u8.quant_max = 255;
  const QParams good = layer.output_quant().qparams();
  EXPECT_TRUE(invalid_one_line([&] { lower_layer(layer, u8, good); }, {"input", "[0, 255]", "signed"}));
  EXPECT_TRUE(invalid_one_line([&] { lower_layer(layer, good, u8); }, {"output", "[0, 255]", "signed"}));
  QParams per_channel = good;
  per_channel.axis = 1;
  EXPECT_TRUE(invalid_one_line([&] { lower_layer(layer, per_channel, good); }, {"per tensor"}));
}

// A layer whose weight quantizer uses `scheme`, after one batch.
std::shared_ptr<QatLayer> linear_with_weight_scheme(const QScheme& scheme, Rng& rng, bool positive_weights) {
  Linear lin(4, 3, true, rng);
  if (positive_weights)
    for (int64_t i = 0; i < lin.weight.numel(); ++i) lin.weight.data()[i] = std::abs(lin.weight.data()[i]) + 0.01f;
  const auto layer = QatLayer::from_linear(lin, nullptr, FusedActivation::None, weight_fq(3, scheme), output_fq());
  layer->input_quant = output_fq();
  layer->train();
  NoGradGuard no_grad;
  const Tensor x = random_input({2, 4}, rng);
  (*layer->input_quant)(x);
  layer->forward(x);
  layer->eval();
  return layer;
}

TEST(LowerLayer, RejectsNonSymmetricWeights) {
  Rng rng(15);
  // Symmetric but full range: codes [-128, 127].
  auto wide = linear_with_weight_scheme(QScheme{8, true, true, true, 0, false}, rng, false);
  EXPECT_TRUE(invalid_one_line([&] { lower_layer(*wide, wide->input_quant->qparams(), wide->output_quant().qparams()); },
                               {"weights", "symmetric", "[-128, 127]"}));
  // Affine: codes [-128, 127] too.
  auto affine = linear_with_weight_scheme(QScheme{8, true, false, true, 0, false}, rng, false);
  EXPECT_TRUE(invalid_one_line(
      [&] { lower_layer(*affine, affine->input_quant->qparams(), affine->output_quant().qparams()); }, {"weights"}));
  // Affine narrow range with all-positive weights: codes [-127, 127] but a non-zero zero point.
  auto shifted = linear_with_weight_scheme(QScheme{8, true, false, true, 0, true}, rng, true);
  ASSERT_NE(shifted->weight_quant().qparams().zero_point[0], 0);
  EXPECT_TRUE(invalid_one_line(
      [&] { lower_layer(*shifted, shifted->input_quant->qparams(), shifted->output_quant().qparams()); },
      {"zero point", "symmetric"}));
  // The default (symmetric, narrow) scheme lowers.
  auto ok = linear_with_weight_scheme(QConfig{}.weight.scheme, rng, false);
  EXPECT_NO_THROW(lower_layer(*ok, ok->input_quant->qparams(), ok->output_quant().qparams()));
}

// ------------------------------------------------------------------------------- state-dict round trip

void train_steps(const std::shared_ptr<QatModel>& model, Rng& rng, int steps) {
  std::vector<ParamRef> params;
  for (auto& [name, t] : model->named_parameters()) params.push_back({name, t, true});
  SGD opt(params, SgdOptions{0.05f, 0.9f});
  model->train();
  for (int s = 0; s < steps; ++s) {
    const Tensor x = random_input({8, 1, 28, 28}, rng);
    std::vector<int32_t> labels(8);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(10));
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), labels);
    loss.backward();
    opt.step();
  }
  model->eval();
}

class StateDictRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(StateDictRoundTrip, LoadedModelEvaluatesAndConvertsIdentically) {
  const std::string name = GetParam();
  const QConfig qc = QConfig::from_options(4, 6, true, "minmax", "ema", {});
  Rng r1(100), r2(200);
  const auto trained = prepare_qat(make_model(name, ModelSpec{}, r1), qc);
  const auto fresh = prepare_qat(make_model(name, ModelSpec{}, r2), qc);
  Rng rng(1);
  train_steps(trained, rng, 3);

  const NamedTensors state = trained->state_dict();
  fresh->load_state_dict(std::map<std::string, Tensor>(state.begin(), state.end()));
  fresh->eval();

  const Tensor x = random_input({5, 1, 28, 28}, rng);
  {
    NoGradGuard no_grad;
    EXPECT_EQ(fresh->forward(x).to_vector(), trained->forward(x).to_vector());
    set_exact_mode(*trained, true);
    set_exact_mode(*fresh, true);
    EXPECT_EQ(fresh->forward(x).to_vector(), trained->forward(x).to_vector()) << "exact mode";
    set_exact_mode(*trained, false);
    set_exact_mode(*fresh, false);
  }
  const Int8Graph a = convert(*trained, {1, 28, 28}), b = convert(*fresh, {1, 28, 28});
  ASSERT_EQ(a.ops.size(), b.ops.size());
  int layers = 0;
  for (size_t i = 0; i < a.ops.size(); ++i) {
    const Int8Op &p = a.ops[i], &q = b.ops[i];
    ASSERT_EQ(p.kind, q.kind) << i;
    EXPECT_EQ(p.name, q.name) << i;
    EXPECT_EQ(p.grid.scale, q.grid.scale) << i;
    EXPECT_EQ(p.grid.zero_point, q.grid.zero_point) << i;
    if (p.kind != Int8OpKind::Conv2d && p.kind != Int8OpKind::FullyConnected) continue;
    ++layers;
    EXPECT_EQ(p.layer.weight_codes(), q.layer.weight_codes()) << i;
    EXPECT_FALSE(p.layer.weight_codes().empty()) << i;
    EXPECT_EQ(p.layer.bias, q.layer.bias) << i;
    EXPECT_EQ(p.layer.conv.output_multiplier, q.layer.conv.output_multiplier) << i;
    EXPECT_EQ(p.layer.conv.output_shift, q.layer.conv.output_shift) << i;
    EXPECT_EQ(p.layer.fc.output_multiplier, q.layer.fc.output_multiplier) << i;
    EXPECT_EQ(p.layer.fc.output_shift, q.layer.fc.output_shift) << i;
    EXPECT_EQ(p.layer.input.scale, q.layer.input.scale) << i;
    EXPECT_EQ(p.layer.output.zero_point, q.layer.output.zero_point) << i;
  }
  EXPECT_EQ(layers, name == "lenet5" ? 5 : 2);
  Shape shape;
  EXPECT_EQ(a.run_codes(x, &shape, KernelPath::Reference), b.run_codes(x, &shape, KernelPath::Reference));
}

INSTANTIATE_TEST_SUITE_P(Zoo, StateDictRoundTrip, ::testing::Values("lenet5", "mlp"));

}  // namespace
}  // namespace qatlab
