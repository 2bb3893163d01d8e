// int_lstm.cpp: the integer sigmoid / tanh tables and the integer LSTM sequence kernels (reference and
// optimized); see int_lstm.h for the arithmetic.
#include "quant/engine/int_lstm.h"

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "quant/engine/dynamic_gemm.h"
#include "quant/engine/kernels/lstm_stages.h"

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
// and a portable form of the same formulas (quant/engine/kernels/lstm_portable.cpp, lstm_avx2.cpp). Before
// these stages (scalar, per element) took 70 % of a step; the GEMMs now take most of it.
//
// Shape letters as in int_lstm.h; KQ = ceil(H / 4) quads of k, P = ceil(G / 16) panels.

namespace {

// Samples taken through the steps together: the recurrent matmul is a GEMM of this many rows.
constexpr int64_t kRows = 16;
// Rows (samples x steps) of one input-side GEMM.
constexpr int64_t kInputRows = 64;
// Up to this many samples, the recurrent side runs as a GEMV on int8 weights (LstmStages::recurrent_gemv).
constexpr int64_t kGemvRows = 2;

// The sigmoid / tanh lookups: act[r] = table(a[r]), sigmoid for the i, f, o rows, tanh for g.
void activations(const int16_t* a, int64_t H, int16_t* act) {
  const int16_t* sig = lstm_sigmoid_table() + 32768;
  const int16_t* tnh = lstm_tanh_table() + 32768;
  for (int64_t r = 0; r < 2 * H; ++r) act[r] = sig[a[r]];
  for (int64_t r = 2 * H; r < 3 * H; ++r) act[r] = tnh[a[r]];
  for (int64_t r = 3 * H; r < 4 * H; ++r) act[r] = sig[a[r]];
}

// The stages of the GEMM's path (kernels/lstm_stages.h): AVX2, or portable.
const kernels::LstmStages& lstm_stages(KernelPath gemm_path) {
#if defined(__x86_64__) || defined(__i386__)
  if (gemm_path == KernelPath::Avx2) return kernels::lstm_stages_avx2();
#endif
  return kernels::lstm_stages_portable();
}

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
  // The GEMV reads W_hh as the GEMM packed it: int8 panels of 16 gate rows and quads of k, (P, KQ, 16, 4),
  // zero-padded in G and H (w_hh_.panels()).
  hh_quads_ = (H + 3) / 4;
  gemv_ok_ = std::find(params_.weight_hh.begin(), params_.weight_hh.end(), int8_t{INT8_MIN}) == params_.weight_hh.end();
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
  const kernels::LstmStages& st = lstm_stages(gp);  // the stages follow the GEMM's path
  const int8_t* hh_panels = reinterpret_cast<const int8_t*>(w_hh_.panels().data());  // (P, KQ, 16, 4)
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
      for (int64_t q = 0; q < rows * span; ++q)
        st.input_gates(s.acc + q * G, bias_x_.data(), input_stage_, G, s.gx + q * G);
      for (int64_t t = t0; t < t0 + span; ++t) {
        // t = 0: h_{-1} is the zero point and acc_h = 0 exactly, so there is no recurrent GEMM.
        // The recurrent side: the GEMV for one or two samples where it applies, else the GEMM.
        const bool gemv = st.recurrent_gemv && gemv_ok_ && rows <= kGemvRows;
        if (t > 0 && gemv) {  // (rows, G)
          for (int64_t b = 0; b < rows; ++b)
            std::memcpy(s.hq + b * 4 * hh_quads_, output + ((n0 + b) * T + t - 1) * H, H);
          st.recurrent_gemv(static_cast<int>(rows), s.hq, 4 * hh_quads_, hh_panels, hh_quads_, G, s.acc);
        } else if (t > 0) {
          w_hh_.run_serial(s.uh, rows, s.acc, gp, s.gemm);
        }
        const int32_t* bias_h = gemv ? bias_hq_.data() : bias_h_.data();
        for (int64_t b = 0; b < rows; ++b) {
          const int16_t* gx = s.gx + (b * span + t - t0) * G;
          const int32_t* acc_h = t > 0 ? s.acc + b * G : nullptr;
          int16_t* c = s.c + b * H;
          int8_t* h_out = output + ((n0 + b) * T + t) * H;
          st.gates(gx, acc_h, bias_h, recurrent_stage_, G, s.a);
          activations(s.a, H, s.act);
          st.cell(s.act, H, p.cell_frac_bits, c, s.cg);
          for (int64_t j = 0; j < H; ++j) s.tanh_c[j] = tnh[s.cg[j]];
          st.hidden(s.act + 3 * H, s.tanh_c, H, p, h_out, s.uh + b * H);
        }
      }
    }
  }
}

}  // namespace qatlab
