// test_dataset.cpp: loading MNIST-format splits (raw and .gz) and the dataset-level validation errors.
#include <gtest/gtest.h>

#include "data/dataset.h"
#include "data/file_io.h"
#include "data/idx.h"
#include "tests/data/data_test_util.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab {
namespace {

using testing::contains;
using testing::error_of;
using testing::random_bytes;
using testing::starts_with;
using testing::TempDir;
using testing::write_tiny_split;

void expect_matches(const ImageDataset& ds, const testing::TinySplit& s, int64_t n, int64_t h, int64_t w) {
  EXPECT_EQ(ds.n, n);
  EXPECT_EQ(ds.c, 1);
  EXPECT_EQ(ds.h, h);
  EXPECT_EQ(ds.w, w);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.pixels, s.pixels);
  ASSERT_EQ(ds.labels.size(), s.labels.size());
  for (size_t i = 0; i < s.labels.size(); ++i) EXPECT_EQ(ds.labels[i], s.labels[i]) << i;
}

TEST(IdxDataset, LoadsBothSplitsRawAndGzip) {
  TempDir tmp;
  const auto train = write_tiny_split(tmp.path(), "train", 6, 28, 28, false, false, 1);
  const auto test = write_tiny_split(tmp.path(), "t10k", 4, 28, 28, true, false, 2);
  EXPECT_TRUE(has_idx_dataset_files(tmp.path()));

  const ImageDataset a = load_idx_dataset(tmp.path(), Split::Train, "mnist");
  EXPECT_EQ(a.name, "mnist");
  expect_matches(a, train, 6, 28, 28);
  const ImageDataset b = load_idx_dataset(tmp.path(), Split::Test, "fashion-mnist");
  EXPECT_EQ(b.name, "fashion-mnist");
  expect_matches(b, test, 4, 28, 28);
}

TEST(IdxDataset, AcceptsAnyImageSizeAsOneChannel) {
  TempDir tmp;
  const auto s = write_tiny_split(tmp.path(), "train", 3, 5, 7, true, true, 3);
  expect_matches(load_idx_dataset(tmp.path(), Split::Train, "tiny"), s, 3, 5, 7);
}

TEST(IdxDataset, PrefersTheRawFileWhenBothExist) {
  TempDir tmp;
  const auto raw = write_tiny_split(tmp.path(), "train", 3, 4, 4, false, false, 4);
  write_tiny_split(tmp.path(), "train", 3, 4, 4, true, true, 5);  // different values in the .gz files
  EXPECT_EQ(find_idx_file(tmp.path(), "train-images-idx3-ubyte"), tmp.file("train-images-idx3-ubyte"));
  expect_matches(load_idx_dataset(tmp.path(), Split::Train, "mnist"), raw, 3, 4, 4);
  EXPECT_EQ(find_idx_file(tmp.path(), "t10k-images-idx3-ubyte"), "");
}

TEST(IdxDataset, MissingFileNamesDirectoryFileAndHint) {
  TempDir tmp;
  write_tiny_split(tmp.path(), "train", 3, 4, 4, false, false, 6);
  std::filesystem::remove(tmp.file("train-labels-idx1-ubyte"));
  EXPECT_FALSE(has_idx_dataset_files(tmp.path()));
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); });
  EXPECT_TRUE(starts_with(msg, "mnist not found in " + tmp.path() + ": missing train-labels-idx1-ubyte")) << msg;
  EXPECT_TRUE(contains(msg, "--data-dir")) << msg;
  EXPECT_FALSE(contains(msg, "\n")) << msg;
  // The test split is absent altogether.
  EXPECT_TRUE(contains(error_of([&] { load_idx_dataset(tmp.path(), Split::Test, "mnist"); }),
                       "missing t10k-images-idx3-ubyte"));
}

TEST(IdxDataset, CountMismatchNamesBothCounts) {
  TempDir tmp;
  write_tiny_split(tmp.path(), "train", 5, 4, 4, false, false, 7);
  write_idx(tmp.file("train-labels-idx1-ubyte"), {{4}, {1, 2, 3, 4}}, false);
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); });
  EXPECT_TRUE(contains(msg, "holds 5 images")) << msg;
  EXPECT_TRUE(contains(msg, "holds 4 labels")) << msg;
}

TEST(IdxDataset, LabelOutOfRange) {
  TempDir tmp;
  write_tiny_split(tmp.path(), "t10k", 3, 4, 4, false, false, 8);
  write_idx(tmp.file("t10k-labels-idx1-ubyte"), {{3}, {1, 10, 3}}, false);
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Test, "mnist"); });
  EXPECT_EQ(msg, tmp.file("t10k-labels-idx1-ubyte") + ": label 10 of item 1 is out of range, expected 0..9");
}

