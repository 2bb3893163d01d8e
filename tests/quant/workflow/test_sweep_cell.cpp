// test_sweep_cell.cpp: the library's workflow without the command line: a float model trained by
// train_model (nn/train/train_run.h) on a small synthetic task, then sweep cells run on it by
// run_sweep_cell, post-training quantization and LSQ training, each converted to the integer graph and
// evaluated; a cell that fails keeps its error in its result. The task: tests/nn/train/quadrant_data.h.
#include "quant/workflow/sweep_cell.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/temp_dir.h"
#include "nn/train/train_run.h"
#include "quant/qat/qconfig_data.h"
#include "quant/workflow/checkpoint_model.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

using test::kQuadrantNetwork;
using test::quadrant_data;
using test::read_text;

// The float model every cell below quantizes: trained for 3 epochs by the library's training run into
// DIR/float (checkpoint.h5 and the run's other files).
class SweepCellTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("sweep_cell");
    data_ = new DataBundle(quadrant_data());
    TrainRun run;
    run.description = parse_model_description(kQuadrantNetwork, "the test's network");
    Rng rng(1);
    run.model = build_model(run.description, data_->spec, rng);
    run.settings.epochs = 3;
    run.settings.batch_size = 32;
    run.settings.lr = 0.05f;
    run.data = data_;
    run.out_dir = *dir_ / "float";
    run.config_ini = "model = quadrant-net\n";
    run.command_line = "test_sweep_cell";
    outcome_ = new TrainOutcome(train_model(run));
  }
  static void TearDownTestSuite() {
    delete outcome_;
    delete data_;
    delete dir_;
  }

  SweepCellSettings cell(const std::string& method, int wbits, int abits, const std::string& id) const {
    SweepCellSettings s;
    s.cell = {method, "per-channel", {wbits, abits}, 1};
    s.float_checkpoint = *dir_ / "float/checkpoint.h5";
    const auto [first, last] = first_and_last_layers(parse_model_description(kQuadrantNetwork, "the test's network"), data_->spec);
    s.layer_bits = {first + "=8:8", last + "=8:8"};
    s.qat_epochs = 1;
    s.qat_lr = 0.01f;
    s.batch_size = 32;
    s.calib_batches = 4;
    s.dir = *dir_ / id;
    s.key = id + " key";
    s.config_ini = "wbits = " + std::to_string(wbits) + "\n";
    s.command_line = "test_sweep_cell " + id;
    return s;
  }

  static test::TempDir* dir_;
  static DataBundle* data_;
  static TrainOutcome* outcome_;
};
test::TempDir* SweepCellTest::dir_ = nullptr;
DataBundle* SweepCellTest::data_ = nullptr;
TrainOutcome* SweepCellTest::outcome_ = nullptr;

