// gemm_avx2.cpp: the AVX2 backend of the packed int8 GEMM (x86 only): the 8-bit tile (operands widened
// to int16, _mm256_madd_epi16), the 4-bit fully connected tile (_mm256_maddubs_epi16 on unpacked
// nibbles), and its GemmKernel entry (gemm_kernel.h), which also brings the AVX2 packing, the direct
// convolution and the AVX2 output stages.
//
// The functions carry __attribute__((target("avx2"))) so that the file builds for baseline x86-64; they
// run only after kernel_path_supported() said yes.
#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>

#include "quant/engine/kernels/output_stage_avx2.h"

namespace qatlab::kernels {

namespace {


// One row of an AVX2 micro-tile for one k-quad: the row's 4 int16 of A broadcast to every 64-bit
// lane, times the 8 columns x 4 k of B (b_lo: columns 0..3, b_hi: 4..7), added into two int32 sums
// per column (k0*k0 + k1*k1 and k2*k2 + k3*k3).
__attribute__((target("avx2"))) inline void avx2_row_step(const int16_t* a_quad, __m256i b_lo, __m256i b_hi,
                                                          __m256i& acc_lo, __m256i& acc_hi) {
  int64_t quad;
  std::memcpy(&quad, a_quad, sizeof quad);
  const __m256i av = _mm256_set1_epi64x(quad);
  acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(av, b_lo));
  acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(av, b_hi));
}

// The 8 column sums of a tile row from its two partial sums per column.
__attribute__((target("avx2"))) inline __m256i avx2_join(__m256i acc_lo, __m256i acc_hi) {
  // hadd per 128-bit lane gives columns (0, 1, 4, 5 | 2, 3, 6, 7); the permute restores 0..7.
  return _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc_lo, acc_hi), 0xD8);
}

// A (MR rows, KQ*4) int16, row stride a_stride elements; B half a panel: 8 columns of each 64-byte
// k-quad row (b points at byte 0 or 32 of the first). Per k-quad, 16 bytes of B (4 columns x 4 k)
// widen to 16 int16 and meet the broadcast 4 int16 of A in _mm256_madd_epi16.
// The accumulators are named variables, not an array: with an array GCC 12 spills them and copies
// registers around in the inner loop (measured 2x slower). 6 rows x 2 accumulators + 2 of B + the
// broadcast + a product = 16 ymm registers.
template <int MR, bool kPanelSigned>
__attribute__((target("avx2"))) void avx2_tile(const int16_t* a, int64_t a_stride, const uint8_t* b, int64_t kq_count,
                                               int64_t row0, int64_t col0, int cols, const Epilogue& e) {
  static_assert(MR >= 1 && MR <= 6);
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo0 = zero, hi0 = zero, lo1 = zero, hi1 = zero, lo2 = zero, hi2 = zero;
  __m256i lo3 = zero, hi3 = zero, lo4 = zero, hi4 = zero, lo5 = zero, hi5 = zero;
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const __m128i raw_lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kq * kQuadBytes));
    const __m128i raw_hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kq * kQuadBytes + 16));
    const __m256i b_lo = kPanelSigned ? _mm256_cvtepi8_epi16(raw_lo) : _mm256_cvtepu8_epi16(raw_lo);
    const __m256i b_hi = kPanelSigned ? _mm256_cvtepi8_epi16(raw_hi) : _mm256_cvtepu8_epi16(raw_hi);
    const int16_t* ak = a + kq * 4;
    avx2_row_step(ak, b_lo, b_hi, lo0, hi0);
    if constexpr (MR > 1) avx2_row_step(ak + a_stride, b_lo, b_hi, lo1, hi1);
    if constexpr (MR > 2) avx2_row_step(ak + 2 * a_stride, b_lo, b_hi, lo2, hi2);
    if constexpr (MR > 3) avx2_row_step(ak + 3 * a_stride, b_lo, b_hi, lo3, hi3);
    if constexpr (MR > 4) avx2_row_step(ak + 4 * a_stride, b_lo, b_hi, lo4, hi4);
    if constexpr (MR > 5) avx2_row_step(ak + 5 * a_stride, b_lo, b_hi, lo5, hi5);
  }
  // The accumulators go to memory, all 12 as they are, before being joined and requantized: with any
  // arithmetic on them after the loop GCC 12 keeps half of them on the stack inside it (2x slower).
  alignas(32) __m256i parked[12];  // (rows x {lo, hi})
  _mm256_store_si256(parked + 0, lo0), _mm256_store_si256(parked + 1, hi0);
  if constexpr (MR > 1) _mm256_store_si256(parked + 2, lo1), _mm256_store_si256(parked + 3, hi1);
  if constexpr (MR > 2) _mm256_store_si256(parked + 4, lo2), _mm256_store_si256(parked + 5, hi2);
  if constexpr (MR > 3) _mm256_store_si256(parked + 6, lo3), _mm256_store_si256(parked + 7, hi3);
  if constexpr (MR > 4) _mm256_store_si256(parked + 8, lo4), _mm256_store_si256(parked + 9, hi4);
  if constexpr (MR > 5) _mm256_store_si256(parked + 10, lo5), _mm256_store_si256(parked + 11, hi5);
  // Conv (unsigned activations in the panel) has a channel per row, fully connected one per column.
  constexpr bool kPerRow = !kPanelSigned;
  assert(e.channel_per_row == kPerRow);
  if constexpr (!kPerRow) {
    if (e.sums) {  // the dynamic matmul: raw int32 sums
      int32_t* sums = e.sums + row0 * e.out_stride + col0;
      const int64_t stride = e.out_stride;
      for (int r = 0; r < MR; ++r)
        store_sums8(avx2_join(_mm256_load_si256(parked + 2 * r), _mm256_load_si256(parked + 2 * r + 1)),
                    sums + r * stride, cols);
      return;
    }
  }
  const PackedOutputStage& s = *e.stage;
  if constexpr (kPerRow) {
    if (e.acc) {  // a conv with a fused pool: keep the accumulators
      // Locals: the int32 stores could alias the epilogue's fields, which would then be reloaded.
      int32_t* acc = e.acc + row0 * e.out_stride + col0;
      const int64_t stride = e.out_stride;
      const int32_t* bias = s.rows.data() + (e.channel0 + row0) * PackedOutputStage::kParams * 8;
      for (int r = 0; r < MR; ++r) {
        const __m256i sum = avx2_join(_mm256_load_si256(parked + 2 * r), _mm256_load_si256(parked + 2 * r + 1));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + r * stride),
                            _mm256_add_epi32(sum, load8(bias + r * PackedOutputStage::kParams * 8)));
      }
      return;
    }
  }
  const OutputConsts k = output_consts(*e.stage);
  __m256i q[MR];
  for (int r = 0; r < MR; ++r) {
    const __m256i sum = avx2_join(_mm256_load_si256(parked + 2 * r), _mm256_load_si256(parked + 2 * r + 1));
    q[r] = kPerRow ? requantize8(sum, s.rows.data() + (e.channel0 + row0 + r) * PackedOutputStage::kParams * 8,
                                       8, k)
                   : requantize8(sum, s.columns.data() + e.channel0 + col0, s.padded, k);
  }
  int8_t* out = e.out + row0 * e.out_stride + col0;
  int r = 0;
  if (cols == 8)
    for (; r + 4 <= MR; r += 4) store_4rows8(q[r], q[r + 1], q[r + 2], q[r + 3], out + r * e.out_stride, e.out_stride);
  for (; r < MR; ++r) store_row8(q[r], out + r * e.out_stride, cols);
}

