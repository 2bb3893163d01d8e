// test_int8_kernels.cpp: the reference int8 kernels (conv, fully connected, pooling, add, requantize, quantize /
// dequantize) against hand-computed values, an independent int64 re-derivation (explicitly padded
// input) and the float semantics they stand for; the packed-weight conv and fully connected against
// the int8 ones on the unpacked codes; the fast max pool and the vectorised quantize against the
// reference loop and the scalar formula.
//
// Shape letters: N batch, C input channels, H x W input (Hp x Wp padded), OC output channels, KH x KW
// kernel, OH x OW output, G groups, IN / OUT features.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/ops.h"
#include "core/rng.h"
#include "quant/engine/int8_gemm.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/packed_codes.h"
#include "quant/engine/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::throws_with;

using test::random_codes;
using test::uniform_int;

// A quantized conv built from real scales, the way the converter builds one.
struct RealConv {
  ConvInt8Params p;
  Shape in, f;
  float s_in = 0.02f, s_out = 0.05f;
  int32_t zp_in = 0, zp_out = 0;
  std::vector<float> s_w;  // (OC)
  std::vector<int8_t> x, w;
  std::vector<int32_t> bias;
};

RealConv make_real_conv(Rng& rng, Shape in, Shape f, int64_t stride, int64_t pad, int64_t groups, int32_t zp_in,
                        int32_t zp_out) {
  RealConv c;
  c.in = in, c.f = f;
  c.p.stride_h = c.p.stride_w = stride;
  c.p.pad_h = c.p.pad_w = pad;
  c.p.groups = groups;
  c.zp_in = zp_in, c.zp_out = zp_out;
  c.p.input_offset = -zp_in;
  c.p.output_offset = zp_out;
  const int64_t oc = f[0], k = f[1] * f[2] * f[3];
  c.s_out = 0.01f * static_cast<float>(std::sqrt(static_cast<double>(k)));
  for (int64_t o = 0; o < oc; ++o) {
    c.s_w.push_back(0.005f * (1.0f + rng.uniform()));
    int32_t m = 0;
    int s = 0;
    quantize_multiplier(double(c.s_in) * c.s_w[o] / c.s_out, &m, &s);
    c.p.output_multiplier.push_back(m);
    c.p.output_shift.push_back(s);
    c.bias.push_back(uniform_int(rng, -3000, 3000));
  }
  c.x = random_codes(rng, shape_numel(in), -128, 127);
  c.w = random_codes(rng, shape_numel(f), -127, 127);
  return c;
}

// Independent re-derivation: the input explicitly padded with its zero point, then (x - zp) * w summed
// in int64 over each window, then the shared requantize().
std::vector<int8_t> model_conv(const RealConv& c) {
  const int64_t N = c.in[0], C = c.in[1], H = c.in[2], W = c.in[3];
  const int64_t OC = c.f[0], CG = c.f[1], KH = c.f[2], KW = c.f[3], G = c.p.groups, OCG = OC / G;
  const int64_t P = c.p.pad_h, S = c.p.stride_h, Hp = H + 2 * P, Wp = W + 2 * P;
  const int64_t OH = (Hp - KH) / S + 1, OW = (Wp - KW) / S + 1;
  std::vector<int32_t> padded(N * C * Hp * Wp, c.zp_in);  // (N, C, Hp, Wp)
  for (int64_t i = 0; i < N * C; ++i)
    for (int64_t y = 0; y < H; ++y)
      for (int64_t x = 0; x < W; ++x) padded[(i * Hp + y + P) * Wp + x + P] = c.x[(i * H + y) * W + x];
  std::vector<int8_t> out(N * OC * OH * OW);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          int64_t acc = c.bias[o];
          for (int64_t ci = 0; ci < CG; ++ci)
            for (int64_t ky = 0; ky < KH; ++ky)
              for (int64_t kx = 0; kx < KW; ++kx) {
                const int64_t ch = (o / OCG) * CG + ci;
                acc += int64_t{padded[((n * C + ch) * Hp + oy * S + ky) * Wp + ox * S + kx] - c.zp_in} *
                       c.w[((o * CG + ci) * KH + ky) * KW + kx];
              }
          out[((n * OC + o) * OH + oy) * OW + ox] =
              requantize(static_cast<int32_t>(acc), c.p.output_multiplier[o], c.p.output_shift[o], c.p.output_offset,
                         c.p.quantized_activation_min, c.p.quantized_activation_max);
        }
  return out;
}

std::vector<int8_t> run_conv(const RealConv& c) {
  std::vector<int8_t> y(shape_numel(conv2d_int8_output_shape(c.p, c.in, c.f)));
  conv2d_int8_reference(c.p, c.x.data(), c.in, c.w.data(), c.f, c.bias.data(), y.data());
  return y;
}

// The float semantics: dequantize, float conv with zero padding (core's conv2d), requantize in
// double. The integer result may differ by the two fixed-point roundings: at most 1 code.
void expect_close_to_float_conv(const RealConv& c, const std::vector<int8_t>& got) {
  Tensor x = Tensor::empty(c.in), w = Tensor::empty(c.f), b = Tensor::empty({c.f[0]});
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = c.s_in * float(c.x[i] - c.zp_in);
  const int64_t per_oc = shape_numel(c.f) / c.f[0];
  for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = c.s_w[i / per_oc] * float(c.w[i]);
  for (int64_t o = 0; o < c.f[0]; ++o) b.data()[o] = c.s_in * c.s_w[o] * float(c.bias[o]);
  Conv2dParams fp;
  fp.stride_h = c.p.stride_h, fp.stride_w = c.p.stride_w, fp.pad_h = c.p.pad_h, fp.pad_w = c.p.pad_w;
  fp.groups = c.p.groups;
  NoGradGuard no_grad;
  const Tensor y = conv2d(x, w, b, fp);
  ASSERT_EQ(y.numel(), static_cast<int64_t>(got.size()));
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double q = std::clamp<double>(std::round(y.data()[i] / c.s_out) + c.zp_out, c.p.quantized_activation_min,
                                        c.p.quantized_activation_max);
    ASSERT_LE(std::fabs(q - got[i]), 1.0) << "output " << i << " real " << y.data()[i];
  }
}

