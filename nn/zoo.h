// zoo.h: models by name (`--model mlp`, `--model lenet5`, `--model resnet20`) or description file
// (`--model my_net.yaml`, nn/model_description.h), built for a given input shape.
#pragma once

#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/module.h"

namespace qatlab {

// What a model is built for: the input images (C, H, W) and the number of classes.
struct ModelSpec {
  int64_t channels = 1, height = 28, width = 28;
  int64_t num_classes = 10;
};

// The sizes a model may be built for: qatlab's datasets (1x28x28, 3x32x32, 10 classes) with room to
// spare. Past them a model is a typing mistake or a damaged file, whose layer sizes (an MLP's first
// layer has C*H*W inputs) would ask for gigabytes or overflow int64.
inline constexpr int64_t kMaxModelChannels = 4;
inline constexpr int64_t kMaxModelImageSide = 256;
inline constexpr int64_t kMaxModelClasses = 1000;

// Throws std::invalid_argument ("height = 65535, expected 1..256") unless every field is in range
// (num_classes from 2).
void validate_model_spec(const ModelSpec& spec);

// The built-in models' names (their descriptions are nn/models/NAME.yaml).
std::vector<std::string> model_names();
// The built-in model `name`, or else the description file at path `name`. Throws std::invalid_argument
// naming the built-in models when `name` is neither, when the spec is out of range
// (validate_model_spec), and (ModelDescriptionError) for a bad description.
ModulePtr make_model(const std::string& name, const ModelSpec& spec, Rng& rng);

}  // namespace qatlab
