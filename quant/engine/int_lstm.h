// int_lstm.h: the integer LSTM layer: int8 matmuls with int32 accumulators, int16 gates and cell state,
// integer sigmoid / tanh tables, and the sequence kernels (a plain reference and an optimized one).
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate rows in PyTorch's
// order i, f, g, o. Sequences are batch-first: (N, T, IN) codes in, (N, T, H) codes out.
//
// The arithmetic of one step (quant/README.md, "The integer LSTM", has every formula and rounding):
//   acc_x[r] = bias[r] + sum_k (x_t[k] + input_offset) * weight_ih[r, k]                  (int32)
//   acc_h[r] =           sum_k (h_{t-1}[k] + hidden_offset) * weight_hh[r, k]             (int32)
//   a[r]     = sat16(sat16(MBQM(acc_x, input_multiplier[r], input_shift[r]))
//                  + sat16(MBQM(acc_h, recurrent_multiplier[r], recurrent_shift[r])))    (int16, Q3.12)
//   i, f, o  = sigmoid_table(a), g = tanh_table(a)                                        (int16, Q0.15)
//   c_t      = sat16(rdiv(f * c_{t-1}, 15) + rdiv(i * g, 30 - k))                           (int16, scale 2^-k)
//   h_t      = requantize(o * tanh_table(c_t on Q3.12), hidden_multiplier, hidden_shift, output_offset,
//                         quantized_activation_min, quantized_activation_max)             (int8)
// with MBQM = multiply_by_quantized_multiplier and rdiv = rounding_divide_by_pot (quant/engine/requantize.h),
// h_{-1} = the hidden zero point (real 0) and c_{-1} = 0.
//
// The QAT LSTM (quant/qat/qat_lstm.h) calls the same per-element functions below in its simulation, so every
// step after the two matmuls is the same integer arithmetic in training and at inference.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/dynamic_gemm.h"
#include "quant/engine/qscheme.h"
#include "quant/engine/requantize.h"

