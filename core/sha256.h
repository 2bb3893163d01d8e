// sha256.h: SHA-256 (FIPS 180-4): checks downloaded dataset files and the content of our HDF5 files.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace qatlab {

// Incremental hasher: update() any number of times, then digest() once.
class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256();
  void update(const void* data, size_t size);
  Digest digest();  // finishes the hash; the object must not be updated afterwards

 private:
  void compress(const uint8_t* block);  // one 64-byte block into state_

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;  // a partial block waiting for more bytes
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finished_ = false;
};

std::string to_hex(const Sha256::Digest& digest);  // 64 lowercase hex digits
std::string sha256_hex(const void* data, size_t size);
// The hash of a whole file, streamed in chunks. Throws std::runtime_error naming the path.
std::string sha256_file_hex(const std::string& path);

}  // namespace qatlab
