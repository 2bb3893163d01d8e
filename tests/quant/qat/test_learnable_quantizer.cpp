// test_learnable_quantizer.cpp: the LSQ, LSQ+ and PACT ops and modules: forward bit-identical to
// fake_quantize, the published gradients (by hand and by finite differences where they apply),
// initialisation, projection, training, checkpoints and errors.
#include "quant/qat/learnable_quantizer.h"

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/optim.h"
#include "nn/train/chunked_step.h"
#include "quant/engine/requantize.h"
#include "quant/qat/observer.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_away_from;
using test::random_tensor;
using test::throws_with;

// Schemes: {bits, signed, symmetric, per_channel, axis, narrow}.
const QScheme kAct8{8, true, false, false, 0, false};      // affine int8 [-128, 127]
const QScheme kAct3{3, true, false, false, 0, false};      // affine [-4, 3]
const QScheme kWeight8{8, true, true, false, 0, true};     // symmetric narrow [-127, 127]
const QScheme kWeight4PerChannel{4, true, true, true, 0, true};  // [-7, 7], axis 0

using test::as_map;
using test::bit_equal;
using test::same_bits;

// Loads the given values into a module's state (the remaining entries keep their current values).
void set_state(Module& m, const std::map<std::string, std::vector<float>>& values) {
  std::map<std::string, Tensor> state = as_map(m.state_dict());
  for (const auto& [name, v] : values) {
    ASSERT_TRUE(state.count(name)) << name;
    state[name] = Tensor::from_vector(state[name].shape(), v);
  }
  m.load_state_dict(state);
}

// Every output is a grid point: y == s * (k - zp) for an integer code k in [qmin, qmax].
::testing::AssertionResult on_grid(const Tensor& y, const QParams& qp, int64_t inner = 0) {
  const int64_t C = static_cast<int64_t>(qp.scale.size());
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int64_t c = C == 1 ? 0 : (i / inner) % C;
    const float s = qp.scale[c];
    const int32_t zp = qp.zero_point[c];
    const float k = std::nearbyint(y.data()[i] / s) + static_cast<float>(zp);
    if (k < qp.quant_min || k > qp.quant_max || !bit_equal(s * (k - static_cast<float>(zp)), y.data()[i]))
      return ::testing::AssertionFailure() << "element " << i << " = " << y.data()[i] << " is not a code of scale " << s
                                           << ", zero point " << zp;
  }
  return ::testing::AssertionSuccess();
}

// The gradient of `param` after y.backward(seed), as a vector.
std::vector<float> grad_of(const Tensor& param) { return param.has_grad() ? param.grad().to_vector() : std::vector<float>(); }

// ------------------------------------------------------------------------------- forward == fake_quantize

TEST(LearnableForward, EveryQuantizerIsFakeQuantizeOfItsQparamsBitForBit) {
  Rng rng(7);
  const QScheme act4{4, true, false, false, 0, false};
  const QScheme act_channels{8, true, false, true, 1, false};  // per channel along axis 1
  struct Case {
    std::string method;
    QScheme scheme;
    int64_t channels;
  };
  for (const Case& k : std::vector<Case>{{"lsq", kWeight8, 1},
                                         {"lsq", kWeight4PerChannel, 6},
                                         {"lsq", kAct8, 1},
                                         {"lsq+", kAct8, 1},
                                         {"lsq+", act4, 1},
                                         {"pact", kAct8, 1},
                                         {"pact", act4, 1},
                                         {"lsq+", act_channels, 6},
                                         {"pact", act_channels, 6}}) {
    SCOPED_TRACE(k.method + " " + k.scheme.describe());
    auto q = make_learnable_quantizer(parse_quantizer_method(k.method), k.scheme, k.channels);
    // Axis 0 (weights) or 1 (activations) holds the 6 channels.
    const Shape shape = k.scheme.per_channel && k.scheme.axis == 0 ? Shape{6, 3, 5} : Shape{4, 6, 5};
    const Tensor first = random_tensor(shape, rng, -1.0f, 3.0f);
    q->train();
    (void)q->forward(first);  // initialises
    // Move the learned parameters away from their initial values so that the test is not only of the init.
    for (auto& [name, p] : q->named_parameters())
      for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] *= (name == "offset" ? 0.8f : 1.3f);
    for (bool training : {true, false}) {
      q->set_training(training);
      const Tensor x = random_tensor(shape, rng, -5.0f, 5.0f);
      const Tensor y = q->forward(x);
      const QParams qp = q->qparams();
      EXPECT_TRUE(same_bits(y, fake_quantize(x, qp)));
      const int64_t inner = !qp.per_channel() ? 0 : (qp.axis == 0 ? 15 : 5);
      EXPECT_TRUE(on_grid(y, qp, inner));
    }
  }
}

TEST(LearnableForward, ZeroIsExactAndCodesComeFromQuantizeValue) {
  // Real 0 maps to the zero point and back to 0 exactly, for every method: the property zero padding,
  // ReLU folding and max pooling of the integer graph rely on.
  Rng rng(3);
  for (const std::string method : {"lsq", "lsq+", "pact"}) {
    auto q = make_learnable_quantizer(parse_quantizer_method(method), kAct8, 1);
    q->train();
    (void)q->forward(random_tensor({64}, rng, -0.5f, 2.0f));
    const Tensor zeros = Tensor::zeros({8});
    EXPECT_EQ(q->forward(zeros).to_vector(), std::vector<float>(8, 0.0f)) << method;
    const QParams qp = q->qparams();
    const Tensor x = random_tensor({200}, rng, -3.0f, 3.0f);
    const Tensor y = q->forward(x);
    const float inv = 1.0f / qp.scale[0];
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int32_t code = quantize_value(x.data()[i], inv, qp.zero_point[0], qp.quant_min, qp.quant_max);
      ASSERT_TRUE(bit_equal(y.data()[i], qp.scale[0] * static_cast<float>(code - qp.zero_point[0]))) << method << " " << i;
    }
  }
}

// -------------------------------------------------------------------------------------- LSQ gradients

TEST(LsqGradient, ScaleGradientIsThePublishedSumWithGradientScale) {
  // 3-bit affine grid [-4, 3], s = 0.5 (1 / s = 2 exactly), zero point 0 set through the state dict.
  LsqQuantizer q(kAct3);
  set_state(q, {{"scale", {0.5f}}, {"zero_point", {0.0f}}, {"initialized", {1.0f}}});
  q.train();
  const std::vector<float> xv = {0.3f, -0.8f, 5.0f, -3.0f, 1.6f};
  const std::vector<float> seed = {1.0f, 2.0f, -1.0f, 0.5f, 3.0f};
  Tensor x = Tensor::from_vector({5}, xv);
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.5f, -1.0f, 1.5f, -2.0f, 1.5f}));
  y.backward(Tensor::from_vector({5}, seed));
  // By hand, v = x / s:  0.6 -> r 1 inside: r - v = 0.4;  -1.6 -> -2 inside: -0.4;  10 -> above: qmax - zp = 3;
  // -6 -> below: qmin - zp = -4;  3.2 -> 3 inside: -0.2. Weighted by the seed, with v as float computes it.
  double sum = 0.0;
  const double inside_term[5] = {1.0 - double(0.3f * 2.0f), -2.0 - double(-0.8f * 2.0f), 3.0, -4.0, 3.0 - double(1.6f * 2.0f)};
  for (int i = 0; i < 5; ++i) sum += seed[i] * inside_term[i];
  EXPECT_NEAR(sum, -6.0, 1e-6);  // 0.4 - 0.8 - 3 - 2 - 0.6
  // g = 1 / sqrt(N * Qp), N = 5 elements share the scale, Qp = qmax - zp = 3.
  const double g = 1.0 / std::sqrt(5.0 * 3.0);
  ASSERT_EQ(grad_of(q.scale()).size(), 1u);
  EXPECT_NEAR(grad_of(q.scale())[0], sum * g, 1e-6);
  // The straight-through mask for x: the seed inside, 0 above and below.
  EXPECT_EQ(grad_of(x), (std::vector<float>{1.0f, 2.0f, 0.0f, 0.0f, 3.0f}));
}

