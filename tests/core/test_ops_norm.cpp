// test_ops_norm.cpp: batch_norm in training and evaluation mode against a nested-loop reference:
// normalisation, the running statistics' momentum update (unbiased variance), and the gradients of
// x, gamma and beta.
//
// Shape letters: N batch, C channels, S = H * W positions (1 for (N, C) inputs).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

struct RefBatchNorm {
  Tensor y;                                  // x's shape
  std::vector<double> mean, biased_var;      // (C)
};

// Training-mode batch norm over all axes but 1, in double: y = gamma (x - mean) / sqrt(var + eps) + beta.
RefBatchNorm ref_batch_norm_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / (N * C);
  RefBatchNorm r{Tensor::empty(x.shape()), std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < S; ++j) s += x.data()[(n * C + c) * S + j];
    const double mu = s / (N * S);
    double sq = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < S; ++j) sq += std::pow(x.data()[(n * C + c) * S + j] - mu, 2);
    const double var = sq / (N * S);
    r.mean[c] = mu;
    r.biased_var[c] = var;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < S; ++j) {
        const int64_t i = (n * C + c) * S + j;
        r.y.data()[i] = static_cast<float>(gamma.data()[c] * (x.data()[i] - mu) / std::sqrt(var + eps) + beta.data()[c]);
      }
  }
  return r;
}

TEST(BatchNormOp, TrainingForwardAndRunningStatsNC) {
  Rng rng(1);
  const int64_t N = 6, C = 4;
  const float momentum = 0.1f, eps = 1e-5f;
  Tensor x = random_tensor({N, C}, rng, -2.0f, 3.0f);
  Tensor gamma = random_tensor({C}, rng, 0.5f, 1.5f);
  Tensor beta = random_tensor({C}, rng);
  Tensor rm = Tensor::from_vector({C}, {0.5f, -0.5f, 0.0f, 1.0f});
  Tensor rv = Tensor::from_vector({C}, {1.0f, 2.0f, 0.5f, 1.0f});
  const std::vector<float> rm0 = rm.to_vector(), rv0 = rv.to_vector();

  const Tensor y = batch_norm(x, gamma, beta, rm, rv, /*training=*/true, momentum, eps);
  const RefBatchNorm ref = ref_batch_norm_train(x, gamma, beta, eps);
  EXPECT_TENSOR_NEAR(y, ref.y, 1e-5);
  for (int64_t c = 0; c < C; ++c) {
    const double unbiased = ref.biased_var[c] * N / (N - 1);
    EXPECT_NEAR(rm.data()[c], (1 - momentum) * rm0[c] + momentum * ref.mean[c], 1e-6);
    EXPECT_NEAR(rv.data()[c], (1 - momentum) * rv0[c] + momentum * unbiased, 1e-5);
  }
}

TEST(BatchNormOp, TrainingForwardAndRunningStatsNCHW) {
  Rng rng(2);
  const int64_t N = 3, C = 2, H = 4, W = 5, M = N * H * W;
  const float momentum = 0.25f, eps = 1e-3f;
  Tensor x = random_tensor({N, C, H, W}, rng, 1.0f, 4.0f);  // a large mean, to exercise the centring
  Tensor gamma = random_tensor({C}, rng, 0.5f, 1.5f);
  Tensor beta = random_tensor({C}, rng);
  Tensor rm = Tensor::zeros({C});
  Tensor rv = Tensor::ones({C});

  const Tensor y = batch_norm(x, gamma, beta, rm, rv, true, momentum, eps);
  const RefBatchNorm ref = ref_batch_norm_train(x, gamma, beta, eps);
  EXPECT_TENSOR_NEAR(y, ref.y, 1e-5);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(rm.data()[c], momentum * ref.mean[c], 1e-6);
    EXPECT_NEAR(rv.data()[c], (1 - momentum) + momentum * ref.biased_var[c] * M / (M - 1), 1e-5);
  }
  // Each channel's output has mean beta and (biased) std gamma * sqrt(var / (var + eps)).
  for (int64_t c = 0; c < C; ++c) {
    double s = 0.0, sq = 0.0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < H * W; ++j) {
        const double v = y.data()[(n * C + c) * H * W + j];
        s += v;
        sq += v * v;
      }
    const double mu = s / M;
    EXPECT_NEAR(mu, beta.data()[c], 1e-5);
    const double var = ref.biased_var[c];
    EXPECT_NEAR(std::sqrt(sq / M - mu * mu), std::abs(gamma.data()[c]) * std::sqrt(var / (var + eps)), 1e-4);
  }
}

