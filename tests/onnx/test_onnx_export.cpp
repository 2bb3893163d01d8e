// test_onnx_export.cpp: the ONNX export of integer graphs. Every export passes onnx::checker; ONNX Runtime
// (apps/scripts/onnx_run.js, the npm package onnxruntime-node that apps/scripts/fetch_onnxruntime.sh
// installs) runs the exported model on random raw pixels and its output codes are compared with the
// integer graph's: LeNet-5 at W8A8 and W4A4 (the Clip of 4-bit grids), ResNet-20 at W8A8 (residual adds,
// the global average pool), and a hand-made graph of average pools whose windows often sum to a tie,
// where the export must round exactly as ours does. Float models (MLP, LeNet-5, ResNet-20) exported with
// float operators give their own logits up to float rounding. Without node or the package the tests that
// run ONNX Runtime are skipped, saying so.
//
// Shape letters: N images, C channels, H x W image, K outputs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/zoo.h"
#include "quant/engine/requantize.h"
#include "quant/onnx/onnx_export.h"
#include "quant/onnx/onnx_float_export.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/quant_test_util.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

const fs::path kScripts = fs::path(__FILE__).parent_path().parent_path().parent_path() / "apps" / "scripts";

// The pixel table of a (p / 255 - mean) / std normalisation on the graph's entry grid.
void give_pixel_table(Int8Graph& graph, float mean, float std) {
  const int64_t c = graph.input_shape[0];
  Tensor values = Tensor::empty({c, 256});
  for (int64_t k = 0; k < c; ++k)
    for (int p = 0; p < 256; ++p) values.data()[k * 256 + p] = (static_cast<float>(p) / 255.0f - mean) / std;
  set_pixel_table(graph, values, std::vector<float>(static_cast<size_t>(c), mean),
                  std::vector<float>(static_cast<size_t>(c), std));
}

// A model of the zoo, prepared at wbits / abits, its observers run over a few random batches, converted,
// with a pixel table.
Int8Graph random_graph(const std::string& name, const ModelSpec& spec, int wbits, int abits, uint64_t seed,
                       WeightRange weight_range = WeightRange::Narrow) {
  Rng rng(seed);
  QConfig q = QConfig::from_options(wbits, abits, true, "minmax", "ema", {}, "observer", "observer");
  q.set_weight_range(weight_range);
  const auto model = prepare_qat(make_model(name, spec, rng), q);
  test::train_a_little(model, {8, spec.channels, spec.height, spec.width}, static_cast<int>(spec.num_classes), rng, 3);
  Int8Graph graph = convert(*model, {spec.channels, spec.height, spec.width});
  give_pixel_table(graph, 0.45f, 0.25f);
  return graph;
}

std::vector<uint8_t> random_pixels(int64_t count, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> px(static_cast<size_t>(count));
  for (auto& p : px) p = static_cast<uint8_t>(rng.below(256));
  return px;
}

// ONNX Runtime's output codes for n images, or a reason to skip in `skip`.
std::vector<int8_t> run_in_onnxruntime(const std::string& model_path, const std::vector<uint8_t>& pixels, const Shape& nchw,
                                       std::string* skip) {
  if (std::system("command -v node >/dev/null 2>&1") != 0) {
    *skip = "node is not installed: the ONNX Runtime comparison needs it (apt-get install nodejs)";
    return {};
  }
  const std::string stem = (fs::temp_directory_path() / ("qatlab_onnx_" + std::to_string(::getpid()))).string();
  const std::string in = stem + ".pixels", out = stem + ".codes", log = stem + ".log";
  std::ofstream(in, std::ios::binary).write(reinterpret_cast<const char*>(pixels.data()),
                                            static_cast<std::streamsize>(pixels.size()));
  const std::string cmd = "node '" + (kScripts / "onnx_run.js").string() + "' '" + model_path + "' --out '" + out +
                          "' --pixels '" + in + "' --shape " + std::to_string(nchw[0]) + "," + std::to_string(nchw[1]) +
                          "," + std::to_string(nchw[2]) + "," + std::to_string(nchw[3]) + " --batch 16 >'" + log +
                          "' 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream log_in(log);
  const std::string log_text((std::istreambuf_iterator<char>(log_in)), std::istreambuf_iterator<char>());
  std::vector<int8_t> codes;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
    *skip = "ONNX Runtime for node is not installed (run apps/scripts/fetch_onnxruntime.sh): " + log_text;
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    ADD_FAILURE() << cmd << " failed:\n" << log_text;
  } else {
    std::ifstream f(out, std::ios::binary);
    codes.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  for (const auto& p : {in, out, log}) fs::remove(p);
  return codes;
}

