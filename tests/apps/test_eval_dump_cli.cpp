// test_eval_dump_cli.cpp: `qatlab eval MODEL.int8.h5 --dump FILE` end to end on a synthetic MNIST-format
// set: one CSV row per test image with its label, the prediction (ties to the lowest class) and every
// output code; the codes equal the reference kernels' and the accuracy is the one eval prints; refusals
// are one line with exit code 2, and an existing file is kept without --overwrite.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "quant/workflow/integer_eval.h"
#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

::testing::AssertionResult RefusedWith(const RunResult& r, const std::string& needle) {
  const std::vector<std::string> lines = split_lines(r.err);
  if (!r.exited || r.exit_code != 2 || lines.size() != 1 || lines[0].find(needle) == std::string::npos)
    return ::testing::AssertionFailure() << "expected exit code 2 and one line with '" << needle << "'\n" << r.describe();
  return ::testing::AssertionSuccess();
}

class EvalDumpCli : public CliSuite {
 protected:
  // A float LeNet-5 and its post-training-quantized integer model.
  static void SetUpTestSuite() {
    set_up_suite("evaldump", 256, 48, /*seed=*/3);
    const fs::path logs = suite_dir_->path();
    const std::string fl = *suite_dir_ / "float";
    ptq_ = *suite_dir_ / "ptq";
    const RunResult train = run_qatlab({"train", "--model", "lenet5", "--data-dir", data_dir_, "--threads", "2", "--progress",
                                        "none", "--epochs", "1", "--batch-size", "32", "--out", fl},
                                       logs, "train");
    if (!train.exited || train.exit_code != 0) throw std::runtime_error("training failed\n" + train.describe());
    const RunResult ptq = run_qatlab({"ptq", fl + "/checkpoint.h5", "--data-dir", data_dir_, "--threads", "2",
                                      "--calib-batches", "2", "--batch-size", "32", "--out", ptq_},
                                     logs, "ptq");
    if (!ptq.exited || ptq.exit_code != 0) throw std::runtime_error("ptq failed\n" + ptq.describe());
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  RunResult eval(const Args& extra, const std::string& tag) {
    Args args{"eval", ptq_ + "/model.int8.h5", "--data-dir", data_dir_, "--threads", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    return qatlab(args, tag);
  }

  static inline std::string ptq_;
};

TEST(ArgmaxRow, TiesGoToTheLowestClass) {
  const int8_t codes[] = {-3, 7, 2, 7, 7};
  EXPECT_EQ(argmax_row(codes, 5), 1);
  const int8_t all_equal[] = {-128, -128, -128};
  EXPECT_EQ(argmax_row(all_equal, 3), 0);
  const int8_t last[] = {0, 1, 127};
  EXPECT_EQ(argmax_row(last, 3), 2);
}

TEST_F(EvalDumpCli, WritesEveryImagesCodesLabelAndPrediction) {
  const std::string dump = work("out.csv"), ref = work("ref.csv");
  const RunResult r = eval({"--dump", dump}, "dump");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("output codes of 48 images (10 classes) -> " + dump), std::string::npos) << r.out;
  const std::vector<std::string> lines = split_lines(read_text(dump));
  ASSERT_EQ(lines.size(), 2u + 1u + 48u);
  EXPECT_EQ(lines[0], "# qatlab-int8-outputs 1");
  EXPECT_EQ(lines[1].rfind("# output grid: scale ", 0), 0u) << lines[1];
  std::string header = "image,label,predicted";
  for (int k = 0; k < 10; ++k) header += ",code_" + std::to_string(k);
  EXPECT_EQ(lines[2], header);
  int correct = 0, distinct_rows = 0;
  std::string previous;
  for (size_t i = 3; i < lines.size(); ++i) {
    const std::vector<std::string> cells = split_commas(lines[i]);
    ASSERT_EQ(cells.size(), 13u) << lines[i];
    EXPECT_EQ(std::stoi(cells[0]), static_cast<int>(i - 3));
    int8_t codes[10];
    for (int k = 0; k < 10; ++k) {
      const int c = std::stoi(cells[3 + k]);
      ASSERT_TRUE(c >= -128 && c <= 127) << lines[i];
      codes[k] = static_cast<int8_t>(c);
    }
    EXPECT_EQ(std::stoi(cells[2]), argmax_row(codes, 10)) << lines[i];
    correct += cells[1] == cells[2];
    const std::string row = lines[i].substr(lines[i].find(',', lines[i].find(',') + 1));
    distinct_rows += row != previous;
    previous = row;
  }
  EXPECT_GT(distinct_rows, 10);  // real outputs, not one row repeated
  char acc[32];
  std::snprintf(acc, sizeof acc, "accuracy %.2f %%", 100.0 * correct / 48);
  EXPECT_NE(r.out.find(acc), std::string::npos) << acc << "\n" << r.out;

  // The reference kernels write the very same file.
  ASSERT_TRUE(Succeeded(eval({"--dump", ref, "--kernel", "reference"}, "ref")));
  EXPECT_EQ(read_text(ref), read_text(dump));
}

TEST_F(EvalDumpCli, RefusesCheckpointsAndKeepsAnExistingFile) {
  const std::string dump = work("out.csv");
  EXPECT_TRUE(RefusedWith(qatlab({"eval", ptq_ + "/checkpoint.h5", "--data-dir", data_dir_, "--dump", dump}, "ckpt"),
                          "convert it first"));
  EXPECT_FALSE(fs::exists(dump));
  write_text(dump, "mine");
  EXPECT_TRUE(RefusedWith(eval({"--dump", dump}, "exists"), "--overwrite"));
  EXPECT_EQ(read_text(dump), "mine");
  ASSERT_TRUE(Succeeded(eval({"--dump", dump, "--overwrite"}, "overwrite")));
  EXPECT_EQ(read_text(dump).rfind("# qatlab-int8-outputs 1", 0), 0u);
}

}  // namespace
}  // namespace qatlab::testing
