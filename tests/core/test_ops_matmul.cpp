// test_ops_matmul.cpp: matmul against a nested-loop reference, with its gradients.
//
// Shape letters: (M, K) x (K, N) -> (M, N).
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

// (M, K) x (K, N) with a double accumulator.
Tensor ref_matmul(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Tensor out = Tensor::empty({M, N});
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < K; ++k) s += static_cast<double>(a.data()[i * K + k]) * b.data()[k * N + j];
      out.data()[i * N + j] = static_cast<float>(s);
    }
  return out;
}

TEST(MatmulOp, ForwardMatchesLoops) {
  Rng rng(1);
  for (const auto& [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{2, 3, 4}, {1, 1, 1}, {65, 33, 17}}) {
    Tensor a = random_tensor({m, k}, rng);
    Tensor b = random_tensor({k, n}, rng);
    EXPECT_TENSOR_NEAR(matmul(a, b), ref_matmul(a, b), 1e-5);
  }
}

TEST(MatmulOp, Gradients) {
  Rng rng(2);
  Tensor a = random_tensor({3, 4}, rng);
  Tensor b = random_tensor({4, 5}, rng);
  EXPECT_GRADS_OK([](In in) { return matmul(in[0], in[1]); }, {a, b});
  Tensor sq = random_tensor({3, 3}, rng);
  EXPECT_GRADS_OK([](In in) { return matmul(in[0], in[0]); }, {sq});  // both operands the same tensor
}

TEST(MatmulOp, RejectsMismatchedShapes) {
  EXPECT_TRUE(throws_with([] { matmul(Tensor::zeros({2, 3}), Tensor::zeros({4, 5})); }, {"matmul", "(2, 3)", "(4, 5)"}));
  EXPECT_TRUE(throws_with([] { matmul(Tensor::zeros({2, 3, 1}), Tensor::zeros({3, 5})); }, {"matmul", "(2, 3, 1)"}));
}

}  // namespace
}  // namespace qatlab
