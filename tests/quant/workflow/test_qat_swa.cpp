// test_qat_swa.cpp: weight averaging (nn/train/swa.h) in quantization-aware training: the folded batch
// norms of a QAT model are found and recomputed as the float model's are (frozen ones are left alone), and
// a sweep's QAT cell with averaging ends on its averaged model, whose integer graph is its simulation. The
// task: quadrant_data.h, on a network with batch norms.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/swa.h"
#include "nn/train/temp_dir.h"
#include "nn/train/train_run.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qat_layers.h"
#include "quant/workflow/sweep.h"
#include "quant/workflow/sweep_cell.h"

namespace qatlab {
namespace {

using namespace test;

// The float model both tests quantize: 3 epochs of the library's training run, into DIR/float.
class QatAveraging : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("qat_swa");
    data_ = new DataBundle(quadrant_data());
    TrainRun run;
    run.description = parse_model_description(test::kQuadrantNetworkWithBatchNorms, "the test's network");
    Rng rng(1);
    run.model = build_model(run.description, data_->spec, rng);
    run.settings.epochs = 3;
    run.settings.batch_size = 32;
    run.settings.lr = 0.05f;
    run.data = data_;
    run.out_dir = *dir_ / "float";
    train_model(run);
  }
  static void TearDownTestSuite() {
    delete data_;
    delete dir_;
  }
  static std::string float_checkpoint() { return *dir_ / "float/checkpoint.h5"; }
  // A W4A4 LSQ cell in DIR/<name>: 3 epochs at lr 0.01 from the float model, averaged from swa_start on.
  static SweepCellSettings lsq_cell(const std::string& name, int64_t swa_start) {
    SweepCellSettings s;
    s.cell = {"lsq", "per-channel", {4, 4}, 1};
    s.float_checkpoint = float_checkpoint();
    s.qat_epochs = 3;
    s.qat_lr = 0.01f;
    s.swa_start = swa_start;
    s.swa_lr = 0.005f;
    s.batch_size = 32;
    s.dir = *dir_ / name;
    s.key = "lsq 3 epochs swa " + std::to_string(swa_start);
    s.config_ini = "wbits = 4\n";
    s.command_line = "test_qat_swa";
    return s;
  }

  static TempDir* dir_;
  static DataBundle* data_;
};
TempDir* QatAveraging::dir_ = nullptr;
DataBundle* QatAveraging::data_ = nullptr;

TEST_F(QatAveraging, RecomputesTheFoldedBatchNormsButNotFrozenOnes) {
  const ModulePtr qat = prepare_qat(model_from_checkpoint(load_checkpoint(float_checkpoint())), QConfig{});
  std::vector<QatLayer*> layers;
  for (const auto& [name, m] : qat->named_modules(qat))
    if (QatLayer* layer = m->as<QatLayer>(); layer && layer->has_bn()) layers.push_back(layer);
  ASSERT_EQ(layers.size(), 2u);
  DataLoader calibration(data_->train, loader_options(*data_, 64, 1, true));
  qat->train();
  {
    NoGradGuard no_grad;  // observers see a batch first, as training's first step would
    calibration.start_epoch(0);
    Batch batch;
    calibration.next(batch);
    qat->forward(batch.images);
  }
  for (QatLayer* layer : layers) {
    layer->bn_mean.fill(7.0f);  // stale statistics, to be replaced
    layer->bn_var.fill(9.0f);
  }
  layers[1]->freeze_bn(true);
  const float momentum = layers[0]->bn_momentum;
  recompute_bn_statistics(*qat, calibration, 1);
  EXPECT_EQ(layers[0]->bn_momentum, momentum);
  for (int64_t c = 0; c < layers[0]->out_channels(); ++c) {
    EXPECT_NE(layers[0]->bn_mean.data()[c], 7.0f) << c;
    EXPECT_NE(layers[0]->bn_var.data()[c], 9.0f) << c;
    EXPECT_GT(layers[0]->bn_var.data()[c], 0.0f) << c;
    EXPECT_EQ(layers[1]->bn_mean.data()[c], 7.0f) << c;  // frozen: the layer's statistics are fixed
    EXPECT_EQ(layers[1]->bn_var.data()[c], 9.0f) << c;
  }
  // Recomputed twice, the same pass gives the same statistics: nothing of the stale ones is left. (With
  // the observers still; they see the pass too, and a grid they move changes what batch norm sees.)
  set_observers_enabled(*qat, false);
  recompute_bn_statistics(*qat, calibration, 1);
  const std::vector<float> once = layers[0]->bn_mean.to_vector();
  layers[0]->bn_mean.fill(-3.0f);
  recompute_bn_statistics(*qat, calibration, 1);
  EXPECT_EQ(layers[0]->bn_mean.to_vector(), once);
}

