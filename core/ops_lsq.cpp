// ops_lsq.cpp: LSQ's backward as other ops take it into their own (ops.h: lsq_backward_run,
// lsq_backward_planes, add_lsq; batch_norm_scaled_lsq is in ops_norm.cpp), on lsq_run.h's loop; and the
// residual add on an observer's grid (add_quantized, sum_range), which shares add_lsq's operand pass.
//
// Shape letters: N batch, C channels, S values per channel and image.
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "core/lsq_run.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace qatlab {

using lsq_detail::lsq_inside;
using lsq_detail::lsq_run;

namespace {

// The view of a tensor the step's gradient is summed over, plane by plane: (N, C, S), N and C the first
// two dimensions (1 where the tensor has fewer).
struct Planes {
  int64_t n = 1, c = 1, s = 1;
};
Planes planes_of(const Tensor& x) {
  Planes p;
  p.n = x.dim() >= 1 ? x.size(0) : 1;
  p.c = x.dim() >= 2 ? x.size(1) : 1;
  p.s = x.numel() / std::max<int64_t>(p.n * p.c, 1);
  return p;
}

// The step's gradient over (N, C, S) planes: run(at, s) gives one plane's sum; the planes' sums are added
// per channel over the images, then over the channels, in order (whatever the thread count).
template <class Run>
double sum_planes(const Planes& p, Run run) {
  std::vector<double> sums(p.c, 0.0);  // (C)
#pragma omp parallel for schedule(static) if (p.n * p.c * p.s >= kParallelMin)
  for (int64_t ch = 0; ch < p.c; ++ch)
    for (int64_t i = 0; i < p.n; ++i) sums[ch] += run((i * p.c + ch) * p.s, p.s);
  double total = 0.0;
  for (const double x : sums) total += x;
  return total;
}

// The residual sum a + b, relu'd or not, as add and add_relu compute it.
template <bool kRelu>
struct ResidualSum {
  const float* a;
  const float* b;
  float operator()(int64_t j) const {
    const float v = a[j] + b[j];
    if constexpr (kRelu) return v > 0.0f ? v : 0.0f;
    return v;
  }
  ResidualSum shifted(int64_t at) const { return {a + at, b + at}; }
};

// The operands' gradient of add_lsq over `count` values: dy where the sum passes relu (its value > 0) and
// its code lies inside the grid, else 0; assigned to g if fresh, else added.
template <bool kRelu>
void pass_to_operand(const ResidualSum<kRelu> sum, const float* __restrict dy, float* __restrict g, bool fresh,
                     int64_t count, float inv, float lo, float hi) {
  const auto pass = [=](int64_t j) {
    const float v = sum(j), r = std::nearbyint(v * inv);
    const float d = dy[j];  // loaded unconditionally: a load under the condition keeps the loop scalar
    // The masks as products of 0/1 floats, not bools: so the loop vectorises.
    float on = lsq_inside(r, lo, hi) ? 1.0f : 0.0f;
    if constexpr (kRelu) on *= v > 0.0f ? 1.0f : 0.0f;
    return on > 0.0f ? d : 0.0f;
  };
  if (fresh)
    for (int64_t j = 0; j < count; ++j) g[j] = pass(j);
  else
    for (int64_t j = 0; j < count; ++j) g[j] += pass(j);
}

// Minimum and maximum of the sums over [begin, end) in 16 lanes (a single running value would be a
// serial chain), and whether a sum is not finite (v - v is NaN for NaN and +-Inf alike; the count is
// kept in float lanes so that the loop vectorises).
template <bool kRelu>
void range_of_sums(const ResidualSum<kRelu> sum, int64_t begin, int64_t end, float& lo, float& hi, bool& bad) {
  constexpr int kLanes = 16;
  float l[kLanes], h[kLanes], nonfinite[kLanes];
  for (int k = 0; k < kLanes; ++k) l[k] = lo, h[k] = hi, nonfinite[k] = 0.0f;
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes)
    for (int k = 0; k < kLanes; ++k) {
      const float v = sum(i + k);
      l[k] = v < l[k] ? v : l[k];
      h[k] = v > h[k] ? v : h[k];
      nonfinite[k] += v - v == 0.0f ? 0.0f : 1.0f;
    }
  for (; i < end; ++i) {
    const float v = sum(i);
    l[0] = v < l[0] ? v : l[0];
    h[0] = v > h[0] ? v : h[0];
    nonfinite[0] += v - v == 0.0f ? 0.0f : 1.0f;
  }
  for (int k = 0; k < kLanes; ++k) {
    lo = std::min(lo, l[k]);
    hi = std::max(hi, h[k]);
    bad = bad || nonfinite[k] > 0.0f;
  }
}

void check_operands(const char* op, const Tensor& a, const Tensor& b, const Tensor* values) {
  QATLAB_CHECK(a.defined() && b.defined() && a.shape() == b.shape(),
               std::string(op) + ": operands must have one shape, got " +
                   (a.defined() ? shape_str(a.shape()) : "undefined") + " and " +
                   (b.defined() ? shape_str(b.shape()) : "undefined"));
  QATLAB_CHECK(!values || (values->defined() && values->shape() == a.shape()),
               std::string(op) + ": the values must have the operands' shape " + shape_str(a.shape()));
}

}  // namespace

namespace {

template <bool kOdd>
double lsq_backward_rounded(const float* v, const float* dy, float* gx, bool fresh, int64_t count, float inv,
                            float lo, float hi) {
  using lsq_detail::PlainValues;
  const PlainValues value{v};
  if (!gx) return lsq_run<false, false, PlainValues, kOdd>(value, dy, gx, count, inv, lo, hi);
  return fresh ? lsq_run<true, true, PlainValues, kOdd>(value, dy, gx, count, inv, lo, hi)
               : lsq_run<true, false, PlainValues, kOdd>(value, dy, gx, count, inv, lo, hi);
}

}  // namespace

