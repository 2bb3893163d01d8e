// test_compare_cli.cpp: end-to-end tests of `qatlab compare`: two runs' curves as means over ranges of
// epochs, read from metrics.csv files, run directories or checkpoints (a run's own metrics.csv and its
// checkpoint's history agree), and every bad input a one-line error with nothing printed before it.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

class CompareCliTest : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("compare", /*n_train=*/256, /*n_test=*/64, /*seed=*/91); }
  static void TearDownTestSuite() { tear_down_suite(); }

  std::string write(const std::string& name, const std::string& text) {
    const std::string path = work(name);
    std::ofstream(path) << text;
    return path;
  }
};

// The table's lines after its two header lines.
std::vector<std::string> table_rows(const std::string& out) {
  std::vector<std::string> rows;
  int headers = 0;
  for (const std::string& line : split_lines(out))
    if (line.rfind("| ", 0) == 0 && headers++ >= 2) rows.push_back(line);
  return rows;
}

TEST_F(CompareCliTest, MeansOverRangesOfEpochsAndTheirDifference) {
  const std::string a = write("a.csv", "epoch,lr,train_acc,test_acc,test_loss\n1,0.1,0.5,0.5,1.5\n2,0.05,0.7,0.7,1.25\n3,0.01,0.8,0.9,1\n");
  const std::string b = write("b.csv", "epoch,lr,train_acc,test_acc,test_loss\n1,0.1,0.4,0.4,2\n2,0.05,0.6,0.4,1.5\n3,0.01,0.7,0.85,1\n");
  const RunResult all = qatlab({"compare", a, b}, "all");
  ASSERT_TRUE(Succeeded(all));
  EXPECT_NE(all.out.find("A  " + a + " (epochs 1-3)"), std::string::npos) << all.out;
  EXPECT_NE(all.out.find("| epochs | test_acc A (%) | test_acc B (%) | A - B | train_acc A (%) | train_acc B (%) | A - B |"),
            std::string::npos) << all.out;
  EXPECT_EQ(table_rows(all.out), std::vector<std::string>{"| 1-3 | 70.00 | 55.00 | +15.00 | 66.67 | 56.67 | +10.00 |"});

  const RunResult ranges = qatlab({"compare", a, b, "--epochs", "1-2,3", "--per-epoch", "--columns", "test_loss,test_acc"}, "ranges");
  ASSERT_TRUE(Succeeded(ranges));
  EXPECT_EQ(table_rows(ranges.out), (std::vector<std::string>{
                                        "| 1-2 | 1.375 | 1.75 | -0.375 | 60.00 | 40.00 | +20.00 |",
                                        "| 3 | 1 | 1 | +0 | 90.00 | 85.00 | +5.00 |",
                                        "| 1 | 1.5 | 2 | -0.5 | 50.00 | 40.00 | +10.00 |",
                                        "| 2 | 1.25 | 1.5 | -0.25 | 70.00 | 40.00 | +30.00 |",
                                        "| 3 | 1 | 1 | +0 | 90.00 | 85.00 | +5.00 |"}));

  // Without --epochs: the epochs both have.
  const std::string short_b = write("short.csv", "epoch,train_acc,test_acc\n2,0.6,0.4\n3,0.7,0.85\n4,0.9,0.9\n");
  const RunResult common = qatlab({"compare", a, short_b}, "common");
  ASSERT_TRUE(Succeeded(common));
  EXPECT_EQ(table_rows(common.out), std::vector<std::string>{"| 2-3 | 80.00 | 62.50 | +17.50 | 75.00 | 65.00 | +10.00 |"});
}

