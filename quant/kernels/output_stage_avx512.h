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

// The output stage of one tile's 16-column piece, its parameters in registers, made once per tile:
// Scale is UniformRequantize for a conv's row (a channel per row: the multiplier and shifts are
// scalars, so the 64-bit products shift by one count) or LaneRequantize for a fully connected
// layer's 16 columns (a channel per lane).
template <class Scale>
struct Stage16 {
  __m512i bias;
  Scale scale;
  __m512i lo, hi, offset;
};

// The conv row of channel `channel`.
QATLAB_AVX512_INLINE Stage16<UniformRequantize> row_stage16(const PackedOutputStage& s, int64_t channel) {
  const int32_t* p = s.rows.data() + channel * PackedOutputStage::kParams * 8;  // k-th parameter at p[8 * k]
  return {_mm512_set1_epi32(p[0]), uniform_requantize(p[8], p[16], p[24]), _mm512_set1_epi32(s.clamp_lo),
          _mm512_set1_epi32(s.clamp_hi), _mm512_set1_epi32(s.output_offset)};
}

// The fully connected channels channel0 .. channel0 + 15: parameter k of channel c at
// columns[k * padded + c] (padded to whole panels of 16, so the 16 lanes from a panel's first column
// are in bounds).
QATLAB_AVX512_INLINE Stage16<LaneRequantize> column_stage16(const PackedOutputStage& s, int64_t channel0) {
  const int32_t* p = s.columns.data() + channel0;
  const auto param = [&](int k) { return _mm512_loadu_si512(p + k * s.padded); };
  return {param(0), lane_requantize(param(1), param(2), param(3), s.any_left_shift), _mm512_set1_epi32(s.clamp_lo),
          _mm512_set1_epi32(s.clamp_hi), _mm512_set1_epi32(s.output_offset)};
}

// The 16 sums of GEMM row i, columns j0..j0+15, through the epilogue: the first `cols` of them
// requantized with `stage` (that of the row's channel or of the columns' channels) and stored; or
// with e.acc the 16 accumulators (a conv's row stage gives the bias), with e.sums the first `cols` raw
// sums (the stage is not read).
template <class Scale>
QATLAB_AVX512_INLINE void finish16(__m512i sum, const Epilogue& e, const Stage16<Scale>& stage, int64_t i, int64_t j0,
                                   int cols) {
  const __mmask16 lanes = first_lanes(cols);
  if (e.sums) {
    _mm512_mask_storeu_epi32(e.sums + i * e.out_stride + j0, lanes, sum);
    return;
  }
  const __m512i acc = _mm512_add_epi32(sum, stage.bias);  // int32 wrap-around, as the reference's
  if (e.acc) {
    assert(e.channel_per_row);
    _mm512_storeu_si512(e.acc + i * e.out_stride + j0, acc);
    return;
  }
  // Clamp, then add the offset (as requantize() does): the values are in [-128, 127], and the
  // narrowing store keeps each one.
  const __m512i q =
      _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(apply(stage.scale, acc), stage.lo), stage.hi), stage.offset);
  _mm512_mask_cvtepi32_storeu_epi8(e.out + i * e.out_stride + j0, lanes, q);
}

}  // namespace qatlab::kernels
