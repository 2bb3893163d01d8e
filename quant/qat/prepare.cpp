// prepare.cpp: the fusion and fake-quant insertion walk, its table of rules, and the switches over a QAT model.
#include "quant/qat/prepare.h"

#include <set>
#include <stdexcept>

#include "nn/activation.h"
#include "nn/sequence_models.h"
#include "quant/qat/learnable_quantizer.h"

namespace qatlab {

// ------------------------------------------------------------------------------------------- the walk

QuantizerSpec Preparer::weight_for(const std::string& name, const std::string& type) {
  quantized_names_.insert(name), quantized_types_.insert(type);
  return qconfig_.weight_for(name, type);
}

QuantizerSpec Preparer::activation_for(const std::string& name, const std::string& type) {
  quantized_names_.insert(name), quantized_types_.insert(type);
  const bool branch = residual_branches_.count(name) > 0;
  if (branch) quantized_types_.insert(kResidualBranches);
  if (type == "Residual") quantized_types_.insert(kResidualSums);
  return qconfig_.activation_for(name, type, branch);
}

std::shared_ptr<Quantizer> Preparer::input_requantizer(const std::string& name, const std::string& type) const {
  if (!qconfig_.layer_bits.count(kResidualSums) || !grid) return nullptr;
  const auto sum = residual_sums_.find(grid.get());
  if (sum == residual_sums_.end()) return nullptr;
  QuantizerSpec spec = qconfig_.activation_for(name, type);
  if (spec.scheme.bits >= grid->scheme().bits) return nullptr;
  spec.scheme.per_channel = false;
  return make_quantizer(spec, 1, sum->second);
}

std::shared_ptr<Quantizer> Preparer::make_quantizer(const QuantizerSpec& spec, int64_t channels, bool after_relu) {
  const int64_t c = spec.scheme.per_channel ? channels : 1;
  if (spec.method == QuantizerMethod::Observer || (spec.method == QuantizerMethod::Pact && !after_relu))
    return std::make_shared<FakeQuantize>(spec.scheme, spec.observer, c);
  return make_learnable_quantizer(spec.method, spec.scheme, c, spec.lsq_init,
                                  spec.lsq_grad_scale.value_or(LsqGradScale::Channel),
                                  spec.lsq_step_bounds.value_or(0.0f));
}

void Preparer::rewrite(Module& seq, const std::string& prefix) {
  const auto children = seq.children();  // a copy: entries are replaced as we go
  for (size_t i = 0; i < children.size(); ++i) {
    const auto& [name, m] = children[i];
    const std::string full = prefix + name;
    const PrepareRule* rule = rules_.find(*m);
    if (!rule) throw std::invalid_argument("prepare_qat: cannot quantize " + m->type() + " '" + full + "'");
    std::vector<ModulePtr> following;
    for (size_t k = i + 1; k < children.size(); ++k) following.push_back(children[k].second);
    const PrepareStep step = (*rule)(*this, m, following, full);
    QATLAB_CHECK(step.absorbed <= following.size(), "prepare_qat: the rule for " + m->type() + " '" + full +
                                                        "' absorbed more modules than follow it");
    if (step.replacement) seq.set_submodule(name, step.replacement);
    for (size_t k = 1; k <= step.absorbed; ++k) seq.set_submodule(children[i + k].first, std::make_shared<Identity>());
    i += step.absorbed;
  }
}

// ------------------------------------------------------------------------------------------ the rules

void PrepareRules::add(std::function<bool(const Module&)> matches, PrepareRule rule) {
  rules_.emplace_back(std::move(matches), std::move(rule));
}

const PrepareRule* PrepareRules::find(const Module& m) const {
  for (auto it = rules_.rbegin(); it != rules_.rend(); ++it)
    if (it->first(m)) return &it->second;
  return nullptr;
}

namespace {

// The float modules a QAT model keeps. A Sequential's children are rewritten in place. Max pooling,
// flattening, dropout (identity at inference) and ReLU keep values on their input's grid:
// relu(s (q - z)) = s (max(q, z) - z).
void add_kept_module_rules(PrepareRules& rules) {
  rules.add<Sequential>([](Preparer& p, const ModulePtr& m, const std::vector<ModulePtr>&, const std::string& name) {
    p.rewrite(*m, name + ".");
    return PrepareStep{};
  });
  const PrepareRule keep = [](Preparer&, const ModulePtr&, const std::vector<ModulePtr>&, const std::string&) {
    return PrepareStep{};
  };
  rules.add<MaxPool2d>(keep);
  rules.add<Flatten>(keep);
  rules.add<Identity>(keep);
  rules.add<Dropout>(keep);
  rules.add<ReLU>(keep);
}

template <typename Fn>
void visit(Module& m, Fn fn) {
  fn(m);
  for (auto& [name, child] : m.children()) visit(*child, fn);
}

}  // namespace

const PrepareRules& PrepareRules::builtin() {
  static const PrepareRules rules = [] {
    PrepareRules r;
    add_kept_module_rules(r);
    add_qat_layer_rules(r);
    add_qat_lstm_rules(r);
    return r;
  }();
  return rules;
}

std::shared_ptr<QatModel> prepare_qat(const ModulePtr& float_model, const QConfig& qconfig, const PrepareRules& rules) {
  QATLAB_CHECK(float_model != nullptr, "prepare_qat: null model");
  qconfig.validate();
  Preparer p(qconfig, rules);
  QuantizerSpec input_spec = qconfig.activation_for("input", "input");
  const auto input_override = qconfig.layer_bits.find("input");
  if (input_override == qconfig.layer_bits.end() || input_override->second.activation_bits == 0) input_spec.scheme.bits = 8;
  p.grid = Preparer::make_quantizer(input_spec, 1);
  auto input_quant = p.grid;
  // A RowLstmClassifier's children run in order too ("lstm" on the image rows, "head" on its last step):
  // image rows are the input's codes rearranged, so the LSTM's input grid is the model input's.
  if (float_model->is<Sequential>() || float_model->is<RowLstmClassifier>()) {
    p.rewrite(*float_model, "");
  } else {
    throw std::invalid_argument("prepare_qat: the model's top module must be a Sequential or a RowLstmClassifier, got " +
                                float_model->type());
  }
  for (const auto& [key, bits] : qconfig.layer_bits) {
    if (key == "input" || p.quantized_names().count(key) || p.quantized_types().count(key)) continue;
    const auto join = [](const std::set<std::string>& items) {
      std::string out;
      for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
      return out;
    };
    throw std::invalid_argument("--layer-bits " + key + ": no quantized layer or layer type of that name (layers: " +
                                join(p.quantized_names()) + "; types: " + join(p.quantized_types()) + "; or input)");
  }
  auto model = std::make_shared<QatModel>(input_quant, float_model);
  model->set_training(float_model->training());
  return model;
}

void set_observers_enabled(Module& model, bool on) {
  visit(model, [on](Module& m) {
    if (FakeQuantize* q = m.as<FakeQuantize>()) q->enable_observer(on);
    if (QatNode* n = m.as<QatNode>()) n->enable_own_observers(on);
  });
}

void set_fake_quant_enabled(Module& model, bool on) {
  visit(model, [on](Module& m) {
    if (FakeQuantize* q = m.as<FakeQuantize>()) q->enable_fake_quant(on);
  });
}

void set_bn_frozen(Module& model, bool on) {
  visit(model, [on](Module& m) {
    if (QatLayer* l = m.as<QatLayer>()) l->freeze_bn(on);
  });
}

int64_t calibrate_observers(Module& model, const std::function<bool(Tensor& batch)>& next) {
  model.train();
  set_bn_frozen(model, true);
  set_fake_quant_enabled(model, false);
  int64_t seen = 0;
  {
    NoGradGuard no_grad;
    Tensor x;  // (N, C, H, W)
    while (next(x)) {
      model.forward(x);
      seen += x.size(0);
    }
  }
  set_fake_quant_enabled(model, true);
  set_observers_enabled(model, false);
  model.eval();
  return seen;
}

void set_exact_mode(Module& model, bool on, KernelPath path) {
  visit(model, [on, path](Module& m) {
    if (QatNode* n = m.as<QatNode>()) n->set_exact(on, path);
  });
}

}  // namespace qatlab