TEST_F(SweepCellTest, TheLibraryTrainingRunLearnsTheTaskAndWritesItsFiles) {
  ASSERT_EQ(outcome_->history.size(), 3u);
  EXPECT_EQ(outcome_->epochs_done, 3);
  EXPECT_GT(outcome_->history.back().at("test_acc"), 0.9);  // 4 classes: chance is 0.25
  for (const char* f : {"checkpoint.h5", "metrics.csv", "curve.svg", "summary.json"})
    EXPECT_TRUE(fs::exists(*dir_ / ("float/" + std::string(f)))) << f;
  const Checkpoint c = load_checkpoint(*dir_ / "float/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "float");
  EXPECT_EQ(c.model_name, "quadrant-net");
  EXPECT_EQ(c.epoch, 3);
  EXPECT_EQ(c.dataset, "quadrants");
  EXPECT_EQ(c.config_ini, "model = quadrant-net\n");
  EXPECT_EQ(c.metadata.at("command"), "test_sweep_cell");
}

// The schedule a table shows beside each row says every setting of the cell's training.
TEST_F(SweepCellTest, TheScheduleNamesEveryTrainingSetting) {
  SweepCellSettings ptq = cell("ptq-minmax", 2, 8, "p");
  EXPECT_EQ(sweep_cell_schedule(ptq), "4 calibration batches of 32");
  ptq.weight_range = WeightRange::Full;
  EXPECT_EQ(sweep_cell_schedule(ptq), "4 calibration batches of 32, full-range weights");
  ptq.weight_range = WeightRange::MidRise;
  EXPECT_EQ(sweep_cell_schedule(ptq), "4 calibration batches of 32, mid-rise weights");
  SweepCellSettings qat = cell("lsq", 4, 4, "q");
  qat.qat_epochs = 40;
  qat.qat_lr = 0.005f;
  qat.qat_warmup_epochs = 1;
  qat.lsq_init = LsqInit::Mse;
  qat.distill_weight = 1.0f;
  EXPECT_EQ(sweep_cell_schedule(qat),
            "40 epochs, lr 0.005 cosine, batch 32, weight decay 0.0005, 1 warm-up epoch, lsq init mse, distilled from "
            "the float model (weight 1, temperature 1)");
  EXPECT_EQ(sweep_cell_train_settings(qat).warmup_epochs, 1);
  qat.qat_warmup_epochs = 2;
  EXPECT_NE(sweep_cell_schedule(qat).find(", 2 warm-up epochs,"), std::string::npos) << sweep_cell_schedule(qat);
  qat.freeze_bn_after = 37;  // 0-based: the 38th epoch is the first with frozen statistics
  EXPECT_NE(sweep_cell_schedule(qat).find(", 2 warm-up epochs, batch norm frozen from epoch 38, lsq init mse"),
            std::string::npos)
      << sweep_cell_schedule(qat);
  qat.lsq_step_bounds = 8.0f;
  qat.augment = "pad-crop:4,flip";
  qat.weight_range = WeightRange::Full;
  EXPECT_TRUE(sweep_cell_schedule(qat).ends_with(
      "lsq init mse, lsq weight steps bounded (k 8), distilled from the float model (weight 1, temperature 1), augment "
      "pad-crop:4,flip, full-range weights"))
      << sweep_cell_schedule(qat);
}

TEST_F(SweepCellTest, APtqCellQuantizesConvertsAndEvaluates) {
  const SweepCellSettings s = cell("ptq-minmax", 8, 8, "ptq-w8a8");
  const CellResult r = run_sweep_cell(s, [] { return *data_; });
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.cell.id(), "ptq-minmax-per-channel-w8a8-s1");
  EXPECT_EQ(r.key, s.key);
  EXPECT_GT(r.sim_accuracy, 0.85);
  EXPECT_NEAR(r.int_accuracy, r.sim_accuracy, 0.05);
  EXPECT_GT(r.top1_agreement, 0.95);  // W8A8: the integer graph is the simulation but for rounding
  EXPECT_EQ(r.int_file_bytes, static_cast<int64_t>(fs::file_size(s.dir + "/model.int8.h5")));

  const Checkpoint c = load_checkpoint(s.dir + "/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "qat");
  EXPECT_EQ(c.config_ini, s.config_ini);
  const QConfig q = qconfig_from_data(c.qconfig, "the cell's checkpoint");
  EXPECT_EQ(q.activation.observer, ObserverKind::MinMax);
  EXPECT_EQ(q.weight.scheme.bits, 8);
  EXPECT_TRUE(q.weight.scheme.per_channel);
  EXPECT_NE(read_text(s.dir + "/log.txt").find("ptq quadrant-net: calibrated on 128 images"), std::string::npos);
  // The result file holds what the call returned, and a sweep run again reads it back as finished.
  const std::optional<CellResult> back = read_cell_result(s.dir + "/result.ini", s.cell);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->key, s.key);
  EXPECT_TRUE(back->ok);
  EXPECT_NEAR(back->int_accuracy, r.int_accuracy, 1e-9);
}

