// test_int8_graph.cpp: the integer model file: a save/load round trip keeps every field of every op kind,
// files of the version 1 layout still load, the version 2 layout is what quant/README.md section 7
// says and keeps a W4 LeNet-5 file near the size of its parameters, and load() refuses what is not a
// (readable) integer model with one line naming the file.
#include <gtest/gtest.h>

#include <functional>

#include "quant/quant_test_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "core/h5io.h"
#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/residual.h"
#include "nn/zoo.h"
#include "quant/engine/lowered_layer.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

using test::random_input;
using test::TempFile;



ModulePtr conv_bn(int64_t c, bool relu, Rng& rng) {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Conv2d>(c, c, 3, Conv2dOptions{1, 1, 1, false}, rng));
  s->add(std::make_shared<BatchNorm2d>(c));
  if (relu) s->add(std::make_shared<ReLU>());
  return s;
}

// Every op kind: conv (fused BN, fused BN+ReLU, grouped + strided + ReLU6), max pooling, a standalone ReLU
// (after max pooling, so nothing fuses it; its input grid holds negative values, so the clamp is not
// the whole code range), a residual add, windowed and global average pooling,
// flatten and a fully connected layer. Input (N, 3, 8, 8).
ModulePtr every_op_model(Rng& rng) {
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, false}, rng));
  m->add(std::make_shared<BatchNorm2d>(4));
  m->add(std::make_shared<MaxPool2d>(3, 2, 1));  // 8x8 -> 4x4
  m->add(std::make_shared<ReLU>());              // standalone: a clamp
  auto body = std::make_shared<Sequential>();
  body->add(conv_bn(4, true, rng));
  body->add(conv_bn(4, false, rng));
  m->add(std::make_shared<Residual>(body, nullptr, true));
  m->add(std::make_shared<AvgPool2d>(3, 2, 1));  // 4x4 -> 2x2
  m->add(std::make_shared<Conv2d>(4, 6, 3, Conv2dOptions{2, 1, 2, true}, rng));  // 2x2 -> 1x1, groups 2
  m->add(std::make_shared<ReLU6>());
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Flatten>());
  m->add(std::make_shared<Linear>(6, 3, true, rng));
  return m;
}

// Two residual blocks whose sums stay at 8 bits (residual-sums=:8) in a W4A4 model: the second block's
// first conv, and the classifier after global pooling, read the first and the second sum requantized to 4
// bits. Input (N, 3, 8, 8).
Int8Graph stream_graph() {
  Rng rng(23);
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Conv2d>(3, 4, 3, Conv2dOptions{1, 1, 1, false}, rng));
  m->add(std::make_shared<BatchNorm2d>(4));
  m->add(std::make_shared<ReLU>());
  for (int b = 0; b < 2; ++b) {
    auto body = std::make_shared<Sequential>();
    body->add(conv_bn(4, true, rng));
    body->add(conv_bn(4, false, rng));
    m->add(std::make_shared<Residual>(body, nullptr, true));
  }
  m->add(std::make_shared<GlobalAvgPool2d>());
  m->add(std::make_shared<Linear>(4, 3, true, rng));
  const auto model = prepare_qat(m, QConfig::from_options(4, 4, true, "minmax", "ema", {"residual-sums=:8"}));
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input({4, 3, 8, 8}, rng, 2.0f));
  }
  model->eval();
  return convert(*model, {3, 8, 8});
}

Int8Graph every_op_graph() {
  Rng rng(21);
  const auto model = prepare_qat(every_op_model(rng), QConfig::from_options(6, 8, true, "minmax", "ema", {}));
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input({4, 3, 8, 8}, rng, 2.0f));
  }
  model->eval();
  return convert(*model, {3, 8, 8});
}

void expect_same_grid(const QParams& a, const QParams& b, const std::string& what) {
  EXPECT_EQ(a.scale, b.scale) << what;
  EXPECT_EQ(a.zero_point, b.zero_point) << what;
  EXPECT_EQ(a.axis, b.axis) << what;
  EXPECT_EQ(a.quant_min, b.quant_min) << what;
  EXPECT_EQ(a.quant_max, b.quant_max) << what;
}

