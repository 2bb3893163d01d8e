// optim.cpp: SGD, Adam and AdamW update loops, their option checks, and the state save/restore.
#include "nn/optim.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>

namespace qatlab {

namespace {

// Below this many elements a parameter is updated on one thread: starting a parallel region costs
// more than the update itself. Each element's update is independent of the others, so the result does
// not depend on the thread count.
constexpr int64_t kParallelMin = int64_t{1} << 15;

// Counts travel as float32 in the state; above 2^24 consecutive integers are no longer representable.
constexpr int64_t kMaxExactCount = int64_t{1} << 24;

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

// `what` names the optimizer and the field; the range text reads like "> 0" or "in [0, 1)".
void check_option(bool ok, const char* optimizer, const char* field, const char* range, float value) {
  if (!ok)
    throw std::invalid_argument(std::string(optimizer) + ": " + field + " must be " + range + ", got " + num(value));
}

bool positive(float v) { return std::isfinite(v) && v > 0.0f; }
bool non_negative(float v) { return std::isfinite(v) && v >= 0.0f; }
bool unit_interval(float v) { return v >= 0.0f && v < 1.0f; }  // [0, 1); false for NaN

void validate(const SgdOptions& o) {
  check_option(positive(o.lr), "SGD", "lr", "> 0", o.lr);
  check_option(unit_interval(o.momentum), "SGD", "momentum", "in [0, 1)", o.momentum);
  check_option(o.dampening >= 0.0f && o.dampening <= 1.0f, "SGD", "dampening", "in [0, 1]", o.dampening);
  check_option(non_negative(o.weight_decay), "SGD", "weight_decay", ">= 0", o.weight_decay);
  if (o.nesterov && (o.momentum <= 0.0f || o.dampening != 0.0f))
    throw std::invalid_argument("SGD: nesterov needs momentum > 0 and dampening 0, got momentum " + num(o.momentum) +
                                " and dampening " + num(o.dampening));
}

void validate(const AdamOptions& o, const char* name) {
  check_option(positive(o.lr), name, "lr", "> 0", o.lr);
  check_option(unit_interval(o.beta1), name, "beta1", "in [0, 1)", o.beta1);
  check_option(unit_interval(o.beta2), name, "beta2", "in [0, 1)", o.beta2);
  check_option(positive(o.eps), name, "eps", "> 0", o.eps);
  check_option(non_negative(o.weight_decay), name, "weight_decay", ">= 0", o.weight_decay);
}

AdamOptions as_adam(const AdamWOptions& o) { return AdamOptions{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay}; }

// ------------------------------------------------------------------------------------ update loops
// One loop per variant, chosen once per parameter, so that no branch sits in the element loop and
// the compiler vectorises each. p, g, buf, m, v: (P) flattened to n elements.

void sgd_plain(float* p, const float* g, int64_t n, float lr, float wd) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + wd * p[i]);
}

// The parameter's first update: the buffer starts as the (decayed) gradient itself, undamped.
void sgd_momentum_first(float* p, const float* g, float* buf, int64_t n, float lr, float wd, float momentum,
                        bool nesterov) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * p[i];
    buf[i] = d;
    p[i] -= lr * (nesterov ? d + momentum * d : d);
  }
}

void sgd_momentum(float* p, const float* g, float* buf, int64_t n, float lr, float wd, float momentum,
                  float dampening) {
  const float keep = 1.0f - dampening;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * p[i];
    buf[i] = momentum * buf[i] + keep * d;
    p[i] -= lr * buf[i];
  }
}

void sgd_nesterov(float* p, const float* g, float* buf, int64_t n, float lr, float wd, float momentum) {
  // Nesterov requires dampening 0, so the buffer takes the whole gradient.
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float d = g[i] + wd * p[i];
    buf[i] = momentum * buf[i] + d;
    p[i] -= lr * (d + momentum * buf[i]);
  }
}

// step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t): computed once per parameter.
// shrink is 1 - lr * weight_decay for AdamW and 1 for Adam; l2 is weight_decay for Adam and 0 for AdamW.
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, float beta1, float beta2, float eps,
                 float step_size, float bc2_sqrt, float l2, float shrink) {
  const float one_minus_beta1 = 1.0f - beta1;
  const float one_minus_beta2 = 1.0f - beta2;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i] + l2 * p[i];
    m[i] = beta1 * m[i] + one_minus_beta1 * gi;
    v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi;
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    // Same rounding order as PyTorch: shrink first (AdamW), then p - step_size * (m / denom).
    p[i] = p[i] * shrink - step_size * (m[i] / denom);
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------ Optimizer

