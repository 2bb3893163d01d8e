// test_qscheme.cpp: code ranges of every scheme, and the range -> (scale, zero point) rules.
#include "quant/engine/qscheme.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "core/rng.h"
#include "quant/engine/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::throws_with;

QScheme scheme(int bits, bool is_signed, bool symmetric, bool narrow) {
  QScheme s;
  s.bits = bits;
  s.is_signed = is_signed;
  s.symmetric = symmetric;
  s.narrow_range = narrow;
  return s;
}

float dequant(int32_t q, float scale, int32_t zp) { return scale * static_cast<float>(q - zp); }

TEST(QScheme, RangesForEveryBitWidth) {
  for (int b = 2; b <= 8; ++b) {
    const int32_t half = 1 << (b - 1), full = 1 << b;
    EXPECT_EQ(scheme(b, true, false, false).quant_min(), -half) << b;
    EXPECT_EQ(scheme(b, true, false, false).quant_max(), half - 1) << b;
    EXPECT_EQ(scheme(b, true, false, true).quant_min(), -half + 1) << b;
    EXPECT_EQ(scheme(b, true, false, true).quant_max(), half - 1) << b;
    EXPECT_EQ(scheme(b, false, false, false).quant_min(), 0) << b;
    EXPECT_EQ(scheme(b, false, false, false).quant_max(), full - 1) << b;
    EXPECT_EQ(scheme(b, false, false, true).quant_min(), 1) << b;
    EXPECT_EQ(scheme(b, false, false, true).quant_max(), full - 1) << b;
    // Narrow range has an odd number of codes, centred on 0 (signed) or on 2^(b-1) (unsigned).
    const QScheme sn = scheme(b, true, true, true), un = scheme(b, false, true, true);
    EXPECT_EQ(sn.quant_min() + sn.quant_max(), 0);
    EXPECT_EQ(un.quant_min() + un.quant_max(), 2 * half);
  }
  // The familiar ones, spelled out.
  EXPECT_EQ(scheme(8, true, false, false).quant_min(), -128);
  EXPECT_EQ(scheme(8, true, false, true).quant_min(), -127);
  EXPECT_EQ(scheme(8, false, false, false).quant_max(), 255);
  EXPECT_EQ(scheme(4, true, false, false).quant_min(), -8);
  EXPECT_EQ(scheme(2, true, false, true).quant_min(), -1);
  EXPECT_EQ(scheme(2, true, false, true).quant_max(), 1);
  EXPECT_EQ(scheme(2, false, false, true).quant_min(), 1);
  EXPECT_EQ(scheme(2, false, false, true).quant_max(), 3);
}

TEST(QScheme, BitsOutsideTwoToEightAreRejected) {
  for (int b : {-1, 0, 1, 9, 16, 32}) {
    QScheme s;
    s.bits = b;
    EXPECT_TRUE(throws_with([&] { s.validate(); }, {"bits must be in 2..8, got " + std::to_string(b)}));
    EXPECT_TRUE(throws_with([&] { (void)s.quant_min(); }, {"bits must be in 2..8"}));
    const float lo = -1.0f, hi = 1.0f;
    EXPECT_TRUE(throws_with([&] { (void)choose_qparams(s, {&lo, 1}, {&hi, 1}); }, {"got " + std::to_string(b)}));
  }
  QScheme pc;
  pc.per_channel = true;
  pc.axis = -1;
  EXPECT_TRUE(throws_with([&] { pc.validate(); }, {"axis", "-1"}));
}

TEST(QScheme, DescribeNamesTheSettings) {
  EXPECT_EQ(QScheme{}.describe(), "8-bit signed affine per-tensor, q in [-128, 127]");
  QScheme w{8, true, true, true, 0, true};
  EXPECT_EQ(w.describe(), "8-bit signed symmetric per-channel(axis 0) narrow, q in [-127, 127]");
}