// On a mid-rise grid (2 bits: odd codes [-3, 3], s half a level) the same sum with r the nearest odd code:
// 0 goes to +s, and Qp = qmax = 3.
TEST(LsqGradient, MidRiseGridUsesTheOddCodesInTheSameFormula) {
  QScheme mid{2, true, true, false, 0, false};
  mid.mid_rise = true;
  LsqQuantizer q(mid);
  set_state(q, {{"scale", {0.5f}}, {"zero_point", {0.0f}}, {"initialized", {1.0f}}});
  q.train();
  const std::vector<float> xv = {0.3f, -0.8f, 5.0f, -3.0f, 1.6f, 0.0f};
  const std::vector<float> seed = {1.0f, 2.0f, -1.0f, 0.5f, 3.0f, 1.0f};
  Tensor x = Tensor::from_vector({6}, xv);
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.5f, -0.5f, 1.5f, -1.5f, 1.5f, 0.5f}));
  EXPECT_TRUE(q.qparams().odd_codes);
  y.backward(Tensor::from_vector({6}, seed));
  // v = x / s: 0.6 -> r 1 inside: 0.4;  -1.6 -> -1 inside: 0.6;  10 -> above: 3;  -6 -> below: -3;
  // 3.2 -> 3 inside: -0.2;  0 -> 1 inside: 1.
  const double inside[6] = {1.0 - double(0.3f * 2.0f), -1.0 - double(-0.8f * 2.0f), 3.0, -3.0,
                            3.0 - double(1.6f * 2.0f), 1.0};
  double sum = 0.0;
  for (int i = 0; i < 6; ++i) sum += seed[i] * inside[i];
  EXPECT_NEAR(sum, -2.5, 1e-6);
  ASSERT_EQ(grad_of(q.scale()).size(), 1u);
  EXPECT_NEAR(grad_of(q.scale())[0], sum / std::sqrt(6.0 * 3.0), 1e-6);
  EXPECT_EQ(grad_of(x), (std::vector<float>{1.0f, 2.0f, 0.0f, 0.0f, 3.0f, 1.0f}));
}

TEST(LsqGradient, NonZeroZeroPointShiftsTheClampedTermsAndQp) {
  // Grid [-4, 3] with zero point 2: offsets r in [-6, 1], Qp = qmax - zp = 1.
  LsqQuantizer q(kAct3);
  set_state(q, {{"scale", {0.5f}}, {"zero_point", {2.0f}}, {"initialized", {1.0f}}});
  q.train();
  Tensor x = Tensor::from_vector({4}, {0.3f, 1.2f, -3.1f, -3.3f});
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  const std::vector<float> seed = {1.0f, -2.0f, 0.5f, 4.0f};
  y.backward(Tensor::from_vector({4}, seed));
  // 0.6 -> 1 inside (1 - 0.6); 2.4 -> 2 above: hi = 1; -6.2 -> -6 inside (-6 + 6.2); -6.6 -> -7 below: lo = -6.
  const double terms[4] = {1.0 - double(0.3f * 2.0f), 1.0, -6.0 - double(-3.1f * 2.0f), -6.0};
  double sum = 0.0;
  for (int i = 0; i < 4; ++i) sum += seed[i] * terms[i];
  EXPECT_NEAR(grad_of(q.scale())[0], sum / std::sqrt(4.0 * 1.0), 1e-6);
  EXPECT_EQ(grad_of(x), (std::vector<float>{1.0f, 0.0f, 0.5f, 0.0f}));
  EXPECT_EQ(q.positive_levels(2), 1);
  EXPECT_EQ(q.positive_levels(3), 7);  // no positive code left: the negative side counts (zp - qmin)
}

// A plain reference of the LSQ op for (outer, C, inner) data: values and both gradients, nested loops.
struct LsqReference {
  std::vector<float> y, gx;
  std::vector<double> gs;
};
LsqReference lsq_reference(const std::vector<float>& x, const std::vector<float>& seed, int64_t outer, int64_t C,
                           int64_t inner, const std::vector<float>& s, const std::vector<int32_t>& zp, int32_t qmin,
                           int32_t qmax, const std::vector<float>& g) {
  LsqReference ref;
  ref.y.resize(x.size());
  ref.gx.assign(x.size(), 0.0f);
  ref.gs.assign(static_cast<size_t>(C), 0.0);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < inner; ++k) {
        const int64_t i = (o * C + c) * inner + k;
        const float inv = 1.0f / s[c];
        const float v = x[i] * inv;
        const float r = std::nearbyint(v);
        const float q = std::min(std::max(r + zp[c], static_cast<float>(qmin)), static_cast<float>(qmax));
        ref.y[i] = s[c] * (q - static_cast<float>(zp[c]));
        if (r + zp[c] < qmin) {
          ref.gs[c] += seed[i] * double(qmin - zp[c]) * g[c];
        } else if (r + zp[c] > qmax) {
          ref.gs[c] += seed[i] * double(qmax - zp[c]) * g[c];
        } else {
          ref.gx[i] = seed[i];
          ref.gs[c] += seed[i] * (double(r) - v) * g[c];
        }
      }
  return ref;
}

TEST(LsqGradient, PerChannelOnEveryAxisMatchesTheReference) {
  Rng rng(11);
  const Shape shape = {2, 3, 4, 2};
  for (int axis : {0, 1, 3}) {
    SCOPED_TRACE("axis " + std::to_string(axis));
    const QScheme scheme{4, true, false, true, axis, false};  // affine [-8, 7] per channel
    const int64_t C = shape[axis];
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; ++d) outer *= shape[d];
    for (int d = axis + 1; d < 4; ++d) inner *= shape[d];
    std::vector<float> s(C), g(C);
    std::vector<int32_t> zp(C);
    for (int64_t c = 0; c < C; ++c) {
      s[c] = 0.05f + 0.1f * static_cast<float>(c);
      zp[c] = static_cast<int32_t>(c) - 2;
      g[c] = 0.3f + static_cast<float>(c);
    }
    Tensor x = random_tensor(shape, rng, -1.5f, 1.5f);
    x.set_requires_grad(true);
    Tensor scale = Tensor::from_vector({C}, s);
    scale.set_requires_grad(true);
    Tensor y = lsq_fake_quantize(x, scale, zp, scheme, g);
    const Tensor seed = random_tensor(shape, rng);
    y.backward(seed);
    const LsqReference ref = lsq_reference(x.to_vector(), seed.to_vector(), outer, C, inner, s, zp, scheme.quant_min(),
                                           scheme.quant_max(), g);
    EXPECT_EQ(y.to_vector(), ref.y);
    EXPECT_EQ(x.grad().to_vector(), ref.gx);
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(scale.grad().data()[c], ref.gs[c], 1e-5) << "channel " << c;
  }
}

TEST(LsqGradient, ModulePerChannelUsesTheElementsPerChannelInItsGradientScale) {
  // (OC = 3, 4) weights, per channel along axis 0: N = 4 elements share each scale, Qp = 7.
  LsqQuantizer q(kWeight4PerChannel, 3);
  set_state(q, {{"scale", {0.1f, 0.2f, 0.4f}}, {"zero_point", {0, 0, 0}}, {"initialized", {1.0f}}});
  q.train();
  Rng rng(5);
  Tensor x = random_tensor({3, 4}, rng, -2.0f, 2.0f);
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  const Tensor seed = random_tensor({3, 4}, rng);
  y.backward(seed);
  const std::vector<float> g(3, static_cast<float>(1.0 / std::sqrt(4.0 * 7.0)));
  const LsqReference ref =
      lsq_reference(x.to_vector(), seed.to_vector(), 1, 3, 4, {0.1f, 0.2f, 0.4f}, {0, 0, 0}, -7, 7, g);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(q.scale().grad().data()[c], ref.gs[c], 1e-6) << c;
  EXPECT_EQ(x.grad().to_vector(), ref.gx);
}

