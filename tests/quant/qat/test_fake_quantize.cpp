// test_fake_quantize.cpp: the fake_quantize op (forward, straight-through gradient) and the FakeQuantize module.
#include "quant/qat/fake_quantize.h"

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/module.h"
#include "quant/engine/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_tensor;
using test::throws_with;

QParams per_tensor(float scale, int32_t zp, int32_t qmin = -128, int32_t qmax = 127) {
  QParams qp;
  qp.scale = {scale};
  qp.zero_point = {zp};
  qp.quant_min = qmin;
  qp.quant_max = qmax;
  return qp;
}

// The formula written out: q = clamp(zp + nearbyint(x * (1 / scale)), qmin, qmax), y = scale * (q - zp).
float fq_ref(float x, float scale, int32_t zp, int32_t qmin, int32_t qmax) {
  const float inv = 1.0f / scale;
  const float r = std::nearbyint(x * inv);
  const float q = std::min(std::max(static_cast<float>(zp) + r, static_cast<float>(qmin)), static_cast<float>(qmax));
  return scale * (q - static_cast<float>(zp));
}

using test::as_map;
using test::bit_equal;
using test::same_bits;

// ------------------------------------------------------------------------------------ forward

TEST(FakeQuantizeOp, PerTensorMatchesTheFormula) {
  Rng rng(2);
  for (const auto& [scale, zp, qmin, qmax] : std::vector<std::tuple<float, int32_t, int32_t, int32_t>>{
           {0.05f, 0, -128, 127}, {0.013f, -17, -128, 127}, {0.1f, 128, 0, 255}, {0.3f, 1, -7, 7}, {0.02f, 3, 0, 3}}) {
    // Both small (serial) and large (threaded, blocked) tensors.
    for (int64_t n : {37, 100003}) {
      const Tensor x = random_tensor({n}, rng, -8.0f, 8.0f);
      const Tensor y = fake_quantize(x, per_tensor(scale, zp, qmin, qmax));
      for (int64_t i = 0; i < n; ++i)
        ASSERT_TRUE(bit_equal(y.data()[i], fq_ref(x.data()[i], scale, zp, qmin, qmax)))
            << "x " << x.data()[i] << " scale " << scale << " zp " << zp << ": " << y.data()[i];
    }
  }
  // Ties round to even, as nearbyint does: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2.
  const Tensor ties = Tensor::from_vector({5}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f});
  EXPECT_EQ(fake_quantize(ties, per_tensor(1.0f, 0)).to_vector(), (std::vector<float>{0.0f, 2.0f, 2.0f, 0.0f, -2.0f}));
  // Saturation, including huge values.
  const Tensor big = Tensor::from_vector({4}, {1e30f, -1e30f, 3.0e9f, -3.0e9f});
  EXPECT_EQ(fake_quantize(big, per_tensor(0.5f, 10)).to_vector(), (std::vector<float>{58.5f, -69.0f, 58.5f, -69.0f}));
}

// Per channel along every axis of a 4-d tensor, and a (OUT, IN) matrix, against a hand loop.
TEST(FakeQuantizeOp, PerChannelMatchesTheFormulaOnEveryAxis) {
  Rng rng(9);
  const Shape shape{2, 3, 4, 5};
  const Tensor x = random_tensor(shape, rng, -3.0f, 3.0f);
  for (int axis = 0; axis < 4; ++axis) {
    QParams qp;
    qp.axis = axis;
    for (int64_t c = 0; c < shape[axis]; ++c) {
      qp.scale.push_back(0.01f + 0.02f * static_cast<float>(c));
      qp.zero_point.push_back(static_cast<int32_t>(c) * 7 - 10);
    }
    const Tensor y = fake_quantize(x, qp);
    int64_t i = 0;
    for (int64_t a = 0; a < 2; ++a)
      for (int64_t b = 0; b < 3; ++b)
        for (int64_t c = 0; c < 4; ++c)
          for (int64_t d = 0; d < 5; ++d, ++i) {
            const int64_t idx[4] = {a, b, c, d};
            const int64_t ch = idx[axis];
            ASSERT_TRUE(bit_equal(y.data()[i], fq_ref(x.data()[i], qp.scale[ch], qp.zero_point[ch], -128, 127)))
                << "axis " << axis << " element " << i;
          }
  }
  // A large (OC, IN) weight, threaded over rows.
  const Tensor w = random_tensor({64, 1000}, rng, -1.0f, 1.0f);
  QParams qw;
  qw.axis = 0;
  qw.quant_min = -127;
  for (int c = 0; c < 64; ++c) {
    qw.scale.push_back(0.002f + 0.0001f * c);
    qw.zero_point.push_back(0);
  }
  const Tensor yw = fake_quantize(w, qw);
  for (int64_t i = 0; i < w.numel(); ++i)
    ASSERT_TRUE(bit_equal(yw.data()[i], fq_ref(w.data()[i], qw.scale[i / 1000], 0, -127, 127))) << i;
}