// ---------------------------------------------------------------------------------------------- conv

TEST(ConvInt8Reference, HandComputedSmallCase) {
  // One 3x3 image (zero point 2), one 2x2 filter, bias 10, multiplier 0.5, output zero point -3.
  ConvInt8Params p;
  p.input_offset = -2;
  p.output_offset = -3;
  p.output_multiplier = {1 << 30};
  p.output_shift = {0};
  const std::vector<int8_t> x = {3, 4, 5, 6, 7, 8, 9, 10, 11};  // minus 2: 1..9
  const std::vector<int8_t> w = {1, 0, -1, 2};
  const std::vector<int32_t> bias = {10};
  std::vector<int8_t> y(4);
  conv2d_int8_reference(p, x.data(), {1, 1, 3, 3}, w.data(), {1, 1, 2, 2}, bias.data(), y.data());
  // windows (1 2 4 5) -> 1 - 4 + 10 = 7, (2 3 5 6) -> 2 - 5 + 12 = 9, (4 5 7 8) -> 13, (5 6 8 9) -> 15;
  // + 10 bias, * 0.5 (ties up), - 3.
  EXPECT_EQ(std::vector<int>(y.begin(), y.end()), (std::vector<int>{6, 7, 9, 10}));
  // With padding 1 the corner window sees only the pixel 1 (times w[3] = 2): (2 + 10) / 2 - 3 = 3.
  p.pad_h = p.pad_w = 1;
  std::vector<int8_t> yp(16);
  conv2d_int8_reference(p, x.data(), {1, 1, 3, 3}, w.data(), {1, 1, 2, 2}, bias.data(), yp.data());
  EXPECT_EQ(yp[0], 3);
}

TEST(ConvInt8Reference, MatchesPaddedModelAndFloatSemantics) {
  Rng rng(7);
  struct Case {
    Shape in, f;
    int64_t stride, pad, groups;
    int32_t zp_in, zp_out;
  };
  const std::vector<Case> cases = {
      {{2, 3, 7, 6}, {4, 3, 3, 3}, 1, 1, 1, 37, -5},    // padding with a non-zero zero point
      {{1, 2, 9, 9}, {3, 2, 3, 3}, 2, 2, 1, -128, 10},  // stride 2, the most negative zero point
      {{2, 4, 6, 5}, {6, 2, 3, 2}, 1, 1, 2, 127, 0},    // groups = 2
      {{1, 5, 6, 6}, {5, 1, 3, 3}, 1, 1, 5, -20, -128}, // depthwise
      {{3, 1, 28, 28}, {6, 1, 5, 5}, 1, 2, 1, -128, -128},  // LeNet's first layer
  };
  for (const Case& k : cases) {
    RealConv c = make_real_conv(rng, k.in, k.f, k.stride, k.pad, k.groups, k.zp_in, k.zp_out);
    const std::vector<int8_t> got = run_conv(c);
    EXPECT_EQ(got, model_conv(c)) << shape_str(k.in) << " " << shape_str(k.f);
    expect_close_to_float_conv(c, got);
  }
}

TEST(ConvInt8Reference, ActivationClampIsAFusedRelu) {
  Rng rng(8);
  RealConv c = make_real_conv(rng, {2, 3, 8, 8}, {4, 3, 3, 3}, 1, 1, 1, 5, -20);
  c.p.quantized_activation_min = -20;  // real 0: ReLU
  c.p.quantized_activation_max = 90;
  const std::vector<int8_t> got = run_conv(c);
  EXPECT_EQ(got, model_conv(c));
  int at_floor = 0;
  for (int8_t v : got) {
    EXPECT_GE(v, -20);
    EXPECT_LE(v, 90);
    at_floor += v == -20;
  }
  EXPECT_GT(at_floor, 0);
  expect_close_to_float_conv(c, got);
}

TEST(ConvInt8Reference, NullBiasIsZeroBias) {
  Rng rng(9);
  RealConv c = make_real_conv(rng, {1, 2, 5, 5}, {3, 2, 3, 3}, 1, 1, 1, 3, 0);
  std::vector<int8_t> without(shape_numel(conv2d_int8_output_shape(c.p, c.in, c.f)));
  conv2d_int8_reference(c.p, c.x.data(), c.in, c.w.data(), c.f, nullptr, without.data());
  std::fill(c.bias.begin(), c.bias.end(), 0);
  EXPECT_EQ(without, run_conv(c));
}

TEST(ConvInt8Reference, BadShapesAndSettingsThrow) {
  ConvInt8Params p;
  p.output_multiplier = {1 << 30, 1 << 30};
  p.output_shift = {0, 0};
  EXPECT_TRUE(throws_with([&] { conv2d_int8_output_shape(p, {1, 3, 8, 8}, {2, 4, 3, 3}); },
                          {"(2, 4, 3, 3)", "(1, 3, 8, 8)"}));
  EXPECT_TRUE(throws_with([&] { conv2d_int8_output_shape(p, {1, 3, 8}, {2, 3, 3, 3}); }, {"(1, 3, 8)"}));
  p.groups = 2;
  EXPECT_TRUE(throws_with([&] { conv2d_int8_output_shape(p, {1, 3, 8, 8}, {2, 1, 3, 3}); },
                          {"not divisible by groups 2"}));
  p.groups = 1;
  p.quantized_activation_min = 5, p.quantized_activation_max = 4;
  EXPECT_TRUE(throws_with([&] { conv2d_int8_output_shape(p, {1, 3, 8, 8}, {2, 3, 3, 3}); }, {"[5, 4]"}));
  p.quantized_activation_min = -128, p.quantized_activation_max = 127;
  p.output_multiplier = {1 << 30, -5};
  EXPECT_TRUE(throws_with([&] { conv2d_int8_output_shape(p, {1, 3, 8, 8}, {2, 3, 3, 3}); },
                          {"output_multiplier[1] = -5"}));
  p.output_multiplier = {1 << 30, 1 << 30};
  EXPECT_EQ(conv2d_int8_output_shape(p, {4, 3, 8, 8}, {2, 3, 3, 3}), (Shape{4, 2, 6, 6}));
}