void expect_same_op(const Int8Op& a, const Int8Op& b, const std::string& what) {
  EXPECT_EQ(a.kind, b.kind) << what;
  EXPECT_EQ(a.name, b.name) << what;
  EXPECT_EQ(a.inputs, b.inputs) << what;
  EXPECT_EQ(a.output, b.output) << what;
  expect_same_grid(a.grid, b.grid, what + " grid");
  EXPECT_EQ(a.kernel, b.kernel) << what;
  EXPECT_EQ(a.stride, b.stride) << what;
  EXPECT_EQ(a.pad, b.pad) << what;
  EXPECT_EQ(a.clamp_min, b.clamp_min) << what;
  EXPECT_EQ(a.clamp_max, b.clamp_max) << what;
  const AddInt8Params &p = a.add, &q = b.add;
  EXPECT_EQ(p.left_shift, q.left_shift) << what;
  EXPECT_EQ(p.input1_offset, q.input1_offset) << what;
  EXPECT_EQ(p.input2_offset, q.input2_offset) << what;
  EXPECT_EQ(p.output_offset, q.output_offset) << what;
  EXPECT_EQ(p.input1_multiplier, q.input1_multiplier) << what;
  EXPECT_EQ(p.input1_shift, q.input1_shift) << what;
  EXPECT_EQ(p.input2_multiplier, q.input2_multiplier) << what;
  EXPECT_EQ(p.input2_shift, q.input2_shift) << what;
  EXPECT_EQ(p.output_multiplier, q.output_multiplier) << what;
  EXPECT_EQ(p.output_shift, q.output_shift) << what;
  EXPECT_EQ(p.quantized_activation_min, q.quantized_activation_min) << what;
  EXPECT_EQ(p.quantized_activation_max, q.quantized_activation_max) << what;
  const RequantizeInt8Params &r = a.requant, &t = b.requant;
  EXPECT_EQ(r.input_offset, t.input_offset) << what;
  EXPECT_EQ(r.output_offset, t.output_offset) << what;
  EXPECT_EQ(r.multiplier, t.multiplier) << what;
  EXPECT_EQ(r.shift, t.shift) << what;
  EXPECT_EQ(r.quantized_activation_min, t.quantized_activation_min) << what;
  EXPECT_EQ(r.quantized_activation_max, t.quantized_activation_max) << what;
  const LoweredLayer &l = a.layer, &m = b.layer;
  EXPECT_EQ(l.is_conv, m.is_conv) << what;
  EXPECT_EQ(l.weight_shape, m.weight_shape) << what;
  EXPECT_EQ(l.weight, m.weight) << what;
  EXPECT_EQ(l.bias, m.bias) << what;
  expect_same_grid(l.input, m.input, what + " layer input");
  expect_same_grid(l.weights, m.weights, what + " layer weights");
  expect_same_grid(l.output, m.output, what + " layer output");
  EXPECT_EQ(l.conv.stride_h, m.conv.stride_h) << what;
  EXPECT_EQ(l.conv.stride_w, m.conv.stride_w) << what;
  EXPECT_EQ(l.conv.pad_h, m.conv.pad_h) << what;
  EXPECT_EQ(l.conv.pad_w, m.conv.pad_w) << what;
  EXPECT_EQ(l.conv.groups, m.conv.groups) << what;
  EXPECT_EQ(l.conv.input_offset, m.conv.input_offset) << what;
  EXPECT_EQ(l.conv.output_offset, m.conv.output_offset) << what;
  EXPECT_EQ(l.conv.quantized_activation_min, m.conv.quantized_activation_min) << what;
  EXPECT_EQ(l.conv.quantized_activation_max, m.conv.quantized_activation_max) << what;
  EXPECT_EQ(l.conv.output_multiplier, m.conv.output_multiplier) << what;
  EXPECT_EQ(l.conv.output_shift, m.conv.output_shift) << what;
  EXPECT_EQ(l.fc.input_offset, m.fc.input_offset) << what;
  EXPECT_EQ(l.fc.output_offset, m.fc.output_offset) << what;
  EXPECT_EQ(l.fc.quantized_activation_min, m.fc.quantized_activation_min) << what;
  EXPECT_EQ(l.fc.quantized_activation_max, m.fc.quantized_activation_max) << what;
  EXPECT_EQ(l.fc.output_multiplier, m.fc.output_multiplier) << what;
  EXPECT_EQ(l.fc.output_shift, m.fc.output_shift) << what;
  EXPECT_EQ(a.pixel_codes, b.pixel_codes) << what;
  EXPECT_EQ(a.pixel_mean, b.pixel_mean) << what;
  EXPECT_EQ(a.pixel_std, b.pixel_std) << what;
}

TEST(Int8GraphFile, RoundTripKeepsEveryFieldOfEveryOpKind) {
  Int8Graph g = every_op_graph();
  std::set<Int8OpKind> kinds;
  for (const Int8Op& op : g.ops) kinds.insert(op.kind);
  for (Int8OpKind k : {Int8OpKind::Quantize, Int8OpKind::Conv2d, Int8OpKind::FullyConnected, Int8OpKind::MaxPool2d,
                       Int8OpKind::AvgPool2d, Int8OpKind::GlobalAvgPool, Int8OpKind::Flatten, Int8OpKind::Clamp,
                       Int8OpKind::Add, Int8OpKind::Dequantize})
    EXPECT_TRUE(kinds.count(k)) << "the test graph lacks a " << int8_op_name(k) << " op:\n" << g.summary();

  // The settings under test are not all defaults (a round trip of defaults would prove little).
  bool grouped = false, clamp_narrowed = false;
  for (const Int8Op& op : g.ops) {
    grouped = grouped || (op.kind == Int8OpKind::Conv2d && op.layer.conv.groups == 2 && op.layer.conv.stride_h == 2);
    clamp_narrowed = clamp_narrowed || (op.kind == Int8OpKind::Clamp && op.clamp_min > -128);
  }
  EXPECT_TRUE(grouped);
  EXPECT_TRUE(clamp_narrowed) << g.summary();

  TempFile file("roundtrip.h5");
  EXPECT_TRUE(g.dataset.empty());
  {
    // No data set recorded: none read back (files written before it was recorded load the same way).
    TempFile bare("roundtrip_bare.h5");
    g.save(bare.path());
    EXPECT_TRUE(Int8Graph::load(bare.path()).dataset.empty());
  }
  g.dataset = "fashion-mnist";
  g.save(file.path());
  EXPECT_TRUE(Int8Graph::is_int8_graph_file(file.path()));
  const Int8Graph h = Int8Graph::load(file.path());
  EXPECT_EQ(h.dataset, "fashion-mnist");
  EXPECT_EQ(h.input_shape, g.input_shape);
  EXPECT_EQ(h.num_slots, g.num_slots);
  ASSERT_EQ(h.ops.size(), g.ops.size());
  for (size_t i = 0; i < g.ops.size(); ++i)
    expect_same_op(h.ops[i], g.ops[i], "op " + std::to_string(i) + " (" + int8_op_name(g.ops[i].kind) + ")");
  for (const Int8Op& op : h.ops) {
    if (op.kind == Int8OpKind::Conv2d) {
      EXPECT_TRUE(op.packed_conv != nullptr) << op.name;
    }
    if (op.kind == Int8OpKind::FullyConnected) {
      EXPECT_TRUE(op.packed_fc != nullptr) << op.name;
    }
  }
  EXPECT_EQ(h.parameter_bytes(), g.parameter_bytes());
  EXPECT_EQ(h.summary(), g.summary());

  Rng rng(5);
  const Tensor x = random_input({3, 3, 8, 8}, rng, 2.0f);
  Shape s1, s2;
  EXPECT_EQ(h.run_codes(x, &s1, KernelPath::Reference), g.run_codes(x, &s2, KernelPath::Reference));
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(h.run_codes(x, &s1, best_kernel_path()), g.run_codes(x, &s2, KernelPath::Reference));
}