TEST(ChooseQParams, AffineByHand) {
  // [-1, 3] over 255 steps: scale 4/255; zero point 0 - round(-1 / scale) = round(63.75) = 64.
  const float lo = -1.0f, hi = 3.0f;
  const QParams u = choose_qparams(scheme(8, false, false, false), {&lo, 1}, {&hi, 1});
  EXPECT_FLOAT_EQ(u.scale[0], 4.0f / 255.0f);
  EXPECT_EQ(u.zero_point[0], 64);
  EXPECT_EQ(u.axis, -1);
  EXPECT_FALSE(u.per_channel());
  EXPECT_EQ(u.quant_min, 0);
  EXPECT_EQ(u.quant_max, 255);
  const QParams s = choose_qparams(scheme(8, true, false, false), {&lo, 1}, {&hi, 1});
  EXPECT_FLOAT_EQ(s.scale[0], 4.0f / 255.0f);
  EXPECT_EQ(s.zero_point[0], -64);
  EXPECT_EQ(s.quant_min, -128);
}

TEST(ChooseQParams, RangeIsWidenedToContainZero) {
  const float lo = 2.0f, hi = 5.0f, zero = 0.0f;
  const QParams a = choose_qparams(scheme(8, true, false, false), {&lo, 1}, {&hi, 1});
  const QParams b = choose_qparams(scheme(8, true, false, false), {&zero, 1}, {&hi, 1});
  EXPECT_EQ(a.scale[0], b.scale[0]);
  EXPECT_FLOAT_EQ(a.scale[0], 5.0f / 255.0f);
  EXPECT_EQ(a.zero_point[0], -128);  // all-positive: zero is the lowest code
  const float nlo = -6.0f, nhi = -2.0f;
  const QParams c = choose_qparams(scheme(8, false, false, false), {&nlo, 1}, {&nhi, 1});
  EXPECT_FLOAT_EQ(c.scale[0], 6.0f / 255.0f);
  EXPECT_EQ(c.zero_point[0], 255);  // all-negative: zero is the highest code
}

TEST(ChooseQParams, SymmetricZeroPoints) {
  const float lo = -3.0f, hi = 1.5f;
  const QParams s = choose_qparams(scheme(8, true, true, false), {&lo, 1}, {&hi, 1});
  EXPECT_EQ(s.zero_point[0], 0);
  EXPECT_FLOAT_EQ(s.scale[0], 3.0f / 127.5f);
  const QParams sn = choose_qparams(scheme(8, true, true, true), {&lo, 1}, {&hi, 1});
  EXPECT_EQ(sn.zero_point[0], 0);
  EXPECT_FLOAT_EQ(sn.scale[0], 3.0f / 127.0f);
  const QParams u = choose_qparams(scheme(8, false, true, false), {&lo, 1}, {&hi, 1});
  EXPECT_EQ(u.zero_point[0], 128);
  const QParams un = choose_qparams(scheme(8, false, true, true), {&lo, 1}, {&hi, 1});
  EXPECT_EQ(un.zero_point[0], 128);
  EXPECT_FLOAT_EQ(un.scale[0], 3.0f / 127.0f);
  for (int b = 2; b <= 8; ++b) {
    EXPECT_EQ(choose_qparams(scheme(b, true, true, false), {&lo, 1}, {&hi, 1}).zero_point[0], 0);
    EXPECT_EQ(choose_qparams(scheme(b, false, true, true), {&lo, 1}, {&hi, 1}).zero_point[0], 1 << (b - 1));
  }
  // Narrow symmetric represents +-amax exactly (up to the float scale): the largest magnitude is a code.
  const QScheme w = scheme(8, true, true, true);
  const float inv = 1.0f / sn.scale[0];
  EXPECT_EQ(quantize_value(-3.0f, inv, 0, w.quant_min(), w.quant_max()), -127);
  EXPECT_EQ(quantize_value(3.0f, inv, 0, w.quant_min(), w.quant_max()), 127);
}

