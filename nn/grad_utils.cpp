// grad_utils.cpp: global gradient norm, norm clipping and the finiteness check.
#include "nn/grad_utils.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace qatlab {

namespace {

// Block size for the norm's partial sums. Fixed (not derived from the thread count) so that the
// order of the additions, and so the result, never changes with the number of threads.
constexpr int64_t kBlock = int64_t{1} << 15;

double sum_squares_serial(const float* g, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * static_cast<double>(g[i]);
  return s;
}

double sum_squares(const float* g, int64_t n) {  // g: (P) flattened to n elements
  if (n <= kBlock) return sum_squares_serial(g, n);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks);  // (blocks)
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b)
    partial[b] = sum_squares_serial(g + b * kBlock, std::min(kBlock, n - b * kBlock));
  double s = 0.0;
  for (double p : partial) s += p;
  return s;
}

}  // namespace

double grad_norm(const std::vector<ParamRef>& params) {
  double s = 0.0;
  for (const ParamRef& p : params)
    if (p.tensor.defined() && p.tensor.has_grad()) s += sum_squares(p.tensor.grad().data(), p.tensor.numel());
  return std::sqrt(s);
}

float clip_grad_norm(const std::vector<ParamRef>& params, float max_norm) {
  if (!(std::isfinite(max_norm) && max_norm > 0.0f)) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", max_norm);
    throw std::invalid_argument(std::string("clip_grad_norm: max_norm must be > 0, got ") + buf);
  }
  const double norm = grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return static_cast<float>(norm);
  // norm > max_norm > 0, so no epsilon is needed in the division (PyTorch adds 1e-6 for the zero case).
  const float factor = static_cast<float>(max_norm / norm);
  for (const ParamRef& p : params) {
    if (!p.tensor.defined() || !p.tensor.has_grad()) continue;
    Tensor g = p.tensor.grad();
    float* d = g.data();
    const int64_t n = g.numel();
#pragma omp parallel for schedule(static) if (n >= kBlock)
    for (int64_t i = 0; i < n; ++i) d[i] *= factor;
  }
  return static_cast<float>(norm);
}

bool grads_finite(const std::vector<ParamRef>& params) {
  for (const ParamRef& p : params) {
    if (!p.tensor.defined() || !p.tensor.has_grad()) continue;
    const Tensor g = p.tensor.grad();
    const float* d = g.data();
    const int64_t n = g.numel();
    // x - x is 0 for finite x and NaN for inf or NaN; summing those keeps the loop branch-free.
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) acc += d[i] - d[i];
    if (acc != 0.0f) return false;
  }
  return true;
}

}  // namespace qatlab
