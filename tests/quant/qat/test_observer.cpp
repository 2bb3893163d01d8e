// test_observer.cpp: min/max, moving-average, histogram and percentile observers.
#include "quant/qat/observer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "quant/qat/fake_quantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_tensor;
using test::throws_with;

QScheme per_channel(int axis) {
  QScheme s;
  s.per_channel = true;
  s.axis = axis;
  return s;
}

std::map<std::string, Tensor> as_map(const NamedTensors& named) {
  std::map<std::string, Tensor> m;
  for (const auto& [name, t] : named) m[name] = t.clone();
  return m;
}

// Mean squared error of fake-quantizing x with qp.
double quant_mse(const Tensor& x, const QParams& qp) {
  NoGradGuard no_grad;
  const Tensor y = fake_quantize(x, qp);
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double d = static_cast<double>(x.data()[i]) - y.data()[i];
    s += d * d;
  }
  return s / static_cast<double>(x.numel());
}

// Heavy tails: Laplace(0, 1) samples (-sign(u) ln(1 - 2|u|), u uniform in (-1/2, 1/2)): the extremes of
// 100k draws sit near +-11, far beyond where the bulk of the mass is.
Tensor heavy_tailed(int64_t n, Rng& rng) {
  Tensor t = Tensor::empty({n});
  float* p = t.data();
  for (int64_t i = 0; i < n; ++i) {
    const double u = rng.uniform(-0.5f, 0.5f);
    p[i] = static_cast<float>((u < 0 ? 1.0 : -1.0) * std::log(1.0 - 2.0 * std::abs(u) + 1e-12));
  }
  return t;
}

// ------------------------------------------------------------------------------------------ min/max

TEST(MinMaxObserver, TracksTheRunningRangeOverBatches) {
  MinMaxObserver obs{QScheme{}};
  EXPECT_FALSE(obs.has_data());
  EXPECT_EQ(obs.kind(), "minmax");
  obs.observe(Tensor::from_vector({2, 2}, {-1.0f, 0.5f, 2.0f, 0.25f}));
  obs.observe(Tensor::from_vector({3}, {-0.5f, 3.0f, 1.0f}));
  EXPECT_TRUE(obs.has_data());
  std::vector<float> lo, hi;
  obs.range(lo, hi);
  EXPECT_EQ(lo, std::vector<float>{-1.0f});
  EXPECT_EQ(hi, std::vector<float>{3.0f});
  const float a = -1.0f, b = 3.0f;
  const QParams expected = choose_qparams(QScheme{}, {&a, 1}, {&b, 1});
  const QParams qp = obs.qparams();
  EXPECT_EQ(qp.scale, expected.scale);
  EXPECT_EQ(qp.zero_point, expected.zero_point);
  // Odd sizes exercise the scalar tail of the vectorised scan.
  Rng rng(3);
  for (int64_t n : {1, 15, 16, 17, 33, 1000}) {
    MinMaxObserver o{QScheme{}};
    const Tensor x = random_tensor({n}, rng, -5.0f, 5.0f);
    o.observe(x);
    const std::vector<float> v = x.to_vector();
    o.range(lo, hi);
    EXPECT_EQ(lo[0], *std::min_element(v.begin(), v.end())) << n;
    EXPECT_EQ(hi[0], *std::max_element(v.begin(), v.end())) << n;
  }
}

