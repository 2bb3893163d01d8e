// int_lstm.cpp: the integer sigmoid / tanh tables and the integer LSTM sequence kernels (reference and
// optimized); see int_lstm.h for the arithmetic.
#include "quant/int_lstm.h"

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "quant/dynamic_gemm.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "quant/requantize_avx2.h"
#define QATLAB_LSTM_X86 1
#else
#define QATLAB_LSTM_X86 0
#endif

namespace qatlab {

namespace {

constexpr int32_t kTableSize = 65536;

// round(scale * f(q / 4096)) clamped into [lo, hi], for every Q3.12 code q, in double.
template <class F>
std::unique_ptr<int16_t[]> build_table(F f, int32_t lo, int32_t hi) {
  auto table = std::make_unique<int16_t[]>(kTableSize);
  for (int32_t q = -32768; q <= 32767; ++q) {
    const double x = std::ldexp(static_cast<double>(q), -kLstmGateFracBits);
    const double y = std::round(std::ldexp(f(x), kLstmActFracBits));  // half away from zero
    table[q + 32768] = static_cast<int16_t>(std::clamp<double>(y, lo, hi));
  }
  return table;
}

}  // namespace

const int16_t* lstm_sigmoid_table() {
  static const std::unique_ptr<int16_t[]> table =
      build_table([](double x) { return 1.0 / (1.0 + std::exp(-x)); }, 0, 32767);
  return table.get();
}

const int16_t* lstm_tanh_table() {
  static const std::unique_ptr<int16_t[]> table = build_table([](double x) { return std::tanh(x); }, -32767, 32767);
  return table.get();
}

int lstm_cell_frac_bits(float cell_absmax) {
  if (!(cell_absmax > 0.0f)) return kLstmMaxCellFracBits;
  // absmax = m * 2^e with m in [0.5, 1): 2^(e-1) <= absmax < 2^e, so 2^(15-k) >= 2^e > absmax for k = 15 - e.
  int e = 0;
  std::frexp(static_cast<double>(cell_absmax), &e);
  return std::clamp(15 - e, 0, kLstmMaxCellFracBits);
}

// ------------------------------------------------------------------------------------------ params

void LstmInt8Params::validate() const {
  const auto fail = [](const std::string& what) { throw std::invalid_argument("integer LSTM: " + what); };
  if (input_size <= 0 || hidden_size <= 0 || input_size > 65536 || hidden_size > 65536)
    fail("input_size " + std::to_string(input_size) + " and hidden_size " + std::to_string(hidden_size) +
         " must be in 1..65536");
  const size_t g = static_cast<size_t>(4 * hidden_size);
  const auto size_is = [&](size_t actual, size_t expected, const char* name) {
    if (actual != expected)
      fail(std::string(name) + " has " + std::to_string(actual) + " values, expected " + std::to_string(expected));
  };
  size_is(weight_ih.size(), g * static_cast<size_t>(input_size), "weight_ih");
  size_is(weight_hh.size(), g * static_cast<size_t>(hidden_size), "weight_hh");
  size_is(bias.size(), g, "bias");
  size_is(input_multiplier.size(), g, "input_multiplier");
  size_is(input_shift.size(), g, "input_shift");
  size_is(recurrent_multiplier.size(), g, "recurrent_multiplier");
  size_is(recurrent_shift.size(), g, "recurrent_shift");
  if (cell_frac_bits < 0 || cell_frac_bits > kLstmMaxCellFracBits)
    fail("cell_frac_bits " + std::to_string(cell_frac_bits) + " must be in 0..15");
  if (input_offset < -127 || input_offset > 128)
    fail("input_offset " + std::to_string(input_offset) + " must be in [-127, 128]");
  // h_{t-1} is read back on the grid h_t was written on.
  if (hidden_offset != -output_offset)
    fail("hidden_offset " + std::to_string(hidden_offset) + " must be -output_offset (" +
         std::to_string(-output_offset) + "): h_{t-1} is read on the grid h_t is written on");
  if (!(-128 <= quantized_activation_min && quantized_activation_min <= output_offset &&
        output_offset <= quantized_activation_max && quantized_activation_max <= 127))
    fail("hidden codes [" + std::to_string(quantized_activation_min) + ", " + std::to_string(quantized_activation_max) +
         "] with zero point " + std::to_string(output_offset) + ": expected -128 <= min <= zero point <= max <= 127");
  const auto shifts_ok = [&](const std::vector<int>& s, const std::vector<int32_t>& m, const char* name) {
    for (size_t r = 0; r < s.size(); ++r)
      if (s[r] < -31 || s[r] > 30 || m[r] < 0)
        fail(std::string(name) + "[" + std::to_string(r) + "]: multiplier " + std::to_string(m[r]) + " shift " +
             std::to_string(s[r]) + ", expected multiplier >= 0 and shift in [-31, 30]");
  };
  shifts_ok(input_shift, input_multiplier, "input_multiplier");
  shifts_ok(recurrent_shift, recurrent_multiplier, "recurrent_multiplier");
  shifts_ok({hidden_shift}, {hidden_multiplier}, "hidden_multiplier");
}

Shape lstm_int8_output_shape(const LstmInt8Params& params, const Shape& in_shape) {
  params.validate();
  QATLAB_CHECK(in_shape.size() == 3 && in_shape[2] == params.input_size,
               "integer LSTM: input must be (N, T, " + std::to_string(params.input_size) + "), got " +
                   shape_str(in_shape));
  QATLAB_CHECK(in_shape[0] >= 0 && in_shape[1] >= 1,
               "integer LSTM: input " + shape_str(in_shape) + " needs at least one time step");
  return {in_shape[0], in_shape[1], params.hidden_size};
}

// ------------------------------------------------------------------------------------- reference

void lstm_int8_reference(const LstmInt8Params& p, const int8_t* input, const Shape& in_shape, int8_t* output) {
  lstm_int8_output_shape(p, in_shape);
  const int64_t N = in_shape[0], T = in_shape[1], IN = p.input_size, H = p.hidden_size, G = 4 * H;
#pragma omp parallel for schedule(static) if (N * T * G * (IN + H) >= (int64_t{1} << 22))
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int16_t> a(G);      // (G) gate pre-activations, Q3.12
    std::vector<int16_t> c(H, 0);   // (H) cell state, 2^-k
    for (int64_t t = 0; t < T; ++t) {
      const int8_t* x = input + (n * T + t) * IN;                      // (IN)
      const int8_t* h_prev = t > 0 ? output + (n * T + t - 1) * H : nullptr;  // (H), null: the zero point
      for (int64_t r = 0; r < G; ++r) {
        // In int64, then to int32 modulo 2^32 (the documented wrap; real layers never come near it).
        int64_t acc_x = p.bias[r];
        for (int64_t k = 0; k < IN; ++k) acc_x += (int64_t{x[k]} + p.input_offset) * p.weight_ih[r * IN + k];
        int64_t acc_h = 0;
        for (int64_t k = 0; k < H; ++k) {
          const int32_t h = h_prev ? h_prev[k] : p.output_offset;  // h_{-1} = real 0 = the zero point
          acc_h += (int64_t{h} + p.hidden_offset) * p.weight_hh[r * H + k];
        }
        a[r] = lstm_gate_sum(
            lstm_gate_from_accumulator(static_cast<int32_t>(acc_x), p.input_multiplier[r], p.input_shift[r]),
            lstm_gate_from_accumulator(static_cast<int32_t>(acc_h), p.recurrent_multiplier[r], p.recurrent_shift[r]));
      }
      int8_t* h_out = output + (n * T + t) * H;  // (H)
      for (int64_t j = 0; j < H; ++j) {
        const int16_t i = lstm_sigmoid(a[j]), f = lstm_sigmoid(a[H + j]), g = lstm_tanh(a[2 * H + j]),
                      o = lstm_sigmoid(a[3 * H + j]);
        c[j] = saturate_int16(lstm_cell_update(f, c[j], i, g, p.cell_frac_bits));
        const int32_t oh = lstm_hidden_product(o, lstm_tanh(lstm_cell_to_gate_grid(c[j], p.cell_frac_bits)));
        h_out[j] = requantize(oh, p.hidden_multiplier, p.hidden_shift, p.output_offset, p.quantized_activation_min,
                              p.quantized_activation_max);
      }
    }
  }
}

