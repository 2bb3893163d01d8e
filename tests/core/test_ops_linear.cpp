// test_ops_linear.cpp: linear (y = x w^T + b) against a nested-loop reference, with its gradients.
//
// Shape letters: N batch, IN / OUT features.
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

// y (N, OUT) = x (N, IN) w^T + b, b may be undefined.
Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t N = x.size(0), IN = x.size(1), OUT = w.size(0);
  Tensor y = Tensor::empty({N, OUT});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OUT; ++o) {
      double s = b.defined() ? b.data()[o] : 0.0;
      for (int64_t i = 0; i < IN; ++i) s += static_cast<double>(x.data()[n * IN + i]) * w.data()[o * IN + i];
      y.data()[n * OUT + o] = static_cast<float>(s);
    }
  return y;
}

TEST(LinearOp, ForwardMatchesLoops) {
  Rng rng(3);
  Tensor x = random_tensor({5, 7}, rng);
  Tensor w = random_tensor({3, 7}, rng);
  Tensor b = random_tensor({3}, rng);
  EXPECT_TENSOR_NEAR(linear(x, w, b), ref_linear(x, w, b), 1e-5);
  EXPECT_TENSOR_NEAR(linear(x, w, Tensor()), ref_linear(x, w, Tensor()), 1e-5);
}

TEST(LinearOp, Gradients) {
  Rng rng(4);
  Tensor x = random_tensor({4, 6}, rng);
  Tensor w = random_tensor({3, 6}, rng);
  Tensor b = random_tensor({3}, rng);
  EXPECT_GRADS_OK([](In in) { return linear(in[0], in[1], in[2]); }, {x, w, b});
  EXPECT_GRADS_OK([](In in) { return linear(in[0], in[1], Tensor()); }, {x, w});
}

TEST(LinearOp, RejectsMismatchedShapes) {
  Tensor x = Tensor::zeros({4, 6});
  EXPECT_TRUE(throws_with([&] { linear(x, Tensor::zeros({3, 5}), Tensor()); }, {"linear", "(3, 5)", "(4, 6)"}));
  EXPECT_TRUE(throws_with([&] { linear(x, Tensor::zeros({3, 6}), Tensor::zeros({4})); }, {"linear", "(4)"}));
  EXPECT_TRUE(throws_with([&] { linear(Tensor::zeros({6}), Tensor::zeros({3, 6}), Tensor()); }, {"linear", "(6)"}));
}

}  // namespace
}  // namespace qatlab
