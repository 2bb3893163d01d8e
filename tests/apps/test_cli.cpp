// test_cli.cpp: end-to-end tests of the `qatlab` command: the real binary trains, resumes (after
// --stop-after and after kill -9), evaluates and describes checkpoints on a synthetic MNIST-format
// dataset, and refuses bad input with one stderr line and the documented exit code without ever
// damaging an earlier run.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/format.h"
#include "core/h5io.h"
#include "data/idx.h"
#include "nn/checkpoint.h"
#include "quant/engine/int8_graph.h"
#include "quant/workflow/checkpoint_model.h"
#include "tests/apps/cli_harness.h"
#include "tests/data/file_dataset_writers.h"

namespace qatlab::testing {
namespace {

using Args = std::vector<std::string>;

// The synthetic set. Most tests use the first 256 or 512 training images (--train-limit); the resume
// tests use all 2048 so that an epoch lasts long enough (0.1 to 0.5 s) to kill a run in the middle.
constexpr int64_t kTrainImages = 2048, kTestImages = 256;

Args concat(Args a, const Args& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}


// Requires two checkpoints to hold bit-identical model and optimizer tensors (memcmp, so -0.0 vs 0.0 or
// one ulp counts), the same RNG state, and the same deterministic history columns.
void ExpectSameTraining(const Checkpoint& a, const Checkpoint& b) {
  const auto compare = [](const NamedTensors& x, const NamedTensors& y, const char* what) {
    std::map<std::string, Tensor> mx(x.begin(), x.end()), my(y.begin(), y.end());
    ASSERT_FALSE(mx.empty()) << what;
    ASSERT_EQ(mx.size(), my.size()) << what;
    for (const auto& [name, tx] : mx) {
      auto it = my.find(name);
      ASSERT_NE(it, my.end()) << what << " " << name << " missing";
      const Tensor& ty = it->second;
      ASSERT_EQ(tx.shape(), ty.shape()) << what << " " << name;
      EXPECT_EQ(std::memcmp(tx.data(), ty.data(), sizeof(float) * tx.numel()), 0)
          << what << " " << name << " differs (first values " << tx.data()[0] << " vs " << ty.data()[0] << ")";
    }
  };
  compare(a.model_state, b.model_state, "model tensor");
  compare(a.optimizer_state, b.optimizer_state, "optimizer tensor");
  EXPECT_EQ(a.optimizer_kind, b.optimizer_kind);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.rng_state, b.rng_state);
  ASSERT_EQ(a.history.size(), b.history.size());
  // Timing columns (img/s, seconds) differ from run to run; everything else must not.
  for (size_t i = 0; i < a.history.size(); ++i)
    for (const char* col : {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"})
      EXPECT_EQ(a.history[i].at(col), b.history[i].at(col)) << "history row " << i << " column " << col;
}

class CliTest : public CliSuite {
 protected:
  // One synthetic dataset for every test of the process (seeded: identical in every process).
  static void SetUpTestSuite() {
    set_up_suite("suite", kTrainImages, kTestImages, /*seed=*/2024);
    straight_dir_.clear();
  }
  static void TearDownTestSuite() { tear_down_suite(); }

  // `qatlab train` on the synthetic data, quiet, two threads, writing to `out`.
  static Args train_args(const std::string& out, const Args& extra) {
    return concat({"train", "--data-dir", data_dir_, "--threads", "2", "--progress", "none", "--out", out}, extra);
  }
  static Args mlp_settings(int epochs) {
    return {"--model", "mlp", "--epochs", std::to_string(epochs), "--train-limit", "256", "--test-limit", "64"};
  }
  // The resume tests' run: LeNet-5 (batch norm buffers, momentum state) for 3 epochs of all 2048
  // training images.
  static Args lenet_settings() {
    return {"--model", "lenet5", "--epochs", "3", "--batch-size", "32", "--test-limit", "64", "--seed", "7"};
  }

  // A finished 1-epoch mlp run in `out` (for tests that need an existing run or checkpoint).
  void make_mlp_run(const std::string& out) {
    const RunResult r = qatlab(train_args(out, mlp_settings(1)), "setup");
    ASSERT_TRUE(Succeeded(r));
    ASSERT_TRUE(fs::exists(out + "/checkpoint.h5"));
  }

  // The uninterrupted 3-epoch LeNet-5 run both resume tests compare against, trained once per process.
  static std::string straight_lenet_run() {
    std::string& dir = straight_dir_;
    if (dir.empty()) {
      const std::string out = *suite_dir_ / "lenet-straight";
      const RunResult r = run_qatlab(train_args(out, lenet_settings()), suite_dir_->path(), "lenet-straight");
      if (!r.exited || r.exit_code != 0) throw std::runtime_error("the straight LeNet-5 run failed\n" + r.describe());
      dir = out;
    }
    return dir;
  }

  static std::string data_dir() { return data_dir_; }

  static inline std::string straight_dir_;  // "" until straight_lenet_run() has run in this suite
};

// ------------------------------------------------------------------------------------ a full run

TEST_F(CliTest, TrainMlpWritesRunFilesLearnsAndInfoAndEvalAgree) {
  const std::string out = work("run");
  const RunResult train = qatlab(
      train_args(out, {"--model", "mlp", "--epochs", "2", "--train-limit", "512", "--test-limit", "128"}), "train");
  ASSERT_TRUE(Succeeded(train));
  EXPECT_EQ(train.err, "") << "--progress none must keep stderr empty";
  EXPECT_NE(train.out.find("203530 parameters"), std::string::npos) << train.out;
  EXPECT_NE(train.out.find("512 train / 128 test"), std::string::npos) << train.out;
  ASSERT_TRUE(fs::exists(out + "/checkpoint.h5"));
  ASSERT_TRUE(fs::exists(out + "/summary.json"));
  ASSERT_TRUE(fs::exists(out + "/metrics.csv"));

  const Csv csv = read_csv(out + "/metrics.csv");
  ASSERT_EQ(csv.rows.size(), 2u) << read_text(out + "/metrics.csv");
  EXPECT_EQ(csv.value(0, "epoch"), 1);
  EXPECT_EQ(csv.value(1, "epoch"), 2);
  const double test_acc = csv.value(1, "test_acc");
  // Chance is 10 %; with one label in ten randomised the best possible is about 91 %.
  EXPECT_GT(test_acc, 0.6) << read_text(out + "/metrics.csv");
  EXPECT_LT(csv.value(1, "train_loss"), csv.value(0, "train_loss"));
  // The training curve beside it: train and test accuracy per epoch.
  const std::string curve = read_text(out + "/curve.svg");
  EXPECT_NE(curve.find("<svg"), std::string::npos) << curve.substr(0, 100);
  EXPECT_NE(curve.find("mlp (float) on mnist"), std::string::npos);
  size_t lines = 0;
  for (size_t at = curve.find("<polyline class=\"series\""); at != std::string::npos;
       at = curve.find("<polyline class=\"series\"", at + 1))
    ++lines;
  EXPECT_EQ(lines, 2u);

  const std::string summary = read_text(out + "/summary.json");
  EXPECT_NE(summary.find("\"epochs_completed\": 2"), std::string::npos) << summary;
  EXPECT_NE(summary.find("\"finished\": true"), std::string::npos) << summary;
  EXPECT_NE(summary.find("\"parameters\": 203530"), std::string::npos) << summary;

  // The checkpoint holds the same history as the CSV, at full precision.
  const Checkpoint ckpt = load_checkpoint(out + "/checkpoint.h5");
  EXPECT_EQ(ckpt.epoch, 2);
  EXPECT_EQ(ckpt.model_name, "mlp");
  ASSERT_EQ(ckpt.history.size(), 2u);
  EXPECT_NEAR(ckpt.history[1].at("test_acc"), test_acc, 1e-6);

  // info: model tree, parameter count, two history rows.
  const RunResult info = qatlab({"info", out + "/checkpoint.h5"}, "info");
  ASSERT_TRUE(Succeeded(info));
  EXPECT_NE(info.out.find("parameters     203530"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("module tree:"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("fc1: Linear(in=784, out=256"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("fc2: Linear(in=256, out=10"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("epochs done    2"), std::string::npos) << info.out;
  const size_t hist = info.out.find("history:\n");
  ASSERT_NE(hist, std::string::npos) << info.out;
  std::vector<std::string> rows;
  const std::vector<std::string> after = split_lines(info.out.substr(hist));
  for (size_t i = 2; i < after.size() && !after[i].empty(); ++i) rows.push_back(after[i]);  // skip title, header
  ASSERT_EQ(rows.size(), 2u) << info.out;
  char acc_text[32];
  std::snprintf(acc_text, sizeof acc_text, "%.2f%%", 100 * ckpt.history[1].at("test_acc"));
  EXPECT_NE(rows[1].find(acc_text), std::string::npos) << rows[1] << " lacks " << acc_text;

  // info --curve: the same two-line chart from the checkpoint's history; an existing file is kept
  // unless --overwrite.
  const std::string replot = out + "/replot.svg";
  ASSERT_TRUE(Succeeded(qatlab({"info", out + "/checkpoint.h5", "--curve", replot}, "info --curve")));
  EXPECT_EQ(read_text(replot), curve);
  const RunResult again = qatlab({"info", out + "/checkpoint.h5", "--curve", out + "/summary.json"}, "info --curve again");
  EXPECT_TRUE(again.exited && again.exit_code == kUsageError) << again.describe();
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  EXPECT_EQ(read_text(out + "/summary.json"), summary);

  // eval: the same accuracy as the last epoch's evaluation, to the printed precision.
  const RunResult eval = qatlab(
      {"eval", out + "/checkpoint.h5", "--data-dir", data_dir(), "--test-limit", "128", "--threads", "2"}, "eval");
  ASSERT_TRUE(Succeeded(eval));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(eval.out, m, std::regex("accuracy ([0-9.]+) % \\((\\d+) images\\)"))) << eval.out;
  EXPECT_EQ(m[2].str(), "128");
  std::snprintf(acc_text, sizeof acc_text, "%.2f", 100 * ckpt.history[1].at("test_acc"));
  EXPECT_EQ(m[1].str(), acc_text) << eval.out;
  EXPECT_NEAR(std::stod(m[1].str()), 100 * test_acc, 0.005 + 1e-9);
}

// ------------------------------------------------------------------------------------------ resume

TEST_F(CliTest, ResumeAfterStopAfterIsBitIdentical) {
  const std::string straight = straight_lenet_run();
  const std::string out = work("stopped");
  const RunResult first = qatlab(train_args(out, concat(lenet_settings(), {"--stop-after", "1"})), "first");
  ASSERT_TRUE(Succeeded(first));
  EXPECT_NE(first.out.find("stopped early"), std::string::npos) << first.out;
  EXPECT_EQ(load_checkpoint(out + "/checkpoint.h5").epoch, 1);
  EXPECT_NE(read_text(out + "/summary.json").find("\"finished\": false"), std::string::npos);

  // Everything else (model, data, limits, seed, epochs) comes from the checkpoint.
  const RunResult resumed =
      qatlab({"train", "--resume", out + "/checkpoint.h5", "--threads", "2", "--progress", "none"}, "resume");
  ASSERT_TRUE(Succeeded(resumed));
  EXPECT_NE(resumed.out.find("resuming after epoch 1"), std::string::npos) << resumed.out;

  const Checkpoint a = load_checkpoint(straight + "/checkpoint.h5");
  const Checkpoint b = load_checkpoint(out + "/checkpoint.h5");
  EXPECT_EQ(a.epoch, 3);
  EXPECT_EQ(b.epoch, 3);
  ExpectSameTraining(a, b);
  EXPECT_EQ(read_csv(out + "/metrics.csv").rows.size(), 3u);
  EXPECT_NE(read_text(out + "/summary.json").find("\"finished\": true"), std::string::npos);
}

// A finished run's checkpoint copied alone to a new directory (as experiments keep it between machines):
// resuming it trains nothing and writes the run's metrics and curve again from the history it carries.
TEST_F(CliTest, ResumingAFinishedCheckpointAloneWritesItsMetrics) {
  const std::string straight = straight_lenet_run();
  const std::string copy = work("finished-copy");
  std::filesystem::create_directories(copy);
  std::filesystem::copy_file(straight + "/checkpoint.h5", copy + "/checkpoint.h5");
  ASSERT_TRUE(Succeeded(
      qatlab({"train", "--resume", copy + "/checkpoint.h5", "--threads", "2", "--progress", "none"}, "resume")));
  EXPECT_EQ(read_text(copy + "/metrics.csv"), read_text(straight + "/metrics.csv"));
  EXPECT_EQ(read_text(copy + "/curve.svg"), read_text(straight + "/curve.svg"));
  EXPECT_NE(read_text(copy + "/summary.json").find("\"finished\": true"), std::string::npos);
}

TEST_F(CliTest, ResumeAfterKillNineMatchesStraightRun) {
  const std::string straight = straight_lenet_run();
  const std::string out = work("killed");
  const Args args = train_args(out, lenet_settings());
  const std::string log_out = work("killed.out"), log_err = work("killed.err");
  const pid_t pid = spawn_qatlab(args, log_out, log_err);

  // Wait for the end of epoch 1 (the checkpoint appears by an atomic rename), then kill without warning
  // while epoch 2 runs (it lasts 0.1 s or more; we poll every millisecond).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  bool ended_early = false;
  while (!fs::exists(out + "/checkpoint.h5")) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      ended_early = true;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (ended_early) FAIL() << "the run ended before its first checkpoint\n" << read_text(log_out) << read_text(log_err);
  ::kill(pid, SIGKILL);
  const RunResult killed = wait_qatlab(pid, log_out, log_err, join_command(args));
  ASSERT_TRUE(fs::exists(out + "/checkpoint.h5")) << "no checkpoint within 60 s\n" << killed.describe();
  ASSERT_FALSE(killed.exited) << "the run finished before it could be killed: the timing assumption failed\n"
                              << killed.describe();
  ASSERT_EQ(WTERMSIG(killed.wait_status), SIGKILL);
  const int64_t saved_epoch = load_checkpoint(out + "/checkpoint.h5").epoch;
  EXPECT_GE(saved_epoch, 1);
  EXPECT_LT(saved_epoch, 3);

  const RunResult resumed =
      qatlab({"train", "--resume", out + "/checkpoint.h5", "--threads", "2", "--progress", "none"}, "resume");
  ASSERT_TRUE(Succeeded(resumed));
  const Checkpoint a = load_checkpoint(straight + "/checkpoint.h5");
  const Checkpoint c = load_checkpoint(out + "/checkpoint.h5");
  EXPECT_EQ(c.epoch, 3);
  ExpectSameTraining(a, c);
  // The metrics may lag the checkpoint after a kill; the resumed run rewrites them from its history.
  EXPECT_EQ(read_csv(out + "/metrics.csv").rows.size(), 3u);
}

// The committed ResNet-20 recipe (experiments/cifar10_resnet20/float_recipe.ini: Nesterov SGD, weight
// decay, a warm-up epoch into the cosine schedule, crop, flip and cutout) runs over several sessions;
// resumed after each, it must end where the uninterrupted run ends. Its first two epochs on 256
// CIFAR-shaped images, straight and stopped after one then resumed.
TEST_F(CliTest, TheResNet20RecipeResumedEqualsTheUninterruptedRun) {
  const fs::path recipe = fs::path(__FILE__).parent_path().parent_path().parent_path() / "experiments" /
                          "cifar10_resnet20" / "float_recipe.ini";
  TinySpec spec;
  spec.c = 3, spec.h = 32, spec.w = 32, spec.classes = 10, spec.n_train = 256, spec.n_test = 32;
  const std::string data = work("cifar.h5");
  write_hdf5_dataset(data, spec);
  const auto recipe_run = [&](const std::string& out, const std::string& stop_after) {
    return Args{"train", "--config", recipe.string(), "--dataset", "hdf5:" + data, "--out", out,
                "--stop-after", stop_after, "--progress", "none"};
  };
  const std::string straight = work("recipe-straight"), stopped = work("recipe-stopped");
  ASSERT_TRUE(Succeeded(qatlab(recipe_run(straight, "2"), "straight")));
  ASSERT_TRUE(Succeeded(qatlab(recipe_run(stopped, "1"), "first")));
  const RunResult resumed =
      qatlab({"train", "--resume", stopped + "/checkpoint.h5", "--stop-after", "1", "--progress", "none"}, "resume");
  ASSERT_TRUE(Succeeded(resumed));
  const Checkpoint a = load_checkpoint(straight + "/checkpoint.h5"), b = load_checkpoint(stopped + "/checkpoint.h5");
  EXPECT_EQ(a.epoch, 2);
  ExpectSameTraining(a, b);
  for (const char* setting : {"augment = pad-crop:4,flip,cutout:16", "nesterov = true", "warmup-epochs = 1"})
    EXPECT_NE(b.config_ini.find(setting), std::string::npos) << setting << " not in\n" << b.config_ini;
}

// Weight averaging (--swa-start, --swa-lr) over the last epochs of a run: resumed in the middle of it,
// the run ends on the uninterrupted run's averaged model; a finished run without it can take it on,
// ending where a run with it from the start ends, when the schedule so far stays as it was; and it
// cannot change once an epoch has been averaged, nor a run that ended on its average train on.
TEST_F(CliTest, WeightAveragingResumesAndExtendsAsAnUninterruptedRun) {
  const Args lenet = {"--model", "lenet5", "--batch-size", "32", "--train-limit", "512", "--test-limit", "64", "--seed", "7"};
  const Args averaging = {"--swa-start", "2", "--swa-lr", "0.01"};
  const auto resume = [](const std::string& run, const Args& extra) {
    return concat({"train", "--resume", run + "/checkpoint.h5", "--threads", "2", "--progress", "none"}, extra);
  };
  const std::string straight = work("swa-straight"), stopped = work("swa-stopped"), extended = work("swa-extended");
  const RunResult whole = qatlab(train_args(straight, concat(concat(lenet, {"--epochs", "4"}), averaging)), "straight");
  ASSERT_TRUE(Succeeded(whole));
  EXPECT_NE(whole.out.find("weights averaged over epochs 3-4"), std::string::npos) << whole.out;
  ASSERT_TRUE(Succeeded(
      qatlab(train_args(stopped, concat(concat(lenet, {"--epochs", "4", "--stop-after", "3"}), averaging)), "stopped")));
  ASSERT_TRUE(Succeeded(qatlab(resume(stopped, {}), "stopped-resumed")));
  ASSERT_TRUE(Succeeded(qatlab(train_args(extended, concat(lenet, {"--epochs", "2"})), "plain")));
  ASSERT_TRUE(Succeeded(qatlab(resume(extended, concat({"--epochs", "4"}, averaging)), "extended")));

  const Checkpoint a = load_checkpoint(straight + "/checkpoint.h5");
  EXPECT_TRUE(a.model_is_average);
  EXPECT_EQ(a.swa_count, 2);
  for (const std::string& other : {stopped, extended}) {
    SCOPED_TRACE(other);
    const Checkpoint b = load_checkpoint(other + "/checkpoint.h5");
    ExpectSameTraining(a, b);
    EXPECT_TRUE(b.model_is_average);
    for (size_t e = 2; e < 4; ++e) EXPECT_EQ(a.history[e].at("swa_test_acc"), b.history[e].at("swa_test_acc"));
  }
  const Csv metrics = read_csv(straight + "/metrics.csv");
  ASSERT_EQ(metrics.rows.size(), 4u);
  EXPECT_EQ(metrics.header.back(), "swa_test_acc");
  EXPECT_NE(read_text(straight + "/summary.json").find("\"swa_start\": 2"), std::string::npos);
  const RunResult info = qatlab({"info", straight + "/checkpoint.h5"}, "info");
  ASSERT_TRUE(Succeeded(info));
  EXPECT_NE(info.out.find("the mean of 2 epochs' weights (SWA)"), std::string::npos) << info.out;

  // After epoch 3 of the stopped run one epoch is averaged: its averaging is fixed.
  const std::string midway = work("swa-midway");
  ASSERT_TRUE(Succeeded(
      qatlab(train_args(midway, concat(concat(lenet, {"--epochs", "4", "--stop-after", "3"}), averaging)), "midway")));
  EXPECT_TRUE(FailedWith(qatlab(resume(midway, {"--swa-start", "1"}), "moved"), kUsageError, "train",
                         {"--swa-start", "after epoch 3"}));
  EXPECT_TRUE(FailedWith(qatlab(resume(midway, {"--swa-lr", "0.02"}), "faster"), kUsageError, "train", {"--swa-lr"}));
  // A finished run takes averaging on only where its schedule ended.
  const std::string plain = work("swa-plain");
  ASSERT_TRUE(Succeeded(qatlab(train_args(plain, concat(lenet, {"--epochs", "2"})), "plain-2")));
  EXPECT_TRUE(FailedWith(qatlab(resume(plain, {"--epochs", "6", "--swa-start", "3", "--swa-lr", "0.01"}), "span"),
                         kUsageError, "train", {"change the schedule", "--swa-start 2"}));
  // A run that ended on its average cannot train on.
  EXPECT_TRUE(FailedWith(qatlab(resume(straight, {"--epochs", "5"}), "on"), kUsageError, "train",
                         {"averaged", "cannot train on"}));
}

TEST_F(CliTest, WeightAveragingOptionsAreChecked) {
  const std::string out = work("swa-bad");
  const Args lenet = {"--model", "lenet5", "--epochs", "3", "--train-limit", "64", "--test-limit", "32"};
  EXPECT_TRUE(FailedWith(qatlab(train_args(out, concat(lenet, {"--swa-lr", "0.01"})), "lr"), kUsageError, "train",
                         {"--swa-lr needs --swa-start"}));
  EXPECT_TRUE(FailedWith(qatlab(train_args(out, concat(lenet, {"--swa-start", "2"})), "no-lr"), kUsageError, "train",
                         {"--swa-start needs --swa-lr"}));
  EXPECT_TRUE(FailedWith(qatlab(train_args(out, concat(lenet, {"--swa-start", "3", "--swa-lr", "0.01"})), "late"),
                         kUsageError, "train", {"--swa-start must be in 0..epochs - 1"}));
  EXPECT_TRUE(FailedWith(
      qatlab(train_args(out, concat(lenet, {"--swa-start", "1", "--swa-lr", "0.01", "--warmup-epochs", "1"})), "warm"),
      kUsageError, "train", {"--warmup-epochs", "before --swa-start"}));
  EXPECT_FALSE(fs::exists(out + "/checkpoint.h5"));
}

TEST_F(CliTest, ResumeOfMissingCheckpointFails) {
  const RunResult r = qatlab({"train", "--resume", work("nothing.h5"), "--threads", "2", "--progress", "none"});
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "train", {work("nothing.h5"), "no such file"}));
}

// ------------------------------------------------------------------------------------- bad options

TEST_F(CliTest, InvalidTrainOptionsAreUsageErrors) {
  struct Case {
    Args args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--lr", "0"}, "--lr must be > 0"},
      {{"--lr", "-1"}, "--lr must be > 0"},
      {{"--lr", "abc"}, "'--lr' is invalid"},
      {{"--batch-size", "0"}, "--batch-size must be in 1..65536, got 0"},
      {{"--epochs", "-1"}, "--epochs must be in 1..100000, got -1"},
      {{"--momentum", "1.5"}, "--momentum must be in [0, 1)"},
      {{"--dataset", "imagenet"}, "--dataset 'imagenet' names no dataset"},
      {{"--no-such-option"}, "--no-such-option"},
      {{"--optimizer", "lbfgs"}, "--optimizer must be sgd, adam or adamw, got 'lbfgs'"},
      {{"--epochs", "2", "--warmup-epochs", "2"}, "--warmup-epochs (2) must be below --epochs (2) with the cosine schedule"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string out = work("out" + std::to_string(i));
    // No --epochs here: one case sets it, and an option may be given only once.
    const RunResult r = qatlab(train_args(out, concat({"--model", "mlp"}, cases[i].args)), "case" + std::to_string(i));
    EXPECT_TRUE(FailedWith(r, kUsageError, "train", {cases[i].message})) << "case " << join_command(cases[i].args);
    EXPECT_FALSE(fs::exists(out)) << "a rejected run created its output directory: " << join_command(cases[i].args);
  }
}

// An unknown model name is a mistake in how the command was called, like an unknown dataset: exit code 2,
// found before any data is loaded.
TEST_F(CliTest, UnknownModelIsAUsageError) {
  const std::string out = work("out");
  const RunResult r = qatlab(train_args(out, {"--model", "resnet9000", "--epochs", "1"}));
  EXPECT_TRUE(FailedWith(r, kUsageError, "train", {"unknown model 'resnet9000'", "lenet5", "mlp"}));
  EXPECT_FALSE(fs::exists(out + "/checkpoint.h5"));
}

TEST_F(CliTest, TopLevelUsage) {
  const RunResult none = qatlab({}, "none");
  EXPECT_TRUE(none.exited && none.exit_code == kUsageError) << none.describe();
  EXPECT_NE(none.out.find("usage: qatlab"), std::string::npos) << none.describe();
  const RunResult unknown = qatlab({"trian"}, "unknown");
  EXPECT_TRUE(unknown.exited && unknown.exit_code == kUsageError) << unknown.describe();
  EXPECT_EQ(split_lines(unknown.err), std::vector<std::string>{"qatlab: unknown command 'trian'"});
  const RunResult help = qatlab({"--help"}, "help");
  EXPECT_TRUE(Succeeded(help));
  for (const char* cmd : {"train", "eval", "info"}) EXPECT_NE(help.out.find(cmd), std::string::npos) << help.out;
}

TEST_F(CliTest, HelpOnEverySubcommandExitsZero) {
  // Every subcommand the top-level help lists, so commands added later are covered too.
  const RunResult top = qatlab({"--help"}, "top");
  ASSERT_TRUE(Succeeded(top));
  std::vector<std::string> commands;
  bool in_list = false;
  for (const std::string& line : split_lines(top.out)) {
    if (line == "commands:") {
      in_list = true;
    } else if (in_list && line.rfind("  ", 0) == 0) {  // "  name     summary"
      commands.push_back(line.substr(2, line.find(' ', 2) - 2));
    }
  }
  for (const char* required : {"train", "eval", "info"})
    EXPECT_NE(std::find(commands.begin(), commands.end(), required), commands.end()) << required << "\n" << top.out;
  for (const std::string& cmd : commands) {
    const RunResult r = qatlab({cmd, "--help"}, cmd);
    ASSERT_TRUE(Succeeded(r)) << cmd;
    EXPECT_EQ(r.err, "") << cmd;
    EXPECT_NE(r.out.find("usage: qatlab " + cmd), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("--config"), std::string::npos) << r.out;
  }
  const RunResult train = qatlab({"train", "--help"}, "train");
  for (const char* opt : {"--lr", "--epochs", "--resume", "--stop-after", "--data-dir", "--overwrite"})
    EXPECT_NE(train.out.find(opt), std::string::npos) << opt;
  // Without --help, eval and info need to be told what to read.
  EXPECT_TRUE(FailedWith(qatlab({"eval"}, "eval-bare"), kUsageError, "eval", {"name the", "qatlab eval"}));
  EXPECT_TRUE(FailedWith(qatlab({"info"}, "info-bare"), kUsageError, "info", {"name the", "qatlab info"}));
}

// --------------------------------------------------------------------------------------- bad data

TEST_F(CliTest, MissingFashionMnistNamesTheDirectory) {
  const std::string empty = work("empty");
  fs::create_directories(empty);
  const RunResult r = qatlab({"train", "--dataset", "fashion-mnist", "--data-dir", empty, "--model", "mlp", "--threads",
                              "2", "--progress", "none", "--out", work("out")});
  EXPECT_TRUE(
      FailedWith(r, kRuntimeFailure, "train", {"fashion-mnist not found in " + empty, "train-images-idx3-ubyte"}));
  EXPECT_FALSE(fs::exists(work("out") + "/checkpoint.h5"));
}

TEST_F(CliTest, BrokenIdxFilesAreOneLineErrors) {
  // Each case copies the synthetic set, breaks one file, and trains on the copy.
  const auto broken_copy = [&](const std::string& name) {
    const std::string dir = work(name);
    fs::create_directories(dir);
    for (const auto& entry : fs::directory_iterator(data_dir()))
      fs::copy_file(entry.path(), dir + "/" + entry.path().filename().string());
    return dir;
  };
  const auto train_on = [&](const std::string& dir, const std::string& tag) {
    return qatlab({"train", "--data-dir", dir, "--model", "mlp", "--epochs", "1", "--threads", "2", "--progress",
                   "none", "--out", dir + "/out"},
                  tag);
  };

  {  // wrong magic: not 00 00 08 03 but 12 34 ...
    const std::string dir = broken_copy("magic");
    const std::string file = dir + "/train-images-idx3-ubyte";
    std::string bytes = read_text(file);
    bytes[0] = '\x12';
    bytes[1] = '\x34';
    write_text(file, bytes);
    EXPECT_TRUE(FailedWith(train_on(dir, "magic"), kRuntimeFailure, "train", {file, "not an IDX file"}));
  }
  {  // truncated: the test images stop in the middle of an image
    const std::string dir = broken_copy("truncated");
    const std::string file = dir + "/t10k-images-idx3-ubyte";
    fs::resize_file(file, 16 + 28 * 28 * 10 + 100);
    EXPECT_TRUE(FailedWith(train_on(dir, "truncated"), kRuntimeFailure, "train", {file, "truncated"}));
  }
  {  // a well-formed label file with one label fewer than there are images
    const std::string dir = broken_copy("count");
    const std::string file = dir + "/train-labels-idx1-ubyte";
    IdxArray labels = read_idx(file);
    labels.data.pop_back();
    labels.dims[0] -= 1;
    write_idx(file, labels, /*gzip=*/false);
    EXPECT_TRUE(FailedWith(train_on(dir, "count"), kRuntimeFailure, "train",
                           {"images and labels disagree", std::to_string(kTrainImages) + " images",
                            std::to_string(kTrainImages - 1) + " labels"}));
  }
}

// --------------------------------------------------------------------------------- bad checkpoints

TEST_F(CliTest, EvalRejectsBadCheckpoints) {
  const auto eval = [&](const std::string& path, const std::string& tag) {
    return qatlab({"eval", path, "--data-dir", data_dir(), "--threads", "2"}, tag);
  };
  EXPECT_TRUE(
      FailedWith(eval(work("missing.h5"), "missing"), kRuntimeFailure, "eval", {work("missing.h5"), "no such file"}));

  write_text(work("notes.txt"), "epochs = 3\nthis is not a checkpoint\n");
  EXPECT_TRUE(
      FailedWith(eval(work("notes.txt"), "text"), kRuntimeFailure, "eval", {work("notes.txt"), "not an HDF5 file"}));

  ASSERT_NO_FATAL_FAILURE(make_mlp_run(work("run")));
  const std::string whole = read_text(work("run") + "/checkpoint.h5");
  write_text(work("truncated.h5"), whole.substr(0, whole.size() / 2));
  EXPECT_TRUE(FailedWith(eval(work("truncated.h5"), "truncated"), kRuntimeFailure, "eval",
                         {work("truncated.h5"), "truncated"}));

  {  // a valid HDF5 file that some other program wrote
    H5File f = H5File::create(work("foreign.h5"));
    f.write_floats("weights", {2, 2}, std::vector<float>{1, 2, 3, 4});
    f.set_attr("/", "author", "someone else");
    f.close();
  }
  EXPECT_TRUE(FailedWith(eval(work("foreign.h5"), "foreign"), kRuntimeFailure, "eval",
                         {work("foreign.h5"), "not a qatlab checkpoint"}));

  {  // a checkpoint from a future qatlab
    H5File f = H5File::create(work("future.h5"));
    f.set_attr("/", "format", "qatlab-checkpoint");
    f.set_attr("/", "format_version", int64_t{99});
    f.close();
  }
  EXPECT_TRUE(FailedWith(eval(work("future.h5"), "future"), kRuntimeFailure, "eval",
                         {work("future.h5"), "version 99", "newer", "upgrade"}));
  // info reads checkpoints the same way.
  EXPECT_TRUE(FailedWith(qatlab({"info", work("future.h5")}, "info-future"), kRuntimeFailure, "info", {"version 99"}));
}

// ------------------------------------------------------------------------------------- NaN losses

TEST_F(CliTest, NanLossStopsNamingEpochAndBatch) {
  const std::string out = work("out");
  const RunResult r = qatlab(train_args(out, concat(mlp_settings(2), {"--lr", "1e30"})));
  ASSERT_TRUE(FailedWith(r, kRuntimeFailure, "train", {"epoch 1", "batch "}));
  const bool named = r.err.find("NaN") != std::string::npos || r.err.find("infinite") != std::string::npos;
  EXPECT_TRUE(named) << r.err;
  EXPECT_FALSE(fs::exists(out + "/checkpoint.h5")) << "a diverged epoch must not be saved";
  EXPECT_FALSE(fs::exists(out + "/metrics.csv"));
}

TEST_F(CliTest, DetectAnomalyNamesTheOpAndLayerOfTheFirstNan) {
  // The same diverging run: without detection the error names the loss and points to --detect-anomaly;
  // with it, an op and the layer it ran in (the MLP's layers are fc1, fc2, ...), and the batch.
  const std::string out = work("out");
  const RunResult plain = qatlab(train_args(out, concat(mlp_settings(2), {"--lr", "1e30"})), "plain");
  ASSERT_TRUE(FailedWith(plain, kRuntimeFailure, "train", {"--detect-anomaly"}));
  const RunResult r = qatlab(train_args(out, concat(mlp_settings(2), {"--lr", "1e30", "--detect-anomaly"})), "detect");
  ASSERT_TRUE(FailedWith(r, kRuntimeFailure, "train", {"anomaly: ", "op '", " in fc", "at epoch 1, batch "}));
  EXPECT_FALSE(fs::exists(out + "/checkpoint.h5")) << "a diverged epoch must not be saved";
  // Chunked steps run their chunks on worker threads: the layer is named there too.
  const RunResult chunked =
      qatlab(train_args(out, concat(mlp_settings(2), {"--lr", "1e30", "--detect-anomaly", "--grad-chunks", "2"})), "chunks");
  ASSERT_TRUE(FailedWith(chunked, kRuntimeFailure, "train", {"anomaly: ", " in fc", "at epoch 1, batch "}));
}

// ------------------------------------------------------------------------ earlier runs are kept safe

TEST_F(CliTest, ExistingRunIsRefusedWithoutOverwrite) {
  const std::string out = work("run");
  ASSERT_NO_FATAL_FAILURE(make_mlp_run(out));
  const std::string ckpt = read_text(out + "/checkpoint.h5"), csv = read_text(out + "/metrics.csv");
  const RunResult r = qatlab(train_args(out, mlp_settings(1)), "again");
  EXPECT_TRUE(FailedWith(r, kUsageError, "train", {"already holds a run", "--overwrite", "--resume"}));
  EXPECT_TRUE(read_text(out + "/checkpoint.h5") == ckpt) << "checkpoint.h5 changed";
  EXPECT_EQ(read_text(out + "/metrics.csv"), csv);
}

TEST_F(CliTest, OverwriteWithInvalidOptionLeavesRunUntouched) {
  const std::string out = work("run");
  ASSERT_NO_FATAL_FAILURE(make_mlp_run(out));
  const std::string ckpt = read_text(out + "/checkpoint.h5"), csv = read_text(out + "/metrics.csv");
  const RunResult r = qatlab(train_args(out, concat(mlp_settings(1), {"--overwrite", "--batch-size", "0"})), "again");
  EXPECT_TRUE(FailedWith(r, kUsageError, "train", {"--batch-size"}));
  EXPECT_TRUE(read_text(out + "/checkpoint.h5") == ckpt) << "checkpoint.h5 changed";
  EXPECT_EQ(read_text(out + "/metrics.csv"), csv);
  // A valid --overwrite run does replace it (so the comparison above could fail).
  ASSERT_TRUE(Succeeded(qatlab(train_args(out, concat(mlp_settings(1), {"--overwrite", "--seed", "5"})), "replace")));
  EXPECT_FALSE(read_text(out + "/checkpoint.h5") == ckpt);
}

TEST_F(CliTest, NanInFirstEpochLeavesExistingCheckpointUntouched) {
  const std::string out = work("run");
  ASSERT_NO_FATAL_FAILURE(make_mlp_run(out));
  const std::string ckpt = read_text(out + "/checkpoint.h5"), csv = read_text(out + "/metrics.csv");
  const RunResult r = qatlab(train_args(out, concat(mlp_settings(1), {"--overwrite", "--lr", "1e30"})), "diverge");
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "train", {"epoch 1"}));
  EXPECT_TRUE(read_text(out + "/checkpoint.h5") == ckpt) << "checkpoint.h5 changed";
  EXPECT_EQ(read_text(out + "/metrics.csv"), csv);
  // Atomic writes leave no temporary files behind either.
  for (const auto& entry : fs::directory_iterator(out))
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

// ------------------------------------------------------------------------------------ config files

TEST_F(CliTest, ConfigFileIsReadAndCommandLineWins) {
  const std::string ini = work("run.ini");
  write_text(ini,
             "# a run described in a file\nmodel = mlp\nepochs = 5\ntrain-limit = 128\ntest-limit = 64\nlr = 0.02\n");
  const std::string out = work("out");
  const RunResult r = qatlab(train_args(out, {"--config", ini, "--epochs", "1"}));
  ASSERT_TRUE(Succeeded(r));
  // From the command line: one epoch, not five.
  EXPECT_EQ(read_csv(out + "/metrics.csv").rows.size(), 1u);
  // From the file: the model (the default is lenet5), the limits and the learning rate.
  const Checkpoint c = load_checkpoint(out + "/checkpoint.h5");
  EXPECT_EQ(c.model_name, "mlp");
  EXPECT_EQ(c.epoch, 1);
  EXPECT_NE(r.out.find("128 train / 64 test"), std::string::npos) << r.out;
  EXPECT_NE(c.config_ini.find("epochs = 1\n"), std::string::npos) << c.config_ini;
  EXPECT_NE(c.config_ini.find("lr = 0.0199999996\n"), std::string::npos) << c.config_ini;
}

// `resume = PATH` in a config file must either resume that run or be refused; training a fresh model
// elsewhere while the file says to resume would silently waste the run.
TEST_F(CliTest, ResumeInConfigFileIsNotIgnored) {
  const std::string run = work("run");
  ASSERT_TRUE(Succeeded(qatlab(train_args(run, concat(mlp_settings(3), {"--stop-after", "1"})), "first")));
  const std::string ini = work("resume.ini");
  write_text(ini, "resume = " + run + "/checkpoint.h5\n");
  const std::string fresh = work("fresh");
  // The data options repeat the checkpoint's (so a run that ignores the file stays small and offline).
  const RunResult r = qatlab({"train", "--config", ini, "--threads", "2", "--progress", "none", "--out", fresh,
                              "--data-dir", data_dir(), "--train-limit", "256", "--test-limit", "64"});
  ASSERT_TRUE(r.exited) << r.describe();
  if (r.exit_code == 0) {
    EXPECT_NE(r.out.find("resuming after epoch 1"), std::string::npos) << r.describe();
    const Checkpoint c = load_checkpoint(fresh + "/checkpoint.h5");
    EXPECT_EQ(c.model_name, "mlp") << "a fresh model of the default kind was trained instead";
    EXPECT_EQ(c.history.size(), 3u);
  } else {
    EXPECT_TRUE(FailedWith(r, kUsageError, "train", {"resume"}));
    EXPECT_FALSE(fs::exists(fresh + "/checkpoint.h5"));
  }
}

TEST_F(CliTest, BadConfigFilesAreUsageErrors) {
  const RunResult missing = qatlab(train_args(work("out"), {"--config", work("absent.ini")}), "missing");
  EXPECT_TRUE(FailedWith(missing, kUsageError, "train", {"cannot read config file", work("absent.ini")}));

  write_text(work("typo.ini"), "model = mlp\nepoch = 2\n");
  const RunResult typo = qatlab(train_args(work("out"), {"--config", work("typo.ini")}), "typo");
  EXPECT_TRUE(FailedWith(typo, kUsageError, "train", {"epoch"}));

  write_text(work("bad.ini"), "model = mlp\nlr = 0\n");
  const RunResult bad = qatlab(train_args(work("out"), {"--config", work("bad.ini")}), "bad");
  EXPECT_TRUE(FailedWith(bad, kUsageError, "train", {"--lr must be > 0"}));
  EXPECT_FALSE(fs::exists(work("out")));
}

// --------------------------------------------------------------------- qat, convert, integer eval

TEST_F(CliTest, QatConvertEvalPipelineAgreesBitForBitInExactMode) {
  make_mlp_run(work("float"));
  const std::string qat = work("qat");
  ASSERT_TRUE(Succeeded(qatlab({"qat", "--from", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--threads",
                                "2", "--progress", "none", "--out", qat, "--epochs", "1", "--lr", "0.01", "--train-limit",
                                "256", "--test-limit", "64", "--wbits", "4", "--abits", "6", "--layer-bits", "fc2=8:8"},
                               "qat")));
  const Checkpoint c = load_checkpoint(qat + "/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "qat");
  EXPECT_EQ(c.model_name, "mlp");

  const RunResult conv = qatlab({"convert", qat + "/checkpoint.h5", "--show"}, "convert");
  ASSERT_TRUE(Succeeded(conv));
  EXPECT_NE(conv.out.find("fully_connected [body.fc1]"), std::string::npos) << conv.describe();
  EXPECT_NE(conv.out.find("codes [-7, 7]"), std::string::npos) << "fc1 has 4-bit weights\n" << conv.describe();
  EXPECT_NE(conv.out.find("codes [-127, 127]"), std::string::npos) << "fc2 is overridden to 8 bits\n" << conv.describe();
  EXPECT_NE(conv.out.find("input: raw 8-bit pixels -> input codes by a 256-entry table per channel (mnist"),
            std::string::npos) << conv.describe();
  ASSERT_TRUE(fs::exists(qat + "/model.int8.h5"));

  // The same model without its pixel table (as files before format version 3) runs from the loader's floats,
  // says so in one line, and gives the same output codes as from the raw pixels.
  Int8Graph no_table = Int8Graph::load(qat + "/model.int8.h5");
  ASSERT_TRUE(no_table.has_pixel_table());
  no_table.ops.front().pixel_codes.clear();
  no_table.ops.front().pixel_mean.clear();
  no_table.ops.front().pixel_std.clear();
  no_table.save(work("no_table.int8.h5"));
  const RunResult from_pixels = qatlab({"eval", qat + "/model.int8.h5", "--data-dir", data_dir(), "--test-limit", "64",
                                        "--threads", "2", "--dump", work("pixels.csv")},
                                       "eval-pixels");
  const RunResult from_floats = qatlab({"eval", work("no_table.int8.h5"), "--data-dir", data_dir(), "--test-limit",
                                        "64", "--threads", "2", "--dump", work("floats.csv")},
                                       "eval-floats");
  ASSERT_TRUE(Succeeded(from_pixels));
  ASSERT_TRUE(Succeeded(from_floats));
  EXPECT_EQ(from_pixels.out.find("note:"), std::string::npos) << from_pixels.describe();
  EXPECT_NE(from_floats.out.find("has no pixel table"), std::string::npos) << from_floats.describe();
  EXPECT_EQ(read_text(work("pixels.csv")), read_text(work("floats.csv")));
  const auto accuracy = [](const std::string& out) { return out.substr(out.find("accuracy"), 16); };
  EXPECT_EQ(accuracy(from_pixels.out), accuracy(from_floats.out));

  const RunResult ev = qatlab({"eval", qat + "/model.int8.h5", "--compare", qat + "/checkpoint.h5", "--data-dir",
                               data_dir(), "--test-limit", "64", "--threads", "2"},
                              "eval");
  ASSERT_TRUE(Succeeded(ev));
  EXPECT_NE(ev.out.find("exact mode: output codes bit-identical on 64 of 64 images"), std::string::npos) << ev.describe();

  const RunResult exact = qatlab({"eval", qat + "/checkpoint.h5", "--exact", "--data-dir", data_dir(), "--test-limit",
                                  "64", "--threads", "2"},
                                 "exact");
  ASSERT_TRUE(Succeeded(exact));
  EXPECT_NE(exact.out.find("exact mode"), std::string::npos) << exact.describe();
  EXPECT_TRUE(Succeeded(qatlab({"info", qat + "/checkpoint.h5"}, "info-qat")));
  const RunResult info = qatlab({"info", qat + "/model.int8.h5"}, "info-int8");
  ASSERT_TRUE(Succeeded(info));
  EXPECT_NE(info.out.find("qatlab-int8-graph"), std::string::npos) << info.describe();
}

// --weight-range mid-rise: the checkpoint keeps the setting, and the integer model's 2-bit layers take the
// odd codes [-3, 3] (the first layer too here: no override), matching the simulation in exact mode.
TEST_F(CliTest, QatWithMidRiseWeightsConvertsToOddCodes) {
  make_mlp_run(work("float"));
  const RunResult r = qatlab({"qat", "--from", work("float") + "/checkpoint.h5", "--out", work("mid"), "--data-dir",
                              data_dir(), "--threads", "2", "--progress", "none", "--epochs", "1", "--lr", "0.01",
                              "--train-limit", "256", "--test-limit", "64", "--wbits", "2", "--abits", "4", "--wquant",
                              "lsq", "--weight-range", "mid-rise"},
                             "mid");
  ASSERT_TRUE(Succeeded(r));
  const QConfig q = stored_qconfig(load_checkpoint(work("mid") + "/checkpoint.h5"));
  EXPECT_EQ(q.weight_range(), WeightRange::MidRise);
  const RunResult conv = qatlab({"convert", work("mid") + "/checkpoint.h5", "--show"}, "convert-mid");
  ASSERT_TRUE(Succeeded(conv));
  EXPECT_NE(conv.out.find("odd codes [-3, 3]"), std::string::npos) << conv.describe();
  const RunResult shown = qatlab({"inspect", work("mid") + "/model.int8.h5"}, "inspect-mid");
  ASSERT_TRUE(Succeeded(shown));
  EXPECT_NE(shown.out.find("mid-rise (odd codes)"), std::string::npos) << shown.describe();
  const RunResult ev = qatlab({"eval", work("mid") + "/model.int8.h5", "--compare", work("mid") + "/checkpoint.h5",
                               "--data-dir", data_dir(), "--test-limit", "64", "--threads", "2"},
                              "mid-eval");
  ASSERT_TRUE(Succeeded(ev));
  EXPECT_NE(ev.out.find("exact mode: output codes bit-identical on 64 of 64 images"), std::string::npos) << ev.describe();
}

// qatlab teacher-cache writes the teacher's outputs; qat --teacher-cache reads them and trains exactly as
// the run that computes the teacher (the same metrics and weights); a cache made for other data is refused
// naming what differs, and the cache needs --distill.
TEST_F(CliTest, TeacherCacheGivesTheSameDistilledRun) {
  make_mlp_run(work("float"));
  const std::string teacher = work("float") + "/checkpoint.h5";
  const Args data{"--data-dir", data_dir(), "--train-limit", "256", "--threads", "2"};
  ASSERT_TRUE(Succeeded(qatlab(concat({"teacher-cache", "--distill", teacher, "--out", work("cache.h5")}, data), "build")));
  const Args qat{"qat", "--from", teacher, "--distill", teacher, "--distill-weight", "0.5", "--progress", "none",
                 "--epochs", "1", "--lr", "0.01", "--test-limit", "64", "--wbits", "4", "--abits", "4"};
  ASSERT_TRUE(Succeeded(qatlab(concat(concat(qat, data), {"--out", work("live")}), "live")));
  const RunResult cached =
      qatlab(concat(concat(qat, data), {"--out", work("cached"), "--teacher-cache", work("cache.h5")}), "cached");
  ASSERT_TRUE(Succeeded(cached));
  const auto without_timing = [](const std::string& csv) {  // metrics.csv's first six columns, epoch to test_acc
    std::string out;
    std::istringstream in(csv);
    for (std::string line; std::getline(in, line);) {
      size_t at = 0;
      for (int k = 0; k < 6 && at != std::string::npos; ++k) at = line.find(',', at + (k ? 1 : 0));
      out += line.substr(0, at) + "\n";
    }
    return out;
  };
  EXPECT_EQ(without_timing(read_text(work("cached") + "/metrics.csv")),
            without_timing(read_text(work("live") + "/metrics.csv")));
  const Checkpoint a = load_checkpoint(work("live") + "/checkpoint.h5"), b = load_checkpoint(work("cached") + "/checkpoint.h5");
  ASSERT_EQ(a.model_state.size(), b.model_state.size());
  for (size_t i = 0; i < a.model_state.size(); ++i)
    EXPECT_EQ(a.model_state[i].second.to_vector(), b.model_state[i].second.to_vector()) << a.model_state[i].first;
  // Made for 256 training images, not for 128; and no cache without a teacher.
  EXPECT_TRUE(FailedWith(qatlab(concat(qat, {"--data-dir", data_dir(), "--train-limit", "128", "--threads", "2", "--out",
                                             work("fewer"), "--teacher-cache", work("cache.h5")}),
                                "fewer"),
                         kRuntimeFailure, "qat", {"cache.h5", "made for training images 256, this run has 128"}));
  EXPECT_TRUE(FailedWith(qatlab({"qat", "--from", teacher, "--teacher-cache", work("cache.h5"), "--out", work("none")},
                                "no-distill"),
                         kUsageError, "qat", {"--teacher-cache needs --distill"}));
  // inspect says what the file was made for.
  const RunResult shown = qatlab({"inspect", work("cache.h5")}, "inspect");
  ASSERT_TRUE(Succeeded(shown));
  for (const char* line : {"teacher cache: the outputs of 1 teacher network", "256 training images, 10 classes",
                           "(256, 1, 10) float32"})
    EXPECT_NE(shown.out.find(line), std::string::npos) << line << "\n" << shown.describe();
  EXPECT_TRUE(FailedWith(qatlab({"inspect", work("cache.h5"), "--dot", work("g.dot")}, "inspect-dot"), kUsageError,
                         "inspect", {"is a teacher cache", "--dot need"}));
  // Asked again, an up-to-date cache is kept; one made for other data needs --overwrite to be replaced.
  const RunResult again = qatlab(concat({"teacher-cache", "--distill", teacher, "--out", work("cache.h5")}, data), "again");
  ASSERT_TRUE(Succeeded(again));
  EXPECT_NE(again.out.find("is up to date"), std::string::npos) << again.describe();
  const Args fewer{"teacher-cache", "--distill", teacher, "--out", work("cache.h5"), "--data-dir", data_dir(),
                   "--train-limit", "128", "--threads", "2"};
  EXPECT_TRUE(FailedWith(qatlab(fewer, "other-data"), kUsageError, "teacher-cache", {"--out", "exists"}));
  EXPECT_EQ(qatlab(concat(fewer, {"--check"}), "check-stale").exit_code, 1);
  EXPECT_EQ(qatlab(concat(concat({"teacher-cache", "--distill", teacher, "--out", work("cache.h5")}, data), {"--check"}),
                   "check-fresh").exit_code,
            0);
  ASSERT_TRUE(Succeeded(qatlab(concat(fewer, {"--overwrite"}), "rebuilt")));
  EXPECT_TRUE(Succeeded(qatlab(concat(concat(qat, {"--data-dir", data_dir(), "--train-limit", "128", "--threads", "2"}),
                                      {"--out", work("fewer2"), "--teacher-cache", work("cache.h5")}),
                               "fewer2")));
}

// Progressive fine-tuning: --from a QAT checkpoint quantizes its float weights again at other bits.
TEST_F(CliTest, QatFromAQatCheckpointRequantizesItsWeights) {
  make_mlp_run(work("float"));
  const Args common{"--data-dir", data_dir(), "--threads", "2", "--progress", "none", "--epochs", "1",
                    "--lr", "0.01", "--train-limit", "256", "--test-limit", "64"};
  ASSERT_TRUE(Succeeded(qatlab(concat({"qat", "--from", work("float") + "/checkpoint.h5", "--out", work("w4"), "--wbits",
                                       "4", "--abits", "4"},
                                      common),
                               "w4")));
  const RunResult r = qatlab(concat({"qat", "--from", work("w4") + "/checkpoint.h5", "--out", work("w2"), "--wbits", "2",
                                     "--abits", "4", "--weight-range", "full"},
                                    common),
                             "w2");
  ASSERT_TRUE(Succeeded(r));
  const Checkpoint c = load_checkpoint(work("w2") + "/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "qat");
  EXPECT_EQ(c.model_name, "mlp");
  const QConfig q = stored_qconfig(c);
  EXPECT_EQ(q.weight.scheme.bits, 2);
  EXPECT_EQ(q.weight_range(), WeightRange::Full);
  const RunResult conv = qatlab({"convert", work("w2") + "/checkpoint.h5", "--show"}, "convert-w2");
  ASSERT_TRUE(Succeeded(conv));
  EXPECT_NE(conv.out.find("codes [-2, 1]"), std::string::npos) << conv.describe();
  // An integer model file is no starting point.
  EXPECT_TRUE(FailedWith(qatlab(concat({"qat", "--from", work("w2") + "/model.int8.h5", "--out", work("x")}, common),
                                "from-int8"),
                         kRuntimeFailure, "qat", {"model.int8.h5: not a qatlab checkpoint"}));
}

TEST_F(CliTest, QatResumeIsBitIdentical) {
  make_mlp_run(work("float"));
  const Args common{"qat", "--from", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--threads", "2",
                    "--progress", "none", "--epochs", "2", "--lr", "0.01", "--train-limit", "256", "--test-limit", "64",
                    "--wbits", "4", "--freeze-bn-after", "1", "--freeze-observers-after", "1"};
  ASSERT_TRUE(Succeeded(qatlab(concat(common, {"--out", work("straight")}), "straight")));
  ASSERT_TRUE(Succeeded(qatlab(concat(common, {"--out", work("split"), "--stop-after", "1"}), "first-half")));
  ASSERT_TRUE(Succeeded(qatlab({"qat", "--resume", work("split") + "/checkpoint.h5", "--threads", "2", "--progress",
                                "none", "--data-dir", data_dir()},
                               "second-half")));
  ExpectSameTraining(load_checkpoint(work("straight") + "/checkpoint.h5"), load_checkpoint(work("split") + "/checkpoint.h5"));
}

// Distilled from the float model: the resumed run reloads its teacher from the stored settings and ends
// where the uninterrupted one does.
TEST_F(CliTest, DistilledQatResumeIsBitIdentical) {
  make_mlp_run(work("float"));
  const std::string teacher = work("float") + "/checkpoint.h5";
  const Args common{"qat", "--from", teacher, "--data-dir", data_dir(), "--threads", "2", "--progress", "none",
                    "--epochs", "2", "--lr", "0.01", "--train-limit", "256", "--test-limit", "64", "--wbits", "4",
                    "--distill", teacher, "--distill-weight", "0.7", "--distill-temperature", "2"};
  ASSERT_TRUE(Succeeded(qatlab(concat(common, {"--out", work("straight")}), "straight")));
  ASSERT_TRUE(Succeeded(qatlab(concat(common, {"--out", work("split"), "--stop-after", "1"}), "first-half")));
  ASSERT_TRUE(Succeeded(qatlab({"qat", "--resume", work("split") + "/checkpoint.h5", "--threads", "2", "--progress",
                                "none", "--data-dir", data_dir()},
                               "second-half")));
  const Checkpoint straight = load_checkpoint(work("straight") + "/checkpoint.h5");
  ExpectSameTraining(straight, load_checkpoint(work("split") + "/checkpoint.h5"));
  EXPECT_EQ(ini_value(straight.config_ini, "distill"), teacher);
  // The same run without the teacher trains to other weights.
  Args plain(common.begin(), common.end() - 6);
  ASSERT_TRUE(Succeeded(qatlab(concat(plain, {"--out", work("plain")}), "plain")));
  const Checkpoint p = load_checkpoint(work("plain") + "/checkpoint.h5");
  EXPECT_NE(p.model_state[0].second.to_vector(), straight.model_state[0].second.to_vector());

  // Distillation options without a teacher, or out of range, or a teacher that is not a float model.
  const Args base{"qat", "--from", teacher, "--data-dir", data_dir(), "--threads", "2", "--progress", "none",
                  "--out", work("bad"), "--epochs", "1", "--train-limit", "64"};
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--distill-weight", "0.5"}), "no-teacher"), kUsageError, "qat",
                         {"--distill-weight and --distill-temperature need --distill"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--distill", teacher, "--distill-weight", "1.5"}), "weight"), kUsageError,
                         "qat", {"--distill-weight must be in (0, 1], got 1.5"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--distill", work("straight") + "/checkpoint.h5"}), "qat-teacher"),
                         kUsageError, "qat", {"is a 'qat' checkpoint; the teacher is a float one"}));
  EXPECT_FALSE(fs::exists(work("bad")));
}

// Two teachers (--distill repeated): their ensemble teaches, the run reports its accuracy, stores both in
// its settings and resumes from them to the uninterrupted run's weights; a teacher named twice is refused.
TEST_F(CliTest, AnEnsembleOfTeachersDistilsAndResumes) {
  make_mlp_run(work("float"));
  ASSERT_TRUE(Succeeded(qatlab(train_args(work("float2"), concat(mlp_settings(1), {"--seed", "2"})), "float2")));
  const std::string a = work("float") + "/checkpoint.h5", b = work("float2") + "/checkpoint.h5";
  const Args common{"train", "--data-dir", data_dir(), "--threads", "2", "--progress", "none", "--model", "mlp",
                    "--epochs", "2", "--train-limit", "256", "--test-limit", "64", "--seed", "3",
                    "--distill", a, "--distill", b, "--distill-weight", "0.5", "--distill-temperature", "4"};
  const RunResult straight = qatlab(concat(common, {"--out", work("straight")}), "straight");
  ASSERT_TRUE(Succeeded(straight));
  EXPECT_NE(straight.out.find("teacher (2 networks, logits averaged): test accuracy "), std::string::npos) << straight.out;
  ASSERT_TRUE(Succeeded(qatlab(concat(common, {"--out", work("split"), "--stop-after", "1"}), "first-half")));
  ASSERT_TRUE(Succeeded(qatlab({"train", "--resume", work("split") + "/checkpoint.h5", "--threads", "2", "--progress",
                                "none", "--data-dir", data_dir()},
                               "second-half")));
  const Checkpoint done = load_checkpoint(work("straight") + "/checkpoint.h5");
  ExpectSameTraining(done, load_checkpoint(work("split") + "/checkpoint.h5"));
  EXPECT_NE(done.config_ini.find("distill = " + a + "\ndistill = " + b + "\n"), std::string::npos) << done.config_ini;
  // Distilled from the first teacher alone, the run trains to other weights.
  Args one(common.begin(), common.end());
  one.erase(std::find(one.begin(), one.end(), b) - 1, std::find(one.begin(), one.end(), b) + 1);
  ASSERT_TRUE(Succeeded(qatlab(concat(one, {"--out", work("one")}), "one-teacher")));
  EXPECT_NE(load_checkpoint(work("one") + "/checkpoint.h5").model_state[0].second.to_vector(),
            done.model_state[0].second.to_vector());

  EXPECT_TRUE(FailedWith(qatlab(concat(one, {"--distill", a, "--out", work("twice")}), "twice"), kUsageError, "train",
                         {"is named twice"}));
  EXPECT_FALSE(fs::exists(work("twice")));
}

TEST_F(CliTest, BadQuantizationSettingsAreUsageErrors) {
  make_mlp_run(work("float"));
  const Args base{"qat", "--from", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--threads", "2",
                  "--progress", "none", "--out", work("qat"), "--epochs", "1", "--train-limit", "64"};
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--wbits", "9"}), "wbits"), kUsageError, "qat", {"--wbits must be in 2..8, got 9"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--abits", "1"}), "abits"), kUsageError, "qat", {"--abits must be in 2..8, got 1"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--observer", "magic"}), "observer"), kUsageError, "qat", {"magic"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--layer-bits", "fc1"}), "layer-bits"), kUsageError, "qat", {"NAME=W:A"}));
  EXPECT_TRUE(FailedWith(qatlab(concat(base, {"--weight-range", "wide"}), "weight-range"), kUsageError, "qat",
                         {"--weight-range must be narrow, full or mid-rise, got 'wide'"}));
  EXPECT_FALSE(fs::exists(work("qat")));
  // convert takes QAT checkpoints only; a float one gets a hint.
  EXPECT_TRUE(FailedWith(qatlab({"convert", work("float") + "/checkpoint.h5"}, "convert-float"), kUsageError, "convert",
                         {"qatlab qat --from"}));
}