TEST_F(QatAveraging, ASweepCellWithAveragingEndsOnItsMeanAndItsIntegerGraphIsItsSimulation) {
  const SweepCellSettings s = lsq_cell("lsq-swa", 1);
  EXPECT_NE(sweep_cell_schedule(s).find(", epochs 2-3 at lr 0.005 averaged (SWA)"), std::string::npos)
      << sweep_cell_schedule(s);
  const CellResult r = run_sweep_cell(s, [] { return *data_; });
  ASSERT_TRUE(r.ok) << r.error;
  const Checkpoint c = load_checkpoint(s.dir + "/checkpoint.h5");
  EXPECT_EQ(c.model_kind, "qat");
  EXPECT_EQ(c.swa_count, 2);
  EXPECT_TRUE(c.model_is_average);
  // The cell's figures are the averaged model's: the last epoch's averaged accuracy is the simulation's.
  EXPECT_DOUBLE_EQ(r.sim_accuracy, c.history.back().at("swa_test_acc"));
  EXPECT_GT(r.sim_accuracy, 0.8);
  EXPECT_EQ(r.exact_identical, 1.0);  // exact mode: the integer graph's codes on every test image
  EXPECT_GT(r.top1_agreement, 0.95);
}

// A finished cell run again with averaging added after its epochs (the key it had as extends_key) goes on
// from its checkpoint and ends on the model of the cell trained with averaging from the start; a finished
// cell of other settings is not extended.
TEST_F(QatAveraging, AFinishedCellExtendedWithAveragingEndsWhereTheWholeRunEnds) {
  const SweepCellSettings whole = lsq_cell("whole", 2);
  const CellResult a = run_sweep_cell(whole, [] { return *data_; });
  ASSERT_TRUE(a.ok) << a.error;

  SweepCellSettings plain = whole;
  plain.dir = *dir_ / "extended";
  plain.qat_epochs = 2;
  plain.swa_start = 0;
  plain.swa_lr = 0.0f;
  plain.key = "lsq 2 epochs";
  ASSERT_TRUE(run_sweep_cell(plain, [] { return *data_; }).ok);

  SweepCellSettings extended = whole;
  extended.dir = plain.dir;
  extended.extends_key = "lsq 2 epochs";
  const CellResult b = run_sweep_cell(extended, [] { return *data_; });
  ASSERT_TRUE(b.ok) << b.error;
  const std::string log = read_text(extended.dir + "/log.txt");
  EXPECT_NE(log.find("extending the finished 2-epoch cell: epochs 3-3 at lr 0.005, averaged"), std::string::npos) << log;
  EXPECT_NE(log.find("resuming after epoch 2"), std::string::npos) << log;
  EXPECT_NE(read_text(extended.dir + "/start.ini").find("key = " + whole.key), std::string::npos);
  EXPECT_NE(read_text(extended.dir + "/result.ini").find(whole.key), std::string::npos);
  EXPECT_EQ(b.sim_accuracy, a.sim_accuracy);
  EXPECT_EQ(b.int_accuracy, a.int_accuracy);
  const Checkpoint ca = load_checkpoint(whole.dir + "/checkpoint.h5"), cb = load_checkpoint(extended.dir + "/checkpoint.h5");
  EXPECT_TRUE(cb.model_is_average);
  EXPECT_EQ(cb.swa_count, 1);
  ASSERT_EQ(ca.model_state.size(), cb.model_state.size());
  for (size_t i = 0; i < ca.model_state.size(); ++i) {
    ASSERT_EQ(ca.model_state[i].first, cb.model_state[i].first);
    EXPECT_EQ(ca.model_state[i].second.to_vector(), cb.model_state[i].second.to_vector()) << ca.model_state[i].first;
  }
  EXPECT_TRUE(read_text(extended.dir + "/model.int8.h5") == read_text(whole.dir + "/model.int8.h5"));

  // A finished cell whose key is not the one extended (other settings): trained again from the start.
  SweepCellSettings other = plain;
  other.dir = *dir_ / "not-extended";
  ASSERT_TRUE(run_sweep_cell(other, [] { return *data_; }).ok);
  SweepCellSettings longer = whole;
  longer.dir = other.dir;
  longer.extends_key = "lsq 2 epochs, other settings";
  ASSERT_TRUE(run_sweep_cell(longer, [] { return *data_; }).ok);
  const std::string other_log = read_text(other.dir + "/log.txt");
  EXPECT_EQ(other_log.find("extending"), std::string::npos) << other_log;
  EXPECT_EQ(other_log.find("resuming"), std::string::npos) << other_log;
  EXPECT_EQ(load_checkpoint(other.dir + "/checkpoint.h5").history.size(), 3u);
}

}  // namespace
}  // namespace qatlab
