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

#include "quant/requantize_avx2.h"
#define QATLAB_X86 1
#else
#define QATLAB_X86 0
#endif

#include "quant/packed_codes.h"
#include "quant/requantize.h"

namespace qatlab {

namespace {

constexpr int64_t kPanel = 16;       // columns per packed panel of B
constexpr int64_t kQuadBytes = 64;   // one k-quad of a panel: 16 columns x 4 bytes
constexpr int64_t kNibbleQuadBytes = 32;  // the same in a 4-bit panel: 16 columns x 4 nibbles
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
// With `acc` set (a conv with a fused pool, channel_per_row), the tiles store the accumulators (sum
// plus folded bias, wrapped) at acc[i * out_stride + j] instead, for all the 8 or 16 columns of the
// tile (junk past the last real one: the buffer is whole panels wide), and `out` is not used.
struct Epilogue {
  const PackedOutputStage* stage;
  int64_t channel0;
  bool channel_per_row;
  int8_t* out;
  int64_t out_stride;
  int32_t* acc = nullptr;
};

// The int32 sum plus the folded bias, wrapped as an int32 accumulator would (unsigned add).
inline int32_t accumulator(int32_t sum, const PackedOutputStage& s, int64_t ch) {
  return static_cast<int32_t>(static_cast<uint32_t>(sum) + static_cast<uint32_t>(s.folded_bias[ch]));
}

// The shared requantize() of an accumulator of channel ch.
inline int8_t requantize_channel(int32_t acc, const PackedOutputStage& s, int64_t ch) {
  return requantize(acc, s.multiplier[ch], s.shift[ch], s.output_offset, s.output_offset + s.clamp_lo,
                    s.output_offset + s.clamp_hi);
}

// The scalar output stage.
inline int8_t finish_scalar(int32_t sum, const PackedOutputStage& s, int64_t ch) {
  return requantize_channel(accumulator(sum, s, ch), s, ch);
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
    const int32_t values[PackedOutputStage::kParams] = {s.folded_bias[c], multipliers[c],
                                                        requantize_left_shift(shifts[c]),
                                                        requantize_total_shift(shifts[c])};
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
  if (e.acc) {
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < kPanel; ++j)
        e.acc[(row0 + r) * e.out_stride + col0 + j] = accumulator(acc[r][j], *e.stage, e.channel0 + row0 + r);
    return;
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < cols; ++j)
      e.out[(row0 + r) * e.out_stride + col0 + j] =
          finish_scalar(acc[r][j], *e.stage, e.channel0 + (e.channel_per_row ? row0 + r : col0 + j));
}

// The fused 2x2 stride-2 max pool of a conv, after its GEMM: acc holds one row of wrapped
// accumulators per channel (acc_stride apart), output pixel (oy, ox) at oy * row_stride + ox;
// y (OC, OH/2, OW/2) gets the requantized largest accumulator of each window (see int8_gemm.h for why
// that is the max of the requantized codes).
void pool_requantize_portable(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels, int64_t oh,
                              int64_t ow, const PackedOutputStage& s, int8_t* y) {
  const int64_t poh = oh / 2, pow = ow / 2;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t py = 0; py < poh; ++py) {
      const int32_t* r0 = acc + c * acc_stride + 2 * py * row_stride;  // conv output rows 2py and 2py + 1
      const int32_t* r1 = r0 + row_stride;
      for (int64_t px = 0; px < pow; ++px) {
        const int32_t best = std::max(std::max(r0[2 * px], r0[2 * px + 1]), std::max(r1[2 * px], r1[2 * px + 1]));
        y[(c * poh + py) * pow + px] = requantize_channel(best, s, c);
      }
    }
  }
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

// Packs 4 im2col rows of unsigned codes (each >= panels * 16 long, row stride row_len) into k-quad
// `kq` of every panel.
void pack_quad_rows_portable(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                             uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* dst = b + (p * kq_count + kq) * kQuadBytes;
    for (int64_t j = 0; j < kPanel; ++j)
      for (int64_t t = 0; t < 4; ++t) dst[j * 4 + t] = rows[t * row_len + p * kPanel + j];
  }
}

// 8-bit panels -> 4-bit panels (int8_gemm.h): `halves` half rows of 32 bytes (8 columns x 4 k) each
// fold onto 16 bytes, byte b taking byte b of the half row in its low nibble and byte b + 16 in its
// high nibble. The codes must fit 4 bits.
void fold_to_nibbles(const uint8_t* b8, int64_t halves, uint8_t* b4) {
  for (int64_t h = 0; h < halves; ++h)
    for (int64_t b = 0; b < 16; ++b)
      b4[h * 16 + b] = static_cast<uint8_t>((b8[h * 32 + b] & 0x0F) | (b8[h * 32 + 16 + b] << 4));
}

