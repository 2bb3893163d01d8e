// train_loop.h: the epoch loop shared by `train` (and later `qat`): batches, loss, optimizer steps,
// evaluation, per-epoch checkpoints and metrics files, NaN detection.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/data_setup.h"
#include "nn/checkpoint.h"
#include "nn/lr_schedule.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace qatlab {

struct TrainSettings {
  std::string model = "lenet5";
  int64_t epochs = 3;
  int64_t batch_size = 64;
  std::string optimizer = "sgd";
  float lr = 0.05f;
  float momentum = 0.9f;
  bool nesterov = false;
  float weight_decay = 5e-4f;
  bool decay_bn_and_bias = false;  // weight decay on BN parameters and biases too
  std::string schedule = "cosine";
  int64_t step_epochs = 30;
  float gamma = 0.1f;
  std::string milestones;
  int64_t warmup_epochs = 0;
  float label_smoothing = 0.0f;
  float clip_grad_norm = 0.0f;  // > 0: scale gradients down to this global L2 norm before each step
  uint64_t seed = 1;
  int threads = 0;  // 0 = all cores (shared among the processes of a run on one machine)
  // Each global batch is cut into this many chunks whose gradients are summed in chunk order
  // (apps/chunked_step.h), so that N processes give the weights of 1. 0 = 1 in a single process, 8 under
  // mpirun; parse() resolves it and the run's stored settings hold the number.
  int64_t grad_chunks = 0;
  std::string out;
  bool overwrite = false;
  std::string resume;
  int64_t stop_after = 0;
  std::string progress = "auto";
};

// The chunk count a run uses: grad_chunks, or for 0 the default (1 in a single process, kDefaultChunks
// under mpirun). UsageError when the processes outnumber the chunks or the chunks the batch.
inline constexpr int64_t kDefaultChunks = 8;
int64_t resolve_grad_chunks(int64_t grad_chunks, int64_t batch_size);

// More epochs than anyone trains: a bound against typing mistakes (a history row is kept per epoch).
inline constexpr int64_t kMaxEpochs = 100000;

void add_train_options(po::options_description& desc, TrainSettings& s);
// Checks ranges (lr > 0, batch >= 1, epochs >= 0, ...) and throws UsageError naming the option; with
// check_model, also that --model is a built-in model or a description file (which may then throw
// ModelDescriptionError for a bad file).
void validate_train_settings(const TrainSettings& s, bool check_model = true);
// Applies --threads (0 = every core; under mpirun, the cores divided among this machine's processes) to
// OpenMP; returns the count in use. UsageError outside 0..kMaxThreads.
int apply_threads(int threads);

// The model's parameters for an optimizer; weight decay only on tensors of 2 or more dimensions
// (weights) unless decay_all.
std::vector<ParamRef> param_refs(const Module& model, bool decay_all);

struct EvalResult {
  double loss = 0.0, accuracy = 0.0;
  int64_t count = 0;
  double seconds = 0.0;
  std::vector<int32_t> predictions;  // top-1 class per test image, in dataset order
};
// Runs `model` in eval mode over the whole loader (no gradients).
EvalResult evaluate(Module& model, DataLoader& loader);

// Everything the loop needs besides the settings. The loop owns nothing of it.
struct TrainJob {
  ModulePtr model;
  Optimizer* optimizer = nullptr;
  LrSchedule schedule;
  const DataBundle* data = nullptr;
  std::string out_dir;            // metrics.csv, summary.json, checkpoint.h5 go here
  Checkpoint resume_from;         // when resuming: what was loaded (epoch > 0)
  bool resuming = false;
  std::string config_ini;         // stored in the checkpoint
  std::string command_line;
  // A fresh checkpoint skeleton (model name, kind, spec) that the loop fills in each epoch.
  std::function<Checkpoint()> checkpoint_base;
  // Called at the start of every epoch (0-based) before any batch: schedules such as freezing BN.
  std::function<void(int64_t epoch)> on_epoch_start;
  // Optional regulariser added to each batch's loss (e.g. PACT's L2 decay of its clipping levels).
  std::function<Tensor()> extra_loss;
};

struct TrainOutcome {
  std::vector<MetricsRow> history;
  int64_t epochs_done = 0;
  bool stopped_early = false;  // --stop-after ended the run before the last epoch
};

// The training curve: train and test accuracy (%) per epoch of `history` as an SVG line chart (the
// curve.svg that training writes beside metrics.csv, and `qatlab info CKPT --curve FILE`).
std::string curve_svg(const std::vector<MetricsRow>& history, const std::string& title);

// Runs epochs [start, settings.epochs). Throws std::runtime_error naming the epoch and batch if the
// loss becomes NaN or infinite.
TrainOutcome run_training(TrainJob& job, const TrainSettings& settings);

// --out DIR: refuses a directory that already holds a checkpoint unless --overwrite; without --out,
// picks runs/<model>-<dataset>, then -2, -3, ... so an earlier run is never overwritten.
std::string choose_out_dir(const std::string& out, bool overwrite, const std::string& stem);

}  // namespace qatlab