struct Agreement {
  int64_t values = 0, equal = 0, max_difference = 0;
};

// The graph's codes (reference kernels) against ONNX Runtime's on n random images.
Agreement compare_with_onnxruntime(const Int8Graph& graph, int64_t n, uint64_t seed, std::string* skip,
                                   const OnnxExportOptions& options = {}) {
  const Shape nchw{n, graph.input_shape[0], graph.input_shape[1], graph.input_shape[2]};
  const std::vector<uint8_t> pixels = random_pixels(shape_numel(nchw), seed);
  Shape out_shape;
  const std::vector<int8_t> ours = graph.run_pixel_codes(pixels.data(), n, &out_shape, KernelPath::Reference);
  test::TempFile model("model.onnx");
  save_onnx(graph, model.path(), options);
  const std::vector<int8_t> theirs = run_in_onnxruntime(model.path(), pixels, nchw, skip);
  Agreement a;
  if (!skip->empty() || theirs.empty()) return a;
  EXPECT_EQ(theirs.size(), ours.size());
  for (size_t k = 0; k < std::min(ours.size(), theirs.size()); ++k) {
    const int64_t d = std::abs(static_cast<int64_t>(ours[k]) - theirs[k]);
    a.values++;
    a.equal += d == 0;
    a.max_difference = std::max(a.max_difference, d);
  }
  return a;
}

struct ZooCase {
  std::string model;
  ModelSpec spec;
  int wbits, abits;
  bool uint8_activations;
  WeightRange weight_range = WeightRange::Narrow;  // mid-rise: odd weight codes on half a level's distance
};

class OnnxRuntimeAgrees : public ::testing::TestWithParam<ZooCase> {};

// Every output code within one step, and at most 0.5 % of them a step away: a wrong zero point, scale,
// clamp or layout moves most codes by many steps.
TEST_P(OnnxRuntimeAgrees, OutputCodesWithinOneStep) {
  const ZooCase& c = GetParam();
  const Int8Graph graph = random_graph(c.model, c.spec, c.wbits, c.abits, 11, c.weight_range);
  std::string skip;
  const Agreement a = compare_with_onnxruntime(graph, 32, 5, &skip, OnnxExportOptions{c.uint8_activations});
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_GT(a.values, 0);  // compare_with_onnxruntime checked that both gave as many codes
  EXPECT_LE(a.max_difference, 1);
  EXPECT_GE(static_cast<double>(a.equal), 0.995 * static_cast<double>(a.values));
}

INSTANTIATE_TEST_SUITE_P(Zoo, OnnxRuntimeAgrees,
                         ::testing::Values(ZooCase{"lenet5", {1, 28, 28, 10}, 8, 8, true}, ZooCase{"lenet5", {1, 28, 28, 10}, 4, 4, true},
                                           ZooCase{"lenet5", {1, 28, 28, 10}, 8, 8, false},
                                           ZooCase{"lenet5", {1, 28, 28, 10}, 4, 4, false},
                                           ZooCase{"lenet5", {1, 28, 28, 10}, 2, 4, false, WeightRange::MidRise}),
                         [](const auto& info) {
                           return info.param.model + "_W" + std::to_string(info.param.wbits) + "A" +
                                  std::to_string(info.param.abits) + (info.param.uint8_activations ? "_uint8" : "_int8") +
                                  (info.param.weight_range == WeightRange::MidRise ? "_mid_rise" : "");
                         });

// A graph's entry on `grid` whose table maps byte p to code p - 128 for c channels: fed the codes + 128,
// it starts from exactly those codes.
Int8Op identity_entry(const QParams& grid, int64_t c) {
  Int8Op q;
  q.kind = Int8OpKind::Quantize;
  q.name = "input_quant";
  q.output = 1;
  q.grid = grid;
  for (int64_t k = 0; k < c; ++k)
    for (int p = 0; p < 256; ++p) q.pixel_codes.push_back(static_cast<int8_t>(p - 128));
  q.pixel_mean.assign(static_cast<size_t>(c), 0.5f);
  q.pixel_std.assign(static_cast<size_t>(c), 0.25f);
  return q;
}