TEST_F(SweepCellTest, AnLsqCellTrainsWithLearnedStepsAndKeepsTheFirstAndLastLayerAt8Bits) {
  const SweepCellSettings s = cell("lsq", 4, 4, "lsq-w4a4");
  const CellResult r = run_sweep_cell(s, [] { return *data_; });
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_GT(r.sim_accuracy, 0.8);
  EXPECT_GT(r.top1_agreement, 0.9);
  const Checkpoint c = load_checkpoint(s.dir + "/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "qat");
  EXPECT_EQ(c.epoch, 1);  // one epoch of QAT
  EXPECT_EQ(c.config_ini, s.config_ini);
  EXPECT_EQ(c.metadata.at("command"), s.command_line);
  const QConfig q = qconfig_from_data(c.qconfig, "the cell's checkpoint");
  EXPECT_EQ(q.weight.method, QuantizerMethod::Lsq);
  EXPECT_EQ(q.activation.method, QuantizerMethod::Lsq);
  EXPECT_EQ(q.activation.scheme.bits, 4);
  // The first conv and the linear layer keep 8-bit weights (the sweep's first-last policy), the second
  // conv has the cell's 4 bits ([-7, 7], narrow range).
  const ModulePtr model = model_from_any_checkpoint(c);
  std::vector<int32_t> weight_qmax;
  for (const auto& [name, m] : model->named_modules(model))
    if (const QatLayer* layer = m->as<QatLayer>()) weight_qmax.push_back(layer->weight_quant().qparams().quant_max);
  EXPECT_EQ(weight_qmax, (std::vector<int32_t>{127, 7, 127}));
  const std::string log = read_text(s.dir + "/log.txt");
  EXPECT_NE(log.find("quantization:"), std::string::npos) << log;
  EXPECT_NE(log.find("epoch 1/1"), std::string::npos) << log;
}

// A QAT cell interrupted after an epoch (a session's end) goes on from that epoch's checkpoint when run
// again with the same key, and ends on the model and result of the run that was not interrupted; with
// another key it starts over. sweep_cell_state (`sweep --status`) says which of these a run will do.
TEST_F(SweepCellTest, AnInterruptedQatCellGoesOnFromItsLastEpochToTheStraightResult) {
  SweepCellSettings straight = cell("lsq", 4, 4, "straight");
  straight.qat_epochs = 2;
  const CellResult a = run_sweep_cell(straight, [] { return *data_; });
  ASSERT_TRUE(a.ok) << a.error;

  SweepCellSettings s = straight;
  s.dir = *dir_ / "interrupted";
  s.stop_after = 1;
  EXPECT_EQ(sweep_cell_state(s).kind, SweepCellState::Kind::New);
  const CellResult first = run_sweep_cell(s, [] { return *data_; });
  EXPECT_FALSE(first.ok);
  const SweepCellState stopped = sweep_cell_state(s);
  EXPECT_EQ(stopped.kind, SweepCellState::Kind::Interrupted);
  EXPECT_EQ(stopped.epoch, 1);
  EXPECT_GT(stopped.last_epoch_seconds, 0.0);
  EXPECT_NE(first.error.find("unfinished"), std::string::npos) << first.error;
  EXPECT_FALSE(fs::exists(s.dir + "/result.ini"));  // not a result: the sweep runs the cell again
  EXPECT_EQ(load_checkpoint(s.dir + "/checkpoint.h5").epoch, 1);

  s.stop_after = 0;
  const CellResult b = run_sweep_cell(s, [] { return *data_; });
  ASSERT_TRUE(b.ok) << b.error;
  const SweepCellState done = sweep_cell_state(s);
  ASSERT_EQ(done.kind, SweepCellState::Kind::Finished);
  ASSERT_TRUE(done.result && done.result->ok);
  EXPECT_EQ(done.result->int_accuracy, b.int_accuracy);
  EXPECT_NE(read_text(s.dir + "/log.txt").find("resuming after epoch 1"), std::string::npos) << read_text(s.dir + "/log.txt");
  EXPECT_EQ(b.sim_accuracy, a.sim_accuracy);
  EXPECT_EQ(b.int_accuracy, a.int_accuracy);
  const Checkpoint ca = load_checkpoint(straight.dir + "/checkpoint.h5"), cb = load_checkpoint(s.dir + "/checkpoint.h5");
  EXPECT_EQ(cb.epoch, 2);
  ASSERT_EQ(ca.model_state.size(), cb.model_state.size());
  for (size_t i = 0; i < ca.model_state.size(); ++i) {
    const Tensor& ta = ca.model_state[i].second;
    const Tensor& tb = cb.model_state[i].second;
    ASSERT_EQ(ca.model_state[i].first, cb.model_state[i].first);
    ASSERT_EQ(ta.numel(), tb.numel()) << ca.model_state[i].first;
    for (int64_t j = 0; j < ta.numel(); ++j)
      ASSERT_EQ(ta.data()[j], tb.data()[j]) << ca.model_state[i].first << " [" << j << "]";
  }
  EXPECT_TRUE(read_text(s.dir + "/model.int8.h5") == read_text(straight.dir + "/model.int8.h5"));

  // Stopped again, then run with another key (other settings): the leftovers are cleared, nothing resumed.
  SweepCellSettings other = s;
  other.dir = *dir_ / "other-key";
  other.stop_after = 1;
  EXPECT_FALSE(run_sweep_cell(other, [] { return *data_; }).ok);
  other.stop_after = 0;
  other.key += " changed";
  EXPECT_EQ(sweep_cell_state(other).kind, SweepCellState::Kind::Replaced);
  ASSERT_TRUE(run_sweep_cell(other, [] { return *data_; }).ok);
  EXPECT_EQ(read_text(other.dir + "/log.txt").find("resuming"), std::string::npos) << read_text(other.dir + "/log.txt");
  EXPECT_NE(read_text(other.dir + "/start.ini").find(other.key), std::string::npos);
}
// Progressive quantization: a cell given another cell's QAT checkpoint (start_checkpoint) trains on from the
// latent weights that training left, not from the float model's; its quantizers start afresh at its own
// bits, and the schedule names the start. A start of another network fails the cell with a one-line error.
TEST_F(SweepCellTest, AProgressiveCellStartsFromAnotherCellsLatentWeights) {
  SweepCellSettings four = cell("qat-minmax", 4, 4, "progressive-w4a4");
  four.qat_lr = 0.05f;
  ASSERT_TRUE(run_sweep_cell(four, [] { return *data_; }).ok);

  SweepCellSettings two = cell("qat-minmax", 2, 2, "progressive-w2a2");
  two.start_checkpoint = four.dir + "/checkpoint.h5";
  two.qat_lr = 1e-30f;  // the weights stay where they start: a sum that rounds back to them
  two.qat_weight_decay = 0.0f;
  EXPECT_TRUE(sweep_cell_schedule(two).ends_with(", started from progressive-w4a4")) << sweep_cell_schedule(two);
  const CellResult r = run_sweep_cell(two, [] { return *data_; });
  ASSERT_TRUE(r.ok) << r.error;
  const Checkpoint start = load_checkpoint(two.start_checkpoint), end = load_checkpoint(two.dir + "/checkpoint.h5");
  EXPECT_EQ(stored_qconfig(end).activation.scheme.bits, 2);
  const NamedTensors started = float_model_under_qat_checkpoint(start, stored_qconfig(start))->named_parameters();
  const NamedTensors ended = float_model_under_qat_checkpoint(end, stored_qconfig(end))->named_parameters();
  const NamedTensors floats = model_from_checkpoint(load_checkpoint(two.float_checkpoint))->named_parameters();
  ASSERT_EQ(started.size(), ended.size());
  int64_t moved_from_float = 0;
  for (size_t i = 0; i < started.size(); ++i) {
    if (started[i].first.find("weight") == std::string::npos || started[i].first.find("bn") != std::string::npos)
      continue;  // conv and linear weights: batch norm's affine parameters are not what this checks
    const Tensor &a = started[i].second, &b = ended[i].second, &f = floats[i].second;
    ASSERT_EQ(a.numel(), b.numel()) << started[i].first;
    for (int64_t j = 0; j < a.numel(); ++j) {
      ASSERT_EQ(a.data()[j], b.data()[j]) << started[i].first << " [" << j << "]";
      moved_from_float += a.data()[j] != f.data()[j];
    }
  }
  EXPECT_GT(moved_from_float, 0);  // the 4-bit training moved them: the start is not the float model

  SweepCellSettings wrong = two;
  wrong.dir = *dir_ / "progressive-from-float";
  wrong.start_checkpoint = two.float_checkpoint;  // a float checkpoint, not a QAT one
  const CellResult refused = run_sweep_cell(wrong, [] { return *data_; });
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("is not a QAT checkpoint of the float model's network"), std::string::npos) << refused.error;
  EXPECT_EQ(refused.error.find('\n'), std::string::npos);
}


