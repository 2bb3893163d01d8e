// test_qat_fusion.cpp: a QAT layer's BN, ReLU and output fake quantization as one op
// (batch_norm_scaled_quantized, QatLayer::set_output_fusion) against the three in turn: outputs,
// every parameter's gradient and every buffer (observer ranges, scales, running statistics) bit for
// bit over several training steps, for min/max and EMA observers and LSQ, 8 and 4 bits, LeNet-5 and
// ResNet-20 (whose residual adds take their output quantization into the add the same way: add_lsq,
// add_quantized); and the layers the fusion must leave alone (PACT, LSQ+, a NaN input) behave as
// without it.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/zoo.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/qconfig.h"

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
      // LSQ outputs: their fake quantization and backward go into BN's (batch_norm_scaled_lsq)
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

// The fused op against batch_norm_scaled and lsq_fake_quantize in turn: values and every gradient (x,
// the BN scale k, gamma, beta, the step) bit for bit, with and without relu, on (N, C, H, W) and (N, C)
// inputs whose codes fall inside the grid and beyond both ends.
TEST(QatFusion, BatchNormLsqOpEqualsTheOpsInTurn) {
  for (const Shape& shape : {Shape{3, 5, 7, 6}, Shape{9, 4}})
    for (bool relu : {false, true}) {
      SCOPED_TRACE(shape_str(shape) + (relu ? " relu" : ""));
      const int64_t c = shape[1];
      Rng rng(8);
      Tensor x = Tensor::empty(shape);
      for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = 3.0f * rng.normal();
      Tensor k = Tensor::empty({c}), gamma = Tensor::empty({c}), beta = Tensor::empty({c});
      for (int64_t i = 0; i < c; ++i) {
        k.data()[i] = 0.5f + 0.25f * static_cast<float>(i);
        gamma.data()[i] = 1.0f + 0.1f * rng.normal();
        beta.data()[i] = 0.2f * rng.normal();
      }
      Tensor dy = Tensor::empty(shape);
      for (int64_t i = 0; i < dy.numel(); ++i) dy.data()[i] = rng.normal();
      QScheme scheme;  // codes 0..15: clamps at both ends
      scheme.bits = 4;
      scheme.is_signed = false;
      const int32_t zp = 3;
      const float step_value = 0.09f;
      struct Result {
        std::vector<float> y, gx, gk, ggamma, gbeta, gstep, rm, rv;
      };
      const auto run = [&](bool fused) {
        Tensor xs = x.clone(), ks = k.clone(), gs = gamma.clone(), bs = beta.clone();
        Tensor step = Tensor::full({1}, step_value);
        for (Tensor* t : {&xs, &ks, &gs, &bs, &step}) t->set_requires_grad(true);
        Tensor rm = Tensor::zeros({c}), rv = Tensor::ones({c});
        const QParams qp = lsq_qparams(step, {zp}, scheme);
        const float grad_scale = 0.37f;
        Tensor y;
        if (fused) {
          const OutputGrid grid{qp.scale[0], 1.0f / qp.scale[0], zp, qp.quant_min, qp.quant_max};
          y = batch_norm_scaled_lsq(xs, ks, gs, bs, rm, rv, 0.1f, 1e-5f, relu, LsqStep{step, grid, grad_scale});
        } else {
          y = lsq_fake_quantize(batch_norm_scaled(xs, ks, gs, bs, rm, rv, true, 0.1f, 1e-5f, relu), step, {zp}, scheme,
                                {grad_scale});
        }
        sum(mul(y, dy)).backward();
        return Result{y.to_vector(), xs.grad().to_vector(), ks.grad().to_vector(), gs.grad().to_vector(),
                      bs.grad().to_vector(), step.grad().to_vector(), rm.to_vector(), rv.to_vector()};
      };
      const Result fused = run(true), apart = run(false);
      EXPECT_EQ(fused.y, apart.y);
      EXPECT_EQ(fused.gx, apart.gx);
      EXPECT_EQ(fused.gk, apart.gk);
      EXPECT_EQ(fused.ggamma, apart.ggamma);
      EXPECT_EQ(fused.gbeta, apart.gbeta);
      EXPECT_EQ(fused.gstep, apart.gstep);
      EXPECT_NE(fused.gstep[0], 0.0f);
      EXPECT_EQ(fused.rm, apart.rm);
      EXPECT_EQ(fused.rv, apart.rv);
      // Both ends of the grid were reached (the step's gradient has its clamped terms).
      const float lo = step_value * static_cast<float>(scheme.quant_min() - zp);
      const float hi = step_value * static_cast<float>(scheme.quant_max() - zp);
      EXPECT_NE(std::count(fused.y.begin(), fused.y.end(), hi), 0);
      if (!relu) {
        EXPECT_NE(std::count(fused.y.begin(), fused.y.end(), lo), 0);
      }
    }
}

Tensor normal_tensor(const Shape& shape, Rng& rng) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

