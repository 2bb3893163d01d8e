// train_loop.cpp: the epoch loop and the files a run writes (checkpoint, CSV, JSON).
#include "nn/train/train_loop.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/format.h"
#include "core/ops.h"
#include "core/svg_plot.h"
#include "nn/activation.h"
#include "nn/grad_utils.h"
#include "nn/train/chunked_step.h"
#include "nn/train/distill.h"
#include "nn/train/evaluate.h"
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
  for (const auto& [column, label] : {std::pair{"train_acc", "train (running mean over the epoch)"}, {"test_acc", "test"}}) {
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

std::string metrics_csv(const std::vector<MetricsRow>& history) {
  static const char* kColumns[] = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "train_img_per_s", "epoch_seconds"};
  std::ostringstream os;
  for (size_t i = 0; i < std::size(kColumns); ++i) os << (i ? "," : "") << kColumns[i];
  os << "\n";
  os.precision(6);
  for (const auto& row : history) {
    for (size_t i = 0; i < std::size(kColumns); ++i) {
      auto it = row.find(kColumns[i]);
      os << (i ? "," : "");
      if (it != row.end()) os << it->second;
    }
    os << "\n";
  }
  return os.str();
}

std::string summary_json(const TrainJob& job, const TrainSettings& s, const std::vector<MetricsRow>& history,
                         bool finished) {
  std::ostringstream os;
  os.precision(8);
  const MetricsRow last = history.empty() ? MetricsRow{} : history.back();
  auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  os << "{\n";
  os << "  \"model\": \"" << json_escape(job.model_label) << "\",\n";
  os << "  \"dataset\": \"" << json_escape(job.data->test.name) << "\",\n";
  os << "  \"epochs_completed\": " << history.size() << ",\n";
  os << "  \"epochs\": " << s.epochs << ",\n";
  os << "  \"finished\": " << (finished ? "true" : "false") << ",\n";
  os << "  \"test_accuracy\": " << get("test_acc") << ",\n";
  os << "  \"test_loss\": " << get("test_loss") << ",\n";
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
  const auto batch_loss = [&](const Tensor& logits, const Tensor& images, std::span<const int32_t> labels) {
    if (!job.teacher) return cross_entropy(logits, labels, s.label_smoothing);
    Tensor target;  // (rows, classes)
    {
      NoGradGuard no_grad;
      target = job.teacher->forward(images);
    }
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
      const float lr = lr_at(job.schedule, epoch * iters + batch.index, iters, s.epochs);
      opt.set_lr(lr);
      const std::string where = " at epoch " + std::to_string(epoch + 1) + ", batch " + std::to_string(batch.index + 1) +
                                ": lower --lr (now " + num_str(lr) + ") or check the data";
      const int64_t n = batch.images.size(0);
      if (chunked) {
        // A last batch smaller than the chunk count cannot be cut: it is left out, whatever the process count.
        if (n < chunks) continue;
        const auto work = [&](int64_t k, int64_t begin, int64_t end) {
          Tensor logits, loss;
          try {
            const Tensor images = rows_of(batch.images, begin, end);
            logits = model.forward(images);  // (end - begin, classes)
            loss = batch_loss(logits, images,
                              std::vector<int32_t>(batch.labels.begin() + begin, batch.labels.begin() + end));
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
          loss = batch_loss(logits, batch.images, batch.labels);
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
    // The other processes have nothing to write: they go on to the next epoch (and wait there for 0).
    if (!writer) continue;
    const EvalResult test = evaluate(model, test_loader);

    MetricsRow row{{"epoch", static_cast<double>(epoch + 1)},
                   {"lr", opt.lr()},
                   {"train_loss", seen ? loss_sum / seen : 0.0},
                   {"train_acc", seen ? static_cast<double>(correct) / seen : 0.0},
                   {"test_loss", test.loss},
                   {"test_acc", test.accuracy},
                   {"train_img_per_s", seen / std::max(train_secs, 1e-9)},
                   {"epoch_seconds", train_secs + test.seconds}};
    outcome.history.push_back(row);
    if (monitor) monitor->epoch_done(epoch + 1, s.epochs, row);

    if (job.log) {
      std::fprintf(job.log, "epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %s\n",
                   static_cast<long long>(epoch + 1), static_cast<long long>(s.epochs), row["train_loss"],
                   100 * row["train_acc"], test.loss, 100 * test.accuracy, row["train_img_per_s"],
                   format_duration(train_secs + test.seconds).c_str());
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
    ckpt.history = outcome.history;
    ckpt.config_ini = job.config_ini;
    ckpt.metadata["command"] = job.command_line;
    ckpt.metadata["threads"] = std::to_string(omp_get_max_threads());
    if (world_size() > 1) ckpt.metadata["processes"] = std::to_string(world_size());
    save_checkpoint(ckpt_path, ckpt);
    atomic_write_text((fs::path(job.out_dir) / "metrics.csv").string(), metrics_csv(outcome.history));
    atomic_write_text((fs::path(job.out_dir) / "curve.svg").string(),
                      curve_svg(outcome.history, ckpt.model_name + " (" + ckpt.model_kind + ") on " + ckpt.dataset));
  }
  const bool finished = outcome.epochs_done == s.epochs || (!outcome.stopped_early && start_epoch >= s.epochs);
  if (write_files)
    atomic_write_text((fs::path(job.out_dir) / "summary.json").string(),
                      summary_json(job, s, outcome.history, finished));
  return outcome;
}

}  // namespace qatlab
