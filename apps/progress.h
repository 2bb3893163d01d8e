// progress.h: the training progress display: a live bar on a terminal, plain lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qatlab {

class Progress {
 public:
  // mode: "auto" (bar when stderr is a terminal), "bar", "plain" or "none".
  explicit Progress(const std::string& mode);

  void start_epoch(int64_t epoch, int64_t epochs, int64_t batches);
  // After each batch: running loss and accuracy over the epoch so far, images per second.
  void update(int64_t batch, double loss, double accuracy, double img_per_s);
  void end_epoch();
  // A full line that does not disturb the bar.
  void line(const std::string& text);

 private:
  bool bar_ = false, quiet_ = false;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0, last_plain_quarter_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
  bool drawn_ = false;
};

}  // namespace qatlab
