// test_qconfig.cpp: QConfig defaults, from_options at every bit width, --layer-bits parsing and its errors,
// per-layer resolution (a name beats a type) and validate()'s refusals.
#include <gtest/gtest.h>

#include "core/gradcheck.h"

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "quant/qat/qconfig.h"

namespace qatlab {
namespace {

QConfig options(int w, int a, const std::vector<std::string>& layer_bits = {}) {
  return QConfig::from_options(w, a, true, "minmax", "ema", layer_bits);
}

TEST(QConfig, DefaultWeightsAreSignedSymmetricNarrowPerChannelMinMax) {
  const QConfig q;
  const QScheme& s = q.weight.scheme;
  EXPECT_EQ(s.bits, 8);
  EXPECT_TRUE(s.is_signed);
  EXPECT_TRUE(s.symmetric);
  EXPECT_TRUE(s.per_channel);
  EXPECT_EQ(s.axis, 0);
  EXPECT_TRUE(s.narrow_range);
  EXPECT_EQ(s.quant_min(), -127);
  EXPECT_EQ(s.quant_max(), 127);
  EXPECT_EQ(q.weight.observer, ObserverKind::MinMax);
  EXPECT_TRUE(q.layer_bits.empty());
  EXPECT_NO_THROW(q.validate());
}

TEST(QConfig, DefaultActivationsAreSignedAffinePerTensorEma) {
  const QConfig q;
  const QScheme& s = q.activation.scheme;
  EXPECT_EQ(s.bits, 8);
  EXPECT_TRUE(s.is_signed);
  EXPECT_FALSE(s.symmetric);
  EXPECT_FALSE(s.per_channel);
  EXPECT_FALSE(s.narrow_range);
  EXPECT_EQ(s.quant_min(), -128);
  EXPECT_EQ(s.quant_max(), 127);
  EXPECT_EQ(q.activation.observer, ObserverKind::Ema);
}

TEST(QConfig, FromOptionsAtEveryBitWidth) {
  for (int w = 2; w <= 8; ++w) {
    for (int a = 2; a <= 8; ++a) {
      const QConfig q = QConfig::from_options(w, a, true, "ema", "histogram", {});
      SCOPED_TRACE(::testing::Message() << "W" << w << "A" << a);
      EXPECT_EQ(q.weight.scheme.bits, w);
      EXPECT_EQ(q.activation.scheme.bits, a);
      // Weights keep the kernels' contract at every width: narrow symmetric, so [-(2^(w-1) - 1), 2^(w-1) - 1].
      EXPECT_EQ(q.weight.scheme.quant_min(), -((1 << (w - 1)) - 1));
      EXPECT_EQ(q.weight.scheme.quant_max(), (1 << (w - 1)) - 1);
      EXPECT_TRUE(q.weight.scheme.symmetric && q.weight.scheme.is_signed && q.weight.scheme.narrow_range);
      EXPECT_EQ(q.activation.scheme.quant_min(), -(1 << (a - 1)));
      EXPECT_EQ(q.activation.scheme.quant_max(), (1 << (a - 1)) - 1);
      EXPECT_EQ(q.weight.observer, ObserverKind::Ema);
      EXPECT_EQ(q.activation.observer, ObserverKind::Histogram);
      EXPECT_TRUE(q.weight.scheme.per_channel);
    }
  }
}

TEST(QConfig, FromOptionsPerTensorWeights) {
  const QConfig q = QConfig::from_options(8, 8, false, "minmax", "percentile", {});
  EXPECT_FALSE(q.weight.scheme.per_channel);
  EXPECT_EQ(q.activation.observer, ObserverKind::Percentile);
  // Per-tensor weights may use the histogram observers.
  EXPECT_NO_THROW(QConfig::from_options(8, 8, false, "histogram", "minmax", {}));
  EXPECT_NO_THROW(QConfig::from_options(8, 8, false, "percentile", "minmax", {}));
}

TEST(QConfig, FromOptionsRejectsBitsOutsideTwoToEight) {
  EXPECT_TRUE(test::throws_with([] { options(1, 8); }, {"--wbits", "2..8", "1"}));
  EXPECT_TRUE(test::throws_with([] { options(9, 8); }, {"--wbits", "9"}));
  EXPECT_TRUE(test::throws_with([] { options(8, 1); }, {"--abits", "1"}));
  EXPECT_TRUE(test::throws_with([] { options(8, 9); }, {"--abits", "9"}));
  EXPECT_TRUE(test::throws_with([] { options(0, 8); }, {"--wbits", "0"}));
  EXPECT_TRUE(test::throws_with([] { options(8, -3); }, {"--abits", "-3"}));
}

TEST(QConfig, FromOptionsCollectsLayerBits) {
  const QConfig q = options(4, 4, {"features.0=8:8", "Linear=4:", "x=:6"});
  ASSERT_EQ(q.layer_bits.size(), 3u);
  EXPECT_EQ(q.layer_bits.at("features.0").weight_bits, 8);
  EXPECT_EQ(q.layer_bits.at("features.0").activation_bits, 8);
  EXPECT_EQ(q.layer_bits.at("Linear").weight_bits, 4);
  EXPECT_EQ(q.layer_bits.at("Linear").activation_bits, 0);
  EXPECT_EQ(q.layer_bits.at("x").weight_bits, 0);
  EXPECT_EQ(q.layer_bits.at("x").activation_bits, 6);
  EXPECT_TRUE(test::throws_with([] { options(8, 8, {"features.0=8:8", "fc=9:"}); }, {"fc=9:"}));
}

TEST(ParseLayerBits, ParsesBothSidesAndEmptySides) {
  auto [name, bits] = parse_layer_bits("features.0=8:8");
  EXPECT_EQ(name, "features.0");
  EXPECT_EQ(bits.weight_bits, 8);
  EXPECT_EQ(bits.activation_bits, 8);

  std::tie(name, bits) = parse_layer_bits("Linear=4:");
  EXPECT_EQ(name, "Linear");
  EXPECT_EQ(bits.weight_bits, 4);
  EXPECT_EQ(bits.activation_bits, 0);

  std::tie(name, bits) = parse_layer_bits("x=:6");
  EXPECT_EQ(name, "x");
  EXPECT_EQ(bits.weight_bits, 0);
  EXPECT_EQ(bits.activation_bits, 6);

  std::tie(name, bits) = parse_layer_bits("classifier.4=2:3");
  EXPECT_EQ(name, "classifier.4");
  EXPECT_EQ(bits.weight_bits, 2);
  EXPECT_EQ(bits.activation_bits, 3);

  std::tie(name, bits) = parse_layer_bits("input=:");
  EXPECT_EQ(name, "input");
  EXPECT_EQ(bits.weight_bits, 0);
  EXPECT_EQ(bits.activation_bits, 0);
}

TEST(ParseLayerBits, RejectsMalformedText) {
  // Shape errors name the text and the expected form.
  for (const std::string text : {"features.0", "features.0:8:8", "=8:8", "fc=8", "fc=88", ""}) {
    SCOPED_TRACE("'" + text + "'");
    EXPECT_TRUE(test::throws_with([&] { parse_layer_bits(text); }, {"'" + text + "'", "NAME=W:A"}));
  }
  // Junk where a number should be.
  for (const std::string text : {"fc=x:8", "fc=8:y", "fc=8x:8", "fc=8:8:8", "fc=8 :8", "fc=8.0:8", "fc==8:8"}) {
    SCOPED_TRACE("'" + text + "'");
    EXPECT_TRUE(test::throws_with([&] { parse_layer_bits(text); }, {text}));
  }
}

TEST(ParseLayerBits, RejectsBitsOutsideTwoToEight) {
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=1:8"); }, {"fc=1:8", "2..8", "got 1"}));
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=9:8"); }, {"fc=9:8", "got 9"}));
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=8:1"); }, {"fc=8:1", "got 1"}));
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=:9"); }, {"fc=:9", "got 9"}));
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=0:8"); }, {"fc=0:8", "got 0"}));
  EXPECT_TRUE(test::throws_with([] { parse_layer_bits("fc=-4:8"); }, {"fc=-4:8"}));
  for (int b = 2; b <= 8; ++b) {
    EXPECT_EQ(parse_layer_bits("fc=" + std::to_string(b) + ":").second.weight_bits, b);
    EXPECT_EQ(parse_layer_bits("fc=:" + std::to_string(b)).second.activation_bits, b);
  }
}

TEST(QConfigResolution, NameBeatsType) {
  QConfig q = options(4, 5);
  q.layer_bits["features.0"] = {8, 7};
  q.layer_bits["Conv2d"] = {3, 3};
  EXPECT_EQ(q.weight_for("features.0", "Conv2d").scheme.bits, 8);
  EXPECT_EQ(q.activation_for("features.0", "Conv2d").scheme.bits, 7);
  // Another conv gets the type's override.
  EXPECT_EQ(q.weight_for("features.4", "Conv2d").scheme.bits, 3);
  EXPECT_EQ(q.activation_for("features.4", "Conv2d").scheme.bits, 3);
}

TEST(QConfigResolution, TypeAppliesWhenNoNameAndGlobalOtherwise) {
  QConfig q = options(4, 5, {"Linear=6:", "Conv2d=:3"});
  EXPECT_EQ(q.weight_for("classifier.0", "Linear").scheme.bits, 6);
  EXPECT_EQ(q.activation_for("classifier.0", "Linear").scheme.bits, 5);  // empty side: the global value
  EXPECT_EQ(q.weight_for("features.0", "Conv2d").scheme.bits, 4);
  EXPECT_EQ(q.activation_for("features.0", "Conv2d").scheme.bits, 3);
  // No override at all: the global settings, whole.
  const QuantizerSpec w = q.weight_for("other", "Residual"), a = q.activation_for("other", "Residual");
  EXPECT_EQ(w.scheme.bits, 4);
  EXPECT_EQ(a.scheme.bits, 5);
}

TEST(QConfigResolution, OverridesChangeOnlyTheBits) {
  QConfig q = QConfig::from_options(8, 8, false, "ema", "histogram", {"fc=3:2"});
  const QuantizerSpec w = q.weight_for("fc", "Linear"), a = q.activation_for("fc", "Linear");
  EXPECT_EQ(w.scheme.bits, 3);
  EXPECT_EQ(w.scheme.quant_min(), -3);
  EXPECT_EQ(w.scheme.quant_max(), 3);
  EXPECT_TRUE(w.scheme.symmetric && w.scheme.narrow_range && w.scheme.is_signed);
  EXPECT_FALSE(w.scheme.per_channel);
  EXPECT_EQ(w.observer, ObserverKind::Ema);
  EXPECT_EQ(a.scheme.bits, 2);
  EXPECT_EQ(a.scheme.quant_min(), -2);
  EXPECT_EQ(a.scheme.quant_max(), 1);
  EXPECT_FALSE(a.scheme.symmetric);
  EXPECT_EQ(a.observer, ObserverKind::Histogram);
  // The global specs themselves are untouched.
  EXPECT_EQ(q.weight.scheme.bits, 8);
  EXPECT_EQ(q.activation.scheme.bits, 8);
}

TEST(QConfigValidate, PerChannelHistogramAndPercentileAreRefused) {
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(8, 8, true, "histogram", "ema", {}); },
                           {"weight observer", "histogram", "per-tensor only"}));
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(8, 8, true, "percentile", "ema", {}); },
                           {"weight observer", "percentile"}));
  QConfig q;
  q.weight.observer = ObserverKind::Histogram;
  EXPECT_TRUE(test::throws_with([&] { q.validate(); }, {"histogram"}));
  q.weight.scheme.per_channel = false;
  EXPECT_NO_THROW(q.validate());
  // A per-channel activation scheme with a histogram observer is refused the same way.
  QConfig r;
  r.activation.scheme.per_channel = true;
  r.activation.observer = ObserverKind::Percentile;
  EXPECT_TRUE(test::throws_with([&] { r.validate(); }, {"activation observer", "percentile"}));
}

