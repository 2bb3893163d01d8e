// test_ops_autograd.cpp: how ops behave inside the autograd graph: gradients accumulate across uses
// and across backward calls, NoGradGuard records nothing, and the gradient checker itself catches a
// wrong backward.
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;

TEST(AutogradOps, TensorUsedTwiceGetsBothContributions) {
  Tensor x = Tensor::from_vector({3}, {1.0f, -2.0f, 0.5f}).set_requires_grad(true);
  mul(x, x).backward(Tensor::ones({3}));  // d(x^2) = 2x, one x from each operand
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2.0f, -4.0f, 1.0f}));

  Tensor y = Tensor::from_vector({2}, {3.0f, 4.0f}).set_requires_grad(true);
  Tensor w = Tensor::from_vector({2}, {10.0f, 20.0f});
  // y feeds two branches that meet again: d/dy (y * w + exp(0 * y) + y) = w + 1
  sum(add(add(mul(y, w), y), exp(scale(y, 0.0f)))).backward();
  EXPECT_EQ(y.grad().to_vector(), (std::vector<float>{11.0f, 21.0f}));
  EXPECT_FALSE(w.has_grad());  // a constant gets no gradient buffer
}

TEST(AutogradOps, SharedSubexpressionGradcheck) {
  Rng rng(1);
  Tensor x = random_tensor({4, 3}, rng);
  EXPECT_GRADS_OK([](In in) { return mul(in[0], exp(in[0])); }, {x});
  EXPECT_GRADS_OK([](In in) {
    Tensor h = tanh(in[0]);
    return add(mul(h, h), sum(h, 1, true));
  },
                  {x});
}

TEST(AutogradOps, GradientsAccumulateUntilZeroed) {
  Tensor x = Tensor::from_vector({2}, {1.0f, 2.0f}).set_requires_grad(true);
  sum(scale(x, 3.0f)).backward();
  sum(scale(x, 3.0f)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{6.0f, 6.0f}));
  x.zero_grad();
  sum(x).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1.0f, 1.0f}));
}

TEST(AutogradOps, NoGradGuardRecordsNothing) {
  Tensor x = Tensor::from_vector({2, 2}, {1, 2, 3, 4}).set_requires_grad(true);
  {
    NoGradGuard guard;
    EXPECT_FALSE(grad_enabled());
    Tensor y = sum(relu(matmul(x, x)));
    EXPECT_FALSE(y.requires_grad());
    EXPECT_TRUE(y.is_leaf());
    EXPECT_FLOAT_EQ(y.item(), 7.0f + 10.0f + 15.0f + 22.0f);  // values are still computed
    {
      NoGradGuard nested;
    }
    EXPECT_FALSE(grad_enabled());  // the nested guard restored "off", not "on"
  }
  EXPECT_TRUE(grad_enabled());
  Tensor z = mul(x, x);
  EXPECT_TRUE(z.requires_grad());
  EXPECT_FALSE(z.is_leaf());
}

TEST(AutogradOps, OpsOnConstantsRecordNothing) {
  Tensor a = Tensor::ones({2, 3});
  Tensor b = Tensor::ones({3});
  Tensor c = add(a, b);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_TRUE(c.is_leaf());
}

// ------------------------------------------------------------------------- the checker can fail

// x * 2 whose backward claims x * 3: the checker must refuse it and point at the input.
Tensor wrong_double(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) out.data()[i] = 2.0f * x.data()[i];
  record_op(out, "wrong_double", {x}, [x](const Tensor& g) {
    Tensor input = x;
    for (int64_t i = 0; i < input.numel(); ++i) input.mutable_grad()[i] += 3.0f * g.data()[i];
  });
  return out;
}

TEST(GradCheck, CatchesAWrongBackwardAndNamesTheElement) {
  Rng rng(2);
  Tensor a = random_tensor({2, 2}, rng);
  Tensor x = random_tensor({2, 2}, rng);
  const auto r = test::check_gradients([](In in) { return add(in[0], wrong_double(in[1])); }, {a, x});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.input, 1u);  // input 0 (a) is right, input 1 is wrong
  EXPECT_NEAR(r.analytic / r.numeric, 1.5, 1e-3);
  EXPECT_EQ(r.checked, 4 + 4);
  EXPECT_NE(r.message().find("FAILED"), std::string::npos);
}

TEST(GradCheck, ConstantsAreNotDifferentiated) {
  Rng rng(3);
  Tensor a = random_tensor({3}, rng);
  Tensor x = random_tensor({3}, rng);
  test::GradCheckOptions opts;
  opts.constants = {1};  // the wrong op's input is a constant, so only add's side is checked
  const auto r = test::check_gradients([](In in) { return add(in[0], wrong_double(in[1])); }, {a, x}, opts);
  EXPECT_TRUE(r.ok) << r.message();
  EXPECT_EQ(r.checked, 3);
}

TEST(GradCheck, ReportsAnOutputWithoutHistory) {
  Tensor x = Tensor::ones({2});
  const auto r = test::check_gradients([](In) { return Tensor::ones({2}); }, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message().find("does not depend"), std::string::npos);
}

}  // namespace
}  // namespace qatlab