TEST(LsqGradient, TheLayersCountInTheGradientScaleMakesPerChannelStepsSqrtCSlower) {
  // LsqGradScale::Layer: N = 12 (the whole (3, 4) tensor) where the channel's count is 4; the gradient to
  // x is the same. Per tensor the two are one N and agree bit for bit.
  Rng rng(7);
  const Tensor x0 = random_tensor({3, 4}, rng, -2.0f, 2.0f), seed = random_tensor({3, 4}, rng);
  for (const bool per_channel : {true, false}) {
    QScheme scheme = kWeight4PerChannel;
    scheme.per_channel = per_channel;
    const int64_t channels = per_channel ? 3 : 1;
    std::vector<std::vector<float>> gs, gx;
    for (const LsqGradScale n : {LsqGradScale::Channel, LsqGradScale::Layer}) {
      LsqQuantizer q(scheme, channels, LsqInit::Lsq, n);
      EXPECT_EQ(q.grad_scale(), n);
      const std::vector<float> scale = per_channel ? std::vector<float>{0.1f, 0.2f, 0.4f} : std::vector<float>{0.2f};
      set_state(q, {{"scale", scale}, {"zero_point", std::vector<float>(scale.size(), 0.0f)}, {"initialized", {1.0f}}});
      q.train();
      Tensor x = x0.clone();
      x.set_requires_grad(true);
      q.forward(x).backward(seed);
      gs.push_back(q.scale().grad().to_vector());
      gx.push_back(x.grad().to_vector());
    }
    EXPECT_EQ(gx[1], gx[0]);
    for (size_t c = 0; c < gs[0].size(); ++c) {
      if (per_channel)
        EXPECT_NEAR(gs[1][c], gs[0][c] / std::sqrt(3.0f), 1e-6) << c;
      else
        EXPECT_EQ(gs[1][c], gs[0][c]);
    }
  }
  EXPECT_NE(LsqQuantizer(kWeight4PerChannel, 3, LsqInit::Mse, LsqGradScale::Layer).describe().find("gradient scale per layer"),
            std::string::npos);
}

TEST(LsqGradient, InputFactorsScaleEachChannelsStepGradientByTheirSquare) {
  // x = W * f per output channel (a folded weight): the step learns as a step on W would, its gradient
  // times f^2; the sign of f does not matter; the gradient to x is unchanged.
  const std::vector<float> f{0.5f, 2.0f, -1.5f};
  Rng rng(6);
  const Tensor x0 = random_tensor({3, 4}, rng, -2.0f, 2.0f), seed = random_tensor({3, 4}, rng);
  std::vector<float> plain_gs, plain_gx;
  for (const bool with_factors : {false, true}) {
    LsqQuantizer q(kWeight4PerChannel, 3);
    set_state(q, {{"scale", {0.1f, 0.2f, 0.4f}}, {"zero_point", {0, 0, 0}}, {"initialized", {1.0f}}});
    q.train();
    if (with_factors) q.set_input_factors(f.data(), f.size());
    Tensor x = x0.clone();
    x.set_requires_grad(true);
    q.forward(x).backward(seed);
    if (!with_factors) {
      plain_gs = q.scale().grad().to_vector();
      plain_gx = x.grad().to_vector();
      continue;
    }
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(q.scale().grad().data()[c], plain_gs[c] * f[c] * f[c], 1e-6) << c;
    EXPECT_EQ(x.grad().to_vector(), plain_gx);
  }
}

TEST(LsqGradient, OneStepOverFactoredChannelsTakesTheMedianSquare) {
  // A per-tensor step on per-channel factors: the median of f^2 (odd count: the middle one; even: the
  // mean of the middle two), whatever an outlying factor is.
  for (const auto& [f, median_sq] : {std::pair{std::vector<float>{3.0f, 0.5f, 100.0f}, 9.0},
                                     std::pair{std::vector<float>{1.0f, -2.0f, 3.0f, 1e-3f}, 2.5}}) {
    std::vector<float> gs;
    for (const bool with_factors : {false, true}) {
      LsqQuantizer q(kWeight8, 1);
      set_state(q, {{"scale", {0.05f}}, {"zero_point", {0}}, {"initialized", {1.0f}}});
      q.train();
      if (with_factors) q.set_input_factors(f.data(), f.size());
      Rng rng(8);
      const Tensor x = random_tensor({static_cast<int64_t>(f.size()), 5}, rng, -8.0f, 8.0f);
      q.forward(x).backward(Tensor::ones(x.shape()));
      gs.push_back(q.scale().grad().data()[0]);
    }
    EXPECT_NEAR(gs[1], gs[0] * median_sq, 1e-5 * std::abs(gs[0] * median_sq)) << f.size();
  }
}

TEST(LsqErrors, InputFactorsMustBeFiniteAndOnePerChannel) {
  LsqQuantizer q(kWeight4PerChannel, 3);
  const std::vector<float> nan_factor{1.0f, NAN, 1.0f}, two{1.0f, 2.0f};
  EXPECT_TRUE(throws_with([&] { q.set_input_factors(nan_factor.data(), 3); }, {"input factor [1] = nan"}));
  EXPECT_TRUE(throws_with([&] { q.set_input_factors(two.data(), 2); }, {"2 input factors for 3 channels"}));
  q.set_input_factors(nullptr, 0);  // none: the parameter itself
}

// --------------------------------------------------------------------- finite differences, where they apply
//
// Inside the code range the forward s * round(x / s) is piecewise constant in x and piecewise linear in s
// with slope round(x / s): finite differences measure that, while LSQ's published gradient is
// round(x / s) - x / s (round's derivative taken as 1, the straight-through estimator), and the x gradient
// is 1 where the forward is flat. Those terms are checked by hand above; they are no derivative of the
// forward. On the clamped sides the forward is exactly s * (qmin - zp) or s * (qmax - zp), linear in s
// and constant in x, and there finite differences must agree with the analytic gradient. The checks
// below pass grad_scale = 1, since the gradient scale is a deliberate rescaling, not part of the forward.

TEST(LearnableGradcheck, LsqScaleOnTheClampedSides) {
  Rng rng(21);
  // |x / s| >= 10 codes beyond a [-4, 3] grid for every s within eps of 0.5: all clamped.
  const Tensor x = random_away_from({12}, rng, {0.0f}, 6.0f, -12.0f, 12.0f);
  const std::vector<int32_t> zp = {1};
  EXPECT_GRADS_OK([&](const std::vector<Tensor>& in) { return lsq_fake_quantize(in[0], in[1], zp, kAct3, {1.0f}); },
                  {x, Tensor::from_vector({1}, {0.5f})});
  // Per channel, along axis 1 of (2, 3, 4).
  const QScheme scheme{3, true, false, true, 1, false};
  const Tensor xc = random_away_from({2, 3, 4}, rng, {0.0f}, 8.0f, -14.0f, 14.0f);
  const std::vector<int32_t> zps = {0, -1, 2};
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) { return lsq_fake_quantize(in[0], in[1], zps, scheme, {1.0f, 1.0f, 1.0f}); },
      {xc, Tensor::from_vector({3}, {0.5f, 0.3f, 0.7f})});
}

TEST(LearnableGradcheck, LsqMidRiseScaleOnTheClampedSides) {
  Rng rng(22);
  QScheme mid{3, true, true, true, 0, false};  // odd codes [-7, 7] per channel along axis 0
  mid.mid_rise = true;
  const Tensor x = random_away_from({3, 5}, rng, {0.0f}, 6.0f, -12.0f, 12.0f);  // |x / s| > 8 for s near 0.5
  EXPECT_GRADS_OK([&](const std::vector<Tensor>& in) {
    return lsq_fake_quantize(in[0], in[1], {0, 0, 0}, mid, {1.0f, 1.0f, 1.0f});
  }, {x, Tensor::from_vector({3}, {0.5f, 0.4f, 0.6f})});
}

TEST(LearnableGradcheck, LsqPlusScaleOnTheClampedSidesWithZeroOffset) {
  // LSQ+ holds beta (not the zero point) fixed when s moves, so the clamped output s * qmin + beta has slope
  // qmin. The realised grid has beta_eff = -s * zp; with beta = 0 the zero point is 0 for every s and
  // beta_eff = beta exactly, so finite differences see that very slope. (For beta != 0 the realised zero
  // point is held by the rounding and the forward's local slope is qmin - zp: the published gradient passes
  // straight through that rounding, checked by hand in LsqPlusGradient.)
  Rng rng(22);
  const Tensor x = random_away_from({12}, rng, {0.0f}, 6.0f, -12.0f, 12.0f);
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) { return lsq_plus_fake_quantize(in[0], in[1], in[2], kAct3, {1.0f}); },
      {x, Tensor::from_vector({1}, {0.5f}), Tensor::from_vector({1}, {0.0f})}, test::GradCheckOptions{.constants = {2}});
}

