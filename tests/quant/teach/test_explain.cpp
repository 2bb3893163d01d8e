// test_explain.cpp: the step-by-step walk-through of one integer output arrives at the very code the
// integer graph computes, for every conv / fully connected layer of LeNet-5, at 8 and at 4 bits,
// including positions whose window reaches into the padding; for residual adds, windowed (padded) and
// global average pooling, and every step of an integer LSTM's units; and the batch-norm folding of a
// channel gives convert's weight codes and int32 bias.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/residual.h"
#include "nn/sequence_models.h"
#include "nn/zoo.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qat_layers.h"
#include "quant/teach/explain.h"
#include "tests/quant/quant_test_util.h"

namespace qatlab {
namespace {

Tensor random_images(int64_t n, Rng& rng) {
  Tensor t = Tensor::empty({n, 1, 28, 28});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

// LeNet-5 with observers that have seen a few batches, converted.
Int8Graph lenet_graph(int bits, Rng& rng) {
  const QConfig q = QConfig::from_options(bits, bits, true, "minmax", "minmax", {});
  auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), q);
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_images(8, rng));
  }
  model->eval();
  return convert(*model, {1, 28, 28});
}

TEST(Explain, WalkThroughEqualsTheGraphEverywhere) {
  for (int bits : {8, 4}) {
    Rng rng(11 + bits);
    const Int8Graph graph = lenet_graph(bits, rng);
    const Tensor image = random_images(1, rng);
    const std::vector<std::string> layers = explainable_ops(graph);
    ASSERT_EQ(layers.size(), 5u);  // 2 convs, 3 fully connected
    int checked = 0;
    for (const std::string& layer : layers)
      for (int64_t c : {0, 5})
        for (int64_t yx : {0, -1}) {
          const ExplainCheck e = explain_check(graph, layer, image, {c, yx, yx});
          EXPECT_EQ(e.computed, e.graph) << layer << " channel " << c << " at " << yx << ", W" << bits;
          ++checked;
        }
    EXPECT_EQ(checked, 20);
  }
}

TEST(Explain, TextShowsEveryStepAndAgrees) {
  Rng rng(5);
  const Int8Graph graph = lenet_graph(8, rng);
  const std::string name = explainable_ops(graph)[1];
  const std::string text = explain_output(graph, name, random_images(1, rng), {2, -1, -1});
  for (const char* part : {"1. Grids", "input_offset", "2. Accumulate in int32", "accumulator acc",
                           "output_multiplier", "rounded once", "clamp to", "the same."})
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
}

TEST(Explain, BadLayerOrPositionNamesWhatIsValid) {
  Rng rng(6);
  const Int8Graph graph = lenet_graph(8, rng);
  const Tensor image = random_images(1, rng);
  try {
    explain_output(graph, "features.99", image, {});
    FAIL() << "an unknown layer was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(explainable_ops(graph)[0]), std::string::npos) << e.what();
  }
  EXPECT_THROW(explain_output(graph, explainable_ops(graph)[0], image, {1000, 0, 0}), std::invalid_argument);
  EXPECT_THROW(explain_output(graph, explainable_ops(graph)[0], random_images(2, rng), {}), std::invalid_argument);
}

// conv + BN + ReLU, a padded 3x3 average pool, a residual block (identity shortcut), a strided block
// with a projection shortcut, a 2x2 average pool, global average pooling and a linear head.
std::shared_ptr<QatModel> pooled_res_net(int bits, Rng& rng, const std::vector<std::string>& layer_bits = {}) {
  using test::conv_bn;
  auto m = std::make_shared<Sequential>();
  m->add(conv_bn(3, 6, 3, 1, true, rng));
  m->add(std::make_shared<AvgPool2d>(3, 1, 1));
  auto body1 = std::make_shared<Sequential>();
  body1->add(conv_bn(6, 6, 3, 1, true, rng));
  body1->add(conv_bn(6, 6, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body1, nullptr, true));
  auto body2 = std::make_shared<Sequential>();
  body2->add(conv_bn(6, 8, 3, 2, true, rng));
  body2->add(conv_bn(8, 8, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body2, conv_bn(6, 8, 1, 2, false, rng), false));
  m->add(std::make_shared<AvgPool2d>(2));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(8, 5, true, rng));
  auto model = prepare_qat(m, QConfig::from_options(bits, bits, true, "minmax", "minmax", layer_bits));
  test::train_a_little(model, {4, 3, 12, 12}, 5, rng, 3);
  return model;
}