// ------------------------------------------------------------------------------ layout and versions

// A LeNet-5 with `weight_bits`-bit weights (per channel) and 8-bit activations, observers run over a
// few batches. The same float weights for every width.
Int8Graph lenet5_graph(int weight_bits) {
  Rng rng(17);
  const auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng),
                                 QConfig::from_options(weight_bits, 8, true, "minmax", "ema", {}));
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input({8, 1, 28, 28}, rng));
  }
  model->eval();
  return convert(*model, {1, 28, 28});
}

// Writes g in the version 1 layout, as qatlab wrote it before version 2 (no lstm ops).
void save_v1(const Int8Graph& g, const std::string& path) {
  H5File f = H5File::create(path);
  f.set_attr("/", "format", kInt8GraphFormat);
  f.set_attr("/", "format_version", int64_t{1});
  f.set_attr("/", "num_slots", static_cast<int64_t>(g.num_slots));
  f.write_ints<int64_t>("input_shape", {static_cast<int64_t>(g.input_shape.size())}, g.input_shape);
  const auto grid = [&](const std::string& p, const QParams& qp) {
    f.write_floats(p + "/scale", {static_cast<int64_t>(qp.scale.size())}, qp.scale);
    f.write_ints<int32_t>(p + "/zero_point", {static_cast<int64_t>(qp.zero_point.size())}, qp.zero_point);
    f.set_attr(p, "axis", static_cast<int64_t>(qp.axis));
    f.set_attr(p, "quant_min", static_cast<int64_t>(qp.quant_min));
    f.set_attr(p, "quant_max", static_cast<int64_t>(qp.quant_max));
  };
  const auto ints = [&](const std::string& p, const auto& v) {
    f.write_ints<int32_t>(p, {static_cast<int64_t>(v.size())}, std::vector<int32_t>(v.begin(), v.end()));
  };
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Int8Op& op = g.ops[i];
    std::string idx = std::to_string(i);
    idx.insert(0, 3 - idx.size(), '0');
    const std::string p = "ops/" + idx;
    ints(p + "/inputs", op.inputs);
    f.set_attr(p, "kind", int8_op_name(op.kind));
    f.set_attr(p, "name", op.name);
    f.set_attr(p, "output", static_cast<int64_t>(op.output));
    switch (op.kind) {
      case Int8OpKind::Quantize:
      case Int8OpKind::Dequantize:
      case Int8OpKind::AvgPool2d:
      case Int8OpKind::GlobalAvgPool:
      case Int8OpKind::Add:
        grid(p + "/grid", op.grid);
        break;
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected: {
        const LoweredLayer& l = op.layer;
        if (l.weight_bits == 8) {
          f.write_ints<int8_t>(p + "/weight", l.weight_shape, l.weight);
        } else {
          f.write_ints<uint8_t>(p + "/weight_packed", {static_cast<int64_t>(l.weight_packed.size())}, l.weight_packed);
          f.write_ints<int64_t>(p + "/weight_shape", {static_cast<int64_t>(l.weight_shape.size())}, l.weight_shape);
          f.set_attr(p, "weight_bits", static_cast<int64_t>(l.weight_bits));
        }
        ints(p + "/bias", l.bias);
        ints(p + "/output_multiplier", l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier);
        ints(p + "/output_shift", l.is_conv ? l.conv.output_shift : l.fc.output_shift);
        grid(p + "/input_grid", l.input);
        grid(p + "/weight_grid", l.weights);
        grid(p + "/output_grid", l.output);
        f.set_attr(p, "input_offset", l.is_conv ? l.conv.input_offset : l.fc.input_offset);
        f.set_attr(p, "output_offset", l.is_conv ? l.conv.output_offset : l.fc.output_offset);
        f.set_attr(p, "quantized_activation_min", l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min);
        f.set_attr(p, "quantized_activation_max", l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max);
        if (l.is_conv) {
          f.set_attr(p, "stride_h", l.conv.stride_h);
          f.set_attr(p, "stride_w", l.conv.stride_w);
          f.set_attr(p, "pad_h", l.conv.pad_h);
          f.set_attr(p, "pad_w", l.conv.pad_w);
          f.set_attr(p, "groups", l.conv.groups);
        }
        break;
      }
      case Int8OpKind::Clamp:
        f.set_attr(p, "clamp_min", op.clamp_min);
        f.set_attr(p, "clamp_max", op.clamp_max);
        break;
      default: break;
    }
    if (op.kind == Int8OpKind::Add) {
      const AddInt8Params& a = op.add;
      f.set_attr(p, "left_shift", a.left_shift);
      f.set_attr(p, "input1_offset", a.input1_offset);
      f.set_attr(p, "input2_offset", a.input2_offset);
      f.set_attr(p, "output_offset", a.output_offset);
      f.set_attr(p, "input1_multiplier", a.input1_multiplier);
      f.set_attr(p, "input1_shift", a.input1_shift);
      f.set_attr(p, "input2_multiplier", a.input2_multiplier);
      f.set_attr(p, "input2_shift", a.input2_shift);
      f.set_attr(p, "output_multiplier", a.output_multiplier);
      f.set_attr(p, "output_shift", a.output_shift);
      f.set_attr(p, "quantized_activation_min", a.quantized_activation_min);
      f.set_attr(p, "quantized_activation_max", a.quantized_activation_max);
    }
    if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d) {
      f.set_attr(p, "kernel", op.kernel);
      f.set_attr(p, "stride", op.stride);
      f.set_attr(p, "pad", op.pad);
    }
  }
  f.close();
}

