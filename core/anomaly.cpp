// anomaly.cpp: the checks of anomaly.h.
#include "core/anomaly.h"

#include <atomic>
#include <cmath>

#include "core/format.h"
#include "core/tensor.h"

namespace qatlab {
namespace {

std::atomic<bool> g_on{false};

// The first non-finite value of n at p, or -1.
int64_t first_non_finite(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}

int64_t count_non_finite(const float* p, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; ++i) k += !std::isfinite(p[i]);
  return k;
}

std::string where_of(const char* op, const std::string* scope) {
  std::string s = std::string("'") + op + "'";
  if (scope && !scope->empty()) s += " in " + *scope;
  return s;
}

// "NaN in its output (element 12 of (4, 3); 5 of its 12 values not finite)"
std::string what_of(const float* p, int64_t n, const Shape& shape, int64_t first, const std::string& in) {
  return std::string(std::isnan(p[first]) ? "NaN" : "infinity") + " in " + in + " (element " + std::to_string(first) +
         " of " + shape_str(shape) + "; " + std::to_string(count_non_finite(p, n)) + " of its " + std::to_string(n) +
         " values not finite)";
}

}  // namespace

bool anomaly_detection() { return g_on.load(std::memory_order_relaxed); }

AnomalyDetection::AnomalyDetection() : previous_(g_on.exchange(true)) {}
AnomalyDetection::~AnomalyDetection() { g_on.store(previous_); }

void check_op_output(const Tensor& out, const char* op, const std::string* scope) {
  if (!out.defined()) return;
  const float* p = out.data();
  const int64_t first = first_non_finite(p, out.numel());
  if (first < 0) return;
  throw AnomalyError("anomaly: op " + where_of(op, scope) + " gave " +
                     what_of(p, out.numel(), out.shape(), first, "its output"));
}

void check_op_gradients(const Node& node, const Tensor& grad_out) {
  for (size_t k = 0; k < node.inputs.size(); ++k) {
    const Tensor& in = node.inputs[k];
    if (!in.has_grad()) continue;
    const Tensor g = in.grad();
    const float* p = g.data();
    const int64_t first = first_non_finite(p, g.numel());
    if (first < 0) continue;
    const bool given_finite = first_non_finite(grad_out.data(), grad_out.numel()) < 0;
    throw AnomalyError("anomaly: the backward of op " + where_of(node.name, node.scope) + " gave " +
                       what_of(p, g.numel(), g.shape(), first,
                               "the gradient of its input " + std::to_string(k + 1) + " of " +
                                   std::to_string(node.inputs.size())) +
                       (given_finite ? " from a finite output gradient" : " from a non-finite output gradient"));
  }
}

}  // namespace qatlab
