// train_loop.h: the epoch loop: batches (whole, or cut into chunks whose gradients add in a fixed order,
// chunked_step.h), loss, optimizer steps on a learning-rate schedule, a test evaluation after every epoch,
// the run's files (checkpoint.h5, metrics.csv, curve.svg, summary.json), NaN detection; and the settings it
// runs with.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/checkpoint.h"
#include "nn/lr_schedule.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/train/data_bundle.h"
#include "nn/train/teacher_cache.h"

namespace qatlab {

// How a model is trained: what decides its weights. (`qatlab train` takes each as an option of the same
// name; where the run's files go, threads and progress display are the caller's.)
struct TrainSettings {
  int64_t epochs = 3;              // in total, counting those of a resumed run
  int64_t batch_size = 64;
  std::string optimizer = "sgd";   // sgd | adam | adamw
  float lr = 0.05f;                // the schedule's base learning rate
  float momentum = 0.9f;           // SGD
  bool nesterov = false;           // SGD
  float weight_decay = 5e-4f;      // L2 for sgd and adam, decoupled for adamw
  bool decay_bn_and_bias = false;  // weight decay on BN parameters and biases too (param_refs)
  std::string schedule = "cosine"; // constant | step | multistep | cosine (nn/lr_schedule.h)
  int64_t step_epochs = 30;        // step: epochs between decays
  float gamma = 0.1f;              // step, multistep: the decay factor
  std::string milestones;          // multistep: the epochs at which to decay, "30,60"
  int64_t warmup_epochs = 0;       // linear warm-up
  float label_smoothing = 0.0f;    // cross-entropy label smoothing in [0, 1)
  float clip_grad_norm = 0.0f;     // > 0: scale gradients down to this global L2 norm before each step
  // With a teacher (TrainJob::teacher): each batch's loss is (1 - w) * cross-entropy + w * distillation
  // loss at temperature T (distill.h).
  float distill_weight = 1.0f;       // w in (0, 1]
  float distill_temperature = 1.0f;  // T > 0
  uint64_t seed = 1;               // shuffling, augmentation, dropout
  // Each global batch is cut into this many chunks whose gradients are summed in chunk order
  // (chunked_step.h), so that N processes give the weights of 1. 0 (or 1): whole batches, one process.
  int64_t grad_chunks = 0;
  int64_t stop_after = 0;          // > 0: stop after this many epochs of this call (resume later)
  // Weight averaging (SWA, swa.h), 0 = off: the schedule runs over the first swa_start epochs; the
  // epochs after them train at the constant rate swa_lr, and the weights at the end of each are averaged.
  // Each of them also evaluates the average (its batch-norm statistics recomputed over a pass of the
  // training images: the "swa_test_*" columns), and the last epoch's checkpoint holds it as the model.
  int64_t swa_start = 0;           // in 1..epochs - 1 when on
  float swa_lr = 0.0f;             // > 0 when on
};

// Throws std::invalid_argument unless the run saved in `ckpt` can go on with the weight averaging of `s`:
// as many epochs averaged as the settings would have by then, and not a run that has ended on the average.
void check_averaging_resumable(const Checkpoint& ckpt, const TrainSettings& s);

// The learning rate for step `iteration` (0-based, over the whole run) of epoch `epoch` with `iters` steps
// an epoch: the schedule's over its epochs (all of them, or the first swa_start), then swa_lr.
float lr_for_step(const LrSchedule& schedule, const TrainSettings& s, int64_t epoch, int64_t iteration, int64_t iters);

// The learning-rate schedule the settings name. std::invalid_argument for a bad one.
LrSchedule make_lr_schedule(const TrainSettings& s);

// The model's parameters for an optimizer; weight decay only on tensors of 2 or more dimensions
// (weights) unless decay_all.
std::vector<ParamRef> param_refs(const Module& model, bool decay_all);

// What a run shows while it trains: the command line's progress bar is one (apps/progress.h). The loop
// calls it on process 0 only; each method does nothing unless overridden.
class TrainMonitor {
 public:
  virtual ~TrainMonitor() = default;
  virtual void start_epoch(int64_t epoch, int64_t epochs, int64_t batches) {}
  // After each batch: running loss and accuracy over the epoch so far, images per second.
  virtual void update(int64_t batch, double loss, double accuracy, double img_per_s) {}
  virtual void end_epoch() {}
  // After the test evaluation of epoch `epoch` (1-based) of `epochs`: its row of metrics.csv.
  virtual void epoch_done(int64_t epoch, int64_t epochs, const MetricsRow& row) {}
};

// Everything the loop needs besides the settings. The loop owns nothing of it.
struct TrainJob {
  ModulePtr model;
  Optimizer* optimizer = nullptr;
  LrSchedule schedule;
  const DataBundle* data = nullptr;  // its training split is trained on, its test split evaluated
  // checkpoint.h5 (after every epoch), metrics.csv (a row per epoch), curve.svg (curve_svg) and
  // summary.json go here; "" writes no file.
  std::string out_dir;
  Checkpoint resume_from;            // when resuming: what was loaded (epoch > 0)
  bool resuming = false;
  std::string config_ini;            // stored in the checkpoint and summary.json
  std::string command_line;          // likewise
  std::string model_label;           // summary.json's "model": the network as the caller named it
  // A fresh checkpoint skeleton (model name, kind, spec) that the loop fills in each epoch.
  std::function<Checkpoint()> checkpoint_base;
  // Called at the start of every epoch (0-based) before any batch: schedules such as freezing BN.
  std::function<void(int64_t epoch)> on_epoch_start;
  // Optional regulariser added to each batch's loss (e.g. PACT's L2 decay of its clipping levels).
  std::function<Tensor()> extra_loss;
  // Optional: a model whose outputs on the same images the loss also pulls toward (settings'
  // distill_weight and distill_temperature). Run in eval mode, without gradients; never changed.
  ModulePtr teacher;
  // Optional, with a teacher: its outputs computed ahead (teacher_cache.h), read for every batch row it
  // covers instead of running the teacher. The first batch of the run is computed both ways, and a
  // difference is an error (std::runtime_error naming the row): the cache must give the teacher's own
  // outputs bit for bit.
  std::shared_ptr<const TeacherCache> teacher_cache;
  TrainMonitor* monitor = nullptr;   // optional: the progress of each epoch
  std::FILE* log = nullptr;          // optional: a line per epoch (loss, accuracy, speed)
  // Every op checks its output and the gradients it passes back for NaN and infinity (core/anomaly.h),
  // the modules named: the first throws AnomalyError naming op, module and batch. Slower; no value changes.
  bool detect_anomaly = false;
};

struct TrainOutcome {
  std::vector<MetricsRow> history;
  int64_t epochs_done = 0;
  bool stopped_early = false;  // stop_after ended the run before the last epoch
};

// The training curve: train and test accuracy (%) per epoch of `history` as an SVG line chart (the
// curve.svg a run writes beside metrics.csv, and `qatlab info CKPT --curve FILE`).
std::string curve_svg(const std::vector<MetricsRow>& history, const std::string& title);

// Runs epochs [start, settings.epochs), start = 0 or the resumed checkpoint's epoch. Process 0 alone
// (under mpirun) evaluates, writes files and reports to the monitor and the log. Throws
// std::runtime_error naming the epoch and batch if the loss becomes NaN or infinite;
// std::invalid_argument when the processes outnumber the chunks of a batch.
TrainOutcome run_training(TrainJob& job, const TrainSettings& settings);

}  // namespace qatlab
