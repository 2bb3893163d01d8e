// output_stage_avx512.h: the packed GEMM's output stage on 16 int32 lanes with AVX-512 (the integer
// formula of requantize(), requantize.h, bit for bit), inline for the VNNI tiles (internal to
// quant/kernels; x86 only). One zmm of sums goes straight from the tile's register to int8 codes: no
// trip through memory, half the instructions per code of the 8-lane AVX2 stage, and in a conv (a
// channel per row) the row's multiplier and shifts are scalars, so its 64-bit products shift by one
// count. The functions carry target(...): callers are built for baseline x86-64 and run them only
// where the CPU has AVX-512.
#pragma once

#include <immintrin.h>

#include <cassert>
#include <cstdint>

#include "quant/kernels/gemm_kernel.h"
#include "quant/requantize_avx512.h"

namespace qatlab::kernels {

// The first `cols` (<= 16) lanes.
QATLAB_AVX512_INLINE __mmask16 first_lanes(int cols) {
  return static_cast<__mmask16>(cols >= 16 ? 0xFFFF : (1u << cols) - 1);
}

// One GEMM row's output stage for its 16-column pieces: the channel's parameters (conv: a channel per
// row) in registers, made once per row of a tile.
struct RowStage16 {
  __m512i bias;
  UniformRequantize scale;
  __m512i lo, hi, offset;
};

QATLAB_AVX512_INLINE RowStage16 row_stage16(const PackedOutputStage& s, int64_t channel) {
  const int32_t* p = s.rows.data() + channel * PackedOutputStage::kParams * 8;  // k-th parameter at p[8 * k]
  return {_mm512_set1_epi32(p[0]), uniform_requantize(p[8], p[16], p[24]), _mm512_set1_epi32(s.clamp_lo),
          _mm512_set1_epi32(s.clamp_hi), _mm512_set1_epi32(s.output_offset)};
}

// Clamp, then add the offset (as requantize() does): the result lies in [-128, 127].
QATLAB_AVX512_INLINE __m512i clamp_offset16(__m512i x, __m512i lo, __m512i hi, __m512i offset) {
  return _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(x, lo), hi), offset);
}

// The 16 sums of GEMM row i, columns j0..j0+15, through the epilogue: the first `cols` of them
// requantized and stored (or with e.acc the 16 accumulators, with e.sums the first `cols` raw sums).
// `row` is row_stage16 of the row's channel when e.channel_per_row (unused otherwise).
QATLAB_AVX512_INLINE void finish16(__m512i sum, const Epilogue& e, const RowStage16& row, int64_t i, int64_t j0,
                                   int cols) {
  const __mmask16 lanes = first_lanes(cols);
  if (e.sums) {
    _mm512_mask_storeu_epi32(e.sums + i * e.out_stride + j0, lanes, sum);
    return;
  }
  if (e.acc) {
    assert(e.channel_per_row);
    _mm512_storeu_si512(e.acc + i * e.out_stride + j0, _mm512_add_epi32(sum, row.bias));
    return;
  }
  __m512i q;
  if (e.channel_per_row) {
    q = clamp_offset16(apply(row.scale, _mm512_add_epi32(sum, row.bias)), row.lo, row.hi, row.offset);
  } else {
    // A channel per lane: parameter k of channels j.. at columns[k * padded + j] (padded to whole panels
    // of 16, so the 16 lanes from a panel's first column are in bounds).
    const PackedOutputStage& s = *e.stage;
    const int32_t* p = s.columns.data() + e.channel0 + j0;
    const auto param = [&](int k) { return _mm512_loadu_si512(p + k * s.padded); };
    const __m512i acc = _mm512_add_epi32(sum, param(0));  // int32 wrap-around, as the reference's
    q = clamp_offset16(multiply_by_quantized_multiplier16(acc, param(1), param(2), param(3), s.any_left_shift),
                       _mm512_set1_epi32(s.clamp_lo), _mm512_set1_epi32(s.clamp_hi),
                       _mm512_set1_epi32(s.output_offset));
  }
  // The values are in [-128, 127]: the narrowing store keeps each one.
  _mm512_mask_cvtepi32_storeu_epi8(e.out + i * e.out_stride + j0, lanes, q);
}

}  // namespace qatlab::kernels
