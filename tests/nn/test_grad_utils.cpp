// test_grad_utils.cpp: global gradient norm, clipping to a maximum norm, and the finiteness check.
#include "nn/grad_utils.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace qatlab {
namespace {

Tensor with_grad(const std::vector<float>& grad) {
  Tensor t = Tensor::zeros({static_cast<int64_t>(grad.size())});
  t.set_requires_grad(true);
  float* g = t.mutable_grad();
  for (size_t i = 0; i < grad.size(); ++i) g[i] = grad[i];
  return t;
}

TEST(GradUtils, ClipScalesDownToMaxNorm) {
  // Norm of (3, 4) and (12) together: sqrt(9 + 16 + 144) = 13.
  Tensor a = with_grad({3.0f, 4.0f});
  Tensor b = with_grad({12.0f});
  Tensor none = Tensor::zeros({5});  // no gradient: ignored
  const std::vector<ParamRef> params = {{"a", a}, {"b", b}, {"none", none}};
  EXPECT_DOUBLE_EQ(grad_norm(params), 13.0);
  EXPECT_FLOAT_EQ(clip_grad_norm(params, 6.5f), 13.0f);
  EXPECT_FLOAT_EQ(a.grad().to_vector()[0], 1.5f);
  EXPECT_FLOAT_EQ(a.grad().to_vector()[1], 2.0f);
  EXPECT_FLOAT_EQ(b.grad().to_vector()[0], 6.0f);
  EXPECT_NEAR(grad_norm(params), 6.5, 1e-6);
  EXPECT_FALSE(none.has_grad());
}

TEST(GradUtils, SmallGradientsAreLeftUntouched) {
  Tensor a = with_grad({0.3f, -0.4f});
  const std::vector<ParamRef> params = {{"a", a}};
  EXPECT_FLOAT_EQ(clip_grad_norm(params, 1.0f), 0.5f);
  EXPECT_EQ(a.grad().to_vector(), (std::vector<float>{0.3f, -0.4f}));  // bit for bit
  EXPECT_FLOAT_EQ(clip_grad_norm(params, 0.5f), 0.5f);                // exactly at the limit: no change
  EXPECT_EQ(a.grad().to_vector(), (std::vector<float>{0.3f, -0.4f}));
}

TEST(GradUtils, NormIsComputedInDouble) {
  // 1e20^2 overflows float; in double the norm is exact.
  Tensor a = with_grad({3e20f, 4e20f});
  const std::vector<ParamRef> params = {{"a", a}};
  EXPECT_NEAR(clip_grad_norm(params, 1.0f), 5e20f, 5e20f * 1e-6f);
  EXPECT_NEAR(a.grad().to_vector()[0], 0.6f, 1e-6f);
  EXPECT_NEAR(a.grad().to_vector()[1], 0.8f, 1e-6f);
}

TEST(GradUtils, NonFiniteNormIsReportedAndGradientsUntouched) {
  Tensor a = with_grad({1.0f, std::numeric_limits<float>::infinity()});
  Tensor b = with_grad({5.0f});
  const std::vector<ParamRef> params = {{"a", a}, {"b", b}};
  EXPECT_TRUE(std::isinf(clip_grad_norm(params, 1.0f)));
  EXPECT_EQ(b.grad().to_vector()[0], 5.0f);
}

TEST(GradUtils, RejectsBadMaxNorm) {
  Tensor a = with_grad({1.0f});
  const std::vector<ParamRef> params = {{"a", a}};
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN()}) {
    try {
      clip_grad_norm(params, bad);
      ADD_FAILURE() << "no exception for max_norm " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("max_norm must be > 0"), std::string::npos) << e.what();
    }
  }
}

TEST(GradUtils, GradsFinite) {
  Tensor a = with_grad({1.0f, -2.0f, 0.0f});
  Tensor none = Tensor::zeros({3});
  std::vector<ParamRef> params = {{"a", a}, {"none", none}};
  EXPECT_TRUE(grads_finite(params));
  a.mutable_grad()[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(grads_finite(params));
  a.mutable_grad()[1] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(grads_finite(params));
  a.mutable_grad()[1] = std::numeric_limits<float>::max();
  EXPECT_TRUE(grads_finite(params));
}

TEST(GradUtils, LargeTensorNormMatchesSerialSumAndIgnoresThreadCount) {
  // 200000 elements: several fixed-size blocks summed in parallel.
  std::vector<float> g(200000);
  double expected = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    g[i] = std::sin(0.01f * static_cast<float>(i));
    expected += static_cast<double>(g[i]) * g[i];
  }
  Tensor a = with_grad(g);
  const std::vector<ParamRef> params = {{"a", a}};
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = grad_norm(params);
  omp_set_num_threads(3);
  const double three = grad_norm(params);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, three);
  EXPECT_NEAR(one, std::sqrt(expected), 1e-9 * std::sqrt(expected));

  const float before = clip_grad_norm(params, 1.0f);
  EXPECT_FLOAT_EQ(before, static_cast<float>(one));
  EXPECT_NEAR(grad_norm(params), 1.0, 1e-5);
}

}  // namespace
}  // namespace qatlab
