// fuzz_int8_model.cpp: Int8Graph::load (quant/engine/int8_graph.h) on arbitrary HDF5 content behind a valid
// seal: op lists, slots, shapes, grids and weights, then the packing load() does for the kernels.
#include "fuzz_util.h"

#include "quant/engine/int8_graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::string path = qatlab::fuzz::sealed_file("model.int8.h5", data, size);
    qatlab::Int8Graph::load(path);  // validates, then prepare()s: packs the weights
  } catch (const std::exception&) {
  }
  return 0;
}
