// file_io.cpp: whole-file byte I/O with error messages that name the path.
#include "data/file_io.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

namespace qatlab {

namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::error_code ec;
  // fopen succeeds on a directory under Linux and only the read fails; say what is wrong up front.
  if (std::filesystem::is_directory(path, ec)) {
    throw std::runtime_error(path + ": is a directory, expected a file");
  }
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");

  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<uint8_t> bytes;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    const long size = std::ftell(f.get());
    // One chunk of slack so the final (short) read does not reallocate and copy the whole file.
    if (size > 0) bytes.reserve(static_cast<size_t>(size) + kChunk);
    std::rewind(f.get());
  }
  // Read in chunks rather than trusting the size alone: it works for pipes and files that change.
  size_t used = 0;
  for (;;) {
    bytes.resize(used + kChunk);
    const size_t got = std::fread(bytes.data() + used, 1, kChunk, f.get());
    used += got;
    if (got < kChunk) break;
  }
  bytes.resize(used);
  if (std::ferror(f.get())) throw std::runtime_error(path + ": read error (" + std::strerror(errno) + ")");
  return bytes;
}

void write_file_bytes(const std::string& path, const uint8_t* data, size_t size) {
  FilePtr f(std::fopen(path.c_str(), "wb"));
  if (!f) throw std::runtime_error(path + ": cannot create (" + std::strerror(errno) + ")");
  if (size > 0 && std::fwrite(data, 1, size, f.get()) != size) {
    throw std::runtime_error(path + ": write error (" + std::strerror(errno) + ")");
  }
  if (std::fclose(f.release()) != 0) {
    throw std::runtime_error(path + ": write error on close (" + std::strerror(errno) + ")");
  }
}

bool is_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}

}  // namespace qatlab
