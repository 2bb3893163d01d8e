// parallel.cpp: the deterministic chunked sum.
#include "core/parallel.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace qatlab {

double sum_in_chunks(const float* x, int64_t n) {
  constexpr int64_t kChunk = 16384;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    double s = 0.0;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; ++i) s += x[i];
    partial[c] = s;
  }
  double s = 0.0;
  for (double p : partial) s += p;
  return s;
}

void for_ranges(int64_t n, const std::function<void(int64_t, int64_t)>& f) {
  if (n < kParallelMin) {
    f(0, n);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    try {
      f(n * t / threads, n * (t + 1) / threads);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace qatlab