// entry -> `op` (reading slot 1) -> exit on the op's output grid.
Int8Graph single_op_graph(const Int8Graph& full, const Int8Op& op, const Shape& in_shape, const QParams& in_grid) {
  Int8Graph g;
  g.input_shape = in_shape;
  Int8Op body = op;
  body.inputs = {1};
  body.output = 2;
  Int8Op exit = full.ops.back();
  exit.inputs = {2};
  exit.output = 3;
  if (op.kind == Int8OpKind::Conv2d) exit.grid = op.layer.output;
  g.ops = {identity_entry(in_grid, in_shape[0]), body, exit};
  g.num_slots = 4;
  g.prepare();
  return g;
}

// A deep network amplifies each rare flip through the layers after it (a random, barely trained ResNet-20
// turns a one-step input difference into several steps of output), so ResNet-20 is compared op by op:
// each convolution and the global pool, in ONNX Runtime, fed the very codes our graph gave it.
TEST(OnnxExport, ResNet20OpByOpWithinOneStep) {
  const ModelSpec spec{3, 32, 32, 10};
  const Int8Graph full = random_graph("resnet20", spec, 8, 8, 11);
  const auto shapes = full.op_shapes();
  const int64_t n = 4;
  const std::vector<uint8_t> pixels = random_pixels(n * 3 * 32 * 32, 5);
  int compared = 0;
  for (size_t i = 1; i + 1 < full.ops.size(); ++i) {
    const Int8Op& op = full.ops[i];
    if (op.kind != Int8OpKind::Conv2d && op.kind != Int8OpKind::GlobalAvgPool) continue;
    const int slot = op.inputs.at(0);
    // The op's input codes: the graph up to the op that wrote the slot (convert: op j writes slot j + 1).
    Int8Graph prefix = full;
    prefix.ops.resize(static_cast<size_t>(slot));
    Int8Op exit = full.ops.back();
    exit.inputs = {slot};
    exit.output = slot + 1;
    prefix.ops.push_back(exit);
    prefix.num_slots = slot + 2;
    Shape in_codes_shape;
    const std::vector<int8_t> in_codes = prefix.run_pixel_codes(pixels.data(), n, &in_codes_shape, best_kernel_path());
    const QParams in_grid = op.kind == Int8OpKind::Conv2d ? op.layer.input : op.grid;
    const Int8Graph g = single_op_graph(full, op, shapes[i].first, in_grid);
    std::vector<uint8_t> fed(in_codes.size());
    for (size_t k = 0; k < fed.size(); ++k) fed[k] = static_cast<uint8_t>(in_codes[k] + 128);
    Shape out_shape;
    const std::vector<int8_t> ours = g.run_pixel_codes(fed.data(), n, &out_shape, KernelPath::Reference);
    test::TempFile model("op.onnx");
    save_onnx(g, model.path());
    std::string skip;
    const std::vector<int8_t> theirs =
        run_in_onnxruntime(model.path(), fed, {n, shapes[i].first[0], shapes[i].first[1], shapes[i].first[2]}, &skip);
    if (!skip.empty()) GTEST_SKIP() << skip;
    ASSERT_EQ(theirs.size(), ours.size()) << op.name;
    int64_t equal = 0, max_difference = 0;
    for (size_t k = 0; k < ours.size(); ++k) {
      const int64_t d = std::abs(static_cast<int64_t>(ours[k]) - theirs[k]);
      equal += d == 0;
      max_difference = std::max(max_difference, d);
    }
    EXPECT_LE(max_difference, 1) << op.name;
    EXPECT_GE(static_cast<double>(equal), 0.999 * static_cast<double>(ours.size())) << op.name;
    compared++;
  }
  EXPECT_EQ(compared, 22);  // 21 convolutions (stem, 18 in the blocks, 2 shortcut projections), the global pool
}

