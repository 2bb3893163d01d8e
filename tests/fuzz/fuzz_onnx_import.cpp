// fuzz_onnx_import.cpp: import_onnx_model (quant/onnx/onnx_import.h) on arbitrary bytes, as `qatlab import`
// reads a file: protobuf parsing, the ONNX checker, the graph walk and every op handler, then the model the
// description stands for, built and given the imported parameters.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>

#include "quant/onnx/onnx_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const qatlab::OnnxImport imported =
        qatlab::import_onnx_model(std::string(reinterpret_cast<const char*>(data), size), "fuzz", "fuzz input");
    qatlab::imported_model(imported);
  } catch (const std::exception&) {
  }
  return 0;
}