// The op uses quantize_value itself: the codes are exactly what the integer graph's Quantize computes.
TEST(FakeQuantizeOp, AgreesWithQuantizeValue) {
  Rng rng(13);
  const Tensor x = random_tensor({5000}, rng, -2.0f, 2.0f);
  const QParams qp = per_tensor(0.0123f, -5);
  const Tensor y = fake_quantize(x, qp);
  const float inv = 1.0f / qp.scale[0];
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int32_t q = quantize_value(x.data()[i], inv, -5, -128, 127);
    ASSERT_TRUE(bit_equal(y.data()[i], qp.scale[0] * static_cast<float>(q + 5))) << i;
  }
}

TEST(FakeQuantizeOp, IsIdempotentAndKeepsZeroExact) {
  Rng rng(4);
  for (int b = 2; b <= 8; ++b) {
    for (bool sym : {false, true}) {
      for (bool sign : {false, true}) {
        QScheme s;
        s.bits = b;
        s.symmetric = sym;
        s.is_signed = sign;
        for (int t = 0; t < 20; ++t) {
          const float mag = std::pow(10.0f, rng.uniform(-3.0f, 3.0f));
          float lo = mag * rng.uniform(-1.0f, 0.2f), hi = mag * rng.uniform(-0.2f, 1.0f);
          if (lo > hi) std::swap(lo, hi);
          const QParams qp = choose_qparams(s, {&lo, 1}, {&hi, 1});
          Tensor x = random_tensor({257}, rng, -1.5f * mag, 1.5f * mag);
          x.data()[0] = 0.0f;
          const Tensor y = fake_quantize(x, qp);
          EXPECT_EQ(y.data()[0], 0.0f);
          EXPECT_TRUE(same_bits(fake_quantize(y, qp), y)) << s.describe() << " scale " << qp.scale[0];
        }
      }
    }
  }
}

TEST(FakeQuantizeOp, RejectsBadParameters) {
  const Tensor x = Tensor::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { (void)fake_quantize(x, per_tensor(0.0f, 0)); }, {"scale[0] = 0"}));
  EXPECT_TRUE(throws_with([&] { (void)fake_quantize(x, per_tensor(1.0f, 300)); }, {"zero_point[0] = 300"}));
  QParams pc;
  pc.axis = 1;
  pc.scale = {1.0f, 1.0f};
  pc.zero_point = {0, 0};
  EXPECT_TRUE(throws_with([&] { (void)fake_quantize(x, pc); }, {"2 channels along axis 1", "(2, 3)"}));
  pc.axis = 2;
  EXPECT_TRUE(throws_with([&] { (void)fake_quantize(x, pc); }, {"axis 2", "(2, 3)"}));
}

// ------------------------------------------------------------------------------------- backward