// add_lsq against add (or add_relu) and lsq_fake_quantize in turn: the given values come out, and the
// gradients of both operands and of the step are bit for bit the separate ops'.
TEST(QatFusion, AddLsqOpEqualsTheOpsInTurn) {
  for (const Shape& shape : {Shape{3, 5, 7, 6}, Shape{9, 4}})
    for (bool relu : {false, true}) {
      SCOPED_TRACE(shape_str(shape) + (relu ? " relu" : ""));
      Rng rng(4);
      const Tensor a = normal_tensor(shape, rng), b = normal_tensor(shape, rng), dy = normal_tensor(shape, rng);
      QScheme scheme;  // codes 0..15 with the zero point at 3: clamps at both ends
      scheme.bits = 4;
      scheme.is_signed = false;
      const int32_t zp = 3;
      const float grad_scale = 0.41f;
      struct Result {
        std::vector<float> y, ga, gb, gstep;
      };
      const auto run = [&](bool fused) {
        Tensor as = a.clone(), bs = b.clone(), step = Tensor::full({1}, 0.15f);
        for (Tensor* t : {&as, &bs, &step}) t->set_requires_grad(true);
        const QParams qp = lsq_qparams(step, {zp}, scheme);
        Tensor y;
        if (fused) {
          const OutputGrid grid{qp.scale[0], 1.0f / qp.scale[0], zp, qp.quant_min, qp.quant_max};
          Tensor values = Tensor::full(shape, 0.5f);
          y = add_lsq(as, bs, relu, LsqStep{step, grid, grad_scale}, values);
          EXPECT_TRUE(y.same(values));
        } else {
          y = lsq_fake_quantize(relu ? add_relu(as, bs) : add(as, bs), step, {zp}, scheme, {grad_scale});
        }
        sum(mul(y, dy)).backward();
        return Result{y.to_vector(), as.grad().to_vector(), bs.grad().to_vector(), step.grad().to_vector()};
      };
      const Result fused = run(true), apart = run(false);
      EXPECT_EQ(fused.ga, apart.ga);
      EXPECT_EQ(fused.gb, apart.gb);
      EXPECT_EQ(fused.gstep, apart.gstep);
      EXPECT_NE(fused.gstep[0], 0.0f);
      // Some gradients pass and some are stopped, by the grid's ends (and relu).
      EXPECT_NE(std::count(fused.ga.begin(), fused.ga.end(), 0.0f), 0);
      EXPECT_NE(std::count(fused.ga.begin(), fused.ga.end(), 0.0f), static_cast<long>(fused.ga.size()));
    }
}

// add_quantized against add (or add_relu) and fake_quantize in turn on an observer's fixed grid: the
// given values come out, and both operands' gradients are bit for bit the separate ops'.
TEST(QatFusion, AddQuantizedOpEqualsTheOpsInTurn) {
  for (const Shape& shape : {Shape{3, 5, 7, 6}, Shape{9, 4}, Shape{70000}})
    for (bool relu : {false, true}) {
      SCOPED_TRACE(shape_str(shape) + (relu ? " relu" : ""));
      Rng rng(4);
      const Tensor a = normal_tensor(shape, rng), b = normal_tensor(shape, rng), dy = normal_tensor(shape, rng);
      QParams qp;  // codes 0..15 with the zero point at 3: clamps at both ends
      qp.scale = {0.15f};
      qp.zero_point = {3};
      qp.quant_min = 0, qp.quant_max = 15;
      struct Result {
        std::vector<float> y, ga, gb;
      };
      const auto run = [&](bool fused) {
        Tensor as = a.clone(), bs = b.clone();
        for (Tensor* t : {&as, &bs}) t->set_requires_grad(true);
        Tensor y;
        if (fused) {
          const OutputGrid grid{qp.scale[0], 1.0f / qp.scale[0], qp.zero_point[0], qp.quant_min, qp.quant_max};
          Tensor values = Tensor::full(shape, 0.5f);
          y = add_quantized(as, bs, relu, grid, values);
          EXPECT_TRUE(y.same(values));
        } else {
          y = fake_quantize(relu ? add_relu(as, bs) : add(as, bs), qp);
        }
        // b also reaches the loss directly, as a residual block's input does: its gradient accumulates.
        sum(add(mul(y, dy), mul(bs, dy))).backward();
        return Result{y.to_vector(), as.grad().to_vector(), bs.grad().to_vector()};
      };
      const Result fused = run(true), apart = run(false);
      EXPECT_EQ(fused.ga, apart.ga);
      EXPECT_EQ(fused.gb, apart.gb);
      // Some gradients pass and some are stopped, by the grid's ends (and relu).
      EXPECT_NE(std::count(fused.ga.begin(), fused.ga.end(), 0.0f), 0);
      EXPECT_NE(std::count(fused.ga.begin(), fused.ga.end(), 0.0f), static_cast<long>(fused.ga.size()));
    }
}

// sum_range gives the range an observer of add (add_relu) would see, threaded or not, and no range
// when a sum it would see is NaN or infinite.
TEST(QatFusion, SumRangeIsTheRangeOfTheSum) {
  for (const int64_t n : {int64_t{37}, int64_t{100003}})
    for (bool relu : {false, true}) {
      Rng rng(9);
      Tensor a = Tensor::empty({n}), b = Tensor::empty({n});
      for (Tensor* t : {&a, &b})
        for (int64_t i = 0; i < n; ++i) t->data()[i] = rng.normal();
      const std::vector<float> s = (relu ? add_relu(a, b) : add(a, b)).to_vector();
      float lo = 0.0f, hi = 0.0f;
      ASSERT_TRUE(sum_range(a, b, relu, &lo, &hi));
      EXPECT_EQ(lo, *std::min_element(s.begin(), s.end()));
      EXPECT_EQ(hi, *std::max_element(s.begin(), s.end()));
      // (relu's output is 0 for a NaN or -Inf sum, as add_relu's is: only +Inf reaches the observer.)
      const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
      for (const float bad : relu ? std::vector<float>{inf} : std::vector<float>{nan, inf, -inf}) {
        Tensor c = a.clone();
        c.data()[n - 1] = bad;
        EXPECT_FALSE(sum_range(c, b, relu, &lo, &hi)) << bad;
      }
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