// The reverse for one panel of KQ k-quads (2 * KQ half rows), each nibble sign-extended back to a byte
// (shifted to the top of a byte, then arithmetically back down): the 8-bit panel the portable and
// VNNI tiles read.
void unfold_nibble_panel(const uint8_t* b4, int64_t kq_count, uint8_t* b8) {
  for (int64_t h = 0; h < 2 * kq_count; ++h)
    for (int64_t b = 0; b < 16; ++b) {
      const uint8_t v = b4[h * 16 + b];
      b8[h * 32 + b] = static_cast<uint8_t>(static_cast<int8_t>(v << 4) >> 4);
      b8[h * 32 + 16 + b] = static_cast<uint8_t>(static_cast<int8_t>(v) >> 4);
    }
}

// The image (C, H, W) of int8 codes as unsigned codes (x + 128: the sign bit flipped), framed by the
// padding code pad_u (the input zero point, also unsigned) into padded (C, Hp, Wp).
void frame_image_portable(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                          uint8_t pad_u, uint8_t* padded) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  std::memset(padded, pad_u, C * Hp * Wp);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t iy = 0; iy < H; ++iy) {
      uint8_t* d = padded + (c * Hp + iy + pad_h) * Wp + pad_w;
      const int8_t* s = x + (c * H + iy) * W;
      for (int64_t ix = 0; ix < W; ++ix) d[ix] = static_cast<uint8_t>(s[ix]) ^ 0x80;
    }
}

#if QATLAB_X86

// ----------------------------------------------------------------------------------- AVX2 kernel

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

// Requantizes the 8 sums of GEMM row i, columns j0..j0+7, and stores the first `cols` of them (or,
// with e.acc, stores the 8 accumulators).
__attribute__((target("avx2"), always_inline)) inline void finish8(__m256i sum, const Epilogue& e, int64_t i,
                                                                   int64_t j0, int cols) {
  if (e.acc) {
    assert(e.channel_per_row);
    const __m256i bias = param8(e.stage->rows.data() + (e.channel0 + i) * PackedOutputStage::kParams * 8, 8, 0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(e.acc + i * e.out_stride + j0), _mm256_add_epi32(sum, bias));
    return;
  }
  const OutputConsts k = output_consts(*e.stage);
  store_row8(requantize_row8(sum, e, k, i, j0), e.out + i * e.out_stride + j0, cols);
}

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

// Interleaves 4 rows x 16 columns of codes into 16 column quads at dst.
__attribute__((target("avx2"), always_inline)) inline void interleave_quads(__m128i r0, __m128i r1, __m128i r2,
                                                                            __m128i r3, uint8_t* dst) {
  const __m128i r01_lo = _mm_unpacklo_epi8(r0, r1), r01_hi = _mm_unpackhi_epi8(r0, r1);  // (k0 k1) per column
  const __m128i r23_lo = _mm_unpacklo_epi8(r2, r3), r23_hi = _mm_unpackhi_epi8(r2, r3);  // (k2 k3) per column
  __m128i* out = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(out, _mm_unpacklo_epi16(r01_lo, r23_lo));      // columns 0..3
  _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(r01_lo, r23_lo));  // 4..7
  _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(r01_hi, r23_hi));  // 8..11
  _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(r01_hi, r23_hi));  // 12..15
}

// The AVX2 form of frame_image_portable. Each padded row is written in address order with 16-byte
// stores that may run past their part (left padding, pixels, right padding): the next store, or
// the next row, rewrites what one spills, and the last row spills into the scratch's slack. Input
// rows are read 16 bytes at a time too, except near the end of the input, which must not be
// overrun.
__attribute__((target("avx2"))) void frame_image_avx2(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                                                      int64_t pad_w, uint8_t pad_u, uint8_t* padded) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80)), pad = _mm_set1_epi8(static_cast<char>(pad_u));
  const int8_t* x_end = x + C * H * W;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t yy = 0; yy < Hp; ++yy) {
      uint8_t* row = padded + (c * Hp + yy) * Wp;
      if (yy < pad_h || yy >= pad_h + H) {
        for (int64_t j = 0; j < Wp; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + j), pad);
        continue;
      }
      for (int64_t j = 0; j < pad_w; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + j), pad);
      const int8_t* src = x + (c * H + yy - pad_h) * W;
      for (int64_t j = 0; j < W; j += 16) {
        __m128i v;
        if (x_end - (src + j) >= 16) {
          v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
        } else {
          alignas(16) int8_t tail[16] = {};
          std::memcpy(tail, src + j, x_end - (src + j));
          v = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
        }
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row + pad_w + j), _mm_xor_si128(v, flip));
      }
      for (int64_t j = 0; j < pad_w; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + pad_w + W + j), pad);
    }
  }
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

