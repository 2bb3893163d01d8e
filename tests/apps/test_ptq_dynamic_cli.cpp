// test_ptq_dynamic_cli.cpp: end-to-end tests of `qatlab ptq --dynamic` on a synthetic MNIST-format
// dataset: it quantizes an mlp and an lstm-rows model, prints the comparison table, writes a dynamic
// model that `qatlab eval` reads back with the same accuracy, and refuses bad input with one stderr
// line and the documented exit code.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

// Passes when the run exited with `code` and wrote one stderr line "qatlab ptq: ..." containing every
// one of `needles`.
::testing::AssertionResult FailedWith(const RunResult& r, int code, std::initializer_list<std::string> needles) {
  if (!r.exited || r.exit_code != code)
    return ::testing::AssertionFailure() << "expected exit code " << code << "\n" << r.describe();
  const std::vector<std::string> lines = split_lines(r.err);
  if (lines.size() != 1 || lines[0].rfind("qatlab ptq: ", 0) != 0)
    return ::testing::AssertionFailure() << "expected one 'qatlab ptq: ' line on stderr\n" << r.describe();
  for (const std::string& n : needles)
    if (lines[0].find(n) == std::string::npos)
      return ::testing::AssertionFailure() << "stderr lacks '" << n << "'\n" << r.describe();
  return ::testing::AssertionSuccess();
}

// The first capture of `pattern` in `text`, or "" (and a test failure naming the text).
std::string capture(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (std::regex_search(text, m, std::regex(pattern))) return m[1].str();
  ADD_FAILURE() << "no match for /" << pattern << "/ in:\n" << text;
  return "";
}

class PtqDynamicCliTest : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("ptq_dynamic", /*n_train=*/256, /*n_test=*/64, /*seed=*/2025); }
  static void TearDownTestSuite() { tear_down_suite(); }

  // A 1-epoch float run of `model` in work(dir); returns its checkpoint.
  std::string train(const std::string& model, const std::string& dir, const Args& extra = {}) {
    Args args{"train", "--model", model, "--epochs", "1", "--data-dir", data_dir_, "--threads", "2",
              "--progress", "none", "--out", work(dir)};
    args.insert(args.end(), extra.begin(), extra.end());
    const RunResult r = qatlab(args, "train-" + model);
    EXPECT_TRUE(Succeeded(r));
    return work(dir) + "/checkpoint.h5";
  }

  // `qatlab ptq --dynamic CKPT` with quick latency settings, writing to work(out).
  Args ptq_args(const std::string& ckpt, const std::string& out, const std::string& batches = "1,16") const {
    return {"ptq", ckpt, "--data-dir", data_dir_, "--threads", "2", "--batch-size", batches, "--seconds", "0.05",
            "--out", work(out), "--dynamic"};
  }
};

