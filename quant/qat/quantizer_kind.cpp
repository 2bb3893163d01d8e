// quantizer_kind.cpp: the names of the quantizer kinds (quantizer_kind.h).
#include "quant/qat/quantizer_kind.h"

#include <stdexcept>

namespace qatlab {

namespace {

constexpr ObserverKind kObserverKinds[] = {ObserverKind::MinMax, ObserverKind::Ema, ObserverKind::Histogram,
                                           ObserverKind::Percentile};
constexpr QuantizerMethod kMethods[] = {QuantizerMethod::Observer, QuantizerMethod::Lsq, QuantizerMethod::LsqPlus,
                                        QuantizerMethod::Pact};
constexpr LsqInit kLsqInits[] = {LsqInit::Lsq, LsqInit::MinMax, LsqInit::Mse};
constexpr LsqGradScale kLsqGradScales[] = {LsqGradScale::Channel, LsqGradScale::Layer};

template <class Kind, size_t N>
Kind parse(const std::string& name, const std::string& what, const Kind (&kinds)[N], const char* (*name_of)(Kind)) {
  std::string known;
  for (Kind k : kinds) {
    if (name == name_of(k)) return k;
    known += (known.empty() ? "" : ", ") + std::string(name_of(k));
  }
  throw std::invalid_argument(what + " must be one of " + known + ", got '" + name + "'");
}

}  // namespace

const char* observer_kind_name(ObserverKind kind) {
  switch (kind) {
    case ObserverKind::MinMax: return "minmax";
    case ObserverKind::Ema: return "ema";
    case ObserverKind::Histogram: return "histogram";
    case ObserverKind::Percentile: return "percentile";
  }
  return "?";
}

ObserverKind parse_observer_kind(const std::string& name, const std::string& what) {
  return parse(name, what, kObserverKinds, observer_kind_name);
}

bool observer_supports_per_channel(ObserverKind kind) {
  return kind == ObserverKind::MinMax || kind == ObserverKind::Ema;
}

const char* quantizer_method_name(QuantizerMethod method) {
  switch (method) {
    case QuantizerMethod::Observer: return "observer";
    case QuantizerMethod::Lsq: return "lsq";
    case QuantizerMethod::LsqPlus: return "lsq+";
    case QuantizerMethod::Pact: return "pact";
  }
  return "?";
}

QuantizerMethod parse_quantizer_method(const std::string& name, const std::string& what) {
  return parse(name, what, kMethods, quantizer_method_name);
}

const char* lsq_init_name(LsqInit init) {
  switch (init) {
    case LsqInit::Lsq: return "lsq";
    case LsqInit::MinMax: return "minmax";
    case LsqInit::Mse: return "mse";
  }
  return "?";
}

LsqInit parse_lsq_init(const std::string& name, const std::string& what) {
  return parse(name, what, kLsqInits, lsq_init_name);
}

const char* lsq_grad_scale_name(LsqGradScale scale) {
  switch (scale) {
    case LsqGradScale::Channel: return "channel";
    case LsqGradScale::Layer: return "layer";
  }
  return "?";
}

LsqGradScale parse_lsq_grad_scale(const std::string& name, const std::string& what) {
  return parse(name, what, kLsqGradScales, lsq_grad_scale_name);
}

}  // namespace qatlab
