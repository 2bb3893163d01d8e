// qat_options.h: the quantization options of `qat` (and later `ptq`, `sweep`), and rebuilding any
// saved model (float or QAT) from its checkpoint.
#pragma once

#include <string>
#include <vector>

#include "apps/cli.h"
#include "nn/checkpoint.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

struct QatSettings {
  int wbits = 8, abits = 8;
  bool per_channel = true;
  std::string observer = "ema";           // activations
  std::string weight_observer = "minmax";
  std::string wquant = "observer";        // observer | lsq
  std::string aquant = "observer";        // observer | lsq | lsq+ | pact
  std::vector<std::string> layer_bits;    // NAME=W:A
  int64_t freeze_bn_after = -1;           // epochs; -1 = never
  int64_t freeze_observers_after = -1;    // epochs; -1 = never
};

void add_qconfig_options(po::options_description& desc, QatSettings& q);
QConfig qconfig_from(const QatSettings& q);
// The QConfig a QAT checkpoint was trained with (from its stored settings). A bad stored setting is
// the file's fault, not the command line's: std::runtime_error "<source>: stored setting ...".
QConfig qconfig_from_ini(const std::string& ini, const std::string& source);

// The QConfig of a QAT checkpoint: its stored data (/model/qconfig), or for files written before that
// was stored, its stored settings (qconfig_from_ini). Throws std::runtime_error "<source>: ...".
QConfig checkpoint_qconfig(const Checkpoint& ckpt);

// The model a checkpoint holds, float or QAT (prepared with its QConfig), with its state loaded.
ModulePtr model_from_any_checkpoint(const Checkpoint& ckpt);

}  // namespace qatlab
