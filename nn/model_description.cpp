// model_description.cpp: the "qatlab-model" description format (model_description.h) read with
// yaml-cpp, and the builder that walks it, following the input's shape from layer to layer.
#include "nn/model_description.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/format.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/init.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "nn/sequence_models.h"

namespace qatlab {

namespace {

// Past these a description is a typing mistake: the layers would ask for gigabytes.
constexpr int64_t kMaxWidth = 65536;           // channels, features, hidden units
constexpr int64_t kMaxKernel = 64;
constexpr int64_t kMaxParameters = 100000000;  // in the whole network
constexpr int kMaxBlockDepth = 32;             // blocks used inside blocks
constexpr int64_t kMaxRepeat = 1000;

// What flows between layers: an image (C, H, W) or, after flatten or a global pool, C features.
struct Flow {
  bool image = true;
  int64_t c = 0, h = 0, w = 0;
  int64_t features() const { return image ? c * h * w : c; }
  std::string str() const {
    return image ? std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w)
                 : std::to_string(c) + " features";
  }
};

// The settings each layer type takes (besides `name`).
const std::map<std::string, std::vector<std::string>>& layer_settings() {
  static const std::map<std::string, std::vector<std::string>> settings{
      {"conv", {"out", "kernel", "stride", "padding", "groups", "depthwise", "bias", "init"}},
      {"linear", {"out", "bias"}},
      {"batchnorm", {"eps", "momentum"}},
      {"relu", {}},
      {"relu6", {}},
      {"identity", {}},
      {"flatten", {}},
      {"global-avgpool", {}},
      {"maxpool", {"kernel", "stride", "padding"}},
      {"avgpool", {"kernel", "stride", "padding"}},
      {"dropout", {"p"}},
      {"group", {"layers"}},
      {"residual", {"body", "shortcut", "relu"}},
      {"repeat", {"count", "layers"}},
      {"lstm-rows-classifier", {"hidden"}},
  };
  return settings;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-')) return false;
  return true;
}

class Builder {
 public:
  Builder(const ModelDescription& d, const YAML::Node& root, const ModelSpec& spec, Rng& rng)
      : d_(d), root_(root), blocks_(root["blocks"]), spec_(spec), rng_(rng) {}

  ModulePtr build() {
    Flow flow{true, spec_.channels, spec_.height, spec_.width};
    ModulePtr model;
    if (root_["layers"]) {
      auto seq = std::make_shared<Sequential>();
      add_layers(*seq, root_["layers"], flow);
      model = seq;
    } else {
      std::string unused;
      model = layer(root_["layer"], flow, &unused);
    }
    const YAML::Node last = root_["layers"] ? root_["layers"][root_["layers"].size() - 1] : root_["layer"];
    if (flow.image || flow.c != spec_.num_classes)
      fail(last, "the network ends in " + flow.str() + ", not one score per class (" +
                      std::to_string(spec_.num_classes) + " classes)");
    return model;
  }

 private:
  [[noreturn]] void fail(const YAML::Node& at, const std::string& msg) const {
    const int line = at.Mark().line >= 0 ? at.Mark().line + 1 : 1;
    throw ModelDescriptionError(d_.source + ":" + std::to_string(line) + ": " + msg);
  }

  // A setting's node with block parameters ($name) resolved.
  YAML::Node value(const YAML::Node& node) const {
    if (node.IsScalar()) {
      const std::string s = node.Scalar();
      if (!s.empty() && s[0] == '$') {
        for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
          auto found = it->find(s.substr(1));
          if (found != it->end()) return found->second;
        }
        fail(node, "unknown parameter '" + printable(s) + "'");
      }
    }
    return node;
  }