TEST(QConfigValidate, UnknownObserversAreRefused) {
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(8, 8, true, "median", "ema", {}); },
                           {"weight observer", "'median'", "minmax, ema, histogram, percentile"}));
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(8, 8, true, "minmax", "EMA", {}); },
                           {"activation observer", "'EMA'"}));
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(8, 8, true, "minmax", "", {}); }, {"activation observer", "''"}));
}

TEST(QConfigValidate, LsqInitAppliesToLsqQuantizersOnly) {
  const QConfig q = QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "pact", "mse");
  EXPECT_EQ(q.weight.lsq_init, LsqInit::Mse);
  EXPECT_FALSE(q.activation.lsq_init.has_value());  // PACT learns a clip
  EXPECT_NE(q.describe().find("lsq (learned, init mse)"), std::string::npos) << q.describe();
  EXPECT_FALSE(QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq").weight.lsq_init.has_value());
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(4, 4, true, "minmax", "ema", {}, "observer", "pact", "mse"); },
                                {"--lsq-init mse needs an lsq or lsq+ quantizer"}));
  EXPECT_TRUE(test::throws_with([] { QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq", "MSE"); },
                                {"--lsq-init", "'MSE'", "lsq, minmax, mse"}));
}

TEST(QConfigValidate, LsqGradScaleAppliesToLsqQuantizersOnly) {
  QConfig q = QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "pact");
  q.set_lsq_grad_scale(LsqGradScale::Layer);
  EXPECT_EQ(q.weight.lsq_grad_scale, LsqGradScale::Layer);
  EXPECT_FALSE(q.activation.lsq_grad_scale.has_value());  // PACT learns a clip
  EXPECT_NE(q.describe().find("lsq (learned, gradient scale per layer)"), std::string::npos) << q.describe();
  EXPECT_TRUE(test::throws_with(
      [] { QConfig::from_options(4, 4, true, "minmax", "ema", {}, "observer", "pact").set_lsq_grad_scale(LsqGradScale::Layer); },
      {"--lsq-grad-scale layer needs an lsq or lsq+ quantizer"}));
  EXPECT_TRUE(test::throws_with([] { parse_lsq_grad_scale("tensor", "--lsq-grad-scale"); },
                                {"--lsq-grad-scale", "'tensor'", "channel, layer"}));
  QConfig observed;
  observed.weight.lsq_grad_scale = LsqGradScale::Layer;
  EXPECT_TRUE(test::throws_with([&] { observed.validate(); }, {"LSQ gradient scale ('layer')", "'observer' quantizer"}));
}