// ------------------------------------------------------------------------------------- optimized
//
// A group of up to kRows samples runs the steps together. The input side of several steps is computed
// ahead in one GEMM of up to kInputRows rows (samples x steps), put on the gate grid at once and kept as
// int16: one large GEMM instead of a small one per step, and its requantization off the recurrence. Per
// step, the samples' hidden states go through one recurrent GEMM (rows, H) x (G, H)^T, or the GEMV for one
// or two samples. Then, per sample, four elementwise stages: gate pre-activations (requantization and the
// saturating sum), the sigmoid / tanh lookups, the cell update, and the hidden output (the tanh lookup of
// the cell, o * tanh, requantization). The lookups are plain loads; the integer stages have an AVX2 form
// and a portable form of the same formulas. Before these stages (scalar, per element) took 70 % of a
// step; the GEMMs now take most of it.
//
// Shape letters as in int_lstm.h; KQ = ceil(H / 4) quads of k, P = ceil(G / 16) panels.

namespace {

// Samples taken through the steps together: the recurrent matmul is a GEMM of this many rows.
constexpr int64_t kRows = 16;
// Rows (samples x steps) of one input-side GEMM.
constexpr int64_t kInputRows = 64;
// Up to this many samples, the recurrent side runs as a GEMV on int8 weights (recurrent_gemv_avx2).
constexpr int64_t kGemvRows = 2;

// multiply_by_quantized_multiplier(acc, multiplier, shift) (requantize.h) without branches, from the
// row's left shift and total right shift: saturating_left_shift as a clamp in int64, then the one
// rounding of the 64-bit product.
inline int32_t multiply_branch_free(int32_t acc, int32_t m, int32_t left, int32_t total) {
  const int64_t shifted = std::clamp<int64_t>(static_cast<int64_t>(acc) * (int64_t{1} << left), INT32_MIN, INT32_MAX);
  return static_cast<int32_t>((shifted * m + (int64_t{1} << (total - 1))) >> total);
}

// acc + bias modulo 2^32, as the reference's int32 sum wraps.
inline int32_t wrap_add(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

inline int16_t stage_row(const LstmRowStage& s, int64_t r, int32_t acc) {
  return saturate_int16(multiply_branch_free(acc, s.multiplier[r], s.left[r], s.total[r]));
}

// ------------------------------------------------------------------------- the stages, portable form

// Input halves of the gates: out[r] = sat16(MBQM(acc[r] + bias[r], stage row r)), r < G.
void input_gates_portable(const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G, int16_t* out) {
  for (int64_t r = 0; r < G; ++r) out[r] = stage_row(s, r, wrap_add(acc[r], bias[r]));
}

// The gate pre-activations: a[r] = sat16(gx[r] + sat16(MBQM(acc[r] + bias[r], stage row r))); acc null
// means acc_h = 0 exactly (t = 0: h_{-1} is the zero point), whose requantized value is 0.
void gates_portable(const int16_t* gx, const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G,
                    int16_t* a) {
  for (int64_t r = 0; r < G; ++r)
    a[r] = acc ? lstm_gate_sum(gx[r], stage_row(s, r, wrap_add(acc[r], bias[r]))) : gx[r];
}

// c (H) updated in place from the activations act (G: i, f, g, o); cg (H) = c on the gate grid. Columns
// j0 .. H - 1 (the AVX2 form leaves its tail here).
void cell_portable(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg, int64_t j0 = 0) {
  for (int64_t j = j0; j < H; ++j) {
    c[j] = saturate_int16(lstm_cell_update(act[H + j], c[j], act[j], act[2 * H + j], k));
    cg[j] = lstm_cell_to_gate_grid(c[j], k);
  }
}

// h (H) = requantize(o * tanh_c), and u (H) = h + 128 for the next step's GEMM.
void hidden_portable(const int16_t* o, const int16_t* tanh_c, int64_t H, const LstmInt8Params& p, int8_t* h,
                     uint8_t* u) {
  for (int64_t j = 0; j < H; ++j) {
    h[j] = requantize(lstm_hidden_product(o[j], tanh_c[j]), p.hidden_multiplier, p.hidden_shift, p.output_offset,
                      p.quantized_activation_min, p.quantized_activation_max);
    u[j] = static_cast<uint8_t>(h[j] + 128);
  }
}

// The sigmoid / tanh lookups: act[r] = table(a[r]), sigmoid for the i, f, o rows, tanh for g.
void activations(const int16_t* a, int64_t H, int16_t* act) {
  const int16_t* sig = lstm_sigmoid_table() + 32768;
  const int16_t* tnh = lstm_tanh_table() + 32768;
  for (int64_t r = 0; r < 2 * H; ++r) act[r] = sig[a[r]];
  for (int64_t r = 2 * H; r < 3 * H; ++r) act[r] = tnh[a[r]];
  for (int64_t r = 3 * H; r < 4 * H; ++r) act[r] = sig[a[r]];
}

#if QATLAB_LSTM_X86

// --------------------------------------------------------------------------- the stages, AVX2 form
//
// The same integers, 8 lanes of int32 at a time; the tails (fewer than 8 rows or 16 columns) take the
// portable form. The functions carry target("avx2") so that the file builds for baseline x86-64; they
// run only where the CPU has AVX2.

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
  cell_portable(act, H, k, c, cg, j);  // the tail
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
  hidden_portable(o + j, tanh_c + j, H - j, p, h + j, u + j);
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

#endif  // QATLAB_LSTM_X86

// The scratch of run_serial, each part 64-byte aligned.
struct Scratch {
  uint8_t* ux;          // (kInputRows, IN): input codes + 128
  uint8_t* uh;          // (kRows, H): hidden codes + 128, for the GEMM
  int8_t* hq;           // (kGemvRows, KH): hidden codes, zero-padded to KH = 4 ceil(H / 4), for the GEMV
  int32_t* acc;         // (kInputRows, G): a GEMM's accumulators (input side, then recurrent side)
  int16_t* gx;          // (kInputRows, G): the input halves of the gates, on Q3.12
  int16_t *a, *act;     // (G) each: one sample's pre-activations, then its sigmoid / tanh values
  int16_t *cg, *tanh_c; // (H) each: one sample's cell on Q3.12, and its tanh
  int16_t* c;           // (kRows, H): the cell states
  int16_t* gemm;        // the GEMM's own scratch
};

int64_t round64(int64_t bytes) { return (bytes + 63) / 64 * 64; }

Scratch carve(uint8_t* scratch, int64_t IN, int64_t H) {
  const int64_t G = 4 * H;
  auto* p = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) / 64 * 64);
  Scratch s;
  s.ux = p, p += round64(kInputRows * IN);
  s.uh = p, p += round64(kRows * H);
  s.hq = reinterpret_cast<int8_t*>(p), p += round64(kGemvRows * (H + 3));
  s.acc = reinterpret_cast<int32_t*>(p), p += round64(4 * kInputRows * G);
  s.gx = reinterpret_cast<int16_t*>(p), p += round64(2 * kInputRows * G);
  s.a = reinterpret_cast<int16_t*>(p), p += round64(2 * G);
  s.act = reinterpret_cast<int16_t*>(p), p += round64(2 * G);
  s.cg = reinterpret_cast<int16_t*>(p), p += round64(2 * H);
  s.tanh_c = reinterpret_cast<int16_t*>(p), p += round64(2 * H);
  s.c = reinterpret_cast<int16_t*>(p), p += round64(2 * kRows * H);
  s.gemm = reinterpret_cast<int16_t*>(p);
  return s;
}

