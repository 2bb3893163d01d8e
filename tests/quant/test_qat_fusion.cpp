// test_qat_fusion.cpp: a QAT layer's BN, ReLU and output fake quantization as one op
// (batch_norm_scaled_quantized, QatLayer::set_output_fusion) against the three in turn: outputs,
// every parameter's gradient and every buffer (observer ranges, scales, running statistics) bit for
// bit over several training steps, for min/max and EMA observers and LSQ, 8 and 4 bits, LeNet-5 and
// ResNet-20; and the layers the fusion must leave alone (PACT, LSQ+, a NaN input) behave as without it.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/zoo.h"
#include "quant/prepare.h"
#include "quant/qat_layers.h"
#include "quant/qconfig.h"

namespace qatlab {
namespace {

struct Trace {
  std::vector<float> values;  // outputs, then gradients, then buffers, step after step
};

// Three training steps (forward, backward, a plain gradient step) of `model_name` prepared with `qc`,
// with the fusion on or off; everything the steps produce, in order.
Trace train_steps(const std::string& model_name, const ModelSpec& spec, const QConfig& qc, bool fusion) {
  QatLayer::set_output_fusion(fusion);
  Rng rng(21);
  ModulePtr model = prepare_qat(make_model(model_name, spec, rng), qc);
  model->set_training(true);
  Rng data(5);
  Trace t;
  for (int step = 0; step < 3; ++step) {
    Tensor x = Tensor::empty({4, spec.channels, spec.height, spec.width});
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = data.normal();
    for (const auto& [name, p] : model->named_parameters()) p.zero_grad();
    Tensor y = (*model)(x);
    sum(mul(y, y)).backward();
    const std::vector<float> out = y.to_vector();
    t.values.insert(t.values.end(), out.begin(), out.end());
    for (const auto& [name, p] : model->named_parameters()) {
      const std::vector<float> g = p.grad().to_vector();
      t.values.insert(t.values.end(), g.begin(), g.end());
      Tensor param = p;  // a handle on the same storage
      float* w = param.data();
      for (int64_t i = 0; i < p.numel(); ++i) w[i] -= 0.01f * g[i];
    }
    for (const auto& [name, b] : model->named_buffers()) {
      const std::vector<float> v = b.to_vector();
      t.values.insert(t.values.end(), v.begin(), v.end());
    }
  }
  QatLayer::set_output_fusion(true);
  return t;
}

TEST(QatFusion, FusedOutputQuantizationEqualsTheOpsInTurn) {
  const ModelSpec mnist{1, 28, 28, 10}, small_cifar{3, 12, 12, 10};
  struct Case {
    std::string model;
    ModelSpec spec;
    QConfig qc;
  };
  const std::vector<Case> cases = {
      {"lenet5", mnist, QConfig::from_options(8, 8, true, "minmax", "ema", {})},
      {"lenet5", mnist, QConfig::from_options(4, 4, true, "minmax", "minmax", {})},
      {"resnet20", small_cifar, QConfig::from_options(8, 8, true, "minmax", "minmax", {})},
      {"resnet20", small_cifar, QConfig::from_options(4, 4, false, "minmax", "ema", {})},
      // LSQ outputs: BN writes their fake-quantized values beside its own (batch_norm_scaled_and_quantized)
      {"lenet5", mnist, QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq")},
      {"resnet20", small_cifar, QConfig::from_options(4, 4, false, "minmax", "ema", {}, "lsq", "lsq")},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.model + " " + c.qc.describe());
    const Trace fused = train_steps(c.model, c.spec, c.qc, true);
    const Trace apart = train_steps(c.model, c.spec, c.qc, false);
    ASSERT_EQ(fused.values.size(), apart.values.size());
    for (size_t i = 0; i < fused.values.size(); ++i)
      ASSERT_EQ(fused.values[i], apart.values[i]) << "value " << i << " of " << fused.values.size();
  }
}

// The fusion applies only where the quantizer can take a range or a fixed grid: histogram observers,
// PACT and LSQ+ outputs go the unfused way and train the same either way.
TEST(QatFusion, QuantizersThatNeedTheValuesAreLeftAlone) {
  const ModelSpec mnist{1, 28, 28, 10};
  for (const QConfig& qc : {QConfig::from_options(4, 4, true, "minmax", "histogram", {}),
                            QConfig::from_options(4, 4, true, "minmax", "ema", {}, "observer", "pact"),
                            QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq+")}) {
    SCOPED_TRACE(qc.describe());
    const Trace fused = train_steps("lenet5", mnist, qc, true);
    const Trace apart = train_steps("lenet5", mnist, qc, false);
    ASSERT_EQ(fused.values, apart.values);
  }
}

// A NaN reaching a fused layer is reported by its observer exactly as without the fusion.
TEST(QatFusion, ANanInTheActivationsIsReportedAsBefore) {
  for (bool fusion : {true, false}) {
    QatLayer::set_output_fusion(fusion);
    Rng rng(3);
    ModulePtr model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), QConfig::from_options(8, 8, true, "minmax", "ema", {}));
    model->set_training(true);
    Tensor x = Tensor::zeros({2, 1, 28, 28});
    x.data()[5] = std::numeric_limits<float>::quiet_NaN();
    std::string message;
    try {
      (*model)(x);
    } catch (const std::exception& e) {
      message = e.what();
    }
    EXPECT_NE(message.find("NaN"), std::string::npos) << "fusion " << fusion << ": '" << message << "'";
  }
  QatLayer::set_output_fusion(true);
}

}  // namespace
}  // namespace qatlab