// With the sums at 8 bits, block 2's conv and shortcut read the first sum requantized to 4 bits, and the
// head the pooled second one: each requantize op explained equals the graph's code, the text every step.
TEST(Explain, RequantizeEqualsTheGraphAndShowsItsSteps) {
  Rng rng(27);
  const auto model = pooled_res_net(4, rng, {"residual-sums=:8"});
  const Int8Graph graph = convert(*model, {3, 12, 12});
  const auto shapes = graph.op_shapes();
  int requantizes = 0, checked = 0;
  std::string text;
  for (int trial = 0; trial < 3; ++trial) {
    const Tensor image = test::random_input({1, 3, 12, 12}, rng);
    for (size_t i = 0; i < graph.ops.size(); ++i) {
      const Int8Op& op = graph.ops[i];
      if (op.kind != Int8OpKind::Requantize) continue;
      requantizes += trial == 0;
      const bool flat = shapes[i].second.size() == 1;
      for (int64_t c : {0, 5})
        for (int64_t yx : {int64_t{0}, int64_t{-1}}) {
          const ExplainAt at = flat ? ExplainAt{c, -1, -1} : ExplainAt{c, yx, yx};
          const ExplainCheck e = explain_check(graph, op.name, image, at);
          EXPECT_EQ(e.computed, e.graph) << op.name << " channel " << c << " at " << yx;
          ++checked;
        }
      if (text.empty() && !flat) text = explain_output(graph, op.name, image, {1, 1, 1});
    }
  }
  EXPECT_EQ(requantizes, 3);
  EXPECT_EQ(checked, 3 * 3 * 4);
  for (const char* part : {"requantized onto the grid", "input_offset", "s_in / s_out", "(its 4 bits)",
                           "rounded once", "the same."})
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
}

TEST(Explain, AddAndAveragePoolingEqualTheGraphEverywhere) {
  for (int bits : {8, 4}) {
    Rng rng(21 + bits);
    const auto model = pooled_res_net(bits, rng);
    const Int8Graph graph = convert(*model, {3, 12, 12});
    int adds = 0, pools = 0, global = 0;
    for (const Int8Op& op : graph.ops) {
      adds += op.kind == Int8OpKind::Add;
      pools += op.kind == Int8OpKind::AvgPool2d;
      global += op.kind == Int8OpKind::GlobalAvgPool;
    }
    ASSERT_EQ(adds, 2);
    ASSERT_EQ(pools, 2);
    ASSERT_EQ(global, 1);
    const auto shapes = graph.op_shapes();  // (C, H, W) of each op's output
    int checked = 0;
    for (int trial = 0; trial < 3; ++trial) {
      const Tensor image = test::random_input({1, 3, 12, 12}, rng);
      for (size_t i = 0; i < graph.ops.size(); ++i) {
        const Int8Op& op = graph.ops[i];
        if (op.kind == Int8OpKind::GlobalAvgPool) {
          for (int64_t c = 0; c < 8; ++c) {
            const ExplainCheck e = explain_check(graph, op.name, image, {c, -1, -1});
            EXPECT_EQ(e.computed, e.graph) << op.name << " channel " << c << ", W" << bits;
            ++checked;
          }
        } else if (op.kind == Int8OpKind::Add || op.kind == Int8OpKind::AvgPool2d) {
          // Both corners (the padded windows of the 3x3 pool) and the middle.
          const int64_t last = shapes[i].second.at(1) - 1;
          for (int64_t c : {0, 5})
            for (int64_t yx : {int64_t{0}, int64_t{-1}, last}) {
              const ExplainCheck e = explain_check(graph, op.name, image, {c, yx, yx});
              EXPECT_EQ(e.computed, e.graph) << op.name << " channel " << c << " at " << yx << ", W" << bits;
              ++checked;
            }
        }
      }
    }
    EXPECT_EQ(checked, 3 * (8 + 4 * 6));
  }
}

TEST(Explain, AddAndPoolingTextsShowEveryStep) {
  Rng rng(31);
  const auto model = pooled_res_net(8, rng);
  const Int8Graph graph = convert(*model, {3, 12, 12});
  const Tensor image = test::random_input({1, 3, 12, 12}, rng);
  std::string add, pool, gap;
  for (const Int8Op& op : graph.ops) {
    if (op.kind == Int8OpKind::Add && add.empty()) add = explain_output(graph, op.name, image, {1, 0, 0});
    if (op.kind == Int8OpKind::AvgPool2d && pool.empty()) pool = explain_output(graph, op.name, image, {2, 0, 0});
    if (op.kind == Int8OpKind::GlobalAvgPool) gap = explain_output(graph, op.name, image, {3, -1, -1});
  }
  for (const char* part : {"residual add", "input1_offset", "twice_max", "input2_multiplier", "output_multiplier",
                           "2^20", "rounded once", "float sum of the two inputs", "the same."})
    EXPECT_NE(add.find(part), std::string::npos) << part << "\n" << add;
  for (const char* part : {"average pooling 3 x 3", "[", "padded positions", "ties away from zero", "the same."})
    EXPECT_NE(pool.find(part), std::string::npos) << part << "\n" << pool;
  for (const char* part : {"global average pooling over each 3 x 3 plane", "sum of the 9 codes", "the same."})
    EXPECT_NE(gap.find(part), std::string::npos) << part << "\n" << gap;
  // A global pooling output has a channel only; an add output three coordinates within its shape.
  EXPECT_THROW(explain_output(graph, graph.ops[graph.ops.size() - 3].name, image, {3, 1, 1}), std::invalid_argument);
  EXPECT_THROW(explain_output(graph, "body.2", image, {0, 99, 0}), std::invalid_argument);
}

