// output_stage_avx2.h: the packed GEMM's output stage on 8 int32 lanes with AVX2 (the integer formula
// of requantize(), requantize.h, bit for bit), inline for the AVX2 and AVX-512 VNNI tiles (internal to
// quant/engine/kernels; x86 only). The functions carry target("avx2"): callers are built for baseline x86-64
// and run them only where the CPU has AVX2.
#pragma once

#include <immintrin.h>

#include <cassert>
#include <cstdint>
#include <cstring>

#include "quant/engine/kernels/gemm_kernel.h"
#include "quant/engine/requantize_avx2.h"

namespace qatlab::kernels {

// 8 int32 from p (any alignment).
__attribute__((target("avx2"), always_inline)) inline __m256i load8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// The k-th of the 8-lane parameters starting at p (see requantize8).
__attribute__((target("avx2"), always_inline)) inline __m256i param8(const int32_t* p, int64_t stride, int k) {
  return load8(p + k * stride);
}

// The per-call constants of the output stage, loaded into registers once per tile.
struct OutputConsts {
  __m256i lo, hi, offset;
  bool any_left_shift;
};

__attribute__((target("avx2"), always_inline)) inline OutputConsts output_consts(const PackedOutputStage& s) {
  return OutputConsts{_mm256_set1_epi32(s.clamp_lo), _mm256_set1_epi32(s.clamp_hi),
                      _mm256_set1_epi32(s.output_offset), s.any_left_shift};
}

// The integer formula of requantize() on 8 lanes (see requantize.h), after adding the folded bias.
// p points at the 8 lanes of the first parameter (folded bias) and the k-th parameter is at
// p + k * stride (PackedOutputStage layout): a channel per lane (stride = padded channels, the fully
// connected layout) or one channel in all 8 lanes (stride 8, conv rows). Multipliers are >= 0 (checked
// when packing).
// requantize8_acc is the same from the accumulator (the folded bias already added).
__attribute__((target("avx2"), always_inline)) inline __m256i requantize8_acc(__m256i x, const int32_t* p,
                                                                            int64_t stride, const OutputConsts& k) {
  if (k.any_left_shift) x = saturating_left_shift8(x, param8(p, stride, 2));
  x = rounding_product_shift8(x, param8(p, stride, 1), param8(p, stride, 3));
  // Clamp, then add the offset (as requantize() does).
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(x, k.lo), k.hi), k.offset);
}

__attribute__((target("avx2"), always_inline)) inline __m256i requantize8(__m256i sum, const int32_t* p, int64_t stride,
                                                                        const OutputConsts& k) {
  // int32 wrap-around, as the reference's conversion
  return requantize8_acc(_mm256_add_epi32(sum, param8(p, stride, 0)), p, stride, k);
}

// Requantizes the 8 sums of GEMM row i, columns j0..j0+7.
__attribute__((target("avx2"), always_inline)) inline __m256i requantize_row8(__m256i sum, const Epilogue& e,
                                                                            const OutputConsts& k, int64_t i,
                                                                            int64_t j0) {
  const PackedOutputStage& s = *e.stage;
  return e.channel_per_row
             ? requantize8(sum, s.rows.data() + (e.channel0 + i) * PackedOutputStage::kParams * 8, 8, k)
             : requantize8(sum, s.columns.data() + e.channel0 + j0, s.padded, k);
}

// Stores the first `cols` of 8 requantized values (already in [-128, 127]: the saturating packs
// just narrow them, in order).
__attribute__((target("avx2"), always_inline)) inline void store_row8(__m256i q, int8_t* dst, int cols) {
  const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i p8 = _mm_packs_epi16(p16, p16);
  if (cols >= 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), p8);
    return;
  }
  // 4, 2 and 1 bytes as cols needs them (fixed-size copies are plain moves, not library calls).
  uint64_t bytes = static_cast<uint64_t>(_mm_cvtsi128_si64(p8));
  if (cols & 4) {
    const uint32_t v = static_cast<uint32_t>(bytes);
    std::memcpy(dst, &v, 4);
    dst += 4, bytes >>= 32;
  }
  if (cols & 2) {
    const uint16_t v = static_cast<uint16_t>(bytes);
    std::memcpy(dst, &v, 2);
    dst += 2, bytes >>= 16;
  }
  if (cols & 1) *dst = static_cast<int8_t>(bytes);
}

// Stores 4 rows of 8 requantized values, rows `stride` bytes apart, with shared packing: the packs
// interleave the rows in 4-byte pieces, which one dword permute puts back in row order.
__attribute__((target("avx2"), always_inline)) inline void store_4rows8(__m256i q0, __m256i q1, __m256i q2, __m256i q3,
                                                                        int8_t* dst, int64_t stride) {
  const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
  // dwords (row r, half h) are at 4 * h + r; the permute makes each row's 8 bytes contiguous.
  const __m256i rows = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  const __m128i r01 = _mm256_castsi256_si128(rows), r23 = _mm256_extracti128_si256(rows, 1);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), r01);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + stride), _mm_unpackhi_epi64(r01, r01));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 2 * stride), r23);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + 3 * stride), _mm_unpackhi_epi64(r23, r23));
}

// Stores the first `cols` of 8 int32 sums (Epilogue::sums).
__attribute__((target("avx2"), always_inline)) inline void store_sums8(__m256i sum, int32_t* dst, int cols) {
  if (cols >= 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), sum);
    return;
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), sum);
  std::memcpy(dst, lanes, sizeof(int32_t) * cols);
}

// Requantizes the 8 sums of GEMM row i, columns j0..j0+7, and stores the first `cols` of them (or,
// with e.acc, stores the 8 accumulators; with e.sums, the first `cols` raw sums).
__attribute__((target("avx2"), always_inline)) inline void finish8(__m256i sum, const Epilogue& e, int64_t i,
                                                                   int64_t j0, int cols) {
  if (e.sums) {
    store_sums8(sum, e.sums + i * e.out_stride + j0, cols);
    return;
  }
  if (e.acc) {
    assert(e.channel_per_row);
    const __m256i bias = param8(e.stage->rows.data() + (e.channel0 + i) * PackedOutputStage::kParams * 8, 8, 0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(e.acc + i * e.out_stride + j0), _mm256_add_epi32(sum, bias));
    return;
  }
  const OutputConsts k = output_consts(*e.stage);
  store_row8(requantize_row8(sum, e, k, i, j0), e.out + i * e.out_stride + j0, cols);
}

}  // namespace qatlab::kernels
