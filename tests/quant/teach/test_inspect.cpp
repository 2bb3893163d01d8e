// test_inspect.cpp: the per-layer report of small random QAT models: rows in convert's order with
// exactly convert's multipliers and shifts, the recording forward equal to the model's, SQNR finite,
// equal to a direct computation and higher at 8 bits than at 2, the model left untouched (learned
// quantizers too), the Graphviz text, histogram data and the integer-file description; PTQ's SQNR per
// layer across bit widths.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/quant_test_util.h"
#include "quant/teach/inspect.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_input;

using test::conv_bn;
using test::same_bits;
using test::throws_with;


// conv+BN+ReLU, max pool, a residual block with a projection shortcut, global pooling, linear+ReLU, linear.
ModulePtr small_net(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(conv_bn(2, 6, 3, 1, true, rng));
  m->add(std::make_shared<MaxPool2d>(2));
  auto body = std::make_shared<Sequential>();
  body->add(conv_bn(6, 8, 3, 1, true, rng));
  body->add(conv_bn(8, 8, 3, 1, false, rng));
  m->add(std::make_shared<Residual>(body, conv_bn(6, 8, 1, 1, false, rng), true));
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(8, 12, true, rng));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(12, 5, true, rng));
  return m;
}

const Shape kInput{6, 2, 10, 10};  // (N, C, H, W)

QConfig bits(int w, int a, const std::string& wmethod = "observer", const std::string& amethod = "observer") {
  return QConfig::from_options(w, a, true, "minmax", "minmax", {}, wmethod, amethod);
}

// The same random float weights (seed 5) prepared with `qc`, its quantizers calibrated on a few batches
// in training mode (observers, BN statistics, learned quantizers' first-batch initialisation).
std::shared_ptr<QatModel> calibrated(const QConfig& qc) {
  Rng rng(5);
  auto model = prepare_qat(small_net(rng), qc);
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input(kInput, rng));
  }
  model->eval();
  return model;
}

std::vector<Tensor> batches(int n, uint64_t seed) {
  Rng rng(seed);
  std::vector<Tensor> b;
  for (int i = 0; i < n; ++i) b.push_back(random_input(kInput, rng));
  return b;
}

const LayerReport& row(const ModelReport& r, const std::string& name) {
  for (const LayerReport& l : r.layers)
    if (l.name == name) return l;
  throw std::runtime_error("no row " + name);
}

TEST(Inspect, RowsFollowConvertAndCarryItsMultipliersAndShifts) {
  auto model = calibrated(bits(4, 8));
  const ModelReport report = inspect_model(model, batches(2, 9));
  const Int8Graph graph = convert(*model, {kInput[1], kInput[2], kInput[3]});

  std::vector<std::string> op_names;
  for (const Int8Op& op : graph.ops) {
    if (op.kind == Int8OpKind::Quantize || op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected ||
        op.kind == Int8OpKind::Add)
      op_names.push_back(op.name);
  }
  std::vector<std::string> row_names;
  for (const LayerReport& l : report.layers) row_names.push_back(l.name);
  EXPECT_EQ(row_names, op_names);
  EXPECT_EQ(inspectable_layers(*model), row_names);
  ASSERT_EQ(row_names.size(), 8u);  // input, conv, 3 convs + add of the block, 2 linear
  EXPECT_EQ(row_names[0], "input_quant");

  int checked = 0;
  for (const Int8Op& op : graph.ops) {
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) {
      const LayerReport& r = row(report, op.name);
      const auto& mult = op.layer.is_conv ? op.layer.conv.output_multiplier : op.layer.fc.output_multiplier;
      const auto& shift = op.layer.is_conv ? op.layer.conv.output_shift : op.layer.fc.output_shift;
      EXPECT_EQ(r.output_multiplier, mult) << op.name;
      EXPECT_EQ(r.output_shift, shift) << op.name;
      EXPECT_EQ(r.output_multiplier.size(), static_cast<size_t>(op.layer.weight_shape[0])) << op.name;
      EXPECT_EQ(r.weights.bits, 4);
      EXPECT_EQ(r.weights.scheme, "per-channel symmetric");
      EXPECT_EQ(r.weights.qparams.scale, op.layer.weights.scale) << op.name;
      EXPECT_EQ(r.output.qparams.scale, op.layer.output.scale) << op.name;
      EXPECT_TRUE(r.lowering_error.empty()) << r.lowering_error;
      ++checked;
    } else if (op.kind == Int8OpKind::Add) {
      const LayerReport& r = row(report, op.name);
      EXPECT_EQ(r.kind, LayerReport::Kind::Add);
      EXPECT_EQ(r.output_multiplier, std::vector<int32_t>{op.add.output_multiplier});
      EXPECT_EQ(r.output_shift, std::vector<int>{op.add.output_shift});
      ++checked;
    }
  }
  EXPECT_EQ(checked, 7);

  // The per-channel scale spread and the grid range follow from the qparams.
  const LayerReport& conv = row(report, "body.0.0");
  const auto [lo, hi] = std::minmax_element(conv.weights.qparams.scale.begin(), conv.weights.qparams.scale.end());
  EXPECT_EQ(conv.weights.scale.min, *lo);
  EXPECT_EQ(conv.weights.scale.max, *hi);
  EXPECT_EQ(conv.weights.scale.count, 6);
  EXPECT_NEAR(conv.weights.grid_max, *hi * 7.0, 1e-9);  // 4-bit narrow: codes -7..7
  EXPECT_NEAR(conv.weights.grid_min, -*hi * 7.0, 1e-9);
  // The weight range is the folded weights' (the observer saw them before the last BN statistics update,
  // so they may stray a little beyond the grid).
  const Tensor folded = static_cast<const QatLayer&>(*model->submodule("body.0.0")).folded_weight();
  const auto [wlo, whi] = std::minmax_element(folded.data(), folded.data() + folded.numel());
  EXPECT_EQ(conv.weight_min, *wlo);
  EXPECT_EQ(conv.weight_max, *whi);
}

