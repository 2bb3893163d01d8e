// add_avx2.cpp: the residual add (add_int8_reference's formula, int8_kernels.h) on 8 lanes with
// AVX2, bit for bit the reference's codes. The AVX2 path runs it (AVX-512 VNNI: add_avx512.cpp).
#include "quant/engine/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/engine/requantize.h"
#include "quant/engine/requantize_avx2.h"

namespace qatlab {

namespace {

// multiply_by_quantized_multiplier on 8 lanes that share one multiplier and one shift (the add's three
// are per tensor): rounding_product_shift8 (requantize_avx2.h) with the shift counts and the rounding
// nudge as constants, and the saturating left shift only where the shift is positive (an input's real
// multiplier is at most 0.5, so its left shift is 0).
struct UniformStage {
  __m256i multiplier, left, nudge;
  __m128i total;
  bool shifts_left;
};

__attribute__((target("avx2"), always_inline)) inline UniformStage uniform_stage(int32_t multiplier, int shift) {
  const int total = requantize_total_shift(shift);
  return {_mm256_set1_epi32(multiplier), _mm256_set1_epi32(requantize_left_shift(shift)),
          _mm256_set1_epi64x(int64_t{1} << (total - 1)), _mm_cvtsi32_si128(total), requantize_left_shift(shift) > 0};
}

__attribute__((target("avx2"), always_inline)) inline __m256i apply(const UniformStage& s, __m256i x) {
  if (s.shifts_left) x = saturating_left_shift8(x, s.left);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, s.multiplier), s.nudge);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), s.multiplier), s.nudge);
  // floor(v / 2^total) for signed 64-bit v with a logical shift: flip negative v before and after.
  const __m256i sign_even = _mm256_cmpgt_epi64(zero, even), sign_odd = _mm256_cmpgt_epi64(zero, odd);
  const __m256i q_even = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(even, sign_even), s.total), sign_even);
  const __m256i q_odd = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(odd, sign_odd), s.total), sign_odd);
  return _mm256_blend_epi32(q_even, _mm256_slli_epi64(q_odd, 32), 0xAA);
}

// An input's multiply_by_quantized_multiplier: as add_avx512.cpp's scale_input, the input whose real
// multiplier is exactly 1/2 (2^30, shift 0) takes floor((v + 1) / 2) instead of the 64-bit products.
struct AddInput {
  UniformStage stage;
  bool half;
};

__attribute__((target("avx2"), always_inline)) inline AddInput add_input(int32_t multiplier, int shift) {
  return {uniform_stage(multiplier, shift), multiplier == (int32_t{1} << 30) && shift == 0};
}

__attribute__((target("avx2"), always_inline)) inline __m256i scale_input(const AddInput& in, __m256i v) {
  if (in.half) return _mm256_srai_epi32(_mm256_add_epi32(v, _mm256_set1_epi32(1)), 1);
  return apply(in.stage, v);
}

__attribute__((target("avx2"), always_inline)) inline __m256i load8_codes(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace

__attribute__((target("avx2"))) void add_int8_avx2(const AddInt8Params& p, const int8_t* a, const int8_t* b,
                                                   int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const AddInput in1 = add_input(p.input1_multiplier, p.input1_shift);
  const AddInput in2 = add_input(p.input2_multiplier, p.input2_shift);
  const UniformStage outs = uniform_stage(p.output_multiplier, p.output_shift);
  const __m256i off1 = _mm256_set1_epi32(p.input1_offset), off2 = _mm256_set1_epi32(p.input2_offset);
  const __m128i left_shift = _mm_cvtsi32_si128(p.left_shift);
  const __m256i lo = _mm256_set1_epi32(p.quantized_activation_min - p.output_offset);
  const __m256i hi = _mm256_set1_epi32(p.quantized_activation_max - p.output_offset);
  const __m256i out_offset = _mm256_set1_epi32(p.output_offset);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    // |code + offset| <= 255 and 255 * 2^20 < 2^31: the plain shift is the reference's multiply.
    const __m256i v1 = _mm256_sll_epi32(_mm256_add_epi32(load8_codes(a + i), off1), left_shift);
    const __m256i v2 = _mm256_sll_epi32(_mm256_add_epi32(load8_codes(b + i), off2), left_shift);
    const __m256i scaled = apply(outs, _mm256_add_epi32(scale_input(in1, v1), scale_input(in2, v2)));
    // Clamp before the offset, as the reference does; the result then lies in [-128, 127] and the
    // saturating packs below change nothing.
    const __m256i q = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(scaled, lo), hi), out_offset);
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packs_epi16(words, words));
  }
  if (i < count) add_int8_reference(p, a + i, b + i, out + i, count - i);
}

}  // namespace qatlab

#endif