// Two neighbouring panels at once (32 columns): per k-quad, two zmm loads of B and MR broadcasts of A
// feed 2 * MR dpbusd. With one panel the MR broadcasts and the load (MR + 1 loads for MR dpbusd) kept
// the load ports, not the dpbusd units, busy: the 1024^3 GEMM ran at ~34 % of the vpdpbusd peak.
// Same products and sums per column as vnni_tile, so the same int32 accumulators bit for bit.
template <int MR, bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void vnni_tile2(const uint8_t* a, int64_t a_stride,
                                                                            const uint8_t* b, int64_t panel_bytes,
                                                                            int64_t kq_count, int64_t row0,
                                                                            int64_t col0, int cols,
                                                                            const Epilogue& e) {
  static_assert(MR >= 1 && MR <= 8);
  const __m512i zero = _mm512_setzero_si512();
  __m512i p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero;  // panel 0
  __m512i q0 = zero, q1 = zero, q2 = zero, q3 = zero, q4 = zero, q5 = zero, q6 = zero, q7 = zero;  // panel 1
  const uint8_t* b1 = b + panel_bytes;
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const __m512i bv0 = _mm512_loadu_si512(b + kq * kQuadBytes);
    const __m512i bv1 = _mm512_loadu_si512(b1 + kq * kQuadBytes);
    const uint8_t* ak = a + kq * 4;
    const auto row = [&](int r, __m512i& acc0, __m512i& acc1) __attribute__((always_inline)) {
      int32_t quad;
      std::memcpy(&quad, ak + r * a_stride, sizeof quad);
      const __m512i av = _mm512_set1_epi32(quad);
      acc0 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc0, av, bv0) : _mm512_dpbusd_epi32(acc0, bv0, av);
      acc1 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc1, av, bv1) : _mm512_dpbusd_epi32(acc1, bv1, av);
    };
    row(0, p0, q0);
    if constexpr (MR > 1) row(1, p1, q1);
    if constexpr (MR > 2) row(2, p2, q2);
    if constexpr (MR > 3) row(3, p3, q3);
    if constexpr (MR > 4) row(4, p4, q4);
    if constexpr (MR > 5) row(5, p5, q5);
    if constexpr (MR > 6) row(6, p6, q6);
    if constexpr (MR > 7) row(7, p7, q7);
  }
  alignas(64) int32_t sums[8][2 * kPanel];  // (rows, 32 columns)
  const __m512i first[8] = {p0, p1, p2, p3, p4, p5, p6, p7}, second[8] = {q0, q1, q2, q3, q4, q5, q6, q7};
  for (int r = 0; r < MR; ++r) {
    _mm512_store_si512(sums[r], first[r]);
    _mm512_store_si512(sums[r] + kPanel, second[r]);
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < cols; j += 8)
      finish8(_mm256_load_si256(reinterpret_cast<const __m256i*>(sums[r] + j)), e, row0 + r, col0 + j,
              std::min(cols - j, 8));
}

using VnniTile2Fn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int64_t, int,
                             const Epilogue&);