TEST(LearnableGradcheck, LsqPlusOffsetOverOneGridStep) {
  // The offset acts through zp = round(-beta / s), a step function of beta: an infinitesimal difference
  // sees 0. Over one whole grid step, though (2 * eps = s), the zero point moves by exactly one code, the
  // realised offset by exactly s, and the secant slope is what the straight-through gradient promises: 1 on
  // the clamped sides, 0 inside (values at least a code away from the clamps keep their real value).
  // beta = -0.95, s = 0.5: -beta / s = 1.9 (zp 2), and beta +- 0.25 give 1.4 (zp 1) and 2.4 (zp 2).
  // On the 8-bit grid every value is inside (secant and gradient 0).
  const Tensor x = Tensor::from_vector({8}, {-9.0f, -6.5f, 7.0f, 9.5f, 0.3f, -0.7f, 0.05f, -1.3f});
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) { return lsq_plus_fake_quantize(in[0], in[1], in[2], kAct8, {1.0f}); },
      {x, Tensor::from_vector({1}, {0.5f}), Tensor::from_vector({1}, {-0.95f})},
      test::GradCheckOptions{.eps = 0.25, .constants = {0, 1}});
  // The same on a 3-bit grid [-4, 3], where the first four values are clamped and the rest inside.
  const Tensor x3 = Tensor::from_vector({6}, {-9.0f, -6.5f, 7.0f, 9.5f, 0.3f, -0.7f});
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) { return lsq_plus_fake_quantize(in[0], in[1], in[2], kAct3, {1.0f}); },
      {x3, Tensor::from_vector({1}, {0.5f}), Tensor::from_vector({1}, {-0.95f})},
      test::GradCheckOptions{.eps = 0.25, .constants = {0, 1}});
}

TEST(LearnableGradcheck, PactAlphaOutsideTheClipRange) {
  // Above alpha the output is the clip level itself (slope 1 in alpha), below 0 it is 0: PACT's gradient
  // is exact there. Inside [0, alpha) PACT's published gradient is 0 (the rounding term is left out).
  Rng rng(23);
  std::vector<float> xv;
  for (int i = 0; i < 6; ++i) xv.push_back(rng.uniform(-3.0f, -0.1f));
  for (int i = 0; i < 6; ++i) xv.push_back(rng.uniform(2.2f, 5.0f));
  EXPECT_GRADS_OK([&](const std::vector<Tensor>& in) { return pact_fake_quantize(in[0], in[1], kAct8); },
                  {Tensor::from_vector({12}, xv), Tensor::from_vector({1}, {1.7f})});
}

// --------------------------------------------------------------------------------------- LSQ+ gradients

TEST(LsqPlusGradient, ScaleAndOffsetGradientsByHand) {
  // Grid [-4, 3], s = 0.5, beta = -1 -> zero point 2 (offsets r in [-6, 1]).
  LsqPlusQuantizer q(kAct3);
  set_state(q, {{"scale", {0.5f}}, {"offset", {-1.0f}}, {"initialized", {1.0f}}});
  q.train();
  EXPECT_EQ(q.qparams().zero_point, (std::vector<int32_t>{2}));
  Tensor x = Tensor::from_vector({4}, {0.3f, 1.2f, -3.1f, -3.3f});
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  // Values: beta_eff = -s * zp = beta here; codes 3, 3 (clamped), -4, -4 (clamped).
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.5f, 0.5f, -3.0f, -3.0f}));
  const std::vector<float> seed = {1.0f, -2.0f, 0.5f, 4.0f};
  y.backward(Tensor::from_vector({4}, seed));
  // s: inside r - v, clamped qmin = -4 / qmax = 3; beta: 0 inside, 1 clamped. g = 1 / sqrt(N * (qmax - qmin)).
  const double g = 1.0 / std::sqrt(4.0 * 7.0);
  const double ds = 1.0 * (1.0 - double(0.3f * 2.0f)) - 2.0 * 3.0 + 0.5 * (-6.0 - double(-3.1f * 2.0f)) + 4.0 * -4.0;
  const double db = -2.0 + 4.0;
  EXPECT_NEAR(grad_of(q.scale())[0], ds * g, 1e-6);
  EXPECT_NEAR(grad_of(q.offset())[0], db * g, 1e-6);
  EXPECT_EQ(grad_of(x), (std::vector<float>{1.0f, 0.0f, 0.5f, 0.0f}));
}

TEST(LsqPlusGradient, APinnedZeroPointStopsTheOffsetAndGivesLsqsScaleGradient) {
  // beta = 3, s = 0.5: -beta / s = -6 lies below the grid [-4, 3], so zp is pinned at -4 (a grid [0, 3.5]
  // that keeps real 0). beta_eff = -s * zp = 2 no longer follows beta: no offset gradient, and the clamped
  // outputs s * (qmin - zp), s * (qmax - zp) give the scale LSQ's terms 0 and 7.
  LsqPlusQuantizer q(kAct3);
  set_state(q, {{"scale", {0.5f}}, {"offset", {3.0f}}, {"initialized", {1.0f}}});
  q.train();
  EXPECT_EQ(q.qparams().zero_point, (std::vector<int32_t>{-4}));
  Tensor x = Tensor::from_vector({3}, {0.3f, 5.0f, -1.0f});
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.5f, 3.5f, 0.0f}));
  const std::vector<float> seed = {1.0f, 2.0f, 3.0f};
  y.backward(Tensor::from_vector({3}, seed));
  const double ds = 1.0 * (1.0 - double(0.3f * 2.0f)) + 2.0 * 7.0 + 3.0 * 0.0;
  EXPECT_NEAR(grad_of(q.scale())[0], ds / std::sqrt(3.0 * 7.0), 1e-6);
  EXPECT_EQ(grad_of(q.offset()), (std::vector<float>{0.0f}));
  EXPECT_EQ(grad_of(x), (std::vector<float>{1.0f, 0.0f, 0.0f}));
}

TEST(LsqPlusZeroPoint, IsAlwaysAnIntegerCodeInRange) {
  Rng rng(31);
  for (int bits : {2, 4, 8}) {
    const QScheme scheme{bits, true, false, false, 0, false};
    const int32_t qmin = scheme.quant_min(), qmax = scheme.quant_max();
    for (int trial = 0; trial < 2000; ++trial) {
      const float s = std::exp(rng.uniform(-9.0f, 2.0f));
      // Offsets asking for grids entirely above or below zero too (zero point beyond the code range).
      const float beta = rng.uniform(-1.0f, 1.0f) * s * static_cast<float>(4 * (qmax - qmin));
      const QParams qp = lsq_plus_qparams(Tensor::from_vector({1}, {s}), Tensor::from_vector({1}, {beta}), scheme);
      ASSERT_GE(qp.zero_point[0], qmin);
      ASSERT_LE(qp.zero_point[0], qmax);
      // Real 0 is a code: the zero point.
      EXPECT_EQ(quantize_value(0.0f, 1.0f / qp.scale[0], qp.zero_point[0], qmin, qmax), qp.zero_point[0]);
      // Nearest to -beta / s when that is in range.
      const double z = -static_cast<double>(beta) / s;
      if (z >= qmin && z <= qmax) {
        ASSERT_LE(std::abs(qp.zero_point[0] - z), 0.5 + 1e-9) << s << " " << beta;
      }
    }
    // An offset of -s * z gives back z exactly, for every code z and scales over many octaves.
    for (float s : {1e-7f, 0.0123f, 0.7f, 3.3f})
      for (int32_t z = qmin; z <= qmax; ++z)
        ASSERT_EQ(lsq_plus_zero_point(s, -s * static_cast<float>(z), qmin, qmax), z) << s << " " << z;
  }
  // Extreme offsets clamp instead of overflowing; non-finite ones are rejected.
  EXPECT_EQ(lsq_plus_zero_point(1e-7f, 3e38f, -128, 127), -128);
  EXPECT_EQ(lsq_plus_zero_point(1e-7f, -3e38f, -128, 127), 127);
  EXPECT_TRUE(throws_with([] { lsq_plus_zero_point(0.1f, NAN, -128, 127); }, {"offset", "nan"}));
}

