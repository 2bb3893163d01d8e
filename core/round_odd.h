// round_odd.h: the rounding of a mid-rise grid (quant/engine/qscheme.h, QScheme::mid_rise), whose codes
// are the odd integers. Shared by the simulation (fake-quant, LSQ's backward) and the integer graph's
// weights, so that both round alike.
#pragma once

#include <cmath>

namespace qatlab {

// The odd integer nearest v: 2 floor(v / 2) + 1. An even integer, halfway between two odd ones, goes up
// (2 -> 3, -2 -> -1, 0 -> 1). Exact in float for |v| < 2^23 (v / 2 and the floor are exact); NaN stays NaN.
inline float round_to_odd(float v) { return 2.0f * std::floor(v * 0.5f) + 1.0f; }

}  // namespace qatlab