template <bool kBroadcastUnsigned>
VnniTile2Fn vnni_tile2_fn(int mr) {
  switch (mr) {
    case 1: return vnni_tile2<1, kBroadcastUnsigned>;
    case 2: return vnni_tile2<2, kBroadcastUnsigned>;
    case 3: return vnni_tile2<3, kBroadcastUnsigned>;
    case 4: return vnni_tile2<4, kBroadcastUnsigned>;
    case 5: return vnni_tile2<5, kBroadcastUnsigned>;
    case 6: return vnni_tile2<6, kBroadcastUnsigned>;
    case 7: return vnni_tile2<7, kBroadcastUnsigned>;
    default: return vnni_tile2<8, kBroadcastUnsigned>;
  }
}

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
// b_nibbles: B is made of 4-bit panels (fully connected with packed weights). The AVX2 path reads them
// as they are, with A as bytes (a8); the portable and VNNI tiles read each panel unfolded into
// `unfolded` (KQ * 64 bytes).
template <bool kBroadcastUnsigned>
void gemm_rows(KernelPath path, const uint8_t* a8, const int16_t* a16, int64_t a_stride, int64_t m, const uint8_t* b,
               bool b_nibbles, int64_t kq_count, int64_t n, const Epilogue& e, uint8_t* unfolded = nullptr) {
  assert(!b_nibbles || kBroadcastUnsigned);
  const int mr_max = tile_rows(path);
  const int64_t panels = ceil_div(n, kPanel), quad_bytes = b_nibbles ? kNibbleQuadBytes : kQuadBytes;
  const int64_t panel_bytes = kq_count * quad_bytes;
  // Panel p as the 8-bit tiles read it.
  const auto panel = [&](int64_t p) -> const uint8_t* {
    if (!b_nibbles) return b + p * panel_bytes;
    unfold_nibble_panel(b + p * panel_bytes, kq_count, unfolded);
    return unfolded;
  };
  for (int64_t r0 = 0; r0 < m; r0 += mr_max) {
    const int mr = static_cast<int>(std::min<int64_t>(mr_max, m - r0));
    // The tile function is chosen once per block of rows, not per tile.
    switch (path) {
#if QATLAB_X86
      case KernelPath::Avx2: {
        if (b_nibbles) {
          // 4-bit panels, whole; A as bytes; the block of rows in tiles of up to kNibbleMR.
          for (int64_t t0 = r0; t0 < r0 + mr; t0 += kNibbleMR) {
            const int tr = static_cast<int>(std::min<int64_t>(kNibbleMR, r0 + mr - t0));
            const NibbleTileFn tile = avx2_nibble_tile_fn(tr);
            for (int64_t p = 0; p < panels; ++p)
              tile(a8 + t0 * a_stride, a_stride, b + p * panel_bytes, kq_count, t0, p * kPanel,
                   static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel)), e);
          }
          break;
        }
        // Half panels of 8 columns; the panel is the signed side iff A is the unsigned one.
        const Avx2TileFn tile = avx2_tile_fn<kBroadcastUnsigned>(mr);
        for (int64_t j0 = 0; j0 < n; j0 += 8)
          tile(a16 + r0 * a_stride, a_stride, b + (j0 / kPanel) * panel_bytes + (j0 % kPanel) * 4, kq_count, r0, j0,
               static_cast<int>(std::min<int64_t>(8, n - j0)), e);
        break;
      }
      case KernelPath::Avx512Vnni: {
        // Pairs of 8-bit panels in the two-panel tile; an odd last panel, and 4-bit panels (unfolded one
        // at a time), in the one-panel tile.
        int64_t p = 0;
        if (!b_nibbles) {
          const VnniTile2Fn tile2 = vnni_tile2_fn<kBroadcastUnsigned>(mr);
          for (; p + 1 < panels; p += 2)
            tile2(a8 + r0 * a_stride, a_stride, b + p * panel_bytes, panel_bytes, kq_count, r0, p * kPanel,
                  static_cast<int>(std::min<int64_t>(2 * kPanel, n - p * kPanel)), e);
        }
        const VnniTileFn tile = vnni_tile_fn<kBroadcastUnsigned>(mr);
        for (; p < panels; ++p)
          tile(a8 + r0 * a_stride, a_stride, panel(p), kq_count, r0, p * kPanel,
               static_cast<int>(std::min<int64_t>(kPanel, n - p * kPanel)), e);
        break;
      }
#endif
      default: {
        const PortableTileFn tile = portable_tile_fn<kBroadcastUnsigned>(mr);
        for (int64_t p = 0; p < panels; ++p)
          tile(a8 + r0 * a_stride, a_stride, panel(p), kq_count, r0, p * kPanel,
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

void add_int8(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count,
              KernelPath path) {
  require_supported(path);
#if QATLAB_X86
  if (path == KernelPath::Avx2 || path == KernelPath::Avx512Vnni) return add_int8_avx2(params, a, b, out, count);
#endif
  add_int8_reference(params, a, b, out, count);
}

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

namespace {

// The GEMM's A operand from filter rows (OC, K) of codes: zero-padded to (OC, KQ*4) (the K padding
// must read 0), as signed bytes (portable, VNNI) or widened to int16 (AVX2).
void filter_rows_s8(const int8_t* filter, int64_t oc, int64_t k, int64_t kq, uint8_t* a) {
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < k; ++i) a[o * kq * 4 + i] = static_cast<uint8_t>(filter[o * k + i]);
    std::fill(a + o * kq * 4 + k, a + (o + 1) * kq * 4, uint8_t{0});
  }
}

void filter_rows_s16(const int8_t* filter, int64_t oc, int64_t k, int64_t kq, int16_t* a) {
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < k; ++i) a[o * kq * 4 + i] = filter[o * k + i];
    std::fill(a + o * kq * 4 + k, a + (o + 1) * kq * 4, int16_t{0});
  }
}

// The direct convolution's weights (OC, pairs): taps 2t and 2t + 1 as two int16 in one int32, tap 2t
// in the low half; an odd K's last pair gets a second tap of weight 0.
void filter_pairs(const int8_t* filter, int64_t oc, int64_t k, int64_t pairs, int32_t* w) {
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t t = 0; t < pairs; ++t) {
      const uint16_t w0 = static_cast<uint16_t>(int16_t{filter[o * k + 2 * t]});
      const uint16_t w1 = 2 * t + 1 < k ? static_cast<uint16_t>(int16_t{filter[o * k + 2 * t + 1]}) : 0;
      w[o * pairs + t] = static_cast<int32_t>(uint32_t{w0} | (uint32_t{w1} << 16));
    }
}

}  // namespace

PackedConvInt8::PackedConvInt8(const ConvInt8Params& params, const int8_t* filter, const Shape& f_shape,
                               const int32_t* bias, const Shape& in_shape_chw, bool fuse_max_pool)
    : PackedConvInt8(params, reinterpret_cast<const uint8_t*>(filter), 8, f_shape, bias, in_shape_chw,
                     fuse_max_pool) {}

