// qat_training.h: quantization-aware training: a float model prepared for QAT with a QConfig
// (prepare_qat) and trained as any model is (nn/train/train_run.h), with what QAT adds: PACT's L2 decay
// of its clipping levels on the loss, batch norm frozen and observers stopped from given epochs, the
// QConfig stored as data in every checkpoint. `qatlab qat` is this with its options parsed into the run.
#pragma once

#include <cstdint>
#include <memory>

#include "nn/train/train_run.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

struct QatSchedule {
  int64_t freeze_bn_after = -1;         // from this epoch on, BN uses its running statistics; -1 never
  int64_t freeze_observers_after = -1;  // from this epoch on, quantization ranges stay; -1 never
};

struct QatTraining {
  std::shared_ptr<QatModel> model;  // the trained QAT model
  TrainOutcome outcome;
};

// Prepares run.model (a float model: trained weights, or fresh ones to train from scratch) with
// `qconfig`, reports the quantization to run.log, and trains it with train_model as a run of kind "qat"
// whose checkpoints store the QConfig as data. run.kind, run.qconfig_data, run.on_epoch_start (the
// schedule) and run.extra_loss (PACT's decay) are set here; a resumed run's QAT state is loaded into the
// prepared model. Throws what prepare_qat and train_model throw.
QatTraining train_qat(TrainRun run, const QConfig& qconfig, const QatSchedule& schedule = {});

}  // namespace qatlab
