// test_swa.cpp: weight averaging (nn/train/swa.h) and the run that uses it: the running mean of the
// weights, batch norm's statistics recomputed as the mean of the batches' over a pass, and a training run
// whose last epochs are averaged: which weights join the mean and when, the learning rate of those epochs,
// the averaged model it ends with, and the resumed checkpoints it refuses. The task: quadrant_data.h.
#include "nn/train/swa.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/ops.h"
#include "nn/batchnorm.h"
#include "nn/train/evaluate.h"
#include "nn/train/quadrant_data.h"
#include "nn/train/temp_dir.h"
#include "nn/train/train_run.h"

namespace qatlab {
namespace {


ModulePtr build_network(const DataBundle& data, uint64_t seed) {
  Rng rng(seed);
  return build_model(parse_model_description(test::kQuadrantNetworkWithBatchNorms, "the test's network"), data.spec, rng);
}

std::map<std::string, std::vector<float>> parameter_values(const Module& model) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : model.named_parameters()) out[name] = t.to_vector();
  return out;
}

std::map<std::string, std::vector<float>> stored_values(const NamedTensors& state) {
  std::map<std::string, std::vector<float>> out;
  for (const auto& [name, t] : state) out[name] = t.to_vector();
  return out;
}

void expect_near(const std::vector<float>& a, const std::vector<float>& b, float tolerance, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], tolerance) << what << " [" << i << "]";
}

TEST(WeightAverage, IsTheMeanOfTheWeightsItWasGiven) {
  const DataBundle data = test::quadrant_data();
  const ModulePtr a = build_network(data, 1), b = build_network(data, 2), c = build_network(data, 3);
  WeightAverage average(*a);
  EXPECT_EQ(average.count(), 0);
  EXPECT_THROW(average.copy_to(*a), std::logic_error);  // nothing to copy yet
  average.add(*a);
  EXPECT_EQ(stored_values(average.mean()), parameter_values(*a));  // one model: its weights exactly
  average.add(*b);
  average.add(*c);
  EXPECT_EQ(average.count(), 3);
  const auto va = parameter_values(*a), vb = parameter_values(*b), vc = parameter_values(*c);
  const auto mean = stored_values(average.mean());
  ASSERT_EQ(mean.size(), va.size());
  for (const auto& [name, m] : mean) {
    std::vector<float> expected(m.size());
    for (size_t i = 0; i < m.size(); ++i) expected[i] = (va.at(name)[i] + vb.at(name)[i] + vc.at(name)[i]) / 3.0f;
    expect_near(m, expected, 1e-6f, name);
  }
  // Into a model, and through a checkpoint's form (names and tensors) into another average.
  const ModulePtr target = build_network(data, 4);
  average.copy_to(*target);
  EXPECT_EQ(parameter_values(*target), mean);
  WeightAverage reloaded(*target);
  reloaded.load(average.mean(), average.count());
  EXPECT_EQ(reloaded.count(), 3);
  EXPECT_EQ(stored_values(reloaded.mean()), mean);
  EXPECT_THROW(reloaded.load(average.mean(), 0), std::invalid_argument);
  NamedTensors short_of_one(average.mean().begin() + 1, average.mean().end());
  EXPECT_THROW(reloaded.load(short_of_one, 3), std::invalid_argument);
}

TEST(RecomputeBnStatistics, GivesEachBatchNormTheMeanOfItsBatchesStatistics) {
  const DataBundle data = test::quadrant_data();
  const ModulePtr model = build_network(data, 5);
  BatchNorm* bn = model->children().at(1).second->as<BatchNorm>();
  ASSERT_NE(bn, nullptr);
  const float momentum = bn->momentum;
  bn->running_mean.fill(7.0f);  // stale statistics, to be replaced
  bn->running_var.fill(9.0f);
  model->eval();

  DataLoader loader(data.train, loader_options(data, 100, 3, true));  // 512 images: 5 batches of 100, one of 12
  recompute_bn_statistics(*model, loader, 2);
  EXPECT_FALSE(model->training());     // its mode restored
  EXPECT_EQ(bn->momentum, momentum);    // and the layer's momentum

  // The batch statistics of the conv's outputs, directly: each batch counts once, the 12-image one too.
  const int64_t channels = bn->channels;
  std::vector<double> mean(channels, 0.0), var(channels, 0.0);
  int64_t batches = 0;
  {
    NoGradGuard no_grad;
    Module& conv = *model->children().at(0).second;
    loader.start_epoch(2);
    Batch batch;
    while (loader.next(batch)) {
      const Tensor y = conv.forward(batch.images);  // (N, C, H, W)
      const int64_t n = y.size(0), plane = y.size(2) * y.size(3), count = n * plane;
      for (int64_t ch = 0; ch < channels; ++ch) {
        double s = 0.0, ss = 0.0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t p = 0; p < plane; ++p) {
            const double v = y.data()[(i * channels + ch) * plane + p];
            s += v;
            ss += v * v;
          }
        const double mu = s / count;
        mean[ch] += mu;
        var[ch] += (ss / count - mu * mu) * count / (count - 1);  // unbiased, as running_var keeps it
      }
      ++batches;
    }
  }
  ASSERT_EQ(batches, 6);
  for (int64_t ch = 0; ch < channels; ++ch) {
    EXPECT_NEAR(bn->running_mean.data()[ch], mean[ch] / batches, 1e-4) << "channel " << ch;
    EXPECT_NEAR(bn->running_var.data()[ch], var[ch] / batches, 1e-4 * (1 + var[ch] / batches)) << "channel " << ch;
  }
}


