// test_ops_elementwise.cpp: broadcasting add/sub/mul/div and the unary maps, forward against plain
// loops and backward against finite differences.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_away_from;
using test::random_tensor;
using test::throws_with;

// --------------------------------------------------------------------------------- broadcast_shapes

TEST(BroadcastShapesOp, AlignsTrailingDimensions) {
  EXPECT_EQ(broadcast_shapes({2, 3}, {2, 3}), (Shape{2, 3}));
  EXPECT_EQ(broadcast_shapes({2, 3, 4, 5}, {3, 1, 1}), (Shape{2, 3, 4, 5}));
  EXPECT_EQ(broadcast_shapes({4, 1}, {1, 5}), (Shape{4, 5}));
  EXPECT_EQ(broadcast_shapes({}, {7, 2}), (Shape{7, 2}));
  EXPECT_EQ(broadcast_shapes({2, 1, 3}, {4, 1}), (Shape{2, 4, 3}));
  EXPECT_EQ(broadcast_shapes({0, 3}, {1, 3}), (Shape{0, 3}));
}

TEST(BroadcastShapesOp, MismatchNamesBothShapes) {
  EXPECT_TRUE(throws_with([] { broadcast_shapes({2, 3}, {4}); }, {"(2, 3)", "(4)"}));
  EXPECT_TRUE(throws_with([] { add(Tensor::zeros({2, 3}), Tensor::zeros({2, 4})); }, {"add", "(2, 3)", "(2, 4)"}));
  EXPECT_TRUE(throws_with([] { mul(Tensor::zeros({5, 3, 2}), Tensor::zeros({3, 3})); }, {"mul", "(5, 3, 2)", "(3, 3)"}));
}

// ------------------------------------------------------------------------------ binary, same shape

TEST(BinaryOp, SameShapeForwardMatchesLoops) {
  Rng rng(1);
  Tensor a = random_tensor({3, 4}, rng);
  Tensor b = random_tensor({3, 4}, rng, 0.5f, 2.0f);  // away from 0 for div
  const Tensor s = add(a, b), d = sub(a, b), m = mul(a, b), q = div(a, b);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_FLOAT_EQ(s.data()[i], a.data()[i] + b.data()[i]);
    EXPECT_FLOAT_EQ(d.data()[i], a.data()[i] - b.data()[i]);
    EXPECT_FLOAT_EQ(m.data()[i], a.data()[i] * b.data()[i]);
    EXPECT_FLOAT_EQ(q.data()[i], a.data()[i] / b.data()[i]);
  }
}

TEST(BinaryOp, SameShapeGradients) {
  Rng rng(2);
  Tensor a = random_tensor({3, 4}, rng);
  Tensor b = random_tensor({3, 4}, rng, 0.5f, 2.0f);
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {a, b});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, {a, b});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, b});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {a, b});
}

// ------------------------------------------------------------------------------ binary, broadcasting

TEST(BinaryOp, ChannelBroadcastNCHWForward) {
  // (N, C, H, W) + (C, 1, 1): one value per channel.
  Rng rng(3);
  const int64_t N = 2, C = 3, H = 4, W = 5;
  Tensor x = random_tensor({N, C, H, W}, rng);
  Tensor c = random_tensor({C, 1, 1}, rng, 0.5f, 2.0f);
  const Tensor s = add(x, c), q = div(x, c), r = sub(c, x);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ch = 0; ch < C; ++ch)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t i = ((n * C + ch) * H + h) * W + w;
          EXPECT_FLOAT_EQ(s.data()[i], x.data()[i] + c.data()[ch]);
          EXPECT_FLOAT_EQ(q.data()[i], x.data()[i] / c.data()[ch]);
          EXPECT_FLOAT_EQ(r.data()[i], c.data()[ch] - x.data()[i]);
        }
  EXPECT_EQ(s.shape(), (Shape{N, C, H, W}));
}

TEST(BinaryOp, ChannelBroadcastNCHWGradients) {
  Rng rng(4);
  Tensor x = random_tensor({2, 3, 4, 5}, rng);
  Tensor c = random_tensor({3, 1, 1}, rng, 0.5f, 2.0f);
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {x, c});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {x, c});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {x, c});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return sub(in[1], in[0]); }, {x, c});
}

