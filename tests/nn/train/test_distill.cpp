// test_distill.cpp: the distillation loss: its value by hand, zero for a student that matches its teacher,
// the gradient checker in the student's logits at several temperatures (the teacher's take none), errors.
#include "nn/train/distill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;

// KL(softmax(t / T) || softmax(s / T)) of one row, in double.
double row_kl(const std::vector<double>& s, const std::vector<double>& t, double T) {
  auto softmax = [T](const std::vector<double>& z) {
    double m = -1e300, sum = 0.0;
    for (double v : z) m = std::max(m, v / T);
    std::vector<double> p;
    for (double v : z) p.push_back(std::exp(v / T - m)), sum += p.back();
    for (double& v : p) v /= sum;
    return p;
  };
  const std::vector<double> p = softmax(t), q = softmax(s);
  double kl = 0.0;
  for (size_t i = 0; i < p.size(); ++i) kl += p[i] * std::log(p[i] / q[i]);
  return kl;
}

TEST(Distillation, ValueIsTemperatureSquaredTimesTheMeanRowKl) {
  const std::vector<double> s0{1.0, -0.5, 2.0}, s1{0.0, 0.3, -1.0}, t0{0.5, 0.5, 3.0}, t1{-2.0, 1.0, 0.0};
  const Tensor s = Tensor::from_vector({2, 3}, {1.0f, -0.5f, 2.0f, 0.0f, 0.3f, -1.0f});
  const Tensor t = Tensor::from_vector({2, 3}, {0.5f, 0.5f, 3.0f, -2.0f, 1.0f, 0.0f});
  for (double T : {1.0, 2.0, 4.0}) {
    const double expected = T * T * (row_kl(s0, t0, T) + row_kl(s1, t1, T)) / 2.0;
    EXPECT_NEAR(distillation_loss(s, t, static_cast<float>(T)).item(), expected, 1e-5 * std::max(1.0, expected)) << T;
  }
  // A student equal to its teacher, or off by a constant per row (softmax ignores it), has nothing to learn.
  EXPECT_NEAR(distillation_loss(t, t, 2.0f).item(), 0.0, 1e-6);
  EXPECT_NEAR(distillation_loss(add_scalar(t, 5.0f), t, 1.0f).item(), 0.0, 1e-5);
}

TEST(Distillation, GradientInTheStudentLogitsPassesTheChecker) {
  Rng rng(7);
  const Tensor s = test::random_tensor({4, 5}, rng, -3.0f, 3.0f);
  const Tensor t = test::random_tensor({4, 5}, rng, -3.0f, 3.0f);
  for (float T : {0.5f, 1.0f, 4.0f}) {
    test::GradCheckOptions opts;
    opts.constants = {1};  // the teacher's logits are targets
    const auto r = test::check_gradients([T](In in) { return distillation_loss(in[0], in[1], T); }, {s, t}, opts);
    EXPECT_TRUE(r.ok) << "T " << T << ": " << r.message();
  }
  // By hand at T = 2: d/ds = T (softmax(s / T) - softmax(t / T)) / N.
  Tensor x = s.clone();
  x.set_requires_grad(true);
  distillation_loss(x, t, 2.0f).backward();
  const Tensor q = exp(log_softmax(scale(s, 0.5f))), p = exp(log_softmax(scale(t, 0.5f)));
  for (int64_t i = 0; i < s.numel(); ++i)
    EXPECT_NEAR(x.grad().data()[i], 2.0f * (q.data()[i] - p.data()[i]) / 4.0f, 1e-6) << i;
}

TEST(Distillation, ShapesAndTemperatureAreChecked) {
  const Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({2, 4}), c = Tensor::zeros({6});
  EXPECT_TRUE(test::throws_with([&] { distillation_loss(a, b, 1.0f); }, {"(2, 3)", "(2, 4)", "same (N, C)"}));
  EXPECT_TRUE(test::throws_with([&] { distillation_loss(c, c, 1.0f); }, {"(6)"}));
  EXPECT_TRUE(test::throws_with([&] { distillation_loss(a, a, 0.0f); }, {"temperature 0"}));
  EXPECT_TRUE(test::throws_with([&] { distillation_loss(a, a, NAN); }, {"temperature"}));
}

}  // namespace
}  // namespace qatlab