PackedConvInt8::PackedConvInt8(const ConvInt8Params& params, const uint8_t* filter, int filter_bits,
                               const Shape& f_shape, const int32_t* bias, const Shape& in_shape_chw,
                               bool fuse_max_pool)
    : params_(params), f_shape_(f_shape), in_chw_(in_shape_chw), bits_(filter_bits), fuse_pool_(fuse_max_pool) {
  check_storage_bits(filter_bits, "PackedConvInt8");
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
  if (fuse_pool_)
    QATLAB_CHECK(oh_ >= 2 && ow_ >= 2, "PackedConvInt8: a fused 2x2 max pool needs a conv output of at least 2x2, got " +
                                           std::to_string(oh_) + "x" + std::to_string(ow_));

  // The direct convolution (AVX2, stride 1, one group) where it takes fewer instructions than
  // im2col + GEMM, counted from the kernels' inner loops (RB = ceil(OC / 6) blocks of output rows):
  //   GEMM:   KQ * (32 per packed panel + per 8 columns (6 per row block + 5 per channel))
  //           + ~100 per tile call;
  //   direct: pairs * per 16 positions (11 per row block + 5 per channel) + ~80 per block call.
  // The direct one skips the packing but computes the Wp - OW positions of each row that the output
  // does not have. (LeNet-5, measured per image: conv1 direct 34k, GEMM 49k; conv2 direct 76k, GEMM 67k.)
  if (params.stride_h == 1 && params.stride_w == 1 && groups_ == 1) {
    const int64_t rb = ceil_div(oc_, kAvx2MR), pairs = ceil_div(k_, 2);
    const int64_t positions = (oh_ - 1) * wp_ + ow_, blocks = ceil_div(positions, 16), tiles = ceil_div(ohw_, 8);
    const int64_t gemm = kq_ * (32 * panels_ + tiles * (6 * rb + 5 * oc_)) + 100 * rb * tiles;
    const int64_t direct = pairs * blocks * (11 * rb + 5 * oc_) + 80 * rb * blocks;
    if (direct < gemm) {
      direct_ = true;
      pairs_ = pairs, positions_ = positions;
    }
  }
  acc_stride_ = std::max(panels_ * kPanel, ceil_div(positions_, 16) * 16);
  // padded image (C, Hp, Wp) + slack, 4 im2col rows, packed panels (panels, KQ, 16, 4), and for the
  // fused pool or the direct conv the accumulators (OC, acc_stride) int32 + 16 of slack, 64-byte aligned
  scratch_per_image_ = (c_ * hp_ * wp_ + 64) + 4 * row_len_ + panels_ * kq_ * kQuadBytes;
  acc_offset_ = ceil_div(scratch_per_image_, 64) * 64;
  if (fuse_pool_ || direct_) scratch_per_image_ = acc_offset_ + (oc_ * acc_stride_ + 16) * 4;
  scratch_per_image_ = ceil_div(scratch_per_image_, 64) * 64;
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

  // The codes as int8, whatever their storage: for the sums of the folded bias, and for an 8-bit
  // filter the operands kept here. A packed filter is kept as it came; filter_operands() unpacks it.
  const int64_t count = shape_numel(f_shape);
  std::vector<int8_t> codes(count);  // (OC, K)
  unpack_codes(filter, count, bits_, codes.data());
  if (bias) bias_.assign(bias, bias + oc_);
  std::vector<int64_t> sums(oc_, 0);
  for (int64_t o = 0; o < oc_; ++o)
    for (int64_t k = 0; k < k_; ++k) sums[o] += codes[o * k_ + k];
  stage_ = make_output_stage(oc_, ceil_div(oc_, kPanel) * kPanel, sums, bias, params.input_offset,
                             params.output_offset, params.output_multiplier, params.output_shift,
                             params.quantized_activation_min, params.quantized_activation_max);

  if (direct_) {
    // Taps in pairs; an odd K's last pair gets a second tap (of weight 0) reading tap 0's pixel.
    tap_offset_.assign(pairs_ * 2, k_offset_[0]);
    for (int64_t k = 0; k < k_; ++k) tap_offset_[k] = k_offset_[k];
  }
  if (bits_ != 8) {
    filter_packed_.assign(filter, filter + packed_bytes(count, bits_));
    // Scratch after the image's: the unpacked codes (OC, K), then the largest operand a path needs:
    // int16 rows (OC, KQ*4) or the direct kernel's pairs (OC, pairs) int32.
    operand_bytes_ = ceil_div(count, 64) * 64 +
                     ceil_div(std::max<int64_t>(oc_ * kq_ * 4 * 2, direct_ ? oc_ * pairs_ * 4 : 0), 64) * 64;
    return;
  }
  assert(narrow_range(codes.data(), count));
  filter_ = std::move(codes);
  if (direct_) {
    w_pairs_.assign(oc_ * pairs_, 0);
    filter_pairs(filter_.data(), oc_, k_, pairs_, w_pairs_.data());
  }
  a_s8_.assign(oc_ * kq_ * 4, 0);
  a_s16_.assign(oc_ * kq_ * 4, 0);
  filter_rows_s8(filter_.data(), oc_, k_, kq_, a_s8_.data());
  filter_rows_s16(filter_.data(), oc_, k_, kq_, a_s16_.data());
}

