// qat_layers.h: the modules a quantization-aware model is made of: Conv2d / Linear with an optional
// BatchNorm folded in and a fused ReLU/ReLU6, simulating the integer layer they will become; the model
// input quantizer; average pooling that stays on its input's grid. Each is a QatNode (qat_node.h): it
// lowers and describes itself for convert and inspect (qat_layers.cpp, with the rules prepare_qat builds
// them by).
//
// Shape letters: N batch, C input channels, OC output channels (or output features), H, W.
#pragma once

#include <memory>
#include <string>

#include "core/ops.h"
#include "nn/module.h"
#include "nn/running_stats.h"
#include "quant/engine/int8_gemm.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/qat_node.h"

namespace qatlab {

class Conv2d;
class Linear;
class BatchNorm;

enum class FusedActivation { None, ReLU, ReLU6 };
const char* activation_name(FusedActivation a);

// Conv2d or Linear (+ BatchNorm) (+ ReLU/ReLU6) under quantization-aware training.
//
// Children: "weight_quant" (quantizes the folded weight, per output channel) and "output_quant" (the
// activation after the fused ReLU). Parameters: "weight", "bias" (if the layer had one), and with BN
// "bn_weight", "bn_bias" (gamma, beta); buffers "bn_running_mean", "bn_running_var".
//
// Batch-norm folding, with sf = gamma / sqrt(running_var + eps) per output channel:
//   deployed:  y = conv(x, Q(W * sf)) + (beta + (b - running_mean) * sf)
//   training (BN not frozen): y = BN_batch(conv(x, Q(W * sf)) / sf + b): the weights that are quantized
//     are the folded ones that will be deployed; dividing by sf and re-normalising with the batch
//     statistics equals the correction y = conv(x, Q(W sf)) * sigma/sigma_B + (beta - gamma mu_B / sigma_B)
//     of Krishnamoorthi (2018, fig. 8) / Jacob et al. (2018), with the batch statistics taken on the
//     quantized-weight convolution (as PyTorch's QAT ConvBn does), and updates the running statistics.
//   frozen (after --freeze-bn-after) and evaluation: the deployed form, running statistics fixed.
// Wherever the deployed form is computed, the bias is rounded to its int32 grid S_in * S_w as convert
// will round it (straight-through gradient).
//
// Exact mode (evaluation only): instead of float arithmetic on fake-quantized values, the layer runs the
// integer arithmetic of the converted graph on the codes (int8 x int8 -> int32 accumulator, int32 bias,
// fixed-point requantization), so its output codes equal the integer engine's bit for bit.
class QatLayer : public QatNode, public RunningStatistics {
 public:
  static std::shared_ptr<QatLayer> from_conv(const Conv2d& conv, const BatchNorm* bn, FusedActivation act,
                                             std::shared_ptr<Quantizer> weight_quant,
                                             std::shared_ptr<Quantizer> output_quant);
  static std::shared_ptr<QatLayer> from_linear(const Linear& linear, const BatchNorm* bn, FusedActivation act,
                                               std::shared_ptr<Quantizer> weight_quant,
                                               std::shared_ptr<Quantizer> output_quant);

  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  // One conv / fully connected op (lower_layer), one row with its weight and output quantizers.
  void lower(Lowering& walk, const std::string& name) const override;
  void describe_node(Description& walk, const std::string& name) const override;
  Tensor record(Recording& walk, const std::string& name, const Tensor& x) override;
  // (input_requant_ is a child, but also held here: code swapping it in the tree swaps this handle too.)
  std::vector<std::shared_ptr<Quantizer>*> grid_links() override { return {&input_quant, &input_requant_}; }

  bool is_conv() const { return is_conv_; }
  bool has_bn() const { return has_bn_; }
  FusedActivation activation() const { return activation_; }
  const Conv2dParams& conv_params() const { return conv_params_; }
  int64_t out_channels() const { return weight.size(0); }

  Quantizer& weight_quant() const;
  Quantizer& output_quant() const;
  // The quantizer whose grid this layer's input lies on (set by prepare_qat; not a child).
  std::shared_ptr<Quantizer> input_quant;
  // The quantizer the layer puts its input on before reading it, or null (child "input_requant"):
  // prepare_qat gives one to a layer that reads a residual sum kept at more bits than the layer's own
  // activation bits (kResidualSums, qconfig.h). The simulation takes the integer Requantize op's values
  // (lower_requantize) with this quantizer's gradient; convert emits that op before the layer's.
  Quantizer* input_requant() const;
  void set_input_requant(std::shared_ptr<Quantizer> q);
  // The quantizer whose grid the layer's arithmetic reads: input_requant's, or else input_quant's.
  const Quantizer* read_quant() const;

  void freeze_bn(bool on) { bn_frozen_ = on; }
  bool bn_frozen() const { return bn_frozen_; }
  // Batch norm's running statistics (RunningStatistics): updated in training while not frozen.
  bool updates_running_statistics() const override { return has_bn_ && !bn_frozen_; }
  void reset_running_statistics() override;
  float running_statistics_momentum() const override { return bn_momentum; }
  void set_running_statistics_momentum(float m) override { bn_momentum = m; }
  // Training with BN: when the output quantizer can take the output's range instead of its values (a
  // per-tensor FakeQuantize with a min/max or EMA observer), BN, the ReLU and the output's fake
  // quantization run as one op (batch_norm_scaled_quantized), bit for bit the values and gradients of
  // the three in turn. A per-tensor LSQ output quantizer goes into the same op with its backward
  // (batch_norm_scaled_lsq), and a residual add's LSQ quantizer into the add's (add_lsq). On by default,
  // for every layer; tests switch it off to compare.
  static void set_output_fusion(bool on);
  static bool output_fusion();
  // Exact mode, on the kernels of `path` (the reference loops by default; the optimized kernels compute
  // the same integers, held to the reference bit for bit by the kernel tests, much faster).
  void set_exact(bool on, KernelPath path = KernelPath::Reference) override { exact_ = on, exact_path_ = path; }
  bool exact() const { return exact_; }

