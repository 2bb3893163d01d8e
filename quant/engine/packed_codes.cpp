// packed_codes.cpp: packing and unpacking of 2- and 4-bit signed codes (see packed_codes.h).
#include "quant/engine/packed_codes.h"

#include <cstring>
#include <string>

#include "core/tensor.h"

namespace qatlab {

int storage_bits(int32_t quant_min, int32_t quant_max) {
  QATLAB_CHECK(-128 <= quant_min && quant_min <= quant_max && quant_max <= 127,
               "storage_bits: codes [" + std::to_string(quant_min) + ", " + std::to_string(quant_max) +
                   "] must lie in [-128, 127]");
  if (quant_min >= -2 && quant_max <= 1) return 2;
  if (quant_min >= -8 && quant_max <= 7) return 4;
  return 8;
}

void check_storage_bits(int bits, const char* what) {
  QATLAB_CHECK(bits == 2 || bits == 4 || bits == 8,
               std::string(what) + ": codes of " + std::to_string(bits) + " bits: expected 2, 4 or 8");
}

std::vector<uint8_t> pack_codes(const int8_t* codes, int64_t count, int bits) {
  check_storage_bits(bits, "pack_codes");
  QATLAB_CHECK(count >= 0, "pack_codes: count " + std::to_string(count) + " must be >= 0");
  std::vector<uint8_t> packed(packed_bytes(count, bits), 0);
  if (bits == 8) {
    if (count > 0) std::memcpy(packed.data(), codes, count);
    return packed;
  }
  const int per_byte = 8 / bits, lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1;
  const auto mask = static_cast<uint8_t>((1 << bits) - 1);
  for (int64_t i = 0; i < count; ++i) {
    QATLAB_CHECK(codes[i] >= lo && codes[i] <= hi, "pack_codes: code " + std::to_string(codes[i]) + " at index " +
                                                       std::to_string(i) + " does not fit " + std::to_string(bits) +
                                                       " bits ([" + std::to_string(lo) + ", " + std::to_string(hi) +
                                                       "])");
    // The low `bits` bits of the two's complement are the code's two's complement in `bits` bits.
    packed[i / per_byte] |= static_cast<uint8_t>((static_cast<uint8_t>(codes[i]) & mask) << (bits * (i % per_byte)));
  }
  return packed;
}

void unpack_codes(const uint8_t* packed, int64_t count, int bits, int8_t* codes) {
  check_storage_bits(bits, "unpack_codes");
  // Whole bytes with the widths as constants (the kernels unpack filters on every call: these loops
  // vectorise), then the codes of a partial last byte.
  const int64_t whole = count / (8 / bits);
  if (bits == 8) {
    if (count > 0) std::memcpy(codes, packed, count);
  } else if (bits == 4) {
    for (int64_t b = 0; b < whole; ++b) {
      codes[2 * b] = static_cast<int8_t>(static_cast<int8_t>(packed[b] << 4) >> 4);
      codes[2 * b + 1] = static_cast<int8_t>(static_cast<int8_t>(packed[b]) >> 4);
    }
  } else {
    for (int64_t b = 0; b < whole; ++b)
      for (int f = 0; f < 4; ++f)
        codes[4 * b + f] = static_cast<int8_t>(static_cast<int8_t>(packed[b] << (6 - 2 * f)) >> 6);
  }
  for (int64_t i = whole * (8 / bits); i < count; ++i) codes[i] = packed_code(packed, i, bits);
}

}  // namespace qatlab
