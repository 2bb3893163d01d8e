// test_int_lstm.cpp: the integer LSTM: sigmoid / tanh tables against the float functions, the per-element
// arithmetic, the optimized kernel (every path this CPU has) bit-identical to the reference over random
// shapes and parameters, the integer layer close to the float LSTM it was quantized from, and clear
// errors for bad params and shapes.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/rng.h"
#include "nn/lstm.h"
#include "quant/int_lstm.h"
#include "quant/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_codes;
using test::throws_with;
using test::uniform_int;

// ------------------------------------------------------------------------------------ the tables

// The largest |table code - 32768 * f(q / 4096)| over every Q3.12 code q.
template <class F>
double max_table_error(const int16_t* table, F f) {
  double worst = 0.0;
  for (int32_t q = -32768; q <= 32767; ++q)
    worst = std::max(worst, std::abs(table[q + 32768] - 32768.0 * f(q / 4096.0)));
  return worst;
}

TEST(IntLstmTables, SigmoidWithinHalfACodeOfTheFloatFunction) {
  // Round to nearest: half a code everywhere (no clamp is reached: sigmoid(8) * 32768 = 32757).
  EXPECT_LE(max_table_error(lstm_sigmoid_table(), [](double x) { return 1.0 / (1.0 + std::exp(-x)); }), 0.5);
  EXPECT_EQ(lstm_sigmoid(0), 16384);
  EXPECT_EQ(lstm_sigmoid(INT16_MIN), 11);      // 32768 * sigmoid(-8) = 10.99
  EXPECT_EQ(lstm_sigmoid(INT16_MAX), 32757);
  for (int32_t q = -32767; q <= 32767; ++q) {
    ASSERT_LE(lstm_sigmoid(static_cast<int16_t>(q - 1)), lstm_sigmoid(static_cast<int16_t>(q))) << q;  // monotonic
    // sigmoid(-x) = 1 - sigmoid(x), up to the two roundings.
    ASSERT_NEAR(lstm_sigmoid(static_cast<int16_t>(q)) + lstm_sigmoid(static_cast<int16_t>(-q)), 32768, 1) << q;
  }
}

TEST(IntLstmTables, TanhWithinHalfACodeExceptTheClampAtOne) {
  // 32768 * tanh(x) reaches 32767.98 near x = 8; the table clamps at 32767 so that +-1 stay symmetric:
  // the only place where the error exceeds half a code, and by less than one.
  const double worst = max_table_error(lstm_tanh_table(), [](double x) { return std::tanh(x); });
  EXPECT_LE(worst, 1.0);
  double inner = 0.0;  // away from the clamp: round to nearest, half a code
  for (int32_t q = -4 * 4096; q <= 4 * 4096; ++q)
    inner = std::max(inner, std::abs(lstm_tanh(static_cast<int16_t>(q)) - 32768.0 * std::tanh(q / 4096.0)));
  EXPECT_LE(inner, 0.5);
  EXPECT_EQ(lstm_tanh(0), 0);
  EXPECT_EQ(lstm_tanh(INT16_MAX), 32767);
  EXPECT_EQ(lstm_tanh(INT16_MIN), -32767);
  for (int32_t q = -32767; q <= 32767; ++q) {
    ASSERT_LE(lstm_tanh(static_cast<int16_t>(q - 1)), lstm_tanh(static_cast<int16_t>(q))) << q;
    ASSERT_EQ(lstm_tanh(static_cast<int16_t>(-q)), -lstm_tanh(static_cast<int16_t>(q))) << q;  // odd, exactly
  }
}

// ------------------------------------------------------------------------ per-element arithmetic