// For every scheme and many random ranges: real 0 maps exactly to the zero point and back to exactly
// 0, the zero point is a code, the scale is positive, and the ends of the range are represented to
// within half a step (affine) or clipped by at most one step (symmetric, non-narrow).
TEST(ChooseQParams, ZeroIsExactlyRepresentableForRandomRanges) {
  Rng rng(7);
  int checked = 0;
  for (int b = 2; b <= 8; ++b) {
    for (int sign = 0; sign < 2; ++sign) {
      for (int sym = 0; sym < 2; ++sym) {
        for (int narrow = 0; narrow < 2; ++narrow) {
          const QScheme s = scheme(b, sign, sym, narrow);
          const int32_t qmin = s.quant_min(), qmax = s.quant_max();
          for (int t = 0; t < 200; ++t) {
            const float mag = std::pow(10.0f, rng.uniform(-4.0f, 4.0f));
            float lo = mag * rng.uniform(-1.0f, 1.0f), hi = mag * rng.uniform(-1.0f, 1.0f);
            if (lo > hi) std::swap(lo, hi);
            const QParams qp = choose_qparams(s, {&lo, 1}, {&hi, 1});
            const float scale = qp.scale[0];
            const int32_t zp = qp.zero_point[0];
            ASSERT_TRUE(std::isfinite(scale) && scale >= static_cast<float>(kMinScale));
            ASSERT_GE(zp, qmin);
            ASSERT_LE(zp, qmax);
            const float inv = 1.0f / scale;
            ASSERT_EQ(quantize_value(0.0f, inv, zp, qmin, qmax), zp);
            ASSERT_EQ(dequant(zp, scale, zp), 0.0f);
            ASSERT_NO_THROW(qp.validate());
            const float elo = std::min(lo, 0.0f), ehi = std::max(hi, 0.0f);
            const float slack = sym ? scale * 1.0001f : 0.5f * scale * 1.0001f + 1e-6f * mag;
            EXPECT_NEAR(dequant(quantize_value(elo, inv, zp, qmin, qmax), scale, zp), elo, slack);
            EXPECT_NEAR(dequant(quantize_value(ehi, inv, zp, qmin, qmax), scale, zp), ehi, slack);
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 7 * 8 * 200);
}

TEST(ChooseQParams, DegenerateRangesGetTheMinimumScale) {
  const float zero = 0.0f;
  for (bool sym : {false, true}) {
    for (bool sign : {false, true}) {
      const QScheme s = scheme(8, sign, sym, false);
      const QParams qp = choose_qparams(s, {&zero, 1}, {&zero, 1});
      EXPECT_EQ(qp.scale[0], static_cast<float>(kMinScale));
      const float inv = 1.0f / qp.scale[0];
      EXPECT_TRUE(std::isfinite(inv));
      EXPECT_EQ(quantize_value(0.0f, inv, qp.zero_point[0], qp.quant_min, qp.quant_max), qp.zero_point[0]);
    }
  }
  // A constant tensor: the range widens to [0, c] (or [c, 0]) and c is represented closely.
  const float c = 3.0f, nc = -0.25f;
  const QParams p = choose_qparams(scheme(8, true, false, false), {&c, 1}, {&c, 1});
  EXPECT_FLOAT_EQ(p.scale[0], 3.0f / 255.0f);
  EXPECT_EQ(p.zero_point[0], -128);
  const QParams n = choose_qparams(scheme(8, true, false, false), {&nc, 1}, {&nc, 1});
  EXPECT_FLOAT_EQ(n.scale[0], 0.25f / 255.0f);
  EXPECT_EQ(n.zero_point[0], 127);
  // A tiny but non-zero range is floored too, never below kMinScale.
  const float tiny = 1e-12f;
  EXPECT_EQ(choose_qparams(scheme(8, true, false, false), {&zero, 1}, {&tiny, 1}).scale[0],
            static_cast<float>(kMinScale));
}

TEST(ChooseQParams, NonFiniteOrInvertedRangesAreErrors) {
  const QScheme s;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float one = 1.0f, two = 2.0f;
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(s, {&nan, 1}, {&one, 1}); }, {"non-finite range", "nan"}));
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(s, {&one, 1}, {&inf, 1}); }, {"non-finite range", "inf"}));
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(s, {&two, 1}, {&one, 1}); }, {"min 2 > max 1"}));
  // Per channel, the message names the channel.
  QScheme pc = s;
  pc.per_channel = true;
  const std::vector<float> lo{-1.0f, -1.0f, nan}, hi{1.0f, 1.0f, 1.0f};
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(pc, lo, hi); }, {"non-finite range", "channel 2"}));
}