TEST_F(CompareCliTest, ARunsDirectoryAndItsCheckpointGiveTheSameCurve) {
  const std::string run = work("run");
  ASSERT_TRUE(Succeeded(qatlab({"train", "--model", "mlp", "--epochs", "3", "--data-dir", data_dir_, "--out", run,
                                "--progress", "plain"}, "train")));
  const RunResult r = qatlab({"compare", run, run + "/checkpoint.h5", "--per-epoch"}, "same");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("A  " + run + "/metrics.csv (epochs 1-3)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("B  " + run + "/checkpoint.h5 (epochs 1-3)"), std::string::npos) << r.out;
  const std::vector<std::string> rows = table_rows(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;  // 1-3, then each epoch
  // metrics.csv holds six significant digits of what the checkpoint holds: the accuracies' differences
  // round to zero.
  for (const std::string& row : rows) {
    EXPECT_EQ(row.find("| -"), std::string::npos) << row;
    int differences = 0;
    for (size_t at = row.find("| +"); at != std::string::npos; at = row.find("| +", at + 1), ++differences)
      EXPECT_EQ(row.compare(at, 8, "| +0.00 "), 0) << row;
    EXPECT_EQ(differences, 2) << row;
  }
  // And the figures are the run's: epoch 3's test accuracy as metrics.csv has it.
  const Csv csv = read_csv(run + "/metrics.csv");
  char expected[64];
  std::snprintf(expected, sizeof expected, "| 3 | %.2f |", 100 * csv.value(2, "test_acc"));
  EXPECT_EQ(rows[3].rfind(expected, 0), 0u) << rows[3];
}

TEST_F(CompareCliTest, BadInputIsAOneLineErrorWithNothingPrinted) {
  const std::string a = write("a.csv", "epoch,train_acc,test_acc\n1,0.5,0.5\n2,0.7,0.7\n");
  const std::string b = write("b.csv", "epoch,train_acc,test_acc\n1,0.4,0.4\n2,0.6,0.4\n");
  const std::string later = write("later.csv", "epoch,train_acc,test_acc\n5,0.4,0.4\n");
  const std::string three = write("three.csv", "epoch,train_acc,test_acc\n1,0.5,0.5\n2,0.7,0.7\n3,0.8,0.8\n");
  const std::string gap = write("gap.csv", "epoch,train_acc,test_acc\n1,0.4,0.4\n3,0.4,0.4\n");
  const std::string diverged = write("diverged.csv", "epoch,train_acc,test_acc\n1,0.4,0.4\n2,0.1,nan\n");
  const std::string broken = write("broken.csv", "epoch,train_acc,test_acc\n1,0.4\n");
  fs::create_directories(work("empty_dir"));
  struct Case {
    std::vector<std::string> args;
    int code;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {{"compare", a}, kUsageError, {"name two runs"}},
      {{"compare", a, b, a}, kUsageError, {}},
      {{"compare", a, work("missing")}, kUsageError, {"missing: no such file or directory"}},
      {{"compare", a, work("empty_dir")}, kUsageError, {"holds neither metrics.csv nor checkpoint.h5"}},
      {{"compare", a, broken}, kRuntimeFailure, {"broken.csv line 2: 2 fields, the header has 3"}},
      {{"compare", a, later}, kUsageError, {"no epoch in common"}},
      {{"compare", three, gap}, kUsageError, {"not consecutive", "--epochs"}},
      {{"compare", a, b, "--epochs", "1-3"}, kUsageError, {"run A", "has no epoch 3 (it has 1-2)"}},
      {{"compare", a, b, "--epochs", "2-1"}, kUsageError, {"ends before it begins"}},
      {{"compare", a, b, "--epochs", "0"}, kUsageError, {"'0' is not an epoch number"}},
      {{"compare", a, b, "--epochs", "1-"}, kUsageError, {"'' is not an epoch number"}},
      {{"compare", a, b, "--epochs", "x"}, kUsageError, {"'x' is not an epoch number"}},
      {{"compare", a, b, "--epochs", "1,"}, kUsageError, {"--epochs takes ranges"}},
      {{"compare", a, b, "--columns", "test_acc,"}, kUsageError, {"--columns: an empty column name"}},
      {{"compare", a, b, "--columns", "swa_test_acc"}, kUsageError, {"has no swa_test_acc at epoch 1"}},
      {{"compare", a, diverged}, kUsageError, {"test_acc is nan at epoch 2"}},
      {{"compare", a, b, "--bogus"}, kUsageError, {}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const RunResult r = qatlab(cases[i].args, "case" + std::to_string(i));
    EXPECT_TRUE(FailedWith(r, cases[i].code, "compare", {})) << "case " << i;
    for (const std::string& needle : cases[i].needles) EXPECT_NE(r.err.find(needle), std::string::npos) << "case " << i << ": " << r.err;
    EXPECT_EQ(r.out, "") << "case " << i;
  }
}

}  // namespace
}  // namespace qatlab::testing
