// test_requantize.cpp: the fixed-point primitives of requantize.h against hand-computed values and
// against exact models (int64 floor division, exact doubles) over many random inputs.
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/rng.h"
#include "quant/engine/requantize.h"

namespace qatlab {
namespace {

constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

// floor(n / d) for d > 0.
int64_t floor_div(int64_t n, int64_t d) { return n >= 0 ? n / d : -((-n + d - 1) / d); }

// Model of the high multiply: a * b * 2 / 2^32 rounded to nearest with ties toward +infinity, i.e.
// floor((a * b + 2^30) / 2^31), saturated to int32.
int64_t model_high_mul(int64_t a, int64_t b) {
  const int64_t v = floor_div(a * b + (int64_t{1} << 30), int64_t{1} << 31);
  return std::min<int64_t>(v, kMax);
}

// Model of the rounding shift: x / 2^e rounded half away from zero (exact in double).
int64_t model_divide_by_pot(int64_t x, int e) { return static_cast<int64_t>(std::round(std::ldexp(double(x), -e))); }

// Model of multiply_by_quantized_multiplier: x * 2^left saturated, times m, divided by 2^(31 + right)
// and rounded once to nearest with ties toward +infinity (floor of the value + 1/2).
int64_t model_mul_by_quantized(int64_t x, int32_t m, int shift) {
  const int left = std::max(shift, 0), right = std::max(-shift, 0);
  const int64_t shifted = std::clamp<int64_t>(x * (int64_t{1} << left), kMin, kMax);
  return floor_div(shifted * m + (int64_t{1} << (30 + right)), int64_t{1} << (31 + right));
}

// Random int32s with the edges and small values mixed in.
int32_t random_int32(Rng& rng) {
  switch (rng.below(8)) {
    case 0: return kMin + static_cast<int32_t>(rng.below(4));
    case 1: return kMax - static_cast<int32_t>(rng.below(4));
    case 2: return static_cast<int32_t>(rng.below(2001)) - 1000;
    case 3: return static_cast<int32_t>(rng.below(1 << 20)) - (1 << 19);
    default: return static_cast<int32_t>(rng.next_u64());
  }
}

TEST(HighMul, HandComputedValues) {
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kMin, kMin), kMax);  // the one saturating case
  EXPECT_EQ(saturating_rounding_doubling_high_mul(1 << 30, 1 << 30), 1 << 29);   // 0.5 * 0.5 = 0.25
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kMin, 1 << 30), -(1 << 30));   // -1 * 0.5
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kMax, kMax), kMax - 1);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(kMin, kMax), -kMax);
  // Ties: 1 * 2^30 * 2 / 2^32 = 0.5 -> 1; -0.5 -> 0 (toward +infinity); 1.5 -> 2; -1.5 -> -1.
  EXPECT_EQ(saturating_rounding_doubling_high_mul(1, 1 << 30), 1);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-1, 1 << 30), 0);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(3, 1 << 30), 2);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-3, 1 << 30), -1);
  // Just off the ties: 0.25 -> 0, -0.75 -> -1.
  EXPECT_EQ(saturating_rounding_doubling_high_mul(1, 1 << 29), 0);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-3, 1 << 29), -1);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(0, kMin), 0);
  EXPECT_EQ(saturating_rounding_doubling_high_mul(-1, kMin), 1);  // 2^31 * 2 / 2^32 = 1
}

TEST(HighMul, MatchesExactModelOnRandomInputs) {
  Rng rng(1);
  for (int i = 0; i < 200000; ++i) {
    const int32_t a = random_int32(rng), b = random_int32(rng);
    ASSERT_EQ(saturating_rounding_doubling_high_mul(a, b), model_high_mul(a, b)) << a << " * " << b;
  }
}

TEST(DivideByPot, HandComputedValues) {
  EXPECT_EQ(rounding_divide_by_pot(5, 1), 3);    // 2.5 -> 3
  EXPECT_EQ(rounding_divide_by_pot(-5, 1), -3);  // -2.5 -> -3 (away from zero)
  EXPECT_EQ(rounding_divide_by_pot(7, 2), 2);    // 1.75 -> 2
  EXPECT_EQ(rounding_divide_by_pot(-7, 2), -2);
  EXPECT_EQ(rounding_divide_by_pot(6, 2), 2);    // 1.5 -> 2
  EXPECT_EQ(rounding_divide_by_pot(-6, 2), -2);  // -1.5 -> -2
  EXPECT_EQ(rounding_divide_by_pot(5, 2), 1);    // 1.25 -> 1
  EXPECT_EQ(rounding_divide_by_pot(-5, 2), -1);
  EXPECT_EQ(rounding_divide_by_pot(123, 0), 123);
  EXPECT_EQ(rounding_divide_by_pot(kMin, 31), -1);  // -1.0
  EXPECT_EQ(rounding_divide_by_pot(kMax, 31), 1);   // just under 1.0
  EXPECT_EQ(rounding_divide_by_pot(1 << 30, 31), 1);     // 0.5 -> 1
  EXPECT_EQ(rounding_divide_by_pot(-(1 << 30), 31), -1);  // -0.5 -> -1
  EXPECT_EQ(rounding_divide_by_pot(kMin, 1), -(1 << 30));
}