// The straight-through mask by hand: 1 where zp + nearbyint(x / scale) is a code, bounds included.
TEST(FakeQuantizeOp, GradientIsExactlyTheStraightThroughMask) {
  const QParams qp = per_tensor(0.25f, 4, -8, 7);  // codes cover reals [-3.0, 0.75]
  // Inside, on the bounds, rounding onto a bound (passes) and rounding past it (blocked), far outside.
  const std::vector<float> xs{0.0f, -1.1f, 0.6f, 0.75f, 0.8f, 0.874f, 0.876f, 2.0f, -3.0f, -3.1f, -3.124f, -3.126f, -50.0f};
  const std::vector<float> mask{1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0};
  Tensor x = Tensor::from_vector({static_cast<int64_t>(xs.size())}, xs);
  x.set_requires_grad(true);
  Tensor y = fake_quantize(x, qp);
  Rng rng(6);
  const Tensor seed = random_tensor(x.shape(), rng, 0.5f, 2.0f);
  y.backward(seed);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(x.grad().data()[i], mask[i] * seed.data()[i]) << "x = " << xs[i];
  // Gradients accumulate.
  Tensor y2 = fake_quantize(x, qp);
  y2.backward(seed);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(x.grad().data()[i], 2.0f * mask[i] * seed.data()[i]);
}

TEST(FakeQuantizeOp, PerChannelGradientMaskOnALargeTensor) {
  Rng rng(12);
  Tensor x = random_tensor({8, 4, 40, 40}, rng, -2.0f, 2.0f);  // above the threading threshold
  x.set_requires_grad(true);
  QParams qp;
  qp.axis = 1;
  qp.scale = {0.01f, 0.004f, 0.02f, 0.008f};
  qp.zero_point = {0, -20, 50, 127};
  fake_quantize(x, qp).backward(Tensor::ones(x.shape()));
  const float* g = x.grad().data();
  const int64_t inner = 40 * 40;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / inner) % 4;
    const float r = std::nearbyint(x.data()[i] * (1.0f / qp.scale[c]));
    const float code = r + static_cast<float>(qp.zero_point[c]);
    ASSERT_EQ(g[i], (code >= -128.0f && code <= 127.0f) ? 1.0f : 0.0f) << i;
  }
}

// Through the shared finite-difference checker. The output is a staircase, so its central difference
// equals the straight-through slope only when the step 2h spans a whole number of quantization steps
// and x +- h avoids the rounding boundaries: h = 4 steps of 1/64 (2 of 1/32), x kept away from the
// boundaries (k + 1/2) / 64 and at least h away from the clamp edges. Inside, the checker then sees
// slope 1 (the STE identity); beyond the clamp it sees 0, and so must backward.
TEST(FakeQuantizeOp, PassesTheGradientChecker) {
  Rng rng(31);
  std::vector<float> kinks;
  for (int k = -300; k <= 300; ++k) kinks.push_back((static_cast<float>(k) + 0.5f) / 64.0f);
  test::GradCheckOptions opts;
  opts.eps = 0.0625;
  const float h = 0.0625f, margin = 1.0f / 512.0f;
  // Per tensor: codes [-128, 127] cover reals [-2, 127 / 64]; clamping starts at -128.5 / 64 and 127.5 / 64.
  std::vector<float> k1 = kinks;
  for (float edge : {-128.5f / 64.0f, 127.5f / 64.0f})
    for (float d = -h; d <= h; d += margin) k1.push_back(edge + d);
  const Tensor x = test::random_away_from({6, 7}, rng, k1, margin, -3.0f, 3.0f);
  const QParams qp = per_tensor(1.0f / 64.0f, 0);
  EXPECT_GRADS_OK([qp](const std::vector<Tensor>& in) { return fake_quantize(in[0], qp); }, {x}, opts);

  // Per channel (axis 1 of (3, 2, 5)): scales 1/64 and 1/32, inputs inside both ranges.
  QParams pc;
  pc.axis = 1;
  pc.scale = {1.0f / 64.0f, 1.0f / 32.0f};
  pc.zero_point = {0, 10};
  std::vector<float> k2 = kinks;  // channel 1 rounds at (k + 1/2) / 32
  for (int k = -100; k <= 100; ++k) k2.push_back((static_cast<float>(k) + 0.5f) / 32.0f);
  const Tensor xc = test::random_away_from({3, 2, 5}, rng, k2, margin, -1.5f, 1.5f);
  EXPECT_GRADS_OK([pc](const std::vector<Tensor>& in) { return fake_quantize(in[0], pc); }, {xc}, opts);
  // Composed with another op, the straight-through gradient chains like any other.
  EXPECT_GRADS_OK([pc](const std::vector<Tensor>& in) { return mul(fake_quantize(in[0], pc), in[0]); }, {xc}, opts);
}

