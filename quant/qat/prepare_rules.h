// prepare_rules.h: how prepare_qat turns each kind of float module into its QAT form. A table of rules,
// keyed by the float module's class, each written next to the QAT module it builds (qat_layers.cpp,
// qat_lstm.cpp; prepare.cpp: the modules that stay as they are), and the state of the walk a rule works
// with (Preparer: the QConfig's settings per layer, the quantizer of the current activation's grid).
//
// nn/ knows nothing of quantization, so the float modules cannot say how they are quantized themselves:
// the table says it for them, and a new QAT layer adds its rule (one line in PrepareRules::builtin, or a
// program's own PrepareRules passed to prepare_qat).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

class PrepareRules;

// prepare_qat's walk over the float model, in execution order.
class Preparer {
 public:
  Preparer(const QConfig& qconfig, const PrepareRules& rules) : qconfig_(qconfig), rules_(rules) {}

  // The quantizer whose grid the current activation lies on: a rule that quantizes its output sets it
  // to that output's quantizer; one with branches starts each from the same grid.
  std::shared_ptr<Quantizer> grid;

  // The settings of a layer, noting its name and type: an override that names neither any layer nor any
  // layer type met on the way is a mistake (a typo would otherwise change nothing, silently).
  QuantizerSpec weight_for(const std::string& name, const std::string& type);
  QuantizerSpec activation_for(const std::string& name, const std::string& type);
  // The layer `name`'s output is a residual branch's (the residual rule says so before walking the branch):
  // its activation settings are the kResidualBranches override's, when there is one.
  void mark_residual_branch(const std::string& name) { residual_branches_.insert(name); }
  // `sum` is a residual add's output quantizer (the residual rule says so), after a ReLU or not.
  void mark_residual_sum(const Quantizer* sum, bool after_relu) { residual_sums_[sum] = after_relu; }
  // The quantizer the layer `name` of type `type` puts its input on before reading it, or null: one when
  // a kResidualSums override is set and the current grid is a residual sum's with more bits than the
  // layer's own activation bits (the layer's output settings, not a residual branch's), of the method and
  // bits of those settings, per tensor.
  std::shared_ptr<Quantizer> input_requantizer(const std::string& name, const std::string& type) const;
  const std::set<std::string>& quantized_names() const { return quantized_names_; }
  const std::set<std::string>& quantized_types() const { return quantized_types_; }

  // The quantizer a spec asks for, with `channels` grids when it is per channel. PACT clips at 0, so it
  // only suits values that come out of a ReLU (`after_relu`); elsewhere (the model input, logits, a sum
  // without ReLU) an observer quantizes instead.
  static std::shared_ptr<Quantizer> make_quantizer(const QuantizerSpec& spec, int64_t channels, bool after_relu = false);

  // Rewrites the children of `seq` in place, in order, each by its rule (`prefix`: "features." or "").
  // Throws std::invalid_argument "prepare_qat: cannot quantize TYPE 'NAME'" for a module without a rule.
  void rewrite(Module& seq, const std::string& prefix);

 private:
  const QConfig& qconfig_;
  const PrepareRules& rules_;
  std::set<std::string> quantized_names_, quantized_types_, residual_branches_;
  std::map<const Quantizer*, bool> residual_sums_;  // residual sums' grids -> after a ReLU
};

// What a rule made of a module: the QAT module that replaces it (null: the module stays as it is), and
// how many of the siblings right after it the replacement absorbed (a BatchNorm, a ReLU): each of those
// becomes an Identity, so that every name stays valid.
struct PrepareStep {
  ModulePtr replacement;
  size_t absorbed = 0;
};

// A rule sees the walk, the module, the siblings after it in its Sequential, and its dotted name.
using PrepareRule = std::function<PrepareStep(Preparer& walk, const ModulePtr& module,
                                              const std::vector<ModulePtr>& following, const std::string& name)>;

class PrepareRules {
 public:
  // Every rule of quant/qat: the QAT layers' (add_qat_layer_rules, add_qat_lstm_rules) and the modules
  // that stay as they are (Sequential is walked into; max pooling, flatten, ReLU, identity, dropout keep
  // their input's grid).
  static const PrepareRules& builtin();

  // The rule for modules of class Float or derived from it. A rule added later is asked first, so a
  // program can replace a built-in rule.
  template <class Float>
  void add(PrepareRule rule) {
    add([](const Module& m) { return m.is<Float>(); }, std::move(rule));
  }
  void add(std::function<bool(const Module&)> matches, PrepareRule rule);
  // The rule for m, or null.
  const PrepareRule* find(const Module& m) const;

 private:
  std::vector<std::pair<std::function<bool(const Module&)>, PrepareRule>> rules_;
};

// The rules of each file's QAT modules, which PrepareRules::builtin gathers.
void add_qat_layer_rules(PrepareRules& rules);  // qat_layers.cpp: Conv2d / Linear (+ BN, ReLU), pools, Residual
void add_qat_lstm_rules(PrepareRules& rules);   // qat_lstm.cpp: LSTM

}  // namespace qatlab