  int64_t int_setting(const YAML::Node& args, const std::string& type, const std::string& key, int64_t fallback,
                      int64_t lo, int64_t hi, bool required = false) const {
    const YAML::Node raw = args[key];
    if (!raw) {
      if (required) fail(args, type + ": the setting '" + key + "' is required");
      return fallback;
    }
    const YAML::Node v = value(raw);
    int64_t out = 0;
    if (v.IsScalar() && v.Scalar() == "classes") {
      out = spec_.num_classes;
    } else {
      try {
        if (!v.IsScalar()) throw YAML::Exception(v.Mark(), "");
        out = v.as<int64_t>();
      } catch (const YAML::Exception&) {
        fail(raw, type + ": '" + key + "' must be an integer" + (v.IsScalar() ? ", got '" + printable(v.Scalar()) + "'" : ""));
      }
    }
    if (out < lo || out > hi)
      fail(raw, type + ": '" + key + "' = " + std::to_string(out) + ", expected " + std::to_string(lo) + ".." +
                    std::to_string(hi));
    return out;
  }

  double float_setting(const YAML::Node& args, const std::string& type, const std::string& key, double fallback,
                       double lo, double hi, bool required = false) const {
    const YAML::Node raw = args[key];
    if (!raw) {
      if (required) fail(args, type + ": the setting '" + key + "' is required");
      return fallback;
    }
    const YAML::Node v = value(raw);
    double out = 0;
    try {
      if (!v.IsScalar()) throw YAML::Exception(v.Mark(), "");
      out = v.as<double>();
    } catch (const YAML::Exception&) {
      fail(raw, type + ": '" + key + "' must be a number");
    }
    if (!(out >= lo && out <= hi))
      fail(raw, type + ": '" + key + "' = " + num_str(out) + ", expected " + num_str(lo) + ".." +
                    num_str(hi));
    return out;
  }

  bool bool_setting(const YAML::Node& args, const std::string& type, const std::string& key, bool fallback) const {
    const YAML::Node raw = args[key];
    if (!raw) return fallback;
    const YAML::Node v = value(raw);
    if (v.IsScalar() && (v.Scalar() == "true" || v.Scalar() == "false")) return v.Scalar() == "true";
    fail(raw, type + ": '" + key + "' must be true or false");
  }

  std::string string_setting(const YAML::Node& args, const std::string& type, const std::string& key,
                             const std::string& fallback, const std::vector<std::string>& allowed) const {
    const YAML::Node raw = args[key];
    if (!raw) return fallback;
    const YAML::Node v = value(raw);
    if (v.IsScalar())
      for (const auto& a : allowed)
        if (v.Scalar() == a) return a;
    fail(raw, type + ": '" + key + "' must be one of: " + join(allowed));
  }

  YAML::Node list_setting(const YAML::Node& args, const std::string& type, const std::string& key) const {
    const YAML::Node v = args[key];
    if (!v) fail(args, type + ": the setting '" + key + "' (a list of layers) is required");
    if (!v.IsSequence() || v.size() == 0) fail(v, type + ": '" + key + "' must be a non-empty list of layers");
    return v;
  }

  void count_parameters(const YAML::Node& at, int64_t n) {
    parameters_ += n;
    if (parameters_ > kMaxParameters)
      fail(at, "the network has more than " + std::to_string(kMaxParameters) + " parameters");
  }

