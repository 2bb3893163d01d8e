// module.h: the Module tree: named parameters, buffers and children, train/eval mode, state dicts.
//
// Modules are built once, held by shared_ptr and never copied or moved, so a registered parameter can
// be referred to by pointer. Composite modules reach their children only through child(name), never
// through a typed member: that is what lets the quantization passes replace a child in place
// (set_submodule("features.0", fused)) without the parent noticing.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/batch_sync.h"
#include "core/profiler.h"
#include "core/tensor.h"

namespace qatlab {

class Module;
using ModulePtr = std::shared_ptr<Module>;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  // type: the layer's kind as users know it ("Conv2d", "BatchNorm2d", ...), for printouts, layer names
  // and --layer-bits keys. Code that dispatches on a module's kind asks is<T>() / as<T>() (the kind is
  // its class), once per module, never by comparing this string.
  explicit Module(std::string type) : type_(std::move(type)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual Tensor forward(const Tensor& x) = 0;
  // Runs forward; composite modules call their children through this, so that a profiler sees each
  // module as a scope (profiler.h).
  Tensor operator()(const Tensor& x) {
    if (!active_profiler()) return forward(x);
    ProfileScope scope(this);
    return forward(x);
  }

  const std::string& type() const { return type_; }

  // This module as a T (a T or a class derived from it), or null; whether it is one.
  template <class T>
  T* as() {
    return dynamic_cast<T*>(this);
  }
  template <class T>
  const T* as() const {
    return dynamic_cast<const T*>(this);
  }
  template <class T>
  bool is() const {
    return as<T>() != nullptr;
  }

  // Execution-time fusion of a ReLU that follows this module in a Sequential (the tree itself is not
  // changed: checkpoints, prepare_qat and printouts see both modules). A module that can apply the
  // ReLU in its own pass returns true from fuses_relu() and computes relu(forward(x)) in forward_relu,
  // bit for bit; ReLU itself says is_relu().
  virtual bool fuses_relu() const { return false; }
  virtual Tensor forward_relu(const Tensor& x);
  virtual bool is_relu() const { return false; }

  // One line of settings for printing, e.g. "in=400, out=120, bias=true".
  virtual std::string describe() const { return ""; }

  // Mode. set_training applies to the whole subtree.
  void set_training(bool on);
  void train() { set_training(true); }
  void eval() { set_training(false); }
  bool training() const { return training_; }

  // The chunks of a global batch this module's forward is one of (core/batch_sync.h), or null: layers
  // that keep statistics of the batch (batch norm, observers, learned quantizers' initialisation)
  // exchange them through it. set_batch_sync applies to the whole subtree; the sync must outlive its use.
  void set_batch_sync(BatchSync* sync);
  BatchSync* batch_sync() const { return batch_sync_; }

  // Children, in registration order. Dotted names reach grandchildren: "features.0".
  const std::vector<std::pair<std::string, ModulePtr>>& children() const { return children_; }
  ModulePtr child(const std::string& name) const;  // direct child; throws if absent
  ModulePtr submodule(const std::string& dotted) const;  // "" is not allowed; throws if absent
  void set_submodule(const std::string& dotted, ModulePtr replacement);  // replaces in place, same name
  // Every module of the subtree with its dotted name, parents before children ("" for this one).
  std::vector<std::pair<std::string, ModulePtr>> named_modules(const ModulePtr& self) const;

  // Parameters and buffers of the whole subtree, with dotted names ("features.0.weight").
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;
  // Parameters and buffers together: what a checkpoint stores.
  NamedTensors state_dict() const;
  // Copies values into the existing tensors. Every entry of the model must be present with its shape;
  // an unknown or mis-shaped entry is an error naming it.
  void load_state_dict(const std::map<std::string, Tensor>& state);

  // A tree printout, one module per line, for `qatlab info`.
  std::string summary(const std::string& name = "model", int indent = 0) const;

 protected:
  // Register a member tensor; the pointer must stay valid for the module's life (it is a member).
  void register_parameter(const std::string& name, Tensor* t);
  void register_buffer(const std::string& name, Tensor* t);
  ModulePtr register_module(const std::string& name, ModulePtr m);
  virtual void on_mode_change() {}

 private:
  void collect(const std::string& prefix, bool params, NamedTensors& out) const;

  std::string type_;
  bool training_ = true;
  BatchSync* batch_sync_ = nullptr;
  std::vector<std::pair<std::string, Tensor*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, ModulePtr>> children_;
};

// Children run one after another. Names are "0", "1", ... unless given.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  Sequential& add(ModulePtr m);
  Sequential& add(const std::string& name, ModulePtr m);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
};

}  // namespace qatlab
