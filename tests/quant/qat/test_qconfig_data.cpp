// test_qconfig_data.cpp: a QConfig as checkpoints store it (quant/qat/qconfig_data.h): every field survives
// the round trip, and a damaged document is one line naming the source, the line and the field.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "quant/qat/qconfig_data.h"

namespace qatlab {
namespace {

std::string error_of(const std::string& text) {
  try {
    qconfig_from_data(text, "ckpt.h5");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(QConfigData, EveryFieldSurvivesTheRoundTrip) {
  QConfig q = QConfig::from_options(4, 3, false, "ema", "histogram", {"features.0=8:8", "Linear=:6", "fc=5:"}, "lsq",
                                    "pact", "mse");
  q.set_lsq_grad_scale(LsqGradScale::Layer);
  q.set_lsq_step_bounds(4.5f);
  const QConfig back = qconfig_from_data(qconfig_to_data(q), "ckpt.h5");
  EXPECT_EQ(back.describe(), q.describe());
  for (const QuantizerSpec* s : {&back.weight, &back.activation}) {
    const QuantizerSpec& o = s == &back.weight ? q.weight : q.activation;
    EXPECT_EQ(s->scheme.bits, o.scheme.bits);
    EXPECT_EQ(s->scheme.is_signed, o.scheme.is_signed);
    EXPECT_EQ(s->scheme.symmetric, o.scheme.symmetric);
    EXPECT_EQ(s->scheme.per_channel, o.scheme.per_channel);
    EXPECT_EQ(s->scheme.axis, o.scheme.axis);
    EXPECT_EQ(s->scheme.narrow_range, o.scheme.narrow_range);
    EXPECT_EQ(s->observer, o.observer);
    EXPECT_EQ(s->method, o.method);
    EXPECT_EQ(s->lsq_init, o.lsq_init);
    EXPECT_EQ(s->lsq_grad_scale, o.lsq_grad_scale);
    EXPECT_EQ(s->lsq_step_bounds, o.lsq_step_bounds);
  }
  EXPECT_EQ(back.weight.lsq_grad_scale, LsqGradScale::Layer);
  EXPECT_EQ(back.weight.lsq_step_bounds, 4.5f);
  EXPECT_FALSE(qconfig_from_data(qconfig_to_data(QConfig{}), "ckpt.h5").weight.lsq_step_bounds.has_value());
  // A document without the field (every checkpoint before it) reads as the channel's count.
  EXPECT_FALSE(qconfig_from_data(qconfig_to_data(QConfig{}), "ckpt.h5").weight.lsq_grad_scale.has_value());
  // The LSQ init, where one is set (weights only here: activations are PACT's).
  EXPECT_EQ(back.weight.lsq_init, LsqInit::Mse);
  EXPECT_FALSE(back.activation.lsq_init.has_value());
  ASSERT_EQ(back.layer_bits.size(), 3u);
  EXPECT_EQ(back.layer_bits.at("Linear").weight_bits, 0);
  EXPECT_EQ(back.layer_bits.at("Linear").activation_bits, 6);
  EXPECT_EQ(back.layer_bits.at("fc").weight_bits, 5);
}

// Mid-rise weights are a setting of the whole config (weight_for applies it below 8 bits): written only
// when set, so that a document without it (every checkpoint before it) reads as it did.
TEST(QConfigData, MidRiseWeightsSurviveTheRoundTrip) {
  QConfig q = QConfig::from_options(2, 2, true, "minmax", "ema", {"fc=8:8"}, "lsq", "lsq", "mse");
  const std::string narrow = qconfig_to_data(q);
  EXPECT_EQ(narrow.find("weight_range"), std::string::npos) << narrow;
  q.set_weight_range(WeightRange::MidRise);
  const QConfig back = qconfig_from_data(qconfig_to_data(q), "ckpt.h5");
  EXPECT_EQ(back.weight_range(), WeightRange::MidRise);
  EXPECT_TRUE(back.weight_for("conv", "Conv2d").scheme.mid_rise);
  EXPECT_EQ(back.describe(), q.describe());
  EXPECT_EQ(qconfig_from_data(narrow, "ckpt.h5").weight_range(), WeightRange::Narrow);
  // Anything but mid-rise there is an error (the other ranges live in the weight scheme).
  std::string bad = qconfig_to_data(q);
  bad.replace(bad.find("weight_range: mid-rise"), 22, "weight_range: full");
  EXPECT_NE(error_of(bad).find("'weight_range' must be mid-rise"), std::string::npos) << error_of(bad);
}

TEST(QConfigData, ADamagedDocumentNamesTheSourceTheLineAndTheField) {
  const std::string good = qconfig_to_data(QConfig{});
  EXPECT_EQ(error_of(good), "");
  const auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << s;
    return s.replace(at, from.size(), to);
  };
  const std::string bits = error_of(replaced("bits: 8", "bits: 12"));
  EXPECT_NE(bits.find("ckpt.h5: stored quantization settings"), std::string::npos) << bits;
  EXPECT_NE(bits.find("2..8"), std::string::npos) << bits;
  EXPECT_NE(error_of(replaced("observer: minmax", "observer: median")).find("median"), std::string::npos);
  EXPECT_NE(error_of(replaced("method: observer", "methd: observer")).find("unknown field 'methd'"), std::string::npos);
  EXPECT_NE(error_of(replaced("qatlab-qconfig: 1", "qatlab-qconfig: 7")).find("version '7'"), std::string::npos);
  EXPECT_NE(error_of(replaced("method: observer", "method: observer, lsq_init: mse")).find("an LSQ init ('mse') is set for "
                                                                                       "a 'observer' quantizer"),
            std::string::npos);
  EXPECT_NE(error_of(replaced("method: observer", "method: lsq, lsq_init: median")).find("'median'"), std::string::npos);
  EXPECT_NE(error_of(replaced("method: observer", "method: lsq, lsq_grad_scale: tensor")).find("'tensor'"),
            std::string::npos);
  EXPECT_NE(error_of("weight: [").find("line"), std::string::npos);
  EXPECT_NE(error_of("[]").find("not a map"), std::string::npos);
}

}  // namespace
}  // namespace qatlab
