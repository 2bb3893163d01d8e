// lstm_avx2.cpp: the integer LSTM's elementwise stages on 8 int32 lanes with AVX2 and its batch-1
// recurrent GEMV (lstm_stages.h), x86 only: the same integers as lstm_portable.cpp, whose functions
// take the tails (fewer than 8 rows or 16 columns). The functions carry target("avx2") so that the
// file builds for baseline x86-64; they run only where the CPU has AVX2.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstring>

#include "quant/engine/kernels/lstm_stages.h"
#include "quant/engine/requantize_avx2.h"

namespace qatlab::kernels {

namespace {

__attribute__((target("avx2"), always_inline)) inline __m256i load8(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// Stage row r..r+7 of acc + bias, saturated to int16 (still in int32 lanes).
__attribute__((target("avx2"), always_inline)) inline __m256i stage8(const LstmRowStage& s, int64_t r,
                                                                      const int32_t* acc, const int32_t* bias) {
  const __m256i v = _mm256_add_epi32(load8(acc + r), load8(bias + r));  // wraps modulo 2^32
  const __m256i g = multiply_by_quantized_multiplier8(v, load8(s.multiplier.data() + r), load8(s.left.data() + r),
                                                      load8(s.total.data() + r));
  return _mm256_max_epi32(_mm256_min_epi32(g, _mm256_set1_epi32(INT16_MAX)), _mm256_set1_epi32(INT16_MIN));
}

// 8 int32 lanes already in the int16 range, stored as 8 int16.
__attribute__((target("avx2"), always_inline)) inline void store8_int16(int16_t* dst, __m256i v) {
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(v, v), 0x08);  // lanes 0..7 in the low half
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(packed));
}

__attribute__((target("avx2"), always_inline)) inline __m256i load8_int16(const int16_t* p) {
  return _mm256_cvtepi16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

__attribute__((target("avx2"))) void input_gates_avx2(const int32_t* acc, const int32_t* bias, const LstmRowStage& s,
                                                       int64_t G, int16_t* out) {
  int64_t r = 0;
  for (; r + 8 <= G; r += 8) store8_int16(out + r, stage8(s, r, acc, bias));
  for (; r < G; ++r) out[r] = stage_row(s, r, wrap_add(acc[r], bias[r]));
}

__attribute__((target("avx2"))) void gates_avx2(const int16_t* gx, const int32_t* acc, const int32_t* bias,
                                                 const LstmRowStage& s, int64_t G, int16_t* a) {
  if (!acc) {
    std::memcpy(a, gx, sizeof(int16_t) * G);
    return;
  }
  int64_t r = 0;
  for (; r + 8 <= G; r += 8) {
    // Both halves are int16 values in int32 lanes: their sum is exact, then saturated (packs).
    store8_int16(a + r, _mm256_max_epi32(_mm256_min_epi32(_mm256_add_epi32(load8_int16(gx + r), stage8(s, r, acc, bias)),
                                                          _mm256_set1_epi32(INT16_MAX)),
                                         _mm256_set1_epi32(INT16_MIN)));
  }
  for (; r < G; ++r) a[r] = lstm_gate_sum(gx[r], stage_row(s, r, wrap_add(acc[r], bias[r])));
}

// rounding_divide_by_pot of 8 lanes by one exponent (`count`, with mask = 2^e - 1 and half = mask >> 1).
__attribute__((target("avx2"), always_inline)) inline __m256i rdiv8(__m256i x, __m128i count, __m256i mask,
                                                                     __m256i half) {
  const __m256i threshold = _mm256_add_epi32(half, _mm256_srli_epi32(x, 31));
  const __m256i round_up = _mm256_cmpgt_epi32(_mm256_and_si256(x, mask), threshold);
  return _mm256_sub_epi32(_mm256_sra_epi32(x, count), round_up);
}

__attribute__((target("avx2"))) void cell_avx2(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg) {
  const __m128i count15 = _mm_cvtsi32_si128(kLstmActFracBits);
  const __m256i mask15 = _mm256_set1_epi32((1 << kLstmActFracBits) - 1), half15 = _mm256_srli_epi32(mask15, 1);
  const int ig_shift = 2 * kLstmActFracBits - k;  // 15..30
  const __m128i count_ig = _mm_cvtsi32_si128(ig_shift);
  const __m256i mask_ig = _mm256_set1_epi32(static_cast<int32_t>((int64_t{1} << ig_shift) - 1));
  const __m256i half_ig = _mm256_srli_epi32(mask_ig, 1);
  // The cell on the gate grid: a left shift by 12 - k, saturated by the caller's clamp, or a rounding
  // right shift by k - 12.
  const bool widen = k <= kLstmGateFracBits;
  const int cg_shift = widen ? kLstmGateFracBits - k : k - kLstmGateFracBits;
  const __m128i count_cg = _mm_cvtsi32_si128(cg_shift);
  const __m256i mask_cg = _mm256_set1_epi32((1 << cg_shift) - 1), half_cg = _mm256_srli_epi32(mask_cg, 1);
  const __m256i lo = _mm256_set1_epi32(INT16_MIN), hi = _mm256_set1_epi32(INT16_MAX);
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) {
    const __m256i i = load8_int16(act + j), f = load8_int16(act + H + j), g = load8_int16(act + 2 * H + j);
    const __m256i fc = rdiv8(_mm256_mullo_epi32(f, load8_int16(c + j)), count15, mask15, half15);
    const __m256i ig = rdiv8(_mm256_mullo_epi32(i, g), count_ig, mask_ig, half_ig);
    const __m256i cn = _mm256_max_epi32(_mm256_min_epi32(_mm256_add_epi32(fc, ig), hi), lo);
    store8_int16(c + j, cn);
    const __m256i on_grid = widen ? _mm256_max_epi32(_mm256_min_epi32(_mm256_sll_epi32(cn, count_cg), hi), lo)
                                  : rdiv8(cn, count_cg, mask_cg, half_cg);
    store8_int16(cg + j, on_grid);
  }
  lstm_cell_portable(act, H, k, c, cg, j);  // the tail
}

__attribute__((target("avx2"))) void hidden_avx2(const int16_t* o, const int16_t* tanh_c, int64_t H,
                                                  const LstmInt8Params& p, int8_t* h, uint8_t* u) {
  const __m256i m = _mm256_set1_epi32(p.hidden_multiplier), vl = _mm256_set1_epi32(requantize_left_shift(p.hidden_shift)),
                vt = _mm256_set1_epi32(requantize_total_shift(p.hidden_shift));
  // requantize(): clamp to [min - offset, max - offset] before adding the offset, which cannot overflow.
  const __m256i lo = _mm256_set1_epi32(p.quantized_activation_min - p.output_offset),
                hi = _mm256_set1_epi32(p.quantized_activation_max - p.output_offset),
                offset = _mm256_set1_epi32(p.output_offset);
  int64_t j = 0;
  for (; j + 16 <= H; j += 16) {
    // Columns j .. j + 15 as int32 codes (the lambda-free form: a lambda would not inherit target("avx2")).
    __m256i codes[2];
    for (int half_index = 0; half_index < 2; ++half_index) {
      const int64_t jj = j + 8 * half_index;
      const __m256i oh = _mm256_mullo_epi32(load8_int16(o + jj), load8_int16(tanh_c + jj));
      codes[half_index] =
          _mm256_add_epi32(_mm256_max_epi32(_mm256_min_epi32(multiply_by_quantized_multiplier8(oh, m, vl, vt), hi), lo), offset);
    }
    // 16 codes in [-128, 127]: the saturating packs are exact; packs_epi32 interleaves the 128-bit lanes,
    // which the permute undoes.
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(codes[0], codes[1]), 0xD8);
    const __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + j), b);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(u + j), _mm_xor_si128(b, _mm_set1_epi8(static_cast<char>(0x80))));
  }
  lstm_hidden_portable(o + j, tanh_c + j, H - j, p, h + j, u + j);
}


