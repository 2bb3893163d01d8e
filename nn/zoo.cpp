// zoo.cpp: the model zoo's architectures.
#include "nn/zoo.h"

#include <functional>
#include <map>

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

// A small LeNet-style CNN for CIFAR-10: conv 16@5x5 + ReLU + maxpool 2, conv 32@5x5 + ReLU +
// maxpool 2, fc 120 + ReLU, fc 84 + ReLU, fc classes. For 3x32x32: 32 -> 28 -> 14 -> 10 -> 5, so fc1 sees
// 32*5*5 features. No batch norm: a plain baseline beside resnet20.
ModulePtr build_cifar_cnn(const ModelSpec& s, Rng& rng) {
  const int64_t h = ((s.height - 4) / 2 - 4) / 2, w = ((s.width - 4) / 2 - 4) / 2;
  QATLAB_CHECK(s.height >= 16 && s.width >= 16 && h > 0 && w > 0,
               "cifar-cnn: input " + std::to_string(s.height) + "x" + std::to_string(s.width) + " too small (need at least 16x16)");
  auto model = std::make_shared<Sequential>();
  model->add("conv1", make<Conv2d>(s.channels, 16, 5, Conv2dOptions{1, 0, 1, true}, rng));
  model->add("relu1", make<ReLU>());
  model->add("pool1", make<MaxPool2d>(2));
  model->add("conv2", make<Conv2d>(16, 32, 5, Conv2dOptions{1, 0, 1, true}, rng));
  model->add("relu2", make<ReLU>());
  model->add("pool2", make<MaxPool2d>(2));
  model->add("flatten", make<Flatten>());
  model->add("fc1", make<Linear>(32 * h * w, 120, true, rng));
  model->add("relu3", make<ReLU>());
  model->add("fc2", make<Linear>(120, 84, true, rng));
  model->add("relu4", make<ReLU>());
  model->add("fc3", make<Linear>(84, s.num_classes, true, rng));
  return model;
}

// A bias-free convolution (a BatchNorm follows) with He-normal weights, fan_out mode as in the reference
// ResNet implementations.
ModulePtr resnet_conv(int64_t in, int64_t out, int64_t kernel, int64_t stride, Rng& rng) {
  auto conv = std::make_shared<Conv2d>(in, out, kernel, Conv2dOptions{stride, kernel / 2, 1, false}, rng);
  init_kaiming_normal(conv->weight, out * kernel * kernel, rng);
  return conv;
}

// One basic block: body = conv3x3(stride) + BN + ReLU, conv3x3 + BN; the sum goes through ReLU. When
// the shape changes (stride 2, more channels) the shortcut is a 1x1 stride-2 conv + BN projection (the
// paper's option B) rather than option A's zero-padded subsampling: a projection is an ordinary
// conv + BN that prepare_qat fuses and convert lowers like any other, where zero-padding channels would
// need an op of its own in the integer graph. It costs 2,752 parameters over option A (272,474 in all).
ModulePtr basic_block(int64_t in, int64_t out, int64_t stride, Rng& rng) {
  auto body = std::make_shared<Sequential>();
  body->add("conv1", resnet_conv(in, out, 3, stride, rng));
  body->add("bn1", make<BatchNorm2d>(out));
  body->add("relu1", make<ReLU>());
  body->add("conv2", resnet_conv(out, out, 3, 1, rng));
  body->add("bn2", make<BatchNorm2d>(out));
  ModulePtr shortcut;  // null: identity
  if (stride != 1 || in != out) {
    auto proj = std::make_shared<Sequential>();
    proj->add("conv", resnet_conv(in, out, 1, stride, rng));
    proj->add("bn", make<BatchNorm2d>(out));
    shortcut = proj;
  }
  return make<Residual>(body, shortcut, true);
}

// ResNet-20 for CIFAR (He et al. 2016, section 4.2, n = 3): conv 16@3x3 + BN + ReLU, three stages of
// three basic blocks with 16, 32 and 64 channels (stages 2 and 3 start with stride 2: 32 -> 16 -> 8 for
// 32x32 inputs), global average pooling, fc classes. Names: "stem.conv", "stage2.0.body.conv1",
// "stage2.0.shortcut.conv", "fc". Works for any input size (each stride-2 stage rounds up).
ModulePtr build_resnet20(const ModelSpec& s, Rng& rng) {
  QATLAB_CHECK(s.channels > 0 && s.height > 0 && s.width > 0 && s.num_classes > 0,
               "resnet20: input " + std::to_string(s.channels) + "x" + std::to_string(s.height) + "x" +
                   std::to_string(s.width) + " and classes " + std::to_string(s.num_classes) + " must be positive");
  auto stem = std::make_shared<Sequential>();
  stem->add("conv", resnet_conv(s.channels, 16, 3, 1, rng));
  stem->add("bn", make<BatchNorm2d>(16));
  stem->add("relu", make<ReLU>());
  auto model = std::make_shared<Sequential>();
  model->add("stem", stem);
  int64_t in = 16;
  const int64_t widths[3] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage) {
    auto blocks = std::make_shared<Sequential>();
    for (int b = 0; b < 3; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      blocks->add(basic_block(in, widths[stage], stride, rng));
      in = widths[stage];
    }
    model->add("stage" + std::to_string(stage + 1), blocks);
  }
  model->add("pool", make<GlobalAvgPool2d>());  // (N, 64, H/4, W/4) -> (N, 64)
  model->add("fc", make<Linear>(64, s.num_classes, true, rng));
  return model;
}

const std::map<std::string, std::function<ModulePtr(const ModelSpec&, Rng&)>>& registry() {
  static const std::map<std::string, std::function<ModulePtr(const ModelSpec&, Rng&)>> models{
      {"mlp", build_mlp},
      {"lenet5", build_lenet5},
      {"cifar-cnn", build_cifar_cnn},
      {"resnet20", build_resnet20},
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
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + printable(name) + "' (known: " + known + ")");
  }
  validate_model_spec(spec);
  return it->second(spec, rng);
}

}  // namespace qatlab