// Per channel along axis 0, 1 and the last axis of an (N, C, H, W) tensor, against a hand loop.
TEST(MinMaxObserver, PerChannelMatchesAHandLoop) {
  Rng rng(11);
  const Shape shape{3, 4, 5, 6};
  const Tensor x = random_tensor(shape, rng, -3.0f, 3.0f);
  for (int axis = 0; axis < 4; ++axis) {
    const int64_t C = shape[axis];
    MinMaxObserver obs(per_channel(axis), C);
    obs.observe(x);
    std::vector<float> lo(C, 1e9f), hi(C, -1e9f);
    const float* p = x.data();
    for (int64_t n = 0; n < 3; ++n)
      for (int64_t c = 0; c < 4; ++c)
        for (int64_t h = 0; h < 5; ++h)
          for (int64_t w = 0; w < 6; ++w) {
            const int64_t idx[4] = {n, c, h, w};
            const float v = p[((n * 4 + c) * 5 + h) * 6 + w];
            lo[idx[axis]] = std::min(lo[idx[axis]], v);
            hi[idx[axis]] = std::max(hi[idx[axis]], v);
          }
    std::vector<float> olo, ohi;
    obs.range(olo, ohi);
    EXPECT_EQ(olo, lo) << "axis " << axis;
    EXPECT_EQ(ohi, hi) << "axis " << axis;
    const QParams qp = obs.qparams();
    EXPECT_EQ(qp.axis, axis);
    EXPECT_EQ(qp.scale.size(), static_cast<size_t>(C));
  }
  // Per tensor is the min/max over everything.
  MinMaxObserver whole{QScheme{}};
  whole.observe(x);
  std::vector<float> lo, hi;
  whole.range(lo, hi);
  const std::vector<float> v = x.to_vector();
  EXPECT_EQ(lo[0], *std::min_element(v.begin(), v.end()));
  EXPECT_EQ(hi[0], *std::max_element(v.begin(), v.end()));
}

TEST(MinMaxObserver, PerChannelShapeMismatchIsAnError) {
  MinMaxObserver obs(per_channel(1), 4);
  EXPECT_TRUE(throws_with([&] { obs.observe(Tensor::zeros({2, 3, 5})); }, {"axis 1", "4 channels", "(2, 3, 5)"}));
  EXPECT_TRUE(throws_with([&] { obs.observe(Tensor::zeros({4})); }, {"(4)"}));
  EXPECT_FALSE(obs.has_data());
  EXPECT_TRUE(throws_with([&] { MinMaxObserver bad(per_channel(0), 0); }, {"channel count"}));
}

TEST(MovingAverageObserver, FollowsTheRecurrenceByHand) {
  const float c = 0.01f;
  MovingAverageMinMaxObserver obs(QScheme{}, 1, c);
  EXPECT_EQ(obs.kind(), "ema");
  const std::vector<std::pair<float, float>> batches{{-1.0f, 2.0f}, {-3.0f, 4.0f}, {-0.5f, 0.5f}, {-2.0f, 8.0f}};
  float mn = 0.0f, mx = 0.0f;
  for (size_t b = 0; b < batches.size(); ++b) {
    const auto [lo, hi] = batches[b];
    obs.observe(Tensor::from_vector({3}, {lo, 0.5f * (lo + hi), hi}));
    // The first batch initialises; then x <- x + c * (batch - x), in float.
    mn = b == 0 ? lo : mn + c * (lo - mn);
    mx = b == 0 ? hi : mx + c * (hi - mx);
    std::vector<float> olo, ohi;
    obs.range(olo, ohi);
    EXPECT_EQ(olo[0], mn) << "batch " << b;
    EXPECT_EQ(ohi[0], mx) << "batch " << b;
  }
  // The same recurrence in double agrees to float precision (the float run above is the exact check).
  double m = -1.0;
  for (float lo : {-3.0f, -0.5f, -2.0f}) m += 0.01 * (lo - m);
  EXPECT_NEAR(mn, m, 1e-6);
  EXPECT_TRUE(throws_with([] { MovingAverageMinMaxObserver bad(QScheme{}, 1, 0.0f); }, {"averaging_constant", "0"}));
}

TEST(MovingAverageObserver, PerChannelAveragesEachChannel) {
  MovingAverageMinMaxObserver obs(per_channel(1), 2, 0.5f);
  obs.observe(Tensor::from_vector({1, 2}, {-1.0f, 4.0f}));  // (N, C)
  obs.observe(Tensor::from_vector({2, 2}, {-3.0f, 0.0f, 1.0f, 2.0f}));
  std::vector<float> lo, hi;
  obs.range(lo, hi);
  // Channel 0: first batch [-1, -1], then batch [-3, 1] -> min -1 + 0.5 * (-2) = -2, max -1 + 0.5 * 2 = 0.
  // Channel 1: first [4, 4], then [0, 2] -> min 4 + 0.5 * (-4) = 2, max 4 + 0.5 * (-2) = 3.
  EXPECT_EQ(lo, (std::vector<float>{-2.0f, 2.0f}));
  EXPECT_EQ(hi, (std::vector<float>{0.0f, 3.0f}));
}