TEST(Explain, EveryStepOfEveryLstmUnitEqualsTheGraph) {
  for (int bits : {8, 4}) {
    Rng rng(41 + bits);
    auto model = prepare_qat(std::make_shared<RowLstmClassifier>(2, 5, 4, 6, 3, rng),
                             QConfig::from_options(bits, bits, true, "minmax", "minmax", {}));
    test::train_a_little(model, {6, 2, 5, 4}, 3, rng, 4, 0.05f);
    const Int8Graph graph = convert(*model, {2, 5, 4});
    std::string lstm;
    for (const Int8Op& op : graph.ops)
      if (op.kind == Int8OpKind::Lstm) lstm = op.name;
    ASSERT_FALSE(lstm.empty());
    const Tensor image = test::random_input({1, 2, 5, 4}, rng);
    for (int64_t unit = 0; unit < 6; ++unit)
      for (int64_t step = 0; step < 5; ++step) {
        const ExplainCheck e = explain_check(graph, lstm, image, {unit, step, 0});
        EXPECT_EQ(e.computed, e.graph) << "unit " << unit << " step " << step << ", W" << bits;
      }
    const std::string text = explain_output(graph, lstm, image, {2, -1, -1});
    for (const char* part : {"hidden unit 2 at step 4", "input_offset", "gate f (forget gate, sigmoid)", "acc_x",
                             "acc_h", "recurrent_multiplier", "sigmoid_table[", "tanh_table[", "c_{t-1}",
                             "rounding right shift by 15", "o * tanh(c_t)", "hidden_multiplier", "the same.",
                             "5 of 5 equal the graph's codes"})
      EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
    EXPECT_THROW(explain_output(graph, lstm, image, {6, 0, 0}), std::invalid_argument);
    EXPECT_THROW(explain_output(graph, lstm, image, {0, 5, 0}), std::invalid_argument);
  }
}

TEST(Explain, BatchNormFoldingGivesConvertsIntegers) {
  for (int bits : {8, 4}) {
    Rng rng(51 + bits);
    const auto model = pooled_res_net(bits, rng);
    const Int8Graph graph = convert(*model, {3, 12, 12});
    int checked = 0;
    for (const Int8Op& op : graph.ops) {
      if (op.kind != Int8OpKind::Conv2d) continue;
      const auto& layer = static_cast<const QatLayer&>(*model->submodule(op.name));
      ASSERT_TRUE(layer.has_bn()) << op.name;
      for (int64_t c = 0; c < layer.out_channels(); ++c) {
        const BnFoldCheck f = bn_folding_check(layer, op.layer, c);
        EXPECT_EQ(f.weights_equal, f.weights) << op.name << " channel " << c << ", W" << bits;
        EXPECT_EQ(f.bias, f.lowered_bias) << op.name << " channel " << c << ", W" << bits;
        // The running statistics moved away from (0, 1): the folding is not the identity.
        EXPECT_NE(layer.bn_mean.data()[c], 0.0f);
      }
      ++checked;
    }
    EXPECT_EQ(checked, 6);
    const Int8Op& conv = graph.ops[1];
    const std::string text = explain_bn_folding(static_cast<const QatLayer&>(*model->submodule(conv.name)), conv.layer, 2);
    for (const char* part : {"output channel 2", "gamma = ", "sigma = sqrt(running_var + eps) = sqrt(", "sf = gamma / sigma",
                             "W_fold = W * sf", "b_fold = beta + (b - mu) * sf", "int32 bias = round_half_even",
                             "convert's: ", "weight codes of this channel equal to convert's: 27 of 27",
                             "the folding gives convert's integers exactly."})
      EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
  }
}

TEST(Explain, BatchNormFoldingRefusesALayerWithoutBatchNorm) {
  Rng rng(3);
  const auto model = pooled_res_net(8, rng);
  const Int8Graph graph = convert(*model, {3, 12, 12});
  const Int8Op& fc = graph.ops[graph.ops.size() - 2];
  ASSERT_EQ(fc.kind, Int8OpKind::FullyConnected);
  const auto& layer = static_cast<const QatLayer&>(*model->submodule(fc.name));
  EXPECT_THROW(explain_bn_folding(layer, fc.layer, 0), std::invalid_argument);
  const Int8Op& conv = graph.ops[1];
  EXPECT_THROW(explain_bn_folding(static_cast<const QatLayer&>(*model->submodule(conv.name)), conv.layer, 6),
               std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