int64_t PackedConvInt8::weight_bytes() const {
  return bits_ == 8 ? static_cast<int64_t>(a_s8_.size() + 2 * a_s16_.size() + 4 * w_pairs_.size())
                    : static_cast<int64_t>(filter_packed_.size());
}

PackedConvInt8::FilterOperands PackedConvInt8::filter_operands(KernelPath path, uint8_t* scratch) const {
  FilterOperands f;
  if (bits_ == 8) {
    f.a_s8 = a_s8_.data(), f.a_s16 = a_s16_.data(), f.w_pairs = w_pairs_.data();
    return f;
  }
  int8_t* codes = reinterpret_cast<int8_t*>(scratch);  // (OC, K)
  uint8_t* operand = scratch + ceil_div(oc_ * k_, 64) * 64;
  unpack_codes(filter_packed_.data(), oc_ * k_, bits_, codes);
  // Only the form this path reads (see run_image).
  if (path == KernelPath::Avx2 && direct_) {
    filter_pairs(codes, oc_, k_, pairs_, reinterpret_cast<int32_t*>(operand));
    f.w_pairs = reinterpret_cast<const int32_t*>(operand);
  } else if (path == KernelPath::Avx2) {
    filter_rows_s16(codes, oc_, k_, kq_, reinterpret_cast<int16_t*>(operand));
    f.a_s16 = reinterpret_cast<const int16_t*>(operand);
  } else {
    filter_rows_s8(codes, oc_, k_, kq_, operand);
    f.a_s8 = operand;
  }
  return f;
}

void PackedConvInt8::run_image(const int8_t* x, int8_t* y, KernelPath path, const FilterOperands& f,
                               uint8_t* scratch) const {
  // Sizes in locals: stores through byte pointers may alias the members, locals keep loops tight.
  const int64_t C = c_, H = h_, W = w_, Hp = hp_, Wp = wp_, pad_h = params_.pad_h, pad_w = params_.pad_w;
  const int64_t OH = oh_, OW = ow_, OHW = ohw_, sh = params_.stride_h, sw = params_.stride_w;
  const int64_t K = k_, KQ = kq_, panels = panels_, row_len = row_len_;
  uint8_t* padded = scratch;                   // (C, Hp, Wp) unsigned codes, + 64 slack
  uint8_t* rows = padded + C * Hp * Wp + 64;   // (4, row_len)
  uint8_t* packed = rows + 4 * row_len;        // (panels, KQ, 16, 4)
  int32_t* acc = reinterpret_cast<int32_t*>(scratch + acc_offset_);  // fused pool, direct: (OC, acc_stride) + 16
  const bool simd = path == KernelPath::Avx2 || path == KernelPath::Avx512Vnni;

  // The image as unsigned codes (x + 128, flipping the sign bit), framed by the padding code (the
  // input zero point, likewise flipped).
  const uint8_t pad_u = static_cast<uint8_t>(pad_code_) ^ 0x80;
#if QATLAB_X86
  if (simd)
    frame_image_avx2(x, C, H, W, pad_h, pad_w, pad_u, padded);
  else
#endif
    frame_image_portable(x, C, H, W, pad_h, pad_w, pad_u, padded);

#if QATLAB_X86
  if (direct_ && path == KernelPath::Avx2) {
    direct_conv_avx2(padded, tap_offset_.data(), pairs_, f.w_pairs, stage_, oc_, positions_, acc, acc_stride_);
    // Output pixel (oy, ox) is position oy * Wp + ox.
    if (fuse_pool_)
      pool_requantize_avx2(acc, acc_stride_, Wp, oc_, OH, OW, stage_, y);
    else
      requantize_rows_avx2(acc, acc_stride_, Wp, oc_, OH, OW, stage_, y);
    return;
  }
#endif
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
    // Fused pool: the accumulators of group g go to its rows of acc (at least whole panels wide).
    const int64_t acc_stride = acc_stride_;
    const Epilogue e = fuse_pool_ ? Epilogue{&stage_, g * ocg_, true, nullptr, acc_stride, acc + g * ocg_ * acc_stride}
                                  : Epilogue{&stage_, g * ocg_, /*channel_per_row=*/true, y + g * ocg_ * OHW, OHW};
    // The group's filter rows, in the form this path reads (filter_operands leaves the other null).
    const uint8_t* a8 = f.a_s8 ? f.a_s8 + g * ocg_ * KQ * 4 : nullptr;
    const int16_t* a16 = f.a_s16 ? f.a_s16 + g * ocg_ * KQ * 4 : nullptr;
    gemm_rows<false>(path, a8, a16, KQ * 4, ocg_, packed, /*b_nibbles=*/false, KQ, OHW, e);
  }
  if (fuse_pool_) {
#if QATLAB_X86
    if (simd) {
      pool_requantize_avx2(acc, acc_stride_, OW, oc_, OH, OW, stage_, y);
      return;
    }
#endif
    pool_requantize_portable(acc, acc_stride_, OW, oc_, OH, OW, stage_, y);
  }
}