TEST(BatchNormOp, EvalUsesRunningStatsAndLeavesThemAlone) {
  Rng rng(3);
  const int64_t N = 2, C = 3, H = 2, W = 2;
  const float eps = 1e-5f;
  Tensor x = random_tensor({N, C, H, W}, rng);
  Tensor gamma = random_tensor({C}, rng, 0.5f, 1.5f);
  Tensor beta = random_tensor({C}, rng);
  Tensor rm = Tensor::from_vector({C}, {0.1f, -0.2f, 0.3f});
  Tensor rv = Tensor::from_vector({C}, {0.5f, 2.0f, 1.5f});

  const Tensor y = batch_norm(x, gamma, beta, rm, rv, /*training=*/false, 0.1f, eps);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < H * W; ++j) {
        const int64_t i = (n * C + c) * H * W + j;
        const double e = gamma.data()[c] * (x.data()[i] - rm.data()[c]) / std::sqrt(rv.data()[c] + eps) + beta.data()[c];
        EXPECT_NEAR(y.data()[i], e, 1e-5);
      }
  EXPECT_EQ(rm.to_vector(), (std::vector<float>{0.1f, -0.2f, 0.3f}));
  EXPECT_EQ(rv.to_vector(), (std::vector<float>{0.5f, 2.0f, 1.5f}));
}

// f(x, gamma, beta) with fresh running statistics each call, so every evaluation sees the same state.
auto bn_fn(bool training) {
  return [training](In in) {
    const int64_t C = in[0].size(1);
    Tensor rm = Tensor::full({C}, 0.2f);
    Tensor rv = Tensor::full({C}, 1.5f);
    return batch_norm(in[0], in[1], in[2], rm, rv, training, 0.1f, 1e-5f);
  };
}

TEST(BatchNormOp, TrainingGradientsNC) {
  Rng rng(4);
  const int64_t C = 3;
  EXPECT_GRADS_OK(bn_fn(true), {random_tensor({5, C}, rng), random_tensor({C}, rng, 0.5f, 1.5f), random_tensor({C}, rng)});
}

TEST(BatchNormOp, TrainingGradientsNCHW) {
  Rng rng(5);
  const int64_t C = 2;
  EXPECT_GRADS_OK(bn_fn(true),
                  {random_tensor({2, C, 3, 3}, rng), random_tensor({C}, rng, 0.5f, 1.5f), random_tensor({C}, rng)});
}

TEST(BatchNormOp, EvalGradients) {
  Rng rng(6);
  const int64_t C = 3;
  EXPECT_GRADS_OK(bn_fn(false),
                  {random_tensor({2, C, 2, 2}, rng), random_tensor({C}, rng, 0.5f, 1.5f), random_tensor({C}, rng)});
}

// batch_norm_scaled(x, k) is batch_norm(x * k): outputs, running statistics, and in both modes.
TEST(BatchNormOp, ScaledEqualsBatchNormOfTheScaledInput) {
  Rng rng(7);
  const int64_t N = 3, C = 3, H = 3, W = 2;
  const Tensor x = random_tensor({N, C, H, W}, rng, -1.0f, 3.0f);
  const Tensor k = Tensor::from_vector({C}, {0.5f, -2.0f, 3.0f});  // a negative scale too (gamma < 0)
  const Tensor gamma = random_tensor({C}, rng, 0.5f, 1.5f), beta = random_tensor({C}, rng);
  for (bool training : {true, false}) {
    Tensor rm1 = Tensor::full({C}, 0.3f), rv1 = Tensor::full({C}, 1.2f);
    Tensor rm2 = Tensor::full({C}, 0.3f), rv2 = Tensor::full({C}, 1.2f);
    const Tensor y1 = batch_norm_scaled(x, k, gamma, beta, rm1, rv1, training, 0.1f, 1e-3f);
    const Tensor y2 = batch_norm(mul(x, reshape(k, {1, C, 1, 1})), gamma, beta, rm2, rv2, training, 0.1f, 1e-3f);
    EXPECT_TENSOR_NEAR(y1, y2, 1e-5);
    EXPECT_TENSOR_NEAR(rm1, rm2, 1e-6);
    EXPECT_TENSOR_NEAR(rv1, rv2, 1e-5);
  }
}

// f(x, k, gamma, beta): a large eps, so that k's gradient (proportional to eps in training) is well
// above the central differences' noise.
auto bn_scaled_fn(bool training) {
  return [training](In in) {
    const int64_t C = in[0].size(1);
    Tensor rm = Tensor::full({C}, 0.2f);
    Tensor rv = Tensor::full({C}, 1.5f);
    return batch_norm_scaled(in[0], in[1], in[2], in[3], rm, rv, training, 0.1f, 0.5f);
  };
}

TEST(BatchNormOp, ScaledTrainingGradients) {
  Rng rng(8);
  const int64_t C = 2;
  EXPECT_GRADS_OK(bn_scaled_fn(true), {random_tensor({2, C, 3, 3}, rng), Tensor::from_vector({C}, {0.7f, -1.3f}),
                                       random_tensor({C}, rng, 0.5f, 1.5f), random_tensor({C}, rng)});
}

