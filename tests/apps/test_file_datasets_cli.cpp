// test_file_datasets_cli.cpp: the `qatlab` binary on datasets from files (HDF5, image folders, IDX): train,
// qat, convert and eval end to end, what checkpoints and integer model files record, eval refusing data
// that does not fit the model, and one-line errors for bad files and bad options that leave runs intact.
#include <gtest/gtest.h>

#include "apps/cli_harness.h"
#include "data/file_io.h"
#include "data/hdf5_dataset.h"
#include "nn/checkpoint.h"
#include "quant/engine/int8_graph.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

Args concat(Args a, const Args& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The files' datasets: 3 classes of 8x8 images, RGB in the HDF5 file, gray elsewhere.
TinySpec rgb_spec() {
  TinySpec s;
  s.c = 3;
  s.n_train = 48;
  s.n_test = 24;
  return s;
}

class FileDatasetsCli : public CliSuite {
 protected:
  // One float MLP trained on an HDF5 dataset, shared by the tests of the process.
  static void SetUpTestSuite() {
    set_up_suite("file_datasets", 16, 16, /*seed=*/3);
    h5_ = *suite_dir_ / "rgb.h5";
    write_hdf5_dataset(h5_, rgb_spec(), H5Layout::NHWC, "cat\ndog\nowl");
    run_ = *suite_dir_ / "float";
    const RunResult r = run_qatlab(concat({"train", "--model", "mlp", "--dataset", h5_, "--out", run_}, kFast),
                                   suite_dir_->path(), "train");
    ASSERT_TRUE(Succeeded(r));
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  static inline const Args kFast{"--epochs", "1", "--batch-size", "16", "--threads", "1", "--progress", "none"};
  static inline std::string h5_, run_;
};

TEST_F(FileDatasetsCli, Hdf5RunRecordsItsDataAndEvalUsesIt) {
  const Checkpoint c = load_checkpoint(run_ + "/checkpoint.h5");
  EXPECT_EQ(c.dataset, "hdf5:" + h5_);
  EXPECT_EQ(c.spec.channels, 3);
  EXPECT_EQ(c.spec.height, 8);
  EXPECT_EQ(c.spec.width, 8);
  EXPECT_EQ(c.spec.num_classes, 3);
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"cat", "dog", "owl"}));
  EXPECT_NE(c.config_ini.find("dataset = hdf5:" + h5_ + "\n"), std::string::npos) << c.config_ini;
  // The normalisation is the training split's statistics.
  std::vector<float> mean, std;
  channel_mean_std(load_hdf5_dataset(h5_, Split::Train, "x"), mean, std);
  EXPECT_EQ(c.data_mean, mean);
  EXPECT_EQ(c.data_std, std);
  // The run directory is named after the file when no --out is given.
  const RunResult named = qatlab(concat({"train", "--model", "mlp", "--dataset", h5_}, kFast), "named");
  ASSERT_TRUE(Succeeded(named));
  EXPECT_NE(named.out.find("runs/mlp-rgb"), std::string::npos) << named.out;
  fs::remove_all("runs/mlp-rgb");
  // eval takes the dataset from the checkpoint.
  const RunResult e = qatlab({"eval", run_ + "/checkpoint.h5", "--threads", "1"}, "eval");
  ASSERT_TRUE(Succeeded(e));
  EXPECT_NE(e.out.find("on hdf5:" + h5_ + " test: accuracy"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("(24 images)"), std::string::npos) << e.out;
}

TEST_F(FileDatasetsCli, QatConvertAndTheIntegerModelAgreeOnTheFileNormalisation) {
  const std::string qat = work("qat");
  ASSERT_TRUE(Succeeded(qatlab(concat({"qat", "--from", run_ + "/checkpoint.h5", "--out", qat}, kFast), "qat")));
  const Checkpoint q = load_checkpoint(qat + "/checkpoint.h5");
  const Checkpoint f = load_checkpoint(run_ + "/checkpoint.h5");
  EXPECT_EQ(q.dataset, f.dataset);
  EXPECT_EQ(q.data_mean, f.data_mean);
  EXPECT_EQ(q.class_names, f.class_names);
  const RunResult conv = qatlab({"convert", qat + "/checkpoint.h5"}, "convert");
  ASSERT_TRUE(Succeeded(conv));
  EXPECT_NE(conv.out.find("input: raw 8-bit pixels"), std::string::npos) << conv.out;
  const Int8Graph g = Int8Graph::load(qat + "/model.int8.h5");
  EXPECT_EQ(g.dataset, f.dataset);
  EXPECT_EQ(g.class_names, f.class_names);
  ASSERT_TRUE(g.has_pixel_table());
  EXPECT_EQ(g.ops.front().pixel_mean, f.data_mean);
  EXPECT_EQ(g.ops.front().pixel_std, f.data_std);
  // The integer graph from raw pixels gives the exact-mode simulation's codes on every test image.
  const RunResult e =
      qatlab({"eval", qat + "/model.int8.h5", "--compare", qat + "/checkpoint.h5", "--threads", "1"}, "eval");
  ASSERT_TRUE(Succeeded(e));
  EXPECT_NE(e.out.find("bit-identical on 24 of 24 images"), std::string::npos) << e.out;
}