// quantize (pixel p -> code p - 128) -> 3x3 average pool, stride 1, padded -> global average over 8 x 8
// -> dequantize: sums of 9 and 64 codes land on ties often, where ours rounds away from zero and ONNX
// Runtime to even unless the export corrects it (quant/onnx/README.md).
Int8Graph average_pool_graph(int32_t zero_point) {
  Int8Graph g;
  g.input_shape = {4, 8, 8};
  QParams grid;
  grid.scale = {0.05f};
  grid.zero_point = {zero_point};
  Int8Op q;
  q.kind = Int8OpKind::Quantize;
  q.name = "input_quant";
  q.output = 1;
  q.grid = grid;
  for (int c = 0; c < 4; ++c)
    for (int p = 0; p < 256; ++p) q.pixel_codes.push_back(static_cast<int8_t>(p - 128));
  q.pixel_mean.assign(4, 0.5f);
  q.pixel_std.assign(4, 0.25f);
  Int8Op pool;
  pool.kind = Int8OpKind::AvgPool2d;
  pool.name = "pool";
  pool.inputs = {1};
  pool.output = 2;
  pool.grid = grid;
  pool.kernel = 3, pool.stride = 1, pool.pad = 1;
  Int8Op global = pool;
  global.kind = Int8OpKind::GlobalAvgPool;
  global.name = "global_pool";
  global.inputs = {2};
  global.output = 3;
  global.kernel = global.stride = global.pad = 0;
  Int8Op dq;
  dq.kind = Int8OpKind::Dequantize;
  dq.name = "output";
  dq.inputs = {3};
  dq.output = 4;
  dq.grid = grid;
  g.ops = {q, pool, global, dq};
  g.num_slots = 5;
  g.prepare();
  return g;
}

TEST(OnnxExport, AveragePoolsRoundTiesAsOursDo) {
  for (bool u8 : {true, false})
    for (int32_t zp : {0, -128, 37}) {
      const Int8Graph graph = average_pool_graph(zp);
      std::string skip;
      const Agreement a =
          compare_with_onnxruntime(graph, 64, 9 + static_cast<uint64_t>(zp + 128), &skip, OnnxExportOptions{u8});
      if (!skip.empty()) GTEST_SKIP() << skip;
      ASSERT_EQ(a.values, 64 * 4);
      EXPECT_EQ(a.equal, a.values) << "zero point " << zp << (u8 ? " uint8" : " int8") << ": largest difference "
                                   << a.max_difference;
    }
}

QParams grid_of(float scale, int32_t zero_point) {
  QParams q;
  q.scale = {scale};
  q.zero_point = {zero_point};
  return q;
}

// An op of `kind` named `name` reading slot `input` and writing slot input + 1.
Int8Op op_of(Int8OpKind kind, const char* name, int input) {
  Int8Op op;
  op.kind = kind;
  op.name = name;
  op.inputs = {input};
  op.output = input + 1;
  return op;
}

// The Dequantize exit of the codes in `slot`, on `grid`.
Int8Op exit_op(const QParams& grid, int slot) {
  Int8Op exit = op_of(Int8OpKind::Dequantize, "output", slot);
  exit.grid = grid;
  return exit;
}

// entry (grid A) -> a depthwise 1x1 conv of weight 1 onto grid B -> the residual add of both onto grid O,
// with the block's ReLU or not -> exit: every pair of codes the random pixels give, through QLinearAdd
// and (with the ReLU, Z_O > -128) the Clip.
Int8Graph add_graph(bool relu) {
  const int64_t c = 4;
  const QParams a = grid_of(0.05f, 3), b = grid_of(0.0713f, -10), o = grid_of(0.093f, 5);
  Int8Graph g;
  g.input_shape = {c, 8, 8};
  Int8Op conv = op_of(Int8OpKind::Conv2d, "conv", 1);
  LoweredLayer& l = conv.layer;
  l.weight_shape = {c, 1, 1, 1};
  l.weight.assign(static_cast<size_t>(c), 1);
  l.bias.assign(static_cast<size_t>(c), 0);
  l.input = a;
  l.output = b;
  l.weights.scale.assign(static_cast<size_t>(c), 0.9137f);
  l.weights.zero_point.assign(static_cast<size_t>(c), 0);
  l.weights.axis = 0;
  l.weights.quant_min = -127;
  l.conv.groups = c;
  l.conv.input_offset = -3;
  l.conv.output_offset = -10;
  for (int64_t k = 0; k < c; ++k) {
    int32_t m = 0;
    int shift = 0;
    // not a ratio of small integers: no code lands on an exact tie, where the roundings may differ
    quantize_multiplier(0.05 * 0.9137 / 0.0713, &m, &shift);
    l.conv.output_multiplier.push_back(m);
    l.conv.output_shift.push_back(shift);
  }
  Int8Op add;
  add.kind = Int8OpKind::Add;
  add.name = "add";
  add.inputs = {2, 1};
  add.output = 3;
  add.grid = o;
  add.add = lower_add(b, a, o, relu);
  g.ops = {identity_entry(a, c), conv, add, exit_op(o, 3)};
  g.num_slots = 5;
  g.prepare();
  return g;
}

