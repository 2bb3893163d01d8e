// test_int_lstm.cpp: the integer LSTM: sigmoid / tanh tables against the float functions, the per-element
// arithmetic, the optimized kernel (every path this CPU has; GEMM and one- / two-sample GEMV recurrences,
// vector stages and their tails) bit-identical to the reference over random shapes and parameters, the
// integer layer close to the float LSTM it was quantized from, 2-4-bit weights packed in the model file
// and loaded back bit for bit, and clear errors for bad params and shapes.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate rows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/rng.h"
#include "nn/lstm.h"
#include "quant/engine/int8_graph.h"
#include "quant/engine/int_lstm.h"
#include "quant/engine/requantize.h"
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

// Runs the packed kernel on every path this CPU has and compares with the reference.
void expect_packed_equals_reference(const LstmInt8Params& p, int64_t N, int64_t T, Rng& rng, const std::string& what) {
  const std::vector<int8_t> x = random_codes(rng, N * T * p.input_size, -128, 127);
  std::vector<int8_t> ref(N * T * p.hidden_size);
  lstm_int8_reference(p, x.data(), {N, T, p.input_size}, ref.data());
  const PackedLstmInt8 packed(p);
  std::vector<uint8_t> scratch(packed.scratch_bytes() + 1);
  for (KernelPath path : {KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
    if (!kernel_path_supported(path)) continue;
    std::vector<int8_t> fast(ref.size(), 99);
    packed.run_serial(x.data(), N, T, fast.data(), path, scratch.data() + 1);
    ASSERT_EQ(fast, ref) << what << ", " << kernel_path_name(path) << ": N " << N << " T " << T << " IN "
                         << p.input_size << " H " << p.hidden_size;
  }
}

TEST(IntLstmKernels, OptimizedEqualsReferenceForEveryGroupSizeAndWideLayers) {
  // One and two samples take the GEMV recurrence, more the GEMM; H of 16 and more runs the vector stages'
  // main loops, H % 16 != 0 their tails; the input side is computed 64 / N steps ahead, so T crosses
  // those chunks; N = 40 has groups of 16, 16 and 8.
  Rng rng(77);
  for (int64_t N : {1, 2, 3, 5, 16, 40})
    for (int64_t H : {16, 21, 64}) {
      const int64_t IN = uniform_int(rng, 1, 30), T = uniform_int(rng, 5, 30);
      expect_packed_equals_reference(random_params(rng, IN, H), N, T, rng, "random");
    }
  // The lstm-rows shape (28 inputs, hidden 128) at batch 1 and 17.
  for (int64_t N : {1, 17}) expect_packed_equals_reference(random_params(rng, 28, 128), N, 28, rng, "lstm-rows");
  // A W_hh code of -128 has no int8 negation: such a layer takes the GEMM even for one sample.
  LstmInt8Params p = random_params(rng, 9, 24);
  p.weight_hh[5] = INT8_MIN;
  p.weight_hh[4 * 24 * 24 - 1] = INT8_MIN;
  for (int64_t N : {1, 2}) expect_packed_equals_reference(p, N, 12, rng, "w_hh with -128");
  // Extreme hidden offsets and clamps, and the largest weights the GEMV takes: its int16 pair sums at
  // their bound 2 * 128 * 127.
  p = random_params(rng, 7, 32);
  std::fill(p.weight_hh.begin(), p.weight_hh.end(), int8_t{-127});
  p.output_offset = -128, p.hidden_offset = 128, p.quantized_activation_min = -128, p.quantized_activation_max = 127;
  for (int64_t N : {1, 2, 4}) expect_packed_equals_reference(p, N, 9, rng, "extreme weights");
}

// ----------------------------------------------------------------------------- the model file

// quantize -> image_rows -> lstm -> last_step -> dequantize over (1, T, IN) images.
Int8Graph lstm_graph(const LstmInt8Params& p, int64_t T) {
  Int8Graph g;
  g.input_shape = {1, T, p.input_size};
  const auto op = [&](Int8OpKind kind, std::vector<int> inputs) {
    Int8Op o;
    o.kind = kind;
    o.name = int8_op_name(kind);
    o.inputs = std::move(inputs);
    o.output = static_cast<int>(g.ops.size()) + 1;
    g.ops.push_back(o);
    return &g.ops.back();
  };
  op(Int8OpKind::Quantize, {})->grid = p.input;
  op(Int8OpKind::ImageRows, {1});
  op(Int8OpKind::Lstm, {2})->lstm = p;
  op(Int8OpKind::LastStep, {3});
  op(Int8OpKind::Dequantize, {4})->grid = p.hidden;
  g.num_slots = 6;
  g.prepare();
  return g;
}

QParams grid(float scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
  QParams q;
  q.scale = {scale};
  q.zero_point = {zero_point};
  q.quant_min = qmin, q.quant_max = qmax;
  return q;
}

TEST(IntLstmFile, NarrowWeightsArePackedInTheFileAndLoadBackBitForBit) {
  const int64_t IN = 28, H = 64, T = 6, G = 4 * H, weight_bytes = G * (IN + H);
  std::vector<int64_t> file_bytes;
  for (int32_t wmax : {127, 7, 1}) {  // 8-, 4- and 2-bit weight grids
    Rng rng(90 + wmax);
    LstmInt8Params p = random_params(rng, IN, H);
    p.weight_ih = random_codes(rng, G * IN, -wmax, wmax);
    p.weight_hh = random_codes(rng, G * H, -wmax, wmax);
    p.input = grid(0.02f, -p.input_offset, -128, 127);
    p.weights_ih = p.weights_hh = grid(0.01f, 0, -wmax, wmax);
    p.hidden = grid(0.01f, p.output_offset, p.quantized_activation_min, p.quantized_activation_max);
    const Int8Graph graph = lstm_graph(p, T);
    const std::string path =
        (std::filesystem::temp_directory_path() / ("qatlab_int_lstm_w" + std::to_string(wmax) + ".h5")).string();
    graph.save(path);
    file_bytes.push_back(static_cast<int64_t>(std::filesystem::file_size(path)));
    const Int8Graph loaded = Int8Graph::load(path);
    std::filesystem::remove(path);
    ASSERT_EQ(loaded.ops.size(), 5u);
    EXPECT_EQ(loaded.ops[2].lstm.weight_ih, p.weight_ih) << "wmax " << wmax;
    EXPECT_EQ(loaded.ops[2].lstm.weight_hh, p.weight_hh) << "wmax " << wmax;
    Tensor x = Tensor::empty({9, 1, T, IN});
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = rng.uniform(-2.5f, 2.5f);
    Shape shape;
    const std::vector<int8_t> expected = graph.run_codes(x, &shape, KernelPath::Reference);
    EXPECT_EQ(shape, (Shape{9, H}));
    EXPECT_EQ(loaded.run_codes(x, &shape, KernelPath::Reference), expected) << "wmax " << wmax;
    EXPECT_EQ(loaded.run_codes(x, &shape, best_kernel_path()), expected) << "wmax " << wmax;
    EXPECT_GT(std::set<int8_t>(expected.begin(), expected.end()).size(), 3u) << "outputs should vary";
  }
  // 4-bit codes take half the bytes of int8, 2-bit a quarter (the rest of the file is the same size).
  EXPECT_GE(file_bytes[0] - file_bytes[1], weight_bytes / 2 - 64) << file_bytes[0] << " vs " << file_bytes[1];
  EXPECT_GE(file_bytes[1] - file_bytes[2], weight_bytes / 4 - 64) << file_bytes[1] << " vs " << file_bytes[2];
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
