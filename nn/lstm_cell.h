// lstm_cell.h: the pointwise arithmetic of one LSTM time step (gate activations, cell update) and its
// gradient, on rows of raw floats. The float layer (lstm.cpp) runs these; a quantized LSTM mirrors them.
//
// Shape letters: R rows of the batch handled together, H hidden size. A gate row holds 4H values in
// PyTorch's order i (input), f (forget), g (candidate), o (output). With the pre-activations
//   a = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh                  (R, 4H), see lstm_layer in lstm.h
// one step is
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g
//   h_t = o * tanh(c_t)
// Rows are independent: a sample's recurrence never reads another sample's row.
#pragma once

#include <cstdint>

#include <Eigen/Core>

namespace qatlab {

namespace lstm_detail {
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;
}  // namespace lstm_detail

// One step forward. gates: R rows of 4H pre-activations, `gate_stride` floats apart; they are replaced
// by the activations (i, f, g, o), which the backward needs. c_prev, c: (R, H) contiguous. h: R rows of
// H, `h_stride` floats apart (h is written straight into the layer's output sequence).
inline void lstm_cell_forward(float* gates, int64_t gate_stride, const float* c_prev, float* c, float* h,
                              int64_t h_stride, int64_t rows, int64_t hidden) {
  using lstm_detail::ArrayMap;
  using lstm_detail::ConstArrayMap;
  const int64_t H = hidden;
  for (int64_t r = 0; r < rows; ++r) {
    float* a = gates + r * gate_stride;  // (4H) for this row
    ArrayMap if_gates(a, 2 * H), g(a + 2 * H, H), o(a + 3 * H, H);
    if_gates = if_gates.logistic();  // i and f are adjacent: one call
    g = g.tanh();
    o = o.logistic();
    ConstArrayMap i(a, H), f(a + H, H), cp(c_prev + r * H, H);
    ArrayMap cr(c + r * H, H);
    cr = f * cp + i * g;
    ArrayMap(h + r * h_stride, H) = o * cr.tanh();
  }
}

// One step backward. act: the activations lstm_cell_forward left (R rows of 4H, `act_stride` apart);
// c_prev, c: the cell states before and after the step, (R, H). dh: the gradient reaching h_t, (R, H)
// (from the output and from step t+1). dc: on entry the gradient reaching c_t from step t+1, on return
// the gradient reaching c_{t-1}, (R, H). dgates: receives the gradient of the pre-activations a,
// R rows of 4H, `dgate_stride` apart (overwritten, not accumulated: each step owns its rows).
inline void lstm_cell_backward(const float* act, int64_t act_stride, const float* c_prev, const float* c,
                               const float* dh, float* dc, float* dgates, int64_t dgate_stride, int64_t rows,
                               int64_t hidden) {
  using lstm_detail::ArrayMap;
  using lstm_detail::ConstArrayMap;
  const int64_t H = hidden;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = act + r * act_stride;
    ConstArrayMap i(a, H), f(a + H, H), g(a + 2 * H, H), o(a + 3 * H, H);
    ConstArrayMap cp(c_prev + r * H, H), cr(c + r * H, H), dhr(dh + r * H, H);
    ArrayMap dcr(dc + r * H, H);
    float* d = dgates + r * dgate_stride;
    // tanh(c_t) is recomputed rather than stored (cheap next to the step's GEMM) and parked in the
    // o slot of dgates until its last use, so no temporary is allocated.
    ArrayMap tc_then_do(d + 3 * H, H);
    tc_then_do = cr.tanh();
    dcr += dhr * o * (1.0f - tc_then_do.square());  // total gradient reaching c_t
    ArrayMap(d, H) = dcr * g * i * (1.0f - i);
    ArrayMap(d + H, H) = dcr * cp * f * (1.0f - f);
    ArrayMap(d + 2 * H, H) = dcr * i * (1.0f - g.square());
    tc_then_do = dhr * tc_then_do * o * (1.0f - o);
    dcr *= f;  // on to c_{t-1}
  }
}

}  // namespace qatlab
