// zoo.cpp: models by name: the built-in descriptions (nn/models/*.yaml) or a description file.
#include "nn/zoo.h"

#include <stdexcept>

#include "nn/model_description.h"

namespace qatlab {

std::vector<std::string> model_names() { return builtin_model_names(); }

void validate_model_spec(const ModelSpec& spec) {
  const auto in_range = [](int64_t v, int64_t lo, int64_t hi, const char* name) {
    if (v < lo || v > hi)
      throw std::invalid_argument(std::string(name) + " = " + std::to_string(v) + ", expected " + std::to_string(lo) +
                                  ".." + std::to_string(hi));
  };
  in_range(spec.channels, 1, kMaxModelChannels, "channels");
  in_range(spec.height, 1, kMaxModelImageSide, "height");
  in_range(spec.width, 1, kMaxModelImageSide, "width");
  in_range(spec.num_classes, 2, kMaxModelClasses, "num_classes");
}

ModulePtr make_model(const std::string& name, const ModelSpec& spec, Rng& rng) {
  return build_model(resolve_model(name), spec, rng);
}

}  // namespace qatlab