// A mid-rise grid (odd codes): y = scale * quantize_odd_value(x), per channel too, and the gradient passes
// where the un-clamped odd code lies inside [-qmax, qmax].
TEST(FakeQuantizeOp, MidRiseGridIsQuantizeOddValueWithItsMask) {
  Rng rng(15);
  Tensor x = random_tensor({4, 3, 50}, rng, -1.5f, 1.5f);
  x.set_requires_grad(true);
  QParams qp;
  qp.axis = 1;
  qp.scale = {0.1f, 0.37f, 0.05f};
  qp.zero_point = {0, 0, 0};
  qp.quant_min = -3, qp.quant_max = 3, qp.odd_codes = true;
  const Tensor y = fake_quantize(x, qp);
  fake_quantize(x, qp).backward(Tensor::ones(x.shape()));
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 50) % 3;
    const float inv = 1.0f / qp.scale[c];
    const int32_t q = quantize_odd_value(x.data()[i], inv, 3);
    ASSERT_TRUE(bit_equal(y.data()[i], qp.scale[c] * static_cast<float>(q))) << i;
    ASSERT_NE(q % 2, 0) << i;
    const float r = 2.0f * std::floor(x.data()[i] * inv * 0.5f) + 1.0f;
    ASSERT_EQ(x.grad().data()[i], (r >= -3.0f && r <= 3.0f) ? 1.0f : 0.0f) << i;
  }
  // No level at 0: 0 and tiny values of either sign go to +-scale.
  const Tensor z = fake_quantize(Tensor::from_vector({3}, {0.0f, 1e-9f, -1e-9f}), [] {
    QParams t;
    t.scale = {0.5f};
    t.zero_point = {0};
    t.quant_min = -7, t.quant_max = 7, t.odd_codes = true;
    return t;
  }());
  EXPECT_EQ(z.to_vector(), (std::vector<float>{0.5f, 0.5f, -0.5f}));
}

// The checker on a mid-rise staircase: levels 2/64 apart (scale 1/64, 7-bit odd codes [-127, 127]), so
// h = 0.0625 spans two levels each way; x kept off the boundaries k / 32 and h away from the clamp at +-2.
TEST(FakeQuantizeOp, MidRisePassesTheGradientChecker) {
  Rng rng(33);
  std::vector<float> kinks;
  for (int k = -150; k <= 150; ++k) kinks.push_back(static_cast<float>(k) / 32.0f);
  const float h = 0.0625f, margin = 1.0f / 512.0f;
  for (float edge : {-2.0f, 2.0f})
    for (float d = -h; d <= h; d += margin) kinks.push_back(edge + d);
  test::GradCheckOptions opts;
  opts.eps = h;
  QParams qp;
  qp.scale = {1.0f / 64.0f};
  qp.zero_point = {0};
  qp.quant_min = -127, qp.quant_max = 127, qp.odd_codes = true;
  const Tensor x = test::random_away_from({5, 6}, rng, kinks, margin, -3.0f, 3.0f);
  EXPECT_GRADS_OK([qp](const std::vector<Tensor>& in) { return fake_quantize(in[0], qp); }, {x}, opts);
}

// ------------------------------------------------------------------------------------- module

TEST(FakeQuantizeModule, ForwardObservesThenQuantizes) {
  Rng rng(3);
  FakeQuantize fq{QScheme{}};
  EXPECT_EQ(fq.type(), "FakeQuantize");
  EXPECT_TRUE(fq.observer_enabled());
  EXPECT_TRUE(fq.fake_quant_enabled());
  EXPECT_EQ(fq.observer().kind(), "minmax");
  EXPECT_THROW((void)fq.qparams(), std::logic_error);
  const Tensor x = random_tensor({4, 10}, rng, -1.0f, 3.0f);
  const Tensor y = fq(x);
  const std::vector<float> v = x.to_vector();
  const float lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  const QParams expected = choose_qparams(QScheme{}, {&lo, 1}, {&hi, 1});
  EXPECT_EQ(fq.qparams().scale, expected.scale);
  EXPECT_EQ(fq.qparams().zero_point, expected.zero_point);
  EXPECT_TRUE(same_bits(y, fake_quantize(x, expected)));
  // Through the Quantizer interface, as convert sees it.
  const Quantizer& q = fq;
  EXPECT_EQ(q.qparams().scale, expected.scale);
  EXPECT_EQ(q.scheme().bits, 8);
}

