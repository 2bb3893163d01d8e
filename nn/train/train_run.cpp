// train_run.cpp: a run's optimizer, schedule and resumed state, the loop, and the run's report.
#include "nn/train/train_run.h"

#include <omp.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>

#include "core/distributed.h"
#include "core/format.h"

namespace qatlab {

namespace fs = std::filesystem;

void check_resumable(const Checkpoint& ckpt, const ModelDescription& description, const TrainSettings& settings) {
  if (ckpt.model_name != description.name)
    throw std::invalid_argument(ckpt.source + " holds a " + ckpt.model_name + " model, not " + description.name);
  if (!ckpt.model_description.empty() && ckpt.model_description != description.text)
    throw std::invalid_argument(ckpt.source + " holds another network than " + description.source + " describes");
  if (ckpt.optimizer_kind != settings.optimizer)
    throw std::invalid_argument(ckpt.source + " was trained with " + ckpt.optimizer_kind + ", not " + settings.optimizer);
  check_averaging_resumable(ckpt, settings);
}

namespace {

// What is trained on what, where its files go, and how (printed before the first epoch).
void report_start(std::FILE* log, const TrainRun& run, const TrainJob& job) {
  const TrainSettings& s = run.settings;
  const DataBundle& data = *run.data;
  // A dataset from files takes its statistics unless told otherwise: say what they are.
  if (data.norm_origin != "the model's" && !data.source.empty() && data.source.find(':') != std::string::npos)
    std::fprintf(log, "normalisation (%s): mean %s, std %s\n", data.norm_origin.c_str(), floats_text(data.mean).c_str(),
                 floats_text(data.std).c_str());
  std::fprintf(log, "%s %s on %s: %lld train / %lld test images, %lld epochs, batch %lld, %s lr %g (%s), %d threads -> %s\n",
               run.name.c_str(), run.description.name.c_str(), data.source.c_str(), static_cast<long long>(data.train.n),
               static_cast<long long>(data.test.n), static_cast<long long>(s.epochs), static_cast<long long>(s.batch_size),
               s.optimizer.c_str(), s.lr, s.schedule.c_str(), omp_get_max_threads(),
               job.out_dir.empty() ? "no files" : job.out_dir.c_str());
  if (world_size() > 1 || s.grad_chunks > 1)
    std::fprintf(log, "%d processes x %d threads, each batch in %lld chunks (gradients summed in chunk order)\n",
                 world_size(), omp_get_max_threads(), static_cast<long long>(s.grad_chunks));
  if (s.swa_start > 0)
    std::fprintf(log, "weight averaging (SWA): epochs %lld-%lld at lr %g, their weights averaged into the model\n",
                 static_cast<long long>(s.swa_start + 1), static_cast<long long>(s.epochs), s.swa_lr);
  if (job.resuming)
    std::fprintf(log, "resuming after epoch %lld from %s\n", static_cast<long long>(job.resume_from.epoch),
                 job.resume_from.source.c_str());
}

// The results table, after the last epoch of this call.
void report_results(std::FILE* log, const TrainJob& job, const TrainSettings& s, const TrainOutcome& outcome,
                    double seconds) {
  const MetricsRow last = outcome.history.empty() ? MetricsRow{} : outcome.history.back();
  const auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  std::fprintf(log, "\nresults %s\n", outcome.stopped_early ? "(stopped early: continue with --resume)" : "");
  std::fprintf(log, "  %-14s %s (%lld parameters)\n", "model", job.model_label.c_str(),
               static_cast<long long>(job.model->parameter_count()));
  std::fprintf(log, "  %-14s %s (%lld train / %lld test images)\n", "dataset", job.data->test.name.c_str(),
               static_cast<long long>(job.data->train.n), static_cast<long long>(job.data->test.n));
  std::fprintf(log, "  %-14s %lld of %lld (this run: %s)\n", "epochs", static_cast<long long>(outcome.history.size()),
               static_cast<long long>(s.epochs), format_duration(seconds).c_str());
  // A finished run with weight averaging leaves the average: its figures.
  const bool averaged = !outcome.stopped_early && static_cast<int64_t>(outcome.history.size()) == s.epochs &&
                        last.count("swa_test_acc") > 0;
  std::fprintf(log, "  %-14s %.2f %%%s\n", "test accuracy", 100.0 * get(averaged ? "swa_test_acc" : "test_acc"),
               averaged ? (" (weights averaged over epochs " + std::to_string(s.swa_start + 1) + "-" +
                           std::to_string(s.epochs) + ")").c_str()
                        : "");
  std::fprintf(log, "  %-14s %.4f\n", "test loss", get(averaged ? "swa_test_loss" : "test_loss"));
  std::fprintf(log, "  %-14s %.0f img/s (batch %lld, %d threads, last epoch)\n", "throughput", get("train_img_per_s"),
               static_cast<long long>(s.batch_size), omp_get_max_threads());
  if (job.out_dir.empty()) return;
  std::fprintf(log, "  %-14s %s\n", "checkpoint", (fs::path(job.out_dir) / "checkpoint.h5").c_str());
  std::fprintf(log, "  %-14s %s, %s\n", "metrics", (fs::path(job.out_dir) / "metrics.csv").c_str(),
               (fs::path(job.out_dir) / "summary.json").c_str());
}

}  // namespace

TrainOutcome train_model(const TrainRun& run) {
  if (!run.model || !run.data) throw std::invalid_argument("train_model: the run needs a model and data");
  if (run.data->train.n == 0) throw std::invalid_argument("the training split of " + run.data->source + " is empty");
  const TrainSettings& s = run.settings;
  if (run.teacher && !(s.distill_weight > 0.0f && s.distill_weight <= 1.0f))
    throw std::invalid_argument("distillation weight " + num_str(s.distill_weight) + ", expected a value in (0, 1]");
  const std::vector<ParamRef> params = param_refs(*run.model, s.decay_bn_and_bias);
  OptimizerConfig oc;
  oc.lr = s.lr;
  oc.momentum = s.momentum;
  oc.nesterov = s.nesterov;
  oc.weight_decay = s.weight_decay;
  std::unique_ptr<Optimizer> optimizer = make_optimizer(s.optimizer, params, oc);

  TrainJob job;
  job.model = run.model;
  job.optimizer = optimizer.get();
  job.schedule = make_lr_schedule(s);
  job.data = run.data;
  job.out_dir = run.out_dir;
  job.config_ini = run.config_ini;
  job.command_line = run.command_line;
  job.model_label = run.model_label.empty() ? run.description.name : run.model_label;
  job.on_epoch_start = run.on_epoch_start;
  job.extra_loss = run.extra_loss;
  job.teacher = run.teacher;
  job.teacher_cache = run.teacher_cache;
  job.monitor = run.monitor;
  job.detect_anomaly = run.detect_anomaly;
  // Process 0 speaks for the run (under mpirun the others would repeat it).
  std::FILE* log = world_rank() == 0 ? run.log : nullptr;
  job.log = log;
  if (run.resume_from) {
    const Checkpoint& resumed = *run.resume_from;
    check_resumable(resumed, run.description, s);
    run.model->load_state_dict(std::map<std::string, Tensor>(resumed.model_state.begin(), resumed.model_state.end()));
    optimizer->load_state(resumed.optimizer_state);
    job.resume_from = resumed;
    job.resuming = true;
  }
  const ModelSpec spec = run.data->spec;
  const std::string kind = run.kind, model_name = run.description.name, model_text = run.description.text,
                    qconfig = run.qconfig_data;
  job.checkpoint_base = [spec, model_name, model_text, qconfig, kind] {
    Checkpoint c;
    c.model_name = model_name;
    c.model_description = model_text;
    c.qconfig = qconfig;
    c.model_kind = kind;
    c.spec = spec;
    return c;
  };
  if (log) report_start(log, run, job);
  const auto t0 = std::chrono::steady_clock::now();
  const TrainOutcome outcome = run_training(job, s);
  if (log) {
    report_results(log, job, s, outcome, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    std::fflush(log);
  }
  return outcome;
}

}  // namespace qatlab
