// qat_lstm.h: the LSTM under quantization-aware training (QatLstm), simulating the integer LSTM of
// int_lstm.h, and its lowering to that integer layer.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate rows (i, f, g, o),
// L layers. Sequences are batch-first, (N, T, F).
//
// What is quantized, per layer (quant/README.md, "The integer LSTM", has the formulas):
//   - the input x_t on the grid of whatever produced it (the model input quantizer for layer 0, the previous
//     layer's hidden grid after), as for any QAT layer;
//   - weight_ih and weight_hh, int8 symmetric per gate row ("weight_ih_quant_l{l}", "weight_hh_quant_l{l}");
//     the two biases summed and rounded onto the input side's accumulator grid s_x * s_wih[r];
//   - the two halves of the gate pre-activations, x_t W_ih^T + b and h_{t-1} W_hh^T, each rounded onto the
//     fixed int16 grid 2^-12 and added with saturation;
//   - sigmoid and tanh: the integer tables of int_lstm.h (outputs on the fixed grid 2^-15);
//   - the cell state: int16 on 2^-k, with k chosen from the largest |c| observed in training (buffer
//     "cell_absmax"); the cell update is int_lstm.h's integer arithmetic on the codes;
//   - the hidden state h_t = o * tanh(c_t), quantized by "hidden_quant_l{l}" (an observer or a learned
//     quantizer, like any activation), which also feeds h_t back into the next step. An observer watches
//     the whole sequence (N, T, H) once per training batch, after the last step; the steps quantize on the
//     grid it had before.
// Once the gate pre-activations are codes, the simulation runs the integer step functions themselves, so
// it differs from the integer engine only in the two matmuls (float accumulation, the float scale of the
// requantization), in rounding h_t once in float where the engine uses a 31-bit multiplier, and in the
// bias being rounded in float. Exact mode (evaluation only) runs the integer layer on the codes instead:
// the integer graph's output then matches bit for bit.
//
// Training composes autograd ops per time step: the input projections of all steps in one linear op, then
// per step one fused op (the recurrent matmul, the quantized gates, the cell update; backward through
// nn/lstm_cell.h's lstm_cell_backward on the quantized activations, straight through every rounding and
// saturation) and the hidden quantizer. With quantization switched off (the quantizers' fake-quant
// disabled) the same ops compute the float LSTM exactly, which is what the gradient check tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/lstm.h"
#include "nn/module.h"
#include "quant/engine/int_lstm.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/qat_node.h"

namespace qatlab {

class QatLstm : public QatNode {
 public:
  // Shares the float LSTM's tensors (the QAT LSTM trains them in place). One quantizer per layer for each
  // of weight_ih and weight_hh (per gate row: G channels along axis 0, or per tensor) and the hidden
  // state (per tensor). The LSTM must be batch-first. Throws std::invalid_argument naming what is wrong.
  static std::shared_ptr<QatLstm> from_lstm(const LSTM& lstm, std::vector<std::shared_ptr<Quantizer>> weight_ih_quant,
                                            std::vector<std::shared_ptr<Quantizer>> weight_hh_quant,
                                            std::vector<std::shared_ptr<Quantizer>> hidden_quant);

  // x (N, T, IN) -> every step's h (N, T, H) of the last layer, from a zero state.
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  // One integer LSTM op per layer (lower_lstm_layer), each reading the previous one's codes. inspect does
  // not follow an LSTM's grids: describe_node refuses (Description::refuse).
  void lower(Lowering& walk, const std::string& name) const override;
  void describe_node(Description& walk, const std::string& name) const override;
  void enable_own_observers(bool on) override { enable_cell_observer(on); }
  std::vector<std::shared_ptr<Quantizer>*> grid_links() override { return {&input_quant}; }

  int64_t num_layers() const { return options.num_layers; }
  int64_t input_size() const { return options.input_size; }
  int64_t hidden_size() const { return options.hidden_size; }

  Quantizer& weight_ih_quant(int64_t layer) const;
  Quantizer& weight_hh_quant(int64_t layer) const;
  Quantizer& hidden_quant(int64_t layer) const;
  std::shared_ptr<Quantizer> hidden_quant_ptr(int64_t layer) const;
  // The quantizer whose grid layer 0's input lies on (set by prepare_qat; not a child).
  std::shared_ptr<Quantizer> input_quant;

  // True when every quantizer of the LSTM quantizes; false (the float LSTM, observers still watching)
  // while fake-quant is switched off, e.g. during post-training calibration.
  bool quantizing() const;
  void set_exact(bool on, KernelPath path = KernelPath::Reference) override { exact_ = on; }
  bool exact() const { return exact_; }

  // The cell-state range: in training, while the observer is on, every batch folds the largest |c_t|
  // (before int16 saturation) of each layer into a running maximum. The first quantized training batch
  // runs once in float first to see a range, as an observer sees its first batch before quantizing.
  void enable_cell_observer(bool on);
  bool cell_observer_enabled() const;
  bool has_cell_range() const;
  float cell_absmax(int64_t layer) const;
  // k of the cell grid 2^-k (lstm_cell_frac_bits of the observed range). Throws std::logic_error before
  // any range was observed.
  int cell_frac_bits(int64_t layer) const;

  // b_ih + b_hh of a layer (zeros without biases), in float, without autograd history. (G)
  Tensor combined_bias(int64_t layer) const;

  const LstmOptions options;
  // Per layer, shared with the float LSTM and registered under its names (weight_ih_l{l}, ...).
  std::vector<Tensor> weight_ih, weight_hh, bias_ih, bias_hh;

 private:
  explicit QatLstm(const LstmOptions& options);
  Tensor forward_exact(const Tensor& x);
  // One layer over the sequence x (N, T, IN); folds the largest |c| seen into *cell_absmax.
  // call_quantizers false: raw float weights and no hidden quantizer (the first batch's range pass).
  Tensor run_layer(int64_t layer, const Tensor& x, bool quantize, bool call_quantizers, float* cell_absmax);

  Tensor cell_absmax_;            // (L) buffer "cell_absmax"
  Tensor cell_batches_;           // (1) buffer "cell_batches": training batches observed (0: no range yet)
  Tensor cell_observer_enabled_;  // (1) buffer "cell_observer_enabled": 1 or 0
  bool exact_ = false;
};

// The integer form of layer `layer` of a QAT LSTM whose input lies on the grid `input`:
//   weight codes   q_w = quantize(W, s_w[r], 0) per gate row: the fake-quant's very codes
//   bias           q_b[r] = round_half_even((b_ih + b_hh)[r] / (s_x * s_wih[r])), saturated to int32
//   input          quantize_multiplier(s_x * s_wih[r] * 2^12)   (accumulator -> Q3.12)
//   recurrent      quantize_multiplier(s_h * s_whh[r] * 2^12)
//   hidden         quantize_multiplier(2^-30 / s_h)             (Q0.30 -> the hidden grid)
//   offsets        input_offset = -z_x, hidden_offset = -z_h, output_offset = z_h
//   cell           cell_frac_bits = k of the observed cell range
// Throws std::invalid_argument when a grid does not fit the integer LSTM (weights not signed symmetric
// narrow with at most 8 bits, activations not per-tensor int8), std::logic_error before calibration.
LstmInt8Params lower_lstm_layer(const QatLstm& lstm, int64_t layer, const QParams& input);

}  // namespace qatlab
