// fuzz_idx.cpp: read_idx (data/idx.h) on arbitrary bytes: IDX headers, dimensions and payload sizes,
// raw or gzip-compressed (the input starting with 0x1f 0x8b takes the zlib path).
#include "fuzz_util.h"

#include "data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qatlab::fuzz::work_dir() + "/input-idx3-ubyte";
  qatlab::fuzz::write_file(path, data, size);
  try {
    const qatlab::IdxArray a = qatlab::read_idx(path);
    // What read_idx promises of a result it returns.
    size_t n = 1;
    for (const int64_t d : a.dims) n *= static_cast<size_t>(d);
    if (a.dims.empty() || a.dims.size() > 4 || n != a.data.size()) __builtin_trap();
  } catch (const std::exception&) {
    // a refused file: the documented outcome
  }
  return 0;
}
