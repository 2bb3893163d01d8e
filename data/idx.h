// idx.h: reads and writes IDX files (the MNIST container format), raw or gzip-compressed.
//
// An IDX file is a 4-byte magic (0x00 0x00, a type byte, the number of dimensions), one big-endian
// uint32 per dimension, then the elements in row-major order. We support the unsigned-byte type (0x08),
// which is what MNIST and Fashion-MNIST use for both images and labels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qatlab {

struct IdxArray {
  std::vector<int64_t> dims;  // 1 to 4 dimensions, e.g. (N, H, W) for images, (N) for labels
  std::vector<uint8_t> data;  // prod(dims) bytes, row-major
};

// Reads `path`, decompressing it first when it starts with the gzip magic bytes 0x1f 0x8b (whatever
// its name). Throws std::runtime_error, with a message that starts with the path, when the file is
// missing or unreadable, the gzip stream is corrupt, the header is not an unsigned-byte IDX header
// with 1..4 dimensions, or the payload is not exactly prod(dims) bytes.
IdxArray read_idx(const std::string& path);

// Writes `array` as an unsigned-byte IDX file, gzip-compressed when `gzip` is true. Throws
// std::invalid_argument when the array is malformed and std::runtime_error when writing fails.
void write_idx(const std::string& path, const IdxArray& array, bool gzip);

}  // namespace qatlab