// ------------------------------------------------------------------------------ shared behaviour

TEST(Observers, NanOrInfIsAClearErrorAndLeavesTheStateAlone) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Tensor bad = Tensor::from_vector({2, 3}, {1.0f, nan, -inf, 0.0f, nan, 2.0f});
  for (const char* kind : {"minmax", "ema", "histogram", "percentile"}) {
    auto obs = make_observer(parse_observer_kind(kind), QScheme{});
    EXPECT_TRUE(throws_with([&] { obs->observe(bad); }, {"observer saw NaN/Inf in 3 values", "(2, 3)"})) << kind;
    EXPECT_FALSE(obs->has_data()) << kind;
    obs->observe(Tensor::from_vector({2}, {-1.0f, 1.0f}));
    const QParams before = obs->qparams();
    EXPECT_TRUE(throws_with([&] { obs->observe(bad); }, {"NaN/Inf"})) << kind;
    const QParams after = obs->qparams();
    EXPECT_EQ(before.scale, after.scale) << kind;
    EXPECT_EQ(before.zero_point, after.zero_point) << kind;
  }
  MinMaxObserver pc(per_channel(0), 2);
  EXPECT_TRUE(throws_with([&] { pc.observe(bad); }, {"observer saw NaN/Inf in 3 values"}));
  // Inf alone, in the vectorised part of a longer tensor.
  Tensor long_bad = Tensor::zeros({100});
  long_bad.data()[40] = inf;
  MinMaxObserver mm{QScheme{}};
  EXPECT_TRUE(throws_with([&] { mm.observe(long_bad); }, {"in 1 values"}));
}

TEST(Observers, QParamsWithoutDataIsAnErrorAndResetForgets) {
  for (const char* kind : {"minmax", "ema", "histogram", "percentile"}) {
    auto obs = make_observer(parse_observer_kind(kind), QScheme{});
    EXPECT_EQ(obs->kind(), kind);
    EXPECT_THROW((void)obs->qparams(), std::logic_error) << kind;
    try {
      (void)obs->qparams();
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("has seen no data"), std::string::npos) << e.what();
    }
    obs->observe(Tensor::from_vector({2}, {-1.0f, 1.0f}));
    EXPECT_NO_THROW((void)obs->qparams());
    obs->reset();
    EXPECT_FALSE(obs->has_data());
    EXPECT_THROW((void)obs->qparams(), std::logic_error);
    // After a reset the next batch starts afresh, it is not merged with the forgotten one.
    obs->observe(Tensor::from_vector({2}, {-0.5f, 0.25f}));
    std::vector<float> lo, hi;
    obs->range(lo, hi);
    EXPECT_GE(lo[0], -0.5f - 1e-3f) << kind;
    EXPECT_LE(hi[0], 0.25f + 1e-3f) << kind;
  }
}

TEST(Observers, FactoryRejectsUnknownKindsAndUnsupportedCombinations) {
  EXPECT_TRUE(throws_with([] { (void)parse_observer_kind("kl"); }, {"'kl'", "minmax, ema, histogram, percentile"}));
  EXPECT_TRUE(throws_with([] { (void)make_observer(ObserverKind::Histogram, per_channel(0), 4); }, {"per-tensor only"}));
  EXPECT_TRUE(throws_with([] { (void)make_observer(ObserverKind::Percentile, per_channel(0), 4); }, {"per-tensor only"}));
  QScheme nine;
  nine.bits = 9;
  EXPECT_TRUE(throws_with([&] { (void)make_observer(ObserverKind::MinMax, nine); }, {"bits must be in 2..8, got 9"}));
  EXPECT_EQ(make_observer(ObserverKind::Ema, per_channel(0), 5)->channels(), 5);
}

