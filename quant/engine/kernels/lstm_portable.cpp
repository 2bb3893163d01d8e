// lstm_portable.cpp: the integer LSTM's elementwise stages in plain C++ (lstm_stages.h), the form every
// CPU runs and the AVX2 form's tails.
#include "quant/engine/kernels/lstm_stages.h"

namespace qatlab::kernels {

namespace {

void input_gates_portable(const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G, int16_t* out) {
  for (int64_t r = 0; r < G; ++r) out[r] = stage_row(s, r, wrap_add(acc[r], bias[r]));
}

void gates_portable(const int16_t* gx, const int32_t* acc, const int32_t* bias, const LstmRowStage& s, int64_t G,
                    int16_t* a) {
  for (int64_t r = 0; r < G; ++r)
    a[r] = acc ? lstm_gate_sum(gx[r], stage_row(s, r, wrap_add(acc[r], bias[r]))) : gx[r];
}

void cell_portable(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg) {
  lstm_cell_portable(act, H, k, c, cg, 0);
}

}  // namespace

void lstm_cell_portable(const int16_t* act, int64_t H, int k, int16_t* c, int16_t* cg, int64_t j0) {
  for (int64_t j = j0; j < H; ++j) {
    c[j] = saturate_int16(lstm_cell_update(act[H + j], c[j], act[j], act[2 * H + j], k));
    cg[j] = lstm_cell_to_gate_grid(c[j], k);
  }
}

void lstm_hidden_portable(const int16_t* o, const int16_t* tanh_c, int64_t H, const LstmInt8Params& p, int8_t* h,
                          uint8_t* u) {
  for (int64_t j = 0; j < H; ++j) {
    h[j] = requantize(lstm_hidden_product(o[j], tanh_c[j]), p.hidden_multiplier, p.hidden_shift, p.output_offset,
                      p.quantized_activation_min, p.quantized_activation_max);
    u[j] = static_cast<uint8_t>(h[j] + 128);
  }
}

const LstmStages& lstm_stages_portable() {
  static const LstmStages stages{input_gates_portable, gates_portable, cell_portable, lstm_hidden_portable,
                                 /*recurrent_gemv=*/nullptr};
  return stages;
}

}  // namespace qatlab::kernels