// ----------------------------------------------------------------------------------- fully connected

TEST(FullyConnectedInt8Reference, MatchesInt64ModelAndFloatSemantics) {
  Rng rng(10);
  const int64_t N = 3, IN = 37, OUT = 11;
  const float s_in = 0.03f, s_out = 0.1f;
  const int32_t zp_in = -17, zp_out = 9;
  FullyConnectedInt8Params p;
  p.input_offset = -zp_in;
  p.output_offset = zp_out;
  std::vector<float> s_w(OUT);
  std::vector<int32_t> bias(OUT);
  for (int64_t o = 0; o < OUT; ++o) {
    s_w[o] = 0.004f * (1.0f + rng.uniform());
    int32_t m = 0;
    int s = 0;
    quantize_multiplier(double(s_in) * s_w[o] / s_out, &m, &s);
    p.output_multiplier.push_back(m);
    p.output_shift.push_back(s);
    bias[o] = uniform_int(rng, -5000, 5000);
  }
  const std::vector<int8_t> x = random_codes(rng, N * IN, -128, 127), w = random_codes(rng, OUT * IN, -127, 127);
  std::vector<int8_t> y(N * OUT);
  fully_connected_int8_reference(p, x.data(), {N, IN}, w.data(), {OUT, IN}, bias.data(), y.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OUT; ++o) {
      int64_t acc = bias[o];
      double real = double(s_in) * s_w[o] * bias[o];
      for (int64_t i = 0; i < IN; ++i) {
        acc += int64_t{x[n * IN + i] - zp_in} * w[o * IN + i];
        real += double(s_in) * (x[n * IN + i] - zp_in) * s_w[o] * w[o * IN + i];
      }
      const int8_t expect = requantize(static_cast<int32_t>(acc), p.output_multiplier[o], p.output_shift[o], zp_out,
                                       -128, 127);
      EXPECT_EQ(y[n * OUT + o], expect) << n << ", " << o;
      EXPECT_LE(std::fabs(std::clamp(std::round(real / s_out) + zp_out, -128.0, 127.0) - y[n * OUT + o]), 1.0);
    }
}

TEST(FullyConnectedInt8Reference, BadShapesThrow) {
  FullyConnectedInt8Params p;
  p.output_multiplier = {1 << 30};
  p.output_shift = {0};
  EXPECT_TRUE(throws_with([&] { fully_connected_int8_output_shape(p, {2, 5}, {1, 4}); }, {"(1, 4)", "(2, 5)"}));
  EXPECT_TRUE(throws_with([&] { fully_connected_int8_output_shape(p, {2, 5}, {3, 5}); }, {"expected 3"}));
  p.output_offset = 300;
  EXPECT_TRUE(throws_with([&] { fully_connected_int8_output_shape(p, {2, 5}, {1, 5}); }, {"output_offset 300"}));
}

// ------------------------------------------------------------------------------------ packed weights

// Random codes of a `bits`-bit symmetric narrow grid ([-1, 1], [-3, 3] or [-7, 7]) and their packed
// form at the storage the grid takes (2 bits for ternary, 4 for 3 and 4 bits).
struct LowBitWeights {
  std::vector<int8_t> codes;
  int storage = 8;
  std::vector<uint8_t> packed;
};

LowBitWeights low_bit_weights(Rng& rng, int64_t n, int bits) {
  const int32_t q = (1 << (bits - 1)) - 1;
  LowBitWeights w;
  w.codes = random_codes(rng, n, -q, q);
  w.storage = storage_bits(-q, q);
  w.packed = pack_codes(w.codes.data(), n, w.storage);
  return w;
}

// The packed conv reads each weight from its packed byte; it must give exactly what the int8 kernel
// gives on the unpacked codes, over groups (depthwise too), padding, strides, odd weight counts
// (a half-used last byte) and bits 2, 3 and 4.
TEST(PackedWeightsReference, ConvEqualsInt8ReferenceOnRandomShapes) {
  Rng rng(20);
  int odd_counts = 0;
  for (int i = 0; i < 400; ++i) {
    const int bits = 2 + i % 3;
    const int64_t kind = rng.below(4);
    const int64_t groups = kind == 0 ? uniform_int(rng, 2, 3) : kind == 1 ? uniform_int(rng, 1, 6) : 1;
    const int64_t cg = kind == 1 ? 1 : uniform_int(rng, 1, 5), ocg = uniform_int(rng, 1, 4);
    const int64_t kh = uniform_int(rng, 1, 5), kw = uniform_int(rng, 1, 5), pad = uniform_int(rng, 0, 2);
    const Shape in = {uniform_int(rng, 1, 3), cg * groups, uniform_int(rng, std::max<int64_t>(1, kh - 2 * pad), kh + 6),
                      uniform_int(rng, std::max<int64_t>(1, kw - 2 * pad), kw + 6)};
    const Shape f = {ocg * groups, cg, kh, kw};
    RealConv c = make_real_conv(rng, in, f, uniform_int(rng, 1, 2), pad, groups, uniform_int(rng, -128, 127),
                                uniform_int(rng, -128, 127));
    c.p.stride_w = uniform_int(rng, 1, 2), c.p.pad_w = std::min<int64_t>(uniform_int(rng, 0, 2), (kw + 1) / 2);
    if (c.in[3] + 2 * c.p.pad_w < kw) c.p.pad_w = pad;
    const LowBitWeights w = low_bit_weights(rng, shape_numel(f), bits);
    c.w = w.codes;
    odd_counts += w.storage < 8 && shape_numel(f) % (8 / w.storage) != 0;
    const int32_t* bias = i % 5 == 0 ? nullptr : c.bias.data();
    const Shape out = conv2d_int8_output_shape(c.p, c.in, c.f);
    std::vector<int8_t> expect(shape_numel(out)), got(shape_numel(out), 0x55);
    conv2d_int8_reference(c.p, c.x.data(), c.in, c.w.data(), c.f, bias, expect.data());
    conv2d_packed_reference(c.p, c.x.data(), c.in, w.packed.data(), w.storage, c.f, bias, got.data());
    ASSERT_EQ(got, expect) << "case " << i << ": " << bits << "-bit weights, input " << shape_str(c.in) << " filter "
                           << shape_str(c.f) << " groups " << groups << " stride " << c.p.stride_h << "x"
                           << c.p.stride_w << " pad " << c.p.pad_h << "x" << c.p.pad_w;
  }
  EXPECT_GT(odd_counts, 30);
}

