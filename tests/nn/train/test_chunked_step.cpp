// test_chunked_step.cpp: ChunkedStep in one process: every chunk's work runs, a shared statistic's update
// runs once with every chunk's values in chunk order, gradients add in chunk order (float rounding shows
// the order), a failing chunk abandons the step without hanging and the next step runs.
#include "nn/train/chunked_step.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "core/ops.h"

namespace qatlab {
namespace {

struct Fixture {
  Tensor w = Tensor::zeros({2});  // (2) a parameter
  std::vector<ParamRef> params;
  Fixture() {
    w.set_requires_grad(true);
    params.push_back({"w", w, false});
  }
  // Leaves d(loss)/dw = g (both elements) for this chunk, zeroing first as the training loop does.
  void backward_with_gradient(float g) {
    w.zero_grad();
    sum(scale(w, g)).backward();
  }
};

TEST(ChunkedStep, SharedStatisticsAreCombinedOnceInChunkOrder) {
  Fixture f;
  ChunkedStep step(4, 1);
  ASSERT_EQ(step.first_chunk(), 0);
  ASSERT_EQ(step.end_chunk(), 4);
  int combines = 0;
  std::vector<double> seen;
  std::vector<int64_t> rows;
  const auto tallies = step.run(10, 0, f.params, [&](int64_t k, int64_t begin, int64_t end) {
    rows.push_back(end - begin);
    EXPECT_EQ(step.chunk(), k);
    const std::vector<double> mine{static_cast<double>(k), 10.0 * k};
    step.exchange(mine, [&](std::span<const double> all, int64_t chunks) {
      ++combines;
      seen.assign(all.begin(), all.end());
      EXPECT_EQ(chunks, 4);
    });
    f.backward_with_gradient(static_cast<float>(k + 1));
    return ChunkTally{0.5 * k, k};
  });
  EXPECT_EQ(combines, 1);
  EXPECT_EQ(seen, (std::vector<double>{0, 0, 1, 10, 2, 20, 3, 30}));
  EXPECT_EQ(rows, (std::vector<int64_t>{2, 3, 2, 3}));  // rows [k n / K, (k + 1) n / K) of 10
  EXPECT_EQ(f.w.grad().data()[0], 10.0f);               // 1 + 2 + 3 + 4
  ASSERT_EQ(tallies.size(), 4u);
  EXPECT_EQ(tallies[3].loss, 1.5);
  EXPECT_EQ(tallies[2].correct, 2);
}

TEST(ChunkedStep, GradientsAddInChunkOrder) {
  Fixture f;
  ChunkedStep step(4, 1);
  // In float, ((1e8 + 1) - 1e8) + 1 = 1 (the first 1 is lost), while 1e8 - 1e8 + 1 + 1 would be 2.
  const float g[4] = {1e8f, 1.0f, -1e8f, 1.0f};
  step.run(4, 0, f.params, [&](int64_t k, int64_t, int64_t) {
    f.backward_with_gradient(g[k]);
    return ChunkTally{};
  });
  EXPECT_EQ(f.w.grad().data()[1], ((g[0] + g[1]) + g[2]) + g[3]);
  EXPECT_EQ(f.w.grad().data()[1], 1.0f);
}

TEST(ChunkedStep, AFailingChunkAbandonsTheStepAndTheNextStepRuns) {
  Fixture f;
  ChunkedStep step(3, 1);
  const auto failing = [&](int64_t k, int64_t, int64_t) -> ChunkTally {
    if (k == 1) throw std::runtime_error("chunk 1 saw NaN");
    step.exchange(std::vector<double>{1.0}, [](std::span<const double>, int64_t) {});
    return ChunkTally{};
  };
  try {
    step.run(3, 0, f.params, failing);
    FAIL() << "expected the chunk's error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "chunk 1 saw NaN");
  }
  const auto tallies = step.run(3, 1, f.params, [&](int64_t k, int64_t, int64_t) {
    f.backward_with_gradient(1.0f);
    return ChunkTally{static_cast<double>(k), 0};
  });
  EXPECT_EQ(tallies[2].loss, 2.0);
  EXPECT_EQ(f.w.grad().data()[0], 3.0f);
}

TEST(ChunkedStep, ChunksThatTakeDifferentPathsAreAnError) {
  Fixture f;
  ChunkedStep step(2, 1);
  const auto uneven = [&](int64_t k, int64_t, int64_t) {
    if (k == 0) step.exchange(std::vector<double>{1.0}, [](std::span<const double>, int64_t) {});
    return ChunkTally{};
  };
  EXPECT_THROW(step.run(2, 0, f.params, uneven), std::logic_error);
  EXPECT_THROW(step.run(1, 0, f.params, uneven), std::invalid_argument);  // fewer rows than chunks
  EXPECT_THROW(step.exchange(std::vector<double>{1.0}, [](std::span<const double>, int64_t) {}), std::logic_error);
}

}  // namespace
}  // namespace qatlab
