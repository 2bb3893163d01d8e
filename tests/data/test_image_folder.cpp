// test_image_folder.cpp: a folder-per-class dataset of PNG / JPEG files: classes, labels, pixels, and
// one-line errors naming the path for every layout mistake.
#include <gtest/gtest.h>

#include <filesystem>

#include "data/file_io.h"
#include "data/image_folder.h"
#include "tests/data/data_test_util.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab::testing {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kNames = {"zebra", "apple", "mango"};  // sorted: apple, mango, zebra

TEST(ImageFolder, ClassesAreTheSortedTrainFoldersAndPixelsAreExact) {
  TempDir tmp;
  TinySpec s;
  s.c = 3;
  write_image_folder(tmp.path(), s, kNames);
  EXPECT_EQ(image_folder_classes(tmp.path()), (std::vector<std::string>{"apple", "mango", "zebra"}));
  EXPECT_TRUE(looks_like_image_folder(tmp.path()));
  const ImageDataset d = load_image_folder(tmp.path(), Split::Train, "folder:x");
  EXPECT_EQ(d.name, "folder:x");
  EXPECT_EQ(d.n, s.n_train);
  EXPECT_EQ(d.c, 3);
  EXPECT_EQ(d.h, 8);
  EXPECT_EQ(d.w, 8);
  EXPECT_EQ(d.num_classes, 3);
  EXPECT_EQ(d.class_names, (std::vector<std::string>{"apple", "mango", "zebra"}));
  // Images come class by class (sorted), file by file; written label k is kNames[k].
  std::vector<uint8_t> px;
  std::vector<int32_t> written;
  tiny_split(s, s.n_train, s.seed, px, written);
  const int64_t per = s.c * s.h * s.w;
  int64_t i = 0;
  for (int32_t cls = 0; cls < 3; ++cls) {
    const std::string name = d.class_names[cls];
    for (int64_t j = 0; j < s.n_train; ++j) {
      if (kNames[written[j]] != name) continue;
      ASSERT_EQ(d.labels[i], cls);
      EXPECT_TRUE(std::equal(px.begin() + j * per, px.begin() + (j + 1) * per, d.pixels.begin() + i * per)) << j;
      ++i;
    }
  }
  EXPECT_EQ(i, s.n_train);
  EXPECT_EQ(load_image_folder(tmp.path(), Split::Test, "t").n, s.n_test);
}

TEST(ImageFolder, JpegFilesLoadWithTheirShape) {
  TempDir tmp;
  TinySpec s;
  write_image_folder(tmp.path(), s, kNames, /*jpeg=*/true);
  const ImageDataset d = load_image_folder(tmp.path(), Split::Test, "t");
  EXPECT_EQ(d.n, s.n_test);
  EXPECT_EQ(d.c, 1);
  EXPECT_EQ(d.num_classes, 3);
}

TEST(ImageFolder, AnImageOfAnotherSizeIsRefusedByPath) {
  TempDir tmp;
  write_image_folder(tmp.path(), TinySpec{}, kNames);
  const std::string odd = tmp.file("train/mango/odd.png");
  write_png(odd, Image{1, 8, 9, std::vector<uint8_t>(72, 1)});
  std::string msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_TRUE(starts_with(msg, odd + ": a 9x8 gray image, but the dataset's images are 8x8 gray")) << msg;
  write_png(odd, Image{3, 8, 8, std::vector<uint8_t>(192, 1)});
  msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_TRUE(starts_with(msg, odd + ": a 8x8 RGB image")) << msg;
}

TEST(ImageFolder, LayoutMistakesNameThePath) {
  TempDir tmp;
  write_image_folder(tmp.path(), TinySpec{}, kNames);
  // An empty class folder.
  fs::create_directories(tmp.file("train/pear"));
  std::string msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_EQ(msg, tmp.file("train/pear") + ": empty class folder (no images)");
  fs::remove(tmp.file("train/pear"));
  // A file of another kind.
  write_file_bytes(tmp.file("train/apple/notes.txt"), reinterpret_cast<const uint8_t*>("x"), 1);
  msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_TRUE(starts_with(msg, tmp.file("train/apple/notes.txt") + ": not an image file")) << msg;
  fs::remove(tmp.file("train/apple/notes.txt"));
  // A test class the training split does not have.
  fs::create_directories(tmp.file("test/kiwi"));
  msg = error_of([&] { load_image_folder(tmp.path(), Split::Test, "t"); });
  EXPECT_TRUE(starts_with(msg, tmp.file("test/kiwi") + ": class 'kiwi' has no folder in")) << msg;
  fs::remove(tmp.file("test/kiwi"));
  // A file directly in train/.
  write_png(tmp.file("train/loose.png"), Image{1, 8, 8, std::vector<uint8_t>(64, 1)});
  msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_TRUE(starts_with(msg, tmp.file("train/loose.png") + ": not a class folder")) << msg;
  fs::remove(tmp.file("train/loose.png"));
  // A truncated image.
  const std::string victim = tmp.file("train/zebra/img000.png");
  std::vector<uint8_t> bytes = read_file_bytes(victim);
  bytes.resize(bytes.size() / 2);
  write_file_bytes(victim, bytes.data(), bytes.size());
  msg = error_of([&] { load_image_folder(tmp.path(), Split::Train, "t"); });
  EXPECT_TRUE(starts_with(msg, victim + ": corrupt or truncated PNG file")) << msg;
  // No train/ at all.
  TempDir empty;
  EXPECT_FALSE(looks_like_image_folder(empty.path()));
  msg = error_of([&] { load_image_folder(empty.path(), Split::Test, "t"); });
  EXPECT_TRUE(starts_with(msg, empty.path() + ": no train/ folder")) << msg;
}

}  // namespace
}  // namespace qatlab::testing
