// qconfig.cpp: resolving per-layer quantizer settings and parsing them from options.
#include "quant/qat/qconfig.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/format.h"

namespace qatlab {

std::string QuantizerSpec::describe() const {
  return scheme.describe() + ", " +
         (method == QuantizerMethod::Observer ? std::string(observer_kind_name(observer)) + " observer"
                                              : std::string(quantizer_method_name(method)) + " (learned" +
                                                    (lsq_init ? std::string(", init ") + lsq_init_name(*lsq_init) : "") +
                                                    (lsq_grad_scale ? std::string(", gradient scale per ") +
                                                                          lsq_grad_scale_name(*lsq_grad_scale)
                                                                    : "") +
                                                    (lsq_step_bounds ? ", step bounds k=" + num_str(*lsq_step_bounds)
                                                                     : "") +
                                                    ")");
}

namespace {

const LayerBits* find_override(const std::map<std::string, LayerBits>& overrides, const std::string& name,
                               const std::string& type) {
  if (auto it = overrides.find(name); it != overrides.end()) return &it->second;
  if (auto it = overrides.find(type); it != overrides.end()) return &it->second;
  return nullptr;
}

void check_bits(int bits, const std::string& what) {
  if (bits < 2 || bits > 8) throw std::invalid_argument(what + " must be in 2..8, got " + std::to_string(bits));
}

// LSQ and LSQ+ learn a step: the quantizers an LSQ init and gradient scale apply to.
bool learns_a_step(const QuantizerSpec& spec) {
  return spec.method == QuantizerMethod::Lsq || spec.method == QuantizerMethod::LsqPlus;
}

void check_observer(ObserverKind kind, bool per_channel, const std::string& what) {
  if (per_channel && !observer_supports_per_channel(kind))
    throw std::invalid_argument(what + " '" + observer_kind_name(kind) +
                                "' is per-tensor only; per-channel weights use minmax or ema");
}

}  // namespace

WeightRange parse_weight_range(const std::string& text, const std::string& what) {
  if (text == "narrow") return WeightRange::Narrow;
  if (text == "full") return WeightRange::Full;
  if (text == "mid-rise") return WeightRange::MidRise;
  throw std::invalid_argument(what + " must be narrow, full or mid-rise, got '" + text + "'");
}

const char* weight_range_name(WeightRange range) {
  switch (range) {
    case WeightRange::Narrow: return "narrow";
    case WeightRange::Full: return "full";
    case WeightRange::MidRise: return "mid-rise";
  }
  return "?";
}

QuantizerSpec QConfig::weight_for(const std::string& name, const std::string& type) const {
  QuantizerSpec spec = weight;
  if (const LayerBits* o = find_override(layer_bits, name, type); o && o->weight_bits) spec.scheme.bits = o->weight_bits;
  if (spec.scheme.bits == 8) spec.scheme.narrow_range = true;  // -128 is outside the int8 kernels' contract
  // Odd codes of 8 bits would reach +-255: 8-bit layers keep the narrow grid.
  else if (weight_mid_rise) spec.scheme.mid_rise = true, spec.scheme.narrow_range = false;
  return spec;
}

QuantizerSpec QConfig::activation_for(const std::string& name, const std::string& type, bool residual_branch) const {
  QuantizerSpec spec = activation;
  const LayerBits* o = nullptr;
  if (auto it = layer_bits.find(kResidualBranches); residual_branch && it != layer_bits.end() && !layer_bits.count(name))
    o = &it->second;
  else if (auto sums = layer_bits.find(kResidualSums);
           type == "Residual" && sums != layer_bits.end() && !layer_bits.count(name))
    o = &sums->second;
  else
    o = find_override(layer_bits, name, type);
  if (o && o->activation_bits) spec.scheme.bits = o->activation_bits;
  return spec;
}

std::pair<std::string, LayerBits> parse_layer_bits(const std::string& text) {
  const auto fail = [&] {
    throw std::invalid_argument("--layer-bits '" + text + "' must look like NAME=W:A (e.g. features.0=8:8)");
  };
  const size_t eq = text.find('='), colon = text.find(':', eq == std::string::npos ? 0 : eq);
  if (eq == std::string::npos || eq == 0 || colon == std::string::npos) fail();
  const auto parse = [&](const std::string& s) -> int {
    if (s.empty()) return 0;
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(s, &used);
    } catch (const std::exception&) {
      fail();
    }
    if (used != s.size()) fail();
    check_bits(v, "--layer-bits " + text + ": bits");
    return v;
  };
  LayerBits bits{parse(text.substr(eq + 1, colon - eq - 1)), parse(text.substr(colon + 1))};
  return {text.substr(0, eq), bits};
}