TEST_F(FileDatasetsCli, ImageFolderAndIdxTrainEndToEnd) {
  TinySpec s;
  s.n_train = 30;
  s.n_test = 9;
  write_image_folder(work("pics"), s, {"b", "a", "c"});
  write_png(work("pics/test/a/extra.png"), Image{1, 8, 8, std::vector<uint8_t>(64, 7)});
  const RunResult r = qatlab(concat({"train", "--model", "mlp", "--dataset", work("pics"), "--out", work("pics_run")}, kFast));
  ASSERT_TRUE(Succeeded(r));
  Checkpoint c = load_checkpoint(work("pics_run/checkpoint.h5"));
  EXPECT_EQ(c.dataset, "folder:" + work("pics"));
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(c.spec.channels, 1);
  const RunResult e = qatlab({"eval", work("pics_run/checkpoint.h5"), "--threads", "1"}, "eval_pics");
  ASSERT_TRUE(Succeeded(e));
  EXPECT_NE(e.out.find("(10 images)"), std::string::npos) << e.out;

  s.c = 2;
  s.classes = 4;
  write_idx_dataset(work("idx"), s);
  ASSERT_TRUE(Succeeded(qatlab(concat({"train", "--model", "mlp", "--dataset", "idx:" + work("idx"), "--out",
                                       work("idx_run"), "--mean", "0.25", "--std", "0.5,0.25", "--augment", "pad-crop:2,flip"},
                                      kFast),
                               "idx")));
  c = load_checkpoint(work("idx_run/checkpoint.h5"));
  EXPECT_EQ(c.dataset, "idx:" + work("idx"));
  EXPECT_EQ(c.spec.channels, 2);
  EXPECT_EQ(c.spec.num_classes, 4);
  EXPECT_EQ(c.data_mean, (std::vector<float>{0.25f, 0.25f}));
  EXPECT_EQ(c.data_std, (std::vector<float>{0.5f, 0.25f}));
  EXPECT_EQ(c.class_names, (std::vector<std::string>{"0", "1", "2", "3"}));
}

TEST_F(FileDatasetsCli, EvalRefusesDataThatDoesNotFitTheModel) {
  const std::string ckpt = run_ + "/checkpoint.h5";
  TinySpec s = rgb_spec();
  // Other class names, same count.
  write_hdf5_dataset(work("names.h5"), s, H5Layout::NCHW, "ant\nbee\nfly");
  RunResult r = qatlab({"eval", ckpt, "--dataset", work("names.h5")}, "names");
  EXPECT_TRUE(FailedWith(r, kUsageError, "eval", {"was trained on 3 classes (cat, dog, owl)", "(ant, bee, fly)",
                                                  "--allow-dataset-mismatch"}));
  ASSERT_TRUE(Succeeded(qatlab({"eval", ckpt, "--dataset", work("names.h5"), "--allow-dataset-mismatch"}, "names_ok")));
  // Fewer classes: allowed with the flag; more classes: labels it cannot score, refused even then.
  s.classes = 2;
  write_hdf5_dataset(work("two.h5"), s);
  EXPECT_TRUE(FailedWith(qatlab({"eval", ckpt, "--dataset", work("two.h5")}, "two"), kUsageError, "eval",
                         {"has 2 (0, 1)"}));
  ASSERT_TRUE(Succeeded(qatlab({"eval", ckpt, "--dataset", work("two.h5"), "--allow-dataset-mismatch"}, "two_ok")));
  s.classes = 4;
  write_hdf5_dataset(work("four.h5"), s);
  EXPECT_TRUE(FailedWith(qatlab({"eval", ckpt, "--dataset", work("four.h5"), "--allow-dataset-mismatch"}, "four"),
                         kUsageError, "eval", {"gives 3 scores per image", "not even with --allow-dataset-mismatch"}));
  // Another image shape: no flag helps.
  s.classes = 3;
  s.c = 1;
  write_hdf5_dataset(work("gray.h5"), s, H5Layout::NHW, "cat\ndog\nowl");
  EXPECT_TRUE(FailedWith(qatlab({"eval", ckpt, "--dataset", work("gray.h5"), "--allow-dataset-mismatch"}, "gray"),
                         kUsageError, "eval", {"takes (3, 8, 8) images", "has (1, 8, 8)"}));
}

