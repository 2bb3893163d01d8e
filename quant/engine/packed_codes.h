// packed_codes.h: signed integer codes stored in 2 or 4 bits each, several to a byte: how the integer
// model holds (in memory and in its file) weights of 2 to 4 bits.
//
// Layout: code i of a sequence of `count` codes of `bits` bits sits in byte i / (8 / bits), at bit
// offset bits * (i % (8 / bits)), i.e. low bits first (for 4 bits: the low nibble holds the even
// code), as a two's-complement number of `bits` bits. The unused bits of a last, partial byte are 0.
// bits == 8 is accepted everywhere too and means plain int8 codes, one per byte, so that a caller can
// hold weights of any width as (bytes, bits).
//
// A 3-bit grid ([-3, 3]) takes 4-bit storage: a byte then holds two codes, and splitting it needs
// only a shift and a mask, where 3-bit fields would straddle bytes.
#pragma once

#include <bit>
#include <cstdint>
#include <vector>

namespace qatlab {

// The narrowest storage (2, 4 or 8 bits) whose two's-complement range holds every code of
// [quant_min, quant_max]: [-2, 1] fits 2 bits, [-8, 7] fits 4. For a symmetric narrow weight grid
// [-q, q]: q <= 1 (2 bits, ternary) -> 2, q <= 7 (3 or 4 bits) -> 4, else 8. Throws unless
// -128 <= quant_min <= quant_max <= 127.
int storage_bits(int32_t quant_min, int32_t quant_max);

// Throws std::invalid_argument naming `what` unless bits is 2, 4 or 8.
void check_storage_bits(int bits, const char* what);

// Bytes that `count` codes of `bits` bits take: ceil(count * bits / 8).
inline int64_t packed_bytes(int64_t count, int bits) {
  const int64_t per_byte = 8 / bits;
  return (count + per_byte - 1) / per_byte;
}

// The packed form of codes[0, count). Throws std::invalid_argument naming the first code that does
// not fit `bits` bits (its index and value).
std::vector<uint8_t> pack_codes(const int8_t* codes, int64_t count, int bits);

// codes[0, count) from their packed form (packed_bytes(count, bits) bytes).
void unpack_codes(const uint8_t* packed, int64_t count, int bits, int8_t* codes);

// Code i of a packed sequence: its field, shifted to the top of a byte and arithmetically shifted
// back down, which sign-extends it. The reference kernels read weights with this as they go. (8 / bits
// codes a byte is a power of two: byte and field come from a shift and a mask, not a division.)
inline int8_t packed_code(const uint8_t* packed, int64_t i, int bits) {
  const int log2_per_byte = 3 - std::countr_zero(static_cast<unsigned>(bits));
  const int offset = bits * static_cast<int>(i & ((int64_t{1} << log2_per_byte) - 1));
  const auto top = static_cast<int8_t>(static_cast<uint8_t>(packed[i >> log2_per_byte] << (8 - bits - offset)));
  return static_cast<int8_t>(top >> (8 - bits));
}

}  // namespace qatlab