// All-zero and constant tensors: finite positive scales, and quantizing with them gives no NaN.
TEST(Observers, DegenerateInputsGiveUsableParameters) {
  for (const char* kind : {"minmax", "ema", "histogram", "percentile"}) {
    for (float value : {0.0f, 3.0f, -0.75f}) {
      auto obs = make_observer(parse_observer_kind(kind), QScheme{});
      const Tensor x = Tensor::full({4, 8}, value);
      obs->observe(x);
      obs->observe(x);
      const QParams qp = obs->qparams();
      ASSERT_TRUE(std::isfinite(qp.scale[0]) && qp.scale[0] > 0.0f) << kind << " " << value;
      EXPECT_GE(qp.scale[0], static_cast<float>(kMinScale));
      const Tensor y = fake_quantize(x, qp);
      for (float v : y.to_vector()) {
        ASSERT_TRUE(std::isfinite(v)) << kind << " " << value;
        EXPECT_NEAR(v, value, 0.5f * qp.scale[0] + 1e-6f) << kind << " " << value;
      }
    }
  }
  MinMaxObserver pc(per_channel(0), 3);
  pc.observe(Tensor::zeros({3, 4}));
  for (float s : pc.qparams().scale) EXPECT_EQ(s, static_cast<float>(kMinScale));
}

TEST(Observers, StateRoundTripsThroughLoadState) {
  Rng rng(5);
  for (const char* kind : {"minmax", "ema", "histogram", "percentile"}) {
    auto a = make_observer(parse_observer_kind(kind), QScheme{});
    a->observe(random_tensor({500}, rng, -1.0f, 2.0f));
    a->observe(random_tensor({500}, rng, -3.0f, 1.0f));
    auto b = make_observer(parse_observer_kind(kind), QScheme{});
    b->load_state(as_map(a->state()));
    EXPECT_TRUE(b->has_data());
    EXPECT_EQ(a->qparams().scale, b->qparams().scale) << kind;
    EXPECT_EQ(a->qparams().zero_point, b->qparams().zero_point) << kind;
    // Both continue identically.
    const Tensor next = random_tensor({500}, rng, -5.0f, 5.0f);
    a->observe(next);
    b->observe(next);
    EXPECT_EQ(a->qparams().scale, b->qparams().scale) << kind;
    auto missing = as_map(a->state());
    missing.erase("min_val");
    EXPECT_TRUE(throws_with([&] { b->load_state(missing); }, {"no entry 'min_val'"})) << kind;
    auto extra = as_map(a->state());
    extra["bogus"] = Tensor::zeros({1});
    EXPECT_TRUE(throws_with([&] { b->load_state(extra); }, {"unknown entry 'bogus'"})) << kind;
  }
  MinMaxObserver pc(per_channel(0), 3);
  auto wrong = as_map(MinMaxObserver(per_channel(0), 4).state());
  EXPECT_TRUE(throws_with([&] { pc.load_state(wrong); }, {"'min_val' has shape (4), expected (3)"}));
}

// ------------------------------------------------------------------------------------ histogram

TEST(HistogramObserver, PicksANarrowerRangeWithLowerErrorOnHeavyTails) {
  Rng rng(21);
  const Tensor x = heavy_tailed(100000, rng);
  // The fewer the bits, the more clipping pays: at 4 bits the L2-optimal clip for Laplace(1) is near
  // +-5, less than half of min/max; at 8 bits it is near +-10, still inside the extremes.
  for (const auto& [bits, shrink] : std::vector<std::pair<int, float>>{{8, 0.9f}, {4, 0.5f}}) {
    QScheme s;
    s.bits = bits;
    MinMaxObserver mm(s);
    HistogramObserver hist(s);
    mm.observe(x);
    hist.observe(x);
    std::vector<float> mlo, mhi, hlo, hhi;
    mm.range(mlo, mhi);
    hist.range(hlo, hhi);
    EXPECT_LT(hhi[0] - hlo[0], shrink * (mhi[0] - mlo[0])) << bits << " bits";
    EXPECT_GT(hhi[0], 3.0f) << bits;  // the bulk is kept
    EXPECT_LT(hlo[0], -3.0f) << bits;
    const double e_mm = quant_mse(x, mm.qparams()), e_hist = quant_mse(x, hist.qparams());
    EXPECT_LE(e_hist, e_mm) << bits << " bits";
    EXPECT_LT(e_hist, shrink * e_mm) << bits << " bits";
    // The error model agrees with the measurement, in order and in magnitude.
    EXPECT_LT(hist.expected_error(hlo[0], hhi[0]), hist.expected_error(mlo[0], mhi[0]));
    EXPECT_NEAR(hist.expected_error(hlo[0], hhi[0]), e_hist, 0.15 * e_hist);
    EXPECT_NEAR(hist.expected_error(mlo[0], mhi[0]), e_mm, 0.15 * e_mm);
  }
}

