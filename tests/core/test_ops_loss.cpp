// test_ops_loss.cpp: log_softmax, cross_entropy (with and without label smoothing, against hand
// values) and dropout (statistics, determinism, gradients).
//
// Shape letters: N batch, C classes.
#include <cmath>
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

// ------------------------------------------------------------------------------------ log_softmax

TEST(LogSoftmaxOp, ForwardMatchesLoops) {
  Rng rng(1);
  const int64_t N = 4, C = 5;
  Tensor x = random_tensor({N, C}, rng, -3.0f, 3.0f);
  const Tensor y = log_softmax(x);
  ASSERT_EQ(y.shape(), (Shape{N, C}));
  for (int64_t n = 0; n < N; ++n) {
    double z = 0.0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(static_cast<double>(x.data()[n * C + c]));
    for (int64_t c = 0; c < C; ++c) EXPECT_NEAR(y.data()[n * C + c], x.data()[n * C + c] - std::log(z), 1e-6);
  }
}

TEST(LogSoftmaxOp, StableForLargeLogits) {
  const Tensor y = log_softmax(Tensor::from_vector({2, 3}, {1000.0f, 1000.0f, 1000.0f, -1000.0f, 0.0f, 1000.0f}));
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(y.data()[c], -std::log(3.0), 1e-6);
  EXPECT_FLOAT_EQ(y.data()[5], 0.0f);
  EXPECT_FLOAT_EQ(y.data()[4], -1000.0f);
  EXPECT_TRUE(std::isfinite(y.data()[3]));
}

TEST(LogSoftmaxOp, GradientAndErrors) {
  Rng rng(2);
  EXPECT_GRADS_OK([](In in) { return log_softmax(in[0]); }, {random_tensor({3, 4}, rng, -2.0f, 2.0f)});
  EXPECT_TRUE(throws_with([] { log_softmax(Tensor::zeros({2, 3, 4})); }, {"log_softmax", "(2, 3, 4)"}));
}

// ---------------------------------------------------------------------------------- cross_entropy

TEST(CrossEntropyOp, HandValues) {
  // Uniform logits: -log(1/C) whatever the label or smoothing.
  const std::vector<int32_t> labels01 = {0, 3};
  EXPECT_NEAR(cross_entropy(Tensor::zeros({2, 4}), labels01).item(), std::log(4.0), 1e-6);
  EXPECT_NEAR(cross_entropy(Tensor::zeros({2, 4}), labels01, 0.3f).item(), std::log(4.0), 1e-6);

  // Logits (0, ln 3): p = (1/4, 3/4).
  const float ln3 = static_cast<float>(std::log(3.0));
  const std::vector<int32_t> one = {1}, zero = {0};
  Tensor logits = Tensor::from_vector({1, 2}, {0.0f, ln3});
  EXPECT_NEAR(cross_entropy(logits, one).item(), -std::log(0.75), 1e-6);
  EXPECT_NEAR(cross_entropy(logits, zero).item(), -std::log(0.25), 1e-6);
  // Smoothing 0.2 over C = 2: target (0.1, 0.9) for label 1.
  EXPECT_NEAR(cross_entropy(logits, one, 0.2f).item(), -0.1 * std::log(0.25) - 0.9 * std::log(0.75), 1e-6);

  // Batch of two: the mean of the rows' losses.
  Tensor two = Tensor::from_vector({2, 2}, {0.0f, ln3, ln3, 0.0f});
  const std::vector<int32_t> labels = {1, 1};
  EXPECT_NEAR(cross_entropy(two, labels).item(), 0.5 * (-std::log(0.75) - std::log(0.25)), 1e-6);
}

TEST(CrossEntropyOp, HandGradient) {
  // d loss / d logits = (softmax - target) / N.
  const float ln3 = static_cast<float>(std::log(3.0));
  const std::vector<int32_t> one = {1};
  Tensor logits = Tensor::from_vector({1, 2}, {0.0f, ln3}).set_requires_grad(true);
  cross_entropy(logits, one, 0.2f).backward();
  EXPECT_NEAR(logits.grad().data()[0], 0.25 - 0.1, 1e-6);
  EXPECT_NEAR(logits.grad().data()[1], 0.75 - 0.9, 1e-6);

  Tensor batch = Tensor::from_vector({2, 2}, {0.0f, ln3, 0.0f, ln3}).set_requires_grad(true);
  const std::vector<int32_t> labels = {1, 0};
  cross_entropy(batch, labels).backward();
  EXPECT_EQ(batch.grad().shape(), (Shape{2, 2}));
  const std::vector<float> g = batch.grad().to_vector();
  EXPECT_NEAR(g[0], 0.125, 1e-6);   // (0.25 - 0) / 2
  EXPECT_NEAR(g[1], -0.125, 1e-6);  // (0.75 - 1) / 2
  EXPECT_NEAR(g[2], -0.375, 1e-6);  // (0.25 - 1) / 2
  EXPECT_NEAR(g[3], 0.375, 1e-6);   // (0.75 - 0) / 2
}

TEST(CrossEntropyOp, MatchesLogSoftmaxReference) {
  Rng rng(3);
  const int64_t N = 5, C = 7;
  Tensor x = random_tensor({N, C}, rng, -4.0f, 4.0f);
  const std::vector<int32_t> labels = {0, 6, 3, 3, 1};
  const float e = 0.1f;
  double expect = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    double z = 0.0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(static_cast<double>(x.data()[n * C + c]));
    for (int64_t c = 0; c < C; ++c) {
      const double t = (c == labels[n] ? 1.0 - e : 0.0) + e / C;
      expect -= t * (x.data()[n * C + c] - std::log(z));
    }
  }
  EXPECT_NEAR(cross_entropy(x, labels, e).item(), expect / N, 1e-5);
}

