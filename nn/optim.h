// optim.h: the optimizers (SGD, Adam, AdamW) that update named parameters from their gradients.
//
// The update rules follow PyTorch's torch.optim (single-tensor path) term by term, so that settings
// and results carry over. Every optimizer keeps, per parameter, its state buffers (allocated once, at
// construction, with the parameter's shape) and the number of updates that parameter has received;
// state() / load_state() move all of it, so a resumed run continues bit-exactly.
//
// Shape letters: P is the shape of the parameter a buffer belongs to.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace qatlab {

// A parameter as the trainer hands it over. `name` keys the optimizer state in checkpoints, so it must
// be unique and stable across runs. decay = false exempts the parameter from weight decay (biases and
// batch-norm parameters, when the user asks for it).
struct ParamRef {
  std::string name;
  Tensor tensor;
  bool decay = true;
};

// Named state tensors, e.g. {"exp_avg/fc.weight", (P)}; all float32.
using OptimizerState = std::vector<std::pair<std::string, Tensor>>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;  // the buffers are shallow handles: a copy would share them
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that holds a gradient; parameters without one are skipped (their
  // state and update count stay as they are).
  void step();
  // Zeroes the gradient buffers that exist and keeps them allocated.
  void zero_grad();

  float lr() const { return lr_; }
  void set_lr(float lr);  // lr >= 0: a schedule may end at 0
  int64_t steps() const { return steps_; }  // calls of step() so far
  virtual std::string kind() const = 0;     // "sgd", "adam", "adamw"
  const std::vector<ParamRef>& params() const { return params_; }

  // For checkpoints: deep copies of the state, named "<buffer kind>/<param name>" (e.g.
  // "momentum_buffer/conv1.weight", "exp_avg/fc.bias", shape P), "step/<param name>" (one element: the
  // updates that parameter has received, which PyTorch also keeps per parameter) for optimizers that
  // keep buffers, and "step" (one element: steps()). Counts are stored as float32 and so are exact up
  // to 2^24 steps.
  OptimizerState state() const;
  // Restores what state() produced. Every expected entry must be present with the expected shape and
  // no other entry may be present (a checkpoint of a different optimizer or setting); on error nothing
  // is changed and the message names the entry (and the shapes).
  void load_state(const OptimizerState& state);

 protected:
  // buffer_kinds: the per-parameter buffers this optimizer keeps, e.g. {"exp_avg", "exp_avg_sq"}.
  Optimizer(std::vector<ParamRef> params, float lr, std::vector<std::string> buffer_kinds);

  // Updates every parameter that has a gradient and counts it in param_steps_. Called once per step.
  virtual void update() = 0;

  std::vector<ParamRef> params_;
  std::vector<std::string> buffer_kinds_;
  std::vector<std::vector<Tensor>> buffers_;  // [kind][param] (P), zero-initialised
  std::vector<int64_t> param_steps_;          // [param] updates received
  float lr_ = 0.0f;
  int64_t steps_ = 0;
};

// ---------------------------------------------------------------------------------------------- SGD

struct SgdOptions {
  float lr = 0.0f;  // required (validation rejects 0)
  float momentum = 0.0f;
  float dampening = 0.0f;
  bool nesterov = false;
  float weight_decay = 0.0f;
};

// With d = g + weight_decay * p:
//   momentum == 0:  p -= lr * d
//   otherwise:      buf = d on a parameter's first update, else buf = momentum * buf + (1 - dampening) * d;
//                   p -= lr * (nesterov ? d + momentum * buf : buf)
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamRef> params, const SgdOptions& options);
  std::string kind() const override { return "sgd"; }
  const SgdOptions& options() const { return options_; }

 protected:
  void update() override;

 private:
  SgdOptions options_;
};

// --------------------------------------------------------------------------------------- Adam, AdamW

struct AdamOptions {
  float lr = 0.0f;  // required (validation rejects 0)
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // L2: added to the gradient
};

struct AdamWOptions {
  float lr = 0.0f;  // required (validation rejects 0)
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // decoupled: p -= lr * weight_decay * p before the Adam update
};

// With t the parameter's update count (from 1) and g the gradient (plus weight_decay * p for Adam):
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamRef> params, const AdamOptions& options);
  std::string kind() const override { return decoupled_ ? "adamw" : "adam"; }
  const AdamOptions& options() const { return options_; }

 protected:
  Adam(std::vector<ParamRef> params, const AdamOptions& options, bool decoupled);
  void update() override;

 private:
  AdamOptions options_;
  bool decoupled_;  // AdamW: weight decay shrinks p directly instead of entering the moments
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamRef> params, const AdamWOptions& options);
};

// ------------------------------------------------------------------------------------------ factory

// The settings the command line exposes; each optimizer reads the fields it uses (sgd: lr, momentum,
// weight_decay, nesterov with dampening 0; adam and adamw: lr, beta1, beta2, eps, weight_decay).
struct OptimizerConfig {
  float lr = 0.01f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  bool nesterov = false;
};

// kind is "sgd", "adam" or "adamw"; anything else throws naming the choices.
std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<ParamRef> params,
                                          const OptimizerConfig& config);

}  // namespace qatlab
