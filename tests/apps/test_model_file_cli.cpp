// test_model_file_cli.cpp: end-to-end, a network from a description file (`--model FILE`): trained,
// then QAT-ed, converted and evaluated after the file is gone (checkpoints carry the description), and
// a bad file refused with its line.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "tests/apps/cli_harness.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

class ModelFileCli : public CliSuite {
 protected:
  static void SetUpTestSuite() { set_up_suite("model_file", 256, 64, /*seed=*/21); }
  static void TearDownTestSuite() { tear_down_suite(); }
  Args common() const { return {"--data-dir", data_dir_, "--threads", "2", "--progress", "none", "--test-limit", "64"}; }
};

// A small depthwise-separable network: every layer type of it goes through prepare, convert and the
// integer graph.
constexpr const char* kNet = R"(# a test network
qatlab-model: 1
name: tiny-dws
layers:
  - conv: {name: stem, out: 8, kernel: 3, stride: 2, padding: 1, bias: false}
  - batchnorm: {name: stem_bn}
  - relu6: {name: stem_act}
  - conv: {name: dw, kernel: 3, padding: 1, depthwise: true, bias: false}
  - batchnorm: {name: dw_bn}
  - relu: {name: dw_act}
  - conv: {name: pw, out: 16, kernel: 1, bias: false}
  - batchnorm: {name: pw_bn}
  - relu: {name: pw_act}
  - global-avgpool: {name: pool}
  - linear: {name: fc, out: classes}
)";

TEST_F(ModelFileCli, TrainsQatsAndConvertsANetworkFromAFileThatIsThenGone) {
  const std::string net = work("tiny.yaml");
  write_text(net, kNet);
  Args train = {"train", "--model", net, "--epochs", "1", "--out", work("float")};
  const Args c = common();
  train.insert(train.end(), c.begin(), c.end());
  const RunResult trained = qatlab(train, "train");
  ASSERT_TRUE(Succeeded(trained));
  EXPECT_NE(trained.out.find("tiny-dws"), std::string::npos) << trained.out;
  const Checkpoint ckpt = load_checkpoint(work("float/checkpoint.h5"));
  EXPECT_EQ(ckpt.model_name, "tiny-dws");
  EXPECT_EQ(ckpt.model_description, kNet);

  fs::remove(net);  // from here on the checkpoints alone describe the network
  Args qat = {"qat", "--from", work("float/checkpoint.h5"), "--epochs", "1", "--out", work("qat")};
  qat.insert(qat.end(), c.begin(), c.end());
  ASSERT_TRUE(Succeeded(qatlab(qat, "qat")));
  ASSERT_TRUE(Succeeded(qatlab({"convert", work("qat/checkpoint.h5")}, "convert")));
  const RunResult eval = qatlab({"eval", work("qat/model.int8.h5"), "--data-dir", data_dir_, "--test-limit", "64",
                                 "--compare", work("qat/checkpoint.h5")},
                                "eval");
  ASSERT_TRUE(Succeeded(eval));
  EXPECT_NE(eval.out.find("agreement"), std::string::npos) << eval.out;
  const RunResult info = qatlab({"info", work("qat/checkpoint.h5")}, "info");
  ASSERT_TRUE(Succeeded(info));
  EXPECT_NE(info.out.find("dw"), std::string::npos) << info.out;
}

TEST_F(ModelFileCli, ABadFileIsOneLineWithItsLineNumber) {
  const std::string net = work("bad.yaml");
  write_text(net, "qatlab-model: 1\nname: bad\nlayers:\n  - flatten\n  - linear: {out: ten}\n");
  Args train = {"train", "--model", net, "--epochs", "1", "--out", work("out")};
  const Args c = common();
  train.insert(train.end(), c.begin(), c.end());
  const RunResult r = qatlab(train, "train");
  EXPECT_TRUE(FailedWith(r, 1, "train", {net + ":5:", "'out' must be an integer", "ten"}));
  EXPECT_FALSE(fs::exists(work("out/checkpoint.h5")));
  // A value that is neither a built-in model nor a file: a usage error naming the built-in ones.
  Args unknown = {"train", "--model", "resnet21", "--epochs", "1"};
  unknown.insert(unknown.end(), c.begin(), c.end());
  EXPECT_TRUE(FailedWith(qatlab(unknown, "unknown"), 2, "train", {"resnet21", "resnet20", "description file"}));
}

}  // namespace
}  // namespace qatlab::testing
