// file_io.h: whole-file byte I/O with error messages that name the path, shared by the dataset readers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qatlab {

// The whole content of `path`. Throws std::runtime_error "PATH: cannot open (reason)" and the like.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Writes `size` bytes to `path` (created or truncated). Throws std::runtime_error naming the path.
void write_file_bytes(const std::string& path, const uint8_t* data, size_t size);

// True when `path` names a regular file (or a symlink to one).
bool is_file(const std::string& path);

}  // namespace qatlab