TEST(BinaryOp, BiasBroadcastNCForwardAndGradients) {
  // (N, C) * (C): the trailing-dimension case.
  Rng rng(5);
  const int64_t N = 4, C = 6;
  Tensor x = random_tensor({N, C}, rng);
  Tensor v = random_tensor({C}, rng);
  const Tensor m = mul(x, v), s = sub(v, x);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ch = 0; ch < C; ++ch) {
      EXPECT_FLOAT_EQ(m.data()[n * C + ch], x.data()[n * C + ch] * v.data()[ch]);
      EXPECT_FLOAT_EQ(s.data()[n * C + ch], v.data()[ch] - x.data()[n * C + ch]);
    }
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {x, v});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return sub(in[1], in[0]); }, {x, v});
}

TEST(BinaryOp, ScalarOperandForwardAndGradients) {
  Rng rng(6);
  Tensor x = random_tensor({3, 4}, rng, 0.5f, 2.0f);
  Tensor s0 = Tensor::scalar(1.5f);           // shape ()
  Tensor s1 = Tensor::from_vector({1}, {-0.75f});  // shape (1)
  const Tensor a = mul(x, s0), b = div(s1, x), c = sub(x, s1);
  EXPECT_EQ(b.shape(), (Shape{3, 4}));
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_FLOAT_EQ(a.data()[i], x.data()[i] * 1.5f);
    EXPECT_FLOAT_EQ(b.data()[i], -0.75f / x.data()[i]);
    EXPECT_FLOAT_EQ(c.data()[i], x.data()[i] + 0.75f);
  }
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {x, s0});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return div(in[1], in[0]); }, {x, s1});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return add(in[1], in[0]); }, {x, s1});
}

TEST(BinaryOp, GeneralBroadcastForwardAndGradients) {
  // (N, 1) + (1, C) and (2, 1, 3) * (4, 1): both operands stretched.
  Rng rng(7);
  Tensor col = random_tensor({4, 1}, rng);
  Tensor row = random_tensor({1, 5}, rng);
  const Tensor s = add(col, row);
  ASSERT_EQ(s.shape(), (Shape{4, 5}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 5; ++j) EXPECT_FLOAT_EQ(s.data()[i * 5 + j], col.data()[i] + row.data()[j]);
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return add(in[0], in[1]); }, {col, row});

  Tensor a = random_tensor({2, 1, 3}, rng);
  Tensor b = random_tensor({4, 1}, rng, 0.5f, 2.0f);
  const Tensor m = mul(a, b), q = div(a, b);
  ASSERT_EQ(m.shape(), (Shape{2, 4, 3}));
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 4; ++j)
      for (int64_t k = 0; k < 3; ++k) {
        EXPECT_FLOAT_EQ(m.data()[(i * 4 + j) * 3 + k], a.data()[i * 3 + k] * b.data()[j]);
        EXPECT_FLOAT_EQ(q.data()[(i * 4 + j) * 3 + k], a.data()[i * 3 + k] / b.data()[j]);
      }
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {a, b});
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return div(in[0], in[1]); }, {a, b});

  // A stretched dimension inside the operand's span: (3, 1, 4) against (2, 3, 5, 4).
  Tensor p = random_tensor({3, 1, 4}, rng);
  Tensor big = random_tensor({2, 3, 5, 4}, rng);
  EXPECT_GRADS_OK([](const std::vector<Tensor>& in) { return sub(in[0], in[1]); }, {p, big});
}

