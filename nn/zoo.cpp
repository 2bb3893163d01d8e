// zoo.cpp: the model zoo's architectures.
#include "nn/zoo.h"

#include <functional>
#include <map>

#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/sequence_models.h"

namespace qatlab {

namespace {

template <typename T, typename... Args>
ModulePtr make(Args&&... args) {
  return std::make_shared<T>(std::forward<Args>(args)...);
}

// 784-256-10 with ReLU (for 28x28 inputs; in general C*H*W-256-classes).
ModulePtr build_mlp(const ModelSpec& s, Rng& rng) {
  auto model = std::make_shared<Sequential>();
  model->add("flatten", make<Flatten>());
  model->add("fc1", make<Linear>(s.channels * s.height * s.width, 256, true, rng));
  model->add("relu1", make<ReLU>());
  model->add("fc2", make<Linear>(256, s.num_classes, true, rng));
  return model;
}

// LeNet-5 with batch norm: conv 6@5x5 (padding 2 keeps 28x28) + BN + ReLU + maxpool 2, conv 16@5x5 + BN +
// ReLU + maxpool 2, fc 120 + ReLU, fc 84 + ReLU, fc classes. Convolutions feeding BN carry no bias.
ModulePtr build_lenet5(const ModelSpec& s, Rng& rng) {
  auto features = std::make_shared<Sequential>();
  features->add(make<Conv2d>(s.channels, 6, 5, Conv2dOptions{1, 2, 1, false}, rng));
  features->add(make<BatchNorm2d>(6));
  features->add(make<ReLU>());
  features->add(make<MaxPool2d>(2));
  features->add(make<Conv2d>(6, 16, 5, Conv2dOptions{1, 0, 1, false}, rng));
  features->add(make<BatchNorm2d>(16));
  features->add(make<ReLU>());
  features->add(make<MaxPool2d>(2));
  const int64_t h = ((s.height + 4 - 4) / 2 - 4) / 2, w = ((s.width + 4 - 4) / 2 - 4) / 2;
  QATLAB_CHECK(h > 0 && w > 0, "lenet5: input " + std::to_string(s.height) + "x" + std::to_string(s.width) + " too small");
  auto classifier = std::make_shared<Sequential>();
  classifier->add(make<Linear>(16 * h * w, 120, true, rng));
  classifier->add(make<ReLU>());
  classifier->add(make<Linear>(120, 84, true, rng));
  classifier->add(make<ReLU>());
  classifier->add(make<Linear>(84, s.num_classes, true, rng));
  auto model = std::make_shared<Sequential>();
  model->add("features", features);
  model->add("flatten", make<Flatten>());
  model->add("classifier", classifier);
  return model;
}

const std::map<std::string, std::function<ModulePtr(const ModelSpec&, Rng&)>>& registry() {
  static const std::map<std::string, std::function<ModulePtr(const ModelSpec&, Rng&)>> models{
      {"mlp", build_mlp},
      {"lenet5", build_lenet5},
      // An LSTM over the image rows (H steps of C*W features), 128 hidden units.
      {"lstm-rows",
       [](const ModelSpec& s, Rng& rng) -> ModulePtr {
         return make<RowLstmClassifier>(s.channels, s.height, s.width, int64_t{128}, s.num_classes, rng);
       }},
  };
  return models;
}

}  // namespace

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& [name, fn] : registry()) names.push_back(name);
  return names;
}

ModulePtr make_model(const std::string& name, const ModelSpec& spec, Rng& rng) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + name + "' (known: " + known + ")");
  }
  return it->second(spec, rng);
}

}  // namespace qatlab