TEST(DivideByPot, MatchesExactModelOnRandomInputs) {
  Rng rng(2);
  for (int i = 0; i < 200000; ++i) {
    const int32_t x = random_int32(rng);
    const int e = static_cast<int>(rng.below(32));
    ASSERT_EQ(rounding_divide_by_pot(x, e), model_divide_by_pot(x, e)) << x << " / 2^" << e;
  }
}

TEST(MultiplyByQuantizedMultiplier, HandComputedValues) {
  // multiplier 2^30 with shift s is the real 2^(s - 1).
  EXPECT_EQ(multiply_by_quantized_multiplier(1000, 1 << 30, 0), 500);
  EXPECT_EQ(multiply_by_quantized_multiplier(1001, 1 << 30, 0), 501);    // 500.5: high mul rounds up
  EXPECT_EQ(multiply_by_quantized_multiplier(-1001, 1 << 30, 0), -500);  // -500.5: ties toward +inf
  // One rounding: 1001 * 0.25 = 250.25 -> 250 (gemmlowp's two roundings give 500.5 -> 501, then 250.5
  // -> 251).
  EXPECT_EQ(multiply_by_quantized_multiplier(1001, 1 << 30, -1), 250);
  EXPECT_EQ(multiply_by_quantized_multiplier(1000, 1 << 30, -1), 250);
  EXPECT_EQ(multiply_by_quantized_multiplier(1002, 1 << 30, -1), 251);    // 250.5 -> 251
  EXPECT_EQ(multiply_by_quantized_multiplier(-1002, 1 << 30, -1), -250);  // -250.5 -> -250 (toward +inf)
  EXPECT_EQ(multiply_by_quantized_multiplier(-1001, 1 << 30, -1), -250);  // -250.25
  EXPECT_EQ(multiply_by_quantized_multiplier(-1003, 1 << 30, -1), -251);  // -250.75
  EXPECT_EQ(multiply_by_quantized_multiplier(3, 1 << 30, 3), 12);        // 3 * 4
  // 2^28 * 2^5 saturates in the left shift to 2^31 - 1, then the multiplier halves it: huge and of
  // the right sign, which is all the int8 clamp after it needs.
  EXPECT_EQ(multiply_by_quantized_multiplier(1 << 28, 1 << 30, 5), 1 << 30);
  EXPECT_EQ(multiply_by_quantized_multiplier(-(1 << 28), 1 << 30, 5), -(1 << 30));  // -2^31 * 0.5
  EXPECT_EQ(multiply_by_quantized_multiplier(kMax, kMax, -31), 1);        // ~0.99999999 -> 1
  EXPECT_EQ(multiply_by_quantized_multiplier(kMin, 0, 0), 0);
}

TEST(MultiplyByQuantizedMultiplier, MatchesModelAndRealProductOnRandomInputs) {
  Rng rng(3);
  for (int i = 0; i < 200000; ++i) {
    const int32_t x = random_int32(rng);
    const int32_t m = static_cast<int32_t>((1u << 30) + rng.below(1u << 30));  // [2^30, 2^31)
    const int shift = static_cast<int>(rng.below(62)) - 31;                 // [-31, 30]
    const int32_t got = multiply_by_quantized_multiplier(x, m, shift);
    ASSERT_EQ(got, model_mul_by_quantized(x, m, shift)) << x << " " << m << " " << shift;
    // Within half a unit of the real product where nothing saturates (one rounding).
    const long double real = static_cast<long double>(x) * m * std::ldexp(1.0L, shift - 31);
    const bool shift_saturates = std::llabs(int64_t{x} * (int64_t{1} << std::max(shift, 0))) >= (int64_t{1} << 31);
    if (!shift_saturates) {
      ASSERT_LE(std::fabs(static_cast<long double>(got) - real), 0.5L) << x << " " << shift;
    }
  }
}