TEST(OnnxExport, ResidualAddWithinOneStep) {
  for (bool u8 : {true, false})
    for (bool relu : {false, true}) {
      std::string skip;
      const Agreement r = compare_with_onnxruntime(add_graph(relu), 64, 21, &skip, OnnxExportOptions{u8});
      if (!skip.empty()) GTEST_SKIP() << skip;
      ASSERT_EQ(r.values, 64 * 4 * 8 * 8);
      EXPECT_LE(r.max_difference, 1) << "relu " << relu << (u8 ? " uint8" : " int8");
      EXPECT_GE(static_cast<double>(r.equal), 0.999 * static_cast<double>(r.values)) << "relu " << relu;
    }
}

// entry (8-bit grid A, every code the pixels give) -> requantize onto a 4-bit grid R (codes [-128, -113])
// -> exit, on the image and (after a flatten: what a fully connected layer reads) on its (F) values: the
// depthwise QLinearConv of weight 1 and the Clip give our codes, within one step where a value lies next
// to a rounding boundary.
TEST(OnnxExport, RequantizeWithinOneStep) {
  const int64_t c = 3;
  const QParams a = grid_of(0.0213f, -7);
  QParams r = grid_of(0.1537f, -128);
  r.quant_max = -113;
  Int8Graph g;
  g.input_shape = {c, 8, 8};
  Int8Op requant = op_of(Int8OpKind::Requantize, "conv.input_requant", 1);
  requant.grid = r;
  requant.requant = lower_requantize(a, r);
  g.ops = {identity_entry(a, c), requant, exit_op(r, 2)};
  g.num_slots = 4;
  g.prepare();
  Int8Graph flat = g;
  Int8Op flat_requant = requant;
  flat_requant.inputs = {2};
  flat_requant.output = 3;
  flat.ops = {identity_entry(a, c), op_of(Int8OpKind::Flatten, "flatten", 1), flat_requant, exit_op(r, 3)};
  flat.num_slots = 5;
  flat.prepare();
  for (const Int8Graph* graph : {&g, &flat})
    for (bool u8 : {true, false}) {
      std::string skip;
      const Agreement agree = compare_with_onnxruntime(*graph, 64, 22, &skip, OnnxExportOptions{u8});
      if (!skip.empty()) GTEST_SKIP() << skip;
      const std::string what = std::string(graph == &flat ? "flat " : "image ") + (u8 ? "uint8" : "int8");
      ASSERT_EQ(agree.values, 64 * c * 8 * 8) << what;
      EXPECT_LE(agree.max_difference, 1) << what;
      EXPECT_GE(static_cast<double>(agree.equal), 0.999 * static_cast<double>(agree.values)) << what;
    }
}

TEST(OnnxExport, WeightScaleGivesTheFloatNearestTheMultiplier) {
  Rng rng(4);
  int exact = 0;
  for (int i = 0; i < 2000; ++i) {
    const double m = std::ldexp(0.5 + 0.5 * rng.uniform(), -static_cast<int>(rng.below(12)));
    const float sx = 0.001f + 0.1f * rng.uniform(), sy = 0.001f + 0.1f * rng.uniform();
    const float w = onnx_weight_scale_for(m, sx, sy);
    const float got = (sx * w) / sy;
    EXPECT_LE(std::fabs(static_cast<double>(got) - m), std::ldexp(m, -23)) << m;
    exact += got == static_cast<float>(m);
  }
  EXPECT_GE(exact, 1500);  // the rest: no float w gives exactly that product (its steps are coarser)
}

TEST(OnnxExport, EveryExportPassesTheCheckerAndIsDeterministic) {
  const Int8Graph graph = random_graph("lenet5", {1, 28, 28, 10}, 8, 8, 3);
  OnnxExportSummary s;
  const std::string a = onnx_model_bytes(graph, {}, &s), b = onnx_model_bytes(graph);
  EXPECT_EQ(a, b);
  EXPECT_EQ(s.input_name, "pixels");
  EXPECT_EQ(s.bytes, static_cast<int64_t>(a.size()));
  EXPECT_NE(std::find(s.op_types.begin(), s.op_types.end(), "QLinearConv"), s.op_types.end());
}

