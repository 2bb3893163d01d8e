// sweep_cell.cpp: one cell of the sweep: quantize (PTQ or QAT), reload, convert, evaluate, record.
#include "quant/workflow/sweep_cell.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/format.h"
#include "core/rng.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/train/evaluate.h"
#include "nn/train/teacher.h"
#include "nn/train/teacher_cache.h"
#include "nn/train/train_run.h"
#include "nn/zoo.h"
#include "quant/engine/kernels/kernel_path.h"
#include "quant/qat/convert.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/integer_eval.h"
#include "quant/workflow/ptq.h"
#include "quant/workflow/qat_training.h"

namespace qatlab {

namespace fs = std::filesystem;

SweepQuantizers sweep_quantizers(SweepMethod method) {
  SweepQuantizers q;
  switch (method) {
    case SweepMethod::PtqMinMax:
      q.activation_observer = ObserverKind::MinMax;
      break;
    case SweepMethod::PtqHistogram:
      q.activation_observer = ObserverKind::Histogram;
      break;
    case SweepMethod::QatMinMax:
      q.activation_observer = ObserverKind::Ema;
      break;
    case SweepMethod::Lsq:
      q.activation_observer = ObserverKind::Ema;
      q.weight_method = q.activation_method = QuantizerMethod::Lsq;
      break;
    case SweepMethod::Pact:
      q.activation_observer = ObserverKind::Ema;
      q.activation_method = QuantizerMethod::Pact;
      break;
  }
  return q;
}

QConfig sweep_cell_qconfig(const SweepCellSettings& s) {
  const SweepQuantizers m = sweep_quantizers(parse_sweep_method(s.cell.method));
  QConfig q;
  q.weight.scheme.bits = s.cell.bits.wbits;
  q.weight.scheme.per_channel = s.cell.granularity == "per-channel";
  q.weight.observer = m.weight_observer;
  q.weight.method = m.weight_method;
  q.activation.scheme.bits = s.cell.bits.abits;
  q.activation.observer = m.activation_observer;
  q.activation.method = m.activation_method;
  for (QuantizerSpec* spec : {&q.weight, &q.activation})
    if (spec->method == QuantizerMethod::Lsq) spec->lsq_init = s.lsq_init, spec->lsq_grad_scale = s.lsq_grad_scale;
  if (q.weight.method == QuantizerMethod::Lsq) q.weight.lsq_step_bounds = s.lsq_step_bounds;
  for (const std::string& text : s.layer_bits) q.layer_bits.insert(parse_layer_bits(text));
  q.set_weight_range(s.weight_range);
  q.validate();
  return q;
}

TrainSettings sweep_cell_train_settings(const SweepCellSettings& s) {
  TrainSettings t;
  t.epochs = s.qat_epochs;
  t.lr = s.qat_lr;
  t.weight_decay = s.qat_weight_decay;
  t.warmup_epochs = s.qat_warmup_epochs;
  t.swa_start = s.swa_start;
  t.swa_lr = s.swa_lr;
  t.batch_size = s.batch_size;
  t.seed = s.cell.seed;
  if (s.distill_weight > 0) t.distill_weight = s.distill_weight, t.distill_temperature = s.distill_temperature;
  t.grad_chunks = 1;  // a cell is trained by one process
  return t;
}

namespace {

// "the float model", "teacher.h5" or "the ensemble of a.h5 + b.h5" (file names without their folders).
std::string teachers_text(const std::vector<std::string>& teachers) {
  if (teachers.empty()) return "the float model";
  std::string names;
  for (const std::string& t : teachers) names += (names.empty() ? "" : " + ") + fs::path(t).filename().string();
  return teachers.size() == 1 ? names : "the ensemble of " + names;
}

// The name a schedule gives a start checkpoint: its directory's (a sweep cell's id), else its file's.
std::string start_name(const std::string& checkpoint) {
  const fs::path p(checkpoint);
  return p.has_parent_path() && p.parent_path().has_filename() ? p.parent_path().filename().string()
                                                               : p.filename().string();
}

}  // namespace

std::string sweep_cell_schedule(const SweepCellSettings& s) {
  const std::string range = s.weight_range == WeightRange::Full      ? ", full-range weights"
                            : s.weight_range == WeightRange::MidRise ? ", mid-rise weights"
                                                                     : "";
  if (sweep_method_is_ptq(s.cell.method))
    return std::to_string(s.calib_batches) + " calibration batches of " + std::to_string(s.batch_size) + range;
  return std::to_string(s.qat_epochs) + (s.qat_epochs == 1 ? " epoch" : " epochs") + ", lr " + num_str(s.qat_lr) +
         " cosine, batch " + std::to_string(s.batch_size) + ", weight decay " + num_str(s.qat_weight_decay) +
         (s.qat_warmup_epochs > 0 ? ", " + std::to_string(s.qat_warmup_epochs) +
                                        (s.qat_warmup_epochs == 1 ? " warm-up epoch" : " warm-up epochs")
                                  : "") +
         (s.freeze_bn_after >= 0 ? ", batch norm frozen from epoch " + std::to_string(s.freeze_bn_after + 1) : "") +
         (s.swa_start > 0 ? ", epochs " + std::to_string(s.swa_start + 1) + "-" + std::to_string(s.qat_epochs) +
                                " at lr " + num_str(s.swa_lr) + " averaged (SWA)"
                          : "") +
         (s.lsq_init ? std::string(", lsq init ") + lsq_init_name(*s.lsq_init) : "") +
         (s.lsq_grad_scale ? std::string(", lsq gradient scale per ") + lsq_grad_scale_name(*s.lsq_grad_scale) : "") +
         (s.lsq_step_bounds ? ", lsq weight steps bounded (k " + num_str(*s.lsq_step_bounds) + ")" : "") +
         (s.distill_weight > 0 ? ", distilled from " + teachers_text(s.teachers) + " (weight " +
                                     num_str(s.distill_weight) + ", temperature " + num_str(s.distill_temperature) + ")"
                               : "") +
         (s.augment.empty() ? "" : ", augment " + s.augment) +
         (s.start_checkpoint.empty() ? "" : ", started from " + start_name(s.start_checkpoint)) + range;
}

namespace {

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// The cell's quantized model, made by its method into the cell's directory (checkpoint.h5); a QAT cell's
// training goes on from `resume` when given. False when stop_after ended the training early.
bool quantize(const SweepCellSettings& s, const DataBundle& data, std::FILE* log, const Checkpoint* resume) {
  const Checkpoint base = load_checkpoint(s.float_checkpoint);
  if (base.model_kind != "float")
    throw std::invalid_argument(base.source + " is a '" + base.model_kind + "' checkpoint; a sweep quantizes a float one");
  if (sweep_method_is_ptq(s.cell.method)) {
    PtqSettings ptq;
    ptq.qconfig = sweep_cell_qconfig(s);
    ptq.calib_batches = s.calib_batches;
    ptq.batch_size = s.batch_size;
    ptq.seed = s.cell.seed;
    run_ptq(base, data, ptq, s.dir, s.config_ini, log);
    return true;
  }
  TrainRun run;
  run.name = "qat";
  run.model = model_from_checkpoint(base);
  if (!s.start_checkpoint.empty()) {  // progressive: the latent weights another cell's training left
    const Checkpoint start = load_checkpoint(s.start_checkpoint);
    if (start.model_kind != "qat" || checkpoint_model_description(start).text != checkpoint_model_description(base).text)
      throw std::invalid_argument(start.source + " is not a QAT checkpoint of the float model's network " +
                                  base.model_name + " (it holds a '" + start.model_kind + "' " + start.model_name +
                                  "): a cell starts from one");
    run.model = float_model_under_qat_checkpoint(start, stored_qconfig(start));
  }
  if (s.distill_weight > 0) {  // the float model's own copy (never trained), or the teachers given
    run.teacher = s.teachers.empty() ? model_from_checkpoint(base) : load_teachers(s.teachers, data);
    if (!s.teacher_cache.empty()) {
      const std::vector<std::string> teachers = s.teachers.empty() ? std::vector<std::string>{s.float_checkpoint} : s.teachers;
      run.teacher_cache = std::make_shared<const TeacherCache>(
          TeacherCache::load(s.teacher_cache, teacher_cache_key(teachers, data)));
    }
  }
  run.description = checkpoint_model_description(base);
  run.settings = sweep_cell_train_settings(s);
  run.settings.stop_after = s.stop_after;
  run.resume_from = resume;
  run.model_label = base.model_name;
  run.data = &data;
  run.out_dir = s.dir;
  run.config_ini = s.config_ini;
  run.command_line = s.command_line;
  run.log = log;
  run.monitor = s.monitor;
  run.detect_anomaly = s.detect_anomaly;
  QatSchedule schedule;
  schedule.freeze_bn_after = s.freeze_bn_after;
  return !train_qat(run, sweep_cell_qconfig(s), schedule).outcome.stopped_early;
}

// The checkpoint an interrupted QAT training of this very cell left in its directory, if any: no result,
// a start.ini with the cell's key, a QAT checkpoint that loads.
std::optional<Checkpoint> interrupted_training(const SweepCellSettings& s) {
  if (sweep_method_is_ptq(s.cell.method) || fs::exists(s.dir + "/result.ini") ||
      !fs::exists(s.dir + "/checkpoint.h5"))
    return std::nullopt;
  std::ifstream in(s.dir + "/start.ini", std::ios::binary);
  std::ostringstream start;
  start << in.rdbuf();
  if (!in || ini_value(start.str(), "key") != s.key) return std::nullopt;
  try {
    Checkpoint c = load_checkpoint(s.dir + "/checkpoint.h5");
    if (c.model_kind == "qat") return c;
  } catch (const std::exception&) {
    // A checkpoint that does not load is started over like any other leftover.
  }
  return std::nullopt;
}

// The checkpoint of a finished cell this one extends with weight averaging (SweepCellSettings::
// extends_key), if any: its result, with that key, and a QAT checkpoint at epoch swa_start, not averaged.
std::optional<Checkpoint> finished_run_to_extend(const SweepCellSettings& s) {
  if (s.extends_key.empty() || sweep_method_is_ptq(s.cell.method) || s.swa_start <= 0) return std::nullopt;
  const std::optional<CellResult> done = read_cell_result(s.dir + "/result.ini", s.cell);
  if (!done || !done->ok || done->key != s.extends_key || !fs::exists(s.dir + "/checkpoint.h5")) return std::nullopt;
  try {
    Checkpoint c = load_checkpoint(s.dir + "/checkpoint.h5");
    if (c.model_kind == "qat" && c.epoch == s.swa_start && c.swa_count == 0) return c;
  } catch (const std::exception&) {
    // Not loadable: the cell is trained from the start.
  }
  return std::nullopt;
}

}  // namespace

SweepCellState sweep_cell_state(const SweepCellSettings& s) {
  SweepCellState state;
  if (std::optional<CellResult> done = read_cell_result(s.dir + "/result.ini", s.cell); done && done->key == s.key) {
    state.kind = SweepCellState::Kind::Finished;
    state.result = std::move(done);
  } else if (const std::optional<Checkpoint> c = interrupted_training(s)) {
    state.kind = SweepCellState::Kind::Interrupted;
    state.epoch = c->epoch;
    if (!c->history.empty())
      if (const auto seconds = c->history.back().find("epoch_seconds"); seconds != c->history.back().end())
        state.last_epoch_seconds = seconds->second;
  } else if (const std::optional<Checkpoint> c = finished_run_to_extend(s)) {
    state.kind = SweepCellState::Kind::Extendable;
    state.epoch = c->epoch;
  } else if (fs::exists(s.dir) && !fs::is_empty(s.dir)) {
    state.kind = SweepCellState::Kind::Replaced;
  }
  return state;
}

CellResult run_sweep_cell(const SweepCellSettings& s, const std::function<DataBundle()>& data_of) {
  const auto start = std::chrono::steady_clock::now();
  CellResult r;
  r.cell = s.cell;
  r.key = s.key;
  r.schedule = sweep_cell_schedule(s);
  std::optional<Checkpoint> resume = interrupted_training(s);
  const bool extending = !resume && (resume = finished_run_to_extend(s)).has_value();
  if (!resume || extending) {
    if (!resume) {
      fs::remove_all(s.dir);  // whatever an unfinished attempt with other settings left
      fs::create_directories(s.dir);
    }
    // (Extending: the new key first, then the old result goes: interrupted in between, the cell still
    // finds the finished run to extend.)
    atomic_write_text(s.dir + "/start.ini", "cell = " + s.cell.id() + "\nkey = " + s.key + "\n");
    if (extending) {
      fs::remove(s.dir + "/result.ini");
      fs::remove(s.dir + "/model.int8.h5");
    }
  }
  try {
    const DataBundle data = data_of();
    {
      const std::unique_ptr<std::FILE, FileCloser> log(std::fopen((s.dir + "/log.txt").c_str(), "a"));
      if (!log) throw std::runtime_error("cannot write " + s.dir + "/log.txt");
      if (extending)
        std::fprintf(log.get(), "extending the finished %lld-epoch cell: epochs %lld-%lld at lr %s, averaged\n",
                     static_cast<long long>(s.swa_start), static_cast<long long>(s.swa_start + 1),
                     static_cast<long long>(s.qat_epochs), num_str(s.swa_lr).c_str());
      if (!quantize(s, data, log.get(), resume ? &*resume : nullptr)) {
        r.error = "unfinished: training stopped after " + std::to_string(s.stop_after) +
                  " epochs of this run (stop_after); run the cell again to go on";
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        return r;
      }
    }
    const Checkpoint ckpt = load_checkpoint(s.dir + "/checkpoint.h5");
    const auto model = std::dynamic_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt));
    if (!model) throw std::runtime_error(s.dir + "/checkpoint.h5 does not hold a QAT model");
    model->eval();
    DataLoader test(data.test, loader_options(data, 256, 0, false));
    r.sim_accuracy = evaluate(*model, test).accuracy;
    Int8Graph graph = convert(*model, {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width});
    set_checkpoint_pixel_table(graph, ckpt);  // as `convert` writes it
    graph.save(s.dir + "/model.int8.h5");
    r.int_file_bytes = file_bytes(s.dir + "/model.int8.h5");
    EvalResult integer;
    Agreement agree;
    DataLoader integer_test(data.test, integer_loader_options(graph, data, 256));
    run_integer(graph, best_kernel_path(), integer_test, model.get(), integer, agree);
    r.int_accuracy = integer.accuracy;
    r.top1_agreement = agree.images > 0 ? static_cast<double>(agree.same_top1) / agree.images : 0.0;
    r.exact_identical = agree.images > 0 ? static_cast<double>(agree.exact_identical_images) / agree.images : 0.0;
    r.ok = true;
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
    r.error = r.error.substr(0, r.error.find('\n'));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  atomic_write_text(s.dir + "/result.ini", cell_result_ini(r));
  return r;
}

std::pair<std::string, std::string> first_and_last_layers(const ModelDescription& model, const ModelSpec& spec) {
  Rng rng(0);
  const ModulePtr m = build_model(model, spec, rng);
  std::string first, last;
  for (const auto& [name, mod] : m->named_modules(m)) {
    if (!mod->is<Conv2d>() && !mod->is<Linear>() && !mod->is<LSTM>()) continue;
    if (first.empty()) first = name;
    last = name;
  }
  if (first.empty()) throw std::invalid_argument(model.name + " has no conv, linear or LSTM layer to quantize");
  return {first, last};
}

}  // namespace qatlab
