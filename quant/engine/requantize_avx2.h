// requantize_avx2.h: multiply_by_quantized_multiplier (requantize.h) on 8 int32 lanes with AVX2, shared
// by the packed GEMM's output stage (kernels/output_stage_avx2.h) and the integer LSTM's stages
// (kernels/lstm_avx2.cpp).
// x86 only: include it where immintrin.h is available. The functions carry target("avx2"), so the
// including file builds for baseline x86-64; they run only where the CPU has AVX2.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace qatlab {

// Saturating x * 2^left per lane, left in [0, 30]: the shift overflowed iff shifting back does not give
// x, and an overflowed lane takes INT32_MIN or INT32_MAX by its sign (saturating_left_shift).
__attribute__((target("avx2"), always_inline)) inline __m256i saturating_left_shift8(__m256i x, __m256i left) {
  const __m256i shifted = _mm256_sllv_epi32(x, left);
  const __m256i fits = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, left), x);
  const __m256i saturated = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(INT32_MAX));
  return _mm256_blendv_epi8(saturated, shifted, fits);
}

// floor((x * m + 2^(total - 1)) / 2^total) per lane, x int32, m in [0, 2^31), total in [1, 62], each
// lane with its own m and total: the one rounding of multiply_by_quantized_multiplier after its left
// shift (the result fits int32, see requantize.h). _mm256_mul_epi32 multiplies the low int32 of each
// 64-bit lane, so the even lanes and the odd lanes (moved down by 32 bits) make two sets of 64-bit
// products, each with its lanes' counts. AVX2 has no 64-bit arithmetic right shift: floor(v / 2^n) =
// ~(~v >> n) for v < 0 with a logical shift, so v is flipped by its sign mask before and after the
// shift. The low int32 of each 64-bit result is the lane's value; the odd ones move back up and join.
__attribute__((target("avx2"), always_inline)) inline __m256i rounding_product_shift8(__m256i x, __m256i m,
                                                                                    __m256i total) {
  const __m256i low32 = _mm256_set1_epi64x(0xFFFFFFFFll), one = _mm256_set1_epi64x(1), zero = _mm256_setzero_si256();
  const __m256i count_even = _mm256_and_si256(total, low32), count_odd = _mm256_srli_epi64(total, 32);
  const __m256i nudge_even = _mm256_sllv_epi64(one, _mm256_sub_epi64(count_even, one));
  const __m256i nudge_odd = _mm256_sllv_epi64(one, _mm256_sub_epi64(count_odd, one));
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, m), nudge_even);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), nudge_odd);
  const __m256i sign_even = _mm256_cmpgt_epi64(zero, even), sign_odd = _mm256_cmpgt_epi64(zero, odd);
  const __m256i q_even = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(even, sign_even), count_even), sign_even);
  const __m256i q_odd = _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(odd, sign_odd), count_odd), sign_odd);
  return _mm256_blend_epi32(q_even, _mm256_slli_epi64(q_odd, 32), 0xAA);
}

// multiply_by_quantized_multiplier(x, m, shift) per lane, given left = max(shift, 0) and total =
// 31 + max(-shift, 0) per lane.
__attribute__((target("avx2"), always_inline)) inline __m256i multiply_by_quantized_multiplier8(__m256i x, __m256i m,
                                                                                              __m256i left,
                                                                                              __m256i total) {
  return rounding_product_shift8(saturating_left_shift8(x, left), m, total);
}

}  // namespace qatlab