TEST(IntLstmArithmetic, CellUpdateWithinOneCodeOfTheRealValue) {
  Rng rng(11);
  for (int k : {0, 5, 11, 12, 13, 15}) {
    for (int trial = 0; trial < 2000; ++trial) {
      const auto f = static_cast<int16_t>(uniform_int(rng, 0, 32767));
      const auto i = static_cast<int16_t>(uniform_int(rng, 0, 32767));
      const auto g = static_cast<int16_t>(uniform_int(rng, -32767, 32767));
      const auto c = static_cast<int16_t>(uniform_int(rng, -32768, 32767));
      const double real = (f / 32768.0) * (c * std::ldexp(1.0, -k)) + (i / 32768.0) * (g / 32768.0);  // reals
      const int32_t code = lstm_cell_update(f, c, i, g, k);
      // Two roundings of half a code each.
      ASSERT_LE(std::abs(code - real * std::ldexp(1.0, k)), 1.0) << "k " << k;
    }
  }
  // Ties go away from zero: f * c = 16384 * 1 = 2^14 is half a code after the shift by 15.
  EXPECT_EQ(lstm_cell_update(16384, 1, 0, 0, 12), 1);
  EXPECT_EQ(lstm_cell_update(16384, -1, 0, 0, 12), -1);
}

TEST(IntLstmArithmetic, CellToGateGridShiftsBothWays) {
  EXPECT_EQ(lstm_cell_to_gate_grid(100, 12), 100);
  EXPECT_EQ(lstm_cell_to_gate_grid(100, 10), 400);
  EXPECT_EQ(lstm_cell_to_gate_grid(-20000, 10), INT16_MIN);  // -19.5 saturates at -8
  EXPECT_EQ(lstm_cell_to_gate_grid(20000, 10), INT16_MAX);
  EXPECT_EQ(lstm_cell_to_gate_grid(6, 14), 2);    // 1.5 -> 2
  EXPECT_EQ(lstm_cell_to_gate_grid(-6, 14), -2);  // -1.5 -> -2 (away from zero)
  EXPECT_EQ(lstm_cell_to_gate_grid(5, 14), 1);
}

TEST(IntLstmArithmetic, CellFracBitsCoverTheObservedRange) {
  EXPECT_EQ(lstm_cell_frac_bits(0.0f), 15);
  EXPECT_EQ(lstm_cell_frac_bits(0.9f), 15);   // [-1, 1)
  EXPECT_EQ(lstm_cell_frac_bits(1.0f), 14);   // 1.0 needs [-2, 2)
  EXPECT_EQ(lstm_cell_frac_bits(3.99f), 13);
  EXPECT_EQ(lstm_cell_frac_bits(4.0f), 12);
  EXPECT_EQ(lstm_cell_frac_bits(7.9f), 12);
  EXPECT_EQ(lstm_cell_frac_bits(8.0f), 11);
  EXPECT_EQ(lstm_cell_frac_bits(1e9f), 0);
  for (float v : {0.3f, 1.7f, 5.0f, 21.0f, 300.0f})
    EXPECT_LT(v, std::ldexp(1.0, 15 - lstm_cell_frac_bits(v))) << v;
}

// ------------------------------------------------------------------------------ kernels, random

// Random params of every kind: realistic multipliers, large ones (saturating gates), tiny ones, random
// offsets, any cell grid.
LstmInt8Params random_params(Rng& rng, int64_t IN, int64_t H) {
  const int64_t G = 4 * H;
  LstmInt8Params p;
  p.input_size = IN;
  p.hidden_size = H;
  p.input_offset = uniform_int(rng, -127, 128);
  p.output_offset = uniform_int(rng, -100, 100);
  p.hidden_offset = -p.output_offset;
  p.quantized_activation_min = uniform_int(rng, -128, p.output_offset);
  p.quantized_activation_max = uniform_int(rng, p.output_offset, 127);
  const int32_t wmax = rng.below(2) ? 127 : 7;
  p.weight_ih = random_codes(rng, G * IN, -wmax, wmax);
  p.weight_hh = random_codes(rng, G * H, -wmax, wmax);
  p.bias.resize(G);
  for (auto& b : p.bias) b = uniform_int(rng, -20000, 20000);
  const auto multipliers = [&](std::vector<int32_t>& m, std::vector<int>& s, int64_t k) {
    m.resize(G);
    s.resize(G);
    // Typical: an accumulator of ~ sqrt(k) * 127 * 64 lands on a few units of Q3.12, i.e. ~ 4096.
    const double typical = 4096.0 / (std::sqrt(static_cast<double>(k)) * 127.0 * 64.0);
    for (int64_t r = 0; r < G; ++r) {
      switch (rng.below(8)) {
        case 0:  // any pair the format allows, saturating left shifts and 31-bit right shifts included
          m[r] = static_cast<int32_t>(rng.next_u64() >> 33);
          s[r] = uniform_int(rng, -31, 30);
          break;
        case 1:
          m[r] = 0, s[r] = 0;
          break;
        default:
          quantize_multiplier(typical * std::exp2(rng.uniform(-4.0f, 5.0f)), &m[r], &s[r]);
      }
    }
  };
  multipliers(p.input_multiplier, p.input_shift, IN);
  multipliers(p.recurrent_multiplier, p.recurrent_shift, H);
  p.cell_frac_bits = uniform_int(rng, 8, 15);
  quantize_multiplier(std::ldexp(1.0, -30) / std::ldexp(rng.uniform(1.5f, 3.0f), -7), &p.hidden_multiplier,
                      &p.hidden_shift);
  return p;
}

