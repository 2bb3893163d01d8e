// test_cifar_models.cpp: the zoo's CIFAR-10 models (cifar-cnn, resnet20): shapes, parameter counts worked
// out by hand, stable dotted names, a few SGD steps that lower the loss, and QAT: prepare_qat -> convert
// gives an integer graph whose output codes equal the exact-mode simulation bit for bit.
//
// Shape letters: N batch, C channels, H, W.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "core/ops.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

const ModelSpec kCifar{3, 32, 32, 10};

Tensor random_input(const Shape& shape, Rng& rng) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

std::vector<int32_t> random_labels(int64_t n, int classes, Rng& rng) {
  std::vector<int32_t> labels(n);
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(classes));
  return labels;
}

Shape forward_shape(const std::string& name, const ModelSpec& spec, int64_t n) {
  Rng rng(1);
  ModulePtr model = make_model(name, spec, rng);
  model->eval();
  NoGradGuard no_grad;
  return model->forward(random_input({n, spec.channels, spec.height, spec.width}, rng)).shape();
}

TEST(CifarModels, OutputIsOneRowOfLogitsPerImage) {
  EXPECT_EQ(forward_shape("cifar-cnn", kCifar, 2), (Shape{2, 10}));
  EXPECT_EQ(forward_shape("resnet20", kCifar, 2), (Shape{2, 10}));
  // Generic in the input: 16x16 leaves cifar-cnn a 1x1 map; resnet20 takes any size (13 -> 7 -> 4).
  EXPECT_EQ(forward_shape("cifar-cnn", ModelSpec{1, 16, 16, 4}, 3), (Shape{3, 4}));
  EXPECT_EQ(forward_shape("resnet20", ModelSpec{1, 13, 13, 4}, 3), (Shape{3, 4}));
}

TEST(CifarModels, TooSmallInputIsRejectedWithItsSize) {
  Rng rng(1);
  try {
    make_model("cifar-cnn", ModelSpec{3, 12, 12, 10}, rng);
    ADD_FAILURE() << "no exception for a 12x12 input";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("12x12"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_model("resnet20", ModelSpec{3, 32, 32, 0}, rng), std::invalid_argument);
}

TEST(CifarModels, BothAreRegistered) {
  const auto names = model_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "cifar-cnn"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "resnet20"), names.end());
}

// Weights and biases, layer by layer.
constexpr int64_t conv(int64_t in, int64_t out, int64_t k, bool bias) { return out * in * k * k + (bias ? out : 0); }
constexpr int64_t fc(int64_t in, int64_t out) { return out * in + out; }
constexpr int64_t bn(int64_t c) { return 2 * c; }  // gamma and beta; running statistics are buffers

TEST(CifarModels, ParameterCountsMatchTheArchitecture) {
  Rng rng(1);
  // 32 -> 28 -> 14 -> 10 -> 5: fc1 sees 32 * 5 * 5 = 800 features.
  constexpr int64_t cnn = conv(3, 16, 5, true) + conv(16, 32, 5, true) + fc(800, 120) + fc(120, 84) + fc(84, 10);
  static_assert(cnn == 1216 + 12832 + 96120 + 10164 + 850);
  EXPECT_EQ(make_model("cifar-cnn", kCifar, rng)->parameter_count(), cnn);

  // Basic block: two 3x3 convs with BN, plus a 1x1 projection with BN where the shape changes.
  constexpr auto block = [](int64_t in, int64_t out) {
    const int64_t body = conv(in, out, 3, false) + bn(out) + conv(out, out, 3, false) + bn(out);
    return body + (in != out ? conv(in, out, 1, false) + bn(out) : 0);
  };
  constexpr int64_t resnet = conv(3, 16, 3, false) + bn(16) +                      // stem
                             3 * block(16, 16) +                                   // stage 1
                             block(16, 32) + 2 * block(32, 32) +                   // stage 2
                             block(32, 64) + 2 * block(64, 64) +                   // stage 3
                             fc(64, 10);
  static_assert(resnet == 272474);  // the paper's 0.27 M (option A, without the two projections: 269,722)
  EXPECT_EQ(make_model("resnet20", kCifar, rng)->parameter_count(), resnet);
}

std::vector<std::string> names_of(const NamedTensors& tensors) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  return names;
}

bool is_dotted_identifier(const std::string& name) {
  if (name.empty() || name.front() == '.' || name.back() == '.' || name.find("..") != std::string::npos) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; });
}

