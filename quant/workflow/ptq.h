// ptq.h: post-training quantization of a float checkpoint: its model prepared for QAT, the observers
// calibrated on a few training batches (calibrate_observers: nothing is learned), the QAT checkpoint and
// the integer model written, both evaluated on the test split. `qatlab ptq` is this with its options
// parsed into the arguments.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "nn/checkpoint.h"
#include "nn/train/data_bundle.h"
#include "nn/train/evaluate.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

struct PtqSettings {
  QConfig qconfig;             // observers only: learned quantizers need training (qat_training.h)
  int64_t calib_batches = 32;  // training batches the observers see
  int64_t batch_size = 64;     // images per calibration batch
  uint64_t seed = 1;           // the calibration batches' order (and augmentation)
};

struct PtqResult {
  std::shared_ptr<QatModel> model;  // calibrated, in evaluation mode
  int64_t calibrated_images = 0;
  EvalResult simulation;            // the QAT model (float simulation) on the test split
  EvalResult integer;               // the integer graph on the test split (predictions and accuracy)
};

// Quantizes the float checkpoint `base` with `data` (its training split calibrates, its test split
// evaluates; normalised as the model records) and writes, into `out_dir` (created if missing):
//   checkpoint.h5   a QAT checkpoint (kind "qat", the QConfig as data, `config_ini` as its settings, the
//                   simulation's test accuracy as epoch 0 of its history)
//   model.int8.h5   the integer graph, with the pixel table of the data's normalisation
// and reports what it did to `log` (three lines; null: nothing). std::invalid_argument for a base that
// is not a float checkpoint or a QConfig with learned quantizers.
PtqResult run_ptq(const Checkpoint& base, const DataBundle& data, const PtqSettings& settings,
                  const std::string& out_dir, const std::string& config_ini, std::FILE* log);

}  // namespace qatlab