double lsq_backward_run(const float* v, const float* dy, float* gx, bool fresh, int64_t count, float inv, float lo,
                        float hi, bool odd) {
  return odd ? lsq_backward_rounded<true>(v, dy, gx, fresh, count, inv, lo, hi)
             : lsq_backward_rounded<false>(v, dy, gx, fresh, count, inv, lo, hi);
}

double lsq_backward_planes(const float* v, const float* dy, float* gx, bool fresh, int64_t n, int64_t c, int64_t s,
                           float inv, float lo, float hi, bool odd) {
  return sum_planes(Planes{n, c, s}, [&](int64_t at, int64_t count) {
    return lsq_backward_run(v + at, dy + at, gx ? gx + at : nullptr, fresh, count, inv, lo, hi, odd);
  });
}

Tensor add_lsq(const Tensor& a, const Tensor& b, bool relu, const LsqStep& lsq, const Tensor& values) {
  check_operands("add_lsq", a, b, &values);
  QATLAB_CHECK(lsq.step.defined() && lsq.step.numel() == 1, "add_lsq: the step must be a (1) tensor");
  Tensor y = values;
  record_op(y, relu ? "add_relu_lsq" : "add_lsq", {a, b, lsq.step}, [a, b, relu, lsq](const Tensor& gy) {
    const float* dy = gy.data();
    const OutputGrid& q = lsq.grid;
    const float lo = static_cast<float>(q.quant_min - q.zero_point), hi = static_cast<float>(q.quant_max - q.zero_point);
    const float inv = q.inv_scale;
    const Planes p = planes_of(a);
    // The operands' gradient: dy where the sum passes relu (if any) and its code lies inside the grid.
    bool fresh_a = false, fresh_b = false;
    float* ga = a.requires_grad() ? a.grad_for_write(&fresh_a) : nullptr;
    float* gb = b.requires_grad() ? b.grad_for_write(&fresh_b) : nullptr;
    const auto plane = [&](const auto sum, int64_t at, int64_t count) {
      // The operands' share, then the step's sum while the plane is in L1 (the sum's values from a + at).
      const auto shifted = sum.shifted(at);
      for (int k = 0; k < 2; ++k)
        if (float* g = k == 0 ? ga : gb)
          pass_to_operand(shifted, dy + at, g + at, k == 0 ? fresh_a : fresh_b, count, inv, lo, hi);
      return lsq_run<false, false>(shifted, dy + at, nullptr, count, inv, lo, hi);
    };
    const double total = relu ? sum_planes(p, [&](int64_t at, int64_t n) { return plane(ResidualSum<true>{a.data(), b.data()}, at, n); })
                              : sum_planes(p, [&](int64_t at, int64_t n) { return plane(ResidualSum<false>{a.data(), b.data()}, at, n); });
    if (lsq.step.requires_grad()) lsq.step.mutable_grad()[0] += static_cast<float>(total * lsq.grad_scale);
  });
  return y;
}

Tensor add_quantized(const Tensor& a, const Tensor& b, bool relu, const OutputGrid& grid, const Tensor& values) {
  check_operands("add_quantized", a, b, &values);
  Tensor y = values;
  record_op(y, relu ? "add_relu_quantized" : "add_quantized", {a, b}, [a, b, relu, grid](const Tensor& gy) {
    const float lo = static_cast<float>(grid.quant_min - grid.zero_point);
    const float hi = static_cast<float>(grid.quant_max - grid.zero_point);
    bool fresh_a = false, fresh_b = false;
    float* ga = a.requires_grad() ? a.grad_for_write(&fresh_a) : nullptr;
    float* gb = b.requires_grad() ? b.grad_for_write(&fresh_b) : nullptr;
    const float* dy = gy.data();
    for_ranges(a.numel(), [&](int64_t begin, int64_t end) {
      for (int k = 0; k < 2; ++k)
        if (float* g = k == 0 ? ga : gb) {
          const bool fresh = k == 0 ? fresh_a : fresh_b;
          if (relu)
            pass_to_operand(ResidualSum<true>{a.data() + begin, b.data() + begin}, dy + begin, g + begin, fresh,
                            end - begin, grid.inv_scale, lo, hi);
          else
            pass_to_operand(ResidualSum<false>{a.data() + begin, b.data() + begin}, dy + begin, g + begin, fresh,
                            end - begin, grid.inv_scale, lo, hi);
        }
    });
  });
  return y;
}

bool sum_range(const Tensor& a, const Tensor& b, bool relu, float* lo, float* hi) {
  check_operands("sum_range", a, b, nullptr);
  // Per thread, then combined: minimum, maximum and "any" do not depend on the order.
  float l = std::numeric_limits<float>::infinity(), h = -l;
  bool bad = false;
  std::mutex mutex;
  for_ranges(a.numel(), [&](int64_t begin, int64_t end) {
    float tl = std::numeric_limits<float>::infinity(), th = -tl;
    bool tbad = false;
    if (relu)
      range_of_sums(ResidualSum<true>{a.data(), b.data()}, begin, end, tl, th, tbad);
    else
      range_of_sums(ResidualSum<false>{a.data(), b.data()}, begin, end, tl, th, tbad);
    std::lock_guard<std::mutex> lock(mutex);
    l = std::min(l, tl), h = std::max(h, th), bad = bad || tbad;
  });
  if (bad) return false;
  *lo = l, *hi = h;
  return true;
}

}  // namespace qatlab