Optimizer::Optimizer(std::vector<ParamRef> params, float lr, std::vector<std::string> buffer_kinds)
    : params_(std::move(params)), buffer_kinds_(std::move(buffer_kinds)), lr_(lr) {
  QATLAB_CHECK(!params_.empty(), "optimizer: empty parameter list");
  std::set<std::string> names;
  std::set<const TensorImpl*> tensors;
  for (const ParamRef& p : params_) {
    QATLAB_CHECK(!p.name.empty(), "optimizer: a parameter has an empty name");
    QATLAB_CHECK(p.tensor.defined(), "optimizer: parameter '" + p.name + "' is an undefined tensor");
    QATLAB_CHECK(names.insert(p.name).second, "optimizer: parameter name '" + p.name + "' appears twice");
    QATLAB_CHECK(tensors.insert(p.tensor.impl()).second,
              "optimizer: parameter '" + p.name + "' is the same tensor as an earlier parameter");
  }
  buffers_.resize(buffer_kinds_.size());
  for (auto& per_param : buffers_)
    for (const ParamRef& p : params_) per_param.push_back(Tensor::zeros(p.tensor.shape()));
  param_steps_.assign(params_.size(), 0);
}

void Optimizer::step() {
  NoGradGuard no_grad;
  update();
  ++steps_;
}

void Optimizer::zero_grad() {
  for (ParamRef& p : params_) p.tensor.zero_grad();
}

void Optimizer::set_lr(float lr) {
  QATLAB_CHECK(std::isfinite(lr) && lr >= 0.0f, kind() + ": learning rate must be >= 0, got " + num(lr));
  lr_ = lr;
}

namespace {
Tensor count_tensor(int64_t count, const std::string& name) {
  if (count > kMaxExactCount)
    throw std::overflow_error("optimizer state: " + name + " = " + std::to_string(count) +
                              " exceeds 2^24 and cannot be stored exactly as float32");
  return Tensor::full({1}, static_cast<float>(count));
}

int64_t read_count(const Tensor& t, const std::string& name) {
  QATLAB_CHECK(t.numel() == 1, "optimizer state: entry '" + name + "' has shape " + shape_str(t.shape()) +
                                ", expected one element");
  const float v = t.data()[0];
  QATLAB_CHECK(v >= 0.0f && v <= static_cast<float>(kMaxExactCount) && v == std::floor(v),
            "optimizer state: entry '" + name + "' must be a whole count >= 0, got " + num(v));
  return static_cast<int64_t>(v);
}
}  // namespace

OptimizerState Optimizer::state() const {
  OptimizerState out;
  out.emplace_back("step", count_tensor(steps_, "step"));
  if (buffer_kinds_.empty()) return out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_[i].name;
    out.emplace_back("step/" + name, count_tensor(param_steps_[i], "step/" + name));
    for (size_t k = 0; k < buffer_kinds_.size(); ++k)
      out.emplace_back(buffer_kinds_[k] + "/" + name, buffers_[k][i].clone());
  }
  return out;
}

void Optimizer::load_state(const OptimizerState& state) {
  std::map<std::string, const Tensor*> given;
  for (const auto& [name, t] : state) {
    QATLAB_CHECK(given.emplace(name, &t).second, "optimizer state: entry '" + name + "' appears twice");
    QATLAB_CHECK(t.defined(), "optimizer state: entry '" + name + "' is an undefined tensor");
  }
  auto take = [&](const std::string& name, const Shape* expected) -> const Tensor& {
    auto it = given.find(name);
    if (it == given.end())
      throw std::invalid_argument("optimizer state: missing entry '" + name + "' (" + kind() + " expects " +
                                  (expected ? "shape " + shape_str(*expected) : std::string("a count")) + ")");
    const Tensor& t = *it->second;
    if (expected)
      QATLAB_CHECK(t.shape() == *expected, "optimizer state: entry '" + name + "' has shape " + shape_str(t.shape()) +
                                            ", expected " + shape_str(*expected));
    given.erase(it);
    return t;
  };

  // Check everything first, then commit: a failed load leaves the optimizer as it was.
  const int64_t steps = read_count(take("step", nullptr), "step");
  std::vector<int64_t> param_steps(params_.size(), 0);
  std::vector<std::vector<const Tensor*>> buffers(buffer_kinds_.size());
  if (!buffer_kinds_.empty()) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const std::string& name = params_[i].name;
      param_steps[i] = read_count(take("step/" + name, nullptr), "step/" + name);
      for (size_t k = 0; k < buffer_kinds_.size(); ++k)
        buffers[k].push_back(&take(buffer_kinds_[k] + "/" + name, &params_[i].tensor.shape()));
    }
  }
  if (!given.empty())
    throw std::invalid_argument("optimizer state: unexpected entry '" + given.begin()->first + "' for " + kind() +
                                " with these settings and parameters");

  steps_ = steps;
  if (!buffer_kinds_.empty()) param_steps_ = param_steps;
  for (size_t k = 0; k < buffer_kinds_.size(); ++k)
    for (size_t i = 0; i < params_.size(); ++i) buffers_[k][i].copy_from(*buffers[k][i]);
}