TEST_F(FileDatasetsCli, BadFilesFailWithOneLineAndLeaveTheRunIntact) {
  // A run whose checkpoint must survive every failed attempt to overwrite it.
  const std::string out = work("kept");
  ASSERT_TRUE(Succeeded(qatlab(concat({"train", "--model", "mlp", "--dataset", h5_, "--out", out}, kFast), "kept")));
  const std::string before = read_text(out + "/checkpoint.h5");
  const auto attempt = [&](const std::string& dataset, const std::string& tag) {
    return qatlab(concat({"train", "--model", "mlp", "--dataset", dataset, "--out", out, "--overwrite"}, kFast), tag);
  };
  TinySpec s;
  // Image folders: a truncated PNG, a truncated JPEG, an image of another size, an empty class folder.
  write_image_folder(work("f1"), s, {"a", "b", "c"});
  std::vector<uint8_t> bytes = read_file_bytes(work("f1/train/b/img001.png"));
  bytes.resize(bytes.size() - 20);
  write_file_bytes(work("f1/train/b/img001.png"), bytes.data(), bytes.size());
  EXPECT_TRUE(FailedWith(attempt(work("f1"), "png"), kRuntimeFailure, "train",
                         {work("f1/train/b/img001.png") + ": corrupt or truncated PNG file"}));
  write_image_folder(work("f2"), s, {"a", "b", "c"}, /*jpeg=*/true);
  bytes = read_file_bytes(work("f2/test/c/img002.jpg"));
  bytes.resize(bytes.size() / 2);
  write_file_bytes(work("f2/test/c/img002.jpg"), bytes.data(), bytes.size());
  EXPECT_TRUE(FailedWith(attempt("folder:" + work("f2"), "jpg"), kRuntimeFailure, "train",
                         {work("f2/test/c/img002.jpg") + ": corrupt or truncated JPEG file"}));
  write_image_folder(work("f3"), s, {"a", "b", "c"});
  write_png(work("f3/train/a/z_big.png"), Image{1, 9, 8, std::vector<uint8_t>(72, 1)});
  EXPECT_TRUE(FailedWith(attempt(work("f3"), "size"), kRuntimeFailure, "train",
                         {work("f3/train/a/z_big.png") + ": a 8x9 gray image, but the dataset's images are 8x8 gray"}));
  write_image_folder(work("f4"), s, {"a", "b", "c"});
  fs::create_directories(work("f4/train/d"));
  EXPECT_TRUE(FailedWith(attempt(work("f4"), "empty"), kRuntimeFailure, "train",
                         {work("f4/train/d") + ": empty class folder"}));
  // HDF5: a missing dataset, labels out of range, a count mismatch.
  {
    H5File f = H5File::create(work("h1.h5"));
    f.write_ints<uint8_t>("train/images", {4, 8, 8}, std::vector<uint8_t>(256, 1));
    f.write_ints<int64_t>("train/labels", {4}, {0, 1, 0, 1});
    f.close();
  }
  EXPECT_TRUE(FailedWith(attempt(work("h1.h5"), "h1"), kRuntimeFailure, "train", {work("h1.h5") + ": no dataset /test/images"}));
  {
    H5File f = H5File::create(work("h2.h5"));
    for (const char* split : {"train", "test"}) {
      f.write_ints<uint8_t>(std::string(split) + "/images", {4, 8, 8}, std::vector<uint8_t>(256, 1));
      f.write_ints<int64_t>(std::string(split) + "/labels", {4}, {0, 1, 2, 1});
    }
    f.set_attr("/", "class_names", "x\ny");
    f.close();
  }
  EXPECT_TRUE(FailedWith(attempt(work("h2.h5"), "h2"), kRuntimeFailure, "train",
                         {work("h2.h5") + ": /train/labels: label 2 of image 2 is out of range, expected 0..1"}));
  {
    H5File f = H5File::create(work("h3.h5"));
    for (const char* split : {"train", "test"}) {
      f.write_ints<uint8_t>(std::string(split) + "/images", {4, 8, 8}, std::vector<uint8_t>(256, 1));
      f.write_ints<int64_t>(std::string(split) + "/labels", {3}, {0, 1, 1});
    }
    f.close();
  }
  EXPECT_TRUE(FailedWith(attempt(work("h3.h5"), "h3"), kRuntimeFailure, "train",
                         {work("h3.h5") + ": /train/labels has shape (3), expected (4)"}));
  // IDX: a truncated file.
  write_idx_dataset(work("i1"), s);
  bytes = read_file_bytes(work("i1/t10k-labels-idx1-ubyte"));
  bytes.pop_back();
  write_file_bytes(work("i1/t10k-labels-idx1-ubyte"), bytes.data(), bytes.size());
  EXPECT_TRUE(FailedWith(attempt(work("i1"), "idx"), kRuntimeFailure, "train",
                         {work("i1/t10k-labels-idx1-ubyte") + ": truncated"}));
  // A folder with one class only cannot make a classifier.
  TinySpec one = s;
  one.classes = 1;
  write_image_folder(work("f5"), one, {"only"});
  EXPECT_TRUE(FailedWith(attempt(work("f5"), "one"), kRuntimeFailure, "train", {"folder:" + work("f5"), "num_classes"}));
  EXPECT_EQ(read_text(out + "/checkpoint.h5"), before);
}