int64_t carved_bytes(int64_t IN, int64_t H) {
  const int64_t G = 4 * H;
  return 64 + round64(kInputRows * IN) + round64(kRows * H) + round64(kGemvRows * (H + 3)) + round64(4 * kInputRows * G) +
         round64(2 * kInputRows * G) + 2 * round64(2 * G) + 2 * round64(2 * H) + round64(2 * kRows * H);
}

// The GEMM path for a graph kernel path: AVX2 where the CPU has it (the dynamic GEMM has no VNNI kernel),
// else the portable one.
KernelPath gemm_path(KernelPath path) {
  if (path == KernelPath::Portable || !dynamic_gemm_path_supported(KernelPath::Avx2)) return KernelPath::Portable;
  return KernelPath::Avx2;
}

}  // namespace

LstmRowStage::LstmRowStage(const std::vector<int32_t>& m, const std::vector<int>& shift) : multiplier(m) {
  for (int sh : shift) {
    left.push_back(requantize_left_shift(sh));
    total.push_back(requantize_total_shift(sh));
  }
}

PackedLstmInt8::PackedLstmInt8(const LstmInt8Params& params) : params_(params) {
  params_.validate();
  const int64_t IN = params_.input_size, H = params_.hidden_size, G = 4 * H;
  w_ih_ = PackedDynamicWeights(params_.weight_ih.data(), G, IN);
  w_hh_ = PackedDynamicWeights(params_.weight_hh.data(), G, H);
  // W_hh for the GEMV: int8 panels of 16 gate rows and quads of k, (P, KQ, 16, 4), zero-padded in G and H.
  hh_quads_ = (H + 3) / 4;
  const int64_t panels = (G + 15) / 16;
  w_hh_quads_.assign(panels * hh_quads_ * 64, 0);
  gemv_ok_ = true;
  for (int64_t r = 0; r < G; ++r)
    for (int64_t k = 0; k < H; ++k) {
      const int8_t w = params_.weight_hh[r * H + k];
      w_hh_quads_[((r / 16) * hh_quads_ + k / 4) * 64 + (r % 16) * 4 + k % 4] = w;
      gemv_ok_ = gemv_ok_ && w != INT8_MIN;
    }
  bias_hq_.resize(G);
  input_stage_ = LstmRowStage(params_.input_multiplier, params_.input_shift);
  recurrent_stage_ = LstmRowStage(params_.recurrent_multiplier, params_.recurrent_shift);
  bias_x_.resize(G);
  bias_h_.resize(G);
  for (int64_t r = 0; r < G; ++r) {
    // The GEMM multiplies u = code + 128: sum (x + offset) w = sum u w + (offset - 128) sum w.
    bias_x_[r] = static_cast<int32_t>(params_.bias[r] + int64_t{params_.input_offset - 128} * w_ih_.row_sums()[r]);
    bias_h_[r] = static_cast<int32_t>(int64_t{params_.hidden_offset - 128} * w_hh_.row_sums()[r]);
    // The GEMV multiplies the signed codes: sum (h + offset) w = sum h w + offset sum w.
    bias_hq_[r] = static_cast<int32_t>(int64_t{params_.hidden_offset} * w_hh_.row_sums()[r]);
  }
}

