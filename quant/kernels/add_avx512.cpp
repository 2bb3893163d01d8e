// add_avx512.cpp: the residual add (add_int8_reference's formula, int8_kernels.h) on 16 lanes with
// AVX-512 (F, BW), bit for bit the reference's codes; the AVX-512 VNNI path runs it. The same steps as
// add_avx2.cpp, twice as wide, and AVX-512's 64-bit arithmetic shift gives the rounding's floor directly.
#include "quant/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/requantize_avx512.h"

namespace qatlab {

namespace {

QATLAB_AVX512_INLINE __m512i load16_codes(const int8_t* p) {
  return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

}  // namespace

__attribute__((target("avx512f,avx512bw"))) void add_int8_avx512(const AddInt8Params& p, const int8_t* a,
                                                                 const int8_t* b, int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const UniformRequantize in1 = uniform_requantize(p.input1_multiplier, p.input1_shift);
  const UniformRequantize in2 = uniform_requantize(p.input2_multiplier, p.input2_shift);
  const UniformRequantize outs = uniform_requantize(p.output_multiplier, p.output_shift);
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
