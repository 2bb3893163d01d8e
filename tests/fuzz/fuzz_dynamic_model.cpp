// fuzz_dynamic_model.cpp: load_dynamic_model (quant/engine/dynamic_quant.h), the file `qatlab ptq --dynamic`
// writes, on arbitrary HDF5 content behind a valid seal.
#include "fuzz_util.h"

#include "quant/engine/dynamic_quant.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::string path = qatlab::fuzz::sealed_file("model.dynamic.h5", data, size);
    qatlab::load_dynamic_model(path);
  } catch (const std::exception&) {
  }
  return 0;
}