TEST(BinaryOp, LargeBroadcastMatchesLoopsOnParallelPath) {
  // Above the threading threshold: forward values and the summed-back gradient against plain loops.
  Rng rng(8);
  const int64_t N = 16, C = 32, H = 12, W = 12;  // 73728 elements
  Tensor x = random_tensor({N, C, H, W}, rng);
  Tensor c = random_tensor({C, 1, 1}, rng).set_requires_grad(true);
  Tensor out = mul(x, c);
  Tensor seed = random_tensor({N, C, H, W}, rng);
  out.backward(seed);
  std::vector<double> expect_grad(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ch = 0; ch < C; ++ch)
      for (int64_t k = 0; k < H * W; ++k) {
        const int64_t i = (n * C + ch) * H * W + k;
        ASSERT_EQ(out.data()[i], x.data()[i] * c.data()[ch]);
        expect_grad[ch] += static_cast<double>(seed.data()[i]) * x.data()[i];
      }
  for (int64_t ch = 0; ch < C; ++ch) EXPECT_NEAR(c.grad().data()[ch], expect_grad[ch], 1e-4);

  // General layout above the threshold, both operands stretched: (64, 1, 32) + (1, 24, 1).
  Tensor a = random_tensor({64, 1, 32}, rng);
  Tensor b = random_tensor({1, 24, 1}, rng);
  const Tensor s = add(a, b);
  for (int64_t i = 0; i < 64; ++i)
    for (int64_t j = 0; j < 24; ++j)
      for (int64_t k = 0; k < 32; ++k)
        ASSERT_EQ(s.data()[(i * 24 + j) * 32 + k], a.data()[i * 32 + k] + b.data()[j]);
}

// --------------------------------------------------------------------------------------------- unary

TEST(UnaryOp, ForwardMatchesStd) {
  Rng rng(9);
  Tensor x = random_tensor({5, 7}, rng, -8.0f, 8.0f);
  Tensor pos = random_tensor({5, 7}, rng, 0.1f, 4.0f);
  const Tensor sc = scale(x, -2.5f), as = add_scalar(x, 0.25f), ng = neg(x), rl = relu(x), cl = clamp(x, -1.0f, 2.0f),
               r6 = relu6(x), sg = sigmoid(x), th = tanh(x), sq = square(x), rt = sqrt(pos), ex = exp(x), lg = log(pos);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.data()[i], p = pos.data()[i];
    EXPECT_FLOAT_EQ(sc.data()[i], v * -2.5f);
    EXPECT_FLOAT_EQ(as.data()[i], v + 0.25f);
    EXPECT_FLOAT_EQ(ng.data()[i], -v);
    EXPECT_FLOAT_EQ(rl.data()[i], v > 0 ? v : 0.0f);
    EXPECT_FLOAT_EQ(cl.data()[i], v < -1.0f ? -1.0f : (v > 2.0f ? 2.0f : v));
    EXPECT_FLOAT_EQ(r6.data()[i], v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v));
    EXPECT_NEAR(sg.data()[i], 1.0 / (1.0 + std::exp(-static_cast<double>(v))), 1e-6);
    EXPECT_NEAR(th.data()[i], std::tanh(static_cast<double>(v)), 1e-6);
    EXPECT_FLOAT_EQ(sq.data()[i], v * v);
    EXPECT_FLOAT_EQ(rt.data()[i], std::sqrt(p));
    EXPECT_FLOAT_EQ(ex.data()[i], std::exp(v));
    EXPECT_FLOAT_EQ(lg.data()[i], std::log(p));
  }
}

TEST(UnaryOp, SigmoidIsFiniteAtExtremes) {
  const Tensor y = sigmoid(Tensor::from_vector({4}, {-200.0f, -50.0f, 50.0f, 200.0f}));
  EXPECT_EQ(y.data()[0], 0.0f);
  EXPECT_GT(y.data()[1], 0.0f);
  EXPECT_LT(y.data()[1], 1e-20f);
  EXPECT_EQ(y.data()[2], 1.0f);
  EXPECT_EQ(y.data()[3], 1.0f);
}