TEST(HistogramObserver, KeepsNearlyTheFullRangeOfUniformData) {
  Rng rng(4);
  const Tensor x = random_tensor({50000}, rng, -1.0f, 1.0f);
  HistogramObserver hist{QScheme{}};
  hist.observe(x);
  std::vector<float> lo, hi;
  hist.range(lo, hi);
  // Clipping uniform data costs more than the noise it saves: the range stays within a couple of steps.
  EXPECT_NEAR(lo[0], -1.0f, 0.02f);
  EXPECT_NEAR(hi[0], 1.0f, 0.02f);
}

TEST(HistogramObserver, GrowingRangeConservesMassAndKeepsTheShape) {
  Rng rng(8);
  HistogramObserver grown{QScheme{}}, once{QScheme{}};
  std::vector<Tensor> batches;
  for (float spread : {0.1f, 0.5f, 0.3f, 2.0f, 1.0f, 5.0f}) batches.push_back(random_tensor({4000}, rng, -spread, spread * 0.5f));
  std::vector<float> all;
  for (const Tensor& b : batches) {
    grown.observe(b);
    for (float v : b.to_vector()) all.push_back(v);
  }
  once.observe(Tensor::from_vector({static_cast<int64_t>(all.size())}, all));
  double mass = 0.0;
  for (float c : grown.histogram().to_vector()) mass += c;
  EXPECT_EQ(mass, static_cast<double>(all.size()));
  const NamedTensors st = grown.state();
  float lo_edge = 0.0f, hi_edge = 0.0f;
  for (const auto& [name, t] : st) {
    if (name == "min_val") lo_edge = t.item();
    if (name == "max_val") hi_edge = t.item();
  }
  EXPECT_LE(lo_edge, *std::min_element(all.begin(), all.end()));
  EXPECT_GE(hi_edge, *std::max_element(all.begin(), all.end()));
  // Same data seen in pieces or at once: nearly the same chosen range (bins differ, so not exactly).
  std::vector<float> glo, ghi, olo, ohi;
  grown.range(glo, ghi);
  once.range(olo, ohi);
  EXPECT_NEAR(glo[0], olo[0], 0.1f);
  EXPECT_NEAR(ghi[0], ohi[0], 0.1f);
}

// A jump by many orders of magnitude, up to the float limit, and growth from a single point: the mass
// is kept and the parameters stay finite.
TEST(HistogramObserver, SurvivesExtremeRangeJumps) {
  const float big = std::numeric_limits<float>::max();
  for (const char* kind : {"histogram", "percentile"}) {
    auto obs = make_observer(parse_observer_kind(kind), QScheme{});
    obs->observe(Tensor::full({10}, 0.5f));                       // one point
    obs->observe(Tensor::from_vector({2}, {-1e-3f, 1e-3f}));     // grows from it
    obs->observe(Tensor::from_vector({3}, {-big, 0.0f, big}));   // to the whole float range
    obs->observe(Tensor::from_vector({2}, {1.0f, 2.0f}));
    double mass = 0.0;
    for (const auto& [name, t] : obs->state())
      if (name == "histogram")
        for (float c : t.to_vector()) mass += c;
    EXPECT_EQ(mass, 17.0) << kind;
    const QParams qp = obs->qparams();
    EXPECT_TRUE(std::isfinite(qp.scale[0]) && qp.scale[0] > 0.0f) << kind;
  }
}