// With the residual sum at 8 bits (residual-sums=:8) the first linear layer reads the pooled sum
// requantized to its 4 bits: a row of its own ("body.4.input_requant"), in convert's order, with the
// requantize op's multiplier and shift, measured by the recording like every row; learned quantizers
// there too, which the float reference run swaps and puts back.
TEST(Inspect, RequantizedInputsAreRowsWithTheirIntegers) {
  auto model = calibrated(QConfig::from_options(4, 4, true, "minmax", "minmax", {"residual-sums=:8"}, "lsq", "lsq"));
  const Tensor before = model->forward(batches(1, 3)[0]);
  const ModelReport report = inspect_model(model, batches(2, 9));
  const Int8Graph graph = convert(*model, {kInput[1], kInput[2], kInput[3]});
  std::vector<std::string> op_names, row_names;
  for (const Int8Op& op : graph.ops)
    if (op.kind != Int8OpKind::MaxPool2d && op.kind != Int8OpKind::GlobalAvgPool && op.kind != Int8OpKind::Clamp &&
        op.kind != Int8OpKind::Dequantize && op.kind != Int8OpKind::Flatten)
      op_names.push_back(op.name);
  for (const LayerReport& l : report.layers) row_names.push_back(l.name);
  EXPECT_EQ(row_names, op_names);
  int requantizes = 0;
  for (const Int8Op& op : graph.ops) {
    if (op.kind != Int8OpKind::Requantize) continue;
    ++requantizes;
    EXPECT_EQ(op.name, "body.4.input_requant");
    const LayerReport& r = row(report, op.name);
    EXPECT_EQ(r.kind, LayerReport::Kind::Requantize);
    EXPECT_FALSE(r.has_weights);
    EXPECT_EQ(r.output.bits, 4);
    EXPECT_EQ(r.output.method, "lsq");
    EXPECT_EQ(r.output_multiplier, std::vector<int32_t>{op.requant.multiplier});
    EXPECT_EQ(r.output_shift, std::vector<int>{op.requant.shift});
    EXPECT_EQ(r.output.qparams.scale, op.grid.scale);
    EXPECT_GT(r.elements, 0);
  }
  EXPECT_EQ(requantizes, 1);
  EXPECT_TRUE(same_bits(model->forward(batches(1, 3)[0]), before)) << "inspect changed the model";
  // The drawing has the requantizer's ellipse, reached by an edge labelled as the op.
  const std::string dot = model_to_dot(*model);
  EXPECT_NE(dot.find("body.4.input_requant"), std::string::npos) << dot;
  EXPECT_NE(dot.find("label=\"requantize\""), std::string::npos) << dot;
}

