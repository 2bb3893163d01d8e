// train_loop.cpp: the epoch loop and the files a run writes (checkpoint, CSV, JSON).
#include "nn/train/train_loop.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>

#include "core/anomaly.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/format.h"
#include "core/ops.h"
#include "core/profiler.h"
#include "core/svg_plot.h"
#include "nn/activation.h"
#include "nn/grad_utils.h"
#include "nn/train/chunked_step.h"
#include "nn/train/distill.h"
#include "nn/train/evaluate.h"
#include "nn/train/metrics_csv.h"
#include "nn/train/swa.h"
#include "nn/train/teacher.h"

namespace qatlab {

namespace fs = std::filesystem;

LrSchedule make_lr_schedule(const TrainSettings& s) {
  LrSchedule schedule = parse_schedule(s.schedule, s.lr, s.milestones);
  schedule.step_epochs = s.step_epochs;
  schedule.gamma = s.gamma;
  schedule.warmup_epochs = s.warmup_epochs;
  validate_schedule(schedule);
  return schedule;
}

void check_averaging_resumable(const Checkpoint& ckpt, const TrainSettings& s) {
  const int64_t averaged = s.swa_start > 0 ? std::max<int64_t>(0, ckpt.epoch - s.swa_start) : 0;
  if (ckpt.swa_count != averaged)
    throw std::invalid_argument(ckpt.source + " has averaged the weights of " + std::to_string(ckpt.swa_count) +
                                " epochs; these settings would have averaged " + std::to_string(averaged) + " by epoch " +
                                std::to_string(ckpt.epoch) + " (weight averaging cannot change once it has begun)");
  if (ckpt.model_is_average && ckpt.epoch < s.epochs)
    throw std::invalid_argument(ckpt.source + " ended its run with its weights averaged (SWA): it cannot train on");
}

float lr_for_step(const LrSchedule& schedule, const TrainSettings& s, int64_t epoch, int64_t iteration, int64_t iters) {
  if (s.swa_start > 0) return epoch >= s.swa_start ? s.swa_lr : lr_at(schedule, iteration, iters, s.swa_start);
  return lr_at(schedule, iteration, iters, s.epochs);
}

std::vector<ParamRef> param_refs(const Module& model, bool decay_all) {
  std::vector<ParamRef> refs;
  for (auto& [name, t] : model.named_parameters()) {
    // Biases and BN scales/shifts are 1-d; decaying them rarely helps and often hurts.
    const bool decay = decay_all || t.dim() > 1;
    refs.push_back({name, t, decay});
  }
  return refs;
}

std::string curve_svg(const std::vector<MetricsRow>& history, const std::string& title) {
  LineChart chart;
  chart.title = title;
  chart.x_label = "epoch";
  chart.y_label = "accuracy (%)";
  for (const auto& [column, label] : {std::pair{"train_acc", "train (running mean over the epoch)"},
                                      {"test_acc", "test"},
                                      {"swa_test_acc", "test, weights averaged (SWA)"}}) {
    PlotSeries line;
    line.label = label;
    for (const MetricsRow& row : history) {
      const auto e = row.find("epoch"), a = row.find(column);
      if (e == row.end() || a == row.end() || !std::isfinite(a->second)) continue;
      line.x.push_back(e->second);
      line.y.push_back(100 * a->second);
    }
    if (!line.x.empty()) chart.series.push_back(std::move(line));
  }
  return render_line_chart(chart);
}

namespace {

std::string summary_json(const TrainJob& job, const TrainSettings& s, const std::vector<MetricsRow>& history,
                         bool finished) {
  std::ostringstream os;
  os.precision(8);
  const MetricsRow last = history.empty() ? MetricsRow{} : history.back();
  auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  // The figures of the model the run leaves: at the end of a run with weight averaging, the average.
  const bool averaged = finished && last.count("swa_test_acc") > 0;
  os << "{\n";
  os << "  \"model\": \"" << json_escape(job.model_label) << "\",\n";
  os << "  \"dataset\": \"" << json_escape(job.data->test.name) << "\",\n";
  os << "  \"epochs_completed\": " << history.size() << ",\n";
  os << "  \"epochs\": " << s.epochs << ",\n";
  os << "  \"finished\": " << (finished ? "true" : "false") << ",\n";
  os << "  \"test_accuracy\": " << get(averaged ? "swa_test_acc" : "test_acc") << ",\n";
  os << "  \"test_loss\": " << get(averaged ? "swa_test_loss" : "test_loss") << ",\n";
  if (s.swa_start > 0) os << "  \"swa_start\": " << s.swa_start << ",\n";
  os << "  \"train_img_per_s\": " << get("train_img_per_s") << ",\n";
  os << "  \"parameters\": " << job.model->parameter_count() << ",\n";
  os << "  \"threads\": " << omp_get_max_threads() << ",\n";
  os << "  \"command\": \"" << json_escape(job.command_line) << "\",\n";
  os << "  \"config\": \"" << json_escape(job.config_ini) << "\"\n";
  os << "}\n";
  return os.str();
}

void reseed_dropouts(const ModulePtr& model, uint64_t seed, int64_t epoch) {
  uint64_t stream = 0;
  for (auto& [name, m] : model->named_modules(model))
    if (Dropout* d = m->as<Dropout>()) d->reseed(seed, (epoch << 16) + stream++);
}

// Rows [begin, end) of a batch's images (N, C, H, W), copied (no history).
Tensor rows_of(const Tensor& images, int64_t begin, int64_t end) {
  Shape shape = images.shape();
  const int64_t per_row = images.numel() / shape[0];
  shape[0] = end - begin;
  Tensor out = Tensor::empty(shape);
  std::copy(images.data() + begin * per_row, images.data() + end * per_row, out.data());
  return out;
}

int64_t correct_rows(const Tensor& logits, const std::vector<int32_t>& labels, int64_t first_label) {
  const int64_t n = logits.size(0), classes = logits.size(1);
  const float* l = logits.data();
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i)
    correct += std::max_element(l + i * classes, l + (i + 1) * classes) - (l + i * classes) == labels[first_label + i];
  return correct;
}

// The run's metrics.csv and curve.svg, from every epoch's row so far.
void write_history_files(const TrainJob& job, const std::string& dataset, const std::vector<MetricsRow>& history) {
  const Checkpoint base = job.checkpoint_base();
  atomic_write_text((fs::path(job.out_dir) / "metrics.csv").string(), metrics_csv(history));
  atomic_write_text((fs::path(job.out_dir) / "curve.svg").string(),
                    curve_svg(history, base.model_name + " (" + base.model_kind + ") on " + dataset));
}

}  // namespace