// ------------------------------------------------------------------------------------------------ PACT

TEST(Pact, ClipsToZeroAndAlphaAndPassesThePublishedGradients) {
  PactQuantizer q(kAct8);
  set_state(q, {{"alpha", {2.55f}}, {"initialized", {1.0f}}});
  q.train();
  const QParams qp = q.qparams();
  EXPECT_EQ(qp.zero_point, (std::vector<int32_t>{-128}));
  EXPECT_EQ(qp.scale, (std::vector<float>{static_cast<float>(2.55f / 255.0)}));
  const std::vector<float> xv = {-1.0f, -0.001f, 0.0f, 0.5f, 1.234f, 2.54f, 2.55f, 3.0f, 100.0f};
  Tensor x = Tensor::from_vector({9}, xv);
  x.set_requires_grad(true);
  Tensor y = q.forward(x);
  const float top = qp.scale[0] * 255.0f;  // the clip level as the grid represents it
  EXPECT_NEAR(top, 2.55f, 1e-6f);
  const std::vector<float> out = y.to_vector();
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_NEAR(out[3], 0.5f, qp.scale[0] / 2);
  EXPECT_NEAR(out[4], 1.234f, qp.scale[0] / 2);
  EXPECT_EQ(out[6], top);
  EXPECT_EQ(out[7], top);
  EXPECT_EQ(out[8], top);
  const std::vector<float> seed = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  y.backward(Tensor::from_vector({9}, seed));
  // x: 1 on [0, alpha); alpha: 1 on [alpha, inf).
  EXPECT_EQ(grad_of(x), (std::vector<float>{0, 0, 3, 4, 5, 6, 0, 0, 0}));
  EXPECT_EQ(grad_of(q.alpha()), (std::vector<float>{7 + 8 + 9}));
}

TEST(Pact, L2PenaltyAndItsDecayLossGradient) {
  const QScheme per_channel{8, true, false, true, 1, false};
  PactQuantizer q(per_channel, 3, 0.0f, 0.01);
  set_state(q, {{"alpha", {1.0f, 2.0f, 4.0f}}, {"initialized", {1.0f}}});
  EXPECT_FLOAT_EQ(q.l2_penalty(), 1.0f + 4.0f + 16.0f);
  Tensor loss = q.decay_loss();
  EXPECT_FLOAT_EQ(loss.item(), 0.01f * 21.0f);
  loss.backward();
  const std::vector<float> g = grad_of(q.alpha());
  ASSERT_EQ(g.size(), 3u);
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(g[c], 2.0f * 0.01f * static_cast<float>(1 << c));
}

// ------------------------------------------------------------------------------------- initialisation

TEST(LearnableInit, LsqFormulaPerTensorAndPerChannel) {
  Rng rng(41);
  // Symmetric signed per tensor: zero point 0, s = 2 * mean|x| / sqrt(127).
  {
    LsqQuantizer q(kWeight8);
    const Tensor x = random_tensor({7, 9}, rng, -0.3f, 0.5f);
    q.train();
    (void)q.forward(x);
    double m = 0.0;
    for (float v : x.to_vector()) m += std::abs(v);
    m /= x.numel();
    EXPECT_FLOAT_EQ(q.qparams().scale[0], static_cast<float>(2.0 * m / std::sqrt(127.0)));
    EXPECT_EQ(q.qparams().zero_point[0], 0);
  }
  // Per channel (axis 0 of (3, 8)): each slice its own mean.
  {
    LsqQuantizer q(kWeight4PerChannel, 3);
    Tensor x = random_tensor({3, 8}, rng, -1.0f, 1.0f);
    for (int64_t i = 0; i < 8; ++i) x.data()[16 + i] *= 10.0f;  // channel 2 ten times larger
    q.train();
    (void)q.forward(x);
    const QParams qp = q.qparams();
    ASSERT_EQ(qp.scale.size(), 3u);
    EXPECT_EQ(qp.axis, 0);
    for (int c = 0; c < 3; ++c) {
      double m = 0.0;
      for (int i = 0; i < 8; ++i) m += std::abs(x.data()[c * 8 + i]);
      EXPECT_FLOAT_EQ(qp.scale[c], static_cast<float>(2.0 * (m / 8) / std::sqrt(7.0))) << c;
    }
    EXPECT_GT(qp.scale[2], 5.0f * qp.scale[0]);
  }
  // Affine: the zero point is the MinMax observer's for the batch, Qp = qmax - zp in the formula.
  {
    LsqQuantizer q(kAct8);
    const Tensor x = random_tensor({100}, rng, -0.5f, 3.0f);
    q.train();
    (void)q.forward(x);
    MinMaxObserver obs(kAct8);
    obs.observe(x);
    const int32_t zp = obs.qparams().zero_point[0];
    EXPECT_EQ(q.qparams().zero_point[0], zp);
    double m = 0.0;
    for (float v : x.to_vector()) m += std::abs(v);
    m /= x.numel();
    EXPECT_FLOAT_EQ(q.qparams().scale[0], static_cast<float>(2.0 * m / std::sqrt(127.0 - zp)));
  }
}

TEST(LearnableInit, MinMaxInitIsTheMinMaxGridAndLaterBatchesDoNotReinitialise) {
  Rng rng(42);
  const Tensor x = random_tensor({4, 6, 5}, rng, -0.7f, 2.0f);
  MinMaxObserver obs(kAct8);
  obs.observe(x);
  const QParams expected = obs.qparams();

  LsqQuantizer lsq(kAct8, 1, LsqInit::MinMax);
  LsqPlusQuantizer plus(kAct8);  // init "minmax" by default
  for (Quantizer* q : std::vector<Quantizer*>{&lsq, &plus}) {
    q->train();
    (void)q->forward(x);
    EXPECT_EQ(q->qparams().scale, expected.scale) << q->type();
    EXPECT_EQ(q->qparams().zero_point, expected.zero_point) << q->type();
    // Another batch, of a different range, leaves the grid alone: only the optimizer moves it now.
    (void)q->forward(scale(x, 10.0f));
    EXPECT_EQ(q->qparams().scale, expected.scale) << q->type();
  }
  EXPECT_FLOAT_EQ(plus.offset().data()[0], -expected.scale[0] * static_cast<float>(expected.zero_point[0]));
}

// The squared error sum of x on channel c's grid with step s and zero point z, as the mse init defines it.
double grid_error(const std::vector<float>& x, float s, int32_t z, const QScheme& scheme) {
  double e = 0.0;
  for (float v : x) {
    const double q = std::clamp<double>(std::nearbyint(v / s) + z, scheme.quant_min(), scheme.quant_max());
    e += (v - (q - z) * static_cast<double>(s)) * (v - (q - z) * static_cast<double>(s));
  }
  return e;
}