// ------------------------------------------------------------------------------------------------ SGD

namespace {
std::vector<std::string> sgd_buffers(const SgdOptions& o) {
  validate(o);
  if (o.momentum == 0.0f) return {};
  return {"momentum_buffer"};
}
}  // namespace

SGD::SGD(std::vector<ParamRef> params, const SgdOptions& options)
    : Optimizer(std::move(params), options.lr, sgd_buffers(options)), options_(options) {}

void SGD::update() {
  const SgdOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& t = params_[i].tensor;
    if (!t.has_grad()) continue;
    float* p = t.data();
    const float* g = t.mutable_grad();
    const int64_t n = t.numel();
    const float wd = params_[i].decay ? o.weight_decay : 0.0f;
    if (o.momentum == 0.0f) {
      sgd_plain(p, g, n, lr_, wd);
    } else {
      float* buf = buffers_[0][i].data();
      if (param_steps_[i] == 0)
        sgd_momentum_first(p, g, buf, n, lr_, wd, o.momentum, o.nesterov);
      else if (o.nesterov)
        sgd_nesterov(p, g, buf, n, lr_, wd, o.momentum);
      else
        sgd_momentum(p, g, buf, n, lr_, wd, o.momentum, o.dampening);
    }
    ++param_steps_[i];
  }
}

// ----------------------------------------------------------------------------------------------- Adam

namespace {
const std::vector<std::string>& adam_buffers(const AdamOptions& o, bool decoupled) {
  validate(o, decoupled ? "AdamW" : "Adam");
  static const std::vector<std::string> kinds = {"exp_avg", "exp_avg_sq"};
  return kinds;
}
}  // namespace

Adam::Adam(std::vector<ParamRef> params, const AdamOptions& options) : Adam(std::move(params), options, false) {}

Adam::Adam(std::vector<ParamRef> params, const AdamOptions& options, bool decoupled)
    : Optimizer(std::move(params), options.lr, adam_buffers(options, decoupled)),
      options_(options),
      decoupled_(decoupled) {}

void Adam::update() {
  const AdamOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& t = params_[i].tensor;
    if (!t.has_grad()) continue;
    const int64_t step = ++param_steps_[i];
    // Bias corrections in double: beta^t for large t underflows gracefully and 1 - beta2^t is small
    // early on, where float rounding would show.
    const double bc1 = 1.0 - std::pow(static_cast<double>(o.beta1), static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(o.beta2), static_cast<double>(step));
    const float step_size = static_cast<float>(lr_ / bc1);
    const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
    const float wd = params_[i].decay ? o.weight_decay : 0.0f;
    const float l2 = decoupled_ ? 0.0f : wd;
    const float shrink = decoupled_ ? 1.0f - lr_ * wd : 1.0f;
    adam_update(t.data(), t.mutable_grad(), buffers_[0][i].data(), buffers_[1][i].data(), t.numel(), o.beta1,
                o.beta2, o.eps, step_size, bc2_sqrt, l2, shrink);
  }
}

AdamW::AdamW(std::vector<ParamRef> params, const AdamWOptions& options)
    : Adam(std::move(params), as_adam(options), true) {}

// -------------------------------------------------------------------------------------------- factory

std::unique_ptr<Optimizer> make_optimizer(const std::string& kind, std::vector<ParamRef> params,
                                          const OptimizerConfig& c) {
  if (kind == "sgd")
    return std::make_unique<SGD>(std::move(params), SgdOptions{c.lr, c.momentum, 0.0f, c.nesterov, c.weight_decay});
  if (kind == "adam")
    return std::make_unique<Adam>(std::move(params), AdamOptions{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay});
  if (kind == "adamw")
    return std::make_unique<AdamW>(std::move(params), AdamWOptions{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay});
  throw std::invalid_argument("unknown optimizer '" + kind + "' (expected sgd, adam or adamw)");
}

}  // namespace qatlab
