// batch_sync.cpp: the range exchange and the chunked running statistics of batch_sync.h.
#include "core/batch_sync.h"

#include <algorithm>

namespace qatlab {

void exchange_range(BatchSync& sync, const std::vector<float>& lo, const std::vector<float>& hi,
                    const std::function<void(const std::vector<float>& lo, const std::vector<float>& hi)>& fold) {
  const size_t c = lo.size();
  std::vector<double> mine(2 * c);  // lo (C), then hi (C); doubles hold every float exactly
  std::copy(lo.begin(), lo.end(), mine.begin());
  std::copy(hi.begin(), hi.end(), mine.begin() + c);
  sync.exchange(mine, [c, &fold](std::span<const double> all, int64_t chunks) {
    std::vector<float> g_lo(c), g_hi(c);  // (C)
    for (size_t i = 0; i < c; ++i) {
      g_lo[i] = static_cast<float>(all[i]);
      g_hi[i] = static_cast<float>(all[c + i]);
    }
    for (int64_t k = 1; k < chunks; ++k) {
      const std::span<const double> theirs = all.subspan(static_cast<size_t>(k) * 2 * c, 2 * c);
      for (size_t i = 0; i < c; ++i) {
        g_lo[i] = std::min(g_lo[i], static_cast<float>(theirs[i]));
        g_hi[i] = std::max(g_hi[i], static_cast<float>(theirs[c + i]));
      }
    }
    fold(g_lo, g_hi);
  });
}

ChunkRunningStats::ChunkRunningStats(BatchSync* sync, Tensor& running_mean, Tensor& running_var, float momentum)
    : sync_(sync), running_mean_(running_mean), running_var_(running_var), momentum_(momentum) {
  if (!sync_) return;
  scratch_mean_ = Tensor::zeros(running_mean.shape());
  scratch_var_ = Tensor::ones(running_var.shape());
}

void ChunkRunningStats::finish() {
  if (!sync_) return;
  const int64_t c = running_mean_.numel();
  std::vector<double> mine(2 * c);  // this chunk's mean (C), then its unbiased variance (C)
  for (int64_t i = 0; i < c; ++i) {
    mine[i] = scratch_mean_.data()[i];
    mine[c + i] = scratch_var_.data()[i];
  }
  float* rm = running_mean_.data();
  float* rv = running_var_.data();
  const float m = momentum_;
  sync_->exchange(mine, [c, rm, rv, m](std::span<const double> all, int64_t chunks) {
    for (int64_t k = 0; k < chunks; ++k) {
      const double* s = all.data() + k * 2 * c;
      for (int64_t i = 0; i < c; ++i) {
        rm[i] = (1.0f - m) * rm[i] + m * static_cast<float>(s[i]);
        rv[i] = (1.0f - m) * rv[i] + m * static_cast<float>(s[c + i]);
      }
    }
  });
}

}  // namespace qatlab
