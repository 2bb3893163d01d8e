// test_model_description.cpp: networks from description text (nn/model_description.h): the built-in
// descriptions, what a description builds (the same modules, names and parameters as the C++ it
// stands for, drawn in the same order), blocks and repeats, and one clear "FILE:LINE: what" per error.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/model_description.h"
#include "nn/residual.h"

namespace qatlab {
namespace {

ModulePtr build(const std::string& text, const ModelSpec& spec, uint64_t seed = 1) {
  Rng rng(seed);
  return build_model(parse_model_description(text, "net.yaml"), spec, rng);
}

// The message of the ModelDescriptionError that building `text` throws ("" when none).
std::string error_of(const std::string& text, const ModelSpec& spec = {1, 28, 28, 10}) {
  try {
    build(text, spec);
  } catch (const ModelDescriptionError& e) {
    return e.what();
  }
  return "";
}

bool same_state(const Module& a, const Module& b) {
  const NamedTensors sa = a.state_dict(), sb = b.state_dict();
  if (sa.size() != sb.size()) return false;
  for (size_t i = 0; i < sa.size(); ++i) {
    if (sa[i].first != sb[i].first || sa[i].second.shape() != sb[i].second.shape()) return false;
    if (std::memcmp(sa[i].second.data(), sb[i].second.data(), sa[i].second.numel() * sizeof(float)) != 0) return false;
  }
  return true;
}

TEST(ModelDescription, BuiltinModelsAreTheirFilesAndHaveTheirSizes) {
  const std::vector<std::string> names = builtin_model_names();
  EXPECT_EQ(names, (std::vector<std::string>{"cifar-cnn", "lenet5", "lstm-rows", "mlp", "mobilenet-cifar", "resnet20",
                                             "vgg-small"}));
  for (const std::string& name : names) {
    ASSERT_NE(builtin_model(name), nullptr);
    EXPECT_EQ(builtin_model(name)->name, name);  // the file's `name:` is its file name
  }
  Rng rng(0);
  // ResNet-20 with projection shortcuts (option B): 272,474 parameters on CIFAR-10 (nn/models/resnet20.yaml).
  EXPECT_EQ(build_model(*builtin_model("resnet20"), {3, 32, 32, 10}, rng)->parameter_count(), 272474);
  // 784-256-10: 784*256 + 256 + 256*10 + 10.
  EXPECT_EQ(build_model(*builtin_model("mlp"), {1, 28, 28, 10}, rng)->parameter_count(), 203530);
  EXPECT_EQ(builtin_model("vgg"), nullptr);
}

// A description builds exactly the modules the equivalent C++ builds: names, shapes, and the values
// drawn from the generator in the order the layers are written.
TEST(ModelDescription, BuildsWhatTheEquivalentCodeBuilds) {
  const std::string text = R"(qatlab-model: 1
name: small
layers:
  - group:
      name: features
      layers:
        - conv: {out: 4, kernel: 3, padding: 1, bias: false}
        - batchnorm
        - relu
        - maxpool: {kernel: 2}
        - conv: {name: dw, kernel: 3, depthwise: true, stride: 2, init: kaiming-normal-fan-out}
        - relu6
  - flatten: {name: flatten}
  - dropout: {p: 0.25}
  - linear: {name: fc, out: classes}
)";
  const ModulePtr built = build(text, {1, 12, 12, 7}, 5);

  Rng rng(5);
  auto features = std::make_shared<Sequential>();
  features->add(std::make_shared<Conv2d>(1, 4, 3, Conv2dOptions{1, 1, 1, false}, rng));
  features->add(std::make_shared<BatchNorm2d>(4));
  features->add(std::make_shared<ReLU>());
  features->add(std::make_shared<MaxPool2d>(2));
  auto dw = std::make_shared<Conv2d>(4, 4, 3, Conv2dOptions{2, 0, 4, true}, rng);
  init_kaiming_normal(dw->weight, 1 * 3 * 3, rng);
  features->add("dw", dw);
  features->add(std::make_shared<ReLU6>());
  auto expect = std::make_shared<Sequential>();
  expect->add("features", features);
  expect->add("flatten", std::make_shared<Flatten>());
  expect->add(std::make_shared<Dropout>(0.25f));
  expect->add("fc", std::make_shared<Linear>(4 * 2 * 2, 7, true, rng));