TEST(ChooseQParams, PerChannelAndPerTensor) {
  QScheme pc{8, true, true, true, 1, true};
  const std::vector<float> lo{-1.0f, 0.0f, -0.5f}, hi{0.5f, 0.0f, 2.0f};
  const QParams qp = choose_qparams(pc, lo, hi);
  EXPECT_TRUE(qp.per_channel());
  EXPECT_EQ(qp.axis, 1);
  ASSERT_EQ(qp.scale.size(), 3u);
  EXPECT_FLOAT_EQ(qp.scale[0], 1.0f / 127.0f);
  EXPECT_EQ(qp.scale[1], static_cast<float>(kMinScale));
  EXPECT_FLOAT_EQ(qp.scale[2], 2.0f / 127.0f);
  EXPECT_EQ(qp.zero_point, (std::vector<int32_t>{0, 0, 0}));
  // Each channel is exactly the per-tensor choice for its own range.
  QScheme pt = pc;
  pt.per_channel = false;
  for (size_t c = 0; c < 3; ++c) {
    const QParams one = choose_qparams(pt, {&lo[c], 1}, {&hi[c], 1});
    EXPECT_EQ(one.scale[0], qp.scale[c]);
    EXPECT_EQ(one.zero_point[0], qp.zero_point[c]);
  }
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(pt, lo, hi); }, {"per-tensor", "3 ranges"}));
  const std::vector<float> two{1.0f, 2.0f};
  EXPECT_TRUE(throws_with([&] { (void)choose_qparams(pc, lo, two); }, {"3 minima and 2 maxima"}));
}

TEST(QParamsValidate, RejectsInconsistentParameters) {
  QParams ok;
  ok.scale = {0.5f};
  ok.zero_point = {3};
  EXPECT_NO_THROW(ok.validate());
  QParams p = ok;
  p.scale = {0.0f};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"scale[0] = 0"}));
  p = ok;
  p.scale = {std::numeric_limits<float>::infinity()};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"scale[0] = inf"}));
  p = ok;
  p.zero_point = {200};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"zero_point[0] = 200", "[-128, 127]"}));
  p = ok;
  p.scale = {1.0f, 1.0f};
  p.zero_point = {0, 0};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"per-tensor", "2 scales"}));
  p.axis = 0;
  EXPECT_NO_THROW(p.validate());
  p.zero_point = {0};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"2 scales and 1 zero points"}));
}

// Mid-rise: 2^b odd codes [-(2^b - 1), 2^b - 1], signed symmetric only, 2 to 7 bits; choose_qparams puts
// the outer levels at the range's larger end (scale = max|x| / qmax) and marks the grid's codes odd.
TEST(QScheme, MidRiseGridsAndTheirParameters) {
  for (int b = 2; b <= 7; ++b) {
    QScheme s = scheme(b, true, true, false);
    s.mid_rise = true;
    EXPECT_EQ(s.quant_min(), -((1 << b) - 1)) << b;
    EXPECT_EQ(s.quant_max(), (1 << b) - 1) << b;
  }
  QScheme two = scheme(2, true, true, false);
  two.mid_rise = true;
  EXPECT_NE(two.describe().find("mid-rise, odd q in [-3, 3]"), std::string::npos) << two.describe();
  for (auto [bits, is_signed, symmetric, narrow] :
       {std::tuple{8, true, true, false}, std::tuple{2, false, true, false}, std::tuple{2, true, false, false},
        std::tuple{2, true, true, true}}) {
    QScheme bad = scheme(bits, is_signed, symmetric, narrow);
    bad.mid_rise = true;
    EXPECT_TRUE(throws_with([&] { bad.validate(); }, {"mid-rise", "signed, symmetric, not narrow and of 2 to 7 bits"}))
        << bits << is_signed << symmetric << narrow;
  }
  const std::vector<float> lo = {-0.6f}, hi = {0.3f};
  const QParams qp = choose_qparams(two, lo, hi);
  EXPECT_TRUE(qp.odd_codes);
  EXPECT_EQ(qp.scale[0], 0.2f);  // the outer levels at +-0.6 = 3 * 0.2
  EXPECT_EQ(qp.zero_point[0], 0);
  EXPECT_EQ(qp.levels(), 4);
  EXPECT_NO_THROW(qp.validate());
  QParams p = qp;
  p.zero_point = {1};
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"zero_point[0] = 1", "mid-rise", "expected 0"}));
  p = qp;
  p.quant_min = -2, p.quant_max = 2;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"odd codes", "[-2, 2]"}));
  p = qp;
  p.quant_min = -3, p.quant_max = 1;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"odd codes", "[-3, 1]"}));
  p.odd_codes = false;
  EXPECT_EQ(p.levels(), 5);
}

}  // namespace
}  // namespace qatlab