TEST(LearnableInit, MseInitIsTheCandidateStepOfLeastSquaredError) {
  Rng rng(44);
  // Per channel, 2 and 4 bits: each channel a bell-shaped slice with one outlier, which min/max spends
  // its levels on.
  for (int bits : {2, 4}) {
    const QScheme scheme{bits, true, true, true, 0, true};
    Tensor x = Tensor::zeros({3, 200});
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < 200; ++i) {
        const Tensor u = random_tensor({4}, rng, -1.0f, 1.0f);  // a sum of 4 uniforms: bell-shaped
        float v = 0.0f;
        for (float w : u.to_vector()) v += w;
        x.data()[c * 200 + i] = v * static_cast<float>(c + 1) * (i == 7 ? 3.0f : 1.0f);
      }
    LsqQuantizer mse(scheme, 3, LsqInit::Mse), minmax(scheme, 3, LsqInit::MinMax), paper(scheme, 3, LsqInit::Lsq);
    for (LsqQuantizer* q : {&mse, &minmax, &paper}) q->train(), (void)q->forward(x);
    for (int64_t c = 0; c < 3; ++c) {
      const std::vector<float> slice(x.data() + c * 200, x.data() + (c + 1) * 200);
      const float s_mm = minmax.qparams().scale[c], s = mse.qparams().scale[c];
      EXPECT_EQ(mse.qparams().zero_point[c], 0);
      // One of the candidates s_mm * k / 100, and none of them does better.
      double best = 1e300;
      bool candidate = false;
      for (int k = 1; k <= 100; ++k) {
        const float sk = s_mm * static_cast<float>(k) / 100;
        best = std::min(best, grid_error(slice, sk, 0, scheme));
        candidate = candidate || sk == s;
      }
      EXPECT_TRUE(candidate) << "bits " << bits << " channel " << c << ": " << s << " of " << s_mm;
      EXPECT_LE(grid_error(slice, s, 0, scheme), best * (1 + 1e-9)) << bits << " " << c;
      EXPECT_LT(s, s_mm) << "the outlier is clipped, bits " << bits << " channel " << c;
      EXPECT_LT(grid_error(slice, s, 0, scheme), grid_error(slice, s_mm, 0, scheme));
      EXPECT_LT(grid_error(slice, s, 0, scheme), grid_error(slice, paper.qparams().scale[c], 0, scheme));
    }
  }
  // Affine (post-ReLU-like data): the zero point stays the min/max one, the step shrinks to clip the tail.
  {
    Tensor x = random_tensor({400}, rng, 0.0f, 1.0f);
    for (int64_t i = 0; i < 400; ++i) x.data()[i] = x.data()[i] * x.data()[i] * x.data()[i] * 6.0f;  // long tail
    LsqQuantizer mse(kAct3, 1, LsqInit::Mse), minmax(kAct3, 1, LsqInit::MinMax);
    for (LsqQuantizer* q : {&mse, &minmax}) q->train(), (void)q->forward(x);
    const int32_t z = minmax.qparams().zero_point[0];
    EXPECT_EQ(mse.qparams().zero_point[0], z);
    EXPECT_LT(mse.qparams().scale[0], minmax.qparams().scale[0]);
    EXPECT_LT(grid_error(x.to_vector(), mse.qparams().scale[0], z, kAct3),
              grid_error(x.to_vector(), minmax.qparams().scale[0], z, kAct3));
  }
  // An all-zero channel keeps the smallest valid step, as the observers give it.
  {
    LsqQuantizer q(kWeight4PerChannel, 2, LsqInit::Mse);
    Tensor x = Tensor::zeros({2, 5});
    x.data()[7] = 0.5f;
    q.train();
    (void)q.forward(x);
    EXPECT_EQ(q.qparams().scale[0], static_cast<float>(kMinScale));
    EXPECT_GT(q.qparams().scale[1], 0.0f);
  }
}

TEST(LearnableInit, ChunksOfABatchInitialiseAsTheWholeBatchDoes) {
  Rng rng(45);
  // Values on a 1/64 grid: the chunks' sums of |x| add up exactly, whatever their order.
  Tensor x = random_tensor({8, 3, 5}, rng, -1.0f, 3.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = std::round(x.data()[i] * 64.0f) / 64.0f;
  const std::vector<float> all = x.to_vector();
  const int64_t row = 15;
  for (LsqInit init : {LsqInit::Lsq, LsqInit::MinMax, LsqInit::Mse}) {
    LsqQuantizer whole(kAct3, 1, init), chunked(kAct3, 1, init);
    whole.train();
    (void)whole.forward(x);
    ChunkedStep step(4, 1);
    chunked.train();
    chunked.set_batch_sync(&step);
    step.run(8, 0, {}, [&](int64_t, int64_t begin, int64_t end) {
      const std::vector<float> rows(all.begin() + begin * row, all.begin() + end * row);
      (void)chunked.forward(Tensor::from_vector({end - begin, 3, 5}, rows));
      return ChunkTally{};
    });
    chunked.set_batch_sync(nullptr);
    EXPECT_EQ(chunked.qparams().scale, whole.qparams().scale) << lsq_init_name(init);
    EXPECT_EQ(chunked.qparams().zero_point, whole.qparams().zero_point) << lsq_init_name(init);
  }
}

TEST(LearnableInit, InitNamesParseAndPactTakesNone) {
  for (LsqInit init : {LsqInit::Lsq, LsqInit::MinMax, LsqInit::Mse})
    EXPECT_EQ(parse_lsq_init(lsq_init_name(init)), init);
  EXPECT_TRUE(throws_with([] { parse_lsq_init("median", "--lsq-init"); },
                          {"--lsq-init must be one of lsq, minmax, mse, got 'median'"}));
  EXPECT_TRUE(throws_with([] { make_learnable_quantizer(QuantizerMethod::Pact, kAct8, 1, LsqInit::Mse); },
                          {"is for lsq and lsq+"}));
  auto q = make_learnable_quantizer(QuantizerMethod::Lsq, kAct8, 1, LsqInit::Mse);
  EXPECT_NE(q->describe().find("init=mse"), std::string::npos) << q->describe();
  auto plus = make_learnable_quantizer(QuantizerMethod::LsqPlus, kAct8, 1);
  EXPECT_NE(plus->describe().find("init=minmax"), std::string::npos) << plus->describe();
}

TEST(LearnableInit, PactFromTheFirstBatchMaximumOrAFixedValue) {
  Rng rng(43);
  const Tensor x = random_tensor({50}, rng, -1.0f, 4.0f);
  float mx = -1e9f;
  for (float v : x.to_vector()) mx = std::max(mx, v);
  PactQuantizer from_data(kAct8);
  from_data.train();
  (void)from_data.forward(x);
  EXPECT_EQ(from_data.alpha().data()[0], mx);
  PactQuantizer fixed(kAct8, 1, 6.0f);
  fixed.train();
  (void)fixed.forward(x);
  EXPECT_EQ(fixed.alpha().data()[0], 6.0f);
  // Nothing positive: alpha 1.
  PactQuantizer negative(kAct8);
  negative.train();
  (void)negative.forward(Tensor::full({5}, -2.0f));
  EXPECT_EQ(negative.alpha().data()[0], 1.0f);
  // Per channel along axis 1: each channel's maximum.
  const QScheme per_channel{8, true, false, true, 1, false};
  PactQuantizer pc(per_channel, 2);
  pc.train();
  (void)pc.forward(Tensor::from_vector({2, 2}, {0.5f, 3.0f, 1.5f, -1.0f}));
  EXPECT_EQ(pc.alpha().to_vector(), (std::vector<float>{1.5f, 3.0f}));
}

TEST(LearnableInit, QparamsBeforeInitialisationThrowsAndEvalDoesNotInitialise) {
  Rng rng(44);
  for (const std::string method : {"lsq", "lsq+", "pact"}) {
    auto q = make_learnable_quantizer(parse_quantizer_method(method), kAct8, 1);
    EXPECT_THROW((void)q->qparams(), std::logic_error) << method;
    try {
      (void)q->qparams();
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("first batch"), std::string::npos) << e.what();
    }
    EXPECT_NE(q->describe().find("unset"), std::string::npos) << q->describe();
    q->eval();
    EXPECT_THROW((void)q->forward(random_tensor({4}, rng)), std::logic_error) << method;
    q->train();
    (void)q->forward(random_tensor({4}, rng));
    EXPECT_NO_THROW((void)q->qparams()) << method;
    EXPECT_EQ(q->describe().find("unset"), std::string::npos) << q->describe();
  }
}

TEST(LearnableInit, FirstBatchWithNaNIsRejectedAndLeavesTheModuleUninitialised) {
  LsqQuantizer q(kAct8);
  q.train();
  EXPECT_TRUE(throws_with([&] { (void)q.forward(Tensor::from_vector({3}, {1.0f, NAN, 2.0f})); }, {"NaN"}));
  EXPECT_FALSE(q.initialized());
}

// ----------------------------------------------------------------------------------- projection, errors