TEST(QConfigValidate, LsqStepBoundsApplyToLsqWeightsOnly) {
  QConfig q = QConfig::from_options(2, 2, true, "minmax", "ema", {}, "lsq", "lsq");
  q.set_lsq_step_bounds(4.0f);
  EXPECT_EQ(q.weight.lsq_step_bounds, 4.0f);
  EXPECT_FALSE(q.activation.lsq_step_bounds.has_value());
  EXPECT_EQ(q.weight_for("conv", "Conv2d").lsq_step_bounds, 4.0f);
  EXPECT_NE(q.describe().find("step bounds k=4"), std::string::npos) << q.describe();
  EXPECT_TRUE(test::throws_with(
      [] { QConfig::from_options(2, 2, true, "minmax", "ema", {}, "observer", "lsq").set_lsq_step_bounds(4.0f); },
      {"--lsq-step-bounds 4 needs lsq weights"}));
  for (float bad : {0.5f, NAN})
    EXPECT_TRUE(test::throws_with([&] { QConfig(q).set_lsq_step_bounds(bad); }, {"--lsq-step-bounds", "k >= 1"}));
  QConfig on_activations = QConfig::from_options(2, 2, true, "minmax", "ema", {}, "lsq", "lsq");
  on_activations.activation.lsq_step_bounds = 4.0f;
  EXPECT_TRUE(test::throws_with([&] { on_activations.validate(); }, {"weight steps only"}));
}

