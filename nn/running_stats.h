// running_stats.h: layers that keep running statistics of what they see in training mode (batch norm's
// mean and variance, in nn/batchnorm.h and inside QAT's folded layers), as an interface: code that
// recomputes them for new weights (weight averaging, nn/train/swa.h) finds them whatever the layer.
#pragma once

namespace qatlab {

class RunningStatistics {
 public:
  virtual ~RunningStatistics() = default;
  // False while training leaves them as they are (a QAT layer whose batch norm is frozen, or that has
  // none): they are then not the layer's to recompute.
  virtual bool updates_running_statistics() const = 0;
  // Back to their initial values (mean 0, variance 1).
  virtual void reset_running_statistics() = 0;
  // m in running = (1 - m) running + m batch, each training-mode forward.
  virtual float running_statistics_momentum() const = 0;
  virtual void set_running_statistics_momentum(float m) = 0;
};

}  // namespace qatlab
