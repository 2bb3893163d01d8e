// int8_gemm.cpp: packing, the portable / AVX2 / AVX-512 VNNI GEMM micro-kernels and the conv / fully
// connected drivers behind PackedConvInt8 and PackedFullyConnectedInt8 (see int8_gemm.h).
//
// Shape letters: N batch, C input channels, H x W input (Hp x Wp padded), OC output channels, KH x KW
// kernel, OH x OW output, G groups, CG = C / G, OCG = OC / G, K the reduction length, KQ = ceil(K / 4)
// its quads, M x N the GEMM output (rows x columns), MR the rows of a micro-tile.
//
// The SIMD functions carry __attribute__((target(...))) so that the file builds for baseline x86-64
// and the CPU is checked at run time; they are only called after kernel_path_supported() said yes.
// OpenMP regions stay in plain functions: an outlined region does not inherit a target attribute.
#include "quant/int8_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QATLAB_X86 1
#else
#define QATLAB_X86 0
#endif

#include "quant/requantize.h"

namespace qatlab {

namespace {

constexpr int64_t kPanel = 16;       // columns per packed panel of B
constexpr int64_t kQuadBytes = 64;   // one k-quad of a panel: 16 columns x 4 bytes
constexpr int64_t kMaxK = 65536;     // K * 255 * 128 must fit in int32 (no overflow in any partial sum)
constexpr int kPortableMR = 4, kAvx2MR = 6, kVnniMR = 8;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Weights are narrow-range ([-127, 127]); the converter guarantees it, a debug build checks it. (The
// kernels here would stay exact with -128 too: it is TFLite's contract, kept for the other backends.)
[[maybe_unused]] bool narrow_range(const int8_t* w, int64_t n) {
  return std::find(w, w + n, int8_t{-128}) == w + n;
}

// ------------------------------------------------------------------------------------- CPU features

bool cpu_has(const char* feature) {
#if QATLAB_X86 && defined(__GNUC__)
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx2") == 0) return __builtin_cpu_supports("avx2");
  if (std::strcmp(feature, "avx512vnni") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#endif
  (void)feature;
  return false;
}

void require_supported(KernelPath path) {
  if (!kernel_path_supported(path))
    throw std::invalid_argument(std::string("kernel path ") + kernel_path_name(path) +
                                " is not supported by this CPU (best available: " +
                                kernel_path_name(best_kernel_path()) + ")");
}

// ------------------------------------------------------------------------------------ output stage

// Where the int32 sums of a GEMM go and how they become int8. Output element (i, j) of the GEMM is
// out[i * out_stride + j]; its channel is channel0 + i (conv: channel_per_row) or channel0 + j (fully
// connected). Tiles get this once by reference plus their first row and column.
struct Epilogue {
  const PackedOutputStage* stage;
  int64_t channel0;
  bool channel_per_row;
  int8_t* out;
  int64_t out_stride;
};

// The scalar output stage: the int32 sum plus the folded bias, wrapped as an int32 accumulator
// would (unsigned add), then the shared requantize().
inline int8_t finish_scalar(int32_t sum, const PackedOutputStage& s, int64_t ch) {
  const int32_t acc = static_cast<int32_t>(static_cast<uint32_t>(sum) + static_cast<uint32_t>(s.folded_bias[ch]));
  return requantize(acc, s.multiplier[ch], s.shift[ch], s.output_offset, s.output_offset + s.clamp_lo,
                    s.output_offset + s.clamp_hi);
}

PackedOutputStage make_output_stage(int64_t channels, int64_t padded, const std::vector<int64_t>& weight_sums,
                                    const int32_t* bias, int32_t input_offset, int32_t output_offset,
                                    const std::vector<int32_t>& multipliers, const std::vector<int>& shifts,
                                    int32_t act_min, int32_t act_max) {
  PackedOutputStage s;
  s.padded = padded;
  for (auto* v : {&s.folded_bias, &s.multiplier, &s.shift}) v->assign(padded, 0);
  s.columns.assign(PackedOutputStage::kParams * padded, 0);
  s.rows.assign(PackedOutputStage::kParams * 8 * padded, 0);
  for (int64_t c = 0; c < channels; ++c) {
    // Exact in int64, then reduced modulo 2^32 (C++20 conversion): the kernels add it with int32
    // wrap-around, which gives the reference's wrapped accumulator (see int8_kernels.h).
    const int64_t folded = (bias ? bias[c] : 0) + static_cast<int64_t>(input_offset - 128) * weight_sums[c];
    s.folded_bias[c] = static_cast<int32_t>(folded);
    s.multiplier[c] = multipliers[c];
    s.shift[c] = shifts[c];
    s.any_left_shift = s.any_left_shift || shifts[c] > 0;
    const int32_t right = std::max(-shifts[c], 0);
    const int32_t mask = static_cast<int32_t>((int64_t{1} << right) - 1);
    const int32_t values[PackedOutputStage::kParams] = {s.folded_bias[c], multipliers[c], std::max(shifts[c], 0),
                                                        right, mask, mask >> 1};
    for (int k = 0; k < PackedOutputStage::kParams; ++k) {
      s.columns[k * padded + c] = values[k];
      std::fill_n(s.rows.begin() + (c * PackedOutputStage::kParams + k) * 8, 8, values[k]);
    }
  }
  s.output_offset = output_offset;
  s.clamp_lo = act_min - output_offset;
  s.clamp_hi = act_max - output_offset;
  return s;
}

// ------------------------------------------------------------------------------- portable kernel
// A (rows, KQ*4) bytes, row stride a_stride; B one panel (KQ, 16, 4) bytes. The broadcast operand A
// is unsigned (fully connected: activations) or signed (conv: filter); B is the other kind.

template <int MR, bool kBroadcastUnsigned>
void portable_tile(const uint8_t* a, int64_t a_stride, const uint8_t* b, int64_t kq_count, int64_t row0, int64_t col0,
                   int cols, const Epilogue& e) {
  int32_t acc[MR][kPanel] = {};  // (MR, 16)
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const uint8_t* bq = b + kq * kQuadBytes;
    for (int r = 0; r < MR; ++r) {
      const uint8_t* aq = a + r * a_stride + kq * 4;
      for (int j = 0; j < kPanel; ++j) {
        int32_t s = 0;
        for (int t = 0; t < 4; ++t) {
          const int32_t av = kBroadcastUnsigned ? int32_t{aq[t]} : int32_t{static_cast<int8_t>(aq[t])};
          const int32_t bv = kBroadcastUnsigned ? int32_t{static_cast<int8_t>(bq[j * 4 + t])} : int32_t{bq[j * 4 + t]};
          s += av * bv;
        }
        acc[r][j] += s;  // |partial sums| <= K * 255 * 128 < 2^31 (K <= kMaxK): no overflow
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < cols; ++j)
      e.out[(row0 + r) * e.out_stride + col0 + j] =
          finish_scalar(acc[r][j], *e.stage, e.channel0 + (e.channel_per_row ? row0 + r : col0 + j));
}

// A micro-tile: rows [row0, row0 + MR) of A (a points at row0) times the columns [col0, col0 + cols)
// of the packed B (b points at their first k-quad row), through the epilogue.
using PortableTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int,
                                const Epilogue&);

template <bool kBroadcastUnsigned>
PortableTileFn portable_tile_fn(int mr) {
  switch (mr) {
    case 1: return portable_tile<1, kBroadcastUnsigned>;
    case 2: return portable_tile<2, kBroadcastUnsigned>;
    case 3: return portable_tile<3, kBroadcastUnsigned>;
    default: return portable_tile<4, kBroadcastUnsigned>;
  }
}
static_assert(kPortableMR == 4);

// Packs 4 im2col rows of int8 codes (each >= panels * 16 long, row stride row_len) into k-quad `kq`
// of every panel, as unsigned codes (x + 128: the sign bit flipped).
void pack_quad_rows_portable(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                             uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* dst = b + (p * kq_count + kq) * kQuadBytes;
    for (int64_t j = 0; j < kPanel; ++j)
      for (int64_t t = 0; t < 4; ++t) dst[j * 4 + t] = rows[t * row_len + p * kPanel + j] ^ 0x80;
  }
}

#if QATLAB_X86

// ----------------------------------------------------------------------------------- AVX2 kernel

// The k-th of the 8-lane parameters starting at p (see requantize8).
__attribute__((target("avx2"), always_inline)) inline __m256i param8(const int32_t* p, int64_t stride, int k) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k * stride));
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
// p + k * stride (PackedOutputStage layout). kUniform: the 8 lanes share one channel (conv rows).
// Multipliers are >= 0 (checked when packing), so the INT32_MIN * INT32_MIN case of the high
// multiply cannot occur.
template <bool kUniform>
__attribute__((target("avx2"), always_inline)) inline __m256i requantize8(__m256i sum, const int32_t* p, int64_t stride,
                                                                        const OutputConsts& k) {
  __m256i x = _mm256_add_epi32(sum, param8(p, stride, 0));  // int32 wrap-around, as the reference's conversion
  if (k.any_left_shift) {
    // Saturating x * 2^left_shift: the shift overflowed iff shifting back does not give x.
    const __m256i lsh = param8(p, stride, 2);
    const __m256i shifted = _mm256_sllv_epi32(x, lsh);
    const __m256i exact = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, lsh), x);
    const __m256i saturated = _mm256_xor_si256(_mm256_srai_epi32(x, 31), _mm256_set1_epi32(INT32_MAX));
    x = _mm256_blendv_epi8(saturated, shifted, exact);
  }
  // High multiply: floor((x * mult + 2^30) / 2^31). The 64-bit products of even and odd lanes get the
  // nudge; bits 31..62 are the result (it fits in int32), moved to the low half (even lanes, logical
  // shift right) or the high half (odd lanes, shift left by 1) and blended.
  const __m256i mult = param8(p, stride, 1);
  const __m256i mult_odd = kUniform ? mult : _mm256_srli_epi64(mult, 32);
  const __m256i nudge = _mm256_set1_epi64x(int64_t{1} << 30);
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, mult), nudge);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), mult_odd), nudge);
  x = _mm256_blend_epi32(_mm256_srli_epi64(even, 31), _mm256_slli_epi64(odd, 1), 0xAA);
  // Rounding right shift, ties away from zero: +1 when remainder > half (+1 more for x < 0).
  const __m256i remainder = _mm256_and_si256(x, param8(p, stride, 4));
  const __m256i threshold = _mm256_sub_epi32(param8(p, stride, 5), _mm256_srai_epi32(x, 31));
  x = _mm256_sub_epi32(_mm256_srav_epi32(x, param8(p, stride, 3)), _mm256_cmpgt_epi32(remainder, threshold));
  // Clamp, then add the offset (as requantize() does).
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(x, k.lo), k.hi), k.offset);
}