TEST(Inspect, RecordingForwardIsTheModelsForward) {
  auto model = calibrated(bits(8, 8));
  const Tensor x = batches(1, 3)[0];
  NoGradGuard no_grad;
  std::vector<std::string> seen;
  const Tensor y = forward_recording(*model, x, [&](const std::string& name, const Tensor&) { seen.push_back(name); });
  EXPECT_TRUE(same_bits(y, model->forward(x)));
  EXPECT_EQ(seen, inspectable_layers(*model));
}

TEST(Inspect, SqnrIsFiniteMatchesADirectComputationAndGrowsWithBits) {
  auto model8 = calibrated(bits(8, 8));
  auto model2 = calibrated(bits(2, 2));
  const std::vector<Tensor> data = batches(3, 11);
  const ModelReport r8 = inspect_model(model8, data), r2 = inspect_model(model2, data);
  EXPECT_EQ(r8.images, 3 * kInput[0]);
  ASSERT_EQ(r8.layers.size(), r2.layers.size());
  for (size_t i = 0; i < r8.layers.size(); ++i) {
    const LayerReport &a = r8.layers[i], &b = r2.layers[i];
    EXPECT_TRUE(std::isfinite(a.sqnr_db)) << a.name << " " << a.sqnr_db;
    EXPECT_TRUE(std::isfinite(b.sqnr_db)) << b.name << " " << b.sqnr_db;
    EXPECT_GT(a.elements, 0) << a.name;
    if (i == 0) continue;  // the model input is quantized to 8 bits in both
    EXPECT_GT(a.sqnr_db, b.sqnr_db + 10.0) << a.name;  // about 6 dB per bit
    EXPECT_GT(a.sqnr_db, 20.0) << a.name;
  }
  EXPECT_GT(r8.layers[0].sqnr_db, 30.0);

  // The last row by hand: the model's output with fake-quant on, then off.
  double signal = 0, noise = 0;
  {
    NoGradGuard no_grad;
    for (const Tensor& x : data) {
      const Tensor yq = model8->forward(x);
      set_fake_quant_enabled(*model8, false);
      const Tensor yf = model8->forward(x);
      set_fake_quant_enabled(*model8, true);
      for (int64_t k = 0; k < yf.numel(); ++k) {
        signal += double(yf.data()[k]) * yf.data()[k];
        noise += (double(yq.data()[k]) - yf.data()[k]) * (double(yq.data()[k]) - yf.data()[k]);
      }
    }
  }
  const LayerReport& last = r8.layers.back();
  EXPECT_NEAR(last.signal, signal, 1e-9 * signal);
  EXPECT_NEAR(last.noise, noise, 1e-9 * noise);
  EXPECT_NEAR(last.sqnr_db, 10 * std::log10(signal / noise), 1e-9);

  // Ranges: the float output range, and the fused ReLU's rows are non-negative.
  const LayerReport& first_conv = row(r8, "body.0.0");
  EXPECT_GE(first_conv.act_min, 0.0);
  EXPECT_GT(first_conv.act_max, 0.0);
  EXPECT_GE(first_conv.clipped_fraction, 0.0);
  EXPECT_LT(first_conv.clipped_fraction, 0.5);
}

