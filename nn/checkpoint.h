// checkpoint.h: training checkpoints in HDF5: weights, optimizer state, RNG, config and history.
//
// File layout (format "qatlab-checkpoint", version 1), readable with h5py or h5dump:
//   /                         attrs: format, format_version, qatlab_version, created (UTC, ISO 8601)
//   /model                    attrs: name (the description's name), kind ("float"), channels, height, width,
//                             num_classes
//   /model/description        string: the network's description (nn/model_description.h), from which the
//                             model is rebuilt; files without it name a built-in model
//   /model/qconfig            string: a QAT model's quantization settings, field by field
//                             (quant/qat/qconfig_data.h); older QAT files keep them in /config only
//   /model/state/<name>       float32, one dataset per parameter and buffer ("features.0.weight")
//   /optimizer                attrs: kind ("sgd" | "adam" | "adamw")
//   /optimizer/state/<kind>/<param>  float32 optimizer buffers ("exp_avg/features.0.weight", "step")
//   /training                 attrs: epoch (epochs completed), dataset (a built-in name, or "hdf5:", "folder:"
//                             or "idx:" and an absolute path), data_mean and data_std (float32 (C): the
//                             normalisation of pixel / 255 the model was trained with), class_names (one
//                             string, the names separated by newlines); the last three are absent in files
//                             written before they were recorded
//   /training/rng_state       int64[4]: the trainer's generator (xoshiro256** words, bit-cast)
//   /training/history/<col>   float64[epochs]: one column per metric (epoch, train_loss, test_acc, ...)
//   /training/swa/<name>      float32: a run with weight averaging (nn/train/swa.h): the mean of each
//                             parameter over the averaged epochs; attrs: count (those epochs),
//                             model_is_average (1: /model/state holds that mean, with batch-norm
//                             statistics recomputed for it: the run has ended; 0: the last step's weights)
//   /config                   string: the full resolved configuration as INI "key = value" lines
//   /metadata                 attrs: free-form strings (command line, host threads, ...)
// Every string is fixed-length UTF-8 (h5io.h); a file with variable-length strings, as every checkpoint
// written before was, is refused with a line saying it must be made again.
//
// Saving is atomic (temp file + rename): a crash never leaves a broken checkpoint behind.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "nn/model_description.h"
#include "nn/module.h"
#include "nn/zoo.h"

namespace qatlab {

inline constexpr const char* kCheckpointFormat = "qatlab-checkpoint";
inline constexpr int64_t kCheckpointVersion = 1;
// More epochs than a run has: a stored epoch or history past it is damage.
inline constexpr int64_t kMaxCheckpointEpochs = 1000000;

// One row of the training history; columns are free-form so later stages (QAT) can add theirs.
using MetricsRow = std::map<std::string, double>;

struct Checkpoint {
  std::string model_name;
  std::string model_description;  // the description's text (empty: model_name is a built-in model)
  std::string qconfig;            // a QAT model's quantization settings as data (quant/qat/qconfig_data.h), or ""
  std::string model_kind = "float";
  ModelSpec spec;
  NamedTensors model_state;
  std::string optimizer_kind;
  NamedTensors optimizer_state;
  int64_t epoch = 0;  // epochs completed
  std::string dataset;
  std::vector<float> data_mean, data_std;  // (C); empty when the file does not record them
  std::vector<std::string> class_names;    // (num_classes); likewise
  Rng::State rng_state{};
  NamedTensors swa_mean;          // weight averaging: each parameter's mean over swa_count epochs
  int64_t swa_count = 0;          // 0: no averaging (swa_mean empty)
  bool model_is_average = false;  // model_state holds swa_mean (with recomputed batch-norm statistics)
  std::vector<MetricsRow> history;
  std::string config_ini;
  std::map<std::string, std::string> metadata;
  // Filled in by load_checkpoint (save_checkpoint writes its own).
  int64_t format_version = 0;
  std::string qatlab_version, created;
  std::string source;  // the file it was loaded from, for messages about its stored settings
};

// Atomic: the file at `path` is replaced only once the new one is complete.
void save_checkpoint(const std::string& path, const Checkpoint& ckpt);
// Throws std::runtime_error with one line for a missing, unreadable, damaged (file_seal.h), foreign or
// newer-version file, and for stored sizes out of range (validate_model_spec, epochs). Strings read
// from the file (model name and kind, dataset) come back with control bytes escaped (printable()).
Checkpoint load_checkpoint(const std::string& path);

// The description of a checkpoint's network: the stored one, or the built-in model of that name.
ModelDescription checkpoint_model_description(const Checkpoint& ckpt);
// A checkpoint's network with fresh parameters (drawn from rng), not its stored state.
ModulePtr build_checkpoint_model(const Checkpoint& ckpt, Rng& rng);
// The model a checkpoint describes, built from its description and loaded with its state.
ModulePtr model_from_checkpoint(const Checkpoint& ckpt);

}  // namespace qatlab
