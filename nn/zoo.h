// zoo.h: models by name (`--model mlp`, `--model lenet5`, `--model resnet20`), built for a given input shape.
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

std::vector<std::string> model_names();
// Throws std::invalid_argument naming the known models when `name` is unknown.
ModulePtr make_model(const std::string& name, const ModelSpec& spec, Rng& rng);

}  // namespace qatlab
