// qconfig_data.cpp: QConfig <-> its data form (qconfig_data.h), written and read with yaml-cpp.
#include "quant/qat/qconfig_data.h"

#include <yaml-cpp/yaml.h>

#include <set>
#include <stdexcept>

namespace qatlab {

namespace {

constexpr const char* kFormat = "qatlab-qconfig";
constexpr int kVersion = 1;

void emit_spec(YAML::Emitter& out, const char* key, const QuantizerSpec& q) {
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "bits" << YAML::Value << q.scheme.bits;
  out << YAML::Key << "signed" << YAML::Value << q.scheme.is_signed;
  out << YAML::Key << "symmetric" << YAML::Value << q.scheme.symmetric;
  out << YAML::Key << "per_channel" << YAML::Value << q.scheme.per_channel;
  out << YAML::Key << "axis" << YAML::Value << q.scheme.axis;
  out << YAML::Key << "narrow_range" << YAML::Value << q.scheme.narrow_range;
  out << YAML::Key << "observer" << YAML::Value << observer_kind_name(q.observer);
  out << YAML::Key << "method" << YAML::Value << quantizer_method_name(q.method);
  if (q.lsq_init) out << YAML::Key << "lsq_init" << YAML::Value << lsq_init_name(*q.lsq_init);
  if (q.lsq_grad_scale) out << YAML::Key << "lsq_grad_scale" << YAML::Value << lsq_grad_scale_name(*q.lsq_grad_scale);
  if (q.lsq_step_bounds) out << YAML::Key << "lsq_step_bounds" << YAML::Value << *q.lsq_step_bounds;
  out << YAML::EndMap;
}

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& msg) const {
    const int line = at.Mark().line >= 0 ? at.Mark().line + 1 : 1;
    throw std::runtime_error(source_ + ": stored quantization settings, line " + std::to_string(line) + ": " + msg);
  }

  YAML::Node field(const YAML::Node& map, const std::string& key) const {
    const YAML::Node v = map[key];
    if (!v) fail(map, "'" + key + "' is missing");
    return v;
  }
  template <class T>
  T get(const YAML::Node& map, const std::string& key) const {
    const YAML::Node v = field(map, key);
    try {
      return v.as<T>();
    } catch (const YAML::Exception&) {
      fail(v, "'" + key + "' has the wrong type");
    }
  }

  QuantizerSpec spec(const YAML::Node& root, const std::string& key) const {
    const YAML::Node m = field(root, key);
    if (!m.IsMap()) fail(m, "'" + key + "' must be a map");
    static const std::set<std::string> keys{"bits", "signed", "symmetric", "per_channel", "axis", "narrow_range",
                                            "observer", "method", "lsq_init", "lsq_grad_scale", "lsq_step_bounds"};
    for (const auto& kv : m)
      if (!keys.count(kv.first.as<std::string>())) fail(kv.first, "unknown field '" + kv.first.as<std::string>() + "'");
    QuantizerSpec q;
    q.scheme.bits = get<int>(m, "bits");
    q.scheme.is_signed = get<bool>(m, "signed");
    q.scheme.symmetric = get<bool>(m, "symmetric");
    q.scheme.per_channel = get<bool>(m, "per_channel");
    q.scheme.axis = get<int>(m, "axis");
    q.scheme.narrow_range = get<bool>(m, "narrow_range");
    try {
      q.observer = parse_observer_kind(get<std::string>(m, "observer"));
      q.method = parse_quantizer_method(get<std::string>(m, "method"));
      if (m["lsq_init"]) q.lsq_init = parse_lsq_init(get<std::string>(m, "lsq_init"));
      if (m["lsq_grad_scale"]) q.lsq_grad_scale = parse_lsq_grad_scale(get<std::string>(m, "lsq_grad_scale"));
      if (m["lsq_step_bounds"]) q.lsq_step_bounds = get<float>(m, "lsq_step_bounds");
    } catch (const std::invalid_argument& e) {
      fail(m, e.what());
    }
    return q;
  }

 private:
  std::string source_;
};

}  // namespace

std::string qconfig_to_data(const QConfig& q) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << kFormat << YAML::Value << kVersion;
  emit_spec(out, "weight", q.weight);
  emit_spec(out, "activation", q.activation);
  // Written only when set, so that files from before mid-rise grids read and compare as they did.
  if (q.weight_mid_rise) out << YAML::Key << "weight_range" << YAML::Value << weight_range_name(WeightRange::MidRise);
  out << YAML::Key << "layer_bits" << YAML::Value << YAML::BeginMap;
  for (const auto& [name, b] : q.layer_bits)
    out << YAML::Key << name << YAML::Value << YAML::Flow << YAML::BeginSeq << b.weight_bits << b.activation_bits
        << YAML::EndSeq;
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

QConfig qconfig_from_data(const std::string& text, const std::string& source) {
  const Reader r(source);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(source + ": stored quantization settings, line " + std::to_string(e.mark.line + 1) +
                             ": " + e.msg);
  }
  if (!root.IsMap()) r.fail(root, "not a map");
  const YAML::Node version = r.field(root, kFormat);
  if (!version.IsScalar() || version.Scalar() != std::to_string(kVersion))
    r.fail(version, "version '" + (version.IsScalar() ? version.Scalar() : std::string("?")) +
                        "' is not supported (this qatlab reads version " + std::to_string(kVersion) + ")");
  QConfig q;
  q.weight = r.spec(root, "weight");
  q.activation = r.spec(root, "activation");
  if (const YAML::Node range = root["weight_range"]) {
    if (!range.IsScalar() || range.Scalar() != weight_range_name(WeightRange::MidRise))
      r.fail(range, "'weight_range' must be mid-rise (the other ranges are the weight scheme's narrow_range)");
    q.weight_mid_rise = true;
  }
  const YAML::Node bits = r.field(root, "layer_bits");
  if (!bits.IsMap()) r.fail(bits, "'layer_bits' must be a map");
  for (const auto& kv : bits) {
    if (!kv.second.IsSequence() || kv.second.size() != 2) r.fail(kv.second, "a layer's bits are [W, A]");
    LayerBits b;
    try {
      b = {kv.second[0].as<int>(), kv.second[1].as<int>()};
    } catch (const YAML::Exception&) {
      r.fail(kv.second, "a layer's bits are two integers");
    }
    for (int v : {b.weight_bits, b.activation_bits})
      if (v != 0 && (v < 2 || v > 8)) r.fail(kv.second, "bits must be 0 (the global value) or 2..8");
    q.layer_bits[kv.first.as<std::string>()] = b;
  }
  try {
    q.validate();
  } catch (const std::invalid_argument& e) {
    r.fail(root, e.what());
  }
  return q;
}

}  // namespace qatlab