  // One entry of a layer list: "relu", or {type: {settings}}. Returns its module and its name ("" when
  // not given) in *name. A repeat is refused here: add_layers expands it before calling this.
  ModulePtr layer(const YAML::Node& entry, Flow& flow, std::string* name) {
    // (yaml-cpp's Node::operator= writes through to the node assigned to, so nodes here are only
    // ever copy-constructed.)
    if (!entry.IsScalar() && !(entry.IsMap() && entry.size() == 1))
      fail(entry, "a layer is a type name (\"relu\") or a map with one key, the type ({conv: {out: 16, kernel: 3}})");
    const std::string type = entry.IsScalar() ? entry.Scalar() : entry.begin()->first.as<std::string>();
    const YAML::Node given = entry.IsScalar() ? YAML::Node() : YAML::Node(entry.begin()->second);
    if (!entry.IsScalar()) {
      const YAML::Node& args = given;
      if (!args.IsNull() && !args.IsMap())
        fail(entry, type + ": its settings must be a map, e.g. {" +
                        (type == "conv" ? std::string("out: 16, kernel: 3") : std::string("name: x")) + "}");
    }
    const bool block = blocks_ && blocks_[type];
    const auto known = layer_settings().find(type);
    if (!block && known == layer_settings().end()) {
      std::vector<std::string> types;
      for (const auto& [t, s] : layer_settings()) types.push_back(t);
      if (blocks_)
        for (const auto& b : blocks_) types.push_back(b.first.as<std::string>());
      fail(entry, "unknown layer type '" + printable(type) + "' (known: " + join(types) + ")");
    }
    // Every setting given must be one this type takes.
    std::vector<std::string> allowed = block ? block_params(type) : known->second;
    allowed.push_back("name");
    if (given.IsMap())
      for (const auto& kv : given) {
        const std::string key = kv.first.as<std::string>();
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
          fail(kv.first, type + ": unknown setting '" + printable(key) + "' (known: " + join(allowed) + ")");
      }
    const YAML::Node args = given.IsMap() ? given : YAML::Node(YAML::NodeType::Map);
    *name = "";
    if (args["name"]) {
      const YAML::Node v = value(args["name"]);
      if (!v.IsScalar() || !valid_name(v.Scalar()))
        fail(args["name"], type + ": a name is 1 to 64 letters, digits, '_' or '-'");
      *name = v.Scalar();
    }
    if (block) return block_instance(entry, type, args, flow);
    return builtin_layer(entry, type, args, flow);
  }

  std::vector<std::string> block_params(const std::string& type) const {
    std::vector<std::string> names;
    const YAML::Node params = blocks_[type]["params"];
    if (params && params.IsMap())
      for (const auto& p : params) names.push_back(p.first.as<std::string>());
    return names;
  }

  ModulePtr block_instance(const YAML::Node& entry, const std::string& type, const YAML::Node& args, Flow& flow) {
    const YAML::Node def = blocks_[type];
    if (static_cast<int>(scopes_.size()) >= kMaxBlockDepth)
      fail(entry, type + ": blocks nest more than " + std::to_string(kMaxBlockDepth) + " deep (does a block use itself?)");
    std::map<std::string, YAML::Node> scope;
    const YAML::Node params = def["params"];
    if (params && params.IsMap())
      for (const auto& p : params) {
        const std::string key = p.first.as<std::string>();
        if (args[key]) scope[key] = value(args[key]);
        else if (!p.second.IsNull()) scope[key] = p.second;
        else fail(entry, type + ": the parameter '" + key + "' is required");
      }
    scopes_.push_back(scope);
    ModulePtr m;
    if (def["layers"]) {
      auto seq = std::make_shared<Sequential>();
      add_layers(*seq, list_setting(def, "block " + type, "layers"), flow);
      m = seq;
    } else {
      std::string unused;
      m = layer(def["layer"], flow, &unused);
    }
    scopes_.pop_back();
    return m;
  }

  // Which model input a shape error is about.
  std::string input_note() const {
    return " (model input " + std::to_string(spec_.channels) + "x" + std::to_string(spec_.height) + "x" +
           std::to_string(spec_.width) + ")";
  }

  void need_image(const YAML::Node& at, const std::string& type, const Flow& flow) const {
    if (!flow.image) fail(at, type + " needs an image input, but gets " + flow.str());
  }

