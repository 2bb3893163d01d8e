// module.cpp: the Module tree walk: names, modes, state dicts and printing.
#include "nn/module.h"

#include "core/ops.h"

#include <sstream>
#include <stdexcept>

namespace qatlab {

void Module::set_training(bool on) {
  training_ = on;
  on_mode_change();
  for (auto& [name, m] : children_) m->set_training(on);
}

void Module::set_batch_sync(BatchSync* sync) {
  batch_sync_ = sync;
  for (auto& [name, m] : children_) m->set_batch_sync(sync);
}

ModulePtr Module::child(const std::string& name) const {
  for (const auto& [n, m] : children_)
    if (n == name) return m;
  throw std::invalid_argument(type_ + " has no child named '" + name + "'");
}

ModulePtr Module::submodule(const std::string& dotted) const {
  QATLAB_CHECK(!dotted.empty(), "submodule: empty name");
  const size_t dot = dotted.find('.');
  if (dot == std::string::npos) return child(dotted);
  return child(dotted.substr(0, dot))->submodule(dotted.substr(dot + 1));
}

void Module::set_submodule(const std::string& dotted, ModulePtr replacement) {
  QATLAB_CHECK(replacement != nullptr, "set_submodule: null module for '" + dotted + "'");
  const size_t dot = dotted.find('.');
  if (dot != std::string::npos) {
    child(dotted.substr(0, dot))->set_submodule(dotted.substr(dot + 1), std::move(replacement));
    return;
  }
  for (auto& [n, m] : children_) {
    if (n == dotted) {
      replacement->set_training(training_);
      replacement->set_batch_sync(batch_sync_);
      m = std::move(replacement);
      return;
    }
  }
  throw std::invalid_argument(type_ + " has no child named '" + dotted + "'");
}

std::vector<std::pair<std::string, ModulePtr>> Module::named_modules(const ModulePtr& self) const {
  std::vector<std::pair<std::string, ModulePtr>> out{{"", self}};
  for (const auto& [name, m] : children_)
    for (auto& [sub, mm] : m->named_modules(m)) out.push_back({sub.empty() ? name : name + "." + sub, mm});
  return out;
}

void Module::collect(const std::string& prefix, bool params, NamedTensors& out) const {
  for (const auto& [name, t] : params ? params_ : buffers_) out.push_back({prefix + name, *t});
  for (const auto& [name, m] : children_) m->collect(prefix + name + ".", params, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

NamedTensors Module::state_dict() const {
  NamedTensors out = named_parameters();
  for (auto& entry : named_buffers()) out.push_back(entry);
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& state) {
  const NamedTensors mine = state_dict();
  for (const auto& [name, t] : mine) {
    auto it = state.find(name);
    QATLAB_CHECK(it != state.end(), "state dict has no entry '" + name + "' " + shape_str(t.shape()));
    QATLAB_CHECK(it->second.shape() == t.shape(), "state dict entry '" + name + "' has shape " +
                                                    shape_str(it->second.shape()) + ", the model expects " +
                                                    shape_str(t.shape()));
  }
  if (state.size() != mine.size()) {
    for (const auto& [name, t] : state) {
      bool known = false;
      for (const auto& entry : mine) known = known || entry.first == name;
      QATLAB_CHECK(known, "state dict entry '" + name + "' does not belong to this model");
    }
  }
  // Check everything before copying anything: a failed load leaves the model as it was.
  for (const auto& [name, t] : mine) Tensor(t).copy_from(state.at(name));
}

std::string Module::summary(const std::string& name, int indent) const {
  std::ostringstream os;
  int64_t own = 0;
  for (const auto& [n, t] : params_) own += t->numel();
  os << std::string(indent * 2, ' ') << name << ": " << type_;
  const std::string d = describe();
  if (!d.empty()) os << "(" << d << ")";
  if (own) os << "  [" << own << " params]";
  os << "\n";
  for (const auto& [n, m] : children_) os << m->summary(n, indent + 1);
  return os.str();
}

void Module::register_parameter(const std::string& name, Tensor* t) {
  t->set_requires_grad(true);
  params_.push_back({name, t});
}

void Module::register_buffer(const std::string& name, Tensor* t) { buffers_.push_back({name, t}); }

ModulePtr Module::register_module(const std::string& name, ModulePtr m) {
  QATLAB_CHECK(m != nullptr, "register_module: null module '" + name + "'");
  QATLAB_CHECK(name.find('.') == std::string::npos, "module name '" + name + "' must not contain '.'");
  for (const auto& [n, existing] : children_) QATLAB_CHECK(n != name, "duplicate child name '" + name + "'");
  children_.push_back({name, m});
  return m;
}

Sequential& Sequential::add(ModulePtr m) { return add(std::to_string(children().size()), std::move(m)); }

Sequential& Sequential::add(const std::string& name, ModulePtr m) {
  register_module(name, std::move(m));
  return *this;
}

Tensor Module::forward_relu(const Tensor& x) { return relu(forward(x)); }

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  const auto& c = children();
  for (size_t i = 0; i < c.size(); ++i) {
    Module& m = *c[i].second;
    if (i + 1 < c.size() && m.fuses_relu() && c[i + 1].second->is_relu()) {
      // BN + ReLU in one pass (the same values and gradients as the two modules in turn).
      ProfileScope scope(&m);
      h = m.forward_relu(h);
      ++i;
      continue;
    }
    h = m(h);
  }
  return h;
}

}  // namespace qatlab
