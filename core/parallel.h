// parallel.h: when loops go parallel, and reductions whose result does not depend on the thread count.
#pragma once

#include <cstdint>

namespace qatlab {

// Below this many elements a loop runs on one thread: forking an OpenMP team costs more than it saves.
inline constexpr int64_t kParallelMin = 32768;

// Sum of n floats in double. Fixed-size chunks are summed in parallel and the partial sums added in
// order, so the result is the same for any thread count.
double sum_in_chunks(const float* x, int64_t n);

}  // namespace qatlab
