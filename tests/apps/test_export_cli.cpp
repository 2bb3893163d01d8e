// test_export_cli.cpp: `qatlab export` from the command line: it writes a model the ONNX checker accepted,
// refuses to replace a file without --overwrite, and on bad input (a file that is no integer model, a
// truncated one, a graph with an LSTM, an output in a missing directory) prints one line, exits 1 and
// leaves an existing output file as it was.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "apps/cli_harness.h"
#include "nn/zoo.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/quant_test_util.h"

namespace qatlab::testing {
namespace {

// A converted random model of the zoo saved as an integer model file.
void save_random_graph(const std::string& model_name, const std::string& path) {
  Rng rng(7);
  const auto model = prepare_qat(make_model(model_name, {1, 28, 28, 10}, rng),
                                 QConfig::from_options(8, 8, true, "minmax", "ema", {}, "observer", "observer"));
  test::train_a_little(model, {4, 1, 28, 28}, 10, rng, 1);
  convert(*model, {1, 28, 28}).save(path);
}

class ExportCli : public ::testing::Test {
 protected:
  TempDir dir_{"export"};
};

TEST_F(ExportCli, WritesTheModelAndRefusesToReplaceItWithoutOverwrite) {
  const std::string model = dir_ / "model.int8.h5", onnx = dir_ / "model.onnx";
  save_random_graph("lenet5", model);
  const RunResult r = run_qatlab({"export", model, "-o", onnx}, dir_.path(), "export");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("QLinearConv"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("input 'input'"), std::string::npos) << r.out;  // no pixel table: normalised floats
  const std::string first = read_text(onnx);
  EXPECT_GT(first.size(), 1000u);

  EXPECT_TRUE(FailedWith(run_qatlab({"export", model, "-o", onnx}, dir_.path(), "again"), kUsageError, "export",
                         {"already exists", "--overwrite"}));
  ASSERT_TRUE(Succeeded(run_qatlab({"export", model, "-o", onnx, "--overwrite"}, dir_.path(), "overwrite")));
  EXPECT_EQ(read_text(onnx), first);  // the export is deterministic
}

TEST_F(ExportCli, BadInputsFailWithOneLineAndLeaveTheOutputAsItWas) {
  const std::string model = dir_ / "model.int8.h5", onnx = dir_ / "existing.onnx";
  save_random_graph("lenet5", model);
  write_text(onnx, "keep me");

  const std::string text = dir_ / "notes.h5";
  write_text(text, "not an HDF5 file at all\n");
  EXPECT_TRUE(FailedWith(run_qatlab({"export", text, "-o", onnx, "--overwrite"}, dir_.path(), "text"), kRuntimeFailure,
                         "export", {text}));

  const std::string whole = read_text(model);
  const std::string truncated = dir_ / "truncated.int8.h5";
  write_text(truncated, whole.substr(0, whole.size() / 2));
  EXPECT_TRUE(FailedWith(run_qatlab({"export", truncated, "-o", onnx, "--overwrite"}, dir_.path(), "truncated"),
                         kRuntimeFailure, "export", {truncated}));

  const std::string lstm = dir_ / "lstm.int8.h5";
  save_random_graph("lstm-rows", lstm);
  EXPECT_TRUE(FailedWith(run_qatlab({"export", lstm, "-o", onnx, "--overwrite"}, dir_.path(), "lstm"), kRuntimeFailure,
                         "export", {"cannot export", "LSTM", "image_rows"}));

  EXPECT_TRUE(FailedWith(run_qatlab({"export", model, "-o", dir_ / "missing/model.onnx"}, dir_.path(), "missing"),
                         kRuntimeFailure, "export", {"does not exist"}));
  EXPECT_FALSE(fs::exists(dir_ / "missing"));

  EXPECT_EQ(read_text(onnx), "keep me");
  for (const auto& e : fs::directory_iterator(dir_.path()))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << "temporary file left: " << e.path();
}

// Checkpoints, trained briefly on the synthetic set: a float one exports with float operators, a QAT one is
// refused with the way to its integer model.
class ExportCheckpointCli : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("export", 256, 64, 5); }
  static void TearDownTestSuite() { tear_down_suite(); }
};

TEST_F(ExportCheckpointCli, AFloatCheckpointExportsAsFloatAndAQatOneIsRefused) {
  const std::string f = work("float");
  ASSERT_TRUE(Succeeded(qatlab({"train", "--model", "lenet5", "--epochs", "1", "--data-dir", data_dir_, "--threads", "2",
                                "--progress", "none", "--out", f},
                               "train")));
  const RunResult r = qatlab({"export", f + "/checkpoint.h5", "-o", work("float.onnx")}, "export");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("Conv, BatchNormalization"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("output 'logits' (float)"), std::string::npos) << r.out;

  const std::string q = work("qat");
  ASSERT_TRUE(Succeeded(qatlab({"qat", "--from", f + "/checkpoint.h5", "--epochs", "1", "--data-dir", data_dir_,
                                "--threads", "2", "--progress", "none", "--out", q},
                               "qat")));
  EXPECT_TRUE(FailedWith(qatlab({"export", q + "/checkpoint.h5", "-o", work("qat.onnx")}, "export_qat"), kRuntimeFailure,
                         "export", {"'qat' checkpoint", "qatlab convert"}));
  EXPECT_FALSE(fs::exists(work("qat.onnx")));
}

}  // namespace
}  // namespace qatlab::testing
