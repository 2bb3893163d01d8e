// test_batch_sync.cpp: the helpers of core/batch_sync.h against a stand-in for the other chunks: the range
// exchange gives the elementwise min / max over chunks, and chunked running statistics take each chunk's
// batch statistics exactly and fold them in chunk order.
#include "core/batch_sync.h"

#include <gtest/gtest.h>

#include "core/ops.h"

namespace qatlab {
namespace {

// Chunk `me` of a batch whose other chunks have already given `others` (same count each): exchange()
// puts this chunk's values in its place and runs combine at once.
class StandIn : public BatchSync {
 public:
  StandIn(int64_t me, std::vector<std::vector<double>> others) : me_(me), others_(std::move(others)) {}
  void exchange(std::span<const double> mine, const Combine& combine) override {
    std::vector<double> all;
    for (int64_t k = 0, j = 0; k < chunks(); ++k) {
      if (k == me_) {
        all.insert(all.end(), mine.begin(), mine.end());
      } else {
        all.insert(all.end(), others_[j].begin(), others_[j].end());
        ++j;
      }
    }
    combine(all, chunks());
  }
  int64_t chunk() const override { return me_; }
  int64_t chunks() const override { return static_cast<int64_t>(others_.size()) + 1; }
  uint64_t chunk_stream() const override { return 0; }

 private:
  int64_t me_;
  std::vector<std::vector<double>> others_;
};

TEST(BatchSync, ExchangeRangeGivesTheMinimumAndMaximumOverChunks) {
  StandIn sync(1, {{-1.0, 5.0, 2.0, 3.0}, {0.5, -7.0, 9.0, 1.0}});  // lo (2), hi (2) per chunk
  std::vector<float> lo, hi;
  exchange_range(sync, {0.0f, 0.0f}, {4.0f, 4.0f}, [&](const std::vector<float>& l, const std::vector<float>& h) {
    lo = l, hi = h;
  });
  EXPECT_EQ(lo, (std::vector<float>{-1.0f, -7.0f}));
  EXPECT_EQ(hi, (std::vector<float>{9.0f, 4.0f}));
}

TEST(BatchSync, ChunkRunningStatsFoldEveryChunkInOrder) {
  const float m = 0.1f;
  Tensor x = Tensor::from_vector({4, 1}, {1.0f, 2.0f, 4.0f, 9.0f});  // (N, C): this chunk, chunk 0 of 2
  // Chunk 1's mean 10 and unbiased variance 2, as its op wrote them.
  StandIn sync(0, {{10.0, 2.0}});
  Tensor rm = Tensor::full({1}, 3.0f), rv = Tensor::full({1}, 5.0f);
  ChunkRunningStats stats(&sync, rm, rv, m);
  EXPECT_EQ(stats.momentum(), 1.0f);
  batch_norm(x, Tensor::ones({1}), Tensor::zeros({1}), stats.mean(), stats.var(), true, stats.momentum(), 1e-5f);
  EXPECT_EQ(stats.mean().data()[0], 4.0f);  // the chunk's own mean, exactly
  stats.finish();
  float want_m = 3.0f, want_v = 5.0f;
  for (const auto& [mean, var] : {std::pair{4.0f, stats.var().data()[0]}, std::pair{10.0f, 2.0f}}) {
    want_m = (1.0f - m) * want_m + m * mean;
    want_v = (1.0f - m) * want_v + m * var;
  }
  EXPECT_EQ(rm.data()[0], want_m);
  EXPECT_EQ(rv.data()[0], want_v);
  // Without a sync the real statistics and momentum go to the op, and finish() does nothing.
  ChunkRunningStats plain(nullptr, rm, rv, m);
  EXPECT_EQ(plain.mean().data(), rm.data());
  EXPECT_EQ(plain.momentum(), m);
}

}  // namespace
}  // namespace qatlab