void expect_same_graph(const Int8Graph& h, const Int8Graph& g, const Shape& input, const std::string& what) {
  EXPECT_EQ(h.input_shape, g.input_shape) << what;
  EXPECT_EQ(h.num_slots, g.num_slots) << what;
  ASSERT_EQ(h.ops.size(), g.ops.size()) << what;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const std::string op = what + " op " + std::to_string(i) + " (" + int8_op_name(g.ops[i].kind) + ")";
    expect_same_op(h.ops[i], g.ops[i], op);
    EXPECT_EQ(h.ops[i].layer.weight_bits, g.ops[i].layer.weight_bits) << op;
    EXPECT_EQ(h.ops[i].layer.weight_packed, g.ops[i].layer.weight_packed) << op;
  }
  EXPECT_EQ(h.summary(), g.summary()) << what;
  Rng rng(5);
  const Tensor x = random_input(input, rng, 2.0f);
  Shape s1, s2;
  EXPECT_EQ(h.run_codes(x, &s1, best_kernel_path()), g.run_codes(x, &s2, KernelPath::Reference)) << what;
  EXPECT_EQ(s1, s2) << what;
}

TEST(Int8GraphFile, Version1FilesStillLoad) {
  const Int8Graph every = every_op_graph();
  TempFile f1("v1_every.h5");
  save_v1(every, f1.path());
  ASSERT_EQ(H5File::open_read(f1.path()).get_attr_int("/", "format_version"), 1);
  EXPECT_TRUE(Int8Graph::is_int8_graph_file(f1.path()));
  expect_same_graph(Int8Graph::load(f1.path()), every, {3, 3, 8, 8}, "v1 every op");

  // 4-bit weights, stored packed with a weight_shape dataset.
  const Int8Graph w4 = lenet5_graph(4);
  ASSERT_EQ(w4.ops[1].layer.weight_bits, 4);
  TempFile f2("v1_w4.h5");
  save_v1(w4, f2.path());
  expect_same_graph(Int8Graph::load(f2.path()), w4, {2, 1, 28, 28}, "v1 W4 LeNet-5");
}

// Version 2 (and 3, which adds only the pixel table) as quant/README.md section 7 lays it out: one group per op whose only datasets are the
// weights; everything else is an attribute (per-tensor grids as scalars, per-channel ones as arrays).
TEST(Int8GraphFile, Version2LayoutKeepsWeightsAsTheOnlyDatasets) {
  const Int8Graph g = every_op_graph();
  TempFile file("v2.h5");
  g.save(file.path());
  const H5File f = H5File::open_read(file.path());
  EXPECT_EQ(f.get_attr_string("/", "format"), kInt8GraphFormat);
  EXPECT_EQ(f.get_attr_int("/", "format_version"), kInt8GraphVersion);
  EXPECT_EQ(f.get_attr_ints<int64_t>("/", "input_shape"), (std::vector<int64_t>{3, 8, 8}));
  EXPECT_EQ(f.list("/"), std::vector<std::string>{"ops"});
  const std::vector<std::string> names = f.list("ops");
  ASSERT_EQ(names.size(), g.ops.size());
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Int8Op& op = g.ops[i];
    const std::string p = "ops/" + names[i];
    EXPECT_EQ(f.get_attr_string(p, "kind"), int8_op_name(op.kind)) << p;
    EXPECT_EQ(f.get_attr_ints<int32_t>(p, "inputs"), std::vector<int32_t>(op.inputs.begin(), op.inputs.end())) << p;
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) {
      EXPECT_EQ(f.list(p), std::vector<std::string>{"weight"}) << p;
      EXPECT_EQ(f.get_attr_ints<int32_t>(p, "bias"), op.layer.bias) << p;
      EXPECT_EQ(f.get_attr_floats(p, "weight.scale"), op.layer.weights.scale) << p;
      EXPECT_EQ(f.get_attr_int(p, "weight.axis"), 0) << p;
      EXPECT_EQ(f.get_attr_int(p, "input.zero_point"), op.layer.input.zero_point[0]) << p;  // a scalar
      EXPECT_EQ(f.get_attr_double(p, "output.scale"), op.layer.output.scale[0]) << p;
    } else {
      EXPECT_TRUE(f.list(p).empty()) << p;
    }
    if (op.kind == Int8OpKind::Quantize) {
      EXPECT_EQ(f.get_attr_int(p, "quant_max"), op.grid.quant_max) << p;
    }
  }
}

