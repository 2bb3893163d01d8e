// train_command.h: what `train` and `qat` share: their options (train_options.h), parsing them (a resumed
// run takes its settings from its checkpoint), loading the data, and the library's TrainRun made from
// all that (nn/train/train_run.h): the run directory chosen, the resumed checkpoint checked, the settings
// to store, the progress display and the report on stdout; reading and checking a checkpoint's stored
// train settings, as resuming does.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "apps/data_setup.h"
#include "apps/progress.h"
#include "apps/train_options.h"
#include "nn/train/train_run.h"

namespace qatlab {

// The train and data options the run saved in `ckpt` was made with, as a resumed run keeps them (all
// but --resume, --stop-after, --overwrite, --progress, --threads and --out), read into `o` and `d` over
// what they hold and checked as the command line is: a bad one is the file's fault, std::runtime_error
// "<file>: stored setting ...".
void read_stored_train_options(const Checkpoint& ckpt, TrainOptions& o, DataSettings& d);

// UsageError unless the settings `now` (INI lines) continue the run made with `saved`, which has done
// `epochs_done` epochs: only --epochs, --threads, --progress, --stop-after, --out, --overwrite, --resume and
// --data-dir may differ, and --swa-start and --swa-lr while no epoch is averaged and the schedule of the
// epochs done stays the same.
void check_resume_changes(const std::string& saved, const std::string& now, int64_t epochs_done);

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
  // What the model this run starts from records of its data (its normalisation is kept unless
  // --mean / --std say otherwise). A resumed run takes its checkpoint's.
  void set_model_data(const DataRecord& record) { model_data_ = record; }
  // Parses (a resumed run takes its settings from the checkpoint, the command line still wins),
  // validates, applies --threads and loads the data. Returns false after --help.
  bool parse(int argc, char** argv);

  const TrainOptions& settings() const { return o_; }
  const DataSettings& data_settings() const { return d_; }
  const DataBundle& data() const { return data_; }
  const po::variables_map& vm() const { return vm_; }
  bool resuming() const { return !resume_path_.empty(); }
  const Checkpoint& resumed() const { return resumed_; }

  // The network to train: the resumed checkpoint's own description when resuming, else --model's
  // (a built-in name or a description file).
  ModelDescription model_description() const;

  // The library's run of `model` (built from `description`, not yet loaded from a resumed checkpoint:
  // the run does that): the settings and data parsed, the run directory (chosen now: a UsageError when
  // --out holds a run), the resumed checkpoint (a UsageError when it cannot go on as this run), the
  // settings its checkpoints store (every option of the command as parsed, the dataset and chunk count
  // as resolved), the command line, progress on stderr and the report on stdout. The TrainCommand must
  // outlive the run.
  TrainRun make_run(const ModulePtr& model, const ModelDescription& description);

 private:
  std::string name_, kind_;
  TrainOptions o_;
  DataSettings d_;
  po::options_description desc_;
  po::variables_map vm_;
  std::string resume_path_, command_line_, defaults_ini_;
  Checkpoint resumed_;
  std::optional<ModelDescription> base_model_;
  DataRecord model_data_;
  DataBundle data_;
  std::unique_ptr<Progress> progress_;
};

}  // namespace qatlab
