// requantize_avx512.h: multiply_by_quantized_multiplier (requantize.h) on 16 int32 lanes with AVX-512
// (F, BW), shared by the residual add (kernels/add_avx512.cpp) and the VNNI GEMM's output stage
// (kernels/output_stage_avx512.h). Bit for bit the scalar formula: a saturating left shift where the
// shift is positive, then one rounding of the exact 64-bit product.
// x86 only: include it where immintrin.h is available. The functions carry target("avx512f,avx512bw"),
// so the including file builds for baseline x86-64; they run only where the CPU has AVX-512.
#pragma once

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_epi32() (a self-initialised variable) as the unused
// merge operand, which -Wmaybe-uninitialized reports wherever they are inlined (GCC bug 105593, fixed
// in GCC 13), as -Wmaybe-uninitialized or, once inlined deeper, -Wuninitialized. The files that
// include this header are AVX-512 kernels; none reads an undefined value. clang (the sanitizer build)
// has neither the bug nor the first warning.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstdint>

#include "quant/engine/requantize.h"

#define QATLAB_AVX512_INLINE __attribute__((target("avx512f,avx512bw"), always_inline)) inline

namespace qatlab {

// Saturating x * 2^left per lane, left in [0, 30]: an overflowed lane (shifting back does not give x)
// takes INT32_MIN or INT32_MAX by its sign, as saturating_left_shift does.
QATLAB_AVX512_INLINE __m512i saturating_left_shift16(__m512i x, __m512i left) {
  const __m512i shifted = _mm512_sllv_epi32(x, left);
  const __mmask16 fits = _mm512_cmpeq_epi32_mask(_mm512_srav_epi32(shifted, left), x);
  const __m512i saturated = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(INT32_MAX));
  return _mm512_mask_blend_epi32(fits, saturated, shifted);
}

// Moving int32 lanes within 64-bit lanes is done with shuffles rather than 64-bit shifts: on Intel
// cores a 512-bit shift or multiply runs on one port only, which the products and the rounding
// shifts already keep busy, while shuffles run on another.
// The odd int32 lanes moved down to the even ones (the low half of each 64-bit lane), for
// _mm512_mul_epi32.
QATLAB_AVX512_INLINE __m512i odd_lanes_down(__m512i x) { return _mm512_shuffle_epi32(x, _MM_PERM_DDBB); }

// The low int32 of each 64-bit lane of `even` and of `odd` (the products of the even and of the odd
// int32 lanes) back in one vector: the odd ones move up and join the even ones.
QATLAB_AVX512_INLINE __m512i join_even_odd(__m512i even, __m512i odd) {
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_shuffle_epi32(odd, _MM_PERM_CCAA));
}

// One multiplier and one shift for all 16 lanes (a conv row's channel, an add's input).
// _mm512_mul_epi32 multiplies the low int32 of each 64-bit lane: the even lanes and the odd lanes
// (moved down by 32 bits) give two sets of 64-bit products, shifted right arithmetically (floor) by
// the total shift after the rounding nudge.
struct UniformRequantize {
  __m512i multiplier, left, nudge;
  __m128i total;
  bool shifts_left;
};

// From the two parts of the signed shift (requantize_left_shift / requantize_total_shift).
QATLAB_AVX512_INLINE UniformRequantize uniform_requantize(int32_t multiplier, int left, int total) {
  return {_mm512_set1_epi32(multiplier), _mm512_set1_epi32(left), _mm512_set1_epi64(int64_t{1} << (total - 1)),
          _mm_cvtsi32_si128(total), left > 0};
}

QATLAB_AVX512_INLINE UniformRequantize uniform_requantize(int32_t multiplier, int shift) {
  return uniform_requantize(multiplier, requantize_left_shift(shift), requantize_total_shift(shift));
}

// multiply_by_quantized_multiplier(x, multiplier, shift) on 16 lanes.
QATLAB_AVX512_INLINE __m512i apply(const UniformRequantize& s, __m512i x) {
  if (s.shifts_left) x = saturating_left_shift16(x, s.left);
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, s.multiplier), s.nudge);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(odd_lanes_down(x), s.multiplier), s.nudge);
  return join_even_odd(_mm512_sra_epi64(even, s.total), _mm512_sra_epi64(odd, s.total));
}

// Each lane its own multiplier and shift (a channel per lane): the counts and nudges of the even and
// the odd lanes, made once per block of channels and applied to every row of a tile.
struct LaneRequantize {
  __m512i multiplier, multiplier_odd, left, count_even, count_odd, nudge_even, nudge_odd;
  bool shifts_left;  // some lane's left shift is positive
};

// From 16 lanes of multipliers and of the two parts of the shifts (see uniform_requantize).
QATLAB_AVX512_INLINE LaneRequantize lane_requantize(__m512i multiplier, __m512i left, __m512i total,
                                                    bool shifts_left) {
  const __m512i one = _mm512_set1_epi64(1);
  const __m512i count_even = _mm512_and_si512(total, _mm512_set1_epi64(0xFFFFFFFFll));
  const __m512i count_odd = _mm512_srli_epi64(total, 32);
  return {multiplier,
          _mm512_srli_epi64(multiplier, 32),
          left,
          count_even,
          count_odd,
          _mm512_sllv_epi64(one, _mm512_sub_epi64(count_even, one)),
          _mm512_sllv_epi64(one, _mm512_sub_epi64(count_odd, one)),
          shifts_left};
}

QATLAB_AVX512_INLINE __m512i apply(const LaneRequantize& s, __m512i x) {
  if (s.shifts_left) x = saturating_left_shift16(x, s.left);
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, s.multiplier), s.nudge_even);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(odd_lanes_down(x), s.multiplier_odd), s.nudge_odd);
  return join_even_odd(_mm512_srav_epi64(even, s.count_even), _mm512_srav_epi64(odd, s.count_odd));
}

}  // namespace qatlab
