// test_convert.cpp: prepare_qat -> convert on random models: the integer graph's output codes equal the
// exact-mode simulation bit for bit (reference and optimized kernels, before and after a save/load),
// and stay within 1 LSB of the plain float simulation layer by layer.
#include <gtest/gtest.h>

#include "quant/quant_test_util.h"
#include <omp.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>

#include "core/h5io.h"
#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/optim.h"
#include "nn/residual.h"
#include "nn/zoo.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

using test::random_input;
using test::simulation_codes;
using test::train_a_little;




int max_lsb_difference(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  int worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int(a[i]) - int(b[i])));
  return worst;
}

struct Case {
  const char* name;
  std::function<ModulePtr(Rng&)> build;
  Shape input;  // (N, C, H, W)
  int classes;
  QConfig qconfig;
};

QConfig bits(int w, int a, bool per_channel = true, const std::string& observer = "ema",
             const std::vector<std::string>& layer_bits = {}) {
  return QConfig::from_options(w, a, per_channel, "minmax", observer, layer_bits);
}

// The same with every code of the weights' bits (WeightRange::Full: [-2, 1] at 2 bits).
QConfig full_range(QConfig q) {
  q.set_weight_range(WeightRange::Full);
  return q;
}

// The same on mid-rise grids (WeightRange::MidRise: odd codes {-3, -1, 1, 3} at 2 bits).
QConfig mid_rise(QConfig q) {
  q.set_weight_range(WeightRange::MidRise);
  return q;
}

ModulePtr conv_net(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(3, 8, 3, Conv2dOptions{1, 1, 1, false}, rng));
  m->add(std::make_shared<BatchNorm2d>(8));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<MaxPool2d>(2));
  m->add(std::make_shared<Conv2d>(8, 8, 3, Conv2dOptions{2, 1, 8, true}, rng));  // depthwise, stride 2
  m->add(std::make_shared<ReLU6>());
  m->add(std::make_shared<Conv2d>(8, 12, 1, Conv2dOptions{1, 0, 1, true}, rng));  // pointwise, no activation
  m->add(std::make_shared<ReLU>());                                               // fused into the conv
  m->add(std::make_shared<AvgPool2d>(2));
  m->add(std::make_shared<Flatten>());
  m->add(std::make_shared<Linear>(12, 16, true, rng));
  m->add(std::make_shared<BatchNorm1d>(16));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(16, 5, true, rng));
  return m;
}

ModulePtr gap_net(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(1, 6, 3, Conv2dOptions{1, 0, 1, true}, rng));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Conv2d>(6, 10, 3, Conv2dOptions{2, 2, 2, false}, rng));  // groups 2, padding 2
  m->add(std::make_shared<BatchNorm2d>(10));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(10, 4, true, rng));
  return m;
}

using test::conv_bn;
// Two residual blocks: an identity shortcut, then a strided block with a 1x1 projection shortcut.
ModulePtr res_net(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(conv_bn(3, 8, 3, 1, true, rng));
  auto body1 = std::make_shared<Sequential>();
  body1->add(conv_bn(8, 8, 3, 1, true, rng));
  body1->add(conv_bn(8, 8, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body1, nullptr, true));
  auto body2 = std::make_shared<Sequential>();
  body2->add(conv_bn(8, 16, 3, 2, true, rng));
  body2->add(conv_bn(16, 16, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body2, conv_bn(8, 16, 1, 2, false, rng), true));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(16, 5, true, rng));
  return m;
}

