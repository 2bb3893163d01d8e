// train_command.h: what `train` and `qat` share: options, resuming, building the optimizer and
// schedule, running the loop and printing the results table.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "apps/train_loop.h"

namespace qatlab {

class TrainCommand {
 public:
  TrainCommand(const std::string& name, const std::string& kind);

  // The command's own options go here before parse().
  po::options_description& options() { return desc_; }
  // Settings with the lowest precedence (below the command line and --config), e.g. the model and
  // dataset of the float checkpoint a QAT run starts from.
  void set_defaults_ini(const std::string& ini) { defaults_ini_ = ini; }
  // The network of the checkpoint a run starts from (qat --from): --model may then name it (by its
  // description's name) without a built-in model or a file of that name.
  void set_base_model(ModelDescription base) { base_model_ = std::move(base); }
  // A QAT run's quantization settings as data (qconfig_data.h), stored in its checkpoints.
  void set_qconfig_data(std::string data) { qconfig_data_ = std::move(data); }
  // What the model this run starts from records of its data (its normalisation is kept unless
  // --mean / --std say otherwise). A resumed run takes its checkpoint's.
  void set_model_data(const DataRecord& record) { model_data_ = record; }
  // Parses (a resumed run takes its settings from the checkpoint, the command line still wins),
  // validates, applies --threads and loads the data. Returns false after --help.
  bool parse(int argc, char** argv);

  const TrainSettings& settings() const { return s_; }
  const DataSettings& data_settings() const { return d_; }
  const DataBundle& data() const { return data_; }
  const po::variables_map& vm() const { return vm_; }
  bool resuming() const { return !resume_path_.empty(); }
  const Checkpoint& resumed() const { return resumed_; }

  // The network to train: the resumed checkpoint's own description when resuming, else --model's
  // (a built-in name or a description file).
  ModelDescription model_description() const;

  // Trains `model` (already built from `description`, not yet loaded from a resumed checkpoint: run()
  // does that), saving checkpoints of this command's kind that carry the description.
  int run(const ModulePtr& model, const ModelDescription& description, std::function<void(int64_t)> on_epoch_start = {},
          std::function<Tensor()> extra_loss = {});

 private:
  std::string name_, kind_;
  TrainSettings s_;
  DataSettings d_;
  po::options_description desc_;
  po::variables_map vm_;
  std::string resume_path_, command_line_, defaults_ini_;
  Checkpoint resumed_;
  std::optional<ModelDescription> base_model_;
  std::string qconfig_data_;
  DataRecord model_data_;
  DataBundle data_;
};

}  // namespace qatlab