TEST(PackedWeightsReference, FullyConnectedEqualsInt8ReferenceOnRandomShapes) {
  Rng rng(21);
  for (int i = 0; i < 400; ++i) {
    const int bits = 2 + i % 3;
    const int64_t n = uniform_int(rng, 1, 5), in = uniform_int(rng, 1, 70), out = uniform_int(rng, 1, 20);
    FullyConnectedInt8Params p;
    p.input_offset = -uniform_int(rng, -128, 127);
    p.output_offset = uniform_int(rng, -128, 127);
    p.quantized_activation_min = uniform_int(rng, -128, 0), p.quantized_activation_max = uniform_int(rng, 0, 127);
    for (int64_t o = 0; o < out; ++o) {
      p.output_multiplier.push_back(0), p.output_shift.push_back(0);
      quantize_multiplier(std::exp2(rng.uniform(-12.0f, 0.0f)), &p.output_multiplier.back(), &p.output_shift.back());
    }
    const std::vector<int8_t> x = random_codes(rng, n * in, -128, 127);
    const LowBitWeights w = low_bit_weights(rng, out * in, bits);
    std::vector<int32_t> bias(out);
    for (auto& b : bias) b = uniform_int(rng, -4000, 4000);
    std::vector<int8_t> expect(n * out), got(n * out, 0x55);
    fully_connected_int8_reference(p, x.data(), {n, in}, w.codes.data(), {out, in}, bias.data(), expect.data());
    fully_connected_packed_reference(p, x.data(), {n, in}, w.packed.data(), w.storage, {out, in}, bias.data(),
                                     got.data());
    ASSERT_EQ(got, expect) << "case " << i << ": " << bits << "-bit weights, N " << n << " IN " << in << " OUT " << out;
  }
}

// 8 bits is accepted as plain int8; other widths are refused by name; shapes are checked as in the
// int8 kernels.
TEST(PackedWeightsReference, WidthsAndShapesAreChecked) {
  Rng rng(22);
  RealConv c = make_real_conv(rng, {1, 2, 5, 5}, {3, 2, 3, 3}, 1, 1, 1, 3, 0);
  std::vector<int8_t> expect(shape_numel(conv2d_int8_output_shape(c.p, c.in, c.f))), got(expect.size());
  conv2d_int8_reference(c.p, c.x.data(), c.in, c.w.data(), c.f, c.bias.data(), expect.data());
  conv2d_packed_reference(c.p, c.x.data(), c.in, reinterpret_cast<const uint8_t*>(c.w.data()), 8, c.f, c.bias.data(),
                          got.data());
  EXPECT_EQ(got, expect);
  EXPECT_TRUE(throws_with([&] { conv2d_packed_reference(c.p, c.x.data(), c.in, nullptr, 3, c.f, nullptr, got.data()); },
                          {"conv2d_packed_reference", "3 bits"}));
  EXPECT_TRUE(throws_with([&] { conv2d_packed_reference(c.p, c.x.data(), c.in, nullptr, 4, {3, 3, 3, 3}, nullptr,
                                                        got.data()); },
                          {"(3, 3, 3, 3)"}));
  FullyConnectedInt8Params p;
  p.output_multiplier = {1 << 30};
  p.output_shift = {0};
  EXPECT_TRUE(throws_with([&] { fully_connected_packed_reference(p, c.x.data(), {1, 4}, nullptr, 6, {1, 4}, nullptr,
                                                                 got.data()); },
                          {"fully_connected_packed_reference", "6 bits"}));
  EXPECT_TRUE(throws_with([&] { fully_connected_packed_reference(p, c.x.data(), {1, 4}, nullptr, 2, {1, 5}, nullptr,
                                                                 got.data()); },
                          {"(1, 5)"}));
}

// -------------------------------------------------------------------------------------------- pooling

TEST(PoolInt8, MaxPoolPaddingNeverWins) {
  const std::vector<int8_t> x = {-100, -90, -80, -70};  // (1, 1, 2, 2), all below any padding value
  std::vector<int8_t> y9(9);  // window 2, stride 1, padding 1: (2 + 2 - 2) / 1 + 1 = 3 per axis
  max_pool2d_int8(x.data(), {1, 1, 2, 2}, 2, 1, 1, y9.data());
  EXPECT_EQ(std::vector<int>(y9.begin(), y9.end()), (std::vector<int>{-100, -90, -90, -80, -70, -70, -80, -70, -70}));
}

TEST(PoolInt8, AvgPoolRoundsHalfAwayFromZeroAndCountsPaddingAsZeroPoint) {
  // (1, 2, 2, 2): windows of 2 sum 10 (2.5 -> 3) and -10 (-2.5 -> -3).
  const std::vector<int8_t> x = {1, 2, 3, 4, -1, -2, -3, -4};
  std::vector<int8_t> y(2);
  avg_pool2d_int8(x.data(), {1, 2, 2, 2}, 2, 2, 0, 0, y.data());
  EXPECT_EQ(y[0], 3);
  EXPECT_EQ(y[1], -3);
  const std::vector<int8_t> z = {1, 1, 1, 2, -1, -1, -1, -2};  // 1.25 -> 1, -1.25 -> -1
  avg_pool2d_int8(z.data(), {1, 2, 2, 2}, 2, 2, 0, 0, y.data());
  EXPECT_EQ(y[0], 1);
  EXPECT_EQ(y[1], -1);
  // Padding 1, window 2, stride 2 on a 2x2 plane with zero point 10: each window holds one pixel and
  // three padded positions at code 10 (real 0): (x + 30) / 4.
  const std::vector<int8_t> p = {14, 22, 0, -50};
  std::vector<int8_t> yp(4);
  avg_pool2d_int8(p.data(), {1, 1, 2, 2}, 2, 2, 1, 10, yp.data());
  EXPECT_EQ(std::vector<int>(yp.begin(), yp.end()), (std::vector<int>{11, 13, 8, -5}));  // 11, 13, 7.5, -5
}

