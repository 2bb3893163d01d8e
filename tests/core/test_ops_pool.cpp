// test_ops_pool.cpp: max, average and global average pooling against nested-loop references (with
// stride and padding), with their gradients.
//
// Shape letters: N batch, C channels, H x W input, OH x OW output, K window size.
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

enum class PoolKind { kMax, kAvg };

// x (N, C, H, W) -> (N, C, OH, OW). Max ignores padding; average counts padding as zeros and always
// divides by K*K.
Tensor ref_pool(PoolKind kind, const Tensor& x, int64_t K, int64_t stride, int64_t pad) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = (H + 2 * pad - K) / stride + 1, OW = (W + 2 * pad - K) / stride + 1;
  Tensor y = Tensor::empty({N, C, OH, OW});
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        double best = -std::numeric_limits<double>::infinity(), total = 0.0;
        for (int64_t kh = 0; kh < K; ++kh)
          for (int64_t kw = 0; kw < K; ++kw) {
            const int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const double v = x.data()[(p * H + ih) * W + iw];
            best = std::max(best, v);
            total += v;
          }
        y.data()[(p * OH + oh) * OW + ow] = static_cast<float>(kind == PoolKind::kMax ? best : total / (K * K));
      }
  return y;
}

// A permutation of well-spaced values: no two equal, so max-pool windows have no ties that a
// finite-difference step could flip. Values are in [-spacing * n / 2, spacing * n / 2).
Tensor distinct_tensor(const Shape& shape, Rng& rng, float spacing) {
  Tensor t = Tensor::empty(shape);
  const int64_t n = t.numel();
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  for (int64_t i = 0; i < n; ++i) t.data()[i] = (static_cast<float>(order[i]) - n / 2) * spacing;
  return t;
}

struct PoolCase {
  Shape x;
  int64_t k, stride, pad;
};

const std::vector<PoolCase> kCases = {
    {{2, 3, 6, 6}, 2, 2, 0},  // the common 2x2 / 2 window
    {{2, 2, 7, 5}, 3, 2, 1},  // stride and padding, odd sizes
    {{1, 2, 5, 5}, 3, 1, 1},  // overlapping windows
    {{1, 1, 6, 7}, 2, 1, 1},  // padding on a 2-window
    {{1, 2, 8, 8}, 4, 3, 2},  // larger window, stride 3
};

TEST(PoolOp, MaxForwardMatchesLoops) {
  Rng rng(1);
  for (const PoolCase& pc : kCases) {
    SCOPED_TRACE(shape_str(pc.x) + " k" + std::to_string(pc.k) + " s" + std::to_string(pc.stride) + " p" +
                 std::to_string(pc.pad));
    Tensor x = random_tensor(pc.x, rng);
    EXPECT_TENSOR_NEAR(max_pool2d(x, pc.k, pc.stride, pc.pad), ref_pool(PoolKind::kMax, x, pc.k, pc.stride, pc.pad), 0.0);
  }
}

TEST(PoolOp, MaxPaddingNeverWins) {
  // All inputs negative: a padded zero would win if it were read.
  Tensor x = Tensor::full({1, 1, 3, 3}, -5.0f);
  x.data()[4] = -1.0f;
  const Tensor y = max_pool2d(x, 2, 1, 1);  // (1, 1, 4, 4)
  ASSERT_EQ(y.shape(), (Shape{1, 1, 4, 4}));
  for (float v : y.to_vector()) EXPECT_LT(v, 0.0f);
  EXPECT_EQ(y.data()[0], -5.0f);   // corner window holds only x[0][0] as a real value
  EXPECT_EQ(y.data()[5], -1.0f);   // windows touching the centre
}

TEST(PoolOp, AvgForwardMatchesLoops) {
  Rng rng(2);
  for (const PoolCase& pc : kCases) {
    SCOPED_TRACE(shape_str(pc.x) + " k" + std::to_string(pc.k));
    Tensor x = random_tensor(pc.x, rng);
    EXPECT_TENSOR_NEAR(avg_pool2d(x, pc.k, pc.stride, pc.pad), ref_pool(PoolKind::kAvg, x, pc.k, pc.stride, pc.pad), 1e-6);
  }
  // Padding counts as zeros: a corner window of ones with one padded row and column averages 1/4.
  const Tensor y = avg_pool2d(Tensor::ones({1, 1, 4, 4}), 2, 2, 1);
  EXPECT_FLOAT_EQ(y.data()[0], 0.25f);
}

TEST(PoolOp, GlobalAvgForwardMatchesLoops) {
  Rng rng(3);
  const int64_t N = 3, C = 4, H = 5, W = 6;
  Tensor x = random_tensor({N, C, H, W}, rng);
  const Tensor y = global_avg_pool2d(x);
  ASSERT_EQ(y.shape(), (Shape{N, C}));
  for (int64_t p = 0; p < N * C; ++p) {
    double s = 0.0;
    for (int64_t i = 0; i < H * W; ++i) s += x.data()[p * H * W + i];
    EXPECT_NEAR(y.data()[p], s / (H * W), 1e-6);
  }
}

TEST(PoolOp, Gradients) {
  Rng rng(4);
  for (const PoolCase& pc : kCases) {
    SCOPED_TRACE(shape_str(pc.x) + " k" + std::to_string(pc.k));
    const int64_t k = pc.k, s = pc.stride, p = pc.pad;
    // Spacing 0.05 > 2 * eps: a perturbation never changes which element wins a window.
    EXPECT_GRADS_OK([k, s, p](In in) { return max_pool2d(in[0], k, s, p); }, {distinct_tensor(pc.x, rng, 0.05f)});
    EXPECT_GRADS_OK([k, s, p](In in) { return avg_pool2d(in[0], k, s, p); }, {random_tensor(pc.x, rng)});
  }
  EXPECT_GRADS_OK([](In in) { return global_avg_pool2d(in[0]); }, {random_tensor({2, 3, 4, 5}, rng)});
}

TEST(PoolOp, RejectsBadSettings) {
  Tensor x = Tensor::zeros({1, 2, 4, 4});
  EXPECT_TRUE(throws_with([&] { max_pool2d(Tensor::zeros({2, 4, 4}), 2, 2); }, {"max_pool2d", "(2, 4, 4)"}));
  EXPECT_TRUE(throws_with([&] { avg_pool2d(x, 2, 0); }, {"avg_pool2d", "stride 0"}));
  EXPECT_TRUE(throws_with([&] { max_pool2d(x, 5, 1); }, {"max_pool2d", "(1, 2, 4, 4)"}));
  EXPECT_TRUE(throws_with([&] { global_avg_pool2d(Tensor::zeros({2, 3})); }, {"global_avg_pool2d", "(2, 3)"}));
}

}  // namespace
}  // namespace qatlab