using Avx2TileFn = void (*)(const int16_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int, const Epilogue&);

template <bool kPanelSigned>
Avx2TileFn avx2_tile_fn(int mr) {
  switch (mr) {
    case 1: return avx2_tile<1, kPanelSigned>;
    case 2: return avx2_tile<2, kPanelSigned>;
    case 3: return avx2_tile<3, kPanelSigned>;
    case 4: return avx2_tile<4, kPanelSigned>;
    case 5: return avx2_tile<5, kPanelSigned>;
    default: return avx2_tile<6, kPanelSigned>;
  }
}
static_assert(kAvx2MR == 6);

// ------------------------------------------------------------------ AVX2 kernel, 4-bit weights
// Fully connected with a 4-bit panel (int8_gemm.h): A (MR rows, KQ*4) unsigned bytes (activations),
// row stride a_stride; b one panel (KQ, 2, 16) of nibbles. Per k-quad, the panel's 32 bytes give two
// vectors of signed bytes: the low nibbles (columns 0-3 | 8-11, 4 k each) and the high nibbles
// (columns 4-7 | 12-15), each masked and sign-extended by a 16-entry byte lookup. They meet the
// row's 4 activation bytes, broadcast, in _mm256_maddubs_epi16 (u8 x s8, pairs summed to int16):
// exact here, unlike with 8-bit weights, since a pair sum is at most 2 * 255 * 8 = 4080 and never
// saturates. Eight k-quads of pair sums add up in int16 (8 * 4080 < 32768), then _mm256_madd_epi16
// by 1 widens them into the int32 column sums. Per k-quad and 16 columns this takes about 60 % of the
// instructions of the 8-bit kernel (which widens both operands to int16 first), from half the bytes.
constexpr int kNibbleMR = 2;      // rows per 4-bit tile: 2 x 4 accumulators + 6 others fit 16 registers
constexpr int64_t kInt16Quads = 8;  // k-quads summed in int16 before widening

// One row for one k-quad: the row's 4 bytes of A broadcast to every 32-bit lane, times the low and
// high nibble weights, pair sums added into the int16 accumulators.
__attribute__((target("avx2"), always_inline)) inline void nibble_row_step(const uint8_t* a_quad, __m256i w_lo,
                                                                           __m256i w_hi, __m256i& acc_lo,
                                                                           __m256i& acc_hi) {
  int32_t quad;
  std::memcpy(&quad, a_quad, sizeof quad);
  const __m256i av = _mm256_set1_epi32(quad);
  acc_lo = _mm256_add_epi16(acc_lo, _mm256_maddubs_epi16(av, w_lo));
  acc_hi = _mm256_add_epi16(acc_hi, _mm256_maddubs_epi16(av, w_hi));
}