TEST(PoolInt8, RandomPoolsMatchDoubleModel) {
  Rng rng(11);
  for (int i = 0; i < 40; ++i) {
    const int64_t k = uniform_int(rng, 1, 4), stride = uniform_int(rng, 1, 3), pad = uniform_int(rng, 0, k / 2);
    const Shape in = {uniform_int(rng, 1, 2), uniform_int(rng, 1, 3), uniform_int(rng, k, 9), uniform_int(rng, k, 9)};
    const int32_t zp = uniform_int(rng, -128, 127);
    const std::vector<int8_t> x = random_codes(rng, shape_numel(in), -128, 127);
    const Shape out = pool2d_int8_output_shape(in, k, stride, pad);
    std::vector<int8_t> ymax(shape_numel(out)), yavg(shape_numel(out));
    max_pool2d_int8_reference(x.data(), in, k, stride, pad, ymax.data());
    avg_pool2d_int8(x.data(), in, k, stride, pad, zp, yavg.data());
    for (int64_t pl = 0; pl < in[0] * in[1]; ++pl)
      for (int64_t oy = 0; oy < out[2]; ++oy)
        for (int64_t ox = 0; ox < out[3]; ++ox) {
          int best = -1000;
          double sum = 0;
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) {
              const int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
              const bool inside = iy >= 0 && iy < in[2] && ix >= 0 && ix < in[3];
              const int v = inside ? x[(pl * in[2] + iy) * in[3] + ix] : zp;
              if (inside) best = std::max(best, v);
              sum += v;
            }
          const int64_t at = (pl * out[2] + oy) * out[3] + ox;
          ASSERT_EQ(ymax[at], best);
          ASSERT_EQ(yavg[at], std::round(sum / double(k * k)));  // std::round: half away from zero
        }
  }
}

TEST(PoolInt8, GlobalAvgPool) {
  Rng rng(12);
  const Shape in = {2, 3, 5, 4};
  const std::vector<int8_t> x = random_codes(rng, shape_numel(in), -128, 127);
  std::vector<int8_t> y(6);
  global_avg_pool_int8(x.data(), in, y.data());
  for (int64_t pl = 0; pl < 6; ++pl) {
    double sum = 0;
    for (int64_t i = 0; i < 20; ++i) sum += x[pl * 20 + i];
    EXPECT_EQ(y[pl], std::round(sum / 20.0));
  }
  const std::vector<int8_t> ties = {1, 2, -1, -2};  // 1.5 -> 2, -1.5 -> -2
  global_avg_pool_int8(ties.data(), {2, 1, 1, 2}, y.data());
  EXPECT_EQ(y[0], 2);
  EXPECT_EQ(y[1], -2);
}

TEST(PoolInt8, BadSettingsThrow) {
  EXPECT_TRUE(throws_with([] { pool2d_int8_output_shape({1, 1, 4, 4}, 2, 2, 2); }, {"padding 2"}));
  EXPECT_TRUE(throws_with([] { pool2d_int8_output_shape({1, 1, 2, 2}, 5, 1, 1); }, {"larger"}));
  EXPECT_TRUE(throws_with([] { pool2d_int8_output_shape({1, 4, 4}, 2, 2, 0); }, {"(1, 4, 4)"}));
}

// ------------------------------------------------------------------------------------------ add

TEST(AddInt8, ParamsFollowTheRecipe) {
  const AddInt8Params p = make_add_params(0.5f, 3, 0.25f, -4, 1.0f, 7, -128, 127);
  EXPECT_EQ(p.left_shift, 20);
  EXPECT_EQ(p.input1_offset, -3);
  EXPECT_EQ(p.input2_offset, 4);
  EXPECT_EQ(p.output_offset, 7);
  // twice_max = 1: input reals 0.5 and 0.25, output real 1 / 2^20.
  EXPECT_EQ(p.input1_multiplier, 1 << 30);
  EXPECT_EQ(p.input1_shift, 0);
  EXPECT_EQ(p.input2_multiplier, 1 << 30);
  EXPECT_EQ(p.input2_shift, -1);
  EXPECT_EQ(p.output_multiplier, 1 << 30);
  EXPECT_EQ(p.output_shift, -19);
  EXPECT_TRUE(throws_with([] { make_add_params(0.0f, 0, 1.0f, 0, 1.0f, 0, -128, 127); }, {"scales"}));
  EXPECT_TRUE(throws_with([] { make_add_params(1.0f, 200, 1.0f, 0, 1.0f, 0, -128, 127); }, {"zero point 200"}));
}

TEST(AddInt8, EqualScalesAddExactly) {
  // Same scale everywhere: real a + b is a whole number of steps, so the result is exact.
  const AddInt8Params p = make_add_params(0.1f, 5, 0.1f, 5, 0.1f, 5, -128, 127);
  std::vector<int8_t> a, b;
  for (int i = -128; i < 128; i += 3)
    for (int j = -128; j < 128; j += 5) a.push_back(int8_t(i)), b.push_back(int8_t(j));
  std::vector<int8_t> out(a.size());
  add_int8_reference(p, a.data(), b.data(), out.data(), static_cast<int64_t>(a.size()));
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(out[i], std::clamp(a[i] + b[i] - 5, -128, 127)) << a[i] << " " << b[i];
}