TEST(CifarModels, NamesAreDottedAndStable) {
  Rng a(1), b(99);
  ModulePtr cnn = make_model("cifar-cnn", kCifar, a);
  EXPECT_EQ(names_of(cnn->named_parameters()),
            (std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                                      "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}));

  ModulePtr r1 = make_model("resnet20", kCifar, a);
  ModulePtr r2 = make_model("resnet20", kCifar, b);
  const std::vector<std::string> params = names_of(r1->named_parameters());
  // Another seed, the same names in the same order: checkpoints and --layer-bits keys carry over.
  EXPECT_EQ(names_of(r2->named_parameters()), params);
  EXPECT_EQ(names_of(r1->state_dict()), names_of(r2->state_dict()));
  // stem 3 + nine blocks of 6 + two projections of 3 + fc 2.
  ASSERT_EQ(params.size(), 3u + 9 * 6 + 2 * 3 + 2);
  EXPECT_EQ(params.front(), "stem.conv.weight");
  EXPECT_EQ(params[3], "stage1.0.body.conv1.weight");
  EXPECT_EQ(params.back(), "fc.bias");
  const std::set<std::string> set(params.begin(), params.end());
  EXPECT_EQ(set.size(), params.size());
  for (const char* expected : {"stage2.0.body.conv1.weight", "stage2.0.body.bn2.bias", "stage2.0.shortcut.conv.weight",
                               "stage3.0.shortcut.bn.weight", "stage3.2.body.conv2.weight"})
    EXPECT_EQ(set.count(expected), 1u) << expected;
  // Identity shortcuts hold nothing, and convs before BN carry no bias.
  for (const char* absent : {"stage1.0.shortcut.conv.weight", "stage2.1.shortcut.conv.weight", "stem.conv.bias",
                             "stage2.0.body.conv1.bias", "stage2.0.shortcut.conv.bias"})
    EXPECT_EQ(set.count(absent), 0u) << absent;
  for (const auto& name : names_of(r1->state_dict())) EXPECT_TRUE(is_dotted_identifier(name)) << name;
  EXPECT_EQ(r1->submodule("stage2.0")->type(), "Residual");
  EXPECT_EQ(r1->submodule("stage2.0.shortcut")->type(), "Sequential");
  EXPECT_EQ(r1->submodule("stage2.1.shortcut")->type(), "Identity");
  EXPECT_EQ(r1->submodule("pool")->type(), "GlobalAvgPool2d");
}

// He-normal convs: the sample standard deviation of a large conv's weights is sqrt(2 / fan_out).
TEST(CifarModels, Resnet20ConvsAreHeNormal) {
  Rng rng(5);
  ModulePtr model = make_model("resnet20", kCifar, rng);
  for (auto& [name, t] : model->named_parameters()) {
    if (name != "stage3.1.body.conv1.weight") continue;
    ASSERT_EQ(t.shape(), (Shape{64, 64, 3, 3}));
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < t.numel(); ++i) sum += t.data()[i], sq += double(t.data()[i]) * t.data()[i];
    const double mean = sum / t.numel(), stddev = std::sqrt(sq / t.numel() - mean * mean);
    EXPECT_NEAR(stddev, std::sqrt(2.0 / (64 * 9)), 0.02 * std::sqrt(2.0 / (64 * 9)));
    EXPECT_NEAR(mean, 0.0, 0.002);
  }
}

// A few SGD steps on one small batch of random images lower the loss on that batch.
float loss_after_steps(ModulePtr model, const Tensor& x, const std::vector<int32_t>& labels, int steps, float lr) {
  std::vector<ParamRef> params;
  for (auto& [name, t] : model->named_parameters()) params.push_back({name, t, true});
  SGD opt(params, SgdOptions{lr, 0.9f});
  model->train();
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), labels);
    loss.backward();
    opt.step();
  }
  NoGradGuard no_grad;
  return cross_entropy(model->forward(x), labels).data()[0];
}

// In evaluation mode an image's logits do not depend on the batch it comes in: not on the other images,
// its position or the batch size (what a teacher's outputs computed ahead of training rely on).
TEST(CifarModels, EvalLogitsOfAnImageDoNotDependOnItsBatch) {
  Rng rng(3);
  ModulePtr model = make_model("resnet20", kCifar, rng);
  model->eval();
  NoGradGuard no_grad;
  const Tensor big = random_input({37, 3, 32, 32}, rng);
  const Tensor all = model->forward(big);  // (37, 10)
  const int64_t image = 3 * 32 * 32;
  for (const auto& [count, first] : {std::pair<int64_t, int64_t>{1, 20}, {5, 9}, {16, 21}, {128, 0}}) {
    // `count` images starting at `first` (wrapping), so image 20 sits at another position in each batch.
    Tensor batch = Tensor::empty({count, 3, 32, 32});
    for (int64_t i = 0; i < count; ++i)
      std::copy(big.data() + ((first + i) % 37) * image, big.data() + ((first + i) % 37 + 1) * image,
                batch.data() + i * image);
    const Tensor out = model->forward(batch);
    for (int64_t i = 0; i < count; ++i)
      for (int64_t k = 0; k < 10; ++k)
        ASSERT_EQ(out.data()[i * 10 + k], all.data()[((first + i) % 37) * 10 + k])
            << "batch of " << count << ", row " << i << ", class " << k;
  }
}