TEST_F(SweepCellTest, AFailedCellKeepsItsErrorAndStillWritesItsResult) {
  SweepCellSettings s = cell("ptq-histogram", 4, 8, "missing-float");
  s.float_checkpoint = *dir_ / "no-such-float.h5";
  const CellResult r = run_sweep_cell(s, [] { return *data_; });
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("no-such-float.h5"), std::string::npos) << r.error;
  EXPECT_EQ(r.error.find('\n'), std::string::npos);
  const std::optional<CellResult> back = read_cell_result(s.dir + "/result.ini", s.cell);
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->ok);
  EXPECT_EQ(back->error, r.error);

  // A dataset that cannot be loaded fails the cell the same way.
  const CellResult no_data =
      run_sweep_cell(cell("qat-minmax", 8, 8, "no-data"), []() -> DataBundle { throw std::runtime_error("no data here"); });
  EXPECT_FALSE(no_data.ok);
  EXPECT_EQ(no_data.error, "no data here");
}

TEST(SweepQuantizers, EveryMethodHasItsQuantizersAndAnUnknownOneIsRefused) {
  EXPECT_EQ(sweep_quantizers(SweepMethod::PtqHistogram).activation_observer, ObserverKind::Histogram);
  EXPECT_EQ(sweep_quantizers(SweepMethod::QatMinMax).activation_observer, ObserverKind::Ema);
  EXPECT_EQ(sweep_quantizers(SweepMethod::Pact).activation_method, QuantizerMethod::Pact);
  EXPECT_EQ(sweep_quantizers(SweepMethod::Pact).weight_method, QuantizerMethod::Observer);
  EXPECT_EQ(sweep_quantizers(SweepMethod::Lsq).weight_method, QuantizerMethod::Lsq);
  EXPECT_EQ(parse_sweep_method("lsq"), SweepMethod::Lsq);
  for (const std::string& m : kSweepMethods)
    EXPECT_EQ(sweep_quantizers(parse_sweep_method(m)).weight_observer, ObserverKind::MinMax) << m;
  EXPECT_THROW(parse_sweep_method("adaround"), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
