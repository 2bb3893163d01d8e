// sweep_cell.h: one cell of the accuracy-vs-bitwidth study (sweep.h): a float model quantized by one
// method at one granularity, W/A pair and seed (post-training quantization, or quantization-aware
// training), converted to the integer graph, and both evaluated on the test split. `qatlab sweep` runs
// its grid of cells with this; a program of its own can run any cell it likes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nn/model_description.h"
#include "nn/train/data_bundle.h"
#include "nn/train/train_loop.h"
#include "quant/qat/qconfig.h"
#include "quant/workflow/sweep.h"

namespace qatlab {

struct SweepCellSettings {
  SweepCell cell;                       // method, granularity, bits, seed
  std::string float_checkpoint;         // the float model the cell quantizes
  // QAT methods, optional: a QAT checkpoint of the same network (another cell's, e.g. the 4-bit one) whose
  // latent weights and batch-norm statistics the cell starts from instead of the float model's: progressive
  // quantization (float_model_under_qat_checkpoint). Its quantizers start afresh at the cell's settings;
  // distillation still learns from the float model (or `teachers`).
  std::string start_checkpoint;
  // Per-layer bits kept whatever the cell's pair ("NAME=W:A", QConfig::from_options): the sweep's
  // first-and-last-layer policy. Empty: every layer at the cell's W/A.
  std::vector<std::string> layer_bits;
  int64_t qat_epochs = 2;               // QAT methods: epochs of training (cosine schedule)
  float qat_lr = 0.01f;                 // and their base learning rate
  float qat_weight_decay = 5e-4f;       // and their weight decay (L2 on conv and linear weights)
  int64_t qat_warmup_epochs = 0;        // and their linear warm-up before the cosine
  int64_t freeze_bn_after = -1;         // and the epoch from which batch norm keeps its running statistics (-1: never)
  int64_t swa_start = 0;                // and, > 0, weight averaging: the epochs after this many at swa_lr, averaged
  float swa_lr = 0.0f;                  //   (nn/train/swa.h)
  std::optional<LsqInit> lsq_init;      // lsq cells: where the steps start (nothing: the paper's formula)
  std::optional<LsqGradScale> lsq_grad_scale;  // lsq cells: N of the steps' gradient scale (nothing: channel)
  std::optional<float> lsq_step_bounds;  // lsq cells: k of the weight steps' bounds (QConfig::set_lsq_step_bounds)
  WeightRange weight_range = WeightRange::Narrow;  // every method: the weights' codes below 8 bits
  std::string augment;                  // QAT methods: their training augmentation, as the schedule names it
                                        // ("": not named; the data run_sweep_cell is given carries it)
  // QAT methods, > 0: distil from the float model (nn/train/distill.h) with this weight, at this temperature,
  // or from `teachers` when given (float checkpoints; several: their ensemble, nn/train/teacher.h).
  float distill_weight = 0.0f;
  float distill_temperature = 1.0f;
  std::vector<std::string> teachers;
  // Distilled cells, optional: the teachers' outputs computed ahead (nn/train/teacher_cache.h), read instead
  // of running them. The same values, so not part of the key.
  std::string teacher_cache;
  // QAT methods: every op checks its values for NaN and infinity (nn/train/train_loop.h TrainJob). Changes
  // no value, so not part of the key.
  bool detect_anomaly = false;
  int64_t batch_size = 64;              // QAT and calibration batches
  int64_t calib_batches = 32;           // PTQ methods: calibration batches
  // The cell's directory, emptied first (but see run_sweep_cell on resuming); it receives start.ini (the
  // key the cell started with), checkpoint.h5 (the QAT model), model.int8.h5, log.txt (what the
  // quantization reported) and result.ini (the CellResult).
  std::string dir;
  std::string key;                      // every setting the result depends on (CellResult::key)
  // QAT cells with weight averaging (swa_start > 0), optional: the key of this cell trained for swa_start
  // epochs without averaging. A finished cell of that key in `dir` (result.ini and checkpoint.h5) is this
  // cell's first swa_start epochs (the schedule spans them in both), so the cell goes on from its
  // checkpoint instead of training them again, and ends on the model the whole run would.
  std::string extends_key;
  std::string config_ini;               // stored as the checkpoint's settings (the command stores its options)
  std::string command_line;             // stored as the checkpoint's command (QAT methods)
  // QAT methods, > 0: train at most this many epochs in this call and return the cell unfinished (no
  // result.ini), to be resumed by a later call; 0: to the end.
  int64_t stop_after = 0;
  TrainMonitor* monitor = nullptr;      // QAT methods: shown the training's progress (optional)
};

// The quantizers of a method:
//   method         activation observer  weight / activation method
//   ptq-minmax     minmax               observer / observer   (run_ptq, ptq.h)
//   ptq-histogram  histogram            observer / observer   (run_ptq)
//   qat-minmax     ema                  observer / observer   (train_qat, qat_training.h)
//   lsq            ema                  lsq / lsq             (train_qat)
//   pact           ema                  observer / pact       (train_qat; PACT after a ReLU)
// Weights always take the min/max observer.
struct SweepQuantizers {
  ObserverKind weight_observer = ObserverKind::MinMax, activation_observer = ObserverKind::MinMax;
  QuantizerMethod weight_method = QuantizerMethod::Observer, activation_method = QuantizerMethod::Observer;
};
SweepQuantizers sweep_quantizers(SweepMethod method);

// The cell's QConfig: its bits, per channel or per tensor weights as its granularity says, its layer
// bits and its method's quantizers (an lsq cell's with lsq_init).
QConfig sweep_cell_qconfig(const SweepCellSettings& s);
// A QAT cell's training: qat_epochs, qat_lr, qat_weight_decay, qat_warmup_epochs, batch_size and the cell's seed, whole
// batches, the rest as TrainSettings' defaults (SGD with momentum 0.9, cosine schedule).
TrainSettings sweep_cell_train_settings(const SweepCellSettings& s);
// How a cell gets its model, for the tables (CellResult::schedule): "32 calibration batches of 128" for
// PTQ, "15 epochs, lr 0.01 cosine, batch 128, weight decay 0.0005" for QAT (", 1 warm-up epoch" after the
// weight decay when it has one); ", started from <cell>" when a QAT cell starts from start_checkpoint
// (<cell>: the name of that checkpoint's directory); ", full-range weights" (", mid-rise weights") after
// either when the weights use WeightRange::Full (MidRise).
std::string sweep_cell_schedule(const SweepCellSettings& s);

// Runs the cell: quantizes the float model (its QAT checkpoint into the directory), reloads that
// checkpoint, evaluates the simulation on the test split, converts it to the integer graph (saved with
// its pixel table), runs the graph over the test split against the simulation, and writes result.ini.
// A QAT cell whose training was interrupted (no result.ini, a checkpoint.h5 of its last epoch, and a
// start.ini with this very key) goes on from that checkpoint, to the result an uninterrupted run gives;
// anything else in the directory is cleared first. A call that stop_after ended returns ok false, its
// error saying so, and writes no result.ini.
// `data` gives the dataset: its training split calibrates or trains, its test split evaluates, normalised
// as the float model records. It is called inside the cell, so that a dataset that cannot be loaded
// fails the cell like any other error. A failed cell (a diverged training, a bad file) is a result with
// ok false and its one-line error; only the directory's own files failing to be written throw.
CellResult run_sweep_cell(const SweepCellSettings& s, const std::function<DataBundle()>& data);

// Where a cell stands in its directory: what a run of it (run_sweep_cell, after the sweep's reuse of a
// finished cell of the same key) would do there. Reads files only.
struct SweepCellState {
  enum class Kind {
    Finished,     // result.ini with this key (ok or failed): reused as it is
    Interrupted,  // a QAT training of this key stopped at `epoch`: goes on from its checkpoint
    Extendable,   // the finished cell of extends_key (at `epoch` = swa_start): goes on with averaging
    Replaced,     // files of other settings (or a checkpoint that does not load): cleared, then run
    New,          // nothing there yet: run
  };
  Kind kind = Kind::New;
  std::optional<CellResult> result;  // Finished: the result
  int64_t epoch = 0;                 // Interrupted, Extendable: the checkpoint's epoch
  double last_epoch_seconds = 0.0;   // Interrupted: its history's last epoch_seconds (0: not recorded)
};
SweepCellState sweep_cell_state(const SweepCellSettings& s);

// The names of the first and the last weight layer (conv, linear or LSTM) of `model` built for `spec`,
// in execution order: the layers the sweep's first-last policy keeps at 8 bits. std::invalid_argument for
// a model without one.
std::pair<std::string, std::string> first_and_last_layers(const ModelDescription& model, const ModelSpec& spec);

}  // namespace qatlab