TEST(FakeQuantizeModule, SwitchesFreezeTheObserverAndBypassQuantization) {
  FakeQuantize fq{QScheme{}};
  fq(Tensor::from_vector({2}, {-1.0f, 1.0f}));
  const QParams first = fq.qparams();
  // Observer off: a wider batch leaves the parameters alone, and is clipped by them.
  fq.enable_observer(false);
  EXPECT_FALSE(fq.observer_enabled());
  const Tensor wide = Tensor::from_vector({2}, {-10.0f, 10.0f});
  const Tensor y = fq(wide);
  EXPECT_EQ(fq.qparams().scale, first.scale);
  EXPECT_NEAR(y.data()[1], 1.0f, first.scale[0]);
  // Fake-quant off: x comes back untouched (the same tensor), while an enabled observer still observes.
  fq.enable_observer(true);
  fq.enable_fake_quant(false);
  EXPECT_FALSE(fq.fake_quant_enabled());
  const Tensor z = fq(wide);
  EXPECT_TRUE(z.same(wide));
  EXPECT_GT(fq.qparams().scale[0], 5.0f * first.scale[0]);
  // With the observer off and no data yet, there are no parameters to quantize with.
  FakeQuantize fresh{QScheme{}};
  fresh.enable_observer(false);
  try {
    (void)fresh(wide);
    ADD_FAILURE() << "expected an error";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("no quantization parameters yet"), std::string::npos) << e.what();
  }
}

// Evaluation never changes the module: the observer learns in training mode only.
TEST(FakeQuantizeModule, EvalModeDoesNotObserve) {
  FakeQuantize fq{QScheme{}};
  fq(Tensor::from_vector({2}, {-1.0f, 1.0f}));
  const QParams trained = fq.qparams();
  fq.eval();
  const Tensor y = fq(Tensor::from_vector({2}, {-10.0f, 10.0f}));
  EXPECT_EQ(fq.qparams().scale, trained.scale);
  EXPECT_NEAR(y.data()[1], 1.0f, trained.scale[0]);
  FakeQuantize fresh{QScheme{}};
  fresh.eval();
  EXPECT_THROW((void)fresh(Tensor::zeros({2})), std::logic_error);
  fq.train();
  fq(Tensor::from_vector({2}, {-10.0f, 10.0f}));
  EXPECT_GT(fq.qparams().scale[0], 5.0f * trained.scale[0]);
}

TEST(FakeQuantizeModule, GradientFlowsStraightThroughTheModule) {
  FakeQuantize fq{QScheme{}};
  Tensor x = Tensor::from_vector({4}, {-1.0f, 0.3f, 1.0f, 0.7f});
  x.set_requires_grad(true);
  fq(x);  // calibrate on [-1, 1]
  fq.enable_observer(false);
  Tensor x2 = Tensor::from_vector({4}, {-5.0f, 0.3f, 5.0f, 0.7f});
  x2.set_requires_grad(true);
  sum(fq(x2)).backward();
  EXPECT_EQ(x2.grad().to_vector(), (std::vector<float>{0.0f, 1.0f, 0.0f, 1.0f}));
}

TEST(FakeQuantizeModule, BuffersAreInTheStateDict) {
  QScheme w{8, true, true, true, 0, true};
  FakeQuantize fq(w, ObserverKind::Ema, 6);
  const NamedTensors sd = fq.state_dict();
  std::vector<std::string> names;
  for (const auto& [name, t] : sd) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"scale", "zero_point", "observer_enabled", "fake_quant_enabled",
                                             "observer.batches", "observer.min_val", "observer.max_val"}));
  for (const auto& [name, t] : sd) {
    if (name == "scale" || name == "zero_point" || name == "observer.min_val" || name == "observer.max_val")
      EXPECT_EQ(t.shape(), Shape{6}) << name;
    else
      EXPECT_EQ(t.shape(), Shape{1}) << name;
  }
  EXPECT_TRUE(fq.named_parameters().empty());
  // Nested in a model, the names carry the path.
  Sequential seq;
  seq.add("act", std::make_shared<FakeQuantize>(QScheme{}, ObserverKind::Histogram));
  bool found = false;
  for (const auto& [name, t] : seq.state_dict()) {
    found = found || name == "act.observer.histogram";
    if (name == "act.observer.histogram") {
      EXPECT_EQ(t.shape(), Shape{2048});
    }
  }
  EXPECT_TRUE(found);
}

