// test_integer_eval.cpp: the integer model's input pipeline from raw pixels. The pixel table convert
// stores gives, for every byte value of every channel (MNIST's one, CIFAR-10's three), the input code the
// QAT simulation computes from that pixel; integer evaluation from raw pixels gives the output codes it gave
// from normalised floats, and those of exact mode; a graph without a table still evaluates from floats.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/zoo.h"
#include "quant/engine/lowered_layer.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {
namespace {

struct Case {
  std::string dataset, model;
  Shape chw;
  std::string activation_method;  // the input quantizer's kind: observer or lsq
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.dataset << " " << c.model << " " << c.activation_method; }

// n images in which every byte value occurs in every channel, at positions that differ from image to
// image (image i, channel c: a random permutation of the values, repeated over the plane), labels random.
DataBundle synthetic_data(const Case& c, int64_t n, uint64_t seed) {
  DataBundle b;
  ImageDataset& d = b.test;
  d.name = c.dataset;
  d.n = n, d.c = c.chw[0], d.h = c.chw[1], d.w = c.chw[2], d.num_classes = 10;
  const int64_t hw = d.h * d.w;
  d.pixels.resize(static_cast<size_t>(n * d.c * hw));  // (N, C, H, W)
  Rng rng(seed);
  for (int64_t i = 0; i < n * d.c; ++i) {
    std::vector<uint8_t> perm(256);
    for (int v = 0; v < 256; ++v) perm[v] = static_cast<uint8_t>(v);
    for (int v = 255; v > 0; --v) std::swap(perm[v], perm[rng.below(static_cast<uint64_t>(v) + 1)]);
    for (int64_t k = 0; k < hw; ++k) d.pixels[i * hw + k] = perm[k % 256];
  }
  for (int64_t i = 0; i < n; ++i) d.labels.push_back(static_cast<int32_t>(rng.below(10)));
  const Normalisation norm = dataset_normalisation(c.dataset);
  b.mean = norm.mean;
  b.std = norm.std;
  b.spec = ModelSpec{d.c, d.h, d.w, 10};
  return b;
}

// A QAT model of the case whose observers have seen the data's normalised floats (so the input grid is
// the one training would give), in evaluation mode.
std::shared_ptr<QatModel> calibrated_model(const Case& c, const DataBundle& data) {
  Rng rng(3);
  const auto model = prepare_qat(make_model(c.model, data.spec, rng),
                                 QConfig::from_options(8, 8, true, "minmax", "ema", {}, "observer", c.activation_method));
  model->train();
  {
    NoGradGuard no_grad;
    DataLoader loader(data.test, loader_options(data, 16, 0, false));
    loader.start_epoch(0);
    Batch batch;
    while (loader.next(batch)) model->forward(batch.images);
  }
  model->eval();
  return model;
}

// Over every image of the loader: how many input values the table maps to a code other than the one the
// simulation computes, and which (channel, pixel) pairs occurred. The simulation's input codes are those
// its first layer works on: the input quantizer's fake-quantized floats on its grid (what exact mode
// quantizes, and the codes x / S_in of the deployed expression).
struct TableCheck {
  int64_t values = 0, mismatches = 0;
  std::vector<bool> seen;  // (C, 256)
};

TableCheck check_table(QatModel& model, const std::vector<int8_t>& table, DataLoader& loader, int64_t channels) {
  NoGradGuard no_grad;
  TableCheck r;
  r.seen.assign(static_cast<size_t>(channels * 256), false);
  const QParams grid = model.input_quant().qparams();
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    const std::vector<int8_t> sim = quantize_tensor(model.input_quant()(batch.images), grid);
    const int64_t hw = batch.images.numel() / (batch.images.size(0) * channels);
    for (size_t k = 0; k < sim.size(); ++k) {
      const int64_t c = static_cast<int64_t>(k) / hw % channels;
      const int64_t entry = c * 256 + batch.pixels[k];
      r.seen[static_cast<size_t>(entry)] = true;
      r.mismatches += table[static_cast<size_t>(entry)] != sim[k];
      r.values++;
    }
  }
  return r;
}

class PixelTable : public ::testing::TestWithParam<Case> {};

