// model_description.h: networks written as text (a YAML file, `--model FILE`) and built into modules.
//
// The format ("qatlab-model", version 1) is documented with examples in nn/models/README.md; the zoo's
// own networks are such files (nn/models/*.yaml), compiled into the program. In short:
//
//   qatlab-model: 1
//   name: lenet5
//   layers:                       # a Sequential; each entry is one layer
//     - group: {name: features, layers: [...]}
//     - conv: {out: 6, kernel: 5, padding: 2, bias: false}
//     - batchnorm
//     - relu
//     - linear: {out: classes}    # `classes`: the data set's class count
//
// Layers know their input from the layer before (channels, image size, features), so a description
// never states an input size. Parametrised blocks (`blocks:`) are used like layer types, with `$name`
// standing for a parameter. Every error names the file, the line and what is wrong.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/module.h"
#include "nn/zoo.h"

namespace qatlab {

inline constexpr const char* kModelFormat = "qatlab-model";
inline constexpr int64_t kModelFormatVersion = 1;

// A description file that does not parse or describes no valid network: "FILE:LINE: what is wrong".
class ModelDescriptionError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct ModelDescription {
  std::string name;    // the network's `name:`
  std::string text;    // the description itself, as read (checkpoints store it)
  std::string source;  // where it came from, for messages: a path, or "<built-in NAME>"
};

// Parses `text` and checks its structure (format, version, keys, layer types and their settings)
// without building anything. Throws ModelDescriptionError.
ModelDescription parse_model_description(const std::string& text, const std::string& source);

// The description in file `path`. Throws ModelDescriptionError when it cannot be read or parsed.
ModelDescription read_model_description(const std::string& path);

// The model a description stands for, built for `spec` (input shape and classes), its parameters
// drawn from `rng` in the order the layers are written. Throws ModelDescriptionError for a layer that
// does not fit its input ("conv: kernel 5 is larger than the padded input 3x3").
ModulePtr build_model(const ModelDescription& description, const ModelSpec& spec, Rng& rng);

// The zoo's descriptions, compiled in from nn/models/*.yaml: names and texts.
std::vector<std::string> builtin_model_names();
// The built-in description called `name`, or nullptr.
const ModelDescription* builtin_model(const std::string& name);

// What `--model VALUE` means: a built-in name, or else a description file. Throws std::invalid_argument
// naming the built-in models when VALUE is neither, ModelDescriptionError for a bad file.
ModelDescription resolve_model(const std::string& value);

}  // namespace qatlab