int64_t PackedLstmInt8::scratch_bytes() const {
  return carved_bytes(params_.input_size, params_.hidden_size) +
         2 * std::max(w_ih_.scratch_elems(), w_hh_.scratch_elems());
}

void PackedLstmInt8::run_serial(const int8_t* input, int64_t batch, int64_t steps, int8_t* output, KernelPath path,
                                uint8_t* scratch) const {
  const LstmInt8Params& p = params_;
  const int64_t IN = p.input_size, H = p.hidden_size, G = 4 * H, T = steps;
  const KernelPath gp = gemm_path(path);
  const bool avx2 = QATLAB_LSTM_X86 && gp == KernelPath::Avx2;  // the stages follow the GEMM's path
  const Scratch s = carve(scratch, IN, H);
  std::fill(s.hq, s.hq + kGemvRows * 4 * hh_quads_, int8_t{0});  // the padding columns stay 0
  const int16_t* tnh = lstm_tanh_table() + 32768;
  for (int64_t n0 = 0; n0 < batch; n0 += kRows) {
    const int64_t rows = std::min(kRows, batch - n0);  // samples n0 .. n0 + rows - 1
    // The input side is computed `chunk` steps ahead: gx holds (rows, chunk, G).
    const int64_t chunk = std::max<int64_t>(kInputRows / rows, 1);
    std::fill(s.c, s.c + rows * H, int16_t{0});
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t span = std::min(chunk, T - t0);  // steps t0 .. t0 + span - 1
      for (int64_t b = 0; b < rows; ++b) {
        const int8_t* x = input + ((n0 + b) * T + t0) * IN;  // (span, IN), contiguous
        uint8_t* ux = s.ux + b * span * IN;
        for (int64_t k = 0; k < span * IN; ++k) ux[k] = static_cast<uint8_t>(x[k] + 128);
      }
      w_ih_.run_serial(s.ux, rows * span, s.acc, gp, s.gemm);  // (rows * span, G)
      for (int64_t q = 0; q < rows * span; ++q) {
#if QATLAB_LSTM_X86
        if (avx2) {
          input_gates_avx2(s.acc + q * G, bias_x_.data(), input_stage_, G, s.gx + q * G);
          continue;
        }
#endif
        input_gates_portable(s.acc + q * G, bias_x_.data(), input_stage_, G, s.gx + q * G);
      }
      for (int64_t t = t0; t < t0 + span; ++t) {
        // t = 0: h_{-1} is the zero point and acc_h = 0 exactly, so there is no recurrent GEMM.
        // The recurrent side: the GEMV for one or two samples where it applies, else the GEMM.
        const bool gemv = avx2 && gemv_ok_ && rows <= kGemvRows;
        if (t > 0 && gemv) {  // (rows, G)
#if QATLAB_LSTM_X86
          for (int64_t b = 0; b < rows; ++b)
            std::memcpy(s.hq + b * 4 * hh_quads_, output + ((n0 + b) * T + t - 1) * H, H);
          if (rows == 1)
            recurrent_gemv_avx2<1>(s.hq, 4 * hh_quads_, w_hh_quads_.data(), hh_quads_, G, s.acc);
          else
            recurrent_gemv_avx2<2>(s.hq, 4 * hh_quads_, w_hh_quads_.data(), hh_quads_, G, s.acc);
#endif
        } else if (t > 0) {
          w_hh_.run_serial(s.uh, rows, s.acc, gp, s.gemm);
        }
        const int32_t* bias_h = gemv ? bias_hq_.data() : bias_h_.data();
        for (int64_t b = 0; b < rows; ++b) {
          const int16_t* gx = s.gx + (b * span + t - t0) * G;
          const int32_t* acc_h = t > 0 ? s.acc + b * G : nullptr;
          int16_t* c = s.c + b * H;
          int8_t* h_out = output + ((n0 + b) * T + t) * H;
#if QATLAB_LSTM_X86
          if (avx2) {
            gates_avx2(gx, acc_h, bias_h, recurrent_stage_, G, s.a);
            activations(s.a, H, s.act);
            cell_avx2(s.act, H, p.cell_frac_bits, c, s.cg);
            for (int64_t j = 0; j < H; ++j) s.tanh_c[j] = tnh[s.cg[j]];
            hidden_avx2(s.act + 3 * H, s.tanh_c, H, p, h_out, s.uh + b * H);
            continue;
          }
#endif
          gates_portable(gx, acc_h, bias_h, recurrent_stage_, G, s.a);
          activations(s.a, H, s.act);
          cell_portable(s.act, H, p.cell_frac_bits, c, s.cg);
          for (int64_t j = 0; j < H; ++j) s.tanh_c[j] = tnh[s.cg[j]];
          hidden_portable(s.act + 3 * H, s.tanh_c, H, p, h_out, s.uh + b * H);
        }
      }
    }
  }
}

}  // namespace qatlab
