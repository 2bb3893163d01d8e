// swa.h: stochastic weight averaging (SWA; Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima
// and Better Generalization"): after the schedule proper, training goes on at a constant learning rate and
// the weights at the end of each of those epochs are averaged; the average, with batch norm's statistics
// recomputed for it, is the model. SGD at a constant rate circles a wide minimum; the average lands near
// its centre, which generalises better than any point of the circle.
//
// The loop (train_loop.cpp) drives it: TrainSettings::swa_start and swa_lr say when and how fast. Here:
// the running mean of the weights, and the pass that gives an averaged model its batch-norm statistics.
#pragma once

#include <cstdint>
#include <vector>

#include "data/loader.h"
#include "nn/module.h"

namespace qatlab {

// The mean of a model's parameters over the times add() was called (their running mean, so no sum
// grows). Buffers (batch norm's running statistics) are not averaged: statistics of other weights would
// not fit the mean; recompute_bn_statistics gives the mean weights their own.
class WeightAverage {
 public:
  // Empty (count 0), for `model`'s parameters.
  explicit WeightAverage(const Module& model);
  // mean += (w - mean) / (count + 1), for every parameter w of `model` (the one given at construction).
  void add(const Module& model);
  int64_t count() const { return count_; }
  // The mean under the parameters' names (for checkpoints), and back; load throws std::invalid_argument
  // unless `state` holds every parameter with its shape and count >= 1.
  const NamedTensors& mean() const { return mean_; }
  void load(const NamedTensors& state, int64_t count);
  // Copies the mean into `model`'s parameters (count >= 1, else std::logic_error).
  void copy_to(Module& model) const;

 private:
  NamedTensors mean_;
  int64_t count_ = 0;
};

// Gives every batch norm of `model` (every layer with RunningStatistics that updates them: QAT's folded
// ones too, unless frozen) the statistics of its current weights: running mean and variance reset, then
// set to the mean over the batches of one pass of `loader`'s epoch `epoch` of the batch statistics (each
// batch counts once, as PyTorch's update_bn), in training mode without gradients; the model's mode is
// restored after. Whatever else a training-mode forward updates (a QAT model's observers) sees the pass
// too. A model without such a layer is left as it is, without a pass.
void recompute_bn_statistics(Module& model, DataLoader& loader, int64_t epoch);

}  // namespace qatlab