TEST(Inspect, LeavesTheModelAsItWasAndBypassesLearnedQuantizers) {
  auto model = calibrated(bits(4, 4, "lsq", "pact"));
  std::map<std::string, std::string> types_before;
  for (const auto& [name, m] : model->named_modules(model)) types_before[name] = m->type();
  EXPECT_EQ(types_before.at("body.0.0.weight_quant"), "LsqQuantizer");
  EXPECT_EQ(types_before.at("body.0.0.output_quant"), "PactQuantizer");
  const Tensor x = batches(1, 4)[0];
  Tensor before;
  {
    NoGradGuard no_grad;
    before = model->forward(x);
  }
  model->train();  // inspect must restore the mode it found
  const ModelReport report = inspect_model(model, batches(2, 12));
  EXPECT_TRUE(model->training());
  model->eval();
  for (const auto& [name, m] : model->named_modules(model)) EXPECT_EQ(m->type(), types_before[name]) << name;
  {
    NoGradGuard no_grad;
    EXPECT_TRUE(same_bits(model->forward(x), before));
  }
  // With the learned quantizers bypassed the reference is really float: 4-bit noise is far from zero.
  for (const LayerReport& r : report.layers) {
    EXPECT_TRUE(std::isfinite(r.sqnr_db)) << r.name;
    if (r.kind != LayerReport::Kind::Input) {
      EXPECT_LT(r.sqnr_db, 40.0) << r.name;
    }
  }
  EXPECT_EQ(row(report, "body.0.0").weights.method, "lsq");
  EXPECT_EQ(row(report, "body.0.0").output.method, "pact");
  EXPECT_EQ(row(report, "body.0.0").output.scheme, "per-tensor affine");
  // PACT's float reference is unclipped: the float range can exceed the learned clipping level.
  EXPECT_GE(row(report, "body.0.0").act_max, 0.0);
  const std::string text = format_report(report);
  EXPECT_NE(text.find("body.2.body.1"), std::string::npos) << text;
  EXPECT_NE(text.find("SQNR dB"), std::string::npos);
}

TEST(Inspect, FakeQuantSwitchesAreRestoredOneByOne) {
  auto model = calibrated(bits(8, 8));
  auto& fq = static_cast<FakeQuantize&>(*model->submodule("body.4.output_quant"));
  fq.enable_fake_quant(false);  // a deliberately switched-off quantizer stays off
  inspect_model(model, batches(1, 2));
  EXPECT_FALSE(fq.fake_quant_enabled());
  EXPECT_TRUE(static_cast<FakeQuantize&>(*model->submodule("body.0.0.output_quant")).fake_quant_enabled());
}

TEST(Inspect, ReportTextNamesEveryRowAndItsIntegers) {
  auto model = calibrated(bits(8, 8));
  const ModelReport report = inspect_model(model, batches(1, 2));
  const std::string text = format_report(report);
  for (const std::string& name : inspectable_layers(*model)) EXPECT_NE(text.find(name), std::string::npos) << name;
  const LayerReport& fc = row(report, "body.6");
  const auto [lo, hi] = std::minmax_element(fc.output_multiplier.begin(), fc.output_multiplier.end());
  EXPECT_NE(text.find(std::to_string(*lo) + ".." + std::to_string(*hi)), std::string::npos) << text;
  EXPECT_NE(text.find("8:8"), std::string::npos);
  EXPECT_NE(text.find("-:8"), std::string::npos);  // the input row has no weights
}

// The learned weight step of the layer `layer` (its parameter, shared: writing it changes the model).
Tensor weight_step(const QatModel& model, const std::string& layer) {
  for (auto& [name, t] : model.named_parameters())
    if (name == layer + ".weight_quant.scale") return t;
  return Tensor();
}

TEST(Inspect, ListsChannelsWhoseWeightsCarryNothing) {
  // A learned weight step grown past every weight of a channel zeroes its codes; one pushed to the floor
  // leaves codes of +-qmax * 1.2e-7. Either way the channel outputs its bias alone: listed, by channel.
  auto model = calibrated(bits(4, 4, "lsq", "lsq"));
  const std::string before = format_report(inspect_model(model, {}));
  EXPECT_NE(before.find("Dead output channels (every weight code 0, or the weight step at its floor of 1.2e-07: "
                        "the channel's output is its bias, whatever the input): none\n"),
            std::string::npos)
      << before;
  Tensor step = weight_step(*model, "body.2.body.0.0");
  ASSERT_TRUE(step.defined());
  ASSERT_EQ(step.numel(), 8);
  step.data()[2] = 1e3f;                                // every folded weight of channel 2 rounds to 0
  step.data()[5] = static_cast<float>(kMinScale);       // channel 5 at the floor
  const ModelReport report = inspect_model(model, {});
  const LayerReport& r = row(report, "body.2.body.0.0");
  EXPECT_EQ(r.zeroed_channels, std::vector<int64_t>{2});
  EXPECT_EQ(r.floor_channels, std::vector<int64_t>{5});
  EXPECT_EQ(r.out_channels, 8);
  for (const LayerReport& other : report.layers) {
    if (other.name != r.name) {
      EXPECT_TRUE(other.zeroed_channels.empty() && other.floor_channels.empty()) << other.name;
    }
  }
  const std::string text = format_report(report);
  const size_t at = text.find("Dead output channels");
  ASSERT_NE(at, std::string::npos);
  const std::string dead = text.substr(at);
  EXPECT_NE(dead.find("body.2.body.0.0"), std::string::npos) << dead;
  EXPECT_NE(dead.find("2 of 8"), std::string::npos) << dead;
  EXPECT_EQ(dead.find("none"), std::string::npos) << dead;
}

