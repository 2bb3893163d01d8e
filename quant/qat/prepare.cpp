// prepare.cpp: the fusion and fake-quant insertion walk.
#include "quant/qat/prepare.h"

#include <set>
#include <stdexcept>

#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/residual.h"
#include "nn/sequence_models.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/qat_lstm.h"

namespace qatlab {

namespace {

// The quantizer a spec asks for. PACT clips at 0, so it only suits values that come out of a ReLU
// (`after_relu`); elsewhere (the model input, logits, a sum without ReLU) an observer quantizes instead.
std::shared_ptr<Quantizer> make_quantizer(const QuantizerSpec& spec, int64_t channels, bool after_relu = false) {
  const int64_t c = spec.scheme.per_channel ? channels : 1;
  if (spec.method == QuantizerMethod::Observer || (spec.method == QuantizerMethod::Pact && !after_relu))
    return std::make_shared<FakeQuantize>(spec.scheme, spec.observer, c);
  return make_learnable_quantizer(spec.method, spec.scheme, c);
}

class Preparer {
 public:
  explicit Preparer(const QConfig& qc) : qc_(qc) {}

  // The settings of a layer, noting its name and type: an override that names neither any layer nor any
  // layer type met on the way is a mistake (a typo would otherwise change nothing, silently).
  QuantizerSpec weight_for(const std::string& full, const std::string& type) {
    quantized_names.insert(full), quantized_types.insert(type);
    return qc_.weight_for(full, type);
  }
  QuantizerSpec activation_for(const std::string& full, const std::string& type) {
    quantized_names.insert(full), quantized_types.insert(type);
    return qc_.activation_for(full, type);
  }
  std::set<std::string> quantized_names, quantized_types;

  // Rewrites the children of `seq` in place, in order; `grid` is the quantizer the current activation
  // was produced by.
  void rewrite(Module& seq, const std::string& prefix) {
    const auto children = seq.children();  // a copy: we replace entries as we go
    for (size_t i = 0; i < children.size(); ++i) {
      const auto& [name, m] = children[i];
      const std::string full = prefix + name;
      if (m->is<Conv2d>() || m->is<Linear>()) {
        i += fuse(seq, children, i, full);
      } else if (m->is<Sequential>()) {
        rewrite(*m, full + ".");
      } else if (m->is<Residual>()) {
        seq.set_submodule(name, residual(*m, full));
      } else if (const LSTM* lstm_layer = m->as<LSTM>()) {
        seq.set_submodule(name, lstm(*lstm_layer, full));
      } else if (m->is<MaxPool2d>() || m->is<Flatten>() || m->is<Identity>() || m->is<Dropout>() || m->is<ReLU>()) {
        // Max pooling, flattening, dropout (identity at inference) and ReLU keep values on their input's
        // grid: relu(s (q - z)) = s (max(q, z) - z).
      } else if (m->is<AvgPool2d>() || m->is<GlobalAvgPool2d>()) {
        std::shared_ptr<QatAvgPool> pool;
        if (const AvgPool2d* p = m->as<AvgPool2d>()) {
          pool = std::make_shared<QatAvgPool>(p->kernel, p->stride, p->padding);
        } else {
          pool = std::make_shared<QatAvgPool>(0, 0, 0);
        }
        pool->input_quant = grid;
        seq.set_submodule(name, pool);
      } else {
        throw std::invalid_argument("prepare_qat: cannot quantize " + m->type() + " '" + full + "'" +
                                    (m->is<BatchNorm>() ? " (batch norm must follow a Conv2d or Linear)" : ""));
      }
    }
  }

  std::shared_ptr<Quantizer> grid;

 private:
  // Both branches start from the current grid; the sum gets its own quantizer (with the ReLU fused).
  ModulePtr residual(Module& res, const std::string& full) {
    const std::shared_ptr<Quantizer> entry = grid;
    const auto branch = [&](const std::string& name) {
      grid = entry;
      ModulePtr b = res.child(name);
      if (b->is<Sequential>()) rewrite(*b, full + "." + name + ".");
      else if (!b->is<Identity>())
        throw std::invalid_argument("prepare_qat: residual branch '" + full + "." + name + "' must be a Sequential or Identity");
      return std::pair{b, grid};
    };
    auto [body, body_grid] = branch("body");
    auto [shortcut, shortcut_grid] = branch("shortcut");
    const bool relu_after = res.child("act")->is<ReLU>();
    auto add_quant = make_quantizer(activation_for(full, "Residual"), 1, relu_after);
    auto q = std::make_shared<QatResidual>(body, shortcut, relu_after, add_quant);
    q->body_quant = body_grid;
    q->shortcut_quant = shortcut_grid;
    grid = add_quant;
    return q;
  }