// Requantizes the 8 sums of GEMM row i, columns j0..j0+7.
__attribute__((target("avx2"), always_inline)) inline __m256i requantize_row8(__m256i sum, const Epilogue& e,
                                                                            const OutputConsts& k, int64_t i,
                                                                            int64_t j0) {
  const PackedOutputStage& s = *e.stage;
  return e.channel_per_row
             ? requantize8<true>(sum, s.rows.data() + (e.channel0 + i) * PackedOutputStage::kParams * 8, 8, k)
             : requantize8<false>(sum, s.columns.data() + e.channel0 + j0, s.padded, k);
}

// Stores the first `cols` of 8 requantized values (already in [-128, 127]: the saturating packs
// just narrow them, in order).
__attribute__((target("avx2"), always_inline)) inline void store_row8(__m256i q, int8_t* dst, int cols) {
  const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i p8 = _mm_packs_epi16(p16, p16);
  if (cols >= 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), p8);
  } else {
    alignas(16) int8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), p8);
    std::memcpy(dst, tmp, cols);
  }
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

// Requantizes the 8 sums of GEMM row i, columns j0..j0+7, and stores the first `cols` of them.
__attribute__((target("avx2"), always_inline)) inline void finish8(__m256i sum, const Epilogue& e, int64_t i,
                                                                   int64_t j0, int cols) {
  const OutputConsts k = output_consts(*e.stage);
  store_row8(requantize_row8(sum, e, k, i, j0), e.out + i * e.out_stride + j0, cols);
}

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
  const OutputConsts k = output_consts(*e.stage);
  const PackedOutputStage& s = *e.stage;
  __m256i q[MR];
  for (int r = 0; r < MR; ++r) {
    const __m256i sum = avx2_join(_mm256_load_si256(parked + 2 * r), _mm256_load_si256(parked + 2 * r + 1));
    q[r] = kPerRow ? requantize8<true>(sum, s.rows.data() + (e.channel0 + row0 + r) * PackedOutputStage::kParams * 8,
                                       8, k)
                   : requantize8<false>(sum, s.columns.data() + e.channel0 + col0, s.padded, k);
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

// Interleaves 4 rows x 16 columns of int8 codes into 16 column quads of unsigned codes at dst.
__attribute__((target("avx2"), always_inline)) inline void interleave_quads(__m128i r0, __m128i r1, __m128i r2,
                                                                            __m128i r3, uint8_t* dst) {
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i r01_lo = _mm_unpacklo_epi8(r0, r1), r01_hi = _mm_unpackhi_epi8(r0, r1);  // (k0 k1) per column
  const __m128i r23_lo = _mm_unpacklo_epi8(r2, r3), r23_hi = _mm_unpackhi_epi8(r2, r3);  // (k2 k3) per column
  __m128i* out = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(out, _mm_xor_si128(_mm_unpacklo_epi16(r01_lo, r23_lo), flip));      // columns 0..3
  _mm_storeu_si128(out + 1, _mm_xor_si128(_mm_unpackhi_epi16(r01_lo, r23_lo), flip));  // 4..7
  _mm_storeu_si128(out + 2, _mm_xor_si128(_mm_unpacklo_epi16(r01_hi, r23_hi), flip));  // 8..11
  _mm_storeu_si128(out + 3, _mm_xor_si128(_mm_unpackhi_epi16(r01_hi, r23_hi), flip));  // 12..15
}

// The SIMD form of pack_quad_rows_portable.
__attribute__((target("avx2"))) void pack_quad_rows_avx2(const uint8_t* rows, int64_t row_len, int64_t panels,
                                                         int64_t kq_count, int64_t kq, uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    const uint8_t* src = rows + p * kPanel;
    interleave_quads(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + row_len)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * row_len)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * row_len)),
                     b + (p * kq_count + kq) * kQuadBytes);
  }
}

