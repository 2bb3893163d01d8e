// fuzz_cifar.cpp: load_cifar10 (data/dataset.h) on arbitrary bytes as the test batch (test_batch.bin):
// record sizes and labels.
#include "fuzz_util.h"

#include "data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = qatlab::fuzz::work_dir();
  qatlab::fuzz::write_file(dir + "/test_batch.bin", data, size);
  try {
    const qatlab::ImageDataset ds = qatlab::load_cifar10(dir, qatlab::Split::Test);
    for (const int32_t label : ds.labels) {
      if (label < 0 || label >= ds.num_classes) __builtin_trap();
    }
    if (ds.pixels.size() != static_cast<size_t>(ds.n * ds.c * ds.h * ds.w)) __builtin_trap();
  } catch (const std::exception&) {
  }
  return 0;
}
