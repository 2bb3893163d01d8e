// test_profiler.cpp: the profiler charges ops to the module scopes they ran in, forward and backward,
// splits conv2d's backward into its named parts, and records nothing while no session is open.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "core/profiler.h"

namespace qatlab {
namespace {

const Profiler::Row* find_row(const std::vector<Profiler::Row>& rows, const std::string& scope, const std::string& op) {
  for (const Profiler::Row& r : rows)
    if (r.scope == scope && r.op == op) return &r;
  return nullptr;
}

// Two stand-in "modules" (any address names a scope) run a conv and a relu; the loss runs outside both.
Tensor profiled_step(Profiler& profiler) {
  static const int conv_module = 0, relu_module = 0;
  profiler.name_module(&conv_module, "net.conv");
  profiler.name_module(&relu_module, "net.relu");
  Rng rng(3);
  Tensor x = Tensor::empty({2, 3, 6, 6}), w = Tensor::empty({4, 3, 3, 3});
  for (Tensor* t : {&x, &w})
    for (int64_t i = 0; i < t->numel(); ++i) t->data()[i] = rng.normal();
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  ProfilerSession session(profiler);
  Tensor y;
  {
    ProfileScope scope(&conv_module);
    y = conv2d(x, w, Tensor(), Conv2dParams{1, 1, 1, 1, 1});
  }
  {
    ProfileScope scope(&relu_module);
    y = relu(y);
  }
  Tensor loss = sum(y);
  loss.backward();
  return x;
}

TEST(Profiler, ChargesOpsToTheirScopesForwardAndBackward) {
  Profiler profiler;
  const Tensor x = profiled_step(profiler);
  const std::vector<Profiler::Row> rows = profiler.rows();
  const Profiler::Row* conv = find_row(rows, "net.conv", "conv2d");
  const Profiler::Row* relu = find_row(rows, "net.relu", "relu");
  const Profiler::Row* loss = find_row(rows, "", "sum");
  ASSERT_NE(conv, nullptr);
  ASSERT_NE(relu, nullptr);
  ASSERT_NE(loss, nullptr);
  EXPECT_EQ(conv->calls, 1);
  EXPECT_EQ(relu->calls, 1);
  EXPECT_GT(conv->backward_s, 0.0);
  EXPECT_GT(relu->backward_s, 0.0);
  EXPECT_EQ(find_row(rows, "net.relu", "conv2d"), nullptr) << "an op is charged to the scope it ran in only";
  // Execution order: the conv's row comes before the relu's.
  EXPECT_LT(conv - rows.data(), relu - rows.data());
  EXPECT_TRUE(x.has_grad());
}

TEST(Profiler, SplitsConvBackwardIntoInputAndWeightGradient) {
  Profiler profiler;
  profiled_step(profiler);
  const std::vector<Profiler::Row> rows = profiler.rows();
  const Profiler::Row* conv = find_row(rows, "net.conv", "conv2d");
  const Profiler::Row* input_grad = find_row(rows, "net.conv", "conv2d.input_grad");
  const Profiler::Row* weight_grad = find_row(rows, "net.conv", "conv2d.weight_grad");
  ASSERT_NE(conv, nullptr);
  ASSERT_NE(input_grad, nullptr);
  ASSERT_NE(weight_grad, nullptr);
  EXPECT_GT(input_grad->backward_s, 0.0);
  EXPECT_GT(weight_grad->backward_s, 0.0);
  EXPECT_LE(input_grad->backward_s + weight_grad->backward_s, conv->backward_s) << "the parts lie inside the op";
}

TEST(Profiler, RecordsNothingWithoutASession) {
  Profiler profiler;
  static const int module = 0;
  profiler.name_module(&module, "m");
  Tensor x = Tensor::ones({4});
  x.set_requires_grad(true);
  {
    ProfileScope scope(&module);
    Tensor y = sum(relu(x));
    y.backward();
  }
  EXPECT_TRUE(profiler.rows().empty());
  EXPECT_EQ(active_profiler(), nullptr);
}

TEST(Profiler, UnnamedModulesOpenNoScope) {
  Profiler profiler;
  static const int unnamed = 0;
  Tensor x = Tensor::ones({4});
  x.set_requires_grad(true);
  {
    ProfilerSession session(profiler);
    ProfileScope scope(&unnamed);
    EXPECT_EQ(profile_current_scope(), "");
    Tensor y = sum(relu(x));
    y.backward();
  }
  ASSERT_NE(find_row(profiler.rows(), "", "relu"), nullptr);
}

}  // namespace
}  // namespace qatlab
