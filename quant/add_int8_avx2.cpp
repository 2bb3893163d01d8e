// add_int8_avx2.cpp: the residual add (add_int8_reference's formula, int8_kernels.h) on 8 lanes with
// AVX2, bit for bit the reference's codes. The AVX2 and AVX-512 VNNI paths both run it.
#include "quant/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/requantize.h"
#include "quant/requantize_avx2.h"

namespace qatlab {

namespace {

// One input's lanes: (code + offset) * 2^left_shift, then multiply_by_quantized_multiplier.
struct InputStage {
  __m256i offset, multiplier, left, total;
};

__attribute__((target("avx2"), always_inline)) inline InputStage input_stage(int32_t offset, int32_t multiplier,
                                                                           int shift) {
  return {_mm256_set1_epi32(offset), _mm256_set1_epi32(multiplier), _mm256_set1_epi32(requantize_left_shift(shift)),
          _mm256_set1_epi64x((int64_t{requantize_total_shift(shift)} << 32) | requantize_total_shift(shift))};
}

__attribute__((target("avx2"), always_inline)) inline __m256i load8_codes(const int8_t* p) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace

__attribute__((target("avx2"))) void add_int8_avx2(const AddInt8Params& p, const int8_t* a, const int8_t* b,
                                                   int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const InputStage in1 = input_stage(p.input1_offset, p.input1_multiplier, p.input1_shift);
  const InputStage in2 = input_stage(p.input2_offset, p.input2_multiplier, p.input2_shift);
  const InputStage outs = input_stage(0, p.output_multiplier, p.output_shift);
  const __m128i left_shift = _mm_cvtsi32_si128(p.left_shift);
  const __m256i lo = _mm256_set1_epi32(p.quantized_activation_min - p.output_offset);
  const __m256i hi = _mm256_set1_epi32(p.quantized_activation_max - p.output_offset);
  const __m256i out_offset = _mm256_set1_epi32(p.output_offset);
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    // |code + offset| <= 255 and 255 * 2^20 < 2^31: the plain shift is the reference's multiply.
    const __m256i v1 = _mm256_sll_epi32(_mm256_add_epi32(load8_codes(a + i), in1.offset), left_shift);
    const __m256i v2 = _mm256_sll_epi32(_mm256_add_epi32(load8_codes(b + i), in2.offset), left_shift);
    const __m256i s1 = multiply_by_quantized_multiplier8(v1, in1.multiplier, in1.left, in1.total);
    const __m256i s2 = multiply_by_quantized_multiplier8(v2, in2.multiplier, in2.left, in2.total);
    const __m256i scaled =
        multiply_by_quantized_multiplier8(_mm256_add_epi32(s1, s2), outs.multiplier, outs.left, outs.total);
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