TEST(OnnxExport, AGraphWithoutPixelTableReadsNormalisedFloats) {
  Rng rng(2);
  const auto model = prepare_qat(make_model("lenet5", {1, 28, 28, 10}, rng),
                                 QConfig::from_options(8, 8, true, "minmax", "ema", {}, "observer", "observer"));
  test::train_a_little(model, {8, 1, 28, 28}, 10, rng, 2);
  OnnxExportSummary s;
  onnx_model_bytes(convert(*model, {1, 28, 28}), {}, &s);
  EXPECT_EQ(s.input_name, "input");
  EXPECT_NE(std::find(s.op_types.begin(), s.op_types.end(), "QuantizeLinear"), s.op_types.end());
}

TEST(OnnxExport, AnLstmIsRefusedNamingTheOp) {
  Rng rng(1);
  const auto model = prepare_qat(make_model("lstm-rows", {1, 28, 28, 10}, rng),
                                 QConfig::from_options(8, 8, true, "minmax", "ema", {}, "observer", "observer"));
  test::train_a_little(model, {4, 1, 28, 28}, 10, rng, 1);
  const Int8Graph graph = convert(*model, {1, 28, 28});
  try {
    onnx_model_bytes(graph);
    FAIL() << "an LSTM graph was exported";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("image_rows"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("LSTM"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qatlab

// ------------------------------------------------------------------------------------ float models
namespace qatlab {
namespace {

// A float zoo model (random weights, batch-norm statistics moved by a few training-mode batches) in ONNX
// Runtime against its own forward pass: the same floats up to float rounding (other summation orders).
class FloatModelAgrees : public ::testing::TestWithParam<std::string> {};

TEST_P(FloatModelAgrees, LogitsWithinFloatRounding) {
  const bool cifar = GetParam() == "resnet20";
  const ModelSpec spec = cifar ? ModelSpec{3, 32, 32, 10} : ModelSpec{1, 28, 28, 10};
  Rng rng(8);
  const ModulePtr model = test::random_float_model(GetParam(), spec, rng);
  const int64_t n = 8;
  const Tensor x = test::random_input({n, spec.channels, spec.height, spec.width}, rng);
  Tensor ours;
  {
    NoGradGuard no_grad;
    ours = model->forward(x);
  }
  test::TempFile onnx_file("float.onnx"), in_file("float.input"), out_file("float.logits");
  const OnnxExportSummary s = save_float_onnx(*model, {spec.channels, spec.height, spec.width}, onnx_file.path());
  EXPECT_NE(std::find(s.op_types.begin(), s.op_types.end(), "Gemm"), s.op_types.end());  // float operators
  EXPECT_EQ(s.input_name, "input");
  std::ofstream(in_file.path(), std::ios::binary)
      .write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.numel() * 4));
  if (std::system("command -v node >/dev/null 2>&1") != 0) GTEST_SKIP() << "node is not installed";
  const std::string cmd = "node '" + (kScripts / "onnx_run.js").string() + "' '" + onnx_file.path() + "' --out '" +
                          out_file.path() + "' --floats '" + in_file.path() + "' --shape " + std::to_string(n) + "," +
                          std::to_string(spec.channels) + "," + std::to_string(spec.height) + "," +
                          std::to_string(spec.width) + " >/dev/null 2>&1";
  const int status = std::system(cmd.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 3) GTEST_SKIP() << "ONNX Runtime for node is not installed";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  std::ifstream f(out_file.path(), std::ios::binary);
  std::vector<float> theirs(static_cast<size_t>(ours.numel()));
  f.read(reinterpret_cast<char*>(theirs.data()), static_cast<std::streamsize>(theirs.size() * 4));
  ASSERT_EQ(f.gcount(), static_cast<std::streamsize>(theirs.size() * 4));
  float largest = 0.0f, worst = 0.0f;
  for (int64_t k = 0; k < ours.numel(); ++k) {
    largest = std::max(largest, std::fabs(ours.data()[k]));
    worst = std::max(worst, std::fabs(ours.data()[k] - theirs[static_cast<size_t>(k)]));
  }
  EXPECT_GT(largest, 0.0f);
  EXPECT_LE(worst, 1e-4f * largest + 1e-5f) << "largest logit " << largest;
}

INSTANTIATE_TEST_SUITE_P(Zoo, FloatModelAgrees, ::testing::Values("mlp", "lenet5", "resnet20"),
                         [](const auto& info) { return info.param; });

TEST(OnnxFloatExport, AnLstmIsRefusedNamingTheModule) {
  Rng rng(1);
  const ModulePtr model = make_model("lstm-rows", {1, 28, 28, 10}, rng);
  try {
    onnx_float_model_bytes(*model, {1, 28, 28});
    FAIL() << "an LSTM model was exported";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no float ONNX form"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qatlab