TEST(UnaryOp, Gradients) {
  Rng rng(10);
  using In = const std::vector<Tensor>&;
  Tensor x = random_tensor({3, 5}, rng, -2.0f, 2.0f);
  Tensor pos = random_tensor({3, 5}, rng, 0.5f, 3.0f);
  EXPECT_GRADS_OK([](In in) { return scale(in[0], -1.75f); }, {x});
  EXPECT_GRADS_OK([](In in) { return add_scalar(in[0], 3.0f); }, {x});
  EXPECT_GRADS_OK([](In in) { return neg(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return sigmoid(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return tanh(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return square(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return exp(in[0]); }, {x});
  EXPECT_GRADS_OK([](In in) { return sqrt(in[0]); }, {pos});
  EXPECT_GRADS_OK([](In in) { return log(in[0]); }, {pos});

  // Kinked maps: values kept 0.05 away from the kinks, beyond the finite-difference step.
  Tensor around0 = random_away_from({4, 5}, rng, {0.0f}, 0.05f);
  EXPECT_GRADS_OK([](In in) { return relu(in[0]); }, {around0});
  // add_relu's kink is where a + b = 0: b is a's negation plus values kept 0.05 away from 0.
  Tensor a = random_away_from({4, 5}, rng, {0.0f}, 0.05f);
  Tensor b = sub(random_away_from({4, 5}, rng, {0.0f}, 0.05f), a).detach();
  EXPECT_GRADS_OK([](In in) { return add_relu(in[0], in[1]); }, {a, b});
  Tensor around_clamp = random_away_from({4, 5}, rng, {-0.5f, 0.5f}, 0.05f);
  EXPECT_GRADS_OK([](In in) { return clamp(in[0], -0.5f, 0.5f); }, {around_clamp});
  Tensor around6 = random_away_from({4, 5}, rng, {0.0f, 6.0f}, 0.05f, -2.0f, 8.0f);
  EXPECT_GRADS_OK([](In in) { return relu6(in[0]); }, {around6});
}

// add_relu is relu(add(a, b)) bit for bit, values and both gradients (also accumulated into an operand
// that already has one, as a residual block's input does), and refuses operands of different shapes.
TEST(BinaryOp, AddReluIsReluOfAddBitForBit) {
  Rng rng(17);
  const Shape shape{3, 4, 5, 7};
  Tensor a0 = random_away_from(shape, rng, {0.0f}, 0.0f, -2.0f, 2.0f);
  Tensor b0 = random_away_from(shape, rng, {0.0f}, 0.0f, -2.0f, 2.0f);
  Tensor g = random_away_from(shape, rng, {0.0f}, 0.0f, -1.0f, 1.0f);
  Tensor y_fused, y_plain;
  std::vector<float> ga[2], gb[2];
  for (int fused = 0; fused < 2; ++fused) {
    Tensor a = a0.clone().set_requires_grad(true), b = b0.clone().set_requires_grad(true);
    Tensor y = fused ? add_relu(a, b) : relu(add(a, b));
    // b is used twice (a shortcut): its gradient accumulates onto the one from the second use
    Tensor loss = add(sum(mul(y, g)), sum(mul(b, g)));
    loss.backward();
    (fused ? y_fused : y_plain) = y;
    ga[fused] = a.grad().to_vector(), gb[fused] = b.grad().to_vector();
  }
  EXPECT_EQ(y_fused.to_vector(), y_plain.to_vector());
  EXPECT_EQ(ga[1], ga[0]);
  EXPECT_EQ(gb[1], gb[0]);
  EXPECT_THROW(add_relu(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})), std::invalid_argument);
}

TEST(UnaryOp, ClampGradientIsOneStrictlyInsideOnly) {
  Tensor x = Tensor::from_vector({6}, {-2.0f, -1.0f, -0.5f, 0.5f, 1.0f, 3.0f}).set_requires_grad(true);
  Tensor y = clamp(x, -1.0f, 1.0f);
  y.backward(Tensor::ones({6}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{0, 0, 1, 1, 0, 0}));

  Tensor r = Tensor::from_vector({3}, {-1.0f, 0.0f, 2.0f}).set_requires_grad(true);
  relu(r).backward(Tensor::ones({3}));
  EXPECT_EQ(r.grad().to_vector(), (std::vector<float>{0, 0, 1}));
}

TEST(UnaryOp, ClampRejectsInvertedBounds) {
  EXPECT_TRUE(throws_with([] { clamp(Tensor::zeros({2}), 2.0f, 1.0f); }, {"clamp", "2", "1"}));
}

}  // namespace
}  // namespace qatlab
