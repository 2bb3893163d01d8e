// test_lr_schedule.cpp: each schedule's learning rate at chosen iterations, warm-up, and validation.
#include "nn/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>

namespace qatlab {
namespace {

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

constexpr int64_t kIpe = 10;  // iterations per epoch in these tests

TEST(LrSchedule, ConstantNeverChanges) {
  const LrSchedule s = parse_schedule("constant", 0.1f);
  for (int64_t it : {0, 1, 99, 5000}) EXPECT_EQ(lr_at(s, it, kIpe, 100), 0.1f) << it;
}

TEST(LrSchedule, StepDecaysAtEpochBoundaries) {
  LrSchedule s = parse_schedule("step", 0.1f);
  s.step_epochs = 3;
  s.gamma = 0.5f;
  EXPECT_FLOAT_EQ(lr_at(s, 0, kIpe, 20), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(s, 29, kIpe, 20), 0.1f);   // last iteration of epoch 2
  EXPECT_FLOAT_EQ(lr_at(s, 30, kIpe, 20), 0.05f);  // first of epoch 3
  EXPECT_FLOAT_EQ(lr_at(s, 59, kIpe, 20), 0.05f);
  EXPECT_FLOAT_EQ(lr_at(s, 60, kIpe, 20), 0.025f);
  EXPECT_FLOAT_EQ(lr_at(s, 95, kIpe, 20), 0.0125f);
}

TEST(LrSchedule, MultistepDecaysAtEachMilestone) {
  LrSchedule s = parse_schedule("multistep", 1.0f, "2,5");
  ASSERT_EQ(s.milestones, (std::vector<int64_t>{2, 5}));
  EXPECT_FLOAT_EQ(lr_at(s, 0, kIpe, 10), 1.0f);
  EXPECT_FLOAT_EQ(lr_at(s, 19, kIpe, 10), 1.0f);   // epoch 1
  EXPECT_FLOAT_EQ(lr_at(s, 20, kIpe, 10), 0.1f);   // epoch 2: first milestone
  EXPECT_FLOAT_EQ(lr_at(s, 49, kIpe, 10), 0.1f);   // epoch 4
  EXPECT_FLOAT_EQ(lr_at(s, 50, kIpe, 10), 0.01f);  // epoch 5: second milestone
  EXPECT_FLOAT_EQ(lr_at(s, 99, kIpe, 10), 0.01f);
}

TEST(LrSchedule, CosineEndpointsAndMidpoint) {
  LrSchedule s = parse_schedule("cosine", 0.1f);
  s.min_lr = 0.002f;
  // 10 epochs of 10 iterations: 100 iterations from base_lr down to min_lr.
  EXPECT_FLOAT_EQ(lr_at(s, 0, kIpe, 10), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(s, 50, kIpe, 10), (0.1f + 0.002f) / 2);
  // A quarter of the way: min + (base - min) * (1 + cos(pi / 4)) / 2.
  EXPECT_NEAR(lr_at(s, 25, kIpe, 10), 0.002 + 0.098 * (1 + std::cos(std::numbers::pi / 4)) / 2, 1e-8);
  EXPECT_FLOAT_EQ(lr_at(s, 100, kIpe, 10), 0.002f);
  EXPECT_FLOAT_EQ(lr_at(s, 150, kIpe, 10), 0.002f);  // past the end it stays at min_lr
  // Per iteration, not per epoch: consecutive iterations differ and decrease.
  float prev = lr_at(s, 0, kIpe, 10);
  for (int64_t it = 1; it <= 100; ++it) {
    const float lr = lr_at(s, it, kIpe, 10);
    EXPECT_LT(lr, prev) << it;
    prev = lr;
  }
}

TEST(LrSchedule, WarmupIsLinearPerIterationThenTheMainScheduleStarts) {
  LrSchedule s = parse_schedule("cosine", 0.1f);
  s.warmup_epochs = 2;
  s.warmup_start_factor = 0.1f;
  // 12 epochs in all: 2 of warm-up (20 iterations), then 10 of cosine (100 iterations).
  EXPECT_FLOAT_EQ(lr_at(s, 0, kIpe, 12), 0.01f);
  EXPECT_FLOAT_EQ(lr_at(s, 10, kIpe, 12), 0.055f);  // halfway: 0.1 * (0.1 + 0.9 / 2)
  EXPECT_FLOAT_EQ(lr_at(s, 19, kIpe, 12), 0.1f * (0.1f + 0.9f * 19 / 20));
  EXPECT_FLOAT_EQ(lr_at(s, 20, kIpe, 12), 0.1f);  // warm-up over: cosine starts at base_lr
  EXPECT_FLOAT_EQ(lr_at(s, 70, kIpe, 12), 0.05f);  // cosine midpoint
  EXPECT_FLOAT_EQ(lr_at(s, 120, kIpe, 12), 0.0f);

  // The step schedule's epochs also count from the end of the warm-up.
  LrSchedule st = parse_schedule("step", 0.1f);
  st.step_epochs = 3;
  st.warmup_epochs = 2;
  EXPECT_FLOAT_EQ(lr_at(st, 20 + 29, kIpe, 20), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(st, 20 + 30, kIpe, 20), 0.01f);

  LrSchedule ms = parse_schedule("multistep", 0.1f, "1");
  ms.warmup_epochs = 1;
  EXPECT_FLOAT_EQ(lr_at(ms, 10, kIpe, 5), 0.1f);
  EXPECT_FLOAT_EQ(lr_at(ms, 20, kIpe, 5), 0.01f);
}

TEST(LrSchedule, SameIterationSameRate) {
  // A pure function of the iteration: evaluating in any order gives the same values (resume).
  LrSchedule s = parse_schedule("cosine", 0.3f);
  s.warmup_epochs = 1;
  const float a = lr_at(s, 37, kIpe, 8);
  for (int64_t it = 0; it < 80; ++it) lr_at(s, it, kIpe, 8);
  EXPECT_EQ(lr_at(s, 37, kIpe, 8), a);
}

TEST(LrSchedule, ParseMilestones) {
  EXPECT_EQ(parse_milestones("30,60,80"), (std::vector<int64_t>{30, 60, 80}));
  EXPECT_EQ(parse_milestones("7"), (std::vector<int64_t>{7}));
  EXPECT_TRUE(parse_milestones("").empty());
  EXPECT_TRUE(contains(error_of([] { parse_milestones("30,x"); }), "\"30,x\""));
  EXPECT_TRUE(contains(error_of([] { parse_milestones("30,,60"); }), "comma-separated"));
  EXPECT_TRUE(contains(error_of([] { parse_milestones("30,"); }), "comma-separated"));
  EXPECT_TRUE(contains(error_of([] { parse_milestones("3.5"); }), "comma-separated"));
}

TEST(LrSchedule, InvalidSettingsAreRejected) {
  const std::string unknown = error_of([] { parse_schedule("linear", 0.1f); });
  EXPECT_TRUE(contains(unknown, "'linear'")) << unknown;
  EXPECT_TRUE(contains(unknown, "constant, step, multistep or cosine")) << unknown;

  EXPECT_TRUE(contains(error_of([] { parse_schedule("multistep", 0.1f, "30,20"); }), "milestones must increase, got 30 then 20"));
  EXPECT_TRUE(contains(error_of([] { parse_schedule("multistep", 0.1f, "5,5"); }), "must increase"));
  EXPECT_TRUE(contains(error_of([] { parse_schedule("multistep", 0.1f, "0,5"); }), "positive"));
  EXPECT_TRUE(contains(error_of([] { parse_schedule("step", 0.0f); }), "base_lr must be > 0, got 0"));

  LrSchedule s = parse_schedule("step", 0.1f);
  s.gamma = 0.0f;
  EXPECT_TRUE(contains(error_of([&] { validate_schedule(s); }), "gamma must be > 0, got 0"));
  s.gamma = -0.5f;
  EXPECT_TRUE(contains(error_of([&] { lr_at(s, 0, kIpe, 10); }), "gamma must be > 0, got -0.5"));
  s.gamma = 0.1f;
  s.step_epochs = 0;
  EXPECT_TRUE(contains(error_of([&] { validate_schedule(s); }), "step_epochs"));
  s.step_epochs = 30;
  s.min_lr = 0.5f;
  EXPECT_TRUE(contains(error_of([&] { validate_schedule(s); }), "min_lr"));
  s.min_lr = 0.0f;
  s.warmup_start_factor = 0.0f;
  EXPECT_TRUE(contains(error_of([&] { validate_schedule(s); }), "warmup_start_factor"));
  s.warmup_start_factor = 0.1f;
  s.warmup_epochs = -1;
  EXPECT_TRUE(contains(error_of([&] { validate_schedule(s); }), "warmup_epochs"));
  s.warmup_epochs = 0;
  EXPECT_NO_THROW(validate_schedule(s));

  EXPECT_TRUE(contains(error_of([&] { lr_at(s, -1, kIpe, 10); }), "iteration"));
  EXPECT_TRUE(contains(error_of([&] { lr_at(s, 0, 0, 10); }), "iters_per_epoch"));
  LrSchedule c = parse_schedule("cosine", 0.1f);
  c.warmup_epochs = 5;
  EXPECT_TRUE(contains(error_of([&] { lr_at(c, 0, kIpe, 5); }), "cosine needs total_epochs (5) > warmup_epochs (5)"));
  EXPECT_TRUE(contains(error_of([&] { lr_at(c, 0, kIpe, 3); }), "exceeds total_epochs"));
}

}  // namespace
}  // namespace qatlab