// 16 bytes of one im2col row for one panel, straight from the padded image: one load per run of
// the panel's columns that lies in one output row, later runs blended over earlier ones.
template <int S>
__attribute__((target("avx2"), always_inline)) inline __m128i gather_panel_row(const uint8_t* base,
                                                                               const int32_t* load_offset,
                                                                               const __m128i* masks) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + load_offset[0]));
  for (int s = 1; s < S; ++s)
    v = _mm_blendv_epi8(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + load_offset[s])), masks[s]);
  return v;
}

template <int S>
__attribute__((target("avx2"))) void pack_panel_direct(const uint8_t* img, const int32_t* k_offset,
                                                       const ConvPanelSource& ps, int64_t kq_count,
                                                       uint8_t* dst) {
  // Byte j of masks[s] is set for j >= seg_start[s]: 16 bytes of {16 x 0, 16 x 0xFF} from 16 - start.
  alignas(32) static const uint8_t kStep[32] = {0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
                                                0,    0,    0,    0,    0,    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  __m128i masks[4];
  for (int s = 0; s < S; ++s) masks[s] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kStep + 16 - ps.seg_start[s]));
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const int32_t* ko = k_offset + kq * 4;
    interleave_quads(gather_panel_row<S>(img + ko[0], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[1], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[2], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[3], ps.load_offset, masks), dst + kq * kQuadBytes);
  }
}

