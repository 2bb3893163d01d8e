// progress.cpp: draws the progress bar (redrawn at most 10 times a second) or prints plain lines.
#include "apps/progress.h"

#include <unistd.h>

#include <cstdio>
#include <stdexcept>

namespace qatlab {

Progress::Progress(const std::string& mode) {
  if (mode == "auto")
    bar_ = isatty(fileno(stderr));
  else if (mode == "bar")
    bar_ = true;
  else if (mode == "none")
    quiet_ = true;
  else if (mode != "plain")
    throw std::invalid_argument("--progress must be auto, bar, plain or none, got '" + mode + "'");
}

void Progress::start_epoch(int64_t epoch, int64_t epochs, int64_t batches) {
  epoch_ = epoch, epochs_ = epochs, batches_ = batches;
  last_plain_quarter_ = 0;
  start_ = last_draw_ = std::chrono::steady_clock::now();
  drawn_ = false;
}

void Progress::update(int64_t batch, double loss, double accuracy, double img_per_s) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = batch + 1 == batches_;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = batch + 1 > 0 ? elapsed * (batches_ - batch - 1) / (batch + 1) : 0.0;
  if (bar_) {
    if (!last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    drawn_ = true;
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * (batch + 1) / std::max<int64_t>(batches_, 1));
    std::string bar(filled, '#');
    bar += std::string(kWidth - filled, '.');
    std::fprintf(stderr, "\r\033[Kepoch %lld/%lld [%s] %lld/%lld | %6.0f img/s | loss %.4f | acc %6.2f%% | ETA %d:%02d",
                 static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs_), bar.c_str(),
                 static_cast<long long>(batch + 1), static_cast<long long>(batches_), img_per_s, loss,
                 100.0 * accuracy, static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
    std::fflush(stderr);
    return;
  }
  // Plain mode (logs, pipes): a line at each quarter of the epoch.
  const int64_t quarter = 4 * (batch + 1) / std::max<int64_t>(batches_, 1);
  if (quarter > last_plain_quarter_ && !last) {
    last_plain_quarter_ = quarter;
    std::fprintf(stderr, "epoch %lld/%lld batch %lld/%lld: %.0f img/s, loss %.4f, acc %.2f%%, ETA %ds\n",
                 static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs_),
                 static_cast<long long>(batch + 1), static_cast<long long>(batches_), img_per_s, loss,
                 100.0 * accuracy, static_cast<int>(eta));
  }
}

void Progress::end_epoch() {
  if (bar_ && drawn_) std::fprintf(stderr, "\r\033[K");
  drawn_ = false;
}

}  // namespace qatlab