TEST_F(PtqDynamicCliTest, MlpReportsTheTableAndEvalReadsTheDynamicModelBack) {
  const std::string ckpt = train("mlp", "float");
  const RunResult r = qatlab(ptq_args(ckpt, "dyn"), "ptq");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("quantized layers: fc1 (DynamicLinear), fc2 (DynamicLinear)"), std::string::npos) << r.out;
  // 203,264 weights in 266 rows: 813,056 bytes as float, 204,328 as int8 codes + scales.
  EXPECT_NE(r.out.find("813,056 B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("204,328 B"), std::string::npos) << r.out;
  EXPECT_EQ(capture(r.out, R"(weight bytes of quantized layers .* ([0-9.]+)x)"), "3.98");
  const double file_ratio = std::stod(capture(r.out, R"(model file size .* ([0-9.]+)x)"));
  EXPECT_GT(file_ratio, 3.5);
  EXPECT_LT(file_ratio, 4.0);
  EXPECT_NE(r.out.find("latency, batch 1 (median)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("latency, batch 16 (median)"), std::string::npos) << r.out;
  // The outputs move, but by little: well under 5 % of their mean magnitude.
  const double rel = std::stod(capture(r.out, R"(, ([0-9.]+) % of mean \|y_float\|)"));
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 5.0);
  EXPECT_NE(r.out.find("over 640 outputs"), std::string::npos) << r.out;  // 64 images x 10 classes
  ASSERT_TRUE(fs::exists(work("dyn/model.dynamic.h5")));
  ASSERT_TRUE(fs::exists(work("dyn/model.float.h5")));

  // eval reads both files back and finds the accuracies of the table (one batch of 64 both times, so
  // the dynamic model sees exactly the same activation grids).
  const std::string float_acc = capture(r.out, R"(test accuracy +([0-9.]+) %)");
  const std::string dyn_acc = capture(r.out, R"(test accuracy +[0-9.]+ % +([0-9.]+) %)");
  const RunResult ed =
      qatlab({"eval", work("dyn/model.dynamic.h5"), "--data-dir", data_dir_, "--threads", "2"}, "eval-dyn");
  ASSERT_TRUE(Succeeded(ed));
  EXPECT_NE(ed.out.find("dynamic int8 mlp"), std::string::npos) << ed.out;
  EXPECT_EQ(capture(ed.out, R"(accuracy ([0-9.]+) %)"), dyn_acc);
  const RunResult ef =
      qatlab({"eval", work("dyn/model.float.h5"), "--data-dir", data_dir_, "--threads", "2"}, "eval-float");
  ASSERT_TRUE(Succeeded(ef));
  EXPECT_EQ(capture(ef.out, R"(accuracy ([0-9.]+) %)"), float_acc);

  // Kernel paths give the same model: the reference kernels find the same accuracy.
  const RunResult er = qatlab({"eval", work("dyn/model.dynamic.h5"), "--data-dir", data_dir_, "--kernel", "reference"},
                              "eval-ref");
  ASSERT_TRUE(Succeeded(er));
  EXPECT_EQ(capture(er.out, R"(accuracy ([0-9.]+) %)"), dyn_acc);

  // Running again into the same directory is refused; --overwrite replaces it.
  EXPECT_TRUE(FailedWith(qatlab(ptq_args(ckpt, "dyn"), "again"), kUsageError, {"already holds a dynamic model"}));
  Args again = ptq_args(ckpt, "dyn");
  again.push_back("--overwrite");
  EXPECT_TRUE(Succeeded(qatlab(again, "overwrite")));
}

TEST_F(PtqDynamicCliTest, LstmRowsQuantizesTheLstmAndTheHead) {
  const std::string ckpt = train("lstm-rows", "float", {"--optimizer", "adam", "--lr", "0.002", "--train-limit", "64"});
  const RunResult r = qatlab(ptq_args(ckpt, "dyn"), "ptq");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("quantized layers: lstm (DynamicLSTM), head (DynamicLinear)"), std::string::npos) << r.out;
  // 81,152 weights in 1,034 rows: 324,608 bytes as float, 85,288 as int8 codes + scales (3.81x).
  EXPECT_NE(r.out.find("324,608 B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("85,288 B"), std::string::npos) << r.out;
  const double rel = std::stod(capture(r.out, R"(, ([0-9.]+) % of mean \|y_float\|)"));
  EXPECT_GT(rel, 0.0);
  EXPECT_LT(rel, 5.0);
  const RunResult ed =
      qatlab({"eval", work("dyn/model.dynamic.h5"), "--data-dir", data_dir_, "--threads", "2"}, "eval");
  ASSERT_TRUE(Succeeded(ed));
  EXPECT_EQ(capture(ed.out, R"(accuracy ([0-9.]+) %)"), capture(r.out, R"(test accuracy +[0-9.]+ % +([0-9.]+) %)"));
}

TEST_F(PtqDynamicCliTest, BadInputIsAOneLineError) {
  const std::string ckpt = train("mlp", "float", {"--train-limit", "64"});
  EXPECT_TRUE(FailedWith(qatlab(ptq_args(ckpt, "bad-batch", "1,0"), "batch"), kUsageError, {"--batch-size", "1,0"}));
  EXPECT_TRUE(FailedWith(qatlab(ptq_args(ckpt, "bad-batch", "1,x"), "batch-x"), kUsageError, {"--batch-size", "1,x"}));
  Args a = ptq_args(ckpt, "bad-kernel");
  a.insert(a.end(), {"--kernel", "avx512vnni"});
  EXPECT_TRUE(FailedWith(qatlab(a, "kernel"), kUsageError, {"--kernel"}));
  EXPECT_TRUE(FailedWith(qatlab({"ptq", "--dynamic", "--data-dir", data_dir_}, "no-ckpt"), kUsageError,
                         {"qatlab ptq --dynamic CHECKPOINT"}));
  EXPECT_TRUE(FailedWith(qatlab(ptq_args(work("missing.h5"), "missing"), "missing"), kRuntimeFailure, {"missing.h5"}));
  // A training run's directory is not an output directory.
  EXPECT_TRUE(FailedWith(qatlab(ptq_args(ckpt, "float"), "run-dir"), kUsageError, {"already holds a run"}));
  const RunResult help = qatlab({"ptq", "--dynamic", "--help"}, "help");
  ASSERT_TRUE(Succeeded(help));
  EXPECT_NE(help.out.find("ptq --dynamic options"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--eval-batch-size"), std::string::npos) << help.out;
}

}  // namespace
}  // namespace qatlab::testing