namespace qatlab {

// Gate pre-activations: int16 with scale 2^-12 (Q3.12, reals in [-8, 8)).
inline constexpr int kLstmGateFracBits = 12;
// Sigmoid and tanh outputs: int16 with scale 2^-15 (Q0.15; sigmoid in [0, 32767], tanh in [-32767, 32767]).
inline constexpr int kLstmActFracBits = 15;
// The cell state's scale is 2^-k with k (cell_frac_bits) in [0, kLstmMaxCellFracBits].
inline constexpr int kLstmMaxCellFracBits = 15;

// ------------------------------------------------------------------------------- sigmoid and tanh
//
// Tables of 65536 int16 entries, indexed by the Q3.12 code + 32768. Built once (on first use) from the
// formula in double precision:
//   sigmoid: clamp(round(32768 / (1 + exp(-q / 4096))), 0, 32767)
//   tanh:    clamp(round(32768 * tanh(q / 4096)), -32767, 32767)
// round() is half away from zero. They are constants, not state: written once before any reader
// sees them (a function-local static), never after, so the functions below are pure functions of the code.
const int16_t* lstm_sigmoid_table();
const int16_t* lstm_tanh_table();

inline int16_t lstm_sigmoid(int16_t a) { return lstm_sigmoid_table()[static_cast<int32_t>(a) + 32768]; }
inline int16_t lstm_tanh(int16_t a) { return lstm_tanh_table()[static_cast<int32_t>(a) + 32768]; }

// ------------------------------------------------------------------------ per-element arithmetic

inline int16_t saturate_int16(int32_t v) {
  return static_cast<int16_t>(std::clamp<int32_t>(v, INT16_MIN, INT16_MAX));
}

// An int32 accumulator onto the gate grid: sat16(MBQM(acc, multiplier, shift)).
inline int16_t lstm_gate_from_accumulator(int32_t acc, int32_t multiplier, int shift) {
  return saturate_int16(multiply_by_quantized_multiplier(acc, multiplier, shift));
}

// The input and recurrent halves of a gate pre-activation, both on Q3.12: a saturating int16 add.
inline int16_t lstm_gate_sum(int16_t from_input, int16_t from_hidden) {
  return saturate_int16(static_cast<int32_t>(from_input) + from_hidden);
}

// c_t before saturation, on the cell grid 2^-k: f (Q0.15) * c_{t-1} (2^-k) is on 2^-(15+k), shifted
// right by 15; i * g (Q0.15 * Q0.15 = Q0.30) shifted right by 30 - k. Each product is rounded on its own
// (ties away from zero); both fit int32 (|f * c| < 2^30, |i * g| < 2^30), and so does their sum.
inline int32_t lstm_cell_update(int16_t f, int16_t c_prev, int16_t i, int16_t g, int cell_frac_bits) {
  return rounding_divide_by_pot(static_cast<int32_t>(f) * c_prev, kLstmActFracBits) +
         rounding_divide_by_pot(static_cast<int32_t>(i) * g, 2 * kLstmActFracBits - cell_frac_bits);
}

// The cell code (scale 2^-k) as a tanh input (Q3.12): a left shift by 12 - k, saturating (|c| >= 8 is
// where tanh is 1 to within its output step), or a rounding right shift by k - 12.
inline int16_t lstm_cell_to_gate_grid(int16_t c, int cell_frac_bits) {
  if (cell_frac_bits <= kLstmGateFracBits)
    return saturate_int16(static_cast<int32_t>(c) * (int32_t{1} << (kLstmGateFracBits - cell_frac_bits)));
  return static_cast<int16_t>(rounding_divide_by_pot(c, cell_frac_bits - kLstmGateFracBits));
}

// o * tanh(c_t): Q0.15 * Q0.15 = Q0.30 in int32 (|.| < 2^30): the real hidden value times 2^30.
inline int32_t lstm_hidden_product(int16_t o, int16_t tanh_c) { return static_cast<int32_t>(o) * tanh_c; }

// The cell scale exponent for an observed range: the largest k <= 15 with max|c| < 2^(15 - k), so the int16
// codes cover the range; 15 for an empty or zero range, 0 at the least (|c| up to 32768).
int lstm_cell_frac_bits(float cell_absmax);

// --------------------------------------------------------------------------------------- a layer

// Feeds the step formula at the top of the file. Every vector has G = 4H entries per gate row, in the
// order i, f, g, o; weights are row-major.
struct LstmInt8Params {
  int64_t input_size = 0, hidden_size = 0;  // IN, H
  int32_t input_offset = 0;   // = -input zero point (x codes)
  int32_t hidden_offset = 0;  // = -hidden zero point (h_{t-1} codes read back)
  int32_t output_offset = 0;  // = hidden zero point (h_t codes written)
  int32_t quantized_activation_min = -128, quantized_activation_max = 127;  // h codes
  std::vector<int8_t> weight_ih;                // (G, IN), symmetric per gate row (zero point 0)
  std::vector<int8_t> weight_hh;                // (G, H), symmetric per gate row
  std::vector<int32_t> bias;                    // (G): b_ih + b_hh on the grid s_x * s_wih[r]
  std::vector<int32_t> input_multiplier;        // (G): s_x * s_wih[r] / 2^-12
  std::vector<int> input_shift;                 // (G)
  std::vector<int32_t> recurrent_multiplier;    // (G): s_h * s_whh[r] / 2^-12
  std::vector<int> recurrent_shift;             // (G)
  int cell_frac_bits = 12;                      // k: the cell state's scale is 2^-k
  int32_t hidden_multiplier = 0;                // 2^-30 / s_h: Q0.30 -> the hidden grid
  int hidden_shift = 0;
  // The grids the integers came from (for printing and inspection; the kernels read only the integers).
  QParams input, weights_ih, weights_hh, hidden;