TEST(LearnableProjection, ScaleAndAlphaStayPositiveAndFinite) {
  Rng rng(51);
  LsqQuantizer q(kAct8);
  q.train();
  (void)q.forward(random_tensor({16}, rng));
  Tensor s = q.scale();
  s.data()[0] = -0.3f;  // as a big optimizer step could leave it
  q.eval();
  // Evaluation projects without writing.
  EXPECT_EQ(q.qparams().scale[0], static_cast<float>(kMinScale));
  EXPECT_EQ(s.data()[0], -0.3f);
  q.train();
  (void)q.forward(random_tensor({16}, rng));
  EXPECT_EQ(s.data()[0], static_cast<float>(kMinScale));
  s.data()[0] = NAN;
  EXPECT_TRUE(throws_with([&] { (void)q.forward(random_tensor({16}, rng)); }, {"LsqQuantizer", "scale[0]", "nan"}));

  PactQuantizer p(kAct8, 1, 6.0f);
  p.train();
  (void)p.forward(random_tensor({16}, rng));
  Tensor a = p.alpha();
  a.data()[0] = -1.0f;
  (void)p.forward(random_tensor({16}, rng));
  EXPECT_GT(a.data()[0], 0.0f);
  EXPECT_EQ(p.qparams().scale[0], static_cast<float>(kMinScale));
}

// Step bounds (k = 4) keep each channel's step within [max|w_c| / (4 Qp), 15/8 max|w_c|]: a step pushed to
// the floor comes back to the lower bound, one far above its weights to the upper one, one inside stays; the
// bounded step is written back in training, as the kMinScale projection is. Without bounds both stray
// steps stay where they were put (the floor channel at kMinScale). Bad k, and bounds on LSQ+, are refused.
TEST(LearnableProjection, StepBoundsHoldEachChannelsStepToItsWeights) {
  const QScheme w2{2, true, true, true, 0, true};  // [-1, 1] per output channel: Qp = 1
  Tensor w = Tensor::zeros({3, 4});
  const float rows[3][4] = {{0.5f, -2.0f, 1.0f, 0.25f}, {0.1f, 0.3f, -0.2f, 0.0f}, {1.0f, 1.0f, -1.0f, 0.5f}};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 4; ++i) w.data()[c * 4 + i] = rows[c][i];
  for (float k : {0.0f, 4.0f}) {
    LsqQuantizer q(w2, 3, LsqInit::MinMax);
    q.set_step_bounds(k);
    q.train();
    (void)q.forward(w);
    Tensor s = q.scale();
    s.data()[0] = 1e-9f, s.data()[1] = 50.0f, s.data()[2] = 1.7f;
    (void)q.forward(w);
    if (k == 0.0f) {
      EXPECT_EQ(s.data()[0], static_cast<float>(kMinScale));
      EXPECT_EQ(s.data()[1], 50.0f);
    } else {
      EXPECT_EQ(s.data()[0], 2.0f / 4.0f);
      EXPECT_EQ(s.data()[1], 0.3f * 1.875f);
      EXPECT_NE(q.describe().find("step within [min/max step / 4, 15/8 max |x|]"), std::string::npos) << q.describe();
    }
    EXPECT_EQ(s.data()[2], 1.7f);  // the largest weight, 1, is still +-1: 1 / 1.7 rounds to 1
    EXPECT_EQ(q.qparams().scale, (std::vector<float>{s.data()[0], s.data()[1], s.data()[2]}));
  }
  LsqQuantizer q(w2, 3);
  for (float bad : {0.5f, -1.0f, NAN, INFINITY})
    EXPECT_TRUE(throws_with([&] { q.set_step_bounds(bad); }, {"step bounds", "k >= 1"})) << bad;
  LsqPlusQuantizer plus(kAct8);
  EXPECT_TRUE(throws_with([&] { plus.set_step_bounds(4.0f); }, {"symmetric weight grids"}));
  EXPECT_TRUE(throws_with([] { make_learnable_quantizer(QuantizerMethod::Pact, kAct8, 1, std::nullopt,
                                                        LsqGradScale::Channel, 4.0f); },
                          {"step bounds are for LSQ"}));
}

// A mid-rise grid's codes are never 0, so its upper bound is where the largest weight still reaches +-3:
// 15/32 of it. Its "mse" start is the candidate of least error on the odd codes.
TEST(LearnableProjection, MidRiseStepBoundsAndMseInit) {
  QScheme mid{2, true, true, true, 0, false};
  mid.mid_rise = true;
  Tensor w = Tensor::from_vector({2, 4}, {0.5f, -2.0f, 1.0f, 0.25f, 0.1f, 0.3f, -0.2f, 0.0f});
  LsqQuantizer q(mid, 2, LsqInit::MinMax);
  q.set_step_bounds(4.0f);
  q.train();
  (void)q.forward(w);
  EXPECT_EQ(q.scale().to_vector(), (std::vector<float>{2.0f / 3.0f, 0.1f}));  // max |w| / qmax
  Tensor s = q.scale();
  s.data()[0] = 1e-9f, s.data()[1] = 50.0f;
  (void)q.forward(w);
  EXPECT_EQ(s.data()[0], 2.0f / 12.0f);     // min/max step / 4
  EXPECT_EQ(s.data()[1], 0.3f * 0.46875f);  // 15/32 max |w|
  EXPECT_NE(q.describe().find("15/32 max |x|"), std::string::npos) << q.describe();

  Rng rng(5);
  const Tensor x = random_tensor({4, 256}, rng, -1.0f, 1.0f);
  const auto error = [&](const Tensor& y) {
    double e = 0.0;
    for (int64_t i = 0; i < x.numel(); ++i) e += std::pow(double(x.data()[i]) - y.data()[i], 2);
    return e;
  };
  LsqQuantizer mse(mid, 4, LsqInit::Mse), minmax(mid, 4, LsqInit::MinMax);
  mse.train(), minmax.train();
  const Tensor ym = mse.forward(x), yx = minmax.forward(x);
  EXPECT_LT(error(ym), error(yx));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float s = mse.qparams().scale[i / 256];
    const float k = std::nearbyint(ym.data()[i] / s);
    ASSERT_TRUE(bit_equal(ym.data()[i], s * k) && (std::abs(k) == 1.0f || std::abs(k) == 3.0f)) << i << ": " << k;
  }
}

// Without step bounds a mid-rise step is still held to at most max|w_c| (its codes are never 0: above
// that every weight is +-s whatever its size); a step inside stays, and a narrow grid's step is not held.
TEST(LearnableProjection, MidRiseStepStaysAtMostTheLargestWeightWithoutBounds) {
  QScheme mid{4, true, true, true, 0, false};
  mid.mid_rise = true;
  QScheme narrow = mid;
  narrow.mid_rise = false;
  const Tensor w = Tensor::from_vector({2, 4}, {0.5f, -2.0f, 1.0f, 0.25f, 0.1f, 0.3f, -0.2f, 0.0f});
  for (const QScheme& scheme : {mid, narrow}) {
    LsqQuantizer q(scheme, 2, LsqInit::MinMax);
    q.train();
    (void)q.forward(w);
    Tensor s = q.scale();
    s.data()[0] = 50.0f, s.data()[1] = 0.25f;
    const Tensor y = q.forward(w);
    EXPECT_EQ(s.data()[0], scheme.mid_rise ? 2.0f : 50.0f);  // max |w_0| = 2
    EXPECT_EQ(s.data()[1], 0.25f);                           // below max |w_1| = 0.3: kept
    if (scheme.mid_rise) {
      EXPECT_EQ(y.data()[1], -2.0f);  // the largest weight is a level again, +-1 code
      EXPECT_EQ(y.data()[3], 2.0f);   // every other weight of the channel too (codes +-1)
    }
  }
}

