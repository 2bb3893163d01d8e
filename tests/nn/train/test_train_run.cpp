// test_train_run.cpp: the training run as a library (train_model, nn/train/train_run.h), without the
// command line: it learns a small task in memory, writing no file; a run stopped after an epoch and
// resumed from its checkpoint ends on the weights of the run that was not stopped, bit for bit; a
// checkpoint of another network or optimizer is refused. The task: quadrant_data.h.
#include "nn/train/train_run.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "nn/train/evaluate.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/temp_dir.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;


// A run of the quadrant network, freshly initialised from seed 1, for `epochs` epochs of SGD.
TrainRun quadrant_run(const DataBundle& data, int64_t epochs) {
  TrainRun run;
  run.description = parse_model_description(test::kQuadrantNetwork, "the test's network");
  Rng rng(1);
  run.model = build_model(run.description, data.spec, rng);
  run.settings.epochs = epochs;
  run.settings.batch_size = 32;
  run.settings.lr = 0.05f;
  run.data = &data;
  return run;
}

// Records what the loop tells a monitor after each epoch.
struct EpochRecorder : TrainMonitor {
  std::vector<std::pair<int64_t, int64_t>> epochs;  // (epoch, of epochs)
  std::vector<MetricsRow> rows;
  void epoch_done(int64_t epoch, int64_t of, const MetricsRow& row) override {
    epochs.emplace_back(epoch, of);
    rows.push_back(row);
  }
};

TEST(TrainModel, LearnsInMemoryWithoutWritingAFile) {
  const DataBundle data = test::quadrant_data();
  TrainRun run = quadrant_run(data, 3);
  EpochRecorder monitor;
  run.monitor = &monitor;
  DataLoader test(data.test, loader_options(data, 256, 0, false));  // as the run evaluates
  const double before = evaluate(*run.model, test).accuracy;
  const test::TempDir cwd("train_run_cwd");
  const fs::path was = fs::current_path();
  fs::current_path(cwd.path());
  const TrainOutcome outcome = train_model(run);
  fs::current_path(was);
  ASSERT_EQ(outcome.history.size(), 3u);
  EXPECT_EQ(outcome.epochs_done, 3);
  EXPECT_FALSE(outcome.stopped_early);
  EXPECT_LT(before, 0.5);                                  // 4 classes: chance is 0.25
  EXPECT_GT(outcome.history.back().at("test_acc"), 0.9);
  EXPECT_DOUBLE_EQ(evaluate(*run.model, test).accuracy, outcome.history.back().at("test_acc"));
  EXPECT_TRUE(fs::is_empty(cwd.path()));                  // no out_dir: nothing written
  // The monitor saw every epoch's row, test accuracy included, as the history keeps it.
  EXPECT_EQ(monitor.epochs, (std::vector<std::pair<int64_t, int64_t>>{{1, 3}, {2, 3}, {3, 3}}));
  EXPECT_EQ(monitor.rows, outcome.history);
}

TEST(TrainModel, AResumedRunEndsOnTheWeightsOfTheRunThatWasNotStopped) {
  const DataBundle data = test::quadrant_data();
  const test::TempDir dir("train_run_resume");
  TrainRun whole = quadrant_run(data, 2);
  whole.out_dir = dir / "whole";
  train_model(whole);

  TrainRun first = quadrant_run(data, 2);
  first.out_dir = dir / "stopped";
  first.settings.stop_after = 1;
  const TrainOutcome stopped = train_model(first);
  EXPECT_TRUE(stopped.stopped_early);
  EXPECT_EQ(stopped.epochs_done, 1);

  const Checkpoint saved = load_checkpoint(dir / "stopped/checkpoint.h5");
  ASSERT_EQ(saved.epoch, 1);
  TrainRun rest = quadrant_run(data, 2);  // fresh weights: the resumed state replaces them
  rest.out_dir = dir / "stopped";
  rest.resume_from = &saved;
  const TrainOutcome resumed = train_model(rest);
  EXPECT_EQ(resumed.history.size(), 2u);  // the saved epoch and this one

  const Checkpoint a = load_checkpoint(dir / "whole/checkpoint.h5"), b = load_checkpoint(dir / "stopped/checkpoint.h5");
  ASSERT_EQ(a.model_state.size(), b.model_state.size());
  for (size_t i = 0; i < a.model_state.size(); ++i) {
    const Tensor& x = a.model_state[i].second;
    const Tensor& y = b.model_state[i].second;
    ASSERT_EQ(x.shape(), y.shape()) << a.model_state[i].first;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.numel() * sizeof(float)), 0) << a.model_state[i].first;
  }
  EXPECT_EQ(a.history.back().at("test_acc"), b.history.back().at("test_acc"));
}

