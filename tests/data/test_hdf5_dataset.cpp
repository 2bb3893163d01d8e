// test_hdf5_dataset.cpp: the HDF5 dataset layout (hdf5_dataset.h): each image layout, class names and
// counts, and one-line errors naming the file and the dataset for every mistake.
#include <gtest/gtest.h>

#include "data/file_io.h"
#include "data/hdf5_dataset.h"
#include "tests/data/data_test_util.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab::testing {
namespace {

TEST(Hdf5Dataset, EveryLayoutGivesTheSameNchwPixels) {
  TempDir tmp;
  TinySpec s;
  s.c = 3;
  s.h = 6;  // not square: H and W are not swapped
  std::vector<uint8_t> px;
  std::vector<int32_t> labels;
  tiny_split(s, s.n_test, s.seed + 1, px, labels);
  for (H5Layout layout : {H5Layout::NCHW, H5Layout::NHWC}) {
    write_hdf5_dataset(tmp.file("d.h5"), s, layout);
    const ImageDataset d = load_hdf5_dataset(tmp.file("d.h5"), Split::Test, "hdf5:d");
    EXPECT_EQ(d.name, "hdf5:d");
    EXPECT_EQ(d.n, s.n_test);
    EXPECT_EQ(d.c, 3);
    EXPECT_EQ(d.h, 6);
    EXPECT_EQ(d.w, 8);
    EXPECT_EQ(d.pixels, px);
    EXPECT_EQ(d.labels, labels);
    EXPECT_EQ(d.num_classes, 3);  // 1 + the largest label
    EXPECT_EQ(d.class_names, (std::vector<std::string>{"0", "1", "2"}));
  }
  s.c = 1;
  write_hdf5_dataset(tmp.file("gray.h5"), s, H5Layout::NHW, "cat\ndog\nowl");
  const ImageDataset g = load_hdf5_dataset(tmp.file("gray.h5"), Split::Train, "g");
  EXPECT_EQ(g.c, 1);
  EXPECT_EQ(g.n, s.n_train);
  EXPECT_EQ(g.class_names, (std::vector<std::string>{"cat", "dog", "owl"}));
  EXPECT_TRUE(looks_like_hdf5(tmp.file("gray.h5")));
  EXPECT_FALSE(looks_like_hdf5(tmp.file("missing.h5")));
}

TEST(Hdf5Dataset, ClassCountFromNamesOrAttributeCoversUnusedClasses) {
  TempDir tmp;
  write_hdf5_dataset(tmp.file("d.h5"), TinySpec{}, H5Layout::NCHW, "a\nb\nc\nd\ne");
  EXPECT_EQ(load_hdf5_dataset(tmp.file("d.h5"), Split::Test, "d").num_classes, 5);
  {
    H5File f = H5File::create(tmp.file("n.h5"));
    f.write_ints<uint8_t>("train/images", {2, 2, 2}, std::vector<uint8_t>(8, 1));
    f.write_ints<uint8_t>("train/labels", {2}, {0, 1});
    f.set_attr("/", "num_classes", 7);
    f.close();
  }
  const ImageDataset d = load_hdf5_dataset(tmp.file("n.h5"), Split::Train, "n");
  EXPECT_EQ(d.num_classes, 7);
  EXPECT_EQ(d.labels, (std::vector<int32_t>{0, 1}));
}

// A file holding train/images and train/labels as given (labels int64), then `extra` applied.
std::string bad_file(const TempDir& tmp, const Shape& images, const Shape& labels, const std::vector<int64_t>& values,
                     const std::function<void(H5File&)>& extra = {}) {
  const std::string path = tmp.file("bad.h5");
  std::filesystem::remove(path);
  H5File f = H5File::create(path);
  f.write_ints<uint8_t>("train/images", images, std::vector<uint8_t>(static_cast<size_t>(shape_numel(images)), 3));
  if (!labels.empty()) f.write_ints<int64_t>("train/labels", labels, values);
  if (extra) extra(f);
  f.close();
  return path;
}

TEST(Hdf5Dataset, MistakesNameTheFileAndTheDataset) {
  TempDir tmp;
  const auto error = [&](const std::string& path) { return error_of([&] { load_hdf5_dataset(path, Split::Train, "x"); }); };
  std::string p = bad_file(tmp, {2, 4, 4}, {}, {});
  EXPECT_TRUE(starts_with(error(p), p + ": no dataset /train/labels")) << error(p);
  p = bad_file(tmp, {8, 2}, {8}, std::vector<int64_t>(8, 0));
  EXPECT_TRUE(starts_with(error(p), p + ": /train/images has shape (8, 2), expected (N, H, W)")) << error(p);
  p = bad_file(tmp, {3, 4, 4}, {2}, {0, 1});
  EXPECT_TRUE(starts_with(error(p), p + ": /train/labels has shape (2), expected (3)")) << error(p);
  p = bad_file(tmp, {2, 4, 4}, {2}, {0, -1});
  EXPECT_TRUE(contains(error(p), p + ": /train/labels: label -1 of image 1 is out of range")) << error(p);
  p = bad_file(tmp, {2, 4, 4}, {2}, {0, 5}, [](H5File& f) { f.set_attr("/", "class_names", "a\nb"); });
  EXPECT_EQ(error(p), p + ": /train/labels: label 5 of image 1 is out of range, expected 0..1");
  p = bad_file(tmp, {2, 4, 4}, {2}, {0, 1}, [](H5File& f) { f.set_attr("/", "class_names", "a\n\nb"); });
  EXPECT_TRUE(starts_with(error(p), p + ": attribute class_names: class 1 has an empty name")) << error(p);
  p = bad_file(tmp, {2, 4, 4}, {2}, {0, 1},
               [](H5File& f) { f.write_ints<uint8_t>("test/images", {2, 5, 4}, std::vector<uint8_t>(40, 0)); });
  EXPECT_TRUE(starts_with(error(p), p + ": /test/images has shape (2, 5, 4) but /train/images (2, 4, 4)")) << error(p);
  p = bad_file(tmp, {2, 4, 4}, {}, {}, [](H5File& f) { f.write_floats("train/labels", {2}, {0.0f, 1.0f}); });
  EXPECT_TRUE(starts_with(error(p), p + ": train/labels: labels must be stored as uint8")) << error(p);
  p = bad_file(tmp, {2, 4, 4, 3}, {2}, {0, 1}, [](H5File& f) { f.set_attr("train/images", "layout", "CHWN"); });
  EXPECT_TRUE(starts_with(error(p), p + ": /train/images: attribute layout = 'CHWN'")) << error(p);
  // Not HDF5 at all.
  const std::string text = "not hdf5";
  write_file_bytes(tmp.file("text.h5"), reinterpret_cast<const uint8_t*>(text.data()), text.size());
  EXPECT_FALSE(looks_like_hdf5(tmp.file("text.h5")));
  EXPECT_TRUE(starts_with(error(tmp.file("text.h5")), tmp.file("text.h5") + ": ")) << error(tmp.file("text.h5"));
}

}  // namespace
}  // namespace qatlab::testing