TEST_P(PixelTable, ReproducesTheSimulationsInputCodesForEveryPixelAndChannel) {
  const Case& c = GetParam();
  const DataBundle data = synthetic_data(c, 12, 7);
  const auto model = calibrated_model(c, data);
  Int8Graph graph = convert(*model, c.chw);
  ASSERT_TRUE(set_dataset_pixel_table(graph, c.dataset));
  ASSERT_TRUE(graph.has_pixel_table());
  const std::vector<int8_t>& table = graph.ops.front().pixel_codes;
  ASSERT_EQ(static_cast<int64_t>(table.size()), c.chw[0] * 256);
  EXPECT_EQ(graph.ops.front().pixel_mean, data.mean);
  EXPECT_EQ(graph.ops.front().pixel_std, data.std);
  // The grid spreads the normalised range over many codes, so the table is no constant.
  EXPECT_LT(table.front(), table.back());

  DataLoader loader(data.test, integer_loader_options(graph, data, 5));
  const TableCheck check = check_table(*model, table, loader, c.chw[0]);
  EXPECT_EQ(check.mismatches, 0) << "of " << check.values << " input values";
  for (size_t e = 0; e < check.seen.size(); ++e) ASSERT_TRUE(check.seen[e]) << "channel " << e / 256 << " pixel " << e % 256;

  // The check sees a single wrong entry: the last channel's pixel 200 moved by one code.
  std::vector<int8_t> wrong = table;
  int8_t& entry = wrong[static_cast<size_t>((c.chw[0] - 1) * 256 + 200)];
  entry = static_cast<int8_t>(entry == 127 ? 126 : entry + 1);
  EXPECT_GT(check_table(*model, wrong, loader, c.chw[0]).mismatches, 0);
}

// Evaluation from raw pixels gives the output codes that evaluation from normalised floats gave (the
// path of files without a table), hence the same accuracy, and those of exact mode bit for bit.
TEST_P(PixelTable, IntegerEvaluationFromRawPixelsGivesTheSameOutputCodes) {
  const Case& c = GetParam();
  const DataBundle data = synthetic_data(c, 24, 9);
  const auto model = calibrated_model(c, data);
  Int8Graph with_table = convert(*model, c.chw);
  ASSERT_TRUE(set_dataset_pixel_table(with_table, c.dataset));
  const Int8Graph without_table = convert(*model, c.chw);
  ASSERT_FALSE(without_table.has_pixel_table());

  for (const KernelPath path : {KernelPath::Reference, best_kernel_path()}) {
    const std::string what = c.dataset + " " + kernel_path_name(path);
    DataLoader pixels(data.test, integer_loader_options(with_table, data, 10));
    DataLoader floats(data.test, integer_loader_options(without_table, data, 10));
    EvalResult r_pixels, r_floats;
    Agreement a_pixels, a_floats;
    IntegerOutputs o_pixels, o_floats;
    run_integer(with_table, path, pixels, model.get(), r_pixels, a_pixels, &o_pixels);
    run_integer(without_table, path, floats, nullptr, r_floats, a_floats, &o_floats);
    ASSERT_EQ(o_pixels.codes.size(), static_cast<size_t>(24 * 10)) << what;
    EXPECT_EQ(o_pixels.codes, o_floats.codes) << what;
    EXPECT_EQ(r_pixels.accuracy, r_floats.accuracy) << what;
    EXPECT_EQ(a_pixels.exact_identical_images, 24) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Datasets, PixelTable,
                         ::testing::Values(Case{"mnist", "lenet5", {1, 28, 28}, "observer"},
                                           Case{"cifar10", "cifar-cnn", {3, 32, 32}, "observer"},
                                           Case{"cifar10", "cifar-cnn", {3, 32, 32}, "lsq"}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.dataset + "_" + info.param.activation_method;
                         });

TEST(PixelTable, RunIntegerRefusesALoaderWithoutRawPixels) {
  const Case c{"mnist", "lenet5", {1, 28, 28}, "observer"};
  const DataBundle data = synthetic_data(c, 4, 11);
  const auto model = calibrated_model(c, data);
  Int8Graph graph = convert(*model, c.chw);
  ASSERT_TRUE(set_dataset_pixel_table(graph, c.dataset));
  DataLoader floats_only(data.test, loader_options(data, 4, 0, false));
  EvalResult r;
  Agreement a;
  EXPECT_THROW(run_integer(graph, KernelPath::Reference, floats_only, nullptr, r, a), std::logic_error);
  EXPECT_FALSE(set_dataset_pixel_table(graph, "imagenet"));  // an unknown dataset leaves the graph as it was
  EXPECT_TRUE(graph.has_pixel_table());
  EXPECT_NE(input_pipeline_note(convert(*model, c.chw), "m.h5").find("no pixel table"), std::string::npos);
  EXPECT_EQ(input_pipeline_note(graph, "m.h5"), "");
}

}  // namespace
}  // namespace qatlab