// The file of a W4 LeNet-5 against a W8 one. With no file overhead at all the ratio would be ~0.54:
// the weights halve (61470 -> 30735 bytes) but biases, multipliers and shifts (12 bytes a channel,
// 2832) and the grids (per-channel weight scales and zero points, 1.9 KB) do not. The HDF5 structure
// (12 op groups, ~190 attributes of ~45 bytes, 5 weight datasets) adds ~11 KB to both, which puts
// the ratio at 0.61; the version 1 layout, at ~40 KB of structure, gave 0.79.
TEST(Int8GraphFile, W4LeNet5FileIsAboutSixtyPercentOfW8) {
  const Int8Graph w8 = lenet5_graph(8), w4 = lenet5_graph(4);
  TempFile f8("lenet_w8.h5"), f4("lenet_w4.h5");
  w8.save(f8.path());
  w4.save(f4.path());
  const auto size8 = static_cast<int64_t>(std::filesystem::file_size(f8.path()));
  const auto size4 = static_cast<int64_t>(std::filesystem::file_size(f4.path()));
  EXPECT_LE(static_cast<double>(size4) / static_cast<double>(size8), 0.62) << size4 << " / " << size8;
  // What the file adds to the parameters (grids and HDF5 structure): ~13 KB, was ~41 KB.
  EXPECT_LT(size8 - w8.parameter_bytes(), 15000) << size8;
  EXPECT_LT(size4 - w4.parameter_bytes(), 15000) << size4;
  expect_same_graph(Int8Graph::load(f4.path()), w4, {2, 1, 28, 28}, "W4 LeNet-5");
}

// ------------------------------------------------------------------------------------- pixel table

// pixel_values (C, 256) for a LeNet-5's input: a ramp over [-0.5, 3], roughly MNIST's normalised range.
Tensor ramp_pixel_values(int64_t channels) {
  std::vector<float> v;
  for (int64_t c = 0; c < channels; ++c)
    for (int p = 0; p < 256; ++p) v.push_back(-0.5f + 3.5f * static_cast<float>(p) / 255.0f + 0.01f * c);
  return Tensor::from_vector({channels, 256}, v);
}

Int8Graph lenet5_with_table() {
  Int8Graph g = lenet5_graph(8);
  set_pixel_table(g, ramp_pixel_values(1), {0.1307f}, {0.3081f});
  return g;
}

// The table is the entry grid's quantization of the pixel values, is stored as an (C, 256) int8 dataset
// with the normalisation as attributes, survives the round trip, and a graph read from raw pixels gives the
// codes the same graph gives from those pixels' floats.
TEST(Int8GraphFile, PixelTableRoundTripsAndRunsFromRawPixels) {
  const Int8Graph g = lenet5_with_table();
  ASSERT_TRUE(g.has_pixel_table());
  const Tensor values = ramp_pixel_values(1);
  EXPECT_EQ(g.ops.front().pixel_codes, quantize_tensor(values, g.ops.front().grid));
  TempFile file("pixel_table.h5");
  g.save(file.path());
  {
    const H5File f = H5File::open_read(file.path());
    EXPECT_EQ(f.list("ops/000"), std::vector<std::string>{"pixel_codes"});
    EXPECT_EQ(f.dataset_shape("ops/000/pixel_codes"), (Shape{1, 256}));
    EXPECT_EQ(f.get_attr_floats("ops/000", "pixel_mean"), std::vector<float>{0.1307f});
  }
  const Int8Graph h = Int8Graph::load(file.path());
  expect_same_graph(h, g, {2, 1, 28, 28}, "LeNet-5 with a pixel table");
  ASSERT_TRUE(h.has_pixel_table());

  // Three images of random bytes, and the floats those bytes stand for in the table's making.
  Rng rng(8);
  std::vector<uint8_t> pixels(3 * 28 * 28);
  std::vector<float> floats(pixels.size());
  for (size_t k = 0; k < pixels.size(); ++k) {
    pixels[k] = static_cast<uint8_t>(rng.below(256));
    floats[k] = values.data()[pixels[k]];
  }
  const Tensor x = Tensor::from_vector({3, 1, 28, 28}, floats);
  Shape s1, s2;
  const std::vector<int8_t> expect = g.run_codes(x, &s2, KernelPath::Reference);
  EXPECT_EQ(h.run_pixel_codes(pixels.data(), 3, &s1, KernelPath::Reference), expect);
  EXPECT_EQ(h.run_pixel_codes(pixels.data(), 3, &s1, best_kernel_path()), expect);
  EXPECT_EQ(s1, s2);
  EXPECT_EQ(h.run_pixels(pixels.data(), 3, KernelPath::Reference).to_vector(),
            g.run(x, KernelPath::Reference).to_vector());

  // A graph without a table refuses raw pixels; a file written without one loads without one.
  const Int8Graph plain = lenet5_graph(8);
  EXPECT_FALSE(plain.has_pixel_table());
  EXPECT_THROW(plain.run_pixel_codes(pixels.data(), 3, nullptr, KernelPath::Reference), std::invalid_argument);
  TempFile v1("pixel_v1.h5");
  save_v1(plain, v1.path());
  EXPECT_FALSE(Int8Graph::load(v1.path()).has_pixel_table());
}

