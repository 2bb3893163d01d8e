// train_run.h: a whole training run from its settings: the optimizer and learning-rate schedule they
// name, a resumed run's state loaded back, the epoch loop (train_loop.h), and a report of the run on a
// stream: what is trained on what, a line per epoch, the results. `qatlab train` is this run with its
// options parsed into the fields; `qatlab qat` is train_qat (quant/workflow/qat_training.h).
#pragma once

#include <cstdio>
#include <functional>
#include <memory>
#include <string>

#include "nn/model_description.h"
#include "nn/train/train_loop.h"

namespace qatlab {

struct TrainRun {
  std::string name = "train";     // what the report calls the run ("train", "qat")
  std::string kind = "float";     // the checkpoints' model kind ("float", "qat")
  ModulePtr model;                // to train; a resumed run's state is loaded into it
  // The network: its name and description text are stored in the checkpoints (a model built in code
  // has a name and no text).
  ModelDescription description;
  std::string qconfig_data;       // a QAT run's QConfig as data (quant/qat/qconfig_data.h), stored likewise
  TrainSettings settings;
  std::string model_label;        // the network as the caller named it (summary.json, the results); "": its name
  const DataBundle* data = nullptr;  // with its training split
  std::string out_dir;            // the run's files (see TrainJob); "": no file is written
  const Checkpoint* resume_from = nullptr;  // continue this run (check_resumable) from its last epoch
  std::string config_ini;         // the settings as text, stored in the checkpoints (the command's options)
  std::string command_line;       // stored likewise
  std::function<void(int64_t epoch)> on_epoch_start;  // see TrainJob
  std::function<Tensor()> extra_loss;                 // see TrainJob
  ModulePtr teacher;                                  // see TrainJob (knowledge distillation)
  std::shared_ptr<const TeacherCache> teacher_cache;  // see TrainJob
  TrainMonitor* monitor = nullptr;                    // optional: progress within an epoch
  std::FILE* log = nullptr;                           // optional: the report (process 0 writes it)
  bool detect_anomaly = false;                        // see TrainJob
};

// Throws std::invalid_argument unless the run saved in `ckpt` can go on as a run of `description` with
// `settings`: the same network (name and, when stored, description), the same optimizer, and weight
// averaging that can go on (check_averaging_resumable).
void check_resumable(const Checkpoint& ckpt, const ModelDescription& description, const TrainSettings& settings);

// Trains run.model: optimizer and schedule from the settings (std::invalid_argument for bad ones, and for
// data without a training split), the resumed state when resuming (check_resumable first), then
// run_training; reports to run.log. Throws what run_training throws.
TrainOutcome train_model(const TrainRun& run);

}  // namespace qatlab
