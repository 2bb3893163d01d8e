// test_packed_weights.cpp: integer models with 2- and 4-bit weights keep them packed, in memory and in
// their file, and run them packed: a W4 and a W2 LeNet-5 converted, saved and loaded give the codes
// of the exact-mode simulation on every kernel path, and take about half (a quarter) of the W8
// model's weight bytes.
#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/h5io.h"
#include "nn/zoo.h"
#include "quant/engine/packed_codes.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

using test::random_input;
using test::TempFile;



// A LeNet-5 with `weight_bits`-bit weights (per channel) and 8-bit activations, its observers run
// over a few batches, and its QAT model kept for exact-mode comparisons.
struct Converted {
  std::shared_ptr<QatModel> model;
  Int8Graph graph;
};

Converted lenet5(int weight_bits) {
  Rng rng(17);  // the same float weights for every width
  Converted c;
  c.model = prepare_qat(make_model("lenet5", ModelSpec{}, rng),
                        QConfig::from_options(weight_bits, 8, true, "minmax", "ema", {}));
  c.model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) c.model->forward(random_input({8, 1, 28, 28}, rng));
  }
  c.model->eval();
  c.graph = convert(*c.model, {1, 28, 28});
  return c;
}

std::vector<int8_t> exact_codes(const std::shared_ptr<QatModel>& model, const Tensor& x, const QParams& grid) {
  NoGradGuard no_grad;
  set_exact_mode(*model, true);
  const Tensor y = model->forward(x);
  set_exact_mode(*model, false);
  return quantize_tensor(y, grid);
}

bool is_layer(const Int8Op& op) { return op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected; }

// Every conv / fully connected op holds its weights packed at `storage` bits only, and its kernels
// were built from them.
void expect_packed(const Int8Graph& g, int storage, const std::string& what) {
  int layers = 0;
  for (const Int8Op& op : g.ops) {
    if (!is_layer(op)) continue;
    ++layers;
    const LoweredLayer& l = op.layer;
    EXPECT_EQ(l.weight_bits, storage) << what << " " << op.name;
    EXPECT_TRUE(l.weight.empty()) << what << " " << op.name << ": the int8 copy is released";
    EXPECT_EQ(static_cast<int64_t>(l.weight_packed.size()), packed_bytes(shape_numel(l.weight_shape), storage))
        << what << " " << op.name;
    EXPECT_EQ(l.weight_bytes(), static_cast<int64_t>(l.weight_packed.size()));
    if (op.packed_conv) {
      EXPECT_EQ(op.packed_conv->weight_bits(), storage) << what << " " << op.name;
      EXPECT_EQ(op.packed_conv->weight_bytes(), l.weight_bytes()) << what << " " << op.name;
    }
    if (op.packed_fc) {
      EXPECT_EQ(op.packed_fc->weight_bits(), storage) << what << " " << op.name;
      // 4-bit panels, whole panels of 16 outputs and k-quads: half a byte per (padded) weight.
      const Shape& s = l.weight_shape;
      EXPECT_EQ(op.packed_fc->weight_bytes(), (s[0] + 15) / 16 * 16 * ((s[1] + 3) / 4 * 4) / 2)
          << what << " " << op.name;
    }
  }
  EXPECT_EQ(layers, 5) << what;
}