TrainOutcome run_training(TrainJob& job, const TrainSettings& s) {
  Module& model = *job.model;
  Optimizer& opt = *job.optimizer;
  const DataBundle& data = *job.data;
  DataLoader train_loader(data.train, loader_options(data, s.batch_size, s.seed, true));
  DataLoader test_loader(data.test, loader_options(data, 256, s.seed, false));
  const int64_t iters = train_loader.num_batches();
  // Process 0 alone shows progress and writes files; every process trains.
  const bool writer = world_rank() == 0;
  TrainMonitor* monitor = writer ? job.monitor : nullptr;
  // Chunked steps (chunked_step.h) whenever the batch is cut or shared; else the one-batch step as always.
  const int64_t chunks = std::max<int64_t>(s.grad_chunks, 1);
  if (chunks < world_size())
    throw std::invalid_argument(std::to_string(world_size()) + " processes need at least as many chunks per batch, got " +
                                std::to_string(chunks));
  std::unique_ptr<ChunkedStep> chunked;
  if (chunks > 1 || world_size() > 1) chunked = std::make_unique<ChunkedStep>(chunks, omp_get_max_threads());

  TrainOutcome outcome;
  int64_t start_epoch = 0;
  Rng rng(s.seed);
  if (job.resuming) {
    start_epoch = job.resume_from.epoch;
    outcome.history = job.resume_from.history;
    rng.set_state(job.resume_from.rng_state);
  }
  // Weight averaging: the mean so far (a resumed run's), checked against the settings.
  const bool swa = s.swa_start > 0;
  if (swa && !(s.swa_start < s.epochs && s.swa_lr > 0))
    throw std::invalid_argument("weight averaging needs 0 < swa_start < epochs (" + std::to_string(s.epochs) +
                                ") and swa_lr > 0, got swa_start " + std::to_string(s.swa_start) + ", swa_lr " +
                                num_str(s.swa_lr));
  std::unique_ptr<WeightAverage> average = swa ? std::make_unique<WeightAverage>(model) : nullptr;
  if (job.resuming) {
    check_averaging_resumable(job.resume_from, s);
    if (job.resume_from.swa_count > 0) average->load(job.resume_from.swa_mean, job.resume_from.swa_count);
  }
  // Anomaly detection: every op checks its values; a profiler open on this thread gives each op its
  // module's name for the message, and on a chunked step's worker threads while they run a chunk (one at
  // a time, so they share it).
  std::optional<AnomalyDetection> anomaly;
  Profiler module_names;
  std::optional<ProfilerSession> naming;
  if (job.detect_anomaly) {
    anomaly.emplace();
    for (const auto& [name, m] : job.model->named_modules(job.model))
      if (!name.empty()) module_names.name_module(m.get(), name);
    naming.emplace(module_names);
  }
  const bool write_files = writer && !job.out_dir.empty();
  if (write_files) fs::create_directories(job.out_dir);
  const std::string ckpt_path = (fs::path(job.out_dir) / "checkpoint.h5").string();

  // A batch's loss before any regulariser: cross-entropy, or with a teacher its blend with distillation.
  if (job.teacher) job.teacher->eval();
  // What the student is pulled toward: the teacher's own test accuracy (an ensemble's is not known before).
  if (job.teacher && job.log) {
    const EvalResult t = evaluate(*job.teacher, test_loader);
    const TeacherEnsemble* ensemble = job.teacher->as<TeacherEnsemble>();
    std::fprintf(job.log, "teacher (%s): test accuracy %.2f %%, test loss %.4f\n",
                 ensemble ? (std::to_string(ensemble->members()) + " networks, logits averaged").c_str() : "one network",
                 100.0 * t.accuracy, t.loss);
    std::fflush(job.log);
  }
  bool cache_checked = false;  // the first batch's rows compared with the live teacher's
  const auto teacher_rows = [&](const Tensor& images, std::span<const SampleOrigin> origins) {
    NoGradGuard no_grad;
    std::optional<Tensor> cached = job.teacher_cache ? job.teacher_cache->rows(origins) : std::nullopt;
    if (!cached) return job.teacher->forward(images);
    if (!cache_checked) {
      const Tensor live = job.teacher->forward(images);
      for (int64_t i = 0; i < live.numel(); ++i)
        if (!(live.data()[i] == cached->data()[i]))
          throw std::runtime_error("the teacher cache's outputs differ from the live teacher's on the first batch (row " +
                                   std::to_string(i / live.size(1)) + ": cached " + num_str(cached->data()[i]) +
                                   ", live " + num_str(live.data()[i]) + "): build it again for this teacher and data");
      cache_checked = true;
    }
    return *cached;
  };
  const auto batch_loss = [&](const Tensor& logits, const Tensor& images, std::span<const int32_t> labels,
                              std::span<const SampleOrigin> origins) {
    if (!job.teacher) return cross_entropy(logits, labels, s.label_smoothing);
    const Tensor target = teacher_rows(images, origins);  // (rows, classes)
    const Tensor kd = distillation_loss(logits, target, s.distill_temperature);
    if (s.distill_weight == 1.0f) return kd;  // the teacher's outputs alone: no cross-entropy to compute
    return add(scale(cross_entropy(logits, labels, s.label_smoothing), 1.0f - s.distill_weight),
               scale(kd, s.distill_weight));
  };

  int64_t run_this_invocation = 0;
  for (int64_t epoch = start_epoch; epoch < s.epochs; ++epoch) {
    if (s.stop_after > 0 && run_this_invocation == s.stop_after) {
      outcome.stopped_early = true;
      break;
    }
    if (job.on_epoch_start) job.on_epoch_start(epoch);
    reseed_dropouts(job.model, s.seed, epoch);
    model.train();
    model.set_batch_sync(chunked.get());
    train_loader.start_epoch(epoch);
    if (monitor) monitor->start_epoch(epoch, s.epochs, iters);

    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    const auto t0 = std::chrono::steady_clock::now();
    Batch batch;
    while (train_loader.next(batch)) {
      const float lr = lr_for_step(job.schedule, s, epoch, epoch * iters + batch.index, iters);
      opt.set_lr(lr);
      const std::string at = " at epoch " + std::to_string(epoch + 1) + ", batch " + std::to_string(batch.index + 1);
      const std::string where = at + ": lower --lr (now " + num_str(lr) + ") or check the data" +
                                (job.detect_anomaly ? "" : " (--detect-anomaly names the op that made the first NaN)");
      const int64_t n = batch.images.size(0);
      try {
        if (chunked) {
          // A last batch smaller than the chunk count cannot be cut: it is left out, whatever the process count.
          if (n < chunks) continue;
          const auto work = [&](int64_t k, int64_t begin, int64_t end) {
            std::optional<ProfilerSession> chunk_naming;
            if (job.detect_anomaly) chunk_naming.emplace(module_names);
            Tensor logits, loss;
            try {
              const Tensor images = rows_of(batch.images, begin, end);
              logits = model.forward(images);  // (end - begin, classes)
              loss = batch_loss(logits, images,
                                std::vector<int32_t>(batch.labels.begin() + begin, batch.labels.begin() + end),
                                std::span<const SampleOrigin>(batch.origins).subspan(begin, end - begin));
            } catch (const std::invalid_argument& e) {
              throw std::runtime_error(e.what() + where);
            }
            ChunkTally tally{loss.item(), correct_rows(logits, batch.labels, begin)};
            // The batch's mean loss is the chunks' means weighted by their share of the rows; a regulariser
            // counts once per batch, with chunk 0.
            Tensor total = scale(loss, static_cast<float>(end - begin) / static_cast<float>(n));
            if (k == 0 && job.extra_loss) total = add(total, job.extra_loss());
            opt.zero_grad();
            total.backward();
            return tally;
          };
          const std::vector<ChunkTally> tallies =
              chunked->run(n, static_cast<uint64_t>(epoch * iters + batch.index), opt.params(), work);
          double batch_loss = 0.0;
          for (int64_t k = 0; k < chunks; ++k) {
            const ChunkTally& t = tallies[k];
            if (!std::isfinite(t.loss))
              throw CollectiveError("loss became " + std::string(std::isnan(t.loss) ? "NaN" : "infinite") + " in chunk " +
                                    std::to_string(k) + where);
            const int64_t rows = chunked->chunk_begin(k + 1, n) - chunked->chunk_begin(k, n);
            batch_loss += t.loss * static_cast<double>(rows);
            correct += t.correct;
          }
          loss_sum += batch_loss;
        } else {
          Tensor logits, loss;
          try {
            logits = model.forward(batch.images);  // (N, classes)
            loss = batch_loss(logits, batch.images, batch.labels, batch.origins);
            if (job.extra_loss) loss = add(loss, job.extra_loss());
          } catch (const std::invalid_argument& e) {
            // A quantizer meeting NaN/Inf activations (a diverging run) says what it saw; add where.
            throw std::runtime_error(e.what() + where);
          }
          const float loss_value = loss.item();
          if (!std::isfinite(loss_value))
            throw std::runtime_error("loss became " + std::string(std::isnan(loss_value) ? "NaN" : "infinite") + where);
          opt.zero_grad();
          loss.backward();
          correct += correct_rows(logits, batch.labels, 0);
          loss_sum += static_cast<double>(loss_value) * n;
        }
        if (s.clip_grad_norm > 0) clip_grad_norm(opt.params(), s.clip_grad_norm);
        opt.step();
      } catch (const AnomalyError& e) {
        throw AnomalyError(e.what() + at);
      }

      seen += n;
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (monitor)
        monitor->update(batch.index, loss_sum / seen, static_cast<double>(correct) / seen, seen / std::max(secs, 1e-9));
    }
    model.set_batch_sync(nullptr);
    const double train_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (monitor) monitor->end_epoch();
    ++run_this_invocation;
    outcome.epochs_done = epoch + 1;
    const bool last_epoch = epoch + 1 == s.epochs;
    const EvalResult test = writer ? evaluate(model, test_loader) : EvalResult{};
    // Weight averaging: this epoch's weights join the mean; process 0 evaluates the mean (batch norm
    // recomputed for it), and at the end every process keeps it as the model.
    EvalResult averaged;
    double swa_seconds = 0.0;
    if (swa && epoch >= s.swa_start) {
      average->add(model);
      if (writer || last_epoch) {
        const auto t_swa = std::chrono::steady_clock::now();
        std::map<std::string, Tensor> trained;
        if (!last_epoch)
          for (const auto& [name, t] : model.state_dict()) trained[name] = t.clone();
        average->copy_to(model);
        DataLoader bn_loader(data.train, loader_options(data, s.batch_size, s.seed, true));
        recompute_bn_statistics(model, bn_loader, epoch);
        if (writer) averaged = evaluate(model, test_loader);
        if (!last_epoch) model.load_state_dict(trained);
        swa_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_swa).count();
      }
    }
    // The other processes have nothing to write: they go on to the next epoch (and wait there for 0).
    if (!writer) continue;

    MetricsRow row{{"epoch", static_cast<double>(epoch + 1)},
                   {"lr", opt.lr()},
                   {"train_loss", seen ? loss_sum / seen : 0.0},
                   {"train_acc", seen ? static_cast<double>(correct) / seen : 0.0},
                   {"test_loss", test.loss},
                   {"test_acc", test.accuracy},
                   {"train_img_per_s", seen / std::max(train_secs, 1e-9)},
                   {"epoch_seconds", train_secs + test.seconds + swa_seconds}};
    if (averaged.count > 0) {
      row["swa_test_loss"] = averaged.loss;
      row["swa_test_acc"] = averaged.accuracy;
    }
    outcome.history.push_back(row);
    if (monitor) monitor->epoch_done(epoch + 1, s.epochs, row);

    if (job.log) {
      char swa_text[64] = "";
      if (averaged.count > 0)
        std::snprintf(swa_text, sizeof swa_text, "  averaged over %lld: acc %.2f%%", static_cast<long long>(average->count()),
                      100 * averaged.accuracy);
      std::fprintf(job.log, "epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%%s  %.0f img/s  %s\n",
                   static_cast<long long>(epoch + 1), static_cast<long long>(s.epochs), row["train_loss"],
                   100 * row["train_acc"], test.loss, 100 * test.accuracy, swa_text, row["train_img_per_s"],
                   format_duration(row["epoch_seconds"]).c_str());
      std::fflush(job.log);
    }
    if (!write_files) continue;

    // The checkpoint first: if we die between the two writes, the metrics lag, never the weights.
    Checkpoint ckpt = job.checkpoint_base();
    ckpt.model_state.clear();
    for (auto& [name, t] : model.state_dict()) ckpt.model_state.push_back({name, t});
    ckpt.optimizer_kind = opt.kind();
    ckpt.optimizer_state = opt.state();
    ckpt.epoch = epoch + 1;
    ckpt.dataset = data.source;
    ckpt.data_mean = data.mean;
    ckpt.data_std = data.std;
    ckpt.class_names = data.class_names;
    ckpt.rng_state = rng.state();
    if (average && average->count() > 0) {
      ckpt.swa_mean = average->mean();
      ckpt.swa_count = average->count();
      ckpt.model_is_average = last_epoch;
    }
    ckpt.history = outcome.history;
    ckpt.config_ini = job.config_ini;
    ckpt.metadata["command"] = job.command_line;
    ckpt.metadata["threads"] = std::to_string(omp_get_max_threads());
    if (world_size() > 1) ckpt.metadata["processes"] = std::to_string(world_size());
    save_checkpoint(ckpt_path, ckpt);
    write_history_files(job, data.source, outcome.history);
  }
  const bool finished = outcome.epochs_done == s.epochs || (!outcome.stopped_early && start_epoch >= s.epochs);
  if (write_files) {
    // A finished run resumed from a copy of its checkpoint alone trains nothing: its metrics and curve
    // come from the history the checkpoint carries.
    if (run_this_invocation == 0 && !outcome.history.empty() && !fs::exists(fs::path(job.out_dir) / "metrics.csv"))
      write_history_files(job, data.source, outcome.history);
    atomic_write_text((fs::path(job.out_dir) / "summary.json").string(),
                      summary_json(job, s, outcome.history, finished));
  }
  return outcome;
}

}  // namespace qatlab