TEST(IntLstmKernels, OptimizedEqualsReferenceBitForBitOverRandomShapes) {
  Rng rng(2024);
  int64_t saturated_gates = 0, varied = 0;
  for (int trial = 0; trial < 24; ++trial) {
    const int64_t N = uniform_int(rng, 1, 37), T = uniform_int(rng, 1, 7), IN = uniform_int(rng, 1, 40),
                  H = uniform_int(rng, 1, 33);
    const LstmInt8Params p = random_params(rng, IN, H);
    const std::vector<int8_t> x = random_codes(rng, N * T * IN, -128, 127);
    std::vector<int8_t> ref(N * T * H);
    lstm_int8_reference(p, x.data(), {N, T, IN}, ref.data());
    const PackedLstmInt8 packed(p);
    std::vector<uint8_t> scratch(packed.scratch_bytes() + 3);
    for (KernelPath path : {KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
      if (!kernel_path_supported(path)) continue;
      std::vector<int8_t> fast(N * T * H, 99);
      packed.run_serial(x.data(), N, T, fast.data(), path, scratch.data() + 3);  // any alignment
      ASSERT_EQ(fast, ref) << kernel_path_name(path) << ", trial " << trial << ": N " << N << " T " << T << " IN "
                           << IN << " H " << H;
    }
    for (int8_t v : ref) saturated_gates += v == p.quantized_activation_min || v == p.quantized_activation_max;
    varied += std::set<int8_t>(ref.begin(), ref.end()).size() > 2;
  }
  EXPECT_GT(varied, 12) << "outputs should not be constant";
  EXPECT_GT(saturated_gates, 0) << "the clamps should be exercised";
}

TEST(IntLstmKernels, ReferenceThreadsGiveTheSameCodes) {
  // Large enough for the reference to spread samples over threads: the result must not depend on it.
  Rng rng(8);
  const int64_t N = 64, T = 8, IN = 28, H = 64;
  const LstmInt8Params p = random_params(rng, IN, H);
  const std::vector<int8_t> x = random_codes(rng, N * T * IN, -128, 127);
  std::vector<int8_t> all(N * T * H), one(H * T);
  lstm_int8_reference(p, x.data(), {N, T, IN}, all.data());
  for (int64_t n : {0, 17, 63}) {
    lstm_int8_reference(p, x.data() + n * T * IN, {1, T, IN}, one.data());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + n * T * H)) << "sample " << n;
  }
}