std::vector<Case> cases() {
  return {
      {"conv_net_w8a8", conv_net, {4, 3, 12, 12}, 5, bits(8, 8)},
      {"conv_net_w4a4", conv_net, {4, 3, 12, 12}, 5, bits(4, 4)},
      {"conv_net_w3a8_per_tensor", conv_net, {3, 3, 12, 12}, 5, bits(3, 8, false)},
      {"conv_net_w8a8_histogram", conv_net, {4, 3, 12, 12}, 5, bits(8, 8, true, "histogram")},
      {"gap_net_w2a2", gap_net, {5, 1, 9, 9}, 4, bits(2, 2)},
      {"res_net_w8a8", res_net, {3, 3, 10, 10}, 5, bits(8, 8)},
      {"res_net_w4a4", res_net, {3, 3, 10, 10}, 5, bits(4, 4)},
      // The adds read 8-bit branches and write 2-bit sums (the study's low-bit ResNets).
      {"res_net_w2a2_branches_a8", res_net, {3, 3, 10, 10}, 5, bits(2, 2, true, "ema", {"residual-branches=:8"})},
      {"gap_net_w8a6_minmax", gap_net, {5, 1, 9, 9}, 4, bits(8, 6, true, "minmax")},
      {"conv_net_w4a4_full_range", conv_net, {4, 3, 12, 12}, 5, full_range(bits(4, 4))},
      {"conv_net_w3a3_lsq_full_range", conv_net, {4, 3, 12, 12}, 5,
       full_range(QConfig::from_options(3, 3, true, "minmax", "ema", {}, "lsq", "lsq", "mse"))},
      {"gap_net_w2a2_full_range_per_tensor", gap_net, {5, 1, 9, 9}, 4, full_range(bits(2, 2, false))},
      {"res_net_w2a2_full_range_first_last_8", res_net, {3, 3, 10, 10}, 5,
       full_range(bits(2, 2, true, "ema", {"residual-branches=:8", "Linear=8:8"}))},
      {"conv_net_w4a4_mid_rise", conv_net, {4, 3, 12, 12}, 5, mid_rise(bits(4, 4))},
      {"conv_net_w3a3_lsq_mid_rise", conv_net, {4, 3, 12, 12}, 5,
       mid_rise(QConfig::from_options(3, 3, true, "minmax", "ema", {}, "lsq", "lsq", "mse"))},
      {"gap_net_w2a2_mid_rise_per_tensor_histogram", gap_net, {5, 1, 9, 9}, 4,
       mid_rise(QConfig::from_options(2, 2, false, "histogram", "ema", {}))},
      {"res_net_w2a2_lsq_mid_rise_first_last_8", res_net, {3, 3, 10, 10}, 5,
       mid_rise(QConfig::from_options(2, 2, true, "minmax", "ema", {"residual-branches=:8", "Linear=8:8"}, "lsq",
                                      "lsq", "mse"))},
      // The sums at 8 bits, requantized to A bits where a conv (and at 2 bits the classifier) reads them:
      // observers, LSQ, PACT (after the blocks' ReLUs).
      {"res_net_w2a2_stream_8", res_net, {3, 3, 10, 10}, 5,
       bits(2, 2, true, "ema", {"residual-branches=:8", "residual-sums=:8"})},
      {"res_net_w3a3_lsq_stream_8", res_net, {3, 3, 10, 10}, 5,
       QConfig::from_options(3, 3, true, "minmax", "ema", {"residual-branches=:8", "residual-sums=:8", "Linear=8:8"},
                             "lsq", "lsq", "mse")},
      {"res_net_w4a4_pact_stream_8", res_net, {3, 3, 10, 10}, 5,
       QConfig::from_options(4, 4, true, "minmax", "ema", {"residual-sums=:8"}, "lsq", "pact")},
  };
}

class ConvertCase : public ::testing::TestWithParam<Case> {};

TEST_P(ConvertCase, IntegerGraphEqualsExactSimulationBitForBit) {
  const Case& c = GetParam();
  Rng rng(42);
  auto model = prepare_qat(c.build(rng), c.qconfig);
  train_a_little(model, c.input, c.classes, rng, 4);
  const Int8Graph graph = convert(*model, Shape(c.input.begin() + 1, c.input.end()));
  const std::string path = (std::filesystem::temp_directory_path() / (std::string("qatlab_convert_") + c.name + ".h5")).string();
  graph.save(path);
  const Int8Graph loaded = Int8Graph::load(path);
  std::filesystem::remove(path);

  for (int trial = 0; trial < 3; ++trial) {
    const Tensor x = random_input(c.input, rng);
    const std::vector<int8_t> exact = simulation_codes(model, x, graph.output_grid(), true);
    Shape shape;
    EXPECT_EQ(graph.run_codes(x, &shape, KernelPath::Reference), exact) << c.name << " reference kernels";
    EXPECT_EQ(graph.run_codes(x, &shape, best_kernel_path()), exact) << c.name << " " << kernel_path_name(best_kernel_path());
    EXPECT_EQ(loaded.run_codes(x, &shape, best_kernel_path()), exact) << c.name << " after save/load";
    // Exact mode on the optimized kernels (what `qatlab eval --exact` runs by default) is the same.
    EXPECT_EQ(simulation_codes(model, x, graph.output_grid(), true, best_kernel_path()), exact)
        << c.name << " exact mode on " << kernel_path_name(best_kernel_path());
    EXPECT_EQ(shape, (Shape{c.input[0], c.classes}));
  }
  // The stream cases requantize where block 2's conv and shortcut read the first sum (and, at 2 bits, where
  // the classifier reads the pooled second one); the others never.
  const auto requantizes = std::count_if(graph.ops.begin(), graph.ops.end(),
                                         [](const Int8Op& op) { return op.kind == Int8OpKind::Requantize; });
  const std::string name = c.name;
  EXPECT_EQ(requantizes, name.find("stream") == std::string::npos ? 0 : name.find("lsq") != std::string::npos ? 2 : 3)
      << name;
}

