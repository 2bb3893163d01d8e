// train_options.cpp: the train/qat options, their checks and stored form, threads, chunks, the run
// directory.
#include "apps/train_options.h"

#include <omp.h>

#include <cmath>
#include <filesystem>
#include <thread>

#include "core/distributed.h"
#include "nn/lr_schedule.h"
#include "nn/model_description.h"
#include "nn/zoo.h"

namespace qatlab {

namespace fs = std::filesystem;

void add_train_options(po::options_description& desc, TrainOptions& o) {
  static const std::string models_help = [] {
    std::string h = "a built-in model (";
    for (const std::string& m : model_names()) h += (h.back() == '(' ? "" : ", ") + m;
    return h + ") or a model description file (nn/models/README.md)";
  }();
  TrainSettings& s = o.train;
  desc.add_options()
      ("model", po::value(&o.model)->default_value(o.model), models_help.c_str())
      ("epochs", po::value(&s.epochs)->default_value(s.epochs), "epochs in total")
      ("batch-size", po::value(&s.batch_size)->default_value(s.batch_size), "images per batch")
      ("optimizer", po::value(&s.optimizer)->default_value(s.optimizer), "sgd | adam | adamw")
      ("lr", po::value(&s.lr)->default_value(s.lr), "base learning rate")
      ("momentum", po::value(&s.momentum)->default_value(s.momentum), "SGD momentum")
      ("nesterov", po::bool_switch(&s.nesterov), "Nesterov momentum (SGD)")
      ("weight-decay", po::value(&s.weight_decay)->default_value(s.weight_decay), "weight decay (L2 for sgd/adam, decoupled for adamw)")
      ("decay-all", po::bool_switch(&s.decay_bn_and_bias), "apply weight decay to biases and BN parameters too")
      ("schedule", po::value(&s.schedule)->default_value(s.schedule), "constant | step | multistep | cosine")
      ("step-epochs", po::value(&s.step_epochs)->default_value(s.step_epochs), "step schedule: epochs between decays")
      ("gamma", po::value(&s.gamma)->default_value(s.gamma), "step/multistep: decay factor")
      ("milestones", po::value(&s.milestones), "multistep: epochs at which to decay, e.g. 30,60")
      ("warmup-epochs", po::value(&s.warmup_epochs)->default_value(s.warmup_epochs), "linear warm-up epochs")
      ("label-smoothing", po::value(&s.label_smoothing)->default_value(s.label_smoothing), "cross-entropy label smoothing in [0, 1)")
      ("clip-grad-norm", po::value(&s.clip_grad_norm)->default_value(s.clip_grad_norm), "clip the global gradient L2 norm to this (0 = off)")
      ("swa-start", po::value(&s.swa_start)->default_value(s.swa_start),
       "weight averaging (SWA): the schedule ends after this many epochs, the rest train at --swa-lr and the "
       "weights at the end of each are averaged into the model, its batch-norm statistics recomputed (0 = off)")
      ("swa-lr", po::value(&s.swa_lr)->default_value(s.swa_lr), "--swa-start: the constant learning rate after it")
      ("distill", po::value(&o.distill)->composing(),
       "knowledge distillation from this float checkpoint of the same task (the teacher; qat: e.g. the --from model): "
       "the loss becomes (1 - w) cross-entropy + w T^2 KL(teacher || student) on outputs softened by T; "
       "repeat it to distil from several, their logits averaged (an ensemble)")
      ("teacher-cache", po::value(&o.teacher_cache),
       "--distill: the teachers' outputs for every crop and flip of every training image, computed ahead by "
       "`qatlab teacher-cache`: read instead of running the teachers (the same values; the first batch is checked)")
      ("distill-weight", po::value(&s.distill_weight)->default_value(s.distill_weight), "--distill: w in (0, 1] (1: the teacher's outputs alone)")
      ("distill-temperature", po::value(&s.distill_temperature)->default_value(s.distill_temperature), "--distill: T > 0")
      ("seed", po::value(&s.seed)->default_value(s.seed), "random seed (initialisation, shuffling, dropout)")
      ("threads", po::value(&o.threads)->default_value(o.threads), "worker threads (0 = all cores; under mpirun, the cores shared among the machine's processes)")
      ("grad-chunks", po::value(&s.grad_chunks)->default_value(s.grad_chunks), "cut each batch into this many chunks whose gradients add in a fixed order: N processes give the weights of 1 (0 = 1, or 8 under mpirun)")
      ("out", po::value(&o.out), "output directory (default: runs/<model>-<dataset>, numbered if taken)")
      ("overwrite", po::bool_switch(&o.overwrite), "allow --out to name a directory that already holds a run")
      ("resume", po::value(&o.resume), "continue the run saved in this checkpoint")
      ("stop-after", po::value(&s.stop_after)->default_value(0), "stop after this many epochs of this invocation (0 = run to the end)")
      ("progress", po::value(&o.progress)->default_value(o.progress), "auto | bar | plain | none")
      ("detect-anomaly", po::bool_switch(&o.detect_anomaly),
       "every op checks its output and the gradients it passes back for NaN and infinity, and the first stops the "
       "run naming the op, its layer and the batch (slower; for finding where a diverging run goes wrong)");
}

std::string train_options_ini(const TrainOptions& o) {
  const TrainSettings& s = o.train;
  SettingsIni ini;
  ini.add("model", o.model);
  ini.add("epochs", s.epochs);
  ini.add("batch-size", s.batch_size);
  ini.add("optimizer", s.optimizer);
  ini.add("lr", s.lr);
  ini.add("momentum", s.momentum);
  ini.add("nesterov", s.nesterov);
  ini.add("weight-decay", s.weight_decay);
  ini.add("decay-all", s.decay_bn_and_bias);
  ini.add("schedule", s.schedule);
  ini.add("step-epochs", s.step_epochs);
  ini.add("gamma", s.gamma);
  ini.add_if_given("milestones", s.milestones);
  ini.add("warmup-epochs", s.warmup_epochs);
  ini.add("label-smoothing", s.label_smoothing);
  ini.add("clip-grad-norm", s.clip_grad_norm);
  ini.add("swa-start", s.swa_start);
  ini.add("swa-lr", s.swa_lr);
  ini.add_each("distill", o.distill);
  ini.add("distill-weight", s.distill_weight);
  ini.add("distill-temperature", s.distill_temperature);
  ini.add_if_given("teacher-cache", o.teacher_cache);
  ini.add("seed", s.seed);
  ini.add("threads", o.threads);
  ini.add("grad-chunks", s.grad_chunks);
  ini.add_if_given("out", o.out);
  ini.add("overwrite", o.overwrite);
  ini.add_if_given("resume", o.resume);
  ini.add("stop-after", s.stop_after);
  ini.add("progress", o.progress);
  ini.add("detect-anomaly", o.detect_anomaly);
  return ini.text();
}

void validate_train_options(const TrainOptions& o, bool check_model) {
  const TrainSettings& s = o.train;
  // A resumed run, or one from a checkpoint, takes its network from there (the file may be gone).
  if (check_model) {
    try {
      resolve_model(o.model);
    } catch (const ModelDescriptionError&) {
      throw;  // the file's own line: FILE:LINE: what is wrong
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  // No epoch would train nothing and write no checkpoint: a mistake, not a run.
  require(s.epochs >= 1 && s.epochs <= kMaxEpochs,
          "--epochs must be in 1.." + std::to_string(kMaxEpochs) + ", got " + std::to_string(s.epochs));
  require_batch_size("batch-size", s.batch_size);
  require(s.lr > 0 && std::isfinite(s.lr), "--lr must be > 0, got " + num_str(s.lr));
  require(s.momentum >= 0 && s.momentum < 1, "--momentum must be in [0, 1), got " + num_str(s.momentum));
  require(s.weight_decay >= 0 && std::isfinite(s.weight_decay),
          "--weight-decay must be >= 0, got " + num_str(s.weight_decay));
  require_seed("seed", s.seed);
  require(s.label_smoothing >= 0 && s.label_smoothing < 1,
          "--label-smoothing must be in [0, 1), got " + num_str(s.label_smoothing));
  require(s.clip_grad_norm >= 0 && std::isfinite(s.clip_grad_norm),
          "--clip-grad-norm must be >= 0, got " + num_str(s.clip_grad_norm));
  require(s.distill_weight > 0 && s.distill_weight <= 1,
          "--distill-weight must be in (0, 1], got " + num_str(s.distill_weight));
  require(s.distill_temperature > 0 && std::isfinite(s.distill_temperature),
          "--distill-temperature must be > 0, got " + num_str(s.distill_temperature));
  require(!o.distill.empty() || (s.distill_weight == 1.0f && s.distill_temperature == 1.0f),
          "--distill-weight and --distill-temperature need --distill (the teacher checkpoint)");
  require(!o.distill.empty() || o.teacher_cache.empty(), "--teacher-cache needs --distill (the teachers it was made from)");
  require_threads("threads", o.threads);
  require(s.grad_chunks >= 0 && s.grad_chunks <= s.batch_size,
          "--grad-chunks must be in 0..batch size (" + std::to_string(s.batch_size) + "), got " + std::to_string(s.grad_chunks));
  require(s.stop_after >= 0, "--stop-after must be >= 0, got " + std::to_string(s.stop_after));
  require(s.warmup_epochs >= 0 && s.warmup_epochs <= std::max<int64_t>(s.epochs, 0),
          "--warmup-epochs must be in [0, epochs], got " + std::to_string(s.warmup_epochs));
  require(s.schedule != "cosine" || s.warmup_epochs < s.epochs,
          "--warmup-epochs (" + std::to_string(s.warmup_epochs) + ") must be below --epochs (" + std::to_string(s.epochs) +
              ") with the cosine schedule: it anneals over the epochs after the warm-up");
  require(s.swa_start >= 0 && s.swa_start < s.epochs,
          "--swa-start must be in 0..epochs - 1 (" + std::to_string(s.epochs - 1) + "), got " + std::to_string(s.swa_start));
  require(s.swa_start == 0 || (s.swa_lr > 0 && std::isfinite(s.swa_lr)),
          "--swa-start needs --swa-lr > 0 (the learning rate of the averaged epochs), got " + num_str(s.swa_lr));
  require(s.swa_start > 0 || s.swa_lr == 0, "--swa-lr needs --swa-start (the epoch after which weights are averaged)");
  require(s.swa_start == 0 || s.warmup_epochs < s.swa_start,
          "--warmup-epochs (" + std::to_string(s.warmup_epochs) + ") must end before --swa-start (" +
              std::to_string(s.swa_start) + ")");
  require(s.optimizer == "sgd" || s.optimizer == "adam" || s.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + s.optimizer + "'");
  require(o.progress == "auto" || o.progress == "bar" || o.progress == "plain" || o.progress == "none",
          "--progress must be auto, bar, plain or none, got '" + o.progress + "'");
  // The schedule is built here too (the run builds it again) so that its mistakes are usage errors.
  try {
    make_lr_schedule(s);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string(e.what()) + " (from --schedule, --lr, --gamma, --step-epochs, --milestones, --warmup-epochs)");
  }
}

int apply_threads(int threads) {
  require_threads("threads", threads);
  int n = threads;
  if (n == 0) {
    // omp_get_num_procs() counts the cores this process may run on: fewer than the machine's when the
    // launcher bound it to some; otherwise the machine's processes share them.
    const int procs = omp_get_num_procs();
    const bool bound = procs < static_cast<int>(std::thread::hardware_concurrency());
    n = bound ? procs : std::max(1, procs / local_size());
  }
  omp_set_num_threads(n);
  return n;
}

int64_t resolve_grad_chunks(int64_t grad_chunks, int64_t batch_size) {
  const int64_t chunks = grad_chunks > 0 ? grad_chunks : (world_size() > 1 ? std::min(kDefaultChunks, batch_size) : 1);
  require(chunks >= world_size(),
          "--grad-chunks " + std::to_string(chunks) + " is fewer than the " + std::to_string(world_size()) +
              " processes: every process needs a chunk of each batch (the chunk count is fixed for a run: it decides "
              "the weights)");
  return chunks;
}

std::string choose_out_dir(const std::string& out, bool overwrite, const std::string& stem) {
  const auto holds_run = [](const fs::path& p) { return fs::exists(p / "checkpoint.h5") || fs::exists(p / "metrics.csv"); };
  if (!out.empty()) {
    std::error_code ec;
    if (fs::exists(out, ec) && !fs::is_directory(out, ec))
      throw UsageError("--out " + out + " is a file, not a directory: choose another --out");
    if (holds_run(out) && !overwrite)
      throw UsageError("--out " + out + " already holds a run: pass --resume " + out +
                       "/checkpoint.h5 to continue it, --overwrite to replace it, or another --out");
    return out;
  }
  fs::path candidate = fs::path("runs") / stem;
  for (int i = 2; fs::exists(candidate) && !fs::is_empty(candidate); ++i)
    candidate = fs::path("runs") / (stem + "-" + std::to_string(i));
  return candidate.string();
}

}  // namespace qatlab
