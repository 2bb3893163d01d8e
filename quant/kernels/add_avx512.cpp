// add_avx512.cpp: the residual add (add_int8_reference's formula, int8_kernels.h) on 16 lanes with
// AVX-512 (F, BW), bit for bit the reference's codes; the AVX-512 VNNI path runs it. The same steps as
// add_avx2.cpp, twice as wide, and AVX-512's 64-bit arithmetic shift gives the rounding's floor directly.
#include "quant/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/requantize.h"

#define QATLAB_AVX512_ADD __attribute__((target("avx512f,avx512bw"), always_inline)) inline

namespace qatlab {

namespace {

// multiply_by_quantized_multiplier on 16 lanes that share one multiplier and one shift (see
// add_avx2.cpp): a saturating left shift where the shift is positive, then the 64-bit product with the
// rounding nudge, shifted right (arithmetic: floor) by the total shift.
struct UniformStage {
  __m512i multiplier, left, nudge;
  __m128i total;
  bool shifts_left;
};

QATLAB_AVX512_ADD UniformStage uniform_stage(int32_t multiplier, int shift) {
  const int total = requantize_total_shift(shift);
  return {_mm512_set1_epi32(multiplier), _mm512_set1_epi32(requantize_left_shift(shift)),
          _mm512_set1_epi64(int64_t{1} << (total - 1)), _mm_cvtsi32_si128(total), requantize_left_shift(shift) > 0};
}

// Saturating x * 2^left: an overflowed lane (shifting back does not give x) takes INT32_MIN or INT32_MAX
// by its sign, as saturating_left_shift does.
QATLAB_AVX512_ADD __m512i saturating_left_shift16(__m512i x, __m512i left) {
  const __m512i shifted = _mm512_sllv_epi32(x, left);
  const __mmask16 fits = _mm512_cmpeq_epi32_mask(_mm512_srav_epi32(shifted, left), x);
  const __m512i saturated = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(INT32_MAX));
  return _mm512_mask_blend_epi32(fits, saturated, shifted);
}

QATLAB_AVX512_ADD __m512i apply(const UniformStage& s, __m512i x) {
  if (s.shifts_left) x = saturating_left_shift16(x, s.left);
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, s.multiplier), s.nudge);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), s.multiplier), s.nudge);
  const __m512i q_even = _mm512_sra_epi64(even, s.total), q_odd = _mm512_sra_epi64(odd, s.total);
  // The low int32 of each 64-bit lane is the value: the odd ones move up and join the even ones.
  return _mm512_mask_blend_epi32(0xAAAA, q_even, _mm512_slli_epi64(q_odd, 32));
}

QATLAB_AVX512_ADD __m512i load16_codes(const int8_t* p) {
  return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace

__attribute__((target("avx512f,avx512bw"))) void add_int8_avx512(const AddInt8Params& p, const int8_t* a,
                                                                 const int8_t* b, int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const UniformStage in1 = uniform_stage(p.input1_multiplier, p.input1_shift);
  const UniformStage in2 = uniform_stage(p.input2_multiplier, p.input2_shift);
  const UniformStage outs = uniform_stage(p.output_multiplier, p.output_shift);
  const __m512i off1 = _mm512_set1_epi32(p.input1_offset), off2 = _mm512_set1_epi32(p.input2_offset);
  const __m128i left_shift = _mm_cvtsi32_si128(p.left_shift);
  const __m512i lo = _mm512_set1_epi32(p.quantized_activation_min - p.output_offset);
  const __m512i hi = _mm512_set1_epi32(p.quantized_activation_max - p.output_offset);
  const __m512i out_offset = _mm512_set1_epi32(p.output_offset);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    // |code + offset| <= 255 and 255 * 2^20 < 2^31: the plain shift is the reference's multiply.
    const __m512i v1 = _mm512_sll_epi32(_mm512_add_epi32(load16_codes(a + i), off1), left_shift);
    const __m512i v2 = _mm512_sll_epi32(_mm512_add_epi32(load16_codes(b + i), off2), left_shift);
    const __m512i scaled = apply(outs, _mm512_add_epi32(apply(in1, v1), apply(in2, v2)));
    // Clamp before the offset, as the reference does; the result lies in [-128, 127], so the
    // truncating narrow to bytes keeps every value.
    const __m512i q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(scaled, lo), hi), out_offset);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(q));
  }
  if (i < count) add_int8_reference(p, a + i, b + i, out + i, count - i);
}

}  // namespace qatlab

#endif