INSTANTIATE_TEST_SUITE_P(RandomModels, ConvertCase, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// Full-range weights use the lowest code: a 2-bit layer's codes fill [-2, 1] (all four occur), while a
// layer overridden to 8 bits stays [-127, 127].
TEST(Convert, FullRangeWeightsUseEveryCodeBelow8Bits) {
  Rng rng(7);
  auto model = prepare_qat(res_net(rng), full_range(bits(2, 2, true, "ema", {"residual-branches=:8", "Linear=8:"})));
  train_a_little(model, {3, 3, 10, 10}, 5, rng, 2);
  const Int8Graph graph = convert(*model, {3, 10, 10});
  int low_bit_layers = 0, eight_bit_layers = 0;
  for (const Int8Op& op : graph.ops) {
    if (op.kind != Int8OpKind::Conv2d && op.kind != Int8OpKind::FullyConnected) continue;
    const QParams& w = op.layer.weights;
    const std::vector<int8_t> codes = op.layer.weight_codes();
    if (op.kind == Int8OpKind::FullyConnected) {
      ++eight_bit_layers;
      EXPECT_EQ(w.quant_min, -127);
      EXPECT_EQ(w.quant_max, 127);
      continue;
    }
    ++low_bit_layers;
    EXPECT_EQ(w.quant_min, -2);
    EXPECT_EQ(w.quant_max, 1);
    const std::set<int> seen(codes.begin(), codes.end());
    EXPECT_EQ(seen, (std::set<int>{-2, -1, 0, 1})) << "a 2-bit conv's codes";
  }
  EXPECT_EQ(low_bit_layers, 6);
  EXPECT_EQ(eight_bit_layers, 1);
}

// Mid-rise weights have no 0 code: a 2-bit layer's codes are exactly {-3, -1, 1, 3} (the grid's odd
// codes, all four used), a 3-bit layer's the odd codes of [-7, 7]; a layer overridden to 8 bits stays
// [-127, 127] with a 0. The file records the odd grid.
TEST(Convert, MidRiseWeightsUseTheOddCodesBelow8Bits) {
  Rng rng(7);
  for (int wbits : {2, 3}) {
    auto model = prepare_qat(res_net(rng), mid_rise(QConfig::from_options(wbits, 4, true, "minmax", "ema",
                                                                          {"residual-branches=:8", "Linear=8:"},
                                                                          "lsq", "lsq", "mse")));
    train_a_little(model, {3, 3, 10, 10}, 5, rng, 2);
    const Int8Graph graph = convert(*model, {3, 10, 10});
    const std::string path = (std::filesystem::temp_directory_path() / "qatlab_convert_mid_rise.h5").string();
    graph.save(path);
    const Int8Graph loaded = Int8Graph::load(path);
    int low_bit_layers = 0, eight_bit_layers = 0;
    for (size_t i = 0; i < graph.ops.size(); ++i) {
      const Int8Op& op = graph.ops[i];
      if (op.kind != Int8OpKind::Conv2d && op.kind != Int8OpKind::FullyConnected) continue;
      const QParams& w = op.layer.weights;
      const std::vector<int8_t> codes = op.layer.weight_codes();
      EXPECT_EQ(loaded.ops[i].layer.weights.odd_codes, w.odd_codes) << "saved and loaded, op " << i;
      EXPECT_EQ(loaded.ops[i].layer.weight_codes(), codes) << "saved and loaded, op " << i;
      // In the file the odd codes are halved: 2-bit layers take 2 bits there, 3-bit ones 4.
      const std::string group = "/ops/" + std::string(i < 10 ? "00" : i < 100 ? "0" : "") + std::to_string(i);
      const H5File f = H5File::open_read(path);
      EXPECT_EQ(f.has_attr(group, "weight_halved"), w.odd_codes) << group;
      if (w.odd_codes) {
        EXPECT_EQ(f.get_attr_int(group, "weight_bits"), wbits == 2 ? 2 : 4) << group;
      }
      const std::set<int> seen(codes.begin(), codes.end());
      if (op.kind == Int8OpKind::FullyConnected) {
        ++eight_bit_layers;
        EXPECT_FALSE(w.odd_codes);
        EXPECT_EQ(w.quant_min, -127);
        EXPECT_EQ(w.quant_max, 127);
        continue;
      }
      ++low_bit_layers;
      const int q = (1 << wbits) - 1;
      EXPECT_TRUE(w.odd_codes);
      EXPECT_EQ(w.quant_min, -q);
      EXPECT_EQ(w.quant_max, q);
      for (int code : seen) EXPECT_TRUE(code % 2 != 0 && std::abs(code) <= q) << "code " << code;
      if (wbits == 2) {
        EXPECT_EQ(seen, (std::set<int>{-3, -1, 1, 3})) << "a 2-bit conv's codes";
      }
    }
    EXPECT_EQ(low_bit_layers, 6);
    EXPECT_EQ(eight_bit_layers, 1);
    std::filesystem::remove(path);
  }
}

// One layer at a time, the float simulation and the integer engine differ by at most one code: the
// float products of scales and the 31-bit multiplier move the real value by far less than one output
// step, so only a value next to a rounding boundary can land on the other side.
TEST(Convert, FloatSimulationWithinOneLsbPerLayer) {
  Rng rng(7);
  for (auto [w, a] : {std::pair{8, 8}, std::pair{4, 8}, std::pair{4, 4}, std::pair{2, 2}}) {
    auto body = std::make_shared<Sequential>();
    body->add(std::make_shared<Conv2d>(4, 16, 3, Conv2dOptions{1, 1, 1, false}, rng));
    body->add(std::make_shared<BatchNorm2d>(16));
    body->add(std::make_shared<ReLU>());
    auto model = prepare_qat(body, bits(w, a));
    model->train();
    {
      NoGradGuard no_grad;
      for (int i = 0; i < 3; ++i) model->forward(random_input({8, 4, 10, 10}, rng));
    }
    model->eval();
    const Int8Graph graph = convert(*model, {4, 10, 10});
    const Tensor x = random_input({8, 4, 10, 10}, rng);
    Shape shape;
    const std::vector<int8_t> codes = graph.run_codes(x, &shape, best_kernel_path());
    const std::vector<int8_t> sim = simulation_codes(model, x, graph.output_grid(), false);
    EXPECT_LE(max_lsb_difference(codes, sim), 1) << "W" << w << "A" << a;
    // And rarely: the simulation computes on the codes and the engine rounds once, so a flip needs a
    // value within float rounding (~1e-6 of a step) of a boundary. (gemmlowp's two roundings flipped
    // 1.5 % of these codes at W4A8.)
    int64_t differ = 0;
    for (size_t i = 0; i < codes.size(); ++i) differ += codes[i] != sim[i];
    EXPECT_LE(differ, static_cast<int64_t>(codes.size()) / 1000) << "W" << w << "A" << a;
  }
}

TEST(Convert, Lenet5FromTheZooConvertsAndMatchesExactMode) {
  Rng rng(3);
  auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(8, 8));
  train_a_little(model, {16, 1, 28, 28}, 10, rng, 3);
  const Int8Graph graph = convert(*model, {1, 28, 28});
  ASSERT_EQ(graph.ops.front().kind, Int8OpKind::Quantize);
  ASSERT_EQ(graph.ops.back().kind, Int8OpKind::Dequantize);
  int convs = 0, fcs = 0;
  for (const Int8Op& op : graph.ops) {
    convs += op.kind == Int8OpKind::Conv2d;
    fcs += op.kind == Int8OpKind::FullyConnected;
  }
  EXPECT_EQ(convs, 2);
  EXPECT_EQ(fcs, 3);
  const Tensor x = random_input({16, 1, 28, 28}, rng);
  Shape shape;
  EXPECT_EQ(graph.run_codes(x, &shape, best_kernel_path()), simulation_codes(model, x, graph.output_grid(), true));
}

