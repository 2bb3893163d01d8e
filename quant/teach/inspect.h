// inspect.h: what quantization does to each layer of a QAT model, as data for teaching: the grids, the
// integer multipliers convert derives from them, weight and activation ranges, and the signal-to-
// quantization-noise ratio of every layer's output against the same model computing in float. Also the
// model as a Graphviz graph with its fake-quant nodes, histogram data with the grid over it, and a
// description of an integer model file.
//
// Shape letters: N batch, C channels, OC output channels.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_graph.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/qat_layers.h"

namespace qatlab {

// min / median / max of a list of per-channel values (one value: all three equal it).
struct ValueSpread {
  double min = 0, median = 0, max = 0;
  int64_t count = 0;
};
ValueSpread value_spread(std::vector<double> values);

// One quantizer as a student wants to see it.
struct GridReport {
  std::string quantizer;   // the module path, "body.0.weight_quant"
  std::string method;      // "minmax observer", "ema(c=0.01) observer", "lsq", "lsq+", "pact"
  std::string scheme;      // "per-channel symmetric", "per-tensor affine" (+ ", unsigned" / ", narrow")
  int bits = 8;
  QParams qparams;
  ValueSpread scale;       // over channels (count 1 per tensor)
  ValueSpread zero_point;  // likewise
  // The representable range S * (qmin - Z) .. S * (qmax - Z), widest over the channels.
  double grid_min = 0, grid_max = 0;
};

// One row of the report: the model input quantizer, a QAT conv / linear layer, a residual sum, or a
// layer's input requantized (a residual stream read at fewer bits: "NAME.input_requant").
struct LayerReport {
  enum class Kind { Input, Conv, Linear, Add, Requantize };
  Kind kind = Kind::Conv;
  std::string name;         // the module path, as convert names its op ("body.0", "body.3" for an add)
  std::string description;  // "conv (6, 1, 5, 5) + bn + relu", "add + relu", "input"

  bool has_weights = false;  // conv / linear
  GridReport weights;        // when has_weights
  GridReport output;         // the grid of the row's output activation
  // From lower_layer (conv / linear: one per output channel), make_add_params (add: the sum's rescale,
  // one entry) or lower_requantize (one entry), exactly the integers `qatlab convert` emits. Empty for
  // the input row.
  std::vector<int32_t> output_multiplier;
  std::vector<int> output_shift;
  std::string lowering_error;  // non-empty when the layer has no integer form (the reason)

  float weight_min = 0, weight_max = 0;  // the folded float weights (what the weight quantizer sees)
  // Dead output channels: every weight code 0, or the weight step at its floor (DescribedNode, walk.h).
  std::vector<int64_t> zeroed_channels, floor_channels;
  // Mid-rise weight grids: the channels whose every code is +-1 (their weights' signs alone; walk.h).
  std::vector<int64_t> sign_only_channels;
  bool weight_mid_rise = false;
  int64_t out_channels = 0;  // conv / linear: the weight's first dimension

