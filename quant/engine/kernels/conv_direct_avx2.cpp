// conv_direct_avx2.cpp: the AVX2 direct convolution (stride 1, one group; PackedConvInt8::direct_conv()),
// which builds the GEMM's operand from the padded image as it goes instead of packing an im2col matrix
// (x86 only). Its accumulators go through output_stage_avx2.cpp.
#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>

#include "quant/engine/kernels/output_stage_avx2.h"

namespace qatlab::kernels {

namespace {

// ---------------------------------------------------------------------- AVX2 direct convolution
// A stride-1 convolution without im2col (PackedConvInt8::direct_): output position p = oy * Wp + ox
// of the padded image (positions with ox >= OW are computed too, and never read) gets
//   acc[oc][p] = folded_bias[oc] + sum_k w[oc, k] * u[p + offset_k]      (wrapped to int32)
// with u the unsigned codes and offset_k = (c * Hp + ky) * Wp + kx. The taps go in pairs (2t, 2t + 1):
// 16 positions of each tap are widened to int16 and interleaved, and meet the pair of weights,
// broadcast to every 32-bit lane, in _mm256_madd_epi16 (exact, as in avx2_tile). This builds the
// operand from the image as it goes, where the GEMM first packs an im2col matrix and reads it back.

// One row of a block for one pair of taps: lo holds positions 0-3 and 8-11 of the block, hi 4-7 and
// 12-15 (the unpacks work within 128-bit halves), each lane a pair (u[p + offset_2t], u[p + offset_2t+1]).
__attribute__((target("avx2"), always_inline)) inline void direct_row_step(const int32_t* w_pair, __m256i lo, __m256i hi,
                                                                           __m256i& acc_lo, __m256i& acc_hi) {
  const __m256i w = _mm256_set1_epi32(*w_pair);
  acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(lo, w));
  acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(hi, w));
}

// 16 positions from base (the padded image + the block's first position) for MR channels: their
// weight pairs at w_pairs + r * pairs, their output stage rows at bias_rows (PackedOutputStage::rows
// of the first channel), their accumulators to acc + r * acc_stride. Named accumulators and the
// parking before the epilogue for the reasons given at avx2_tile.
template <int MR>
__attribute__((target("avx2"))) void direct_block_avx2(const uint8_t* base, const int32_t* tap_offset, int64_t pairs,
                                                       const int32_t* w_pairs, const int32_t* bias_rows, int32_t* acc,
                                                       int64_t acc_stride) {
  static_assert(MR >= 1 && MR <= 6);
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo0 = zero, hi0 = zero, lo1 = zero, hi1 = zero, lo2 = zero, hi2 = zero;
  __m256i lo3 = zero, hi3 = zero, lo4 = zero, hi4 = zero, lo5 = zero, hi5 = zero;
  for (int64_t t = 0; t < pairs; ++t) {
    const __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + tap_offset[2 * t])));
    const __m256i b =
        _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + tap_offset[2 * t + 1])));
    const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
    const int32_t* w = w_pairs + t;
    direct_row_step(w, lo, hi, lo0, hi0);
    if constexpr (MR > 1) direct_row_step(w + pairs, lo, hi, lo1, hi1);
    if constexpr (MR > 2) direct_row_step(w + 2 * pairs, lo, hi, lo2, hi2);
    if constexpr (MR > 3) direct_row_step(w + 3 * pairs, lo, hi, lo3, hi3);
    if constexpr (MR > 4) direct_row_step(w + 4 * pairs, lo, hi, lo4, hi4);
    if constexpr (MR > 5) direct_row_step(w + 5 * pairs, lo, hi, lo5, hi5);
  }
  alignas(32) __m256i parked[12];  // (rows x {lo, hi})
  _mm256_store_si256(parked + 0, lo0), _mm256_store_si256(parked + 1, hi0);
  if constexpr (MR > 1) _mm256_store_si256(parked + 2, lo1), _mm256_store_si256(parked + 3, hi1);
  if constexpr (MR > 2) _mm256_store_si256(parked + 4, lo2), _mm256_store_si256(parked + 5, hi2);
  if constexpr (MR > 3) _mm256_store_si256(parked + 6, lo3), _mm256_store_si256(parked + 7, hi3);
  if constexpr (MR > 4) _mm256_store_si256(parked + 8, lo4), _mm256_store_si256(parked + 9, hi4);
  if constexpr (MR > 5) _mm256_store_si256(parked + 10, lo5), _mm256_store_si256(parked + 11, hi5);
  for (int r = 0; r < MR; ++r) {
    const __m256i lo = _mm256_load_si256(parked + 2 * r), hi = _mm256_load_si256(parked + 2 * r + 1);
    const __m256i bias = load8(bias_rows + r * PackedOutputStage::kParams * 8);
    // Positions 0-7 are the low halves of lo and hi, 8-15 their high halves.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * acc_stride),
                        _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20), bias));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * acc_stride + 8),
                        _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x31), bias));
  }
}

using DirectBlockFn = void (*)(const uint8_t*, const int32_t*, int64_t, const int32_t*, const int32_t*, int32_t*,
                               int64_t);

DirectBlockFn direct_block_fn(int mr) {
  switch (mr) {
    case 1: return direct_block_avx2<1>;
    case 2: return direct_block_avx2<2>;
    case 3: return direct_block_avx2<3>;
    case 4: return direct_block_avx2<4>;
    case 5: return direct_block_avx2<5>;
    default: return direct_block_avx2<6>;
  }
}
}  // namespace


// The accumulators of all `channels` at `positions` positions of the padded image img: rows of acc
// acc_stride apart (each >= positions rounded up to 16: the last block writes whole). Reads up to 15
// bytes past the last tap of the last position (the scratch's slack).
void direct_conv_avx2(const uint8_t* img, const int32_t* tap_offset, int64_t pairs, const int32_t* w_pairs,
                      const PackedOutputStage& stage, int64_t channels, int64_t positions, int32_t* acc,
                      int64_t acc_stride) {
  for (int64_t c0 = 0; c0 < channels; c0 += kAvx2MR) {
    const int mr = static_cast<int>(std::min<int64_t>(kAvx2MR, channels - c0));
    const DirectBlockFn block = direct_block_fn(mr);  // chosen once per block of channels
    const int32_t* bias_rows = stage.rows.data() + c0 * PackedOutputStage::kParams * 8;
    for (int64_t p0 = 0; p0 < positions; p0 += 16)
      block(img + p0, tap_offset, pairs, w_pairs + c0 * pairs, bias_rows, acc + c0 * acc_stride + p0, acc_stride);
  }
}

}  // namespace qatlab::kernels

#endif  // x86
