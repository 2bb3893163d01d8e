// fuzz_util.h: what the harnesses share: the fuzzer's bytes written to a file the real reader opens.
//
// Every reader takes a path, so each input becomes a file in a directory of this process's own
// (the harnesses may run side by side). The HDF5 readers refuse a file whose 512-byte seal header
// (core/file_seal.h) does not match its content, which a mutated file almost never does: their
// harnesses treat the input as the HDF5 content after the header and seal it first, so that the
// mutations reach the HDF5 library and our validation instead of the checksum alone.
#pragma once

#include "core/file_seal.h"

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace qatlab::fuzz {

// A directory for this process's files, made once; removed when the process exits normally.
inline const std::string& work_dir() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("qatlab-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() /
                                      ("qatlab-fuzz-" + std::to_string(::getpid())),
                                  ec);
    });
    return d.string();
  }();
  return dir;
}

// Writes `size` bytes, after `pad` zero bytes, to `path`. A failure here is the harness's, not a finding
// in the reader: abort so that it cannot pass for one.
inline void write_file(const std::string& path, const uint8_t* data, size_t size, size_t pad = 0) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (size_t i = 0; i < pad; ++i) out.put('\0');
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();
}

// The input as HDF5 content behind a valid seal header: the file a qatlab writer would have made had
// it written these bytes.
inline std::string sealed_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = work_dir() + "/" + name;
  write_file(path, data, size, static_cast<size_t>(kSealBytes));
  seal_file(path);
  return path;
}

}  // namespace qatlab::fuzz