void PackedConvInt8::run_reference(const int8_t* input, int64_t batch, int8_t* output) const {
  if (batch == 0) return;
  const int32_t* bias = bias_.empty() ? nullptr : bias_.data();
  const auto conv = [&](int8_t* y) {
    if (bits_ == 8)
      conv2d_int8_reference(params_, input, {batch, c_, h_, w_}, filter_.data(), f_shape_, bias, y);
    else
      conv2d_packed_reference(params_, input, {batch, c_, h_, w_}, filter_packed_.data(), bits_, f_shape_, bias, y);
  };
  if (!fuse_pool_) return conv(output);
  std::vector<int8_t> y(batch * oc_ * ohw_);  // (N, OC, OH, OW)
  conv(y.data());
  max_pool2d_int8_reference(y.data(), {batch, oc_, oh_, ow_}, 2, 2, 0, output);
}

void PackedConvInt8::run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path,
                                uint8_t* scratch) const {
  QATLAB_CHECK(batch >= 0, "PackedConvInt8::run_serial: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_reference(input, batch, output);
  require_supported(path);
  if (batch == 0) return;
  uint8_t* mine = scratch + (64 - reinterpret_cast<uintptr_t>(scratch) % 64) % 64;  // 64-byte aligned
  // A packed filter is unpacked once for the whole call, after the image's scratch.
  const FilterOperands f = filter_operands(path, mine + scratch_per_image_);
  const int64_t in_stride = c_ * h_ * w_, out_stride = shape_numel(output_shape(1));
  for (int64_t n = 0; n < batch; ++n) run_image(input + n * in_stride, output + n * out_stride, path, f, mine);
}

void PackedConvInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedConvInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_reference(input, batch, output);
  require_supported(path);
  const int threads = threads_for(batch, oc_ * k_ * ohw_);
  // All scratch for this call, one slice per thread (slices a multiple of 64 bytes apart, so that
  // each aligns within its own); zeroed so that the junk columns are defined.
  const int64_t slice = scratch_per_image_ + operand_bytes_;
  std::vector<uint8_t> scratch(threads * slice + 64, 0);
  if (threads == 1) return run_serial(input, batch, output, path, scratch.data());
  const int64_t in_stride = c_ * h_ * w_, out_stride = shape_numel(output_shape(1));
#pragma omp parallel num_threads(threads)
  {
    // Each thread one contiguous run of images (a static schedule), in one run_serial call: a packed
    // filter is then unpacked once per thread.
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t n0 = batch * t / nt, n1 = batch * (t + 1) / nt;
    run_serial(input + n0 * in_stride, n1 - n0, output + n0 * out_stride, path, scratch.data() + t * slice);
  }
}

// -------------------------------------------------------------------------------- fully connected

PackedFullyConnectedInt8::PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const int8_t* weights,
                                                   const Shape& w_shape, const int32_t* bias)
    : PackedFullyConnectedInt8(params, reinterpret_cast<const uint8_t*>(weights), 8, w_shape, bias) {}

PackedFullyConnectedInt8::PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const uint8_t* weights,
                                                   int weight_bits, const Shape& w_shape, const int32_t* bias)
    : params_(params), bits_(weight_bits) {
  check_storage_bits(weight_bits, "PackedFullyConnectedInt8");
  QATLAB_CHECK(w_shape.size() == 2, "PackedFullyConnectedInt8: weights must be (OUT, IN), got " + shape_str(w_shape));
  fully_connected_int8_output_shape(params, {1, w_shape[1]}, w_shape);
  out_ = w_shape[0], in_ = w_shape[1];
  QATLAB_CHECK(in_ <= kMaxK, "PackedFullyConnectedInt8: IN = " + std::to_string(in_) +
                              " exceeds 65536 (int32 accumulator headroom) for weights " + shape_str(w_shape));
  kq_ = ceil_div(in_, 4);
  panels_ = ceil_div(out_, kPanel);
  std::vector<int8_t> codes(out_ * in_);  // (OUT, IN)
  unpack_codes(weights, out_ * in_, bits_, codes.data());
  if (bits_ == 8) {
    assert(narrow_range(codes.data(), out_ * in_));
    weights_ = codes;
  } else {
    weights_packed_.assign(weights, weights + packed_bytes(out_ * in_, bits_));
  }
  if (bias) bias_.assign(bias, bias + out_);

  // B: weights^T (IN, OUT) in panels of 16 output columns, zero-padded in both IN and OUT.
  b_panels_.assign(panels_ * kq_ * kQuadBytes, 0);
  std::vector<int64_t> sums(out_, 0);
  for (int64_t o = 0; o < out_; ++o) {
    const int64_t p = o / kPanel, j = o % kPanel;
    for (int64_t i = 0; i < in_; ++i) {
      const int8_t w = codes[o * in_ + i];
      b_panels_[((p * kq_ + i / 4) * kPanel + j) * 4 + i % 4] = static_cast<uint8_t>(w);
      sums[o] += w;
    }
  }
  if (bits_ != 8) {
    // Folded to 4 bits: 2-bit codes take the 4-bit layout as well (see int8_gemm.h).
    std::vector<uint8_t> folded(panels_ * kq_ * kNibbleQuadBytes);
    fold_to_nibbles(b_panels_.data(), panels_ * kq_ * 2, folded.data());
    b_panels_ = std::move(folded);
  }
  stage_ = make_output_stage(out_, panels_ * kPanel, sums, bias, params.input_offset, params.output_offset,
                             params.output_multiplier, params.output_shift, params.quantized_activation_min,
                             params.quantized_activation_max);
}