// The optimized paths take groups of images through the whole graph, one group per thread at a
// time, with each conv that feeds a 2x2 max pool computing both: for any batch and thread count the
// codes equal those of the reference kernels run op by op over the whole batch.
TEST(Convert, GroupedThreadedRunEqualsReferenceForAnyBatch) {
  Rng rng(9);
  auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(8, 8));
  train_a_little(model, {16, 1, 28, 28}, 10, rng, 2);
  const Int8Graph graph = convert(*model, {1, 28, 28});
  int fused = 0;
  for (const Int8Op& op : graph.ops) fused += op.packed_conv && op.packed_conv->fused_max_pool();
  EXPECT_EQ(fused, 2);  // both convs of LeNet-5 feed a 2x2 max pool
  const int saved = omp_get_max_threads();
  for (int64_t n : {1, 2, 17, 37}) {
    const Tensor x = random_input({n, 1, 28, 28}, rng);
    Shape shape;
    const std::vector<int8_t> expect = graph.run_codes(x, &shape, KernelPath::Reference);
    EXPECT_EQ(shape, (Shape{n, 10}));
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      EXPECT_EQ(graph.run_codes(x, &shape, best_kernel_path()), expect) << n << " images, " << threads << " threads";
      EXPECT_EQ(shape, (Shape{n, 10}));
    }
    EXPECT_EQ(graph.run_codes(x, &shape, KernelPath::Portable), expect) << n << " images, portable";
    omp_set_num_threads(saved);
  }

  // Only a conv whose output goes nowhere but a 2x2 / 2 max pool has it fused.
  auto net = prepare_qat(conv_net(rng), bits(8, 8));
  train_a_little(net, {4, 3, 12, 12}, 5, rng, 1);
  const Int8Graph g = convert(*net, {3, 12, 12});
  std::vector<bool> fused_convs;
  for (const Int8Op& op : g.ops)
    if (op.kind == Int8OpKind::Conv2d) fused_convs.push_back(op.packed_conv->fused_max_pool());
  EXPECT_EQ(fused_convs, (std::vector<bool>{true, false, false}));
}