  ModulePtr builtin_layer(const YAML::Node& at, const std::string& type, const YAML::Node& args, Flow& flow) {
    if (type == "conv") {
      need_image(at, type, flow);
      const bool depthwise = bool_setting(args, type, "depthwise", false);
      const int64_t out = int_setting(args, type, "out", depthwise ? flow.c : 0, 1, kMaxWidth, !depthwise);
      const int64_t kernel = int_setting(args, type, "kernel", 0, 1, kMaxKernel, true);
      const int64_t stride = int_setting(args, type, "stride", 1, 1, kMaxKernel);
      const int64_t padding = int_setting(args, type, "padding", 0, 0, kMaxKernel);
      const int64_t groups = depthwise ? flow.c : int_setting(args, type, "groups", 1, 1, kMaxWidth);
      if (depthwise && args["groups"]) fail(args["groups"], "conv: give either depthwise or groups, not both");
      const bool bias = bool_setting(args, type, "bias", true);
      const std::string init = string_setting(args, type, "init", "default", {"default", "kaiming-normal-fan-out"});
      if (flow.c % groups != 0 || out % groups != 0)
        fail(at, "conv: channels " + std::to_string(flow.c) + " -> " + std::to_string(out) +
                     " are not divisible by groups " + std::to_string(groups));
      if (flow.h + 2 * padding < kernel || flow.w + 2 * padding < kernel)
        fail(at, "conv: kernel " + std::to_string(kernel) + " is larger than the padded input " + flow.str() + input_note());
      count_parameters(at, out * (flow.c / groups) * kernel * kernel + (bias ? out : 0));
      auto conv = std::make_shared<Conv2d>(flow.c, out, kernel, Conv2dOptions{stride, padding, groups, bias}, rng_);
      if (init == "kaiming-normal-fan-out") init_kaiming_normal(conv->weight, out / groups * kernel * kernel, rng_);
      flow = {true, out, (flow.h + 2 * padding - kernel) / stride + 1, (flow.w + 2 * padding - kernel) / stride + 1};
      return conv;
    }
    if (type == "linear") {
      if (flow.image) fail(at, "linear needs features, but gets an image " + flow.str() + " (add flatten before it)");
      const int64_t out = int_setting(args, type, "out", 0, 1, kMaxWidth, true);
      const bool bias = bool_setting(args, type, "bias", true);
      count_parameters(at, flow.c * out + (bias ? out : 0));
      auto linear = std::make_shared<Linear>(flow.c, out, bias, rng_);
      flow = {false, out, 1, 1};
      return linear;
    }
    if (type == "batchnorm") {
      const auto eps = static_cast<float>(float_setting(args, type, "eps", 1e-5, 1e-12, 1.0));
      const auto momentum = static_cast<float>(float_setting(args, type, "momentum", 0.1, 0.0, 1.0));
      count_parameters(at, 4 * flow.c);
      if (flow.image) return std::make_shared<BatchNorm2d>(flow.c, eps, momentum);
      return std::make_shared<BatchNorm1d>(flow.c, eps, momentum);
    }
    if (type == "relu") return std::make_shared<ReLU>();
    if (type == "relu6") return std::make_shared<ReLU6>();
    if (type == "identity") return std::make_shared<Identity>();
    if (type == "dropout") {
      return std::make_shared<Dropout>(static_cast<float>(float_setting(args, type, "p", 0, 0.0, 0.99, true)));
    }
    if (type == "flatten") {
      flow = {false, flow.features(), 1, 1};
      return std::make_shared<Flatten>();
    }
    if (type == "global-avgpool") {
      need_image(at, type, flow);
      flow = {false, flow.c, 1, 1};
      return std::make_shared<GlobalAvgPool2d>();
    }
    if (type == "maxpool" || type == "avgpool") {
      need_image(at, type, flow);
      const int64_t kernel = int_setting(args, type, "kernel", 0, 1, kMaxKernel, true);
      const int64_t stride = int_setting(args, type, "stride", kernel, 1, kMaxKernel);
      const int64_t padding = int_setting(args, type, "padding", 0, 0, kernel / 2);
      if (flow.h + 2 * padding < kernel || flow.w + 2 * padding < kernel)
        fail(at, type + ": kernel " + std::to_string(kernel) + " is larger than the padded input " + flow.str() + input_note());
      flow = {true, flow.c, (flow.h + 2 * padding - kernel) / stride + 1, (flow.w + 2 * padding - kernel) / stride + 1};
      if (type == "maxpool") return std::make_shared<MaxPool2d>(kernel, stride, padding);
      return std::make_shared<AvgPool2d>(kernel, stride, padding);
    }
    if (type == "group") {
      auto seq = std::make_shared<Sequential>();
      add_layers(*seq, list_setting(args, type, "layers"), flow);
      return seq;
    }
    if (type == "residual") {
      const Flow in = flow;
      auto body = std::make_shared<Sequential>();
      add_layers(*body, list_setting(args, type, "body"), flow);
      Flow through = in;
      ModulePtr shortcut;
      if (args["shortcut"]) {
        auto seq = std::make_shared<Sequential>();
        add_layers(*seq, list_setting(args, type, "shortcut"), through);
        shortcut = seq;
      }
      if (flow.image != through.image || flow.features() != through.features() || flow.c != through.c)
        fail(at, "residual: the body gives " + flow.str() + " but the shortcut " + through.str() +
                     (args["shortcut"] ? "" : " (no shortcut: identity)"));
      return std::make_shared<Residual>(body, shortcut, bool_setting(args, type, "relu", true));
    }
    if (type == "repeat") fail(at, "repeat belongs in a list of layers");
    if (type == "lstm-rows-classifier") {
      need_image(at, type, flow);
      const int64_t hidden = int_setting(args, type, "hidden", 0, 1, kMaxWidth, true);
      count_parameters(at, 4 * hidden * (flow.c * flow.w + hidden + 2) + hidden * spec_.num_classes);
      auto m = std::make_shared<RowLstmClassifier>(flow.c, flow.h, flow.w, hidden, spec_.num_classes, rng_);
      flow = {false, spec_.num_classes, 1, 1};
      return m;
    }
    fail(at, "layer type '" + type + "' is listed but not built");  // layer_settings() and this function disagree
  }