// The integer layer built by hand from a float LSTM (the lowering's formulas) follows the float LSTM:
// the hidden codes stay within a few steps of the float h over 10 steps.
TEST(IntLstmKernels, IntegerLayerFollowsTheFloatLstm) {
  Rng rng(5);
  const int64_t N = 6, T = 10, IN = 12, H = 16, G = 4 * H;
  LstmOptions o;
  o.input_size = IN;
  o.hidden_size = H;
  LSTM lstm(o, rng);
  const float s_x = 2.0f / 255, s_h = 2.0f / 255;  // x in [-1, 1], h in (-1, 1), zero points 0
  std::vector<float> s_wih(G), s_whh(G);
  LstmInt8Params p;
  p.input_size = IN;
  p.hidden_size = H;
  p.weight_ih.resize(G * IN);
  p.weight_hh.resize(G * H);
  p.bias.resize(G);
  p.input_multiplier.resize(G);
  p.input_shift.resize(G);
  p.recurrent_multiplier.resize(G);
  p.recurrent_shift.resize(G);
  const auto row_codes = [](const float* w, int64_t n, int8_t* q) {
    float amax = 0.0f;
    for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::abs(w[k]));
    const float s = amax / 127.0f;
    for (int64_t k = 0; k < n; ++k) q[k] = static_cast<int8_t>(std::lround(w[k] / s));
    return s;
  };
  for (int64_t r = 0; r < G; ++r) {
    s_wih[r] = row_codes(lstm.weight_ih[0].data() + r * IN, IN, p.weight_ih.data() + r * IN);
    s_whh[r] = row_codes(lstm.weight_hh[0].data() + r * H, H, p.weight_hh.data() + r * H);
    const double b = lstm.bias_ih[0].data()[r] + lstm.bias_hh[0].data()[r];
    p.bias[r] = static_cast<int32_t>(std::nearbyint(b / (double(s_x) * s_wih[r])));
    quantize_multiplier(double(s_x) * s_wih[r] * 4096.0, &p.input_multiplier[r], &p.input_shift[r]);
    quantize_multiplier(double(s_h) * s_whh[r] * 4096.0, &p.recurrent_multiplier[r], &p.recurrent_shift[r]);
  }
  p.cell_frac_bits = 12;
  quantize_multiplier(std::ldexp(1.0, -30) / s_h, &p.hidden_multiplier, &p.hidden_shift);

  const std::vector<int8_t> x = random_codes(rng, N * T * IN, -127, 127);
  Tensor xf = Tensor::empty({N, T, IN});
  for (int64_t i = 0; i < xf.numel(); ++i) xf.data()[i] = s_x * x[i];
  std::vector<int8_t> h(N * T * H);
  lstm_int8_reference(p, x.data(), {N, T, IN}, h.data());
  const Tensor ref = lstm.forward(xf);  // (N, T, H)
  double worst = 0.0;
  for (int64_t i = 0; i < ref.numel(); ++i) worst = std::max<double>(worst, std::abs(s_h * h[i] - ref.data()[i]) / s_h);
  // 8-bit weights and hidden state, over 10 recurrent steps: the rounding of h_t (half a step) plus what
  // the weight and gate roundings add through the recurrence (0.68 steps measured).
  EXPECT_LE(worst, 1.5) << "in hidden steps";
}

// ------------------------------------------------------------------------------------------ errors

TEST(IntLstmKernels, BadParamsAndShapesGiveOneLineErrors) {
  Rng rng(3);
  const LstmInt8Params good = random_params(rng, 5, 4);
  std::vector<int8_t> x(2 * 3 * 5), y(2 * 3 * 4);
  EXPECT_TRUE(throws_with([&] { lstm_int8_reference(good, x.data(), {2, 3, 6}, y.data()); },
                          {"integer LSTM", "(N, T, 5)", "(2, 3, 6)"}));
  EXPECT_TRUE(throws_with([&] { lstm_int8_output_shape(good, {6, 5}); }, {"(N, T, 5)", "(6, 5)"}));
  EXPECT_EQ(lstm_int8_output_shape(good, {2, 3, 5}), (Shape{2, 3, 4}));
  LstmInt8Params p = good;
  p.weight_hh.pop_back();
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"weight_hh", "63", "64"}));
  p = good;
  p.cell_frac_bits = 16;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"cell_frac_bits", "16"}));
  p = good;
  p.hidden_offset = p.hidden_offset + 1;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"hidden_offset", "output_offset"}));
  p = good;
  p.recurrent_shift[3] = 31;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"recurrent_multiplier[3]", "31"}));
  p = good;
  p.quantized_activation_min = p.output_offset + 1;
  EXPECT_TRUE(throws_with([&] { p.validate(); }, {"hidden codes"}));
  EXPECT_TRUE(throws_with([&] { PackedLstmInt8 packed(p); }, {"hidden codes"}));
}

}  // namespace
}  // namespace qatlab
