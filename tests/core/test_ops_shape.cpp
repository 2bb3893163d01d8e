// test_ops_shape.cpp: reshape, flatten, slice, concat and transpose2d against plain loops, with their
// gradients.
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

// ---------------------------------------------------------------------------------------- reshape

TEST(ReshapeOp, SharesTheBufferAndInfersMinusOne) {
  Rng rng(1);
  Tensor x = random_tensor({2, 3, 4}, rng);
  Tensor y = reshape(x, {4, -1});
  EXPECT_EQ(y.shape(), (Shape{4, 6}));
  EXPECT_EQ(y.data(), x.data());  // same storage, no copy
  x.data()[5] = 42.0f;
  EXPECT_EQ(y.data()[5], 42.0f);
  EXPECT_EQ(reshape(x, {-1}).shape(), (Shape{24}));
  EXPECT_EQ(reshape(x, {2, -1, 3}).shape(), (Shape{2, 4, 3}));
  EXPECT_EQ(reshape(Tensor::scalar(1.0f), {1, 1}).shape(), (Shape{1, 1}));
}

TEST(ReshapeOp, RejectsBadShapes) {
  Tensor x = Tensor::zeros({2, 3, 4});
  EXPECT_TRUE(throws_with([&] { reshape(x, {5, 5}); }, {"reshape", "(2, 3, 4)", "24", "(5, 5)"}));
  EXPECT_TRUE(throws_with([&] { reshape(x, {-1, -1}); }, {"more than one -1"}));
  EXPECT_TRUE(throws_with([&] { reshape(x, {5, -1}); }, {"(5, -1)", "(2, 3, 4)"}));
  EXPECT_TRUE(throws_with([&] { reshape(x, {-2, 12}); }, {"negative"}));
}

TEST(ReshapeOp, Gradient) {
  Rng rng(2);
  Tensor x = random_tensor({2, 6}, rng);
  // Multiply after reshaping so each element's gradient is distinct.
  Tensor w = random_tensor({3, 4}, rng);
  EXPECT_GRADS_OK([](In in) { return mul(reshape(in[0], {3, 4}), in[1]); }, {x, w});
}

// ---------------------------------------------------------------------------------------- flatten

TEST(FlattenOp, KeepsLeadingDimensions) {
  Tensor x = Tensor::zeros({2, 3, 4, 5});
  EXPECT_EQ(flatten(x).shape(), (Shape{2, 60}));
  EXPECT_EQ(flatten(x, 0).shape(), (Shape{120}));
  EXPECT_EQ(flatten(x, 2).shape(), (Shape{2, 3, 20}));
  EXPECT_EQ(flatten(x, -1).shape(), (Shape{2, 3, 4, 5}));
  EXPECT_TRUE(throws_with([&] { flatten(x, 4); }, {"flatten", "4", "(2, 3, 4, 5)"}));
  Rng rng(3);
  EXPECT_GRADS_OK([](In in) { return flatten(in[0]); }, {random_tensor({2, 2, 3}, rng)});
}

// ------------------------------------------------------------------------------------------ slice

TEST(SliceOp, ForwardMatchesLoops) {
  Rng rng(4);
  const int64_t A = 3, B = 5, C = 4;
  Tensor x = random_tensor({A, B, C}, rng);
  const Tensor s1 = slice(x, 1, 1, 4);  // (A, 3, C)
  ASSERT_EQ(s1.shape(), (Shape{A, 3, C}));
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < C; ++c) EXPECT_EQ(s1.data()[(a * 3 + b) * C + c], x.data()[(a * B + b + 1) * C + c]);

  const Tensor s0 = slice(x, 0, 2, 3);  // (1, B, C)
  ASSERT_EQ(s0.shape(), (Shape{1, B, C}));
  for (int64_t i = 0; i < B * C; ++i) EXPECT_EQ(s0.data()[i], x.data()[2 * B * C + i]);

  const Tensor sl = slice(x, -1, 0, 2);  // (A, B, 2)
  ASSERT_EQ(sl.shape(), (Shape{A, B, 2}));
  for (int64_t r = 0; r < A * B; ++r)
    for (int64_t c = 0; c < 2; ++c) EXPECT_EQ(sl.data()[r * 2 + c], x.data()[r * C + c]);

  EXPECT_EQ(slice(x, 1, 2, 2).shape(), (Shape{A, 0, C}));
}