  // The entries of `list` into `seq`, in order; a repeat adds its layers `count` times.
  void add_layers(Sequential& seq, const YAML::Node& list, Flow& flow) {
    std::set<std::string> names;
    for (const auto& [n, m] : seq.children()) names.insert(n);
    const auto add = [&](const YAML::Node& entry, const std::string& name, ModulePtr m) {
      const std::string key = name.empty() ? std::to_string(seq.size()) : name;
      if (!names.insert(key).second) fail(entry, "two layers of one list are called '" + key + "'");
      if (name.empty()) seq.add(std::move(m));
      else seq.add(name, std::move(m));
    };
    for (const auto& entry : list) {
      if (entry.IsMap() && entry.size() == 1 && entry.begin()->first.as<std::string>() == "repeat" &&
          !(blocks_ && blocks_["repeat"])) {
        std::string name;
        const YAML::Node args = entry.begin()->second;
        if (!args.IsMap()) fail(entry, "repeat: its settings must be a map: {count: 3, layers: [...]}");
        for (const auto& kv : args) {
          const std::string key = kv.first.as<std::string>();
          if (key != "count" && key != "layers")
            fail(kv.first, "repeat: unknown setting '" + printable(key) + "' (known: count, layers)");
        }
        const int64_t count = int_setting(args, "repeat", "count", 0, 1, kMaxRepeat, true);
        const YAML::Node body = list_setting(args, "repeat", "layers");
        for (int64_t i = 0; i < count; ++i)
          for (const auto& inner : body) {
            ModulePtr m = layer(inner, flow, &name);
            if (!name.empty()) fail(inner, "repeat: the layers of a repeat are numbered, so they take no name");
            add(inner, "", std::move(m));
          }
        continue;
      }
      std::string name;
      ModulePtr m = layer(entry, flow, &name);
      add(entry, name, std::move(m));
    }
  }

  const ModelDescription& d_;
  YAML::Node root_, blocks_;
  const ModelSpec& spec_;
  Rng& rng_;
  std::vector<std::map<std::string, YAML::Node>> scopes_;  // block parameters, innermost last
  int64_t parameters_ = 0;
};

