// test_import_cli.cpp: `qatlab import` from the command line: a float checkpoint exported to ONNX and
// imported back evaluates exactly as the original; the model PyTorch exported (tests/onnx/fixtures/)
// imports, QATs for a few steps on a small subset, converts and evaluates; bad files (not ONNX, truncated,
// an unsupported op) and bad calls print one line, exit 1 (2 for usage) and leave an existing output as
// it was.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "apps/cli_harness.h"
#include "nn/checkpoint.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

const fs::path kTorchModel = fs::path(__FILE__).parent_path().parent_path() / "onnx" / "fixtures" / "torch_cnn.onnx";

class ImportCli : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("import", 256, 64, /*seed=*/15); }
  static void TearDownTestSuite() { tear_down_suite(); }
  // Runs a command that loads data on the suite's synthetic set (64 test images, 2 threads; no progress
  // bar for the training commands).
  RunResult run(Args args, const std::string& tag) {
    const Args data = {"--data-dir", data_dir_, "--threads", "2", "--test-limit", "64"};
    args.insert(args.end(), data.begin(), data.end());
    if (args[0] == "train" || args[0] == "qat") args.insert(args.end(), {"--progress", "none"});
    return qatlab(args, tag);
  }
  // What `eval` prints about a checkpoint's accuracy and loss, without its path, name and speed.
  static std::string accuracy_and_loss(const std::string& out) {
    const size_t from = out.find("accuracy"), to = out.find(" img/s");
    if (from == std::string::npos || to == std::string::npos) return "(no accuracy in: " + out + ")";
    const std::string s = out.substr(from, to - from);
    return s.substr(0, s.rfind(','));
  }
};

TEST_F(ImportCli, ExportThenImportEvaluatesExactlyAsTheOriginal) {
  ASSERT_TRUE(Succeeded(run({"train", "--model", "lenet5", "--epochs", "1", "--out", work("float")}, "train")));
  const std::string original = work("float/checkpoint.h5");
  ASSERT_TRUE(Succeeded(qatlab({"export", original, "-o", work("lenet5.onnx")}, "export")));
  const RunResult imported = qatlab({"import", work("lenet5.onnx"), "-o", work("back.h5")}, "import");
  ASSERT_TRUE(Succeeded(imported));
  EXPECT_NE(imported.out.find("network lenet5: input (1, 28, 28), 10 classes"), std::string::npos) << imported.out;
  EXPECT_NE(imported.out.find("data mnist, normalisation mean 0.1307"), std::string::npos) << imported.out;

  const Checkpoint back = load_checkpoint(work("back.h5"));
  EXPECT_EQ(back.model_kind, "float");
  EXPECT_EQ(back.dataset, "mnist");
  EXPECT_NE(back.model_description.find("qatlab-model: 1"), std::string::npos);

  const RunResult a = run({"eval", original}, "eval_original"), b = run({"eval", work("back.h5")}, "eval_back");
  ASSERT_TRUE(Succeeded(a));
  ASSERT_TRUE(Succeeded(b));
  EXPECT_EQ(accuracy_and_loss(b.out), accuracy_and_loss(a.out)) << a.out << b.out;

  // Like any float checkpoint: post-training quantization and inspection take it.
  ASSERT_TRUE(Succeeded(run({"ptq", work("back.h5"), "--calib-batches", "1", "--out", work("ptq")}, "ptq")));
  ASSERT_TRUE(Succeeded(run({"inspect", work("ptq/checkpoint.h5"), "--batches", "1"}, "inspect")));
}

TEST_F(ImportCli, PyTorchsModelImportsQatsConvertsAndEvaluates) {
  const RunResult imported = qatlab({"import", kTorchModel.string(), "-o", work("torch.h5"), "--show"}, "import");
  ASSERT_TRUE(Succeeded(imported));
  EXPECT_NE(imported.out.find("BatchNormalization"), std::string::npos) << imported.out;
  EXPECT_NE(imported.out.find("- residual:"), std::string::npos) << imported.out;  // --show prints the description

  ASSERT_TRUE(Succeeded(run({"qat", "--from", work("torch.h5"), "--epochs", "1", "--train-limit", "64", "--batch-size",
                             "16", "--out", work("qat")},
                            "qat")));
  ASSERT_TRUE(Succeeded(qatlab({"convert", work("qat/checkpoint.h5")}, "convert")));
  const RunResult eval = run({"eval", work("qat/model.int8.h5"), "--compare", work("qat/checkpoint.h5")}, "eval");
  ASSERT_TRUE(Succeeded(eval));
  EXPECT_NE(eval.out.find("agreement"), std::string::npos) << eval.out;
}

TEST_F(ImportCli, BadFilesAndCallsFailWithOneLineAndLeaveTheOutputAsItWas) {
  const std::string out = work("existing.h5");
  write_text(out, "keep me");
  const std::string text = work("notes.onnx");
  write_text(text, "not an ONNX model at all\n");
  EXPECT_TRUE(FailedWith(qatlab({"import", text, "-o", out, "--overwrite"}, "text"), kRuntimeFailure, "import",
                         {text, "not an ONNX model"}));

  const std::string whole = read_text(kTorchModel.string());
  const std::string truncated = work("truncated.onnx");
  write_text(truncated, whole.substr(0, whole.size() * 2 / 3));
  EXPECT_TRUE(FailedWith(qatlab({"import", truncated, "-o", out, "--overwrite"}, "truncated"), kRuntimeFailure,
                         "import", {truncated}));

  // Every Relu node of the PyTorch model made a Selu (same length: the protobuf stays valid).
  std::string selu = whole;
  for (size_t at = selu.find("Relu"); at != std::string::npos; at = selu.find("Relu", at + 4))
    selu.replace(at, 4, "Selu");
  const std::string unsupported = work("selu.onnx");
  write_text(unsupported, selu);
  EXPECT_TRUE(FailedWith(qatlab({"import", unsupported, "-o", out, "--overwrite"}, "selu"), kRuntimeFailure, "import",
                         {"Selu '/Selu'", "unsupported op"}));

  EXPECT_TRUE(FailedWith(qatlab({"import", kTorchModel.string(), "-o", out}, "exists"), kUsageError, "import",
                         {"already exists", "--overwrite"}));
  EXPECT_TRUE(FailedWith(
      qatlab({"import", kTorchModel.string(), "-o", out, "--overwrite", "--dataset", "cifar10"}, "wrong_dataset"),
      kUsageError, "import", {"(1, 28, 28)", "cifar10 has (3, 32, 32)"}));
  EXPECT_TRUE(FailedWith(qatlab({"import", kTorchModel.string(), "-o", work("missing/model.h5")}, "missing"),
                         kRuntimeFailure, "import", {"does not exist"}));

  EXPECT_EQ(read_text(out), "keep me");
  for (const auto& e : fs::directory_iterator(work_->path()))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << "temporary file left: " << e.path();
}

}  // namespace
}  // namespace qatlab::testing