// ----------------------------------------------------------------------------------------- refusals

// Passes when load(path) throws a std::exception whose message is one line naming the file and
// containing every part.
::testing::AssertionResult load_refused(const std::string& path, const std::vector<std::string>& parts) {
  try {
    Int8Graph::load(path);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (msg.find('\n') != std::string::npos) return ::testing::AssertionFailure() << "multi-line message: " << msg;
    if (msg.find(path) == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << msg << "\" does not name the file " << path;
    for (const auto& p : parts)
      if (msg.find(p) == std::string::npos)
        return ::testing::AssertionFailure() << "message \"" << msg << "\" does not mention \"" << p << "\"";
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "load accepted " << path;
}

// A minimal integer model written field by field in the version 1 layout (every array a dataset,
// every grid a group), which load() still reads: quantize (slot 1) then dequantize (slot 2), with the
// knobs the refusals need.
struct MinimalGraph {
  bool with_format = true;
  std::string format = kInt8GraphFormat;
  int64_t version = 1;
  int64_t num_slots = 3;
  int32_t dequantize_input = 1;
  int64_t dequantize_output = 2;

  void write(const std::string& path) const {
    H5File f = H5File::create(path);
    if (with_format) f.set_attr("/", "format", format);
    f.set_attr("/", "format_version", version);
    f.set_attr("/", "num_slots", num_slots);
    f.write_ints<int64_t>("input_shape", {3}, std::vector<int64_t>{1, 2, 2});
    const auto grid = [&](const std::string& g) {
      f.write_floats(g + "/scale", {1}, std::vector<float>{0.1f});
      f.write_ints<int32_t>(g + "/zero_point", {1}, std::vector<int32_t>{3});
      f.set_attr(g, "axis", int64_t{-1});
      f.set_attr(g, "quant_min", int64_t{-128});
      f.set_attr(g, "quant_max", int64_t{127});
    };
    f.write_ints<int32_t>("ops/000/inputs", {0}, std::vector<int32_t>{});
    f.set_attr("ops/000", "kind", "quantize");
    f.set_attr("ops/000", "name", "input_quant");
    f.set_attr("ops/000", "output", int64_t{1});
    grid("ops/000/grid");
    f.write_ints<int32_t>("ops/001/inputs", {1}, std::vector<int32_t>{dequantize_input});
    f.set_attr("ops/001", "kind", "dequantize");
    f.set_attr("ops/001", "name", "output");
    f.set_attr("ops/001", "output", dequantize_output);
    grid("ops/001/grid");
    f.close();
  }
};

TEST(Int8GraphFile, MinimalHandWrittenFileLoadsAndRuns) {
  TempFile file("minimal.h5");
  MinimalGraph{}.write(file.path());
  const Int8Graph g = Int8Graph::load(file.path());
  ASSERT_EQ(g.ops.size(), 2u);
  EXPECT_EQ(g.input_shape, (Shape{1, 2, 2}));
  const Tensor x = Tensor::from_vector({1, 1, 2, 2}, {0.04f, -0.26f, 100.0f, 0.5f});
  const std::vector<float> y = g.run(x, KernelPath::Reference).to_vector();
  // real = 0.1 * (q - 3): codes 3, 0 (-2.6 rounds to -3), 127 (saturated), 8.
  EXPECT_NEAR(y[0], 0.0f, 1e-6f);
  EXPECT_NEAR(y[1], -0.3f, 1e-6f);
  EXPECT_NEAR(y[2], 12.4f, 1e-5f);
  EXPECT_NEAR(y[3], 0.5f, 1e-6f);
}

TEST(Int8GraphFile, RejectsANonHdf5File) {
  TempFile file("text.h5");
  std::ofstream(file.path()) << "this is not an integer model\n";
  EXPECT_TRUE(load_refused(file.path(), {"HDF5"}));
  EXPECT_FALSE(Int8Graph::is_int8_graph_file(file.path()));
  TempFile missing("missing.h5");
  EXPECT_TRUE(load_refused(missing.path(), {}));
  EXPECT_FALSE(Int8Graph::is_int8_graph_file(missing.path()));
}

TEST(Int8GraphFile, RejectsATruncatedFile) {
  const Int8Graph g = every_op_graph();
  TempFile full("full.h5"), cut("cut.h5");
  g.save(full.path());
  const auto size = std::filesystem::file_size(full.path());
  std::filesystem::copy_file(full.path(), cut.path(), std::filesystem::copy_options::overwrite_existing);
  std::filesystem::resize_file(cut.path(), size / 2);
  EXPECT_TRUE(load_refused(cut.path(), {}));
}

TEST(Int8GraphFile, RejectsHdf5WithoutTheFormatAttribute) {
  TempFile file("noformat.h5");
  {
    H5File f = H5File::create(file.path());
    f.write_floats("weights", {2}, std::vector<float>{1.0f, 2.0f});
    f.close();
  }
  EXPECT_TRUE(load_refused(file.path(), {"not a qatlab integer model", kInt8GraphFormat}));
  EXPECT_FALSE(Int8Graph::is_int8_graph_file(file.path()));

  TempFile minimal("noformat_minimal.h5");
  MinimalGraph m;
  m.with_format = false;
  m.write(minimal.path());
  EXPECT_TRUE(load_refused(minimal.path(), {"not a qatlab integer model"}));

  TempFile other("otherformat.h5");
  m.with_format = true;
  m.format = "qatlab-checkpoint";
  m.write(other.path());
  EXPECT_TRUE(load_refused(other.path(), {"not a qatlab integer model"}));
  EXPECT_FALSE(Int8Graph::is_int8_graph_file(other.path()));
}

TEST(Int8GraphFile, RejectsANewerFormatVersion) {
  TempFile file("newer.h5");
  MinimalGraph m;
  m.version = kInt8GraphVersion + 1;
  m.write(file.path());
  EXPECT_TRUE(Int8Graph::is_int8_graph_file(file.path()));  // it is ours, just too new
  EXPECT_TRUE(load_refused(file.path(), {"version " + std::to_string(kInt8GraphVersion + 1), "newer", "upgrade"}));
}

TEST(Int8GraphFile, RejectsSlotsOutOfRange) {
  {
    TempFile file("input_slot.h5");
    MinimalGraph m;
    m.dequantize_input = 5;
    m.write(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"ops/001", "input slot 5", "out of range"}));
  }
  {
    TempFile file("negative_slot.h5");
    MinimalGraph m;
    m.dequantize_input = -1;
    m.write(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"ops/001", "input slot -1"}));
  }
  {
    TempFile file("output_slot.h5");
    MinimalGraph m;
    m.dequantize_output = 3;  // == num_slots
    m.write(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"ops/001", "output slot", "out of range"}));
  }
  {
    TempFile file("few_slots.h5");
    MinimalGraph m;
    m.num_slots = 2;  // the dequantize writes slot 2
    m.write(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"out of range"}));
  }
}

