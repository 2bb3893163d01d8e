// progress.h: the training progress display: a live bar on a terminal, plain lines otherwise; the
// command's TrainMonitor (nn/train/train_loop.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "nn/train/train_loop.h"

namespace qatlab {

class Progress : public TrainMonitor {
 public:
  // mode: "auto" (bar when stderr is a terminal), "bar", "plain" or "none".
  explicit Progress(const std::string& mode);

  void start_epoch(int64_t epoch, int64_t epochs, int64_t batches) override;
  // After each batch: running loss and accuracy over the epoch so far, images per second.
  void update(int64_t batch, double loss, double accuracy, double img_per_s) override;
  void end_epoch() override;

 private:
  bool bar_ = false, quiet_ = false;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0, last_plain_quarter_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace qatlab