// All panels (panels, KQ, 16, 4) of one group's im2col matrix straight from its padded image
// (stride_w == 1); reads at most 15 bytes past the last pixel used (the scratch has slack).
void pack_conv_direct_avx2(const uint8_t* img, const int32_t* k_offset, const ConvPanelSource* src,
                           int64_t panels, int64_t kq_count, uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* dst = b + p * kq_count * kQuadBytes;
    switch (src[p].segments) {
      case 1: pack_panel_direct<1>(img, k_offset, src[p], kq_count, dst); break;
      case 2: pack_panel_direct<2>(img, k_offset, src[p], kq_count, dst); break;
      case 3: pack_panel_direct<3>(img, k_offset, src[p], kq_count, dst); break;
      default: pack_panel_direct<4>(img, k_offset, src[p], kq_count, dst); break;
    }
  }
}

// ---------------------------------------------------------------------------- AVX-512 VNNI kernel

// A (MR rows, KQ*4) bytes, row stride a_stride; B one panel (KQ, 16, 4). Each k-quad row of the panel
// is one zmm (16 columns x 4 bytes); dpbusd adds the 4 products u8 x s8 of each column to its int32
// lane (no saturation). The unsigned operand is the broadcast A (fully connected: activations) or the
// panel B (conv: im2col activations).
// One row of a VNNI micro-tile for one k-quad: the row's 4 bytes of A broadcast to every lane.
template <bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"), always_inline)) inline void vnni_row_step(
    const uint8_t* a_quad, __m512i bv, __m512i& acc) {
  int32_t quad;
  std::memcpy(&quad, a_quad, sizeof quad);
  const __m512i av = _mm512_set1_epi32(quad);
  acc = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc, av, bv) : _mm512_dpbusd_epi32(acc, bv, av);
}

