// parallel.cpp: the deterministic chunked sum.
#include "core/parallel.h"

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

}  // namespace qatlab
