// lsq_run.h: LSQ's backward over a run of values, shared by the ops that take a learned-step quantizer
// into their own backward (ops_lsq.cpp, ops_norm.cpp). Include it only from files compiled without
// floating-point contraction (core/CMakeLists.txt): the fused and the separate ops must round alike.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/round_odd.h"

namespace qatlab {
namespace lsq_detail {

// LSQ's dq/ds / s (quant/qat/learnable_quantizer.h) at v = u * inv, r = nearbyint(v) for quantizer input u:
// r - v where the code is inside [lo, hi], lo or hi where it is clamped, 0 for NaN.
inline bool lsq_inside(float r, float lo, float hi) { return (r >= lo) & (r <= hi); }
inline float lsq_slope(float v, float r, float lo, float hi) {
  return lsq_inside(r, lo, hi) ? r - v : (r < lo ? lo : (r > hi ? hi : 0.0f));
}

// One value's part of LSQ's backward: gx[j] gets dy[j] where u's code is inside the grid (with kGx;
// assigned with kFresh, else added); returns dy[j] * lsq_slope. kOdd: a mid-rise grid's codes, r the odd
// integer nearest v.
template <bool kGx, bool kFresh, bool kOdd = false>
inline float lsq_term(float u, const float* __restrict dy, float* __restrict gx, int64_t j, float inv, float lo,
                      float hi) {
  const float v = u * inv, r = kOdd ? round_to_odd(v) : std::nearbyint(v);
  const float g = dy[j];
  if constexpr (kGx) {
    const float pass = lsq_inside(r, lo, hi) ? g : 0.0f;
    if constexpr (kFresh)
      gx[j] = pass;
    else
      gx[j] += pass;
  }
  return g * lsq_slope(v, r, lo, hi);
}

// LSQ's backward over `count` quantizer inputs, value(j) the j-th (lsq_backward_run in ops.h), in 16
// float lanes added up in double, then the last count % 16 terms. The functor comes by value and every
// pointer as a plain argument, so that the compiler keeps them in registers and vectorises the lanes.
template <bool kGx, bool kFresh, class Value, bool kOdd = false>
double lsq_run(const Value value, const float* __restrict dy, float* __restrict gx, int64_t count, float inv,
               float lo, float hi) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes)
    for (int k = 0; k < kLanes; ++k)
      acc[k] += lsq_term<kGx, kFresh, kOdd>(value(i + k), dy, gx, i + k, inv, lo, hi);
  double sum = 0.0;
  for (int k = 0; k < kLanes; ++k) sum += acc[k];
  for (; i < count; ++i) sum += lsq_term<kGx, kFresh, kOdd>(value(i), dy, gx, i, inv, lo, hi);
  return sum;
}

// The plain quantizer input: value(j) = v[j].
struct PlainValues {
  const float* v;
  float operator()(int64_t j) const { return v[j]; }
};

}  // namespace lsq_detail
}  // namespace qatlab