// The accumulators are named variables for the reason given at avx2_tile (with an array GCC 12
// copies each one to another register after every dpbusd).
template <int MR, bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void vnni_tile(const uint8_t* a, int64_t a_stride,
                                                                           const uint8_t* b, int64_t kq_count,
                                                                           int64_t row0, int64_t col0, int cols,
                                                                           const Epilogue& e) {
  static_assert(MR >= 1 && MR <= 8);
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero, acc4 = zero, acc5 = zero, acc6 = zero, acc7 = zero;
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const __m512i bv = _mm512_loadu_si512(b + kq * kQuadBytes);
    const uint8_t* ak = a + kq * 4;
    vnni_row_step<kBroadcastUnsigned>(ak, bv, acc0);
    if constexpr (MR > 1) vnni_row_step<kBroadcastUnsigned>(ak + a_stride, bv, acc1);
    if constexpr (MR > 2) vnni_row_step<kBroadcastUnsigned>(ak + 2 * a_stride, bv, acc2);
    if constexpr (MR > 3) vnni_row_step<kBroadcastUnsigned>(ak + 3 * a_stride, bv, acc3);
    if constexpr (MR > 4) vnni_row_step<kBroadcastUnsigned>(ak + 4 * a_stride, bv, acc4);
    if constexpr (MR > 5) vnni_row_step<kBroadcastUnsigned>(ak + 5 * a_stride, bv, acc5);
    if constexpr (MR > 6) vnni_row_step<kBroadcastUnsigned>(ak + 6 * a_stride, bv, acc6);
    if constexpr (MR > 7) vnni_row_step<kBroadcastUnsigned>(ak + 7 * a_stride, bv, acc7);
  }
  // Through memory, as 8-lane halves for the AVX2 output stage (this also avoids
  // _mm512_extracti64x4_epi64, whose header trips -Wuninitialized in GCC 12).
  alignas(64) int32_t sums[8][kPanel];  // (rows, 16 columns)
  _mm512_store_si512(sums[0], acc0);
  if constexpr (MR > 1) _mm512_store_si512(sums[1], acc1);
  if constexpr (MR > 2) _mm512_store_si512(sums[2], acc2);
  if constexpr (MR > 3) _mm512_store_si512(sums[3], acc3);
  if constexpr (MR > 4) _mm512_store_si512(sums[4], acc4);
  if constexpr (MR > 5) _mm512_store_si512(sums[5], acc5);
  if constexpr (MR > 6) _mm512_store_si512(sums[6], acc6);
  if constexpr (MR > 7) _mm512_store_si512(sums[7], acc7);
  for (int r = 0; r < MR; ++r) {
    finish8(_mm256_load_si256(reinterpret_cast<const __m256i*>(sums[r])), e, row0 + r, col0, std::min(cols, 8));
    if (cols > 8)
      finish8(_mm256_load_si256(reinterpret_cast<const __m256i*>(sums[r] + 8)), e, row0 + r, col0 + 8, cols - 8);
  }
}

using VnniTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int,
                            const Epilogue&);

template <bool kBroadcastUnsigned>
VnniTileFn vnni_tile_fn(int mr) {
  switch (mr) {
    case 1: return vnni_tile<1, kBroadcastUnsigned>;
    case 2: return vnni_tile<2, kBroadcastUnsigned>;
    case 3: return vnni_tile<3, kBroadcastUnsigned>;
    case 4: return vnni_tile<4, kBroadcastUnsigned>;
    case 5: return vnni_tile<5, kBroadcastUnsigned>;
    case 6: return vnni_tile<6, kBroadcastUnsigned>;
    case 7: return vnni_tile<7, kBroadcastUnsigned>;
    default: return vnni_tile<8, kBroadcastUnsigned>;
  }
}
static_assert(kVnniMR == 8);

#endif  // QATLAB_X86

int tile_rows(KernelPath path) {
  switch (path) {
    case KernelPath::Avx2: return kAvx2MR;
    case KernelPath::Avx512Vnni: return kVnniMR;
    default: return kPortableMR;
  }
}

// C = A * B for rows [0, m) of A and columns [0, n) of the packed B, through the epilogue e. A for
// Avx2 is int16 (a16), else bytes (a8); both (m, KQ*4) with row stride a_stride elements.
// kBroadcastUnsigned: A holds the activations (fully connected); otherwise B does (conv).
template <bool kBroadcastUnsigned>
void gemm_rows(KernelPath path, const uint8_t* a8, const int16_t* a16, int64_t a_stride, int64_t m, const uint8_t* b,
               int64_t kq_count, int64_t n, const Epilogue& e) {
  const int mr_max = tile_rows(path);
  const int64_t panels = ceil_div(n, kPanel), panel_bytes = kq_count * kQuadBytes;
  for (int64_t r0 = 0; r0 < m; r0 += mr_max) {
    const int mr = static_cast<int>(std::min<int64_t>(mr_max, m - r0));
    // The tile function is chosen once per block of rows, not per tile.
    switch (path) {
#if QATLAB_X86
      case KernelPath::Avx2: {
        // Half panels of 8 columns; the panel is the signed side iff A is the unsigned one.
        const Avx2TileFn tile = avx2_tile_fn<kBroadcastUnsigned>(mr);
        for (int64_t j0 = 0; j0 < n; j0 += 8)
          tile(a16 + r0 * a_stride, a_stride, b + (j0 / kPanel) * panel_bytes + (j0 % kPanel) * 4, kq_count, r0, j0,
               static_cast<int>(std::min<int64_t>(8, n - j0)), e);
        break;
      }
      case KernelPath::Avx512Vnni: {
        const VnniTileFn tile = vnni_tile_fn<kBroadcastUnsigned>(mr);
        for (int64_t p = 0; p < panels; ++p)
          tile(a8 + r0 * a_stride, a_stride, b + p * panel_bytes, kq_count, r0, p * kPanel,
               static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel)), e);
        break;
      }
#endif
      default: {
        const PortableTileFn tile = portable_tile_fn<kBroadcastUnsigned>(mr);
        for (int64_t p = 0; p < panels; ++p)
          tile(a8 + r0 * a_stride, a_stride, b + p * panel_bytes, kq_count, r0, p * kPanel,
               static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel)), e);
        break;
      }
    }
  }
}