  // Over the inspected batches, the float model's output (every quantizer passing values through):
  double act_min = 0, act_max = 0;
  double clipped_fraction = 0;  // share of those values outside [output.grid_min, output.grid_max]
  // sum y_float^2 and sum (y_qat - y_float)^2 over every output element of every batch.
  double signal = 0, noise = 0;
  int64_t elements = 0;
  // 10 log10(signal / noise). +inf when the QAT output equals the float one exactly (noise 0), NaN when
  // there was nothing to measure (no batches, or signal and noise both 0).
  double sqnr_db = 0;
};

struct ModelReport {
  std::vector<LayerReport> layers;  // execution order: input quantizer first
  int64_t images = 0;               // inspected
};

// The report of `model` over `batches` (each (N, C, H, W), as the model takes them). Runs the model in
// evaluation mode twice per batch: as it is, then with every quantizer passing values through (fake-quant
// switched off, learned quantizers bypassed), and compares the outputs row by row. The model is left as
// it was (mode, fake-quant switches, quantizers). With no batches the static columns are still filled
// and SQNR is NaN. Throws std::invalid_argument for a batch with NaN, std::logic_error if a quantizer has
// no grid yet (a model that never saw data).
ModelReport inspect_model(const std::shared_ptr<QatModel>& model, const std::vector<Tensor>& batches);

// Each layer's SQNR after post-training quantization at several bit widths. For each entry of `bits`, a
// fresh float model from `make_float` is prepared at W = A = bits (weights symmetric per channel,
// activations affine per tensor, min/max observers), its observers are calibrated on `calib` as `qatlab
// ptq` does (BN on running statistics, fake-quant off, no gradients), and inspect_model measures it on
// `batches`. Throws like inspect_model, and std::invalid_argument for a bit width outside 2..8.
struct SqnrByBits {
  std::vector<int> bits;
  std::vector<std::string> layers;           // inspect's rows, in execution order
  std::vector<std::vector<double>> sqnr_db;  // [layer][index into bits]; +inf: exact, NaN: nothing measured
};
SqnrByBits ptq_sqnr_by_bits(const std::function<ModulePtr()>& make_float, const std::vector<int>& bits,
                            const std::vector<Tensor>& calib, const std::vector<Tensor>& batches);

// The table as text: a row per layer, a column per bit width.
std::string format_sqnr_by_bits(const SqnrByBits& s);

// The report as text: three aligned tables (quantizers; grids and integers; ranges and SQNR).
std::string format_report(const ModelReport& report);

// Runs `model` exactly as its forward does (exact mode off), module by module in convert's order, handing
// each row's output (see LayerReport) to `seen` with the row's name. Returns the model's output.
using OutputVisitor = std::function<void(const std::string& name, const Tensor& output)>;
Tensor forward_recording(QatModel& model, const Tensor& x, const OutputVisitor& seen);

// The names of the rows of `model` in execution order ("input_quant", "body.0", ...): what --hist takes.
std::vector<std::string> inspectable_layers(const QatModel& model);

// Graphviz (dot) text: one box per module in execution order (Identity and Dropout, which do nothing
// at inference, are left out), and one ellipse per quantizer labelled with its bits and scale: weight
// quantizers blue, activation quantizers orange. Quantizer nodes carry class="fake_quant".
std::string model_to_dot(const QatModel& model);

// A histogram with the quantization grid of one channel or tensor, ready to plot.
struct GridHistogram {
  std::string title;            // names the layer, what is counted, the channel and the bits
  std::string x_label;
  std::vector<double> edges;    // (bins + 1)
  std::vector<double> counts;   // (bins)
  std::vector<double> levels;   // the real values of every code: S * (q - Z), q = qmin .. qmax
  double clip_min = 0, clip_max = 0;  // the representable range
  int64_t channel = -1;         // the weight channel shown (-1: per-tensor grid)
};

// The folded weights of conv / linear row `layer` (what its weight quantizer rounds). Per-channel grids
// show one output channel: `channel`, or the one with the largest scale when channel < 0. Throws
// std::invalid_argument naming the valid rows for an unknown layer, for a row without weights, or for a
// channel out of range.
GridHistogram weight_histogram(const QatModel& model, const std::string& layer, int64_t channel, int bins = 100);

// The float model's output values of row `layer` over `batches` (what its output quantizer has to
// represent), with that row's output grid. Throws like weight_histogram.
GridHistogram activation_histogram(const std::shared_ptr<QatModel>& model, const std::string& layer,
                                   const std::vector<Tensor>& batches, int bins = 100);

// An integer model file's ops as a text table: index, kind, module name, output shape for one image,
// weight and activation bits, scales and zero points, output_multiplier / output_shift (ranges over
// channels).
std::string describe_int8_graph(const Int8Graph& graph);

// Graphviz (dot) text of an integer model: one box per op (class="op": kind, module name, window or
// clamp, weight bits and scales, output_multiplier / output_shift) and one ellipse per slot it writes
// (class="slot": slot number, shape for one image, bits, scale and zero point), edges slot -> op -> slot.
std::string int8_graph_to_dot(const Int8Graph& graph);

// The bits a code range [qmin, qmax] needs: ceil(log2(qmax - qmin + 1)).
int grid_bits(const QParams& qp);

}  // namespace qatlab