// A corrupt pixel table: the wrong shape, or codes outside the entry's grid (a 4-bit input grid here).
TEST(Int8GraphFile, RejectsACorruptPixelTable) {
  {
    Int8Graph g = lenet5_with_table();
    g.ops.front().pixel_codes.resize(2 * 256, 0);  // two channels for a one-channel input
    TempFile file("table_shape.h5");
    g.save(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"ops/000", "pixel_codes of shape (2, 256), expected (1, 256)"}));
  }
  {
    Int8Graph g = lenet5_with_table();
    g.ops.front().pixel_codes.resize(255);  // no (C, 256) table: not even written
    TempFile file("table_short.h5");
    EXPECT_THROW(g.save(file.path()), std::invalid_argument);
  }
  {
    Int8Graph g = lenet5_with_table();
    QParams& grid = g.ops.front().grid;
    grid.quant_min = -8, grid.quant_max = 7, grid.zero_point = {0};
    g.ops.front().pixel_codes[17] = 9;
    g.ops.front().pixel_codes[0] = -8;
    for (size_t k = 1; k < 256; ++k)
      if (k != 17) g.ops.front().pixel_codes[k] = 0;
    TempFile file("table_range.h5");
    g.save(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"op 0", "pixel table", "channel 0, pixel 17 -> code 9",
                                           "outside the input grid's [-8, 7]"}));
    g.ops.front().pixel_codes[17] = 7;  // the same file with the code in range loads
    g.save(file.path());
    EXPECT_NO_THROW(Int8Graph::load(file.path()));
  }
  {
    Int8Graph g = lenet5_with_table();
    g.ops.front().pixel_std = {0.3f, 0.3f};
    TempFile file("table_std.h5");
    g.save(file.path());
    EXPECT_TRUE(load_refused(file.path(), {"pixel_std holds 2 values, expected one per channel (1)"}));
  }
}

// ------------------------------------------------------------------------------------- validate()

