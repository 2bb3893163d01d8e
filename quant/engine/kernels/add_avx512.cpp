// add_avx512.cpp: the residual add (add_int8_reference's formula, int8_kernels.h) on 16 lanes with
// AVX-512 (F, BW), bit for bit the reference's codes, on codes (add_int8_avx512) and on float values
// (add_int8_values_avx512, the QAT simulation's add); the AVX-512 VNNI path runs them. The same steps as
// add_avx2.cpp, twice as wide, and AVX-512's 64-bit arithmetic shift gives the rounding's floor directly.
#include "quant/engine/int8_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/engine/requantize_avx512.h"

namespace qatlab {

namespace {

QATLAB_AVX512_INLINE __m512i load16_codes(const int8_t* p) {
  return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// An input's multiply_by_quantized_multiplier. The input with the larger scale has a real multiplier of
// exactly 1/2 (make_add_params gives it 2^30 with shift 0), whose rounded product is floor((v + 1) / 2)
// (v = x * 2^left_shift, |v| <= 255 * 2^20: v + 1 cannot overflow): two instructions instead of the
// 64-bit products.
struct AddInput {
  UniformRequantize r;
  bool half;
};

QATLAB_AVX512_INLINE AddInput add_input(int32_t multiplier, int shift) {
  return {uniform_requantize(multiplier, shift), multiplier == (int32_t{1} << 30) && shift == 0};
}

QATLAB_AVX512_INLINE __m512i scale_input(const AddInput& in, __m512i v) {
  if (in.half) return _mm512_srai_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(1)), 1);
  return apply(in.r, v);
}

// The add's steps on 16 lanes of int32 codes, shared by the code and the float-value kernels: up to the
// clamped result minus the output offset (the output zero point).
struct AddSteps {
  AddInput in1, in2;
  UniformRequantize outs;
  __m512i off1, off2, lo, hi;
  __m128i left_shift;
};

QATLAB_AVX512_INLINE AddSteps add_steps(const AddInt8Params& p) {
  return {add_input(p.input1_multiplier, p.input1_shift),
          add_input(p.input2_multiplier, p.input2_shift),
          uniform_requantize(p.output_multiplier, p.output_shift),
          _mm512_set1_epi32(p.input1_offset),
          _mm512_set1_epi32(p.input2_offset),
          _mm512_set1_epi32(p.quantized_activation_min - p.output_offset),
          _mm512_set1_epi32(p.quantized_activation_max - p.output_offset),
          _mm_cvtsi32_si128(p.left_shift)};
}

QATLAB_AVX512_INLINE __m512i add_codes16(const AddSteps& s, __m512i ca, __m512i cb) {
  // |code + offset| <= 255 and 255 * 2^20 < 2^31: the plain shift is the reference's multiply.
  const __m512i v1 = _mm512_sll_epi32(_mm512_add_epi32(ca, s.off1), s.left_shift);
  const __m512i v2 = _mm512_sll_epi32(_mm512_add_epi32(cb, s.off2), s.left_shift);
  const __m512i scaled = apply(s.outs, _mm512_add_epi32(scale_input(s.in1, v1), scale_input(s.in2, v2)));
  // Clamped before the offset is added, as the reference does.
  return _mm512_min_epi32(_mm512_max_epi32(scaled, s.lo), s.hi);
}

}  // namespace

__attribute__((target("avx512f,avx512bw"))) void add_int8_avx512(const AddInt8Params& p, const int8_t* a,
                                                                 const int8_t* b, int8_t* out, int64_t count) {
  check_add_int8_params(p);
  const AddSteps steps = add_steps(p);
  const __m512i out_offset = _mm512_set1_epi32(p.output_offset);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    // The codes lie in [-128, 127]: the truncating narrow to bytes keeps every value.
    const __m512i q = _mm512_add_epi32(add_codes16(steps, load16_codes(a + i), load16_codes(b + i)), out_offset);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(q));
  }
  if (i < count) add_int8_reference(p, a + i, b + i, out + i, count - i);
}

namespace {

// quantize_float_to_int8_values on 16 lanes, to int32 codes: the rounding instruction rounds to nearest
// even as nearbyint does (default rounding mode), and the clamps are its comparisons (no NaN here).
QATLAB_AVX512_INLINE __m512i codes16(__m512 x, __m512 inv_scale, __m512 lo, __m512 hi, __m512i zero_point) {
  __m512 r = _mm512_roundscale_ps(_mm512_mul_ps(x, inv_scale),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, lo, _CMP_LT_OQ), r, lo);
  r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(hi, r, _CMP_LT_OQ), r, hi);
  return _mm512_add_epi32(zero_point, _mm512_cvtps_epi32(r));
}

}  // namespace

__attribute__((target("avx512f,avx512bw"))) bool add_int8_values_avx512(const AddInt8Params& p,
                                                                        const AddValueGrids& g, const float* a,
                                                                        const float* b, float* out, int64_t count) {
  check_add_int8_params(p);
  const AddSteps steps = add_steps(p);
  const int32_t za = -p.input1_offset, zb = -p.input2_offset;
  // The operands' grids, as quantize_float_to_int8_values sets them up.
  const __m512 inv_a = _mm512_set1_ps(1.0f / g.a_scale), inv_b = _mm512_set1_ps(1.0f / g.b_scale);
  const __m512 lo_a = _mm512_set1_ps(static_cast<float>(g.a_min - za)), hi_a = _mm512_set1_ps(static_cast<float>(g.a_max - za));
  const __m512 lo_b = _mm512_set1_ps(static_cast<float>(g.b_min - zb)), hi_b = _mm512_set1_ps(static_cast<float>(g.b_max - zb));
  const __m512i zpa = _mm512_set1_epi32(za), zpb = _mm512_set1_epi32(zb);
  const __m512 out_scale = _mm512_set1_ps(g.out_scale);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    const __m512 xa = _mm512_loadu_ps(a + i), xb = _mm512_loadu_ps(b + i);
    if (_mm512_cmp_ps_mask(xa, xb, _CMP_UNORD_Q)) return false;  // a NaN in either
    const __m512i ca = codes16(xa, inv_a, lo_a, hi_a, zpa), cb = codes16(xb, inv_b, lo_b, hi_b, zpb);
    // The add on the codes as int32 lanes (no round trip through bytes); the clamped code minus the
    // output zero point is what dequantization multiplies.
    const __m512i q = add_codes16(steps, ca, cb);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(out_scale, _mm512_cvtepi32_ps(q)));
  }
  return i == count || add_int8_values_reference(p, g, a + i, b + i, out + i, count - i);
}

}  // namespace qatlab

#endif