QConfig QConfig::from_options(int wbits, int abits, bool per_channel, const std::string& weight_observer,
                              const std::string& activation_observer, const std::vector<std::string>& layer_bits,
                              const std::string& weight_method, const std::string& activation_method,
                              const std::string& lsq_init) {
  QConfig q;
  check_bits(wbits, "--wbits");
  check_bits(abits, "--abits");
  q.weight.scheme.bits = wbits;
  q.weight.scheme.per_channel = per_channel;
  q.weight.observer = parse_observer_kind(weight_observer, "weight observer");
  q.activation.scheme.bits = abits;
  q.activation.observer = parse_observer_kind(activation_observer, "activation observer");
  q.weight.method = parse_quantizer_method(weight_method, "--wquant");
  q.activation.method = parse_quantizer_method(activation_method, "--aquant");
  if (!lsq_init.empty()) {
    const LsqInit init = parse_lsq_init(lsq_init, "--lsq-init");
    bool used = false;
    for (QuantizerSpec* spec : {&q.weight, &q.activation})
      if (learns_a_step(*spec)) spec->lsq_init = init, used = true;
    if (!used) throw std::invalid_argument("--lsq-init " + lsq_init + " needs an lsq or lsq+ quantizer (--wquant, --aquant)");
  }
  for (const std::string& text : layer_bits) q.layer_bits.insert(parse_layer_bits(text));
  q.validate();
  return q;
}

void QConfig::set_lsq_grad_scale(LsqGradScale scale) {
  bool used = false;
  for (QuantizerSpec* spec : {&weight, &activation})
    if (learns_a_step(*spec)) spec->lsq_grad_scale = scale, used = true;
  if (!used)
    throw std::invalid_argument(std::string("--lsq-grad-scale ") + lsq_grad_scale_name(scale) +
                                " needs an lsq or lsq+ quantizer (--wquant, --aquant)");
}

void QConfig::set_lsq_step_bounds(float k) {
  if (!learns_a_step(weight))
    throw std::invalid_argument("--lsq-step-bounds " + num_str(k) + " needs lsq weights (--wquant lsq)");
  weight.lsq_step_bounds = k;
  validate();
}

void QConfig::validate() const {
  weight.scheme.validate();
  if (weight_mid_rise && weight.scheme.narrow_range)
    throw std::invalid_argument("mid-rise weights (weight_mid_rise) on a narrow weight scheme: set them with set_weight_range");
  activation.scheme.validate();
  check_observer(weight.observer, weight.scheme.per_channel, "weight observer");
  check_observer(activation.observer, activation.scheme.per_channel, "activation observer");
  if (weight.method != QuantizerMethod::Observer && weight.method != QuantizerMethod::Lsq)
    throw std::invalid_argument(std::string("--wquant must be observer or lsq, got '") +
                                quantizer_method_name(weight.method) + "'");
  for (const QuantizerSpec* spec : {&weight, &activation}) {
    if (learns_a_step(*spec)) continue;
    if (spec->lsq_init)
      throw std::invalid_argument(std::string("an LSQ init ('") + lsq_init_name(*spec->lsq_init) +
                                  "') is set for a '" + quantizer_method_name(spec->method) + "' quantizer");
    if (spec->lsq_grad_scale)
      throw std::invalid_argument(std::string("an LSQ gradient scale ('") + lsq_grad_scale_name(*spec->lsq_grad_scale) +
                                  "') is set for a '" + quantizer_method_name(spec->method) + "' quantizer");
  }
  if (activation.lsq_step_bounds) throw std::invalid_argument("LSQ step bounds are for weight steps only");
  if (const std::optional<float> k = weight.lsq_step_bounds) {
    if (!learns_a_step(weight))
      throw std::invalid_argument("LSQ step bounds (k=" + num_str(*k) + ") are set for a '" +
                                  quantizer_method_name(weight.method) + "' weight quantizer");
    if (!(std::isfinite(*k) && *k >= 1.0f))
      throw std::invalid_argument("--lsq-step-bounds " + num_str(*k) + ": expected a finite k >= 1");
  }
  for (const char* key : {kResidualBranches, kResidualSums})
    if (auto it = layer_bits.find(key);
        it != layer_bits.end() && (it->second.weight_bits != 0 || it->second.activation_bits == 0))
      throw std::invalid_argument(std::string("--layer-bits ") + key + " sets activation bits only (" + key +
                                  "=:A, e.g. " + key + "=:8)");
  if (!weight.scheme.symmetric || !weight.scheme.is_signed)
    throw std::invalid_argument("weights must be signed symmetric (the integer kernels' contract)");
}

std::string QConfig::describe() const {
  std::ostringstream os;
  os << "weights: " << weight.describe();
  if (weight_range() == WeightRange::Full) os << " (full range below 8 bits; 8-bit layers [-127, 127])";
  if (weight_range() == WeightRange::MidRise)
    os << " (mid-rise below 8 bits: odd codes, no level at 0; 8-bit layers [-127, 127])";
  os << "\nactivations: " << activation.describe() << "\n";
  for (const auto& [name, b] : layer_bits)
    os << "override " << name << ": W" << (b.weight_bits ? std::to_string(b.weight_bits) : "-") << " A"
       << (b.activation_bits ? std::to_string(b.activation_bits) : "-") << "\n";
  return os.str();
}

}  // namespace qatlab