// How many threads a loop over `items` of `work_per_item` multiply-adds gets: one unless there is
// enough work to pay for waking the others (2^20 multiply-adds take ~20 us on one AVX2 core).
int threads_for(int64_t items, int64_t work_per_item) {
  if (items < 2 || items * work_per_item < (int64_t{1} << 20)) return 1;
  return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), items));
}

}  // namespace

// ----------------------------------------------------------------------------------- kernel paths

bool kernel_path_supported(KernelPath path) {
  switch (path) {
    case KernelPath::Reference:
    case KernelPath::Portable: return true;
    case KernelPath::Avx2: return cpu_has("avx2");
    case KernelPath::Avx512Vnni: return cpu_has("avx512vnni");
  }
  return false;
}

KernelPath best_kernel_path() {
  if (kernel_path_supported(KernelPath::Avx512Vnni)) return KernelPath::Avx512Vnni;
  if (kernel_path_supported(KernelPath::Avx2)) return KernelPath::Avx2;
  return KernelPath::Portable;
}

const char* kernel_path_name(KernelPath path) {
  switch (path) {
    case KernelPath::Reference: return "reference";
    case KernelPath::Portable: return "portable";
    case KernelPath::Avx2: return "avx2";
    case KernelPath::Avx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

KernelPath parse_kernel_path(const std::string& name) {
  if (name == "auto") return best_kernel_path();
  for (KernelPath p : {KernelPath::Reference, KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
    if (name == kernel_path_name(p)) {
      require_supported(p);
      return p;
    }
  }
  throw std::invalid_argument("unknown kernel path '" + name +
                              "': expected auto, reference, portable, avx2 or avx512vnni");
}

// ------------------------------------------------------------------------------------------- conv

PackedConvInt8::PackedConvInt8(const ConvInt8Params& params, const int8_t* filter, const Shape& f_shape,
                               const int32_t* bias, const Shape& in_shape_chw)
    : params_(params), f_shape_(f_shape), in_chw_(in_shape_chw) {
  QATLAB_CHECK(in_shape_chw.size() == 3,
            "PackedConvInt8: input shape must be (C, H, W) without the batch, got " + shape_str(in_shape_chw));
  const Shape out = conv2d_int8_output_shape(params, {1, in_shape_chw[0], in_shape_chw[1], in_shape_chw[2]}, f_shape);
  c_ = in_shape_chw[0], h_ = in_shape_chw[1], w_ = in_shape_chw[2];
  oc_ = f_shape[0], kh_ = f_shape[2], kw_ = f_shape[3], oh_ = out[2], ow_ = out[3];
  groups_ = params.groups, cg_ = c_ / groups_, ocg_ = oc_ / groups_;
  k_ = cg_ * kh_ * kw_;
  QATLAB_CHECK(k_ <= kMaxK, "PackedConvInt8: reduction length C/groups*KH*KW = " + std::to_string(k_) +
                             " exceeds 65536 (int32 accumulator headroom) for filter " + shape_str(f_shape));
  kq_ = ceil_div(k_, 4);
  hp_ = h_ + 2 * params.pad_h, wp_ = w_ + 2 * params.pad_w;
  ohw_ = oh_ * ow_;
  panels_ = ceil_div(ohw_, kPanel);
  row_len_ = panels_ * kPanel + 64;
  // padded image (C, Hp, Wp) + slack, 4 im2col rows, packed panels (panels, KQ, 16, 4)
  scratch_per_image_ = (c_ * hp_ * wp_ + 64) + 4 * row_len_ + panels_ * kq_ * kQuadBytes;
  pad_code_ = static_cast<int8_t>(-params.input_offset);
  k_offset_.assign(kq_ * 4, 0);  // K padding reads offset 0: any value will do, the filter is 0 there
  for (int64_t k = 0; k < k_; ++k) {
    const int64_t c = k / (kh_ * kw_), ky = (k / kw_) % kh_, kx = k % kw_;
    k_offset_[k] = static_cast<int32_t>((c * hp_ + ky) * wp_ + kx);
  }
  if (params.stride_w == 1) {
    panel_src_.resize(panels_);
    for (int64_t p = 0; p < panels_ && !panel_src_.empty(); ++p) {
      ConvPanelSource& ps = panel_src_[p];
      for (int64_t j = 0; j < kPanel && p * kPanel + j < ohw_; ++j) {
        const int64_t n = p * kPanel + j, oy = n / ow_, ox = n % ow_;
        if (j > 0 && ox > 0) continue;  // inside the current run
        if (ps.segments == 4) {
          panel_src_.clear();  // too many short output rows: im2col through row copies instead
          break;
        }
        ps.seg_start[ps.segments] = static_cast<int32_t>(j);
        ps.load_offset[ps.segments] = static_cast<int32_t>(oy * params.stride_h * wp_ + ox - j);
        ++ps.segments;
      }
    }
  }

  assert(narrow_range(filter, shape_numel(f_shape)));
  filter_.assign(filter, filter + shape_numel(f_shape));
  if (bias) bias_.assign(bias, bias + oc_);

  // A: the filter rows (OC, K) zero-padded to (OC, KQ*4), as bytes and widened to int16.
  a_s8_.assign(oc_ * kq_ * 4, 0);
  a_s16_.assign(oc_ * kq_ * 4, 0);
  std::vector<int64_t> sums(oc_, 0);
  for (int64_t o = 0; o < oc_; ++o) {
    for (int64_t k = 0; k < k_; ++k) {
      const int8_t w = filter[o * k_ + k];
      a_s8_[o * kq_ * 4 + k] = static_cast<uint8_t>(w);
      a_s16_[o * kq_ * 4 + k] = w;
      sums[o] += w;
    }
  }
  stage_ = make_output_stage(oc_, ceil_div(oc_, kPanel) * kPanel, sums, bias, params.input_offset,
                             params.output_offset, params.output_multiplier, params.output_shift,
                             params.quantized_activation_min, params.quantized_activation_max);
}

void PackedConvInt8::run_image(const int8_t* x, int8_t* y, KernelPath path, uint8_t* scratch) const {
  // Sizes in locals: stores through byte pointers may alias the members, locals keep loops tight.
  const int64_t C = c_, H = h_, W = w_, Hp = hp_, Wp = wp_, pad_h = params_.pad_h, pad_w = params_.pad_w;
  const int64_t OH = oh_, OW = ow_, OHW = ohw_, sh = params_.stride_h, sw = params_.stride_w;
  const int64_t K = k_, KQ = kq_, panels = panels_, row_len = row_len_;
  uint8_t* padded = scratch;                   // (C, Hp, Wp) int8 codes, + 64 slack
  uint8_t* rows = padded + C * Hp * Wp + 64;   // (4, row_len)
  uint8_t* packed = rows + 4 * row_len;        // (panels, KQ, 16, 4)
  const bool simd = path == KernelPath::Avx2 || path == KernelPath::Avx512Vnni;

  // The image framed by the padding code (the input zero point), still as int8 codes: the move to
  // unsigned codes (x + 128, flipping the sign bit) is done when packing.
  std::memset(padded, static_cast<uint8_t>(pad_code_), C * Hp * Wp);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t iy = 0; iy < H; ++iy) std::memcpy(padded + (c * Hp + iy + pad_h) * Wp + pad_w, x + (c * H + iy) * W, W);

  for (int64_t g = 0; g < groups_; ++g) {
    const uint8_t* img = padded + g * cg_ * Hp * Wp;  // (CG, Hp, Wp)
#if QATLAB_X86
    if (simd && !panel_src_.empty()) {
      pack_conv_direct_avx2(img, k_offset_.data(), panel_src_.data(), panels, KQ, packed);
    } else
#endif
    {
      // im2col through row copies, 4 rows (one k-quad) at a time, then packed into the panels.
      for (int64_t kq = 0; kq < KQ; ++kq) {
        for (int64_t t = 0; t < 4; ++t) {
          uint8_t* row = rows + t * row_len;  // (OH*OW) and junk up to panels * 16
          if (kq * 4 + t >= K) continue;       // K padding: the filter is 0 there, any value will do
          const uint8_t* src = img + k_offset_[kq * 4 + t];
          for (int64_t oy = 0; oy < OH; ++oy) {
            const uint8_t* s = src + oy * sh * Wp;
            uint8_t* d = row + oy * OW;
            if (sw == 1) {
              std::memcpy(d, s, OW);
            } else {
              for (int64_t ox = 0; ox < OW; ++ox) d[ox] = s[ox * sw];
            }
          }
        }
#if QATLAB_X86
        if (simd) {
          pack_quad_rows_avx2(rows, row_len, panels, KQ, kq, packed);
          continue;
        }
#endif
        pack_quad_rows_portable(rows, row_len, panels, KQ, kq, packed);
      }
    }
    const Epilogue e{&stage_, g * ocg_, /*channel_per_row=*/true, y + g * ocg_ * OHW, OHW};
    gemm_rows<false>(path, a_s8_.data() + g * ocg_ * KQ * 4, a_s16_.data() + g * ocg_ * KQ * 4, KQ * 4, ocg_, packed,
                     KQ, OHW, e);
  }
}

void PackedConvInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedConvInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) {
    if (batch > 0)
      conv2d_int8_reference(params_, input, {batch, c_, h_, w_}, filter_.data(), f_shape_,
                            bias_.empty() ? nullptr : bias_.data(), output);
    return;
  }
  require_supported(path);
  const int threads = threads_for(batch, oc_ * k_ * ohw_);
  // All scratch for this call, one slice per thread; zeroed so that the junk columns are defined.
  std::vector<uint8_t> scratch(threads * scratch_per_image_, 0);
  const int64_t in_stride = c_ * h_ * w_, out_stride = oc_ * ohw_;
  if (threads == 1) {
    for (int64_t n = 0; n < batch; ++n) run_image(input + n * in_stride, output + n * out_stride, path, scratch.data());
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    uint8_t* mine = scratch.data() + omp_get_thread_num() * scratch_per_image_;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < batch; ++n) run_image(input + n * in_stride, output + n * out_stride, path, mine);
  }
}

