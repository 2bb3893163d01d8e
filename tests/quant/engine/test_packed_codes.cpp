// test_packed_codes.cpp: 2- and 4-bit signed codes packed several to a byte: the bits a grid needs, the
// exact byte layout (the integer model file depends on it), round trips over every length and width,
// the per-code reader, and the refusals.
#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/rng.h"
#include "quant/engine/packed_codes.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::random_codes;
using test::throws_with;

TEST(PackedCodes, StorageBitsOfWeightGrids) {
  // Symmetric narrow grids of 2 (ternary), 3, 4, 5 and 8 bits.
  EXPECT_EQ(storage_bits(-1, 1), 2);
  EXPECT_EQ(storage_bits(-3, 3), 4);
  EXPECT_EQ(storage_bits(-7, 7), 4);
  EXPECT_EQ(storage_bits(-15, 15), 8);
  EXPECT_EQ(storage_bits(-127, 127), 8);
  // The two's-complement edges.
  EXPECT_EQ(storage_bits(-2, 1), 2);
  EXPECT_EQ(storage_bits(-2, 2), 4);
  EXPECT_EQ(storage_bits(-8, 7), 4);
  EXPECT_EQ(storage_bits(-9, 7), 8);
  EXPECT_EQ(storage_bits(-8, 8), 8);
  EXPECT_EQ(storage_bits(0, 0), 2);
  EXPECT_TRUE(throws_with([] { storage_bits(-129, 0); }, {"[-129, 0]", "[-128, 127]"}));
  EXPECT_TRUE(throws_with([] { storage_bits(3, 2); }, {"[3, 2]"}));
}

TEST(PackedCodes, ByteLayoutIsLowBitsFirstTwosComplement) {
  // 4 bits: code 2i in the low nibble of byte i, code 2i + 1 in the high one; a last odd code leaves
  // the high nibble 0.
  const std::vector<int8_t> four = {1, -1, -8, 7, -3};
  EXPECT_EQ(pack_codes(four.data(), 5, 4), (std::vector<uint8_t>{0xF1, 0x78, 0x0D}));
  // 2 bits: four codes a byte, from bit 0 up: 1 -> 01, -1 -> 11, 0 -> 00, -2 -> 10.
  const std::vector<int8_t> two = {1, -1, 0, -2, 1, -1};
  EXPECT_EQ(pack_codes(two.data(), 6, 2), (std::vector<uint8_t>{0x8D, 0x0D}));
  // 8 bits: the int8 codes themselves.
  const std::vector<int8_t> eight = {-128, 127, -1};
  EXPECT_EQ(pack_codes(eight.data(), 3, 8), (std::vector<uint8_t>{0x80, 0x7F, 0xFF}));
  EXPECT_TRUE(pack_codes(four.data(), 0, 4).empty());
}

TEST(PackedCodes, RoundTripEveryWidthAndLength) {
  Rng rng(3);
  for (int bits : {2, 4, 8}) {
    const int32_t lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
    for (int64_t n = 0; n <= 37; ++n) {
      const std::vector<int8_t> codes = random_codes(rng, n, lo, hi);
      const std::vector<uint8_t> packed = pack_codes(codes.data(), n, bits);
      ASSERT_EQ(static_cast<int64_t>(packed.size()), packed_bytes(n, bits));
      ASSERT_EQ(static_cast<int64_t>(packed.size()), (n * bits + 7) / 8);
      std::vector<int8_t> back(n, 99);
      unpack_codes(packed.data(), n, bits, back.data());
      ASSERT_EQ(back, codes) << bits << " bits, " << n << " codes";
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(packed_code(packed.data(), i, bits), codes[i]) << bits << " " << i;
      // The unused high bits of a partial last byte are zero.
      if (bits < 8 && n % (8 / bits) != 0) {
        EXPECT_EQ(packed.back() >> (bits * (n % (8 / bits))), 0) << bits << " bits, " << n << " codes";
      }
    }
  }
}

TEST(PackedCodes, ThreeBitGridsUseFourBitStorage) {
  Rng rng(4);
  const std::vector<int8_t> codes = random_codes(rng, 101, -3, 3);
  const int bits = storage_bits(-3, 3);
  ASSERT_EQ(bits, 4);
  const std::vector<uint8_t> packed = pack_codes(codes.data(), 101, bits);
  EXPECT_EQ(packed.size(), 51u);
  std::vector<int8_t> back(101);
  unpack_codes(packed.data(), 101, bits, back.data());
  EXPECT_EQ(back, codes);
}

TEST(PackedCodes, RefusesCodesThatDoNotFitAndBadWidths) {
  const std::vector<int8_t> codes = {1, 0, 8};
  EXPECT_TRUE(throws_with([&] { pack_codes(codes.data(), 3, 4); }, {"code 8", "index 2", "4 bits", "[-8, 7]"}));
  EXPECT_NO_THROW(pack_codes(codes.data(), 2, 2));  // 1 and 0 fit 2 bits
  const std::vector<int8_t> minus = {-1, -3};
  EXPECT_TRUE(throws_with([&] { pack_codes(minus.data(), 2, 2); }, {"code -3", "index 1", "2 bits"}));
  EXPECT_TRUE(throws_with([&] { pack_codes(codes.data(), 3, 3); }, {"3 bits", "expected 2, 4 or 8"}));
  std::vector<int8_t> out(3);
  const std::vector<uint8_t> bytes = {0, 0};
  EXPECT_TRUE(throws_with([&] { unpack_codes(bytes.data(), 3, 5, out.data()); }, {"5 bits"}));
  EXPECT_TRUE(throws_with([] { check_storage_bits(1, "the file"); }, {"the file", "1 bits"}));
}

}  // namespace
}  // namespace qatlab