template <int MR>
__attribute__((target("avx2"))) void avx2_nibble_tile(const uint8_t* a, int64_t a_stride, const uint8_t* b,
                                                      int64_t kq_count, int64_t row0, int64_t col0, int cols,
                                                      const Epilogue& e) {
  static_assert(MR >= 1 && MR <= kNibbleMR);
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i sign_extend = _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1,  //
                                               0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  // int32 column sums: lo (columns 0-3 | 8-11), hi (4-7 | 12-15) of each row.
  __m256i sum_lo0 = zero, sum_hi0 = zero, sum_lo1 = zero, sum_hi1 = zero;
  for (int64_t kq0 = 0; kq0 < kq_count; kq0 += kInt16Quads) {
    const int64_t kq1 = std::min(kq_count, kq0 + kInt16Quads);
    __m256i lo0 = zero, hi0 = zero, lo1 = zero, hi1 = zero;  // int16 pair sums
    for (int64_t kq = kq0; kq < kq1; ++kq) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + kq * kNibbleQuadBytes));
      const __m256i w_lo = _mm256_shuffle_epi8(sign_extend, _mm256_and_si256(v, low4));
      const __m256i w_hi = _mm256_shuffle_epi8(sign_extend, _mm256_and_si256(_mm256_srli_epi16(v, 4), low4));
      nibble_row_step(a + kq * 4, w_lo, w_hi, lo0, hi0);
      if constexpr (MR > 1) nibble_row_step(a + a_stride + kq * 4, w_lo, w_hi, lo1, hi1);
    }
    sum_lo0 = _mm256_add_epi32(sum_lo0, _mm256_madd_epi16(lo0, ones));
    sum_hi0 = _mm256_add_epi32(sum_hi0, _mm256_madd_epi16(hi0, ones));
    if constexpr (MR > 1) {
      sum_lo1 = _mm256_add_epi32(sum_lo1, _mm256_madd_epi16(lo1, ones));
      sum_hi1 = _mm256_add_epi32(sum_hi1, _mm256_madd_epi16(hi1, ones));
    }
  }
  const __m256i lo[2] = {sum_lo0, sum_lo1}, hi[2] = {sum_hi0, sum_hi1};
  for (int r = 0; r < MR; ++r) {
    // Columns 0-7 are the low 128-bit halves of lo and hi, 8-15 their high halves.
    finish8(_mm256_permute2x128_si256(lo[r], hi[r], 0x20), e, row0 + r, col0, std::min(cols, 8));
    if (cols > 8) finish8(_mm256_permute2x128_si256(lo[r], hi[r], 0x31), e, row0 + r, col0 + 8, cols - 8);
  }
}

using NibbleTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int,
                              const Epilogue&);

NibbleTileFn avx2_nibble_tile_fn(int mr) { return mr == 1 ? avx2_nibble_tile<1> : avx2_nibble_tile<2>; }
static_assert(kNibbleMR == 2);

// Rows [row0, row0 + rows) of C. 8-bit panels in half panels of 8 columns (the panel is the signed side
// iff A is the unsigned one); 4-bit panels (fully connected) whole, A as bytes, the rows in tiles of up
// to kNibbleMR.
template <bool kBroadcastUnsigned>
void gemm_rows_avx2(const GemmOperands& g, int64_t row0, int rows, const Epilogue& e) {
  const int64_t pb = panel_bytes(g);
  if constexpr (kBroadcastUnsigned) {
    if (g.b_nibbles) {
      const int64_t panels = ceil_div(g.n, kPanel);
      for (int64_t t0 = row0; t0 < row0 + rows; t0 += kNibbleMR) {
        const int tr = static_cast<int>(std::min<int64_t>(kNibbleMR, row0 + rows - t0));
        const NibbleTileFn tile = avx2_nibble_tile_fn(tr);
        for (int64_t p = 0; p < panels; ++p)
          tile(g.a8 + t0 * g.a_stride, g.a_stride, g.b + p * pb, g.kq_count, t0, p * kPanel,
               tile_cols(g, p * kPanel, kPanel), e);
      }
      return;
    }
  }
  const Avx2TileFn tile = avx2_tile_fn<kBroadcastUnsigned>(rows);
  for (int64_t j0 = 0; j0 < g.n; j0 += 8)
    tile(g.a16 + row0 * g.a_stride, g.a_stride, g.b + (j0 / kPanel) * pb + (j0 % kPanel) * 4, g.kq_count, row0, j0,
         tile_cols(g, j0, 8), e);
}

}  // namespace

const GemmKernel& gemm_kernel_avx2() {
  static const GemmKernel kernel{kAvx2MR,
                                 /*a_int16=*/true,
                                 gemm_rows_avx2<false>,
                                 gemm_rows_avx2<true>,
                                 frame_image_avx2,
                                 pack_quad_rows_avx2,
                                 pack_conv_direct_avx2,
                                 pool_requantize_avx2,
                                 direct_conv_avx2,
                                 requantize_rows_avx2};
  return kernel;
}

}  // namespace qatlab::kernels

#endif  // x86