YAML::Node load_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ModelDescriptionError(source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

// The top level's structure: format and version, name, and layers or layer.
void check_top_level(const YAML::Node& root, const std::string& source) {
  const auto fail = [&](const YAML::Node& at, const std::string& msg) {
    const int line = at && at.Mark().line >= 0 ? at.Mark().line + 1 : 1;
    throw ModelDescriptionError(source + ":" + std::to_string(line) + ": " + msg);
  };
  if (!root.IsMap()) fail(root, "a model description is a map starting with 'qatlab-model: 1'");
  static const std::set<std::string> keys{kModelFormat, "name", "description", "blocks", "layers", "layer"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (!keys.count(key))
      fail(kv.first, "unknown key '" + printable(key) + "' (known: qatlab-model, name, description, blocks, layers, layer)");
  }
  const YAML::Node version = root[kModelFormat];
  if (!version) fail(root, std::string("not a qatlab model description: the key '") + kModelFormat + "' is missing");
  if (!version.IsScalar() || version.Scalar() != std::to_string(kModelFormatVersion))
    fail(version, "format version '" + printable(version.IsScalar() ? version.Scalar() : "?") +
                      "' is not supported (this qatlab reads version " + std::to_string(kModelFormatVersion) + ")");
  const YAML::Node name = root["name"];
  if (!name || !name.IsScalar() || !valid_name(name.Scalar()))
    fail(name ? name : root, "'name' must be 1 to 64 letters, digits, '_' or '-'");
  if (!!root["layers"] == !!root["layer"]) fail(root, "give the network as 'layers' (a list) or 'layer' (one), not both or neither");
  if (root["layers"] && (!root["layers"].IsSequence() || root["layers"].size() == 0))
    fail(root["layers"], "'layers' must be a non-empty list");
  const YAML::Node blocks = root["blocks"];
  if (blocks) {
    if (!blocks.IsMap()) fail(blocks, "'blocks' must be a map of block names to blocks");
    for (const auto& b : blocks) {
      const std::string bname = b.first.as<std::string>();
      if (!valid_name(bname) || layer_settings().count(bname))
        fail(b.first, "block '" + printable(bname) + "': a block needs a name of its own (not a layer type)");
      if (!b.second.IsMap()) fail(b.second, "block " + bname + ": a block is a map with 'params' and 'layers' or 'layer'");
      for (const auto& kv : b.second) {
        const std::string key = kv.first.as<std::string>();
        if (key != "params" && key != "layers" && key != "layer")
          fail(kv.first, "block " + bname + ": unknown key '" + printable(key) + "' (known: params, layers, layer)");
      }
      if (!!b.second["layers"] == !!b.second["layer"]) fail(b.second, "block " + bname + ": give 'layers' or 'layer'");
      if (b.second["params"] && !b.second["params"].IsMap())
        fail(b.second["params"], "block " + bname + ": 'params' maps each parameter to its default (~ for none)");
    }
  }
}

}  // namespace

ModelDescription parse_model_description(const std::string& text, const std::string& source) {
  const YAML::Node root = load_yaml(text, source);
  check_top_level(root, source);
  return {root["name"].Scalar(), text, source};
}

ModelDescription read_model_description(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    throw ModelDescriptionError(path + ": not a readable file");
  if (std::filesystem::file_size(path, ec) > (1 << 20))
    throw ModelDescriptionError(path + ": larger than 1 MiB, not a model description");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw ModelDescriptionError(path + ": cannot be read");
  return parse_model_description(text.str(), path);
}

ModulePtr build_model(const ModelDescription& description, const ModelSpec& spec, Rng& rng) {
  validate_model_spec(spec);
  const YAML::Node root = load_yaml(description.text, description.source);
  check_top_level(root, description.source);
  try {
    return Builder(description, root, spec, rng).build();
  } catch (const YAML::Exception& e) {  // a conversion the checks above did not foresee
    throw ModelDescriptionError(description.source + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
}

ModelDescription resolve_model(const std::string& value) {
  if (const ModelDescription* d = builtin_model(value)) return *d;
  std::error_code ec;
  if (std::filesystem::exists(value, ec)) return read_model_description(value);
  throw std::invalid_argument("unknown model '" + printable(value) + "': neither a built-in model (" +
                              join(builtin_model_names()) + ") nor a description file");
}

}  // namespace qatlab