TEST(BatchNormOp, ScaledEvalGradients) {
  Rng rng(9);
  const int64_t C = 3;
  EXPECT_GRADS_OK(bn_scaled_fn(false), {random_tensor({2, C, 2, 2}, rng), Tensor::from_vector({C}, {0.7f, -1.3f, 2.0f}),
                                        random_tensor({C}, rng, 0.5f, 1.5f), random_tensor({C}, rng)});
}

// The fused ReLU gives relu(batch_norm(...))'s values and gradients bit for bit, scaled or not, in both
// modes: it is the same arithmetic with one pass fewer.
TEST(BatchNormOp, FusedReluIsBitIdenticalToReluAfterBatchNorm) {
  Rng rng(10);
  const int64_t N = 4, C = 3, H = 5, W = 3;
  const Tensor x0 = random_tensor({N, C, H, W}, rng, -2.0f, 2.0f), dy = random_tensor({N, C, H, W}, rng);
  const Tensor k0 = Tensor::from_vector({C}, {0.5f, -2.0f, 3.0f});
  for (bool training : {true, false}) {
    for (bool scaled : {false, true}) {
      std::vector<std::vector<float>> grads[2], outs[2];
      for (int fused = 0; fused < 2; ++fused) {
        Tensor x = x0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true);
        Tensor gamma = Tensor::from_vector({C}, {0.9f, 1.2f, -0.7f}).set_requires_grad(true);
        Tensor beta = Tensor::from_vector({C}, {0.1f, -0.3f, 0.2f}).set_requires_grad(true);
        Tensor rm = Tensor::full({C}, 0.1f), rv = Tensor::full({C}, 1.3f);
        Tensor y;
        if (scaled)
          y = fused ? batch_norm_scaled(x, k, gamma, beta, rm, rv, training, 0.1f, 1e-3f, true)
                    : relu(batch_norm_scaled(x, k, gamma, beta, rm, rv, training, 0.1f, 1e-3f));
        else
          y = fused ? batch_norm_relu(x, gamma, beta, rm, rv, training, 0.1f, 1e-3f)
                    : relu(batch_norm(x, gamma, beta, rm, rv, training, 0.1f, 1e-3f));
        y.backward(dy);
        outs[fused] = {y.to_vector(), rm.to_vector(), rv.to_vector()};
        grads[fused] = {x.grad().to_vector(), gamma.grad().to_vector(), beta.grad().to_vector()};
        if (scaled) grads[fused].push_back(k.grad().to_vector());
      }
      EXPECT_EQ(outs[0], outs[1]) << "training " << training << ", scaled " << scaled;
      EXPECT_EQ(grads[0], grads[1]) << "training " << training << ", scaled " << scaled;
    }
  }
}

// Away from the kink: beta puts one channel's outputs well above 0 and the other's well below.
TEST(BatchNormOp, FusedReluGradients) {
  Rng rng(11);
  const int64_t C = 2;
  for (bool training : {true, false}) {
    EXPECT_GRADS_OK(
        [training](In in) {
          Tensor rm = Tensor::full({2}, 0.2f), rv = Tensor::full({2}, 1.5f);
          return batch_norm_relu(in[0], in[1], in[2], rm, rv, training, 0.1f, 1e-5f);
        },
        {random_tensor({2, C, 3, 3}, rng), Tensor::from_vector({C}, {0.2f, 0.3f}), Tensor::from_vector({C}, {1.5f, -1.5f})});
  }
}

TEST(BatchNormOp, RejectsBadShapes) {
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  EXPECT_TRUE(throws_with([&] { batch_norm(Tensor::zeros({4, 2}), Tensor::ones({3}), Tensor::zeros({3}), rm, rv, true, 0.1f, 1e-5f); },
                          {"batch_norm", "(4, 2)"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(Tensor::zeros({4, 3, 2}), Tensor::ones({3}), Tensor::zeros({3}), rm, rv, true, 0.1f, 1e-5f); },
                          {"batch_norm", "(4, 3, 2)"}));
  EXPECT_TRUE(throws_with([&] { batch_norm(Tensor::zeros({1, 3}), Tensor::ones({3}), Tensor::zeros({3}), rm, rv, true, 0.1f, 1e-5f); },
                          {"batch_norm", "(1, 3)"}));
  EXPECT_TRUE(throws_with([&] { batch_norm_scaled(Tensor::zeros({4, 3}), Tensor::ones({2}), Tensor::ones({3}), Tensor::zeros({3}), rm, rv, true, 0.1f, 1e-5f); },
                          {"batch_norm_scaled", "(4, 3)"}));
}

}  // namespace
}  // namespace qatlab