TEST(QConfigValidate, WeightsMustKeepTheKernelContract) {
  QConfig q;
  q.weight.scheme.symmetric = false;
  EXPECT_TRUE(test::throws_with([&] { q.validate(); }, {"weights", "symmetric"}));
  q = QConfig{};
  q.weight.scheme.is_signed = false;
  EXPECT_TRUE(test::throws_with([&] { q.validate(); }, {"signed"}));
  q = QConfig{};
  q.activation.scheme.bits = 12;
  EXPECT_TRUE(test::throws_with([&] { q.validate(); }, {"12"}));
}

// --weight-range full: every code below 8 bits ([-2, 1] at 2, [-8, 7] at 4); 8-bit layers, by the global
// width or by an override, stay [-127, 127] (-128 is outside the int8 kernels' contract).
TEST(QConfig, FullWeightRangeBelow8BitsOnly) {
  EXPECT_EQ(parse_weight_range("narrow", "--weight-range"), WeightRange::Narrow);
  EXPECT_EQ(parse_weight_range("full", "--weight-range"), WeightRange::Full);
  EXPECT_TRUE(test::throws_with([] { parse_weight_range("wide", "--weight-range"); },
                                {"--weight-range", "narrow, full or mid-rise", "'wide'"}));
  EXPECT_STREQ(weight_range_name(WeightRange::Full), "full");

  QConfig q = options(2, 2, {"fc=8:8", "stem=4:"});
  EXPECT_EQ(q.weight_range(), WeightRange::Narrow);
  EXPECT_EQ(q.weight_for("body", "Conv2d").scheme.quant_min(), -1);
  q.set_weight_range(WeightRange::Full);
  EXPECT_NO_THROW(q.validate());
  EXPECT_EQ(q.weight_range(), WeightRange::Full);
  const QScheme two = q.weight_for("body", "Conv2d").scheme, four = q.weight_for("stem", "Conv2d").scheme,
                eight = q.weight_for("fc", "Linear").scheme;
  EXPECT_EQ(std::make_pair(two.quant_min(), two.quant_max()), std::make_pair(-2, 1));
  EXPECT_EQ(std::make_pair(four.quant_min(), four.quant_max()), std::make_pair(-8, 7));
  EXPECT_EQ(std::make_pair(eight.quant_min(), eight.quant_max()), std::make_pair(-127, 127));
  EXPECT_NE(q.describe().find("full range below 8 bits"), std::string::npos) << q.describe();

  QConfig w8 = options(8, 8, {});
  w8.set_weight_range(WeightRange::Full);
  const QScheme s = w8.weight_for("any", "Conv2d").scheme;
  EXPECT_EQ(std::make_pair(s.quant_min(), s.quant_max()), std::make_pair(-127, 127));

  EXPECT_TRUE(is_int8_weight_range(-1, 1) && is_int8_weight_range(-2, 1) && is_int8_weight_range(-127, 127));
  EXPECT_FALSE(is_int8_weight_range(-128, 127) || is_int8_weight_range(-3, 1) || is_int8_weight_range(0, 1));
}

