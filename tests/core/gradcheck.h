// gradcheck.h: the finite-difference gradient checker every op's backward is tested with, and the
// small tensor helpers the op tests share.
//
// check_gradients(f, inputs) reduces f's output to a scalar with fixed random weights R,
//   loss = sum(f(inputs) * R),
// takes the analytic gradient of loss with backward() (seeded with R, so no op under test is used for
// the reduction), and compares it element by element with central differences
//   (loss(x + h) - loss(x - h)) / (2h),
// evaluated in float32 but accumulated in double. An element passes when
//   |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
// The result names the worst element so that a failure says where to look.
//
// Finite differences are only meaningful where f is smooth: tests must keep inputs at least eps away
// from kinks (relu at 0, clamp bounds, max-pool ties, ...).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace qatlab::test {

struct GradCheckOptions {
  double eps = 1e-2;   // half the central-difference step; float32 values need a large one
  double atol = 2e-3;  // absolute tolerance
  double rtol = 2e-2;  // relative tolerance, on the larger of the two magnitudes
  uint64_t seed = 1234;               // seeds the reduction weights R
  std::vector<size_t> constants;      // indices of inputs that are not differentiated (no grad asked)
};

struct GradCheckResult {
  bool ok = true;
  std::string error;  // set when the check could not run (e.g. the output does not need a gradient)
  // The worst element over all checked inputs: the one with the largest |a - n| / tolerance.
  double worst_ratio = 0.0;
  size_t input = 0;
  int64_t element = 0;
  double analytic = 0.0, numeric = 0.0;
  int64_t checked = 0;  // number of elements compared

  std::string message() const {
    std::ostringstream s;
    if (!error.empty()) return "gradcheck: " + error;
    s << "gradcheck: " << (ok ? "passed" : "FAILED") << " over " << checked << " elements; worst at input "
      << input << " element " << element << ": analytic " << analytic << " vs numeric " << numeric
      << " (error / tolerance = " << worst_ratio << ")";
    return s.str();
  }
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

namespace detail {

inline double weighted_sum(const Tensor& out, const std::vector<float>& r) {
  const float* p = out.data();
  double s = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(p[i]) * r[i];
  return s;
}

}  // namespace detail

inline GradCheckResult check_gradients(const GradFn& f, std::vector<Tensor> inputs, GradCheckOptions opts = {}) {
  GradCheckResult result;
  auto is_constant = [&](size_t i) {
    return std::find(opts.constants.begin(), opts.constants.end(), i) != opts.constants.end();
  };
  // Fresh leaves with copies of the values: the caller's tensors are neither perturbed nor given grads.
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor t = inputs[i].clone();
    if (!is_constant(i)) t.set_requires_grad(true);
    leaves.push_back(t);
  }

  Tensor out = f(leaves);
  if (!out.requires_grad()) {
    result.ok = false;
    result.error = "the output " + shape_str(out.shape()) + " does not depend on any differentiated input";
    return result;
  }
  Rng rng(opts.seed);
  std::vector<float> r(static_cast<size_t>(out.numel()));  // weights R, output shape
  for (float& v : r) v = rng.uniform(-1.0f, 1.0f);
  const Shape out_shape = out.shape();
  out.backward(Tensor::from_vector(out_shape, r));

  NoGradGuard no_grad;
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (is_constant(i)) continue;
    Tensor x = leaves[i];
    const std::vector<float> analytic =
        x.has_grad() ? x.grad().to_vector() : std::vector<float>(static_cast<size_t>(x.numel()), 0.0f);
    float* px = x.data();
    for (int64_t e = 0; e < x.numel(); ++e) {
      const float v = px[e];
      const float up = static_cast<float>(v + opts.eps);
      const float down = static_cast<float>(v - opts.eps);
      px[e] = up;
      const Tensor out_up = f(leaves);
      if (out_up.shape() != out_shape) {
        result.ok = false;
        result.error = "output shape changed under perturbation";
        px[e] = v;
        return result;
      }
      const double loss_up = detail::weighted_sum(out_up, r);
      px[e] = down;
      const double loss_down = detail::weighted_sum(f(leaves), r);
      px[e] = v;
      // Divide by the step actually taken in float, not the nominal 2 * eps.
      const double numeric = (loss_up - loss_down) / (static_cast<double>(up) - static_cast<double>(down));
      const double a = analytic[e];
      const double tol = opts.atol + opts.rtol * std::max(std::abs(a), std::abs(numeric));
      const double ratio = std::abs(a - numeric) / tol;
      ++result.checked;
      // A NaN on either side counts as the worst possible disagreement.
      const double score = std::isnan(ratio) ? std::numeric_limits<double>::infinity() : ratio;
      if (result.checked == 1 || score > result.worst_ratio) {
        result.worst_ratio = score;
        result.input = i;
        result.element = e;
        result.analytic = a;
        result.numeric = numeric;
      }
    }
  }
  result.ok = result.worst_ratio <= 1.0;
  return result;
}

// EXPECT_GRADS_OK(f, inputs) or EXPECT_GRADS_OK(f, inputs, opts): a non-fatal gtest failure carrying
// the worst element when the analytic and numeric gradients disagree.
#define EXPECT_GRADS_OK(...)                                                  \
  do {                                                                        \
    const auto gradcheck_result_ = ::qatlab::test::check_gradients(__VA_ARGS__); \
    EXPECT_TRUE(gradcheck_result_.ok) << gradcheck_result_.message();         \
  } while (0)

// -------------------------------------------------------------------------------- tensor helpers

// Values uniform in [lo, hi).
inline Tensor random_tensor(const Shape& shape, Rng& rng, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
  return t;
}

// Values uniform in [lo, hi) but at least `margin` away from every point in `kinks`: keeps finite
// differences off the places where an op is not differentiable.
inline Tensor random_away_from(const Shape& shape, Rng& rng, const std::vector<float>& kinks, float margin,
                               float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    float v = 0.0f;
    bool near = true;
    while (near) {
      v = rng.uniform(lo, hi);
      near = false;
      for (float k : kinks) near = near || std::abs(v - k) < margin;
    }
    p[i] = v;
  }
  return t;
}

// Asserts two tensors have the same shape and values within tol (absolute), naming the first mismatch.
inline ::testing::AssertionResult tensors_near(const Tensor& actual, const Tensor& expected, double tol) {
  if (actual.shape() != expected.shape())
    return ::testing::AssertionFailure()
           << "shape " << shape_str(actual.shape()) << " vs expected " << shape_str(expected.shape());
  const float* a = actual.data();
  const float* e = expected.data();
  for (int64_t i = 0; i < actual.numel(); ++i) {
    if (!(std::abs(static_cast<double>(a[i]) - e[i]) <= tol))
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs expected " << e[i]
                                           << " (tolerance " << tol << ")";
  }
  return ::testing::AssertionSuccess();
}

// Passes when fn() throws std::invalid_argument whose message is one line containing every one of
// `parts` (user-facing errors are one line).
template <class Fn>
::testing::AssertionResult throws_with(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    if (msg.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "multi-line message: " << msg;
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not mention \"" << p << "\"";
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a different exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "no exception thrown";
}

#define EXPECT_TENSOR_NEAR(actual, expected, tol) EXPECT_TRUE(::qatlab::test::tensors_near((actual), (expected), (tol)))

}  // namespace qatlab::test
