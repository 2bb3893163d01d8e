// lstm_stages.h: the integer LSTM's per-step elementwise stages and its batch-1 recurrent GEMV, by
// backend (internal to quant/): the shared scalar helpers, the portable and AVX2 forms' entry
// points, and LstmStages, the one table PackedLstmInt8::run_serial (int_lstm.cpp) calls them through.
// The formulas are those of int_lstm.h; every form gives the same integers.
//
// Shape letters as in int_lstm.h: H hidden units, G = 4H gate rows, KQ = ceil(H / 4) quads of k.
#pragma once

#include <algorithm>
#include <cstdint>

#include "quant/engine/int_lstm.h"
#include "quant/engine/requantize.h"

namespace qatlab::kernels {

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

// The stages of one backend; PackedLstmInt8 picks one per call (lstm_stages_portable(), or
// lstm_stages_avx2() where the dynamic GEMM runs AVX2).
struct LstmStages {
  // Input halves of the gates: out[r] = sat16(MBQM(acc[r] + bias[r], stage row r)), r < G.
  void (*input_gates)(const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G, int16_t* out);
  // The gate pre-activations: a[r] = sat16(gx[r] + sat16(MBQM(acc[r] + bias[r], stage row r))); acc null
  // means acc_h = 0 exactly (t = 0: h_{-1} is the zero point), whose requantized value is 0.
  void (*gates)(const int16_t* gx, const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G,
                int16_t* a);
  // c (H) updated in place from the activations act (G: i, f, g, o); cg (H) = c on the gate grid.
  void (*cell)(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg);
  // h (H) = requantize(o * tanh_c), and u (H) = h + 128 for the next step's GEMM.
  void (*hidden)(const int16_t* o, const int16_t* tanh_c, int64_t H, const LstmInt8Params& p, int8_t* h, uint8_t* u);
  // The recurrent matmul of rows (1 or 2, up to gemv_rows) samples on W_hh as int8 quad panels
  // (P, KQ, 16, 4), h the signed codes (row stride h_stride), or null where the backend has none.
  void (*recurrent_gemv)(int rows, const int8_t* h, int64_t h_stride, const int8_t* panels, int64_t kq_count,
                         int64_t G, int32_t* acc);
};

const LstmStages& lstm_stages_portable();  // lstm_portable.cpp
const LstmStages& lstm_stages_avx2();      // lstm_avx2.cpp, x86 only

// The portable cell and hidden stages from column j0 on: the AVX2 forms leave their tails to them.
void lstm_cell_portable(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg, int64_t j0);
void lstm_hidden_portable(const int16_t* o, const int16_t* tanh_c, int64_t H, const LstmInt8Params& p, int8_t* h,
                          uint8_t* u);

}  // namespace qatlab::kernels
