// batchnorm.h: batch normalisation layers with running statistics (BatchNorm1d for (N, C),
// BatchNorm2d for (N, C, H, W)).
#pragma once

#include "core/ops.h"
#include "nn/module.h"
#include "nn/running_stats.h"

namespace qatlab {

class BatchNorm : public Module, public RunningStatistics {
 public:
  BatchNorm(const std::string& type, int64_t channels, float eps, float momentum)
      : Module(type), channels(channels), eps(eps), momentum(momentum) {
    QATLAB_CHECK(channels > 0, type + ": channels must be positive");
    gamma = Tensor::ones({channels});         // (C)
    beta = Tensor::zeros({channels});         // (C)
    running_mean = Tensor::zeros({channels});  // (C)
    running_var = Tensor::ones({channels});    // (C)
    register_parameter("weight", &gamma);
    register_parameter("bias", &beta);
    register_buffer("running_mean", &running_mean);
    register_buffer("running_var", &running_var);
  }
  Tensor forward(const Tensor& x) override {
    ChunkRunningStats stats(training() ? batch_sync() : nullptr, running_mean, running_var, momentum);
    Tensor y = batch_norm(x, gamma, beta, stats.mean(), stats.var(), training(), stats.momentum(), eps);
    stats.finish();
    return y;
  }
  bool fuses_relu() const override { return true; }
  Tensor forward_relu(const Tensor& x) override {
    ChunkRunningStats stats(training() ? batch_sync() : nullptr, running_mean, running_var, momentum);
    Tensor y = batch_norm_relu(x, gamma, beta, stats.mean(), stats.var(), training(), stats.momentum(), eps);
    stats.finish();
    return y;
  }
  bool updates_running_statistics() const override { return true; }
  void reset_running_statistics() override {
    running_mean.fill(0.0f);
    running_var.fill(1.0f);
  }
  float running_statistics_momentum() const override { return momentum; }
  void set_running_statistics_momentum(float m) override { momentum = m; }
  std::string describe() const override {
    return std::to_string(channels) + ", eps=" + std::to_string(eps) + ", momentum=" + std::to_string(momentum);
  }

  const int64_t channels;
  const float eps;
  float momentum;  // of the running statistics
  Tensor gamma, beta, running_mean, running_var;
};

class BatchNorm1d : public BatchNorm {
 public:
  explicit BatchNorm1d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f)
      : BatchNorm("BatchNorm1d", channels, eps, momentum) {}
};

class BatchNorm2d : public BatchNorm {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f)
      : BatchNorm("BatchNorm2d", channels, eps, momentum) {}
};

}  // namespace qatlab
