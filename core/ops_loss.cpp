// ops_loss.cpp: log_softmax, the fused softmax cross-entropy loss, and dropout.
//
// Shape letters: N batch (rows), C classes (the last axis).
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/format.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace qatlab {
namespace {


// log(sum(exp(row))) of one row of C values, as max + log_sum: the shift by the row's maximum keeps
// exp from overflowing, and keeping the two parts apart lets callers form (x - max) - log_sum, which
// keeps the precision that x - (max + log_sum) would round away when max is large.
struct LogSumExp {
  float max;
  float log_sum;
};

LogSumExp log_sum_exp(const float* row, int64_t c) {
  float mx = row[0];
  for (int64_t j = 1; j < c; ++j) mx = std::max(mx, row[j]);
  double s = 0.0;
  for (int64_t j = 0; j < c; ++j) s += std::exp(row[j] - mx);
  return {mx, static_cast<float>(std::log(s))};
}

void check_logits(const char* name, const Tensor& x) {
  QATLAB_CHECK(x.dim() == 2 && x.size(1) > 0,
            std::string(name) + ": expected (N, C) logits with C > 0, got " + shape_str(x.shape()));
}

}  // namespace

Tensor log_softmax(const Tensor& x) {
  check_logits("log_softmax", x);
  const int64_t n = x.size(0), c = x.size(1);
  Tensor out = Tensor::empty({n, c});
  {
    const float* px = x.data();  // (N, C)
    float* py = out.data();      // (N, C)
#pragma omp parallel for schedule(static) if (n * c >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      const LogSumExp lse = log_sum_exp(px + i * c, c);
      for (int64_t j = 0; j < c; ++j) py[i * c + j] = (px[i * c + j] - lse.max) - lse.log_sum;
    }
  }
  // The closure keeps the output's values (softmax = exp(y)), not the output: that would be a cycle.
  std::shared_ptr<float[]> y_values = out.impl()->data;
  record_op(out, "log_softmax", {x}, [x, y_values, n, c](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();  // (N, C)
    const float* g = grad_out.data();  // (N, C)
    const float* py = y_values.get();  // (N, C)
    // dx_j = g_j - softmax_j * sum_k g_k
#pragma omp parallel for schedule(static) if (n * c >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      double gsum = 0.0;
      for (int64_t j = 0; j < c; ++j) gsum += g[i * c + j];
      for (int64_t j = 0; j < c; ++j)
        gx[i * c + j] += g[i * c + j] - std::exp(py[i * c + j]) * static_cast<float>(gsum);
    }
  });
  return out;
}

Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float label_smoothing) {
  check_logits("cross_entropy", logits);
  const int64_t n = logits.size(0), c = logits.size(1);
  QATLAB_CHECK(n > 0, "cross_entropy: empty batch, logits " + shape_str(logits.shape()));
  QATLAB_CHECK(static_cast<int64_t>(labels.size()) == n, "cross_entropy: " + std::to_string(labels.size()) +
                                                          " labels for logits " + shape_str(logits.shape()));
  for (size_t i = 0; i < labels.size(); ++i)
    QATLAB_CHECK(labels[i] >= 0 && labels[i] < c, "cross_entropy: label " + std::to_string(labels[i]) + " at index " +
                                                   std::to_string(i) + " is outside [0, " + std::to_string(c) + ")");
  QATLAB_CHECK(label_smoothing >= 0.0f && label_smoothing < 1.0f,
            "cross_entropy: label_smoothing " + num_str(label_smoothing) + " outside [0, 1)");

  // Target row: (1 - e) on the label plus e / C everywhere. Loss of a row:
  //   -sum_j t_j logp_j = -(1 - e) logp_label - (e / C) sum_j logp_j,  logp_j = x_j - log(sum_k exp(x_k)).
  const double e = label_smoothing;
  const float* px = logits.data();           // (N, C)
  std::shared_ptr<float[]> probs = alloc_floats(n * c);  // (N, C) softmax, kept for backward
  float* pp = probs.get();
  std::vector<double> row_loss(static_cast<size_t>(n));  // (N)
#pragma omp parallel for schedule(static) if (n * c >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float* row = px + i * c;
    const LogSumExp lse = log_sum_exp(row, c);
    double sum_logp = 0.0;
    for (int64_t j = 0; j < c; ++j) {
      const float logp = (row[j] - lse.max) - lse.log_sum;
      sum_logp += logp;
      pp[i * c + j] = std::exp(logp);
    }
    const double logp_label = (row[labels[i]] - lse.max) - lse.log_sum;
    row_loss[i] = -(1.0 - e) * logp_label - e / static_cast<double>(c) * sum_logp;
  }
  double total = 0.0;  // summed in order, independent of the thread count
  for (double l : row_loss) total += l;
  Tensor out = Tensor::scalar(static_cast<float>(total / static_cast<double>(n)));

  std::vector<int32_t> kept_labels(labels.begin(), labels.end());  // the caller's span may not outlive us
  record_op(out, "cross_entropy", {logits},
            [logits, probs, kept_labels = std::move(kept_labels), n, c, e](const Tensor& grad_out) {
              Tensor input = logits;
              float* gx = input.mutable_grad();  // (N, C)
              // d loss / dx_j = (softmax_j - t_j) / N
              const float g = grad_out.data()[0] / static_cast<float>(n);
              const float off = static_cast<float>(e / static_cast<double>(c));
              const float on = static_cast<float>(1.0 - e) + off;
              const float* pp = probs.get();  // (N, C)
#pragma omp parallel for schedule(static) if (n * c >= kParallelMin)
              for (int64_t i = 0; i < n; ++i) {
                const int64_t label = kept_labels[i];
                for (int64_t j = 0; j < c; ++j) {
                  const float t = j == label ? on : off;
                  gx[i * c + j] += g * (pp[i * c + j] - t);
                }
              }
            });
  return out;
}

Tensor dropout(const Tensor& x, float p, bool training, Rng& rng) {
  QATLAB_CHECK(p >= 0.0f && p < 1.0f, "dropout: p = " + num_str(p) + " outside [0, 1)");
  if (!training || p == 0.0f) return x;

  const int64_t numel = x.numel();
  // The mask holds the factor each element is multiplied by: 0 (dropped) or 1 / (1 - p) (kept), so
  // the expected value of each output equals its input. Drawn serially: the stream must not depend on
  // the thread count.
  std::shared_ptr<float[]> mask = alloc_floats(numel);
  const float keep_scale = 1.0f / (1.0f - p);
  float* pm = mask.get();
  for (int64_t i = 0; i < numel; ++i) pm[i] = rng.uniform() >= p ? keep_scale : 0.0f;

  Tensor out = Tensor::empty(x.shape());
  {
    const float* px = x.data();
    float* py = out.data();
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) py[i] = px[i] * pm[i];
  }
  record_op(out, "dropout", {x}, [x, mask, numel](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();
    const float* g = grad_out.data();
    const float* pm = mask.get();
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) gx[i] += g[i] * pm[i];
  });
  return out;
}

}  // namespace qatlab
