// output_stage_avx2.cpp: the AVX2 output stages that run over a conv's staged int32 accumulators (after
// a fused 2x2 max pool, or after the direct convolution), bit-identical to the portable ones.
#if defined(__x86_64__) || defined(__i386__)
#include "quant/engine/kernels/output_stage_avx2.h"

namespace qatlab::kernels {

// The AVX2 form of pool_requantize_portable, 8 windows at a time: the window's two rows are maxed
// lane by lane, then the even and odd columns are separated (shuffle_ps on the int32 bits) and maxed.
// The windows come out in the order 0 1 4 5 2 3 6 7, which one 64-bit permute puts back after
// requantizing. Reads up to 14 int32 past the last window's second row (the caller leaves slack).
__attribute__((target("avx2"))) void pool_requantize_avx2(const int32_t* acc, int64_t acc_stride, int64_t row_stride,
                                                          int64_t channels, int64_t oh, int64_t ow,
                                                          const PackedOutputStage& s, int8_t* y) {
  const OutputConsts k = output_consts(s);
  const int64_t poh = oh / 2, pow = ow / 2;
  const int8_t* y_end = y + channels * poh * pow;
  for (int64_t c = 0; c < channels; ++c) {
    const int32_t* params = s.rows.data() + c * PackedOutputStage::kParams * 8;
    for (int64_t py = 0; py < poh; ++py) {
      const int32_t* r0 = acc + c * acc_stride + 2 * py * row_stride;  // conv output rows 2py and 2py + 1
      const int32_t* r1 = r0 + row_stride;
      int8_t* out = y + (c * poh + py) * pow;
      for (int64_t px = 0; px < pow; px += 8) {
        const __m256 a = _mm256_castsi256_ps(_mm256_max_epi32(load8(r0 + 2 * px), load8(r1 + 2 * px)));
        const __m256 b = _mm256_castsi256_ps(_mm256_max_epi32(load8(r0 + 2 * px + 8), load8(r1 + 2 * px + 8)));
        const __m256i even = _mm256_castps_si256(_mm256_shuffle_ps(a, b, 0x88));
        const __m256i odd = _mm256_castps_si256(_mm256_shuffle_ps(a, b, 0xDD));
        const __m256i q = _mm256_permute4x64_epi64(requantize8_acc(_mm256_max_epi32(even, odd), params, 8, k), 0xD8);
        // All 8 bytes unless this is the very end of y: what a short row spills into the next one
        // is written again, in order, by the next row.
        store_row8(q, out + px, out + px + 8 <= y_end ? 8 : static_cast<int>(pow - px));
      }
    }
  }
}

// The output stage after the direct conv without a pool: acc as in pool_requantize_avx2, y (OC, OH,
// OW) the requantized codes. Reads up to 7 int32 past the end of a row.
__attribute__((target("avx2"))) void requantize_rows_avx2(const int32_t* acc, int64_t acc_stride, int64_t row_stride,
                                                          int64_t channels, int64_t oh, int64_t ow,
                                                          const PackedOutputStage& s, int8_t* y) {
  const OutputConsts k = output_consts(s);
  const int8_t* y_end = y + channels * oh * ow;
  for (int64_t c = 0; c < channels; ++c) {
    const int32_t* params = s.rows.data() + c * PackedOutputStage::kParams * 8;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const int32_t* src = acc + c * acc_stride + oy * row_stride;
      int8_t* out = y + (c * oh + oy) * ow;
      for (int64_t ox = 0; ox < ow; ox += 8)  // full stores but at the end of y, as in pool_requantize_avx2
        store_row8(requantize8_acc(load8(src + ox), params, 8, k), out + ox,
                   out + ox + 8 <= y_end ? 8 : static_cast<int>(ow - ox));
    }
  }
}

}  // namespace qatlab::kernels

#endif  // x86