TEST(CrossEntropyOp, Gradients) {
  Rng rng(4);
  Tensor x = random_tensor({4, 5}, rng, -2.0f, 2.0f);
  EXPECT_GRADS_OK([](In in) { return cross_entropy(in[0], std::vector<int32_t>{4, 0, 2, 2}); }, {x});
  EXPECT_GRADS_OK([](In in) { return cross_entropy(in[0], std::vector<int32_t>{1, 3, 0, 4}, 0.15f); }, {x});
}

TEST(CrossEntropyOp, StableForLargeLogits) {
  Tensor x = Tensor::from_vector({2, 3}, {1e4f, 0.0f, -1e4f, 50.0f, 50.0f, 50.0f}).set_requires_grad(true);
  const std::vector<int32_t> labels = {0, 2};
  Tensor loss = cross_entropy(x, labels);
  EXPECT_NEAR(loss.item(), 0.5 * std::log(3.0), 1e-5);
  loss.backward();
  for (float g : x.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
}

TEST(CrossEntropyOp, RejectsBadLabelsAndSettings) {
  Tensor x = Tensor::zeros({3, 4});
  const std::vector<int32_t> bad = {0, 7, 1};
  EXPECT_TRUE(throws_with([&] { cross_entropy(x, bad); }, {"cross_entropy", "label 7", "index 1", "[0, 4)"}));
  const std::vector<int32_t> negative = {0, 1, -1};
  EXPECT_TRUE(throws_with([&] { cross_entropy(x, negative); }, {"label -1", "index 2"}));
  const std::vector<int32_t> short_labels = {0, 1};
  EXPECT_TRUE(throws_with([&] { cross_entropy(x, short_labels); }, {"2 labels", "(3, 4)"}));
  const std::vector<int32_t> ok = {0, 1, 2};
  EXPECT_TRUE(throws_with([&] { cross_entropy(x, ok, 1.0f); }, {"label_smoothing", "1"}));
  EXPECT_TRUE(throws_with([&] { cross_entropy(x, ok, -0.1f); }, {"label_smoothing", "-0.1"}));
  EXPECT_TRUE(throws_with([&] { cross_entropy(Tensor::zeros({3}), ok); }, {"cross_entropy", "(3)"}));
}

// ---------------------------------------------------------------------------------------- dropout

TEST(DropoutOp, EvalAndZeroPReturnTheInput) {
  Rng rng(5);
  Tensor x = random_tensor({4, 4}, rng);
  EXPECT_TRUE(dropout(x, 0.5f, /*training=*/false, rng).same(x));
  EXPECT_TRUE(dropout(x, 0.0f, /*training=*/true, rng).same(x));
}

TEST(DropoutOp, StatisticsOfTheMask) {
  Rng rng(6);
  const int64_t n = 200000;
  const float p = 0.3f;
  Tensor x = random_tensor({n}, rng, 1.0f, 2.0f);
  const Tensor y = dropout(x, p, true, rng);
  int64_t dropped = 0;
  double sum_x = 0.0, sum_y = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = y.data()[i];
    if (v == 0.0f) {
      ++dropped;
    } else {
      ASSERT_FLOAT_EQ(v, x.data()[i] / (1.0f - p));  // inverted scaling of the kept values
    }
    sum_x += x.data()[i];
    sum_y += v;
  }
  // The drop count is Binomial(n, p): std ~ 205, so 1% of n is about ten standard deviations.
  EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.01);
  EXPECT_NEAR(sum_y / sum_x, 1.0, 0.02);  // the expectation is preserved
}

TEST(DropoutOp, DeterministicForAFixedSeed) {
  Rng data_rng(7);
  Tensor x = random_tensor({1000}, data_rng);
  Rng a(42), b(42), c(43);
  const std::vector<float> ya = dropout(x, 0.5f, true, a).to_vector();
  EXPECT_EQ(ya, dropout(x, 0.5f, true, b).to_vector());
  EXPECT_NE(ya, dropout(x, 0.5f, true, c).to_vector());
  EXPECT_NE(ya, dropout(x, 0.5f, true, a).to_vector());  // the generator moved on
}

TEST(DropoutOp, GradientUsesTheSameMask) {
  Rng data_rng(8);
  Tensor x = random_tensor({6, 5}, data_rng);
  // A fresh generator with a fixed seed inside f: every evaluation draws the same mask.
  EXPECT_GRADS_OK([](In in) {
    Rng rng(99);
    return dropout(in[0], 0.4f, true, rng);
  },
                  {x});
  Tensor leaf = x.clone().set_requires_grad(true);
  Rng rng(99);
  Tensor y = dropout(leaf, 0.4f, true, rng);
  y.backward(Tensor::ones(y.shape()));
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_FLOAT_EQ(leaf.grad().data()[i], y.data()[i] == 0.0f ? 0.0f : 1.0f / 0.6f);
}

TEST(DropoutOp, RejectsBadP) {
  Rng rng(9);
  Tensor x = Tensor::ones({4});
  EXPECT_TRUE(throws_with([&] { dropout(x, 1.0f, true, rng); }, {"dropout", "1", "[0, 1)"}));
  EXPECT_TRUE(throws_with([&] { dropout(x, -0.5f, false, rng); }, {"dropout", "-0.5"}));
}

}  // namespace
}  // namespace qatlab
