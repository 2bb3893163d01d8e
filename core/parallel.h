// parallel.h: when loops go parallel, and reductions whose result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>

namespace qatlab {

// Below this many elements a loop runs on one thread: forking an OpenMP team costs more than it saves.
inline constexpr int64_t kParallelMin = 32768;

// Sum of n floats in double. Fixed-size chunks are summed in parallel and the partial sums added in
// order, so the result is the same for any thread count.
double sum_in_chunks(const float* x, int64_t n);

// Calls f(begin, end) over [0, n) cut into one range per thread (a single call below kParallelMin
// elements). An exception thrown by f cannot leave an OpenMP region, so each range's first exception is
// kept and the one of the lowest range rethrown after the loop: the same error whatever the thread count.
void for_ranges(int64_t n, const std::function<void(int64_t, int64_t)>& f);

}  // namespace qatlab
