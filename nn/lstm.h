// lstm.h: the LSTM layer (PyTorch semantics and parameter names), each layer one fused autograd op
// with a hand-written backward through time.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, L layers. Gates are stacked
// in the order i, f, g, o (see lstm_cell.h for the step arithmetic). A sequence tensor is (N, T, F)
// when batch_first, else (T, N, F).
#pragma once

#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "nn/module.h"

namespace qatlab {

// The result of one layer over a whole sequence.
struct LstmLayerOutput {
  Tensor output;  // (N, T, H) if batch_first else (T, N, H): h_t at every step
  Tensor c_last;  // (N, H): the cell state after the last step
};

// One LSTM layer over a whole sequence, as one autograd op.
//   x (N, T, IN) if batch_first else (T, N, IN); h0, c0 (N, H) or undefined for zeros;
//   w_ih (4H, IN), w_hh (4H, H); b_ih, b_hh (4H) or undefined (both or neither).
// The forward does the input projections of all steps in one GEMM, then per step a GEMM with W_hh and
// the cell update; the backward runs t = T-1..0 and finishes with one GEMM each for dx, dW_ih, dW_hh.
// The last step's h is output's last step (slice it); c_last has its own gradient path.
LstmLayerOutput lstm_layer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                           const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh, bool batch_first);

struct LstmOptions {
  int64_t input_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 1;   // >= 1; layer l > 0 reads layer l-1's output sequence
  bool batch_first = true;  // (N, T, F) sequences; false for (T, N, F)
  bool bias = true;
};

struct LstmOutput {
  Tensor output;    // (N, T, H) if batch_first else (T, N, H): the last layer's h at every step
  Tensor h_n, c_n;  // (L, N, H): each layer's state after the last step
};

class LSTM : public Module {
 public:
  // Parameters are drawn from U(-1/sqrt(H), 1/sqrt(H)) in PyTorch's order (per layer: weight_ih,
  // weight_hh, bias_ih, bias_hh).
  LSTM(const LstmOptions& options, Rng& rng);

  // h0, c0: (L, N, H), or undefined for a zero initial state.
  LstmOutput forward_seq(const Tensor& x, const Tensor& h0 = {}, const Tensor& c0 = {});
  Tensor forward(const Tensor& x) override { return forward_seq(x).output; }
  std::string describe() const override;

  const LstmOptions options;
  // Per layer l, registered as weight_ih_l{l} (4H, IN or H), weight_hh_l{l} (4H, H), bias_ih_l{l} (4H),
  // bias_hh_l{l} (4H); the biases are undefined when options.bias is false. Sized once in the
  // constructor (the registry holds pointers to the elements).
  std::vector<Tensor> weight_ih, weight_hh, bias_ih, bias_hh;
};

}  // namespace qatlab