// --weight-range mid-rise: below 8 bits, the odd codes [-(2^b - 1), 2^b - 1] (no level at 0); 8-bit layers
// stay [-127, 127], also when the global width is 8 and an override lowers a layer.
TEST(QConfig, MidRiseWeightsBelow8BitsOnly) {
  EXPECT_EQ(parse_weight_range("mid-rise", "--weight-range"), WeightRange::MidRise);
  EXPECT_STREQ(weight_range_name(WeightRange::MidRise), "mid-rise");
  QConfig q = options(2, 2, {"fc=8:8", "stem=3:"});
  q.set_weight_range(WeightRange::MidRise);
  EXPECT_NO_THROW(q.validate());
  EXPECT_EQ(q.weight_range(), WeightRange::MidRise);
  const QScheme two = q.weight_for("body", "Conv2d").scheme, three = q.weight_for("stem", "Conv2d").scheme,
                eight = q.weight_for("fc", "Linear").scheme;
  EXPECT_TRUE(two.mid_rise && three.mid_rise && !eight.mid_rise);
  EXPECT_EQ(std::make_pair(two.quant_min(), two.quant_max()), std::make_pair(-3, 3));
  EXPECT_EQ(std::make_pair(three.quant_min(), three.quant_max()), std::make_pair(-7, 7));
  EXPECT_EQ(std::make_pair(eight.quant_min(), eight.quant_max()), std::make_pair(-127, 127));
  EXPECT_NE(q.describe().find("mid-rise below 8 bits"), std::string::npos) << q.describe();
  // Back to narrow, and from a global width of 8: the base scheme itself never becomes mid-rise.
  q.set_weight_range(WeightRange::Narrow);
  EXPECT_FALSE(q.weight_for("body", "Conv2d").scheme.mid_rise);
  QConfig w8 = options(8, 8, {"stem=2:"});
  w8.set_weight_range(WeightRange::MidRise);
  EXPECT_NO_THROW(w8.validate());
  EXPECT_TRUE(w8.weight_for("stem", "Conv2d").scheme.mid_rise);
  EXPECT_FALSE(w8.weight_for("other", "Conv2d").scheme.mid_rise);
  // Set by hand on a narrow scheme, the flag is a contradiction.
  w8.weight.scheme.narrow_range = true;
  EXPECT_TRUE(test::throws_with([&] { w8.validate(); }, {"mid-rise", "narrow"}));
  EXPECT_TRUE(is_int8_weight_range(-3, 3) && is_int8_weight_range(-127, 127));
}

TEST(QConfig, DescribeListsSettingsAndOverrides) {
  const QConfig q = options(4, 6, {"features.0=8:", "Linear=:5"});
  const std::string d = q.describe();
  EXPECT_NE(d.find("weights: 4-bit"), std::string::npos) << d;
  EXPECT_NE(d.find("activations: 6-bit"), std::string::npos) << d;
  EXPECT_NE(d.find("minmax observer"), std::string::npos) << d;
  EXPECT_NE(d.find("ema observer"), std::string::npos) << d;
  EXPECT_NE(d.find("override features.0: W8 A-"), std::string::npos) << d;
  EXPECT_NE(d.find("override Linear: W- A5"), std::string::npos) << d;
}

}  // namespace
}  // namespace qatlab
