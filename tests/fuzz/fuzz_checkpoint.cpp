// fuzz_checkpoint.cpp: load_checkpoint (nn/checkpoint.h) on arbitrary HDF5 content behind a valid seal,
// then, as `qatlab eval` and `convert` do, the model it describes built and given its state
// (model_from_any_checkpoint: float or QAT, its QConfig read as the commands read it, checkpoint_qconfig).
#include "fuzz_util.h"

#include "apps/qat_options.h"
#include "nn/checkpoint.h"
#include "quant/workflow/checkpoint_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::string path = qatlab::fuzz::sealed_file("checkpoint.h5", data, size);
    const qatlab::Checkpoint ckpt = qatlab::load_checkpoint(path);
    qatlab::model_from_any_checkpoint(ckpt, qatlab::checkpoint_qconfig);
  } catch (const std::exception&) {
  }
  return 0;
}