int64_t PackedFullyConnectedInt8::scratch_bytes() const {
  // One block of rows of A: (MR, KQ*4) as int16 (AVX2) or bytes, for the widest tile; with 4-bit
  // panels one unfolded 8-bit panel (KQ, 16, 4) after it; + alignment.
  return std::max({kPortableMR, kAvx2MR, kVnniMR}) * kq_ * 4 * static_cast<int64_t>(sizeof(int16_t)) +
         (bits_ == 8 ? 0 : kq_ * kQuadBytes) + 64;
}

void PackedFullyConnectedInt8::run_block(const int8_t* input, int64_t m0, int64_t m, int8_t* output, KernelPath path,
                                         void* a) const {
  // A rows: unsigned codes u = x + 128 (the sign bit flipped); the K padding must read 0.
  // The AVX2 kernel of 8-bit weights takes A widened to int16; every other kernel takes bytes.
  const int64_t row = kq_ * 4;
  const bool wide = path == KernelPath::Avx2 && bits_ == 8;
  uint8_t* a8 = wide ? nullptr : static_cast<uint8_t*>(a);  // (MR, KQ*4)
  int16_t* a16 = wide ? static_cast<int16_t*>(a) : nullptr;  // (MR, KQ*4)
  for (int64_t r = 0; r < m; ++r) {
    const int8_t* x = input + (m0 + r) * in_;
    if (a16) {
      for (int64_t i = 0; i < in_; ++i) a16[r * row + i] = static_cast<int16_t>(x[i] + 128);
      std::fill(a16 + r * row + in_, a16 + (r + 1) * row, int16_t{0});
    } else {
      for (int64_t i = 0; i < in_; ++i) a8[r * row + i] = static_cast<uint8_t>(x[i]) ^ 0x80;
      std::fill(a8 + r * row + in_, a8 + (r + 1) * row, uint8_t{0});
    }
  }
  // The unfolded panel goes after the largest block of A (a multiple of 64 bytes).
  uint8_t* unfolded = static_cast<uint8_t*>(a) + std::max({kPortableMR, kAvx2MR, kVnniMR}) * row * 2;
  const Epilogue e{&stage_, 0, /*channel_per_row=*/false, output + m0 * out_, out_};
  gemm_rows<true>(path, a8, a16, row, m, b_panels_.data(), /*b_nibbles=*/bits_ != 8, kq_, out_, e, unfolded);
}

void PackedFullyConnectedInt8::run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path,
                                          uint8_t* scratch) const {
  QATLAB_CHECK(batch >= 0, "PackedFullyConnectedInt8::run_serial: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) {
    if (batch == 0) return;
    const int32_t* bias = bias_.empty() ? nullptr : bias_.data();
    if (bits_ == 8)
      fully_connected_int8_reference(params_, input, {batch, in_}, weights_.data(), {out_, in_}, bias, output);
    else
      fully_connected_packed_reference(params_, input, {batch, in_}, weights_packed_.data(), bits_, {out_, in_}, bias,
                                       output);
    return;
  }
  require_supported(path);
  uint8_t* a = scratch + (64 - reinterpret_cast<uintptr_t>(scratch) % 64) % 64;  // 64-byte aligned
  const int mr = tile_rows(path);
  for (int64_t m0 = 0; m0 < batch; m0 += mr) run_block(input, m0, std::min<int64_t>(mr, batch - m0), output, path, a);
}

void PackedFullyConnectedInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedFullyConnectedInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_serial(input, batch, output, path, nullptr);
  require_supported(path);
  const int mr = tile_rows(path);
  const int64_t blocks = ceil_div(batch, mr);
  const int threads = threads_for(blocks, mr * in_ * out_);
  const int64_t per_thread = scratch_bytes();
  std::vector<uint8_t> scratch(threads * per_thread);
  if (threads == 1) return run_serial(input, batch, output, path, scratch.data());
#pragma omp parallel num_threads(threads)
  {
    uint8_t* mine = scratch.data() + omp_get_thread_num() * per_thread;
    uint8_t* a = mine + (64 - reinterpret_cast<uintptr_t>(mine) % 64) % 64;
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk)
      run_block(input, blk * mr, std::min<int64_t>(mr, batch - blk * mr), output, path, a);
  }
}

}  // namespace qatlab