// Saving and loading restores an identical module: same parameters, same switches, same observer
// state, so both continue exactly alike.
TEST(FakeQuantizeModule, LoadStateDictRoundTrip) {
  Rng rng(19);
  for (const char* kind : {"minmax", "ema", "histogram", "percentile"}) {
    FakeQuantize a(QScheme{}, parse_observer_kind(kind));
    for (int b = 0; b < 3; ++b) a(random_tensor({8, 16}, rng, -1.0f - b, 1.0f + 0.5f * b));
    a.enable_fake_quant(false);
    FakeQuantize b(QScheme{}, parse_observer_kind(kind));
    b.load_state_dict(as_map(a.state_dict()));
    EXPECT_TRUE(b.observer().has_data()) << kind;
    EXPECT_FALSE(b.fake_quant_enabled()) << kind;
    EXPECT_TRUE(b.observer_enabled()) << kind;
    EXPECT_EQ(a.qparams().scale, b.qparams().scale) << kind;
    EXPECT_EQ(a.qparams().zero_point, b.qparams().zero_point) << kind;
    EXPECT_EQ(a.describe(), b.describe()) << kind;
    a.enable_fake_quant(true);
    b.enable_fake_quant(true);
    const Tensor next = random_tensor({8, 16}, rng, -4.0f, 4.0f);
    EXPECT_TRUE(same_bits(a(next), b(next))) << kind;
    EXPECT_EQ(a.qparams().scale, b.qparams().scale) << kind;
  }
  // Per channel, and a frozen observer.
  QScheme w{8, true, true, true, 0, true};
  FakeQuantize a(w, ObserverKind::MinMax, 4);
  a(random_tensor({4, 3, 3, 3}, rng));
  a.enable_observer(false);
  FakeQuantize b(w, ObserverKind::MinMax, 4);
  b.load_state_dict(as_map(a.state_dict()));
  EXPECT_FALSE(b.observer_enabled());
  EXPECT_EQ(a.qparams().scale, b.qparams().scale);
  EXPECT_EQ(b.qparams().axis, 0);
  // A corrupt zero point is caught when the parameters are read.
  auto bad = as_map(a.state_dict());
  bad["zero_point"].data()[2] = 0.5f;
  b.load_state_dict(bad);
  EXPECT_TRUE(throws_with([&] { (void)b.qparams(); }, {"zero_point[2] = 0.5", "not an integer"}));
}

TEST(FakeQuantizeModule, DescribeSummarisesTheParameters) {
  FakeQuantize pt{QScheme{}};
  EXPECT_EQ(pt.describe(), "8-bit signed affine per-tensor, q in [-128, 127], observer=minmax, scale=unset");
  pt(Tensor::from_vector({2}, {0.0f, 2.55f}));
  EXPECT_NE(pt.describe().find("scale=0.01, zp=-128"), std::string::npos) << pt.describe();
  QScheme w{4, true, true, true, 0, true};
  FakeQuantize pc(w, ObserverKind::Ema, 3);
  pc(Tensor::from_vector({3, 1}, {0.7f, -1.4f, 0.07f}));
  pc.enable_observer(false);
  const std::string d = pc.describe();
  EXPECT_NE(d.find("4-bit signed symmetric per-channel(axis 0) narrow"), std::string::npos) << d;
  EXPECT_NE(d.find("observer=ema(c=0.01)"), std::string::npos) << d;
  EXPECT_NE(d.find("scale=0.01..0.2, zp=0..0 (3 ch)"), std::string::npos) << d;
  EXPECT_NE(d.find("observer off"), std::string::npos) << d;
}

}  // namespace
}  // namespace qatlab