TEST(QuantizeMultiplier, EdgeCases) {
  int32_t m = 0;
  int s = 0;
  quantize_multiplier(1.0, &m, &s);
  EXPECT_EQ(m, 1 << 30);
  EXPECT_EQ(s, 1);
  quantize_multiplier(0.5, &m, &s);
  EXPECT_EQ(m, 1 << 30);
  EXPECT_EQ(s, 0);
  quantize_multiplier(0.75, &m, &s);
  EXPECT_EQ(m, 3 << 29);
  EXPECT_EQ(s, 0);
  // A fraction that rounds up to 2^31 is halved and the shift bumped.
  quantize_multiplier(1.0 - std::ldexp(1.0, -33), &m, &s);
  EXPECT_EQ(m, 1 << 30);
  EXPECT_EQ(s, 1);
  // The smallest representable shift, then the flush to zero below it.
  quantize_multiplier(std::ldexp(1.0, -32), &m, &s);
  EXPECT_EQ(m, 1 << 30);
  EXPECT_EQ(s, -31);
  quantize_multiplier(std::ldexp(1.0, -33), &m, &s);
  EXPECT_EQ(m, 0);
  EXPECT_EQ(s, 0);
  EXPECT_EQ(multiply_by_quantized_multiplier(kMax, m, s), 0);
  quantize_multiplier(1e-12, &m, &s);
  EXPECT_EQ(m, 0);
  EXPECT_EQ(s, 0);
  // The largest allowed shift, then the error.
  quantize_multiplier(std::ldexp(1.0, 29), &m, &s);
  EXPECT_EQ(m, 1 << 30);
  EXPECT_EQ(s, 30);
  EXPECT_THROW(quantize_multiplier(std::ldexp(1.0, 30), &m, &s), std::invalid_argument);
  EXPECT_THROW(quantize_multiplier(std::ldexp(1.0, 30) - 1e-6, &m, &s), std::invalid_argument);  // rounds up
}

TEST(QuantizeMultiplier, RejectsNonPositiveAndNonFiniteNamingTheValue) {
  int32_t m = 0;
  int s = 0;
  const std::vector<std::pair<double, std::string>> bad = {
      {0.0, "0"}, {-0.25, "-0.25"}, {std::nan(""), "nan"}, {INFINITY, "inf"}, {-INFINITY, "-inf"}};
  for (const auto& [value, text] : bad) {
    try {
      quantize_multiplier(value, &m, &s);
      ADD_FAILURE() << "no exception for " << value;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("real multiplier " + text), std::string::npos) << e.what();
    }
  }
}

TEST(QuantizeMultiplier, RoundTripsWithinTwoToTheMinus31Relative) {
  Rng rng(4);
  for (int i = 0; i < 100000; ++i) {
    const double real = std::exp2(rng.uniform(-31.0f, 29.9f) + rng.uniform() * 1e-3);
    int32_t m = 0;
    int s = 0;
    quantize_multiplier(real, &m, &s);
    ASSERT_GE(m, 1 << 30) << real;  // m is int32: < 2^31 by type
    ASSERT_GE(s, -31);
    ASSERT_LE(s, 30);
    ASSERT_LE(std::fabs(dequantize_multiplier(m, s) - real), real * std::ldexp(1.0, -31)) << real;
  }
}

TEST(Requantize, AddsOffsetAndClamps) {
  // 1000 * 0.5 = 500 -> clamped to 127 - 10 then + 10.
  EXPECT_EQ(requantize(1000, 1 << 30, 0, 10, -128, 127), 127);
  EXPECT_EQ(requantize(100, 1 << 30, 0, 10, -128, 127), 60);
  EXPECT_EQ(requantize(-100, 1 << 30, 0, 10, -128, 127), -40);
  EXPECT_EQ(requantize(-100, 1 << 30, 0, 10, 10, 127), 10);   // fused ReLU: zero point is the floor
  EXPECT_EQ(requantize(-1000, 1 << 30, 0, -128, -128, 127), -128);
  EXPECT_EQ(requantize(kMax, 1 << 30, 30, 127, -128, 127), 127);  // no overflow in the final add
  EXPECT_EQ(requantize(kMin, 1 << 30, 30, -128, -128, 127), -128);
  EXPECT_EQ(requantize(4, 1 << 30, -1, 0, -128, 127), 1);  // 4 * 0.25
  EXPECT_EQ(requantize(5, 1 << 30, -1, 0, -128, 127), 1);  // 1.25 -> 1 (two roundings: 2.5 -> 3, 1.5 -> 2)
  EXPECT_EQ(requantize(6, 1 << 30, -1, 0, -128, 127), 2);  // 1.5 -> 2
}