TEST_F(FileDatasetsCli, OptionMistakesAreUsageErrors) {
  const auto train = [&](const Args& extra, const std::string& tag) {
    return qatlab(concat(concat({"train", "--model", "mlp", "--out", work("never")}, kFast), extra), tag);
  };
  EXPECT_TRUE(FailedWith(train({"--dataset", "imagenet"}, "name"), kUsageError, "train",
                         {"--dataset 'imagenet' names no dataset", "mnist, fashion-mnist, cifar10", "hdf5:FILE, folder:DIR, idx:DIR"}));
  fs::create_directories(work("plain"));
  EXPECT_TRUE(FailedWith(train({"--dataset", work("plain")}, "plain"), kUsageError, "train",
                         {"holds neither train/<class>/ image folders nor the four IDX files"}));
  write_text(work("notes.txt"), "hello");
  EXPECT_TRUE(FailedWith(train({"--dataset", work("notes.txt")}, "text"), kUsageError, "train", {"is not an HDF5 file"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", "hdf5:" + work("missing.h5")}, "missing"), kRuntimeFailure, "train",
                         {work("missing.h5") + ": no such file"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--mean", "0.5,x"}, "mean"), kUsageError, "train",
                         {"--mean must be one number or a comma-separated list of numbers, got '0.5,x'"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--std", "0.5,0.5"}, "std"), kUsageError, "train",
                         {"--std has 2 values; hdf5:" + h5_ + " has 3 channels"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--std", "0"}, "std0"), kUsageError, "train", {"--std must be > 0"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--augment", "rotate"}, "augment"), kUsageError, "train",
                         {"--augment must be none, or a comma-separated list of pad-crop[:P], flip and cutout[:S] (P, S in 1..64)"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--augment", "pad-crop:0"}, "pad0"), kUsageError, "train", {"--augment"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--augment", "cutout:65"}, "cut65"), kUsageError, "train", {"--augment"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--augment", "cutout,flip,cutout:8"}, "cut2"), kUsageError, "train",
                         {"--augment"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--augment", "cutouts"}, "cuts"), kUsageError, "train", {"--augment"}));
  EXPECT_TRUE(FailedWith(train({"--dataset", h5_, "--data-dir", data_dir_}, "datadir"), kUsageError, "train",
                         {"--data-dir applies to the built-in datasets"}));
  const RunResult zero = qatlab({"train", "--model", "mlp", "--dataset", h5_, "--epochs", "0", "--out", work("never")}, "zero");
  EXPECT_TRUE(FailedWith(zero, kUsageError, "train", {"--epochs must be in 1..100000, got 0"}));
  EXPECT_FALSE(fs::exists(work("never")));
}

TEST_F(FileDatasetsCli, VersionPrintsTheProjectVersion) {
  const RunResult r = qatlab({"--version"});
  ASSERT_TRUE(Succeeded(r));
  EXPECT_EQ(r.out, std::string("qatlab ") + QATLAB_VERSION + "\n");
  EXPECT_NE(std::string(QATLAB_VERSION), "dev");
}

TEST_F(FileDatasetsCli, CheckpointsWithoutTheNewRecordsStillEvaluate) {
  // A file as qatlab wrote them before: the dataset's name only.
  ASSERT_TRUE(Succeeded(qatlab(concat({"train", "--model", "mlp", "--data-dir", data_dir_, "--out", work("m")}, kFast), "m")));
  Checkpoint c = load_checkpoint(work("m/checkpoint.h5"));
  EXPECT_EQ(c.dataset, "mnist");
  EXPECT_EQ(c.data_mean, (std::vector<float>{0.1307f}));
  c.data_mean.clear();
  c.data_std.clear();
  c.class_names.clear();
  save_checkpoint(work("old.h5"), c);
  const RunResult r = qatlab({"eval", work("old.h5"), "--data-dir", data_dir_, "--threads", "1"}, "old");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("on mnist test"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace qatlab::testing
