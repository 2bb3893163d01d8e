// qat_options.h: the quantization options of `qat`, `ptq` and `sweep`, and the options of `ptq`; their
// QConfig; the INI lines checkpoints store them as; reading the QConfig of a QAT checkpoint of any age.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/data_setup.h"
#include "nn/checkpoint.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

struct QatSettings {
  int wbits = 8, abits = 8;
  bool per_channel = true;
  std::string observer = "ema";           // activations
  std::string weight_observer = "minmax";
  std::string wquant = "observer";        // observer | lsq
  std::string aquant = "observer";        // observer | lsq | lsq+ | pact
  std::string lsq_init;                   // "" (each method's default) | lsq | minmax | mse
  std::string lsq_grad_scale;             // "" (channel) | channel | layer
  float lsq_step_bounds = 0;              // 0 (none) | k >= 1 (QConfig::set_lsq_step_bounds)
  std::string weight_range;               // "" (narrow) | narrow | full (QConfig's WeightRange)
  std::vector<std::string> layer_bits;    // NAME=W:A
  int64_t freeze_bn_after = -1;           // epochs; -1 = never
  int64_t freeze_observers_after = -1;    // epochs; -1 = never
};

void add_qconfig_options(po::options_description& desc, QatSettings& q);
// The settings as the INI lines settings_ini writes for add_qconfig_options (in that order).
std::string qat_settings_ini(const QatSettings& q);
QConfig qconfig_from(const QatSettings& q);
// The QConfig a QAT checkpoint was trained with (from its stored settings). A bad stored setting is
// the file's fault, not the command line's: std::runtime_error "<source>: stored setting ...".
QConfig qconfig_from_ini(const std::string& ini, const std::string& source);

// The QConfig of a QAT checkpoint: its stored data (/model/qconfig, stored_qconfig), or for files written
// before that was stored, its stored settings (qconfig_from_ini). Throws std::runtime_error "<source>: ...".
// The commands pass it to model_from_any_checkpoint (quant/workflow/checkpoint_model.h).
QConfig checkpoint_qconfig(const Checkpoint& ckpt);

// The options of `ptq` besides the quantization and data options.
struct PtqOptions {
  std::string checkpoint;      // the float checkpoint
  int64_t calib_batches = 32;
  int64_t batch_size = 64;
  uint64_t seed = 1;
  std::string out;             // "": beside the checkpoint, ptq-w<W>a<A>
  bool overwrite = false;
  int threads = 0;
};
void add_ptq_options(po::options_description& desc, PtqOptions& p);
// ptq's stored settings: the INI lines settings_ini writes for its options (its own, then the
// quantization and the data options).
std::string ptq_settings_ini(const PtqOptions& p, const QatSettings& q, const DataSettings& d);

}  // namespace qatlab