TEST(TrainModel, ADistilledRunLearnsFromItsTeacherWhichStaysUnchanged) {
  const DataBundle data = test::quadrant_data();
  DataLoader test(data.test, loader_options(data, 256, 0, false));
  TrainRun teacher_run = quadrant_run(data, 3);
  train_model(teacher_run);
  const ModulePtr teacher = teacher_run.model;
  ASSERT_GT(evaluate(*teacher, test).accuracy, 0.9);
  std::vector<std::vector<float>> before;
  for (const auto& [name, t] : teacher->named_parameters()) before.push_back(t.to_vector());

  TrainRun plain = quadrant_run(data, 2);
  train_model(plain);
  // The teacher's outputs alone (weight 1), softened; then blended with the labels, on chunked batches.
  for (const auto& [weight, chunks] : {std::pair<float, int64_t>{1.0f, 0}, {0.5f, 2}}) {
    TrainRun student = quadrant_run(data, 2);
    student.teacher = teacher;
    student.settings.distill_weight = weight;
    student.settings.distill_temperature = 2.0f;
    student.settings.grad_chunks = chunks;
    const TrainOutcome outcome = train_model(student);
    EXPECT_GT(outcome.history.back().at("test_acc"), 0.9) << weight;
    // It trained on another loss than the plain run's.
    EXPECT_NE(student.model->named_parameters()[0].second.to_vector(), plain.model->named_parameters()[0].second.to_vector());
  }
  std::vector<std::vector<float>> after;
  for (const auto& [name, t] : teacher->named_parameters()) after.push_back(t.to_vector());
  EXPECT_EQ(before, after);
  EXPECT_FALSE(teacher->training());

  TrainRun bad = quadrant_run(data, 1);
  bad.teacher = teacher;
  bad.settings.distill_weight = 0.0f;
  try {
    train_model(bad);
    ADD_FAILURE() << "a distillation weight of 0 was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("distillation weight 0"), std::string::npos) << e.what();
  }
}

TEST(TrainModel, ACheckpointOfAnotherNetworkOrOptimizerIsNotResumed) {
  const DataBundle data = test::quadrant_data();
  const test::TempDir dir("train_run_refuse");
  TrainRun run = quadrant_run(data, 1);
  run.out_dir = dir / "run";
  train_model(run);
  const Checkpoint saved = load_checkpoint(dir / "run/checkpoint.h5");

  const ModelDescription network = parse_model_description(test::kQuadrantNetwork, "the test's network");
  EXPECT_NO_THROW(check_resumable(saved, network, run.settings));
  TrainSettings adam = run.settings;
  adam.optimizer = "adam";
  try {
    check_resumable(saved, network, adam);
    FAIL() << "another optimizer was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("was trained with sgd, not adam"), std::string::npos) << e.what();
  }
  ModelDescription other = network;
  other.name = "other-net";
  EXPECT_THROW(check_resumable(saved, other, run.settings), std::invalid_argument);
  TrainRun wrong = quadrant_run(data, 2);
  wrong.settings = adam;
  wrong.resume_from = &saved;
  EXPECT_THROW(train_model(wrong), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
