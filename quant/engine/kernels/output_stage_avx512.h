// output_stage_avx512.h: the packed GEMM's output stage on 16 int32 lanes with AVX-512 (the integer
// formula of requantize(), requantize.h, bit for bit), inline for the VNNI tiles (internal to
// quant/engine/kernels; x86 only). One zmm of sums goes straight from the tile's register to int8 codes: no
// trip through memory, half the instructions per code of the 8-lane AVX2 stage, and in a conv (a
// channel per row) the row's multiplier and shifts are scalars, so its 64-bit products shift by one
// count. The functions carry target(...): callers are built for baseline x86-64 and run them only
// where the CPU has AVX-512.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "quant/engine/kernels/gemm_kernel.h"
#include "quant/engine/requantize_avx512.h"

namespace qatlab::kernels {

// The first `cols` (<= 16) lanes.
QATLAB_AVX512_INLINE __mmask16 first_lanes(int cols) {
  return static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
}

// The clamp and offset of an output stage, in registers once per tile.
struct Clamp16 {
  __m512i lo, hi, offset;
};

QATLAB_AVX512_INLINE Clamp16 clamp16(const PackedOutputStage& s) {
  return {_mm512_set1_epi32(s.clamp_lo), _mm512_set1_epi32(s.clamp_hi), _mm512_set1_epi32(s.output_offset)};
}

// The output stage of one tile's 16-column piece, in registers: Scale is UniformRequantize for a
// conv's row (a channel per row: the multiplier and shifts are scalars, so the 64-bit products shift
// by one count) or LaneRequantize for a fully connected layer's 16 columns (a channel per lane).
template <class Scale>
struct Stage16 {
  __m512i bias;
  Scale scale;
};

// A conv row's channel from its parameters p (PackedOutputStage::rows: parameter k at p[8 * k]).
QATLAB_AVX512_INLINE Stage16<UniformRequantize> row_stage16(const int32_t* p) {
  return {_mm512_set1_epi32(p[0]), uniform_requantize(p[8], p[16], p[24])};
}

// The fully connected channels channel0 .. channel0 + 15: parameter k of channel c at
// columns[k * padded + c] (padded to whole panels of 16, so the 16 lanes from a panel's first column
// are in bounds).
QATLAB_AVX512_INLINE Stage16<LaneRequantize> column_stage16(const PackedOutputStage& s, int64_t channel0) {
  const int32_t* p = s.columns.data() + channel0;
  const auto param = [&](int k) { return _mm512_loadu_si512(p + k * s.padded); };
  return {param(0), lane_requantize(param(1), param(2), param(3), s.any_left_shift)};
}

// The codes of 16 sums: the bias added (int32 wrap-around, as the reference's), requantized, clamped,
// then offset (as requantize() does). The values are in [-128, 127], so a narrowing store keeps them.
template <class Scale>
QATLAB_AVX512_INLINE __m512i requantize16(__m512i sum, const Stage16<Scale>& stage, const Clamp16& c) {
  const __m512i scaled = apply(stage.scale, _mm512_add_epi32(sum, stage.bias));
  return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(scaled, c.lo), c.hi), c.offset);
}

}  // namespace qatlab::kernels