TEST(Inspect, ListsMidRiseChannelsLeftWithTheirWeightsSignsAlone) {
  // A mid-rise grid has no 0 code: a step grown past every weight of a channel leaves each code +-1. Listed
  // by channel in a section that only mid-rise models get; a narrow-grid model's report has none.
  QConfig qc = bits(4, 4, "lsq", "lsq");
  EXPECT_EQ(format_report(inspect_model(calibrated(qc), {})).find("Mid-rise channels"), std::string::npos);
  qc.set_weight_range(WeightRange::MidRise);
  auto model = calibrated(qc);
  const std::string before = format_report(inspect_model(model, {}));
  EXPECT_NE(before.find("Mid-rise channels on their innermost levels only (every weight code +-1: the channel keeps "
                        "its weights' signs alone): none\n"),
            std::string::npos)
      << before;
  Tensor step = weight_step(*model, "body.2.body.0.0");
  ASSERT_TRUE(step.defined());
  step.data()[3] = 1e3f;
  const ModelReport report = inspect_model(model, {});
  const LayerReport& r = row(report, "body.2.body.0.0");
  EXPECT_TRUE(r.weight_mid_rise);
  EXPECT_EQ(r.sign_only_channels, std::vector<int64_t>{3});
  EXPECT_TRUE(r.zeroed_channels.empty());  // no code is 0 on this grid
  const std::string text = format_report(report);
  const std::string section = text.substr(text.find("Mid-rise channels"));
  EXPECT_NE(section.find("body.2.body.0.0"), std::string::npos) << section;
  EXPECT_NE(section.find("1 of 8"), std::string::npos) << section;
}

TEST(Inspect, DotHasANodePerModuleAndPerFakeQuant) {
  auto model = calibrated(bits(4, 8));
  const std::string dot = model_to_dot(*model);
  size_t quantizers = 0;
  for (const auto& [name, m] : model->named_modules(model))
    quantizers += m->type() == "FakeQuantize" || m->type() == "LsqQuantizer" || m->type() == "PactQuantizer";
  size_t fake_quant_nodes = 0;
  for (size_t p = dot.find("class=\"fake_quant\""); p != std::string::npos; p = dot.find("class=\"fake_quant\"", p + 1))
    ++fake_quant_nodes;
  EXPECT_EQ(quantizers, 14u);  // the input, weights and output of 6 layers, the sum
  EXPECT_EQ(fake_quant_nodes, quantizers);
  EXPECT_EQ(dot.rfind("digraph qat_model {", 0), 0u);
  EXPECT_EQ(dot.substr(dot.size() - 2), "}\n");
  for (const char* name : {"body.0.0\\n", "body.1\\nMaxPool2d", "body.2.body.0.0\\n", "body.2\\nadd + relu",
                           "body.3\\nQatAvgPool", "body.6\\n", "body.2.shortcut.0.weight_quant", "4-bit per-channel"})
    EXPECT_NE(dot.find(name), std::string::npos) << name << "\n" << dot;
  EXPECT_EQ(dot.find("Identity"), std::string::npos);  // absorbed BN / ReLU do nothing at inference
}