TEST(SliceOp, GradientAndErrors) {
  Rng rng(5);
  Tensor x = random_tensor({3, 5, 2}, rng);
  EXPECT_GRADS_OK([](In in) { return slice(in[0], 1, 1, 4); }, {x});
  EXPECT_GRADS_OK([](In in) { return slice(in[0], -1, 1, 2); }, {x});
  EXPECT_TRUE(throws_with([&] { slice(x, 1, 3, 6); }, {"slice", "[3, 6)", "(3, 5, 2)"}));
  EXPECT_TRUE(throws_with([&] { slice(x, 1, 3, 2); }, {"slice", "[3, 2)"}));
  EXPECT_TRUE(throws_with([&] { slice(x, 3, 0, 1); }, {"slice", "dim 3"}));
}

// ----------------------------------------------------------------------------------------- concat

TEST(ConcatOp, ForwardMatchesLoops) {
  Rng rng(6);
  Tensor a = random_tensor({2, 1, 3}, rng);
  Tensor b = random_tensor({2, 4, 3}, rng);
  Tensor c = random_tensor({2, 2, 3}, rng);
  const Tensor out = concat({a, b, c}, 1);  // (2, 7, 3)
  ASSERT_EQ(out.shape(), (Shape{2, 7, 3}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 7; ++j)
      for (int64_t k = 0; k < 3; ++k) {
        const float expect = j < 1   ? a.data()[(i * 1 + j) * 3 + k]
                             : j < 5 ? b.data()[(i * 4 + j - 1) * 3 + k]
                                     : c.data()[(i * 2 + j - 5) * 3 + k];
        EXPECT_EQ(out.data()[(i * 7 + j) * 3 + k], expect);
      }
  const Tensor first = concat({a, a}, 0);  // (4, 1, 3): the second copy follows the first
  ASSERT_EQ(first.shape(), (Shape{4, 1, 3}));
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(first.data()[6 + i], a.data()[i]);
  EXPECT_EQ(concat({a, a}, -1).shape(), (Shape{2, 1, 6}));
}

TEST(ConcatOp, GradientAndErrors) {
  Rng rng(7);
  Tensor a = random_tensor({2, 3}, rng);
  Tensor b = random_tensor({2, 1}, rng);
  EXPECT_GRADS_OK([](In in) { return concat({in[0], in[1]}, 1); }, {a, b});
  // The same tensor twice gets both slices' gradients.
  EXPECT_GRADS_OK([](In in) { return concat({in[0], in[1], in[0]}, -1); }, {a, b});
  // Only some inputs need a gradient.
  test::GradCheckOptions opts;
  opts.constants = {0};
  EXPECT_GRADS_OK([](In in) { return concat({in[0], in[1]}, 1); }, {a, b}, opts);

  EXPECT_TRUE(throws_with([&] { concat({a, b}, 0); }, {"concat", "(2, 1)", "(2, 3)"}));
  EXPECT_TRUE(throws_with([&] { concat({}, 0); }, {"concat"}));
  EXPECT_TRUE(throws_with([&] { concat({a, Tensor::zeros({2, 3, 1})}, 0); }, {"concat", "(2, 3, 1)"}));
}

// ------------------------------------------------------------------------------------ transpose2d

TEST(Transpose2dOp, ForwardMatchesLoopsSmallAndLarge) {
  Rng rng(8);
  for (const auto& [m, n] : std::vector<std::pair<int64_t, int64_t>>{{3, 5}, {1, 7}, {300, 170}}) {
    Tensor x = random_tensor({m, n}, rng);
    const Tensor t = transpose2d(x);
    ASSERT_EQ(t.shape(), (Shape{n, m}));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(t.data()[j * m + i], x.data()[i * n + j]);
  }
}

TEST(Transpose2dOp, GradientAndErrors) {
  Rng rng(9);
  EXPECT_GRADS_OK([](In in) { return transpose2d(in[0]); }, {random_tensor({4, 3}, rng)});
  EXPECT_TRUE(throws_with([] { transpose2d(Tensor::zeros({2, 3, 4})); }, {"transpose2d", "(2, 3, 4)"}));
}

}  // namespace
}  // namespace qatlab