// The codes of the graphs (c's own, and the same loaded from its file) on every kernel path this CPU
// runs, for batches of 1 (one group on one thread) and 19 (groups over threads), equal the exact-mode
// simulation's.
void expect_all_paths_exact(const Converted& c, const std::vector<const Int8Graph*>& graphs, const std::string& what) {
  Rng rng(23);
  for (int64_t n : {1, 19}) {
    const Tensor x = random_input({n, 1, 28, 28}, rng);
    const std::vector<int8_t> exact = exact_codes(c.model, x, c.graph.output_grid());
    for (size_t i = 0; i < graphs.size(); ++i)
      for (KernelPath path : {KernelPath::Reference, KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
        if (!kernel_path_supported(path)) continue;
        Shape shape;
        EXPECT_EQ(graphs[i]->run_codes(x, &shape, path), exact)
            << what << (i == 0 ? "" : " loaded") << ", " << kernel_path_name(path) << ", batch " << n;
        EXPECT_EQ(shape, (Shape{n, 10}));
      }
  }
}

TEST(PackedWeights, W4AndW2LeNetRunPackedOnEveryPathBeforeAndAfterSaveLoad) {
  for (auto [bits, storage] : {std::pair{4, 4}, std::pair{3, 4}, std::pair{2, 2}}) {
    const std::string what = std::string("W").append(std::to_string(bits));  // (operator+ trips a GCC 12 warning)
    const Converted c = lenet5(bits);
    expect_packed(c.graph, storage, what);

    TempFile file(what + ".h5");
    c.graph.save(file.path());
    {
      const H5File f = H5File::open_read(file.path());
      int packed_layers = 0;
      for (const std::string& idx : f.list("ops")) {
        if (!f.exists("ops/" + idx + "/weight_packed")) continue;
        ++packed_layers;
        EXPECT_EQ(f.get_attr_int("ops/" + idx, "weight_bits"), storage) << what << " op " << idx;
        EXPECT_FALSE(f.exists("ops/" + idx + "/weight")) << what << " op " << idx;
      }
      EXPECT_EQ(packed_layers, 5) << what;
    }
    const Int8Graph loaded = Int8Graph::load(file.path());
    expect_packed(loaded, storage, what + " loaded");
    for (size_t i = 0; i < c.graph.ops.size(); ++i)
      if (is_layer(c.graph.ops[i])) {
        EXPECT_EQ(loaded.ops[i].layer.weight_packed, c.graph.ops[i].layer.weight_packed) << what << " op " << i;
      }
    EXPECT_EQ(loaded.parameter_bytes(), c.graph.parameter_bytes()) << what;
    EXPECT_NE(loaded.summary().find("packed " + std::to_string(storage) + "-bit"), std::string::npos)
        << loaded.summary();
    expect_all_paths_exact(c, {&c.graph, &loaded}, what);
  }
}

// parameter_bytes counts the packed bytes: weights at 4 (2) bits plus 12 bytes a channel (bias,
// multiplier, shift), about half (a quarter and a bit) of the W8 model's; the file shrinks alike.
TEST(PackedWeights, ParameterBytesCountThePackedWeights) {
  const Converted w8 = lenet5(8), w4 = lenet5(4), w2 = lenet5(2);
  int64_t weights = 0, channels = 0;
  for (const Int8Op& op : w8.graph.ops)
    if (is_layer(op)) weights += shape_numel(op.layer.weight_shape), channels += op.layer.weight_shape[0];
  EXPECT_EQ(weights, 61470);  // LeNet-5: 150 + 2400 + 48000 + 10080 + 840
  int64_t packed4 = 0, packed2 = 0;
  for (const Int8Op& op : w8.graph.ops)
    if (is_layer(op)) {
      packed4 += packed_bytes(shape_numel(op.layer.weight_shape), 4);
      packed2 += packed_bytes(shape_numel(op.layer.weight_shape), 2);
    }
  EXPECT_EQ(w8.graph.parameter_bytes(), weights + 12 * channels);
  EXPECT_EQ(w4.graph.parameter_bytes(), packed4 + 12 * channels);
  EXPECT_EQ(w2.graph.parameter_bytes(), packed2 + 12 * channels);
  const double half = static_cast<double>(w4.graph.parameter_bytes()) / w8.graph.parameter_bytes();
  EXPECT_GT(half, 0.5);
  EXPECT_LT(half, 0.55);
  EXPECT_LT(static_cast<double>(w2.graph.parameter_bytes()) / w8.graph.parameter_bytes(), 0.3);

  TempFile f8("size8.h5"), f4("size4.h5");
  w8.graph.save(f8.path());
  w4.graph.save(f4.path());
  EXPECT_LT(std::filesystem::file_size(f4.path()) + 15000, std::filesystem::file_size(f8.path()));
}

// A graph whose low-bit layers still hold int8 codes (built by hand, not prepared) is packed when
// saved, and prepare() packs it in memory: both then run as before.
TEST(PackedWeights, UnpreparedInt8CodesArePackedBySaveAndByPrepare) {
  const Converted c = lenet5(4);
  Int8Graph unpacked = c.graph;
  for (Int8Op& op : unpacked.ops) {
    if (!is_layer(op)) continue;
    op.layer.weight = op.layer.weight_codes();
    op.layer.weight_packed.clear();
    op.layer.weight_bits = 8;
    op.packed_conv.reset(), op.packed_fc.reset();
  }
  Rng rng(29);
  const Tensor x = random_input({6, 1, 28, 28}, rng);
  Shape shape;
  const std::vector<int8_t> expect = c.graph.run_codes(x, &shape, KernelPath::Reference);
  // Without kernels the optimized paths fall back to the reference kernels on the int8 codes.
  EXPECT_EQ(unpacked.run_codes(x, &shape, best_kernel_path()), expect);

  TempFile file("unprepared.h5");
  unpacked.save(file.path());
  const Int8Graph loaded = Int8Graph::load(file.path());
  expect_packed(loaded, 4, "saved unprepared");
  EXPECT_EQ(loaded.run_codes(x, &shape, best_kernel_path()), expect);

  unpacked.prepare();
  expect_packed(unpacked, 4, "prepared");
  EXPECT_EQ(unpacked.run_codes(x, &shape, best_kernel_path()), expect);
  EXPECT_EQ(unpacked.parameter_bytes(), c.graph.parameter_bytes());
}

// Codes outside the bits of their grid cannot be packed: prepare() says which.
TEST(PackedWeights, CodesOutsideTheirGridAreRefused) {
  Int8Graph g = lenet5(4).graph;
  for (Int8Op& op : g.ops)
    if (op.kind == Int8OpKind::FullyConnected) {
      op.layer.weight = op.layer.weight_codes();
      op.layer.weight_packed.clear();
      op.layer.weight_bits = 8;
      op.layer.weight[3] = 9;
      break;
    }
  try {
    g.prepare();
    ADD_FAILURE() << "prepare accepted a code of 9 on a 4-bit grid";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("code 9 at index 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4 bits"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace qatlab
