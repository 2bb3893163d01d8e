// walk.h: the one walk over a QAT model, in execution order. The walker owns where the current activation
// is (the slot that holds it and its grid); every QAT module (QatNode, qat_node.h) lowers or describes
// itself from there, and the modules of nn/ that prepare_qat leaves in place (Sequential,
// RowLstmClassifier, max pooling, flatten, ReLU, identity, dropout) have their rules in walk.cpp.
//
// Three walks use it: convert lowers the model with a Lowering, inspect lists its quantized outputs with a
// Description (its report rows and its drawing) and runs it with a Recording.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "quant/engine/int8_graph.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/qat_node.h"

namespace qatlab {

// Where the current activation is: the slot that holds it (slot 0: the float input) and its grid.
struct WalkPoint {
  int slot = 0;
  QParams grid;
};

// How a module of nn/ that stays in a QAT model takes part in each walk (the rules are in walk.cpp;
// a QatNode carries its own). A null `record` runs forward.
struct FloatNodeRule;

class ModelWalk {
 public:
  virtual ~ModelWalk() = default;

  WalkPoint at;  // the current activation; a module with branches saves it and starts each branch there

  // Walks one module named `name`: a QatNode, or a module of nn/ with a rule; any other goes to unsupported().
  void walk(const Module& m, const std::string& name);
  // Each child of m in turn, named by child_name(name, its name).
  void walk_children(const Module& m, const std::string& name);
  // Walks two branches that both read the current activation (a residual block's body and shortcut);
  // returns where each ended. The walk is left at the second's end.
  std::pair<WalkPoint, WalkPoint> walk_branches(const Module& first, const std::string& first_name,
                                                const Module& second, const std::string& second_name);
  // "body.0": the dotted name of a child ("0" under the root, whose name is "").
  static std::string child_name(const std::string& parent, const std::string& child);

  // A slot no entry has written yet; every op or row writes a fresh one, so the graph stays a plain list.
  int fresh_slot() { return ++last_slot_; }
  int slots() const { return last_slot_ + 1; }

 protected:
  virtual void visit(const QatNode& node, const std::string& name) = 0;
  virtual void visit(const FloatNodeRule& rule, const Module& m, const std::string& name) = 0;
  // A module with neither: the walk's error, or what it does instead.
  virtual void unsupported(const Module& m, const std::string& name) = 0;

 private:
  int last_slot_ = 0;
};

// convert's walk: appends integer ops to a graph.
class Lowering : public ModelWalk {
 public:
  explicit Lowering(Int8Graph& graph) : graph_(graph) {}

  // Appends `op` reading `inputs` and writing a fresh slot on the grid `grid`; that slot becomes the current
  // activation. The second form reads the current slot.
  void emit(Int8Op op, std::vector<int> inputs, const QParams& grid);
  void emit(Int8Op op, const QParams& grid) { emit(std::move(op), {at.slot}, grid); }

 protected:
  void visit(const QatNode& node, const std::string& name) override { node.lower(*this, name); }
  void visit(const FloatNodeRule& rule, const Module& m, const std::string& name) override;
  // std::invalid_argument "convert: no integer form for TYPE 'NAME'".
  void unsupported(const Module& m, const std::string& name) override;

 private:
  Int8Graph& graph_;
};

// One entry of a description: a quantized output (the model input, a conv / linear layer, a residual sum,
// a layer's input requantized: inspect's rows), or a module that passes its input's grid on (drawn, no row).
struct DescribedNode {
  enum class Kind { Input, Conv, Linear, Add, Requantize, Keep };
  Kind kind = Kind::Keep;
  std::string name;         // the module path, as convert names its op
  std::string type;         // the module's type ("MaxPool2d"), for Keep entries
  std::string description;  // its describe() line: "conv (6, 1, 5, 5) + bn + relu", "add + relu", "k=2, stride=2"
  std::vector<int> inputs;  // the slots it reads (a sum: body, then shortcut)
  int output = 0;           // the slot it writes

  const Quantizer* weights = nullptr;  // a conv / linear layer's weight quantizer, named weights_name
  std::string weights_name;
  const Quantizer* output_quant = nullptr;  // the row's output grid (null for Keep), named output_name
  std::string output_name;
  // The integers convert derives (lower_layer: one per output channel; lower_add: the sum's rescale;
  // lower_requantize: the requantization's), or why there are none (lowering_error).
  std::vector<int32_t> output_multiplier;
  std::vector<int> output_shift;
  std::string lowering_error;
  float weight_min = 0, weight_max = 0;  // the folded float weights
  // Output channels (of a conv / linear layer) whose weights carry nothing to the output, so that it is
  // the channel's bias whatever the input: every weight's code 0 (zeroed), or the weight step at
  // kMinScale (floor: codes of at most qmax * 1.2e-7). Empty while the weights have no grid.
  std::vector<int64_t> zeroed_channels, floor_channels;
  // On a mid-rise weight grid (whose codes are never 0): the channels whose every weight code is +-1, so
  // that they keep their weights' signs alone (LSQ's step at its cap of max|w|, LsqQuantizer::project).
  // Empty on other grids.
  std::vector<int64_t> sign_only_channels;
  bool weight_mid_rise = false;  // the weight grid is mid-rise (odd codes)
  int64_t out_channels = 0;  // conv / linear: the weight's first dimension
  bool keeps_grid = false;               // Keep: pooling, flatten, ReLU (not a module the walk passes over)
};

// inspect's walk: the entries of the model in execution order, with the grids convert would use.
class Description : public ModelWalk {
 public:
  std::vector<DescribedNode> nodes;

  // Appends a row reading `inputs` and writing a fresh slot on the grid `grid`, which becomes current.
  void row(DescribedNode node, std::vector<int> inputs, const QParams& grid);
  // Appends a Keep entry for m: reads and writes the current grid (keeps_grid: it says so when drawn).
  void keep(const Module& m, const std::string& name, bool keeps_grid);
  // q's grid, or an empty one (no scale) while it has none: a model that never saw data is still drawn,
  // its rows without integers (inspect's report itself asks the quantizers again, and refuses).
  static QParams grid_of(const Quantizer& q);
  // std::invalid_argument "cannot inspect NAME (TYPE): it holds quantizers of its own ...": for a module
  // whose grids this walk cannot follow.
  [[noreturn]] static void refuse(const Module& m, const std::string& name);

 protected:
  void visit(const QatNode& node, const std::string& name) override { node.describe_node(*this, name); }
  void visit(const FloatNodeRule& rule, const Module& m, const std::string& name) override;
  // A module without quantizers is passed over (it keeps the grid, as far as the walk knows); one with
  // quantizers of its own is refused.
  void unsupported(const Module& m, const std::string& name) override;
};

// The recording run: the model as its forward computes it, each row's output handed to `seen`.
class Recording {
 public:
  using Seen = std::function<void(const std::string& name, const Tensor& output)>;
  explicit Recording(Seen seen) : seen_(std::move(seen)) {}

  // A QatNode's record(), a rule's, or forward.
  Tensor run(Module& m, const std::string& name, const Tensor& x);
  void seen(const std::string& name, const Tensor& output) { seen_(name, output); }

 private:
  Seen seen_;
};

}  // namespace qatlab