TEST(CifarModels, SgdStepsReduceTheLoss) {
  for (const char* name : {"cifar-cnn", "resnet20"}) {
    Rng rng(11);
    ModulePtr model = make_model(name, kCifar, rng);
    const Tensor x = random_input({8, 3, 32, 32}, rng);
    const std::vector<int32_t> labels = random_labels(8, 10, rng);
    model->train();
    float before;
    {
      NoGradGuard no_grad;
      before = cross_entropy(model->forward(x), labels).data()[0];
    }
    const float after = loss_after_steps(model, x, labels, 12, 0.05f);
    EXPECT_TRUE(std::isfinite(after)) << name;
    EXPECT_LT(after, 0.8f * before) << name << ": " << before << " -> " << after;
  }
}

// A few QAT steps so observers and BN statistics have values, then evaluation.
void train_a_little(const std::shared_ptr<QatModel>& model, int64_t n, Rng& rng, int steps) {
  std::vector<ParamRef> params;
  for (auto& [name, t] : model->named_parameters()) params.push_back({name, t, true});
  SGD opt(params, SgdOptions{0.01f, 0.9f});
  model->train();
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(random_input({n, 3, 32, 32}, rng)), random_labels(n, 10, rng));
    loss.backward();
    opt.step();
  }
  model->eval();
}

std::vector<int8_t> exact_codes(const std::shared_ptr<QatModel>& model, const Tensor& x, const QParams& grid) {
  NoGradGuard no_grad;
  set_exact_mode(*model, true);
  const Tensor y = model->forward(x);
  set_exact_mode(*model, false);
  return quantize_tensor(y, grid);
}

struct QatCase {
  const char* model;
  int bits;
  int convs, fcs, adds;  // integer ops the graph must hold
};

class CifarQat : public ::testing::TestWithParam<QatCase> {};

TEST_P(CifarQat, IntegerGraphEqualsExactSimulationBitForBit) {
  const QatCase& c = GetParam();
  Rng rng(42);
  const QConfig qconfig = QConfig::from_options(c.bits, c.bits, true, "minmax", "ema", {});
  auto model = prepare_qat(make_model(c.model, kCifar, rng), qconfig);
  train_a_little(model, 4, rng, 3);
  const Int8Graph graph = convert(*model, {3, 32, 32});
  int convs = 0, fcs = 0, adds = 0;
  for (const Int8Op& op : graph.ops) {
    convs += op.kind == Int8OpKind::Conv2d;
    fcs += op.kind == Int8OpKind::FullyConnected;
    adds += op.kind == Int8OpKind::Add;
  }
  EXPECT_EQ(convs, c.convs);
  EXPECT_EQ(fcs, c.fcs);
  EXPECT_EQ(adds, c.adds);
  // Shapes followed through the slots: every conv sees its own input channels (a projection shortcut
  // reads the block's input, not the output of the op before it), the graph ends with 10 logits.
  const std::vector<std::pair<Shape, Shape>> shapes = graph.op_shapes();
  ASSERT_EQ(shapes.size(), graph.ops.size());
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    if (graph.ops[i].kind == Int8OpKind::Conv2d) {
      EXPECT_EQ(shapes[i].first[0], graph.ops[i].layer.weight_shape[1]) << graph.ops[i].name;
    }
  }
  EXPECT_EQ(shapes.back().second, (Shape{10}));
  if (std::string(c.model) == "resnet20") {
    // By hand, OC*OH*OW*IC*KH*KW per conv: stem 16*32*32*3*9 = 442,368; stage 1, six 3x3 16->16 convs
    // at 32x32: 6 * 2,359,296; stage 2: 16->32 stride 2 (1,179,648), five 32->32 at 16x16 (5 * 2,359,296),
    // the 1x1 projection 32*16*16*16 = 131,072; stage 3 the same at 64 channels and 8x8 (1,179,648 +
    // 5 * 2,359,296 + 131,072); fc 64*10 = 640.
    EXPECT_EQ(graph.multiply_adds_per_image(), 40813184.0);
  }

  for (int trial = 0; trial < 2; ++trial) {
    const Tensor x = random_input({2, 3, 32, 32}, rng);
    const std::vector<int8_t> exact = exact_codes(model, x, graph.output_grid());
    Shape shape;
    EXPECT_EQ(graph.run_codes(x, &shape, KernelPath::Reference), exact) << "reference kernels";
    EXPECT_EQ(graph.run_codes(x, &shape, best_kernel_path()), exact) << kernel_path_name(best_kernel_path());
    EXPECT_EQ(shape, (Shape{2, 10}));
    // Not a constant output: the two images get different logits.
    EXPECT_FALSE(std::equal(exact.begin(), exact.begin() + 10, exact.begin() + 10));
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, CifarQat,
                         ::testing::Values(QatCase{"cifar-cnn", 8, 2, 3, 0}, QatCase{"cifar-cnn", 4, 2, 3, 0},
                                           // resnet20: stem + 18 block convs + 2 projections, 9 sums, fc.
                                           QatCase{"resnet20", 8, 21, 1, 9}, QatCase{"resnet20", 4, 21, 1, 9}),
                         [](const auto& info) {
                           std::string name = info.param.model;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name + "_w" + std::to_string(info.param.bits) + "a" + std::to_string(info.param.bits);
                         });

}  // namespace
}  // namespace qatlab