TEST(Requantize, MatchesModelOnRandomInputs) {
  Rng rng(5);
  for (int i = 0; i < 100000; ++i) {
    const int32_t acc = random_int32(rng);
    const int32_t m = static_cast<int32_t>((1u << 30) + rng.below(1u << 30));
    const int shift = static_cast<int>(rng.below(62)) - 31;
    const int32_t off = static_cast<int32_t>(rng.below(256)) - 128;
    const int32_t lo = static_cast<int32_t>(rng.below(256)) - 128;
    const int32_t hi = lo + static_cast<int32_t>(rng.below(128 - lo));
    const int64_t expect = std::clamp<int64_t>(off + model_mul_by_quantized(acc, m, shift), lo, hi);
    ASSERT_EQ(requantize(acc, m, shift, off, lo, hi), expect);
  }
}

TEST(QuantizeValue, RoundsHalfToEvenAndSaturates) {
  EXPECT_EQ(quantize_value(0.5f, 1.0f, 0, -128, 127), 0);
  EXPECT_EQ(quantize_value(1.5f, 1.0f, 0, -128, 127), 2);
  EXPECT_EQ(quantize_value(2.5f, 1.0f, 0, -128, 127), 2);
  EXPECT_EQ(quantize_value(-0.5f, 1.0f, 0, -128, 127), 0);
  EXPECT_EQ(quantize_value(-1.5f, 1.0f, 0, -128, 127), -2);
  EXPECT_EQ(quantize_value(0.3f, 10.0f, 5, -128, 127), 8);  // 3 + 5
  EXPECT_EQ(quantize_value(1e30f, 1.0f, 3, -128, 127), 127);
  EXPECT_EQ(quantize_value(-1e30f, 1.0f, 3, -128, 127), -128);
  EXPECT_EQ(quantize_value(INFINITY, 1.0f, 0, -127, 127), 127);
  EXPECT_EQ(quantize_value(-INFINITY, 1.0f, 0, -127, 127), -127);
  EXPECT_EQ(quantize_value(3e9f, 1.0f, -100, -128, 127), 127);  // beyond int32 before the clamp
  EXPECT_EQ(quantize_value(std::nanf(""), 1.0f, 7, -128, 127), 7);
  EXPECT_EQ(quantize_value(100.0f, 1.0f, 0, 0, 15), 15);  // other ranges (4-bit unsigned)
}

// A mid-rise grid's codes: the odd integer nearest x / scale (the even integers, halfway, go up),
// saturating at +-qmax; NaN gives 0, as fake-quant gives NaN the value 0.
TEST(QuantizeOddValue, RoundsToTheNearestOddCodeAndSaturates) {
  EXPECT_EQ(quantize_odd_value(0.0f, 1.0f, 3), 1);
  EXPECT_EQ(quantize_odd_value(-0.0f, 1.0f, 3), 1);
  EXPECT_EQ(quantize_odd_value(-0.1f, 1.0f, 3), -1);
  EXPECT_EQ(quantize_odd_value(1.9f, 1.0f, 3), 1);
  EXPECT_EQ(quantize_odd_value(2.0f, 1.0f, 3), 3);
  EXPECT_EQ(quantize_odd_value(-2.0f, 1.0f, 3), -1);
  EXPECT_EQ(quantize_odd_value(-2.1f, 1.0f, 3), -3);
  EXPECT_EQ(quantize_odd_value(0.9f, 5.0f, 7), 5);  // 4.5 -> 5
  EXPECT_EQ(quantize_odd_value(100.0f, 1.0f, 3), 3);
  EXPECT_EQ(quantize_odd_value(-100.0f, 1.0f, 3), -3);
  EXPECT_EQ(quantize_odd_value(INFINITY, 1.0f, 127), 127);
  EXPECT_EQ(quantize_odd_value(-INFINITY, 1.0f, 127), -127);
  EXPECT_EQ(quantize_odd_value(std::nanf(""), 1.0f, 3), 0);
  // On the grid, every code is odd and within one level (two scales) of x where x is inside the range.
  for (float x = -3.0f; x <= 3.0f; x += 0.01f) {
    const int32_t q = quantize_odd_value(x, 2.0f, 7);
    EXPECT_NE(q % 2, 0) << x;
    EXPECT_LE(std::abs(0.5f * static_cast<float>(q) - x), 0.5f + 1e-6f) << x;
  }
  QParams mid;
  mid.scale = {0.5f};
  mid.zero_point = {0};
  mid.quant_min = -3, mid.quant_max = 3, mid.odd_codes = true;
  EXPECT_EQ(quantize_weight_value(0.1f, 2.0f, mid), 1);
  mid.odd_codes = false;
  EXPECT_EQ(quantize_weight_value(0.1f, 2.0f, mid), 0);
}

}  // namespace
}  // namespace qatlab