TEST_F(CliTest, NanDuringQatStopsWithEpochAndBatch) {
  make_mlp_run(work("float"));
  const RunResult r = qatlab({"qat", "--from", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--threads",
                              "2", "--progress", "none", "--out", work("qat"), "--epochs", "1", "--lr", "1e30",
                              "--train-limit", "256"},
                             "nan");
  EXPECT_TRUE(FailedWith(r, kRuntimeFailure, "qat", {"epoch 1, batch"}));
}

TEST_F(CliTest, PtqCalibratesConvertsAndMatchesExactMode) {
  make_mlp_run(work("float"));
  const std::string out = work("ptq");
  const RunResult r = qatlab({"ptq", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--threads", "2",
                              "--calib-batches", "4", "--wbits", "4", "--abits", "8", "--observer", "minmax",
                              "--test-limit", "64", "--out", out},
                             "ptq");
  ASSERT_TRUE(Succeeded(r));
  EXPECT_NE(r.out.find("calibrated on 256 images"), std::string::npos) << r.describe();
  const RunResult ev = qatlab({"eval", out + "/model.int8.h5", "--compare", out + "/checkpoint.h5", "--data-dir",
                               data_dir(), "--test-limit", "64", "--threads", "2"},
                              "eval");
  ASSERT_TRUE(Succeeded(ev));
  EXPECT_NE(ev.out.find("bit-identical on 64 of 64 images"), std::string::npos) << ev.describe();
  EXPECT_TRUE(FailedWith(qatlab({"ptq", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--aquant", "lsq",
                                 "--out", work("ptq-lsq")},
                                "ptq-lsq"),
                         kUsageError, "ptq", {"qatlab qat"}));
  EXPECT_TRUE(FailedWith(qatlab({"ptq", work("float") + "/checkpoint.h5", "--data-dir", data_dir(), "--out", out}, "again"),
                         kUsageError, "ptq", {"already holds a run"}));
}

}  // namespace
}  // namespace qatlab::testing