// The message of the std::invalid_argument validate() throws for a graph broken by `brake`.
std::string validate_error(const Int8Graph& good, const std::function<void(Int8Graph&)>& brake) {
  Int8Graph g = good;
  brake(g);
  try {
    g.validate();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(valid)";
}

size_t first_op(const Int8Graph& g, Int8OpKind kind) {
  for (size_t i = 0; i < g.ops.size(); ++i)
    if (g.ops[i].kind == kind) return i;
  return g.ops.size();
}

// The requantize op keeps every field through a file, runs as it did, and a broken one is refused naming
// the field.
TEST(Int8GraphFile, RequantizeRoundTripsAndIsValidated) {
  const Int8Graph g = stream_graph();
  const size_t first = first_op(g, Int8OpKind::Requantize);
  ASSERT_LT(first, g.ops.size()) << g.summary();
  EXPECT_EQ(std::count_if(g.ops.begin(), g.ops.end(), [](const Int8Op& op) { return op.kind == Int8OpKind::Requantize; }),
            2)
      << g.summary();
  const Int8Op& r = g.ops[first];
  EXPECT_EQ(r.name, "body.4.body.0.0.input_requant");
  EXPECT_EQ(r.requant.quantized_activation_max - r.requant.quantized_activation_min, 15) << "a 4-bit grid";
  EXPECT_LT(r.requant.shift, 0) << "a coarser grid: a multiplier below 1";
  TempFile file("requantize.h5");
  g.save(file.path());
  const Int8Graph h = Int8Graph::load(file.path());
  ASSERT_EQ(h.ops.size(), g.ops.size());
  for (size_t i = 0; i < g.ops.size(); ++i)
    expect_same_op(h.ops[i], g.ops[i], "op " + std::to_string(i) + " (" + int8_op_name(g.ops[i].kind) + ")");
  expect_same_graph(h, g, {3, 3, 8, 8}, "requantize round trip");

  const auto contains = [](const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; };
  std::string e = validate_error(g, [&](Int8Graph& b) { b.ops[first].requant.multiplier = 5; });
  EXPECT_TRUE(contains(e, "requantize") && contains(e, "multiplier 5 shift")) << e;
  e = validate_error(g, [&](Int8Graph& b) { b.ops[first].requant.output_offset += 1; });
  EXPECT_TRUE(contains(e, "not the grid's zero point")) << e;
  e = validate_error(g, [&](Int8Graph& b) { b.ops[first].requant.input_offset = 500; });
  EXPECT_TRUE(contains(e, "input_offset = 500")) << e;
  e = validate_error(g, [&](Int8Graph& b) { b.ops[first].inputs.push_back(b.ops[first].inputs[0]); });
  EXPECT_TRUE(contains(e, "reads 2 slots, expected 1")) << e;
}

TEST(Int8GraphValidate, ConvertedGraphsPassAndEachBrokenRuleIsNamed) {
  const Int8Graph lenet = lenet5_graph(8);
  EXPECT_NO_THROW(lenet.validate());
  EXPECT_NO_THROW(every_op_graph().validate());
  const size_t fc = first_op(lenet, Int8OpKind::FullyConnected), conv = first_op(lenet, Int8OpKind::Conv2d);
  ASSERT_LT(fc, lenet.ops.size());
  ASSERT_LT(conv, lenet.ops.size());
  const auto contains = [](const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; };

  // The last op reads a slot nothing wrote (eval once read uninitialised memory there).
  std::string e = validate_error(lenet, [](Int8Graph& g) {
    g.num_slots += 1;
    g.ops.back().inputs = {g.num_slots - 1};
  });
  EXPECT_TRUE(contains(e, "which no earlier op writes")) << e;
  // An op reading what only a later op writes: not in execution order.
  e = validate_error(lenet, [&](Int8Graph& g) {
    g.num_slots += 1;
    g.ops[fc].inputs = {g.num_slots - 1};
    g.ops.back().output = g.num_slots - 1;
  });
  EXPECT_TRUE(contains(e, "op " + std::to_string(fc)) && contains(e, "no earlier op writes")) << e;
  // A consumer whose width disagrees with its producer (120 values where it takes 121).
  e = validate_error(lenet, [&](Int8Graph& g) {
    for (size_t i = fc + 1; i < g.ops.size(); ++i)
      if (g.ops[i].kind == Int8OpKind::FullyConnected) {
        Shape& w = g.ops[i].layer.weight_shape;
        w[1] += 1;
        g.ops[i].layer.weight.resize(static_cast<size_t>(w[0] * w[1]));
        break;
      }
  });
  EXPECT_TRUE(contains(e, "fully_connected")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[fc].layer.fc.output_multiplier[1] = 5; });
  EXPECT_TRUE(contains(e, "output_multiplier[1]: multiplier 5 shift")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[conv].layer.conv.output_shift[0] = 40; });
  EXPECT_TRUE(contains(e, "shift 40")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[conv].layer.bias[2] = INT32_MAX - 1000; });
  EXPECT_TRUE(contains(e, "bias[2]") && contains(e, "overflow")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[fc].layer.output.quant_max = 300; });
  EXPECT_TRUE(contains(e, "int8 range")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[fc].layer.fc.input_offset = 1000; });
  EXPECT_TRUE(contains(e, "input_offset = 1000")) << e;
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops.front().grid.zero_point[0] = 200; });
  EXPECT_TRUE(contains(e, "zero_point")) << e;
  e = validate_error(lenet, [](Int8Graph& g) { g.num_slots = 1 << 20; });
  EXPECT_TRUE(contains(e, "num_slots = 1048576")) << e;
  e = validate_error(lenet, [](Int8Graph& g) { g.input_shape = {1, 65535, 65535}; });
  EXPECT_TRUE(contains(e, "too large")) << e;
  // A -128 weight: the kernels' packing assumes narrow-range weights (found by fuzzing the loader).
  e = validate_error(lenet, [&](Int8Graph& g) { g.ops[fc].layer.weight[7] = -128; });
  EXPECT_TRUE(contains(e, "weight code -128 at index 7")) << e;
  // On a grid of odd codes (mid-rise weights) an even code, here 0, cannot come from convert.
  e = validate_error(lenet, [&](Int8Graph& g) {
    LoweredLayer& l = g.ops[fc].layer;
    for (int8_t& q : l.weight) q = static_cast<int8_t>(q % 2 != 0 ? q : q == 126 ? 127 : q + 1);
    l.weight[5] = 0;
    l.weights.odd_codes = true;
  });
  EXPECT_TRUE(contains(e, "weight code 0 at index 5 on a grid of odd codes in [-127, 127]")) << e;
  e = validate_error(lenet, [](Int8Graph& g) { g.ops.front().name = "evil\x1b[2J"; });
  EXPECT_EQ(e, "(valid)");  // names are only printed, escaped (checked in the CLI tests)
}

}  // namespace
}  // namespace qatlab