  // The LSTM reads the current grid (layer 0's input); each layer gets weight quantizers per gate row
  // (settings of the name or of type "LSTM") and a hidden-state quantizer, and the last layer's hidden
  // grid is where the sequence leaves.
  ModulePtr lstm(const LSTM& f, const std::string& full) {
    const int64_t L = f.options.num_layers, G = 4 * f.options.hidden_size;
    std::vector<std::shared_ptr<Quantizer>> wih, whh, hidden;
    for (int64_t l = 0; l < L; ++l) {
      wih.push_back(make_quantizer(weight_for(full, "LSTM"), G));
      whh.push_back(make_quantizer(weight_for(full, "LSTM"), G));
      hidden.push_back(make_quantizer(activation_for(full, "LSTM"), 1));
    }
    auto q = QatLstm::from_lstm(f, wih, whh, hidden);
    q->input_quant = grid;
    grid = q->hidden_quant_ptr(L - 1);
    return q;
  }

  // Fuses children[i] (Conv2d or Linear) with a following BatchNorm and ReLU/ReLU6; returns how many
  // following children were absorbed (they become Identity, so every name stays valid).
  size_t fuse(Module& seq, const std::vector<std::pair<std::string, ModulePtr>>& children, size_t i,
              const std::string& full) {
    const ModulePtr& m = children[i].second;
    const bool conv = m->is<Conv2d>();
    size_t used = 0;
    const BatchNorm* bn = nullptr;
    FusedActivation act = FusedActivation::None;
    // The k-th child after this one, or null past the end.
    const auto next = [&](size_t k) { return i + k < children.size() ? children[i + k].second.get() : nullptr; };
    if (next(1) && (conv ? next(1)->is<BatchNorm2d>() : next(1)->is<BatchNorm1d>())) bn = next(++used)->as<BatchNorm>();
    if (next(used + 1) && next(used + 1)->is<ReLU>()) act = FusedActivation::ReLU, ++used;
    else if (next(used + 1) && next(used + 1)->is<ReLU6>()) act = FusedActivation::ReLU6, ++used;

    const int64_t out_channels = conv ? static_cast<const Conv2d&>(*m).out_channels : static_cast<const Linear&>(*m).out_features;
    auto wq = make_quantizer(weight_for(full, m->type()), out_channels);
    auto oq = make_quantizer(activation_for(full, m->type()), 1, act != FusedActivation::None);
    auto layer = conv ? QatLayer::from_conv(static_cast<const Conv2d&>(*m), bn, act, wq, oq)
                      : QatLayer::from_linear(static_cast<const Linear&>(*m), bn, act, wq, oq);
    layer->input_quant = grid;
    grid = oq;
    seq.set_submodule(children[i].first, layer);
    for (size_t k = 1; k <= used; ++k) seq.set_submodule(children[i + k].first, std::make_shared<Identity>());
    return used;
  }

  const QConfig& qc_;
};

template <typename Fn>
void visit(Module& m, Fn fn) {
  fn(m);
  for (auto& [name, child] : m.children()) visit(*child, fn);
}

}  // namespace

std::shared_ptr<QatModel> prepare_qat(const ModulePtr& float_model, const QConfig& qconfig) {
  QATLAB_CHECK(float_model != nullptr, "prepare_qat: null model");
  qconfig.validate();
  Preparer p(qconfig);
  QuantizerSpec input_spec = qconfig.activation_for("input", "input");
  const auto input_override = qconfig.layer_bits.find("input");
  if (input_override == qconfig.layer_bits.end() || input_override->second.activation_bits == 0) input_spec.scheme.bits = 8;
  p.grid = make_quantizer(input_spec, 1);
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
    if (key == "input" || p.quantized_names.count(key) || p.quantized_types.count(key)) continue;
    const auto join = [](const std::set<std::string>& items) {
      std::string out;
      for (const std::string& item : items) out += (out.empty() ? "" : ", ") + item;
      return out;
    };
    throw std::invalid_argument("--layer-bits " + key + ": no quantized layer or layer type of that name (layers: " +
                                join(p.quantized_names) + "; types: " + join(p.quantized_types) + "; or input)");
  }
  auto model = std::make_shared<QatModel>(input_quant, float_model);
  model->set_training(float_model->training());
  return model;
}

void set_observers_enabled(Module& model, bool on) {
  visit(model, [on](Module& m) {
    if (FakeQuantize* q = m.as<FakeQuantize>()) q->enable_observer(on);
    if (QatLstm* l = m.as<QatLstm>()) l->enable_cell_observer(on);
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
    if (QatLayer* l = m.as<QatLayer>()) l->set_exact(on, path);
    if (QatAvgPool* p = m.as<QatAvgPool>()) p->set_exact(on);
    if (QatResidual* r = m.as<QatResidual>()) r->set_exact(on);
    if (QatLstm* l = m.as<QatLstm>()) l->set_exact(on);
  });
}

}  // namespace qatlab