// 5 epochs of SGD: the schedule (cosine from 0.05) over the first 2, then 3 at lr 0.01 averaged.
TrainRun averaged_run(const DataBundle& data) {
  TrainRun run;
  run.description = parse_model_description(test::kQuadrantNetworkWithBatchNorms, "the test's network");
  run.model = build_network(data, 1);
  run.settings.epochs = 5;
  run.settings.batch_size = 32;
  run.settings.lr = 0.05f;
  run.settings.swa_start = 2;
  run.settings.swa_lr = 0.01f;
  run.data = &data;
  return run;
}

TEST(TrainWithWeightAveraging, AveragesTheLastEpochsWeightsAndEndsOnTheirMean) {
  const DataBundle data = test::quadrant_data();
  const test::TempDir dir("swa_run");
  // Epoch by epoch (each invocation resumes the last), to see the weights of every epoch.
  std::vector<Checkpoint> after;  // after[e]: the checkpoint after epoch e + 1
  for (int64_t epoch = 1; epoch <= 5; ++epoch) {
    TrainRun run = averaged_run(data);
    run.out_dir = dir / "run";
    run.settings.stop_after = 1;
    if (!after.empty()) run.resume_from = &after.back();
    train_model(run);
    after.push_back(load_checkpoint(dir / "run/checkpoint.h5"));
    if (epoch == 5) {
      // The run's own model is the average too, its batch norm fitted to it.
      DataLoader test(data.test, loader_options(data, 256, 0, false));
      EXPECT_DOUBLE_EQ(evaluate(*run.model, test).accuracy, after.back().history.back().at("swa_test_acc"));
    }
  }
  // Epochs 1-2 on the schedule, no averaging; 3-5 at the constant rate, each averaged and evaluated.
  for (int64_t e = 0; e < 5; ++e) {
    const MetricsRow& row = after[4].history[e];
    if (e < 2) {
      EXPECT_NE(row.at("lr"), 0.01f) << "epoch " << e + 1;  // the cosine's, at the epoch's last step
      EXPECT_EQ(after[e].swa_count, 0);
      EXPECT_EQ(row.count("swa_test_acc"), 0u);
    } else {
      EXPECT_FLOAT_EQ(row.at("lr"), 0.01f) << "epoch " << e + 1;
      EXPECT_EQ(after[e].swa_count, e - 1);
      EXPECT_EQ(row.count("swa_test_acc"), 1u);
    }
  }
  // The mean after epoch 3 is epoch 3's weights; after 4 the mean of 3's and 4's, both stored as the model
  // then (the run still trains); after 5 the model is the mean of 3, 4 and 5.
  const auto w3 = stored_values(after[2].model_state), w4 = stored_values(after[3].model_state);
  const auto m3 = stored_values(after[2].swa_mean), m4 = stored_values(after[3].swa_mean);
  const auto m5 = stored_values(after[4].swa_mean), final_state = stored_values(after[4].model_state);
  EXPECT_FALSE(after[3].model_is_average);
  EXPECT_TRUE(after[4].model_is_average);
  for (const auto& [name, m] : m3) {
    EXPECT_EQ(m, w3.at(name)) << name;
    std::vector<float> mid(m.size());
    for (size_t i = 0; i < m.size(); ++i) mid[i] = 0.5f * (w3.at(name)[i] + w4.at(name)[i]);
    expect_near(m4.at(name), mid, 1e-6f, name);
    EXPECT_EQ(final_state.at(name), m5.at(name)) << name;
  }
  EXPECT_NE(m5.at("0.weight"), m4.at("0.weight"));  // epoch 5 moved the mean (not the conv's bias: batch norm
                                                    // cancels it, so it has no gradient)
  // Batch norm's statistics were recomputed for the mean, not kept from the last step.
  EXPECT_NE(final_state.at("1.running_mean"), w4.at("1.running_mean"));
  // The last row's averaged figures are those of the model stored.
  const ModulePtr stored = model_from_checkpoint(after[4]);
  DataLoader test(data.test, loader_options(data, 256, 0, false));
  EXPECT_DOUBLE_EQ(evaluate(*stored, test).accuracy, after[4].history.back().at("swa_test_acc"));
}

TEST(TrainWithWeightAveraging, RefusesToGoOnFromAnAveragedModelOrToDropTheAveraging) {
  const DataBundle data = test::quadrant_data();
  const test::TempDir dir("swa_refusals");
  TrainRun run = averaged_run(data);
  run.out_dir = dir / "run";
  run.settings.stop_after = 3;
  train_model(run);  // epochs 1-3: one averaged
  const Checkpoint midway = load_checkpoint(dir / "run/checkpoint.h5");
  ASSERT_EQ(midway.swa_count, 1);

  TrainRun without = averaged_run(data);
  without.out_dir = dir / "run";
  without.settings.swa_start = 0;
  without.settings.swa_lr = 0.0f;
  without.resume_from = &midway;
  EXPECT_THROW(train_model(without), std::invalid_argument);

  TrainRun rest = averaged_run(data);
  rest.out_dir = dir / "run";
  rest.resume_from = &midway;
  train_model(rest);  // to the end: the model is the average
  const Checkpoint ended = load_checkpoint(dir / "run/checkpoint.h5");
  ASSERT_TRUE(ended.model_is_average);
  TrainRun longer = averaged_run(data);
  longer.out_dir = dir / "run";
  longer.settings.epochs = 6;
  longer.resume_from = &ended;
  EXPECT_THROW(train_model(longer), std::invalid_argument);

  TrainRun bad = averaged_run(data);
  bad.settings.swa_start = 5;  // not before the last epoch
  EXPECT_THROW(train_model(bad), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
