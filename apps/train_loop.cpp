// train_loop.cpp: the epoch loop, evaluation, and the files a run writes (checkpoint, CSV, JSON).
#include "apps/train_loop.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "apps/chunked_step.h"
#include "apps/progress.h"
#include "apps/svg_plot.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/ops.h"
#include "nn/activation.h"
#include "nn/grad_utils.h"
#include "nn/model_description.h"
#include "nn/zoo.h"

namespace qatlab {

namespace fs = std::filesystem;

void add_train_options(po::options_description& desc, TrainSettings& s) {
  static const std::string models_help = [] {
    std::string h = "a built-in model (";
    for (const std::string& m : model_names()) h += (h.back() == '(' ? "" : ", ") + m;
    return h + ") or a model description file (nn/models/README.md)";
  }();
  desc.add_options()
      ("model", po::value(&s.model)->default_value(s.model), models_help.c_str())
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
      ("seed", po::value(&s.seed)->default_value(s.seed), "random seed (initialisation, shuffling, dropout)")
      ("threads", po::value(&s.threads)->default_value(s.threads), "worker threads (0 = all cores; under mpirun, the cores shared among the machine's processes)")
      ("grad-chunks", po::value(&s.grad_chunks)->default_value(s.grad_chunks), "cut each batch into this many chunks whose gradients add in a fixed order: N processes give the weights of 1 (0 = 1, or 8 under mpirun)")
      ("out", po::value(&s.out), "output directory (default: runs/<model>-<dataset>, numbered if taken)")
      ("overwrite", po::bool_switch(&s.overwrite), "allow --out to name a directory that already holds a run")
      ("resume", po::value(&s.resume), "continue the run saved in this checkpoint")
      ("stop-after", po::value(&s.stop_after)->default_value(0), "stop after this many epochs of this invocation (0 = run to the end)")
      ("progress", po::value(&s.progress)->default_value(s.progress), "auto | bar | plain | none");
}

void validate_train_settings(const TrainSettings& s, bool check_model) {
  // A resumed run, or one from a checkpoint, takes its network from there (the file may be gone).
  if (check_model) {
    try {
      resolve_model(s.model);
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
  require_threads("threads", s.threads);
  require(s.grad_chunks >= 0 && s.grad_chunks <= s.batch_size,
          "--grad-chunks must be in 0..batch size (" + std::to_string(s.batch_size) + "), got " + std::to_string(s.grad_chunks));
  require(s.stop_after >= 0, "--stop-after must be >= 0, got " + std::to_string(s.stop_after));
  require(s.warmup_epochs >= 0 && s.warmup_epochs <= std::max<int64_t>(s.epochs, 0),
          "--warmup-epochs must be in [0, epochs], got " + std::to_string(s.warmup_epochs));
  require(s.optimizer == "sgd" || s.optimizer == "adam" || s.optimizer == "adamw",
          "--optimizer must be sgd, adam or adamw, got '" + s.optimizer + "'");
  require(s.progress == "auto" || s.progress == "bar" || s.progress == "plain" || s.progress == "none",
          "--progress must be auto, bar, plain or none, got '" + s.progress + "'");
  // The schedule is built here too (run() builds it again) so that its mistakes are usage errors.
  try {
    LrSchedule schedule = parse_schedule(s.schedule, s.lr, s.milestones);
    schedule.step_epochs = s.step_epochs;
    schedule.gamma = s.gamma;
    schedule.warmup_epochs = s.warmup_epochs;
    validate_schedule(schedule);
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

EvalResult evaluate(Module& model, DataLoader& loader) {
  const auto t0 = std::chrono::steady_clock::now();
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0;
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    const Tensor logits = model.forward(batch.images);  // (N, classes)
    const int64_t n = logits.size(0), classes = logits.size(1);
    loss_sum += cross_entropy(logits, batch.labels).item() * n;
    const float* l = logits.data();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t pred = static_cast<int32_t>(std::max_element(l + i * classes, l + (i + 1) * classes) - (l + i * classes));
      r.predictions.push_back(pred);
      correct += pred == batch.labels[i];
    }
    r.count += n;
  }
  model.set_training(was_training);
  r.loss = r.count ? loss_sum / r.count : 0.0;
  r.accuracy = r.count ? static_cast<double>(correct) / r.count : 0.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
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

}  // namespace

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

std::string summary_json(const TrainJob& job, const TrainSettings& s, const std::vector<MetricsRow>& history,
                         bool finished) {
  std::ostringstream os;
  os.precision(8);
  const MetricsRow last = history.empty() ? MetricsRow{} : history.back();
  auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  os << "{\n";
  os << "  \"model\": \"" << json_escape(s.model) << "\",\n";
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

}  // namespace

std::vector<ParamRef> param_refs(const Module& model, bool decay_all) {
  std::vector<ParamRef> refs;
  for (auto& [name, t] : model.named_parameters()) {
    // Biases and BN scales/shifts are 1-d; decaying them rarely helps and often hurts.
    const bool decay = decay_all || t.dim() > 1;
    refs.push_back({name, t, decay});
  }
  return refs;
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

namespace {

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
  Progress progress(writer ? s.progress : "none");
  // Chunked steps (chunked_step.h) whenever the batch is cut or shared; else the one-batch step as always.
  const int64_t chunks = std::max<int64_t>(s.grad_chunks, 1);
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
  if (writer) fs::create_directories(job.out_dir);
  const std::string ckpt_path = (fs::path(job.out_dir) / "checkpoint.h5").string();

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
    progress.start_epoch(epoch, s.epochs, iters);

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
            logits = model.forward(rows_of(batch.images, begin, end));  // (end - begin, classes)
            loss = cross_entropy(logits, std::vector<int32_t>(batch.labels.begin() + begin, batch.labels.begin() + end),
                                 s.label_smoothing);
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
          loss = cross_entropy(logits, batch.labels, s.label_smoothing);
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
      progress.update(batch.index, loss_sum / seen, static_cast<double>(correct) / seen, seen / std::max(secs, 1e-9));
    }
    model.set_batch_sync(nullptr);
    const double train_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.end_epoch();
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

    char line[256];
    std::snprintf(line, sizeof line,
                  "epoch %lld/%lld  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  %.0f img/s  %s",
                  static_cast<long long>(epoch + 1), static_cast<long long>(s.epochs), row["train_loss"],
                  100 * row["train_acc"], test.loss, 100 * test.accuracy, row["train_img_per_s"],
                  format_duration(train_secs + test.seconds).c_str());
    progress.line(line);

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
  if (writer)
    atomic_write_text((fs::path(job.out_dir) / "summary.json").string(),
                      summary_json(job, s, outcome.history, finished));
  return outcome;
}

}  // namespace qatlab