TEST(Inspect, WeightHistogramShowsOneChannelOnItsGrid) {
  auto model = calibrated(bits(4, 8));
  const auto& layer = static_cast<const QatLayer&>(*model->submodule("body.0.0"));
  const QParams qp = layer.weight_quant().qparams();
  const int64_t largest = std::max_element(qp.scale.begin(), qp.scale.end()) - qp.scale.begin();

  const GridHistogram h = weight_histogram(*model, "body.0.0", -1, 40);
  EXPECT_EQ(h.channel, largest);
  EXPECT_NE(h.title.find("channel " + std::to_string(largest) + " of 6 (largest scale)"), std::string::npos) << h.title;
  EXPECT_NE(h.title.find("4-bit"), std::string::npos);
  ASSERT_EQ(h.counts.size(), 40u);
  ASSERT_EQ(h.edges.size(), 41u);
  double total = 0;
  for (const double c : h.counts) total += c;
  EXPECT_EQ(total, 2 * 3 * 3);  // one channel: C * KH * KW
  ASSERT_EQ(h.levels.size(), 15u);  // codes -7..7
  EXPECT_FLOAT_EQ(h.levels[8] - h.levels[7], qp.scale[largest]);
  EXPECT_NEAR(h.clip_max, 7.0 * qp.scale[largest], 1e-9);
  EXPECT_LE(h.edges.front(), h.clip_min);
  EXPECT_GE(h.edges.back(), h.clip_max);

  const GridHistogram h2 = weight_histogram(*model, "body.0.0", 2, 40);
  EXPECT_EQ(h2.channel, 2);
  EXPECT_NEAR(h2.clip_max, 7.0 * qp.scale[2], 1e-9);

  EXPECT_TRUE(throws_with([&] { weight_histogram(*model, "body.9", -1); }, {"no layer 'body.9'", "input_quant", "body.6"}));
  EXPECT_TRUE(throws_with([&] { weight_histogram(*model, "body.2", -1); }, {"no weights", "--activations"}));
  EXPECT_TRUE(throws_with([&] { weight_histogram(*model, "body.0.0", 6); }, {"--channel 6", "6 output channels"}));
}

TEST(Inspect, ActivationHistogramCountsEveryOutputOfTheFloatModel) {
  auto model = calibrated(bits(8, 8));
  const std::vector<Tensor> data = batches(2, 21);
  const GridHistogram h = activation_histogram(model, "body.2", data, 50);
  double total = 0;
  for (const double c : h.counts) total += c;
  EXPECT_EQ(total, 2 * kInput[0] * 8 * 5 * 5);  // the block's output (N, 8, 5, 5) per batch
  EXPECT_EQ(h.levels.size(), 256u);
  EXPECT_NE(h.title.find("12 images"), std::string::npos) << h.title;
  // The float outputs after the block's ReLU are >= 0: every count at or above the bin holding 0.
  double below_zero = 0;
  for (size_t b = 0; b < h.counts.size(); ++b)
    if (h.edges[b + 1] <= 0) below_zero += h.counts[b];
  EXPECT_EQ(below_zero, 0);
  EXPECT_TRUE(throws_with([&] { activation_histogram(model, "nope", data); }, {"no layer 'nope'"}));
}

TEST(Inspect, DescribesAnIntegerGraph) {
  auto model = calibrated(bits(4, 8));
  const Int8Graph graph = convert(*model, {2, 10, 10});
  const std::string text = describe_int8_graph(graph);
  EXPECT_NE(text.find(std::to_string(graph.ops.size()) + " ops"), std::string::npos) << text;
  EXPECT_NE(text.find("(1, 6, 10, 10)"), std::string::npos) << text;  // the first conv's output
  EXPECT_NE(text.find("(1, 6, 5, 5)"), std::string::npos) << text;    // after the max pool
  EXPECT_NE(text.find("(1, 5)"), std::string::npos) << text;          // the logits
  EXPECT_NE(text.find("4:8"), std::string::npos) << text;
  const auto& m = graph.ops[1].layer.conv.output_multiplier;
  const auto [lo, hi] = std::minmax_element(m.begin(), m.end());
  EXPECT_NE(text.find(std::to_string(*lo) + ".." + std::to_string(*hi)), std::string::npos) << text;
}