  // Checks sizes and ranges; throws std::invalid_argument naming the field and what was expected.
  void validate() const;
};

// Checks the params against in_shape (N, T, IN) and returns the output shape (N, T, H).
Shape lstm_int8_output_shape(const LstmInt8Params& params, const Shape& in_shape);

// input (N, T, IN) codes -> output (N, T, H) codes, from a zero state. Plain loops over samples, steps,
// gate rows and the sums, as written at the top of the file. Samples are spread over OpenMP threads.
void lstm_int8_reference(const LstmInt8Params& params, const int8_t* input, const Shape& in_shape, int8_t* output);

// A (multiplier, shift) per gate row split into the parts of multiply_by_quantized_multiplier, for the
// optimized kernel's branch-free requantization loop: left = max(shift, 0), total = 31 + max(-shift, 0)
// (the right shift of the 64-bit product).
struct LstmRowStage {
  std::vector<int32_t> multiplier, left, total;  // (G) each
  LstmRowStage() = default;
  LstmRowStage(const std::vector<int32_t>& multiplier, const std::vector<int>& shift);
};

// The same layer with its weights packed once for a faster run. Up to 16 samples go through the steps
// together. The input side of several steps (up to 64 rows of samples x steps) is one GEMM on the packed
// u8 x s8 -> int32 kernel of dynamic_gemm.h, put on the gate grid at once; per step, the recurrent side is a
// GEMM of the group's rows on the same kernel, or, for one or two samples, a GEMV on W_hh kept as int8
// panels (u8 x s8 byte products, exact since no W_hh code is -128; layers that have one take the GEMM).
// The codes enter the GEMMs as u = code + 128 and the GEMV as they are; the zero-point terms are folded,
// once, into per-row biases:
//   acc_x[r] = (bias[r] + (input_offset - 128) * sum_k w_ih[r, k]) + sum_k u_x[k] * w_ih[r, k]
//   acc_h[r] = ((hidden_offset - 128) * sum_k w_hh[r, k])          + sum_k u_h[k] * w_hh[r, k]   (GEMM)
//   acc_h[r] = (hidden_offset * sum_k w_hh[r, k])                  + sum_k h[k] * w_hh[r, k]     (GEMV)
// The sums are exact (below 2^31 for IN, H <= 65536) and the folded bias is added modulo 2^32 as the
// reference's int32 sum wraps. The rest of a step runs in four stages over a sample's rows (gate
// requantization and sum, sigmoid / tanh lookups, cell update, hidden output), the integer ones in AVX2
// (8 int32 lanes: the same integers as multiply_by_quantized_multiplier and rounding_divide_by_pot) or in
// portable C++. So the output equals lstm_int8_reference bit for bit, on every path.
class PackedLstmInt8 {
 public:
  explicit PackedLstmInt8(const LstmInt8Params& params);

  // input (batch, T, IN) -> output (batch, T, H), on the calling thread, with `scratch` (scratch_bytes()
  // bytes, any alignment and contents). path: Portable runs the portable GEMM and stages, the SIMD paths
  // the AVX2 ones when the CPU has AVX2 (the portable ones otherwise); Reference is lstm_int8_reference's
  // business. Nothing is allocated here.
  void run_serial(const int8_t* input, int64_t batch, int64_t steps, int8_t* output, KernelPath path,
                  uint8_t* scratch) const;
  int64_t scratch_bytes() const;
  const LstmInt8Params& params() const { return params_; }

 private:
  LstmInt8Params params_;
  PackedDynamicWeights w_ih_, w_hh_;          // (G, IN), (G, H) packed for the GEMMs
  int64_t hh_quads_ = 0;                      // KQ = ceil(H / 4): the GEMV reads w_hh_.panels()
  bool gemv_ok_ = false;                      // no W_hh code is -128 (the GEMV needs that)
  std::vector<int32_t> bias_x_, bias_h_;      // (G) folded biases of the GEMMs (codes + 128)
  std::vector<int32_t> bias_hq_;              // (G) folded bias of the GEMV (signed codes)
  LstmRowStage input_stage_, recurrent_stage_;
};

}  // namespace qatlab