// The recurrent matmul of one or two samples (batch-1 latency), on W_hh as int8 panels of 16 gate rows
// and quads of k: (P, KQ, 16, 4) bytes, zero-padded in G and H. The GEMM's widening of the weights to
// int16 would cost as much as the multiply-adds here, so the bytes are multiplied as they are, with
// _mm256_maddubs_epi16 (u8 x s8): |h| as the unsigned operand, w with h's sign moved onto it
// (_mm256_sign_epi8). A pair sum is at most 2 * 128 * 127 = 32512, so the int16 pair sums never saturate,
// given that no weight is -128 (whose negation does not exist in int8: such layers take the GEMM);
// _mm256_madd_epi16 with ones then adds the pairs into int32 lanes of 4 k. acc (rows, G) = h W_hh^T
// with h the signed codes (row stride KH = 4 KQ, zero-padded).
template <int MR>
__attribute__((target("avx2"))) void recurrent_gemv_avx2(const int8_t* h, int64_t h_stride, const int8_t* panels,
                                                          int64_t kq_count, int64_t G, int32_t* acc) {
  static_assert(MR == 1 || MR == 2);
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t panel_count = (G + 15) / 16;
  for (int64_t pnl = 0; pnl < panel_count; ++pnl) {
    const int8_t* w = panels + pnl * kq_count * 64;
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    for (int64_t kq = 0; kq < kq_count; ++kq) {
      const __m256i w_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + kq * 64));
      const __m256i w_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + kq * 64 + 32));
      int32_t quad;
      std::memcpy(&quad, h + 4 * kq, sizeof quad);
      __m256i a = _mm256_set1_epi32(quad), ua = _mm256_abs_epi8(a);
      lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w_lo, a)), ones));
      hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w_hi, a)), ones));
      if constexpr (MR == 2) {
        std::memcpy(&quad, h + h_stride + 4 * kq, sizeof quad);
        a = _mm256_set1_epi32(quad), ua = _mm256_abs_epi8(a);
        lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w_lo, a)), ones));
        hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w_hi, a)), ones));
      }
    }
    const int cols = static_cast<int>(std::min<int64_t>(16, G - pnl * 16));
    alignas(32) int32_t sums[16];  // (16)
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), lo0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), hi0);
    std::memcpy(acc + pnl * 16, sums, sizeof(int32_t) * cols);
    if constexpr (MR == 2) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums), lo1);
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), hi1);
      std::memcpy(acc + G + pnl * 16, sums, sizeof(int32_t) * cols);
    }
  }
}

void recurrent_gemv(int rows, const int8_t* h, int64_t h_stride, const int8_t* panels, int64_t kq_count, int64_t G,
                    int32_t* acc) {
  if (rows == 1)
    recurrent_gemv_avx2<1>(h, h_stride, panels, kq_count, G, acc);
  else
    recurrent_gemv_avx2<2>(h, h_stride, panels, kq_count, G, acc);
}

}  // namespace

const LstmStages& lstm_stages_avx2() {
  static const LstmStages stages{input_gates_avx2, gates_avx2, cell_avx2, hidden_avx2, recurrent_gemv};
  return stages;
}

}  // namespace qatlab::kernels

#endif  // x86