// ----------------------------------------------------------------------------------- percentile

TEST(PercentileObserver, MatchesKnownQuantiles) {
  // 0, 1, ..., 99999 scaled into [0, 1): the q-quantile is q itself, up to one value.
  const int64_t n = 100000;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i) / static_cast<float>(n);
  const Tensor x = Tensor::from_vector({n}, v);
  QScheme s;
  PercentileObserver p99(s, 99.0);
  p99.observe(x);
  std::vector<float> lo, hi;
  p99.range(lo, hi);
  const float bin = 1.0f / 2048.0f;
  EXPECT_NEAR(lo[0], 0.01f, bin);
  EXPECT_NEAR(hi[0], 0.99f, bin);
  EXPECT_EQ(p99.describe(), "percentile(p=99)");
  // The default 99.99 on N(0, 1) samples: about +-3.72.
  Rng rng(17);
  Tensor g = Tensor::empty({200000});
  for (int64_t i = 0; i < g.numel(); ++i) g.data()[i] = rng.normal();
  PercentileObserver p(s);
  EXPECT_DOUBLE_EQ(p.percentile(), 99.99);
  p.observe(g);
  p.range(lo, hi);
  EXPECT_NEAR(hi[0], 3.72f, 0.15f);
  EXPECT_NEAR(lo[0], -3.72f, 0.15f);
  // p = 100 keeps everything.
  PercentileObserver all(s, 100.0);
  all.observe(x);
  all.range(lo, hi);
  EXPECT_NEAR(lo[0], 0.0f, 1e-6f);
  EXPECT_NEAR(hi[0], v.back(), 1e-6f);
  EXPECT_TRUE(throws_with([&] { PercentileObserver bad(s, 40.0); }, {"percentile must be in (50, 100], got 40"}));
}

// ------------------------------------------------------------------------------------------ speed

// Min/max observers must stay well under a millisecond on a (64, 6, 28, 28) activation. Best of
// several runs, so that a busy machine does not make the test flaky; the bound is generous on purpose.
// A typical activation (a LeNet-5 conv output batch): every observer gives a valid grid whose range
// lies within the data's and covers most of it. (Speed belongs in benchmarks, not in a test that a
// loaded machine or a sanitizer build fails.)
TEST(Observers, GiveValidGridsOnATypicalActivation) {
  Rng rng(1);
  const Tensor x = random_tensor({64, 6, 28, 28}, rng);
  const auto [lo_it, hi_it] = std::minmax_element(x.data(), x.data() + x.numel());
  const float lo = std::min(*lo_it, 0.0f), hi = std::max(*hi_it, 0.0f);
  MinMaxObserver mm{QScheme{}};
  MovingAverageMinMaxObserver ema{QScheme{}};
  MinMaxObserver pc(per_channel(1), 6);
  HistogramObserver hist{QScheme{}};
  PercentileObserver pct{QScheme{}};
  for (Observer* obs : std::vector<Observer*>{&mm, &ema, &pc, &hist, &pct}) {
    SCOPED_TRACE(obs->kind());
    obs->observe(x);
    const QParams qp = obs->qparams();
    ASSERT_NO_THROW(qp.validate());
    std::vector<float> mins, maxs;
    obs->range(mins, maxs);
    ASSERT_EQ(mins.size(), maxs.size());
    for (size_t c = 0; c < mins.size(); ++c) {
      EXPECT_GE(mins[c], lo - 1e-6f);
      EXPECT_LE(maxs[c], hi + 1e-6f);
      EXPECT_GT(maxs[c] - mins[c], 0.5f * (hi - lo) / (mins.size() > 1 ? 2.0f : 1.0f));
    }
  }
  // Min/max observers see exactly the data's range.
  std::vector<float> mins, maxs;
  mm.range(mins, maxs);
  EXPECT_FLOAT_EQ(mins[0], lo);
  EXPECT_FLOAT_EQ(maxs[0], hi);
}

}  // namespace
}  // namespace qatlab