  // The weight and bias the integer layer is built from, in float, without autograd history:
  // W * sf and beta + (b - running_mean) * sf with BN; W and b (or zeros) without.
  Tensor folded_weight() const;  // (OC, C/groups, KH, KW) or (OC, IN)
  Tensor folded_bias() const;    // (OC)

  Tensor weight, bias;                            // the float layer's (bias may be undefined)
  Tensor bn_gamma, bn_beta, bn_mean, bn_var;      // (OC) with BN
  float bn_eps = 1e-5f, bn_momentum = 0.1f;

 private:
  QatLayer(const std::string& type, bool is_conv);
  void attach(const BatchNorm* bn, FusedActivation act, std::shared_ptr<Quantizer> wq, std::shared_ptr<Quantizer> oq);
  Tensor linear_op(const Tensor& x, const Tensor& w, const Tensor& b) const;
  Tensor per_channel_view(const Tensor& v, bool for_output) const;  // (OC) -> broadcastable shape
  Tensor forward_exact(const Tensor& x);
  // x put on the grid the layer reads (requantized when it has an input_requant), and the layer on it.
  Tensor read_input(const Tensor& x);
  Tensor forward_read(const Tensor& x);
  Tensor deployed_bias(const Tensor& b) const;  // b rounded to the accumulator grid (see lower.h)
  // linear_op in the deployed form: in evaluation, computed on the integer codes (see the .cpp).
  Tensor deployed_linear_op(const Tensor& x, const Tensor& wq, const Tensor& b) const;

  bool is_conv_;
  Conv2dParams conv_params_;
  bool has_bn_ = false, bn_frozen_ = false, exact_ = false;
  KernelPath exact_path_ = KernelPath::Reference;
  FusedActivation activation_ = FusedActivation::None;
  std::shared_ptr<Quantizer> input_requant_;  // the child "input_requant", or null
};

// Average pooling (windowed or global) whose output is put back on its input's grid, as the integer
// kernel does (integer sum, rounded division). In exact mode it runs that integer kernel on the codes.
class QatAvgPool : public QatNode {
 public:
  // kernel == 0 means global average pooling ((N, C, H, W) -> (N, C)).
  QatAvgPool(int64_t kernel, int64_t stride, int64_t padding);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  const int64_t kernel, stride, padding;
  std::shared_ptr<Quantizer> input_quant;  // set by prepare_qat
  void set_exact(bool on, KernelPath path = KernelPath::Reference) override { exact_ = on; }
  // An average pooling op on its input's grid; no row (its output keeps that grid).
  void lower(Lowering& walk, const std::string& name) const override;
  void describe_node(Description& walk, const std::string& name) const override;
  std::vector<std::shared_ptr<Quantizer>*> grid_links() override { return {&input_quant}; }

 private:
  bool exact_ = false;
};

// A residual connection under QAT: act(body(x) + shortcut(x)) followed by "add_quant", the grid of the
// sum. Children: "body", "shortcut" (rewritten like any Sequential), "add_quant". In exact mode the sum
// is the integer add of the converted graph (both inputs rescaled to a common grid, added, requantized).
class QatResidual : public QatNode {
 public:
  QatResidual(ModulePtr body, ModulePtr shortcut, bool relu_after, std::shared_ptr<Quantizer> add_quant);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override { return relu_after ? "add + relu" : "add"; }

  Quantizer& add_quant() const;
  const bool relu_after;
  // The grids of the two summands (set by prepare_qat; not children).
  std::shared_ptr<Quantizer> body_quant, shortcut_quant;
  void set_exact(bool on, KernelPath path = KernelPath::Reference) override { exact_ = on; }
  // Both branches from the block's input, then an add op (lower_add) and its row on the sum's grid.
  void lower(Lowering& walk, const std::string& name) const override;
  void describe_node(Description& walk, const std::string& name) const override;
  Tensor record(Recording& walk, const std::string& name, const Tensor& x) override;
  std::vector<std::shared_ptr<Quantizer>*> grid_links() override { return {&body_quant, &shortcut_quant}; }

 private:
  bool exact_ = false;
};

// The whole QAT model: "input_quant" (where the float input enters the integer domain) then "body" (the
// float model with its layers replaced). Built by prepare_qat.
class QatModel : public QatNode {
 public:
  QatModel(std::shared_ptr<Quantizer> input_quant, ModulePtr body);
  Tensor forward(const Tensor& x) override;
  Quantizer& input_quant() const;
  // The Quantize entry ("input_quant"), the body, the Dequantize exit ("output"); described as the input
  // row, then the body's.
  void lower(Lowering& walk, const std::string& name) const override;
  void describe_node(Description& walk, const std::string& name) const override;
  Tensor record(Recording& walk, const std::string& name, const Tensor& x) override;
  void set_exact(bool on, KernelPath path = KernelPath::Reference) override {}
};

}  // namespace qatlab
