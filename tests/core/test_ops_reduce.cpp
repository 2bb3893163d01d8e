// test_ops_reduce.cpp: sum and mean, whole-tensor and along a dimension, against plain loops, with
// their gradients.
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

TEST(ReduceOp, WholeTensorSumAndMean) {
  Rng rng(1);
  Tensor x = random_tensor({3, 4, 5}, rng);
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.data()[i];
  const Tensor total = sum(x), avg = mean(x);
  EXPECT_EQ(total.shape(), Shape{});
  EXPECT_EQ(avg.shape(), Shape{});
  EXPECT_NEAR(total.item(), s, 1e-5);
  EXPECT_NEAR(avg.item(), s / 60.0, 1e-6);
  EXPECT_TRUE(throws_with([] { mean(Tensor::zeros({0, 3})); }, {"mean", "(0, 3)"}));
  EXPECT_EQ(sum(Tensor::zeros({0})).item(), 0.0f);
}

TEST(ReduceOp, LargeSumIsAccurateAndDeterministic) {
  // Above the threading threshold; a float running sum would drift visibly over 300k values of ~1.
  Rng rng(2);
  Tensor x = random_tensor({300000}, rng, 0.5f, 1.5f);
  double s = 0.0;
  for (int64_t i = 0; i < x.numel(); ++i) s += x.data()[i];
  const float first = sum(x).item();
  EXPECT_NEAR(first, s, s * 1e-7);
  for (int rep = 0; rep < 3; ++rep) EXPECT_EQ(sum(x).item(), first);
}

TEST(ReduceOp, AlongEachDimensionMatchesLoops) {
  Rng rng(3);
  const int64_t A = 2, B = 3, C = 4;
  Tensor x = random_tensor({A, B, C}, rng);
  auto at = [&](int64_t a, int64_t b, int64_t c) { return static_cast<double>(x.data()[(a * B + b) * C + c]); };

  const Tensor s0 = sum(x, 0);  // (B, C)
  ASSERT_EQ(s0.shape(), (Shape{B, C}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) {
      double e = 0.0;
      for (int64_t a = 0; a < A; ++a) e += at(a, b, c);
      EXPECT_NEAR(s0.data()[b * C + c], e, 1e-6);
    }

  const Tensor m1 = mean(x, 1, /*keepdim=*/true);  // (A, 1, C)
  ASSERT_EQ(m1.shape(), (Shape{A, 1, C}));
  for (int64_t a = 0; a < A; ++a)
    for (int64_t c = 0; c < C; ++c) {
      double e = 0.0;
      for (int64_t b = 0; b < B; ++b) e += at(a, b, c);
      EXPECT_NEAR(m1.data()[a * C + c], e / B, 1e-6);
    }

  const Tensor s2 = sum(x, -1);  // (A, B)
  ASSERT_EQ(s2.shape(), (Shape{A, B}));
  const Tensor m2 = mean(x, 2);
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < B; ++b) {
      double e = 0.0;
      for (int64_t c = 0; c < C; ++c) e += at(a, b, c);
      EXPECT_NEAR(s2.data()[a * B + b], e, 1e-6);
      EXPECT_NEAR(m2.data()[a * B + b], e / C, 1e-6);
    }
  EXPECT_EQ(sum(x, -3, true).shape(), (Shape{1, B, C}));
}

TEST(ReduceOp, Gradients) {
  Rng rng(4);
  Tensor x = random_tensor({2, 3, 4}, rng);
  EXPECT_GRADS_OK([](In in) { return sum(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return mean(in[0]); }, {x});
  for (int64_t d = -3; d < 3; ++d) {
    EXPECT_GRADS_OK([d](In in) { return sum(in[0], d); }, {x});
    EXPECT_GRADS_OK([d](In in) { return mean(in[0], d, true); }, {x});
  }
}

TEST(ReduceOp, RejectsBadDims) {
  Tensor x = Tensor::zeros({2, 3});
  EXPECT_TRUE(throws_with([&] { sum(x, 2); }, {"sum", "dim 2", "(2, 3)"}));
  EXPECT_TRUE(throws_with([&] { mean(x, -3); }, {"mean", "dim -3", "(2, 3)"}));
  EXPECT_TRUE(throws_with([&] { mean(Tensor::zeros({2, 0}), 1); }, {"mean", "(2, 0)"}));
}

}  // namespace
}  // namespace qatlab