TEST(IdxDataset, WrongRanks) {
  TempDir tmp;
  write_tiny_split(tmp.path(), "train", 3, 4, 4, false, false, 9);
  write_idx(tmp.file("train-images-idx3-ubyte"), {{3, 16}, random_bytes(48, 1)}, false);
  std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); });
  EXPECT_TRUE(contains(msg, "expected images of shape (N, H, W) or (N, C, H, W), found (3, 16)")) << msg;

  write_idx(tmp.file("train-images-idx3-ubyte"), {{3, 4, 4}, random_bytes(48, 1)}, false);
  write_idx(tmp.file("train-labels-idx1-ubyte"), {{3, 1}, {1, 2, 3}}, false);
  msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); });
  EXPECT_TRUE(contains(msg, "expected labels of shape (N), found (3, 1)")) << msg;
}

TEST(IdxDataset, EmptyImageSetIsRejected) {
  TempDir tmp;
  write_idx(tmp.file("train-images-idx3-ubyte"), {{0, 28, 28}, {}}, false);
  write_idx(tmp.file("train-labels-idx1-ubyte"), {{0}, {}}, false);
  EXPECT_TRUE(contains(error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); }), "empty image set"));
}

TEST(IdxDataset, FileErrorsPropagateWithThePath) {
  TempDir tmp;
  write_tiny_split(tmp.path(), "train", 3, 4, 4, false, true, 10);
  std::vector<uint8_t> gz = read_file_bytes(tmp.file("train-labels-idx1-ubyte.gz"));
  gz.resize(gz.size() - 5);
  write_file_bytes(tmp.file("train-labels-idx1-ubyte.gz"), gz.data(), gz.size());
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "mnist"); });
  EXPECT_TRUE(starts_with(msg, tmp.file("train-labels-idx1-ubyte.gz") + ": corrupt gzip")) << msg;
}

}  // namespace
}  // namespace qatlab

namespace qatlab::testing {
namespace {

TEST(IdxDataset, Idx4ImagesAndClassCountFromTheLabels) {
  TempDir tmp;
  TinySpec s;
  s.c = 3;
  s.classes = 4;
  write_idx_dataset(tmp.path(), s);
  EXPECT_TRUE(has_idx_dataset_files(tmp.path()));
  EXPECT_EQ(idx_class_count(tmp.path(), "x"), 4);
  const ImageDataset d = load_idx_dataset(tmp.path(), Split::Train, "idx:x", /*num_classes=*/0);
  EXPECT_EQ(d.c, 3);
  EXPECT_EQ(d.h, 8);
  EXPECT_EQ(d.w, 8);
  EXPECT_EQ(d.num_classes, 4);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"0", "1", "2", "3"}));
  std::vector<uint8_t> px;
  std::vector<int32_t> labels;
  tiny_split(s, s.n_train, s.seed, px, labels);
  EXPECT_EQ(d.pixels, px);
  EXPECT_EQ(d.labels, labels);
  // With a class count given, a larger label is refused with the range.
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Train, "x", 3); });
  EXPECT_TRUE(contains(msg, "train-labels-idx1-ubyte: label 3 of item 3 is out of range, expected 0..2")) << msg;
}

TEST(IdxDataset, TruncatedIdx4FileNamesItself) {
  TempDir tmp;
  TinySpec s;
  s.c = 2;
  write_idx_dataset(tmp.path(), s);
  const std::string images = tmp.file("t10k-images-idx4-ubyte");
  std::vector<uint8_t> bytes = read_file_bytes(images);
  bytes.resize(bytes.size() - 7);
  write_file_bytes(images, bytes.data(), bytes.size());
  const std::string msg = error_of([&] { load_idx_dataset(tmp.path(), Split::Test, "x", 0); });
  EXPECT_TRUE(starts_with(msg, images + ": truncated")) << msg;
}

TEST(ChannelMeanStd, ExactPerChannelStatistics) {
  ImageDataset d;
  d.name = "x";
  d.n = 2;
  d.c = 2;
  d.h = 1;
  d.w = 2;
  d.pixels = {0, 255, 51, 51, /*image 2*/ 255, 0, 102, 102};  // (N, C, H, W)
  std::vector<float> mean, std;
  channel_mean_std(d, mean, std);
  ASSERT_EQ(mean.size(), 2u);
  EXPECT_FLOAT_EQ(mean[0], 0.5f);                 // 0, 255, 255, 0
  EXPECT_FLOAT_EQ(std[0], 0.5f);
  EXPECT_FLOAT_EQ(mean[1], 76.5f / 255.0f);       // 51, 51, 102, 102
  EXPECT_FLOAT_EQ(std[1], 25.5f / 255.0f);
  d.n = 0;
  EXPECT_THROW(channel_mean_std(d, mean, std), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab::testing