// -------------------------------------------------------------------------------- fully connected

PackedFullyConnectedInt8::PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const int8_t* weights,
                                                   const Shape& w_shape, const int32_t* bias)
    : params_(params) {
  QATLAB_CHECK(w_shape.size() == 2, "PackedFullyConnectedInt8: weights must be (OUT, IN), got " + shape_str(w_shape));
  fully_connected_int8_output_shape(params, {1, w_shape[1]}, w_shape);
  out_ = w_shape[0], in_ = w_shape[1];
  QATLAB_CHECK(in_ <= kMaxK, "PackedFullyConnectedInt8: IN = " + std::to_string(in_) +
                              " exceeds 65536 (int32 accumulator headroom) for weights " + shape_str(w_shape));
  kq_ = ceil_div(in_, 4);
  panels_ = ceil_div(out_, kPanel);
  assert(narrow_range(weights, out_ * in_));
  weights_.assign(weights, weights + out_ * in_);
  if (bias) bias_.assign(bias, bias + out_);

  // B: weights^T (IN, OUT) in panels of 16 output columns, zero-padded in both IN and OUT.
  b_panels_.assign(panels_ * kq_ * kQuadBytes, 0);
  std::vector<int64_t> sums(out_, 0);
  for (int64_t o = 0; o < out_; ++o) {
    const int64_t p = o / kPanel, j = o % kPanel;
    for (int64_t i = 0; i < in_; ++i) {
      const int8_t w = weights[o * in_ + i];
      b_panels_[((p * kq_ + i / 4) * kPanel + j) * 4 + i % 4] = static_cast<uint8_t>(w);
      sums[o] += w;
    }
  }
  stage_ = make_output_stage(out_, panels_ * kPanel, sums, bias, params.input_offset, params.output_offset,
                             params.output_multiplier, params.output_shift, params.quantized_activation_min,
                             params.quantized_activation_max);
}

void PackedFullyConnectedInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedFullyConnectedInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) {
    if (batch > 0)
      fully_connected_int8_reference(params_, input, {batch, in_}, weights_.data(), {out_, in_},
                                     bias_.empty() ? nullptr : bias_.data(), output);
    return;
  }
  require_supported(path);
  const int mr = tile_rows(path);
  const int64_t blocks = ceil_div(batch, mr);
  const int threads = threads_for(blocks, mr * in_ * out_);
  const int64_t a_len = mr * kq_ * 4;  // one block of rows of A, (MR, KQ*4)
  // Per thread: the block of A as bytes (portable, VNNI) or int16 (AVX2); K padding stays 0.
  std::vector<uint8_t> a8(path == KernelPath::Avx2 ? 0 : threads * a_len, 0);
  std::vector<int16_t> a16(path == KernelPath::Avx2 ? threads * a_len : 0, 0);

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int t = omp_get_thread_num();
    uint8_t* my8 = a8.empty() ? nullptr : a8.data() + t * a_len;
    int16_t* my16 = a16.empty() ? nullptr : a16.data() + t * a_len;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t m0 = blk * mr, m = std::min<int64_t>(mr, batch - m0);
      // A rows: unsigned codes u = x + 128 (the sign bit flipped).
      for (int64_t r = 0; r < m; ++r) {
        const int8_t* x = input + (m0 + r) * in_;
        if (my16) {
          for (int64_t i = 0; i < in_; ++i) my16[r * kq_ * 4 + i] = static_cast<int16_t>(x[i] + 128);
        } else {
          for (int64_t i = 0; i < in_; ++i) my8[r * kq_ * 4 + i] = static_cast<uint8_t>(x[i]) ^ 0x80;
        }
      }
      const Epilogue e{&stage_, 0, /*channel_per_row=*/false, output + m0 * out_, out_};
      gemm_rows<true>(path, my8, my16, kq_ * 4, m, b_panels_.data(), kq_, out_, e);
    }
  }
}

}  // namespace qatlab