TEST(Inspect, RejectsNanBatchesAndUncalibratedModels) {
  auto model = calibrated(bits(8, 8));
  std::vector<Tensor> data = batches(2, 1);
  data[1].data()[7] = std::nanf("");
  EXPECT_TRUE(throws_with([&] { inspect_model(model, data); }, {"batch 1", "NaN", "element 7"}));
  Rng rng(1);
  auto fresh = prepare_qat(small_net(rng), bits(8, 8));
  EXPECT_THROW(inspect_model(fresh, batches(1, 1)), std::logic_error);
  // No batches: the static columns only, SQNR not measured.
  const ModelReport none = inspect_model(model, {});
  EXPECT_EQ(none.images, 0);
  EXPECT_TRUE(std::isnan(none.layers.back().sqnr_db));
  EXPECT_NE(format_report(none).find("n/a"), std::string::npos);
}

// A module with a quantizer of its own that the report cannot walk into (as an LSTM is).
class Opaque : public Module {
 public:
  Opaque() : Module("Opaque") { register_module("q", std::make_shared<FakeQuantize>(QScheme{})); }
  Tensor forward(const Tensor& x) override { return child("q")->forward(x); }
};

TEST(Inspect, RefusesModulesWithQuantizersItCannotFollow) {
  auto input = std::make_shared<FakeQuantize>(QScheme{});
  auto body = std::make_shared<Sequential>();
  body->add(std::make_shared<Opaque>());
  auto model = std::make_shared<QatModel>(input, body);
  Rng rng(2);
  model->train();
  {
    NoGradGuard no_grad;
    model->forward(random_input({2, 3}, rng));
  }
  EXPECT_TRUE(throws_with([&] { inspect_model(model, batches(1, 1)); }, {"cannot inspect body.0 (Opaque)", "integer file"}));
}

TEST(Inspect, ValueSpreadAndGridBits) {
  const ValueSpread s = value_spread({4, 1, 3, 2});
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 4);
  EXPECT_EQ(s.median, 2.5);
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(value_spread({7}).median, 7);
  QParams qp;
  qp.quant_min = -7, qp.quant_max = 7;
  EXPECT_EQ(grid_bits(qp), 4);
  qp.quant_min = -128, qp.quant_max = 127;
  EXPECT_EQ(grid_bits(qp), 8);
  qp.quant_min = -1, qp.quant_max = 1;
  EXPECT_EQ(grid_bits(qp), 2);
}

TEST(Inspect, PtqSqnrByBitsFallsWithTheBitsAndMatchesOneCalibratedRun) {
  Rng rng(9);
  const std::vector<Tensor> calib = {random_input(kInput, rng), random_input(kInput, rng)};
  const std::vector<Tensor> batches = {random_input(kInput, rng)};
  const auto make_float = [] {
    Rng r(5);
    return small_net(r);
  };
  const SqnrByBits s = ptq_sqnr_by_bits(make_float, {8, 4, 2}, calib, batches);
  ASSERT_EQ(s.bits, (std::vector<int>{8, 4, 2}));
  ASSERT_EQ(s.layers.size(), s.sqnr_db.size());
  ASSERT_EQ(s.layers.front(), "input_quant");
  for (size_t l = 1; l < s.layers.size(); ++l) {
    ASSERT_EQ(s.sqnr_db[l].size(), 3u);
    EXPECT_GT(s.sqnr_db[l][0], s.sqnr_db[l][1] + 6) << s.layers[l];
    EXPECT_GT(s.sqnr_db[l][1], s.sqnr_db[l][2]) << s.layers[l];
  }
  // The 4-bit column is inspect_model's SQNR of that model calibrated by hand.
  auto model = prepare_qat(make_float(), QConfig::from_options(4, 4, true, "minmax", "minmax", {}));
  size_t next = 0;
  EXPECT_EQ(calibrate_observers(*model, [&](Tensor& x) {
              if (next == calib.size()) return false;
              x = calib[next++];
              return true;
            }),
            2 * kInput[0]);
  const ModelReport r = inspect_model(model, batches);
  ASSERT_EQ(r.layers.size(), s.layers.size());
  for (size_t l = 0; l < r.layers.size(); ++l) EXPECT_EQ(r.layers[l].sqnr_db, s.sqnr_db[l][1]) << s.layers[l];
  const std::string table = format_sqnr_by_bits(s);
  EXPECT_NE(table.find("W8A8  W4A4  W2A2"), std::string::npos) << table;
  EXPECT_THROW(ptq_sqnr_by_bits(make_float, {9}, calib, batches), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