TEST(AddInt8, RandomScalesWithinOneCodeOfTheRealSum) {
  Rng rng(13);
  for (int t = 0; t < 50; ++t) {
    const float s1 = std::exp2(rng.uniform(-8, 0)), s2 = std::exp2(rng.uniform(-8, 0));
    const float s_out = (s1 + s2) * std::exp2(rng.uniform(-1, 1));
    const int32_t z1 = uniform_int(rng, -128, 127), z2 = uniform_int(rng, -128, 127), zo = uniform_int(rng, -128, 127);
    const int32_t lo = t % 3 == 0 ? zo : -128;
    const AddInt8Params p = make_add_params(s1, z1, s2, z2, s_out, zo, lo, 127);
    const std::vector<int8_t> a = random_codes(rng, 200, -128, 127), b = random_codes(rng, 200, -128, 127);
    std::vector<int8_t> out(200);
    add_int8_reference(p, a.data(), b.data(), out.data(), 200);
    for (int i = 0; i < 200; ++i) {
      const double real = double(s1) * (a[i] - z1) + double(s2) * (b[i] - z2);
      const double q = std::clamp(std::round(real / s_out) + zo, double(lo), 127.0);
      ASSERT_LE(std::fabs(q - out[i]), 1.0) << "scales " << s1 << " " << s2 << " " << s_out;
    }
  }
}

// Requantization: the multiplier is s_in / s_out (within quantize_multiplier's 2^-31), and every code is
// the exact product (q - z_in) * multiplier * 2^(shift - 31) rounded once, ties up, moved by z_out and
// clamped: recomputed in double, where those products are exact (|q - z_in| <= 255, multiplier < 2^31).
TEST(RequantizeInt8, EveryCodeIsTheExactProductRoundedOnce) {
  Rng rng(17);
  for (int t = 0; t < 60; ++t) {
    const float s_in = std::exp2(rng.uniform(-10, 0));
    const float s_out = s_in * std::exp2(rng.uniform(-2, 8));  // fewer bits: a coarser grid, or a finer one
    const int32_t z_in = uniform_int(rng, -128, 127), z_out = uniform_int(rng, -128, 127);
    const int32_t lo = t % 2 ? uniform_int(rng, -128, 0) : -128, hi = t % 3 ? uniform_int(rng, lo, 127) : 127;
    const RequantizeInt8Params p = make_requantize_params(s_in, z_in, s_out, z_out, lo, hi);
    const double m = dequantize_multiplier(p.multiplier, p.shift);
    ASSERT_NEAR(m / (double(s_in) / s_out), 1.0, 1e-9);
    std::vector<int8_t> in(256), out(256);
    for (int q = -128; q < 128; ++q) in[q + 128] = static_cast<int8_t>(q);
    requantize_int8_reference(p, in.data(), out.data(), 256);
    for (int q = -128; q < 128; ++q) {
      const double exact = std::floor((q - z_in) * m + 0.5);
      ASSERT_EQ(out[q + 128], std::clamp(exact + z_out, double(lo), double(hi))) << "code " << q << ", case " << t;
    }
  }
  // A tie: half a step rounds up (toward +infinity), on both sides of zero.
  const RequantizeInt8Params half = make_requantize_params(1.0f, 0, 2.0f, 0, -128, 127);
  const std::vector<int8_t> ties{-3, -1, 1, 3};
  std::vector<int8_t> got(4);
  requantize_int8(half, ties.data(), got.data(), 4);
  EXPECT_EQ(got, (std::vector<int8_t>{-1, 0, 1, 2}));
}

// The kernel (a table of the reference's 256 codes for long tensors) gives the reference's codes bit for
// bit, short tensors and long ones, in place too.
TEST(RequantizeInt8, TheKernelEqualsTheReferenceBitForBit) {
  Rng rng(23);
  for (int t = 0; t < 20; ++t) {
    const float s_in = std::exp2(rng.uniform(-10, 0));
    const float s_out = s_in * std::exp2(rng.uniform(-2, 8));
    const int32_t z_in = uniform_int(rng, -128, 127), z_out = uniform_int(rng, -128, 127);
    const int32_t lo = t % 2 ? uniform_int(rng, -128, 0) : -128, hi = t % 3 ? uniform_int(rng, lo, 127) : 127;
    const RequantizeInt8Params p = make_requantize_params(s_in, z_in, s_out, z_out, lo, hi);
    for (const int64_t count : {1, 37, 511, 512, 513, 4099}) {
      std::vector<int8_t> in(static_cast<size_t>(count)), want(in.size()), got(in.size());
      for (auto& q : in) q = static_cast<int8_t>(uniform_int(rng, -128, 127));
      requantize_int8_reference(p, in.data(), want.data(), count);
      requantize_int8(p, in.data(), got.data(), count);
      ASSERT_EQ(got, want) << "case " << t << ", count " << count;
      requantize_int8(p, in.data(), in.data(), count);
      ASSERT_EQ(in, want) << "in place, case " << t << ", count " << count;
    }
  }
}

TEST(RequantizeInt8, BadSettingsThrow) {
  EXPECT_TRUE(throws_with([] { make_requantize_params(0.0f, 0, 1.0f, 0, -128, 127); }, {"scales"}));
  EXPECT_TRUE(throws_with([] { make_requantize_params(1.0f, 0, 1.0f, 300, -128, 127); }, {"zero point 300"}));
  EXPECT_TRUE(throws_with([] { make_requantize_params(1.0f, 0, 1.0f, 0, 5, 4); }, {"activation range"}));
  RequantizeInt8Params p = make_requantize_params(1.0f, 0, 1.0f, 0, -128, 127);
  p.shift = 40;
  int8_t x = 0, y = 0;
  EXPECT_TRUE(throws_with([&] { requantize_int8(p, &x, &y, 1); }, {"shift 40"}));
  std::vector<int8_t> long_in(1024), long_out(1024);
  EXPECT_TRUE(throws_with([&] { requantize_int8(p, long_in.data(), long_out.data(), 1024); }, {"shift 40"}));
}