TEST(LearnableErrors, BadSettingsAndShapesNameTheProblem) {
  EXPECT_TRUE(throws_with([] { parse_quantizer_method("dorefa"); }, {"'dorefa'", "lsq", "lsq+", "pact"}));
  EXPECT_TRUE(throws_with([] { make_learnable_quantizer(QuantizerMethod::Observer, kAct8, 1); }, {"not a learned grid"}));
  EXPECT_TRUE(throws_with([] { make_learnable_quantizer(QuantizerMethod::Pact, kWeight8, 1); }, {"PactQuantizer", "affine"}));
  EXPECT_TRUE(throws_with([] { LsqPlusQuantizer q(kWeight8); }, {"LsqPlusQuantizer", "affine"}));
  EXPECT_TRUE(throws_with([] { LsqQuantizer q(kWeight4PerChannel, 0); }, {"channels", "0"}));
  EXPECT_TRUE(throws_with([] { PactQuantizer q(kAct8, 1, -1.0f); }, {"init_alpha", "-1"}));
  // Per-channel parameters that do not fit the input.
  LsqQuantizer q(kWeight4PerChannel, 3);
  q.train();
  EXPECT_TRUE(throws_with([&] { (void)q.forward(Tensor::ones({4, 2})); }, {"(4, 2)"}));
  EXPECT_TRUE(throws_with(
      [] { lsq_fake_quantize(Tensor::ones({2}), Tensor::ones({1}), {0}, kAct8, {1.0f, 1.0f}); }, {"2 gradient scales", "1 channels"}));
}

TEST(LearnableFactory, MakesTheRightTypes) {
  EXPECT_EQ(make_learnable_quantizer(QuantizerMethod::Lsq, kWeight4PerChannel, 5)->type(), "LsqQuantizer");
  EXPECT_EQ(make_learnable_quantizer(QuantizerMethod::LsqPlus, kAct8, 1)->type(), "LsqPlusQuantizer");
  // A symmetric grid has no offset to learn: LSQ+ is LSQ there.
  EXPECT_EQ(make_learnable_quantizer(QuantizerMethod::LsqPlus, kWeight8, 1)->type(), "LsqQuantizer");
  EXPECT_EQ(make_learnable_quantizer(QuantizerMethod::Pact, kAct8, 1)->type(), "PactQuantizer");
  // The learned values are parameters (the optimizer trains them), the switches are buffers.
  auto names = [](const NamedTensors& nt) {
    std::vector<std::string> out;
    for (const auto& [n, t] : nt) out.push_back(n);
    return out;
  };
  auto lsq = make_learnable_quantizer(QuantizerMethod::Lsq, kWeight4PerChannel, 5);
  EXPECT_EQ(names(lsq->named_parameters()), (std::vector<std::string>{"scale"}));
  EXPECT_EQ(names(lsq->named_buffers()), (std::vector<std::string>{"zero_point", "initialized"}));
  EXPECT_EQ(lsq->named_parameters()[0].second.shape(), (Shape{5}));
  EXPECT_TRUE(lsq->named_parameters()[0].second.requires_grad());
  auto plus = make_learnable_quantizer(QuantizerMethod::LsqPlus, kAct8, 1);
  EXPECT_EQ(names(plus->named_parameters()), (std::vector<std::string>{"scale", "offset"}));
  EXPECT_EQ(names(plus->named_buffers()), (std::vector<std::string>{"initialized"}));
  auto pact = make_learnable_quantizer(QuantizerMethod::Pact, kAct8, 1);
  EXPECT_EQ(names(pact->named_parameters()), (std::vector<std::string>{"alpha"}));
}

// -------------------------------------------------------------------------------------------- training

// Minimises mean((q(x) - x)^2) over the quantizer's parameters with SGD; returns {first, last} loss.
std::pair<float, float> train_to_fit(Quantizer& q, const Tensor& x, float lr, int steps) {
  q.train();
  (void)q.forward(x);  // initialise
  std::vector<ParamRef> params;
  for (auto& [name, t] : q.named_parameters()) params.push_back({name, t});
  SGD sgd(params, SgdOptions{.lr = lr, .momentum = 0.9f});
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < steps; ++step) {
    sgd.zero_grad();
    Tensor loss = mean(square(sub(q.forward(x), x)));
    if (step == 0) first = loss.item();
    last = loss.item();
    loss.backward();
    sgd.step();
  }
  return {first, last};
}

TEST(LearnableTraining, LsqLearnsAStepThatLowersTheQuantizationError) {
  Rng rng(61);
  Tensor x = Tensor::empty({512});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = rng.normal();
  // 3-bit symmetric grid started at a 4x too coarse step.
  const QScheme scheme{3, true, true, false, 0, true};
  LsqQuantizer q(scheme, 1, LsqInit::Lsq);
  q.train();
  (void)q.forward(x);
  const float s0 = q.scale().data()[0];
  Tensor s = q.scale();
  s.data()[0] = 4.0f * s0;
  const auto [first, last] = train_to_fit(q, x, 1.0f, 200);
  EXPECT_LT(last, 0.2f * first) << "first " << first << " last " << last;
  // From 4 * s0 (about 3.6) to a step that spreads the 7 codes over the bulk of a unit normal.
  EXPECT_GT(q.scale().data()[0], 0.4f);
  EXPECT_LT(q.scale().data()[0], 0.9f);
}

TEST(LearnableTraining, LsqPlusFitsAnAsymmetricRange) {
  Rng rng(62);
  const Tensor x = random_tensor({512}, rng, 1.0f, 3.0f);  // all positive, far from 0
  const QScheme scheme{4, true, false, false, 0, false};
  LsqPlusQuantizer q(scheme, 1, LsqInit::Lsq);
  const auto [first, last] = train_to_fit(q, x, 1.0f, 200);
  EXPECT_LT(last, 0.2f * first) << "first " << first << " last " << last;
  // Real 0 must stay a code, so the grid starts at 0 (zero point qmin) and its 15 steps cover [0, 3].
  const QParams qp = q.qparams();
  EXPECT_EQ(qp.zero_point[0], qp.quant_min);
  EXPECT_NEAR(qp.scale[0], 0.2f, 0.02f);
}

TEST(LearnableTraining, PactRaisesAnAlphaThatClipsTooMuch) {
  Rng rng(63);
  const Tensor x = random_tensor({512}, rng, 0.0f, 4.0f);
  PactQuantizer q(kAct8, 1, 1.0f);
  const auto [first, last] = train_to_fit(q, x, 0.5f, 100);
  EXPECT_LT(last, 0.1f * first) << "first " << first << " last " << last;
  EXPECT_GT(q.alpha().data()[0], 3.5f);
}

// ------------------------------------------------------------------------------------------ checkpoints

TEST(LearnableCheckpoint, StateDictRoundTripGivesABitIdenticalForward) {
  Rng rng(71);
  const QScheme per_channel_act{4, true, false, true, 1, false};
  struct Case {
    std::string method;
    QScheme scheme;
  };
  for (const Case& k : std::vector<Case>{{"lsq", kWeight4PerChannel}, {"lsq", kAct8}, {"lsq+", per_channel_act},
                                         {"pact", kAct8}}) {
    SCOPED_TRACE(k.method);
    const Shape shape = k.scheme.per_channel && k.scheme.axis == 0 ? Shape{3, 10} : Shape{10, 3};
    auto trained = make_learnable_quantizer(parse_quantizer_method(k.method), k.scheme, 3);
    const Tensor x = random_tensor(shape, rng, -1.0f, 2.0f);
    (void)train_to_fit(*trained, x, 0.01f, 5);
    auto restored = make_learnable_quantizer(parse_quantizer_method(k.method), k.scheme, 3);
    restored->load_state_dict(as_map(trained->state_dict()));
    trained->eval();
    restored->eval();
    const Tensor probe = random_tensor(shape, rng, -3.0f, 3.0f);
    EXPECT_TRUE(same_bits(restored->forward(probe), trained->forward(probe)));
    EXPECT_EQ(restored->qparams().scale, trained->qparams().scale);
    EXPECT_EQ(restored->qparams().zero_point, trained->qparams().zero_point);
    // A restored module does not re-initialise on its next training batch.
    restored->train();
    (void)restored->forward(scale(probe, 5.0f));
    EXPECT_EQ(restored->qparams().scale, trained->qparams().scale);
  }
}

TEST(LearnableCheckpoint, CorruptZeroPointIsRejected) {
  LsqQuantizer q(kAct8);
  set_state(q, {{"scale", {0.1f}}, {"zero_point", {3.5f}}, {"initialized", {1.0f}}});
  EXPECT_TRUE(throws_with([&] { (void)q.qparams(); }, {"zero_point[0]", "3.5"}));
}

}  // namespace
}  // namespace qatlab
