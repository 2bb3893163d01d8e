// fuzz_int8_model.cpp: Int8Graph::load (quant/int8_graph.h) on arbitrary HDF5 content behind a valid
// seal: op lists, slots, shapes, grids and weights; a graph that loads is prepared (weights packed), as before a run.
#include "fuzz_util.h"

#include "quant/int8_graph.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::string path = qatlab::fuzz::sealed_file("model.int8.h5", data, size);
    qatlab::Int8Graph g = qatlab::Int8Graph::load(path);
    g.prepare();
  } catch (const std::exception&) {
  }
  return 0;
}