// add_int8 on every path this CPU has gives the reference's codes bit for bit: random grids (left shifts
// and multipliers of every size make_add_params produces, extreme hand-made ones too), every pair of
// extreme codes, and counts with tails that are not a multiple of either vector width (8 and 16 lanes).
TEST(AddInt8, EveryPathEqualsTheReferenceBitForBit) {
  Rng rng(17);
  std::vector<AddInt8Params> params;
  for (int t = 0; t < 60; ++t) {
    const float s1 = std::exp2(rng.uniform(-12, 4)), s2 = std::exp2(rng.uniform(-12, 4));
    const float s_out = std::max(s1, s2) * std::exp2(rng.uniform(-3, 6));
    const int32_t z1 = uniform_int(rng, -127, 127), z2 = uniform_int(rng, -127, 127), zo = uniform_int(rng, -128, 127);
    params.push_back(make_add_params(s1, z1, s2, z2, s_out, zo, t % 2 ? zo : -128, t % 5 ? 127 : std::max(zo, 100)));
  }
  AddInt8Params extreme;  // largest shifts and multipliers the checks allow
  extreme.left_shift = 20;
  extreme.input1_offset = 128, extreme.input2_offset = -127;
  extreme.input1_multiplier = extreme.input2_multiplier = INT32_MAX;
  extreme.input1_shift = -1, extreme.input2_shift = -31;
  extreme.output_multiplier = 1 << 30, extreme.output_shift = 30;
  params.push_back(extreme);
  std::vector<int8_t> a, b;
  for (int i = -128; i < 128; ++i)
    for (int j = -128; j < 128; j += 7) a.push_back(int8_t(i)), b.push_back(int8_t(j));
  for (KernelPath path : {KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
    if (!kernel_path_supported(path)) {
      std::printf("[  SKIPPED ] add_int8 on %s: this CPU lacks it\n", kernel_path_name(path));
      continue;
    }
    for (const AddInt8Params& p : params) {
      for (int64_t count : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{13}, int64_t{16}, int64_t{17}, int64_t{33},
                            static_cast<int64_t>(a.size())}) {
        std::vector<int8_t> want(count), got(count, 99);
        add_int8_reference(p, a.data(), b.data(), want.data(), count);
        add_int8(p, a.data(), b.data(), got.data(), count, path);
        ASSERT_EQ(got, want) << kernel_path_name(path) << ", count " << count << ", output_shift " << p.output_shift;
      }
    }
  }
}

