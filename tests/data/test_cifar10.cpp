// test_cifar10.cpp: the CIFAR-10 binary batch reader (record layout, directory forms) and its errors.
#include <gtest/gtest.h>

#include "data/dataset.h"
#include "data/file_io.h"
#include "tests/data/data_test_util.h"

namespace qatlab {
namespace {

using testing::contains;
using testing::error_of;
using testing::starts_with;
using testing::TempDir;

constexpr int64_t kImage = 3 * 32 * 32;

// A pixel value that identifies image, channel and position, so any layout mix-up shows.
uint8_t pixel_value(int64_t image, int64_t c, int64_t y, int64_t x) {
  return static_cast<uint8_t>(image * 31 + c * 101 + y * 7 + x * 3);
}

// Writes a batch file by hand in the documented record layout (label, 1024 R, 1024 G, 1024 B), for
// images first..first+count-1 with label (image % 10).
void write_batch_by_hand(const std::string& path, int64_t first, int64_t count) {
  std::vector<uint8_t> bytes;
  for (int64_t i = first; i < first + count; ++i) {
    bytes.push_back(static_cast<uint8_t>(i % 10));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) bytes.push_back(pixel_value(i, c, y, x));
  }
  write_file_bytes(path, bytes.data(), bytes.size());
}

void write_full_set(const std::string& dir) {
  const int64_t counts[5] = {2, 3, 1, 2, 2};
  int64_t first = 0;
  for (int b = 0; b < 5; ++b) {
    write_batch_by_hand(dir + "/data_batch_" + std::to_string(b + 1) + ".bin", first, counts[b]);
    first += counts[b];
  }
  write_batch_by_hand(dir + "/test_batch.bin", 100, 3);
}

void expect_images(const ImageDataset& ds, int64_t first, int64_t n) {
  EXPECT_EQ(ds.name, "cifar10");
  EXPECT_EQ(ds.n, n);
  EXPECT_EQ(ds.c, 3);
  EXPECT_EQ(ds.h, 32);
  EXPECT_EQ(ds.w, 32);
  EXPECT_EQ(ds.num_classes, 10);
  ASSERT_EQ(ds.pixels.size(), static_cast<size_t>(n * kImage));
  ASSERT_EQ(ds.labels.size(), static_cast<size_t>(n));
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(ds.labels[i], (first + i) % 10);
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x)
          wrong += ds.pixels[((i * 3 + c) * 32 + y) * 32 + x] != pixel_value(first + i, c, y, x);
  }
  EXPECT_EQ(wrong, 0);
}

TEST(Cifar10, LoadsTrainBatchesInOrderAndTest) {
  TempDir tmp;
  write_full_set(tmp.path());
  expect_images(load_cifar10(tmp.path(), Split::Train), 0, 10);
  expect_images(load_cifar10(tmp.path(), Split::Test), 100, 3);
  EXPECT_EQ(find_cifar10_batches(tmp.path()), tmp.path());
}

TEST(Cifar10, AcceptsTheParentOfTheArchiveDirectory) {
  TempDir tmp;
  const std::string inner = tmp.subdir("cifar-10-batches-bin");
  write_full_set(inner);
  expect_images(load_cifar10(tmp.path(), Split::Test), 100, 3);
  expect_images(load_cifar10(tmp.path(), Split::Train), 0, 10);
  EXPECT_EQ(find_cifar10_batches(tmp.path()), inner);
}

TEST(Cifar10, WriterMatchesTheRecordLayout) {
  TempDir tmp;
  write_batch_by_hand(tmp.file("by_hand.bin"), 5, 2);
  std::vector<uint8_t> pixels(2 * kImage);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) pixels[((i * 3 + c) * 32 + y) * 32 + x] = pixel_value(5 + i, c, y, x);
  write_cifar10_batch(tmp.file("written.bin"), pixels, {5, 6});
  EXPECT_EQ(read_file_bytes(tmp.file("written.bin")), read_file_bytes(tmp.file("by_hand.bin")));
}

TEST(Cifar10, MissingFileNamesItWithTheHint) {
  TempDir tmp;
  write_full_set(tmp.path());
  std::filesystem::remove(tmp.file("data_batch_4.bin"));
  EXPECT_EQ(find_cifar10_batches(tmp.path()), "");
  const std::string msg = error_of([&] { load_cifar10(tmp.path(), Split::Train); });
  EXPECT_EQ(msg, "CIFAR-10 not found in " + tmp.path() +
                     ": missing data_batch_4.bin; download the binary version (cifar-10-binary.tar.gz) and "
                     "unpack it there, or pass --data-dir");
  EXPECT_NO_THROW(load_cifar10(tmp.path(), Split::Test));  // the test split is complete
  TempDir empty;
  EXPECT_TRUE(contains(error_of([&] { load_cifar10(empty.path(), Split::Test); }), "missing test_batch.bin"));
}

TEST(Cifar10, SizeNotAMultipleOfTheRecord) {
  TempDir tmp;
  write_full_set(tmp.path());
  std::vector<uint8_t> bytes = read_file_bytes(tmp.file("test_batch.bin"));
  bytes.resize(bytes.size() - 1);
  write_file_bytes(tmp.file("test_batch.bin"), bytes.data(), bytes.size());
  std::string msg = error_of([&] { load_cifar10(tmp.path(), Split::Test); });
  EXPECT_TRUE(starts_with(msg, tmp.file("test_batch.bin") + ": truncated or corrupt: 9218 is not a multiple of 3073"))
      << msg;
  write_file_bytes(tmp.file("test_batch.bin"), bytes.data(), 0);
  msg = error_of([&] { load_cifar10(tmp.path(), Split::Test); });
  EXPECT_TRUE(contains(msg, "truncated or corrupt: 0 is not a multiple of 3073")) << msg;
}

TEST(Cifar10, LabelOutOfRange) {
  TempDir tmp;
  write_full_set(tmp.path());
  std::vector<uint8_t> bytes = read_file_bytes(tmp.file("data_batch_2.bin"));
  bytes[3073] = 10;  // label of record 1
  write_file_bytes(tmp.file("data_batch_2.bin"), bytes.data(), bytes.size());
  EXPECT_EQ(error_of([&] { load_cifar10(tmp.path(), Split::Train); }),
            tmp.file("data_batch_2.bin") + ": label 10 of record 1 is out of range, expected 0..9");
}

TEST(Cifar10, WriterRejectsBadInput) {
  TempDir tmp;
  EXPECT_TRUE(contains(error_of([&] { write_cifar10_batch(tmp.file("a"), std::vector<uint8_t>(kImage - 1), {1}); }),
                       "found 3071"));
  EXPECT_TRUE(contains(error_of([&] { write_cifar10_batch(tmp.file("a"), std::vector<uint8_t>(kImage), {10}); }),
                       "label 10"));
}

}  // namespace
}  // namespace qatlab
