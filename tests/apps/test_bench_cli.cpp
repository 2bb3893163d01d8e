// test_bench_cli.cpp: end-to-end tests of `qatlab bench` on a synthetic MNIST-format dataset: the
// inference comparison reports model and GEMM shares of peaks measured in the same run (never above
// 100 %), `--train` reports float and QAT training steps and per-layer tables, and bad options are
// usage errors. Speeds themselves are not asserted: they are benchmarks.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;
constexpr int kUsageError = 2;

// Every "NN.N%" printed as a share of a peak is at most 100.
void expect_shares_at_most_100(const std::string& out) {
  const std::regex share(R"(([0-9]+\.[0-9])%)");
  int seen = 0;
  for (std::sregex_iterator it(out.begin(), out.end(), share), end; it != end; ++it, ++seen)
    EXPECT_LE(std::stod((*it)[1].str()), 100.0) << out;
  EXPECT_GT(seen, 0) << out;
}

class BenchCliTest : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("bench", /*n_train=*/256, /*n_test=*/64, /*seed=*/77); }
  static void TearDownTestSuite() { tear_down_suite(); }
};

TEST_F(BenchCliTest, InferenceReportsSharesOfMeasuredPeaks) {
  const std::string f = work("f"), q = work("q");
  ASSERT_TRUE(Succeeded(qatlab({"train", "--model", "mlp", "--epochs", "1", "--data-dir", data_dir_, "--out", f,
                                "--progress", "plain"}, "train")));
  ASSERT_TRUE(Succeeded(qatlab({"qat", "--from", f + "/checkpoint.h5", "--epochs", "1", "--data-dir", data_dir_, "--out",
                                q, "--progress", "plain"}, "qat")));
  ASSERT_TRUE(Succeeded(qatlab({"convert", q + "/checkpoint.h5"}, "convert")));
  const RunResult r = qatlab({"bench", "--float", f + "/checkpoint.h5", "--int8", q + "/model.int8.h5", "--seconds",
                              "0.05", "--batch-size", "16"}, "bench");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("model share of peak"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("GEMM share of peak"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("vfmadd231ps"), std::string::npos) << r.out;
  expect_shares_at_most_100(r.out);
}

TEST_F(BenchCliTest, TrainReportsFloatAndQatStepsAndWhereTheTimeGoes) {
  const RunResult r =
      qatlab({"bench", "--train", "lenet5", "--dataset", "mnist", "--batch-size", "8", "--steps", "2"}, "bench");
  ASSERT_TRUE(Succeeded(r));
  for (const char* needle : {"float", "QAT W8A8 min/max", "QAT W4A4 LSQ", "share of peak", "input grad",
                             "weight grad", "fake-quant", "features.0", "(optimizer update)"})
    EXPECT_NE(r.out.find(needle), std::string::npos) << needle << "\n" << r.out;
  EXPECT_EQ(r.out.find("stream 8"), std::string::npos) << "LeNet-5 has no residual stream\n" << r.out;
  expect_shares_at_most_100(r.out);
}

TEST_F(BenchCliTest, BadOptionsAreUsageErrors) {
  for (const Args& args : {Args{"bench", "--train", "nosuchnet"}, Args{"bench", "--train", "mlp", "--dataset", "imagenet"},
                           Args{"bench", "--train", "mlp", "--steps", "0"},
                           Args{"bench", "--train", "mlp", "--float", "x.h5"}, Args{"bench"}}) {
    const RunResult r = qatlab(args, "bad");
    EXPECT_TRUE(r.exited && r.exit_code == kUsageError) << r.describe();
    EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
  }
}

}  // namespace
}  // namespace qatlab::testing