// add_int8_values (the QAT simulation's add on float values) on every path this CPU has gives the
// reference's values bit for bit: random grids, 8- and 4-bit operand code ranges, values that round
// half way between codes (ties to even) and beyond both ends, tails of every length; and every path
// reports a NaN in either operand.
TEST(AddInt8, ValuesOnEveryPathEqualTheReferenceBitForBit) {
  Rng rng(23);
  for (int t = 0; t < 40; ++t) {
    const bool four_bits = t % 3 == 0;
    AddValueGrids g;
    g.a_min = four_bits ? -8 : -128, g.a_max = four_bits ? 7 : 127;
    g.b_min = t % 2 ? 0 : g.a_min, g.b_max = t % 2 ? (four_bits ? 15 : 127) : g.a_max;
    g.a_scale = std::exp2(rng.uniform(-8, 2)), g.b_scale = std::exp2(rng.uniform(-8, 2));
    g.out_scale = std::max(g.a_scale, g.b_scale) * std::exp2(rng.uniform(-1, 3));
    const int32_t za = uniform_int(rng, g.a_min, g.a_max), zb = uniform_int(rng, g.b_min, g.b_max);
    const int32_t zo = uniform_int(rng, -128, 127);
    const AddInt8Params p = make_add_params(g.a_scale, za, g.b_scale, zb, g.out_scale, zo, t % 2 ? zo : -128, 127);
    const int64_t n = 16 * 37 + t % 16;
    std::vector<float> a(n), b(n);
    for (int64_t i = 0; i < n; ++i) {
      // Half-integer steps (ties), arbitrary ones, and steps beyond the grid's ends.
      const float steps_a = i % 4 == 0 ? static_cast<float>(uniform_int(rng, -300, 300)) + 0.5f : rng.uniform(-200, 200);
      a[i] = g.a_scale * steps_a;
      b[i] = g.b_scale * rng.uniform(-200, 200);
    }
    std::vector<float> want(n);
    ASSERT_TRUE(add_int8_values_reference(p, g, a.data(), b.data(), want.data(), n));
    for (KernelPath path : {KernelPath::Reference, KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
      if (!kernel_path_supported(path)) continue;  // the test above says which paths this CPU lacks
      for (int64_t count : {n, int64_t{1}, int64_t{15}, int64_t{17}}) {
        std::vector<float> got(count, 99.0f);
        ASSERT_TRUE(add_int8_values(p, g, a.data(), b.data(), got.data(), count, path));
        for (int64_t i = 0; i < count; ++i)
          ASSERT_EQ(got[i], want[i]) << kernel_path_name(path) << ", grid " << t << ", value " << i;
      }
      for (int k = 0; k < 2; ++k) {
        std::vector<float> x = k == 0 ? a : b, out(n);
        x[n - 3] = std::numeric_limits<float>::quiet_NaN();
        EXPECT_FALSE(add_int8_values(p, g, k == 0 ? x.data() : a.data(), k == 1 ? x.data() : b.data(), out.data(), n, path))
            << kernel_path_name(path);
      }
    }
  }
}

// max_pool2d_int8 (with its 2x2 stride-2 fast path) gives what the reference loop gives, on odd and
// even sizes, extreme codes and other windows.
TEST(PoolInt8, MaxPoolMatchesReference) {
  Rng rng(12);
  for (int i = 0; i < 300; ++i) {
    const bool common = i % 3 != 0;  // mostly the 2x2 / 2 window of the fast path
    const int64_t k = common ? 2 : uniform_int(rng, 1, 4), stride = common ? 2 : uniform_int(rng, 1, 3);
    const int64_t pad = common ? 0 : uniform_int(rng, 0, k / 2);
    const Shape in = {uniform_int(rng, 1, 3), uniform_int(rng, 1, 4), uniform_int(rng, k, 40), uniform_int(rng, k, 40)};
    const std::vector<int8_t> x = random_codes(rng, shape_numel(in), i % 5 == 0 ? 126 : -128, 127);
    const Shape out = pool2d_int8_output_shape(in, k, stride, pad);
    std::vector<int8_t> expect(shape_numel(out)), got(shape_numel(out), 0x55);
    max_pool2d_int8_reference(x.data(), in, k, stride, pad, expect.data());
    max_pool2d_int8(x.data(), in, k, stride, pad, got.data());
    ASSERT_EQ(got, expect) << "input " << shape_str(in) << " window " << k << " stride " << stride << " pad " << pad;
  }
}

// ------------------------------------------------------------------------------ quantize / dequantize

// The vectorised loop of quantize_float_to_int8 gives the codes of the scalar formula everywhere:
// ties at many scales and zero points, values near the clamps, huge and infinite values, signed zeros
// and denormals.
TEST(QuantizeInt8, MatchesQuantizeValueEverywhere) {
  Rng rng(13);
  for (int trial = 0; trial < 50; ++trial) {
    const float scale = std::exp2(rng.uniform(-12.0f, 4.0f)) * (trial % 4 == 0 ? 1.0f : rng.uniform(0.5f, 1.0f));
    const int32_t qmin = trial % 3 == 0 ? -127 : -128, qmax = 127 - (trial % 5 == 0 ? 60 : 0);
    const int32_t zp = uniform_int(rng, qmin, qmax);
    std::vector<float> x(1001);
    for (size_t i = 0; i < x.size(); ++i) {
      switch (i % 6) {
        case 0: x[i] = scale * (static_cast<float>(uniform_int(rng, -200, 200)) + 0.5f); break;  // ties
        case 1: x[i] = scale * rng.uniform(-140.0f, 140.0f); break;
        case 2: x[i] = rng.normal() * 1e30f; break;
        case 3: x[i] = std::nextafter(scale * (static_cast<float>(uniform_int(rng, -3, 3)) + 0.5f), 0.0f); break;
        case 4: x[i] = rng.normal(); break;
        default: x[i] = scale * static_cast<float>(uniform_int(rng, -300, 300)); break;
      }
    }
    x[0] = INFINITY, x[1] = -INFINITY, x[2] = -0.0f, x[3] = 1e-42f, x[4] = -1e-42f, x[5] = FLT_MAX;
    std::vector<int8_t> q(x.size());
    quantize_float_to_int8(x.data(), q.data(), static_cast<int64_t>(x.size()), scale, zp, qmin, qmax);
    const float inv = 1.0f / scale;
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_EQ(q[i], quantize_value(x[i], inv, zp, qmin, qmax)) << "x " << x[i] << " scale " << scale << " zp " << zp;
  }
}

TEST(QuantizeInt8, FindFirstNan) {
  std::vector<float> x(10000, 1.0f);
  EXPECT_EQ(find_first_nan(x.data(), 10000), -1);
  EXPECT_EQ(find_first_nan(x.data(), 0), -1);
  x[9999] = std::nanf("");
  x[5000] = -std::nanf("");
  EXPECT_EQ(find_first_nan(x.data(), 10000), 5000);  // past the first block of the count
  EXPECT_EQ(find_first_nan(x.data(), 5000), -1);
  x[17] = std::nanf("");
  EXPECT_EQ(find_first_nan(x.data(), 10000), 17);
  std::vector<int8_t> q(10000);
  EXPECT_TRUE(throws_with([&] { quantize_float_to_int8(x.data(), q.data(), 10000, 0.1f, 0, -128, 127); },
                          {"element 17", "NaN"}));
}

TEST(QuantizeInt8, RoundsToEvenSaturatesAndRoundTrips) {
  const std::vector<float> x = {0.0f, 0.05f, 0.15f, -0.05f, 1e9f, -INFINITY, 0.37f};
  std::vector<int8_t> q(x.size());
  quantize_float_to_int8(x.data(), q.data(), 7, 0.1f, -3, -128, 127);
  // 0.05 / 0.1 is not exactly 0.5 in float32; compare with the scalar formula for those.
  const float inv = 1.0f / 0.1f;
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(q[i], quantize_value(x[i], inv, -3, -128, 127)) << i;
  EXPECT_EQ(q[0], -3);
  EXPECT_EQ(q[4], 127);
  EXPECT_EQ(q[5], -128);
  EXPECT_EQ(q[6], 1);  // 3.7 -> 4, - 3
  std::vector<float> back(x.size());
  dequantize_int8_to_float(q.data(), back.data(), 7, 0.1f, -3);
  EXPECT_FLOAT_EQ(back[6], 0.4f);
  EXPECT_FLOAT_EQ(back[0], 0.0f);
  // Exact ties with a power-of-two scale: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2.
  const std::vector<float> ties = {0.5f, 1.5f, -2.5f};
  quantize_float_to_int8(ties.data(), q.data(), 3, 1.0f, 0, -128, 127);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 2);
  EXPECT_EQ(q[2], -2);
}

TEST(QuantizeInt8, RoundTripErrorIsAtMostHalfAStepInRange) {
  Rng rng(14);
  const float scale = 0.037f;
  const int32_t zp = 11;
  std::vector<float> x(1000), back(1000);
  for (auto& v : x) v = rng.uniform(scale * (-128 - zp), scale * (127 - zp));
  std::vector<int8_t> q(1000);
  quantize_float_to_int8(x.data(), q.data(), 1000, scale, zp, -128, 127);
  dequantize_int8_to_float(q.data(), back.data(), 1000, scale, zp);
  for (int i = 0; i < 1000; ++i) ASSERT_LE(std::fabs(back[i] - x[i]), scale * 0.5f + 1e-6f) << x[i];
}

TEST(QuantizeInt8, NaNAndBadSettingsThrow) {
  const std::vector<float> x = {1.0f, 2.0f, 3.0f, std::nanf(""), 5.0f};
  std::vector<int8_t> q(5);
  EXPECT_TRUE(throws_with([&] { quantize_float_to_int8(x.data(), q.data(), 5, 0.1f, 0, -128, 127); },
                          {"element 3", "NaN"}));
  EXPECT_TRUE(throws_with([&] { quantize_float_to_int8(x.data(), q.data(), 3, 0.0f, 0, -128, 127); }, {"scale"}));
  EXPECT_TRUE(throws_with([&] { quantize_float_to_int8(x.data(), q.data(), 3, 1.0f, 0, 10, 127); },
                          {"qmin 10", "zero_point 0"}));
}

}  // namespace
}  // namespace qatlab