// A NaN fails the whole call with its index in the batch, whichever thread its image went to.
TEST(Convert, NaNInputIsNamedByItsIndexInTheBatch) {
  Rng rng(11);
  auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), bits(8, 8));
  train_a_little(model, {8, 1, 28, 28}, 10, rng, 1);
  const Int8Graph graph = convert(*model, {1, 28, 28});
  Tensor x = random_input({40, 1, 28, 28}, rng);
  x.data()[37 * 784 + 100] = std::nanf("");
  x.data()[39 * 784] = std::nanf("");
  for (KernelPath path : {KernelPath::Reference, best_kernel_path()}) {
    try {
      graph.run_codes(x, nullptr, path);
      ADD_FAILURE() << "no exception on a NaN input";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("input element 29108 is NaN"), std::string::npos) << e.what();
    }
  }
}

TEST(Convert, ObserversStayPutInEvaluation) {
  Rng rng(5);
  auto model = prepare_qat(make_model("mlp", ModelSpec{}, rng), bits(8, 8));
  train_a_little(model, {8, 1, 28, 28}, 10, rng, 1);
  const QParams before = model->input_quant().qparams();
  {
    NoGradGuard no_grad;
    model->forward(scale(random_input({8, 1, 28, 28}, rng), 50.0f));
  }
  const QParams after = model->input_quant().qparams();
  EXPECT_EQ(before.scale, after.scale);
  EXPECT_EQ(before.zero_point, after.zero_point);
}

TEST(Convert, RejectsWhatHasNoIntegerForm) {
  Rng rng(1);
  auto body = std::make_shared<Sequential>();
  body->add(std::make_shared<BatchNorm2d>(3));
  EXPECT_THROW(prepare_qat(body, bits(8, 8)), std::invalid_argument);
  auto unsigned_acts = QConfig::from_options(8, 8, true, "minmax", "ema", {});
  unsigned_acts.activation.scheme.is_signed = false;
  auto model = prepare_qat(make_model("mlp", ModelSpec{}, rng), unsigned_acts);
  train_a_little(model, {4, 1, 28, 28}, 10, rng, 1);
  EXPECT_THROW(convert(*model, {1, 28, 28}), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