  EXPECT_TRUE(same_state(*built, *expect));
  EXPECT_EQ(built->summary(), expect->summary());
  Tensor x = Tensor::full({2, 1, 12, 12}, 0.5f);
  built->eval();
  EXPECT_EQ(built->forward(x).shape(), (Shape{2, 7}));
}

TEST(ModelDescription, BlocksTakeParametersAndRepeatsNumberTheirLayers) {
  const std::string text = R"(qatlab-model: 1
name: blocks
blocks:
  unit:
    params: {width: ~, stride: 1}
    layer:
      residual:
        body:
          - conv: {out: $width, kernel: 3, stride: $stride, padding: 1}
          - batchnorm
        shortcut:
          - conv: {out: $width, kernel: 1, stride: $stride}
layers:
  - unit: {width: 6, stride: 2}
  - repeat: {count: 2, layers: [unit: {width: 6}]}
  - global-avgpool
  - linear: {out: classes}
)";
  const ModulePtr m = build(text, {3, 8, 8, 4});
  ASSERT_EQ(m->children().size(), 5u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(m->children()[i].first, std::to_string(i));
  EXPECT_EQ(m->children()[0].second->type(), "Residual");
  EXPECT_EQ(m->submodule("0.body.0")->describe(), "3->6, k=3, stride=2, pad=1, bias=true");
  EXPECT_EQ(m->submodule("2.shortcut.0")->describe(), "6->6, k=1, stride=1, pad=0, bias=true");
  EXPECT_EQ(m->forward(Tensor::full({1, 3, 8, 8}, 1.0f)).shape(), (Shape{1, 4}));
}

TEST(ModelDescription, ErrorsNameTheFileTheLineAndWhatIsWrong) {
  const std::string head = "qatlab-model: 1\nname: bad\nlayers:\n";  // layers start on line 4
  const auto expect_error = [&](const std::string& layers, const std::string& where,
                                const std::vector<std::string>& words) {
    const std::string e = error_of(head + layers);
    EXPECT_EQ(e.rfind("net.yaml:" + where + ": ", 0), 0u) << e;
    for (const auto& w : words) EXPECT_NE(e.find(w), std::string::npos) << "'" << w << "' not in: " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  expect_error("  - flatten\n  - linar: {out: 10}\n", "5", {"unknown layer type 'linar'", "linear"});
  expect_error("  - flatten\n  - linear: {out: 10, bais: false}\n", "5", {"unknown setting 'bais'", "bias"});
  expect_error("  - conv: {kernel: 3}\n", "4", {"conv", "'out' is required"});
  expect_error("  - conv: {out: many, kernel: 3}\n", "4", {"'out' must be an integer", "many"});
  expect_error("  - conv: {out: 0, kernel: 3}\n", "4", {"'out' = 0", "1..65536"});
  expect_error("  - conv: {out: 4, kernel: 40}\n", "4", {"kernel 40", "1x28x28"});
  expect_error("  - linear: {out: 10}\n", "4", {"linear needs features", "add flatten"});
  expect_error("  - flatten\n  - linear: {out: 9}\n", "5", {"ends in 9 features", "10 classes"});
  expect_error("  - conv: {out: $w, kernel: 3}\n", "4", {"unknown parameter '$w'"});
  expect_error("  - flatten: {name: x}\n  - linear: {name: x, out: 10}\n", "5", {"two layers", "'x'"});
  expect_error("  - residual: {body: [conv: {out: 2, kernel: 1}]}\n  - flatten\n  - linear: {out: 10}\n", "4",
               {"residual", "2x28x28", "1x28x28", "identity"});
  expect_error("  - flatten\n  - linear: {out: 10, bias: maybe}\n", "5", {"'bias' must be true or false"});
  expect_error("  - flatten\n  - linear: [10]\n", "5", {"settings must be a map"});
  expect_error("  - repeat: {count: 2, layers: [repeat: {count: 2, layers: [relu]}]}\n", "4", {"repeat"});
  expect_error("  - flatten\n  - linear: {out: 10\n", "6", {});  // a YAML syntax error: its line
  // Blocks that use themselves stop at a depth limit, with a hint.
  EXPECT_NE(error_of("qatlab-model: 1\nname: loop\nblocks:\n  b: {layer: b}\nlayer: b\n").find("use itself"),
            std::string::npos);
  // The top level.
  EXPECT_NE(error_of("qatlab-model: 2\nname: x\nlayer: relu\n").find("net.yaml:1: format version '2'"),
            std::string::npos);
  EXPECT_NE(error_of("name: x\nlayer: relu\n").find("'qatlab-model' is missing"), std::string::npos);
  EXPECT_NE(error_of("qatlab-model: 1\nname: x y\nlayer: relu\n").find("net.yaml:2: 'name'"), std::string::npos);
  EXPECT_NE(error_of("qatlab-model: 1\nname: x\nlayers: []\nlayer: relu\n").find("not both"), std::string::npos);
  EXPECT_NE(error_of("qatlab-model: 1\nname: x\nlayerz: [relu]\n").find("net.yaml:3: unknown key 'layerz'"),
            std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("a model description is a map"), std::string::npos);
}

TEST(ModelDescription, TooLargeANetworkIsRefusedBeforeAnyAllocation) {
  const std::string e = error_of(
      "qatlab-model: 1\nname: huge\nlayers:\n  - flatten\n  - linear: {out: 2000}\n  - linear: {out: 65536}\n"
      "  - linear: {out: 10}\n");
  EXPECT_NE(e.find("net.yaml:6: the network has more than 100000000 parameters"), std::string::npos) << e;
}

TEST(ModelDescription, ResolvesBuiltinNamesAndFilesAndNamesTheBuiltinsOtherwise) {
  EXPECT_EQ(resolve_model("lenet5").source, "<built-in lenet5>");
  try {
    resolve_model("no-such-model");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("resnet20"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_model_description("/nonexistent/net.yaml"), ModelDescriptionError);
}

}  // namespace
}  // namespace qatlab
