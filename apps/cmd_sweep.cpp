// cmd_sweep.cpp: `qatlab sweep`: the accuracy-vs-bitwidth study in one command. For every method x
// granularity x W/A pair x seed it runs a cell (run_sweep_cell, quant/workflow/sweep_cell.h: a quantized
// model by post-training quantization or QAT, converted to an integer graph, simulation and integer graph
// evaluated), and writes the study's CSV, JSON and plots after every cell. An interrupted sweep run again
// skips the cells it finished and resumes a QAT cell from its last epoch (run_sweep_cell); run again with
// weight averaging added after a finished cell's epochs (--qat-swa-start), it extends that cell. Under
// `mpirun -np N`, process 0 trains the missing float models (train_model, nn/train/train_run.h), then every
// process takes the next cell from a shared counter and runs it alone; process 0 writes the study's files
// from every cell's result.
//
// Layout of --out:
//   float-s<seed>/          the float model of each seed (trained here unless a checkpoint is given)
//   cells/<cell id>/        start.ini, checkpoint.h5, model.int8.h5, log.txt (what the cell reported), result.ini
//   results.csv, results.json, cells.csv, table.md, accuracy_vs_bits.svg, accuracy_vs_wbits.svg
//
// `qatlab sweep --merge A,B,... --out DIR` runs nothing: it joins finished sweeps of one model (their
// results.json) into one report with the same files, e.g. a study run as one sweep per fine-tuning
// schedule or layer bits (merge_sweep_reports). `qatlab sweep ... --status` runs nothing either: with a
// sweep's own options it lists where each cell stands in --out, as a run would find it (sweep_cell_state),
// and the QAT epochs left.
//
// The checkpoints the sweep makes store the settings `qatlab train`, `qat` or `ptq` would store for the
// same run (their INI lines, typed: train_options_ini and the others), so that `--resume` and `info`
// read them as any other.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "apps/commands.h"
#include "apps/data_setup.h"
#include "apps/qat_options.h"
#include "apps/sweep_plot.h"
#include "apps/train_command.h"
#include "apps/train_options.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "core/format.h"
#include "core/rng.h"
#include "nn/checkpoint.h"
#include "nn/model_description.h"
#include "nn/train/evaluate.h"
#include "nn/train/teacher.h"
#include "nn/train/train_run.h"
#include "quant/qat/prepare.h"
#include "quant/workflow/published.h"
#include "quant/workflow/sweep.h"
#include "quant/workflow/sweep_cell.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

struct SweepSettings {
  std::string checkpoint;  // a float checkpoint shared by all seeds; "" = train one per seed
  std::string model = "lenet5";
  int64_t float_epochs = 3;
  std::string pairs = "8/8,6/6,4/4,3/3,2/2,4/8,2/8";
  std::string methods = "ptq-minmax,ptq-histogram,qat-minmax,lsq,pact";
  std::string granularity = "per-tensor";
  std::string first_last = "8";  // "8": the first and the last layer stay at 8 bits; "same": every layer at W/A
  std::vector<std::string> layer_bits;  // NAME=W:A kept by every cell, before the first-last policy
  int64_t seeds = 2;
  uint64_t first_seed = 1;
  int64_t qat_epochs = 2;
  float qat_lr = 0.01f;
  float qat_weight_decay = 5e-4f;
  int64_t qat_warmup_epochs = 0;
  std::string lsq_init;  // "" (the paper's formula) | lsq | minmax | mse: where lsq cells' steps start
  std::string lsq_grad_scale;  // "" (channel) | channel | layer: N of lsq cells' step gradient scale
  float lsq_step_bounds = 0;   // 0 (none) | k >= 1: lsq cells' weight step bounds
  std::string weight_range;  // "" (narrow) | narrow | full | mid-rise: every cell's weight codes below 8 bits
  float qat_distill = 0.0f;              // > 0: QAT cells distil from their float model with this weight
  float qat_distill_temperature = 1.0f;
  std::vector<std::string> qat_teachers;  // with qat_distill: QAT cells distil from these (an ensemble) instead
  std::string qat_teacher_cache;  // with qat_distill: the teachers' outputs computed ahead (qatlab teacher-cache)
  bool detect_anomaly = false;    // QAT cells: every op checks its values for NaN and infinity
  bool status = false;            // list each cell's state in --out and what a run would do; run nothing
  int64_t qat_freeze_bn_after = -1;      // >= 0: QAT cells' batch norm uses its running statistics from this epoch
  int64_t qat_swa_start = 0;             // > 0: QAT cells average their weights after this many epochs (SWA)
  float qat_swa_lr = 0.0f;               // at this constant learning rate
  std::string qat_start;                 // a sweep directory: each QAT cell starts from its cell there (progressive)
  int64_t batch_size = 64;
  int64_t calib_batches = 32;
  int threads = 0;
  std::string out;
  std::vector<PublishedFigures> published;  // --published: papers' figures for table.md's second table
};

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// The study's files in `out`: cells.csv, results.csv, results.json, table.md and the plots.
void write_sweep_outputs(const SweepReport& report, const std::string& out,
                         const std::vector<PublishedFigures>& published) {
  const fs::path dir(out);
  atomic_write_text((dir / "cells.csv").string(), cells_csv(report));
  atomic_write_text((dir / "results.csv").string(), results_csv(report));
  atomic_write_text((dir / "results.json").string(), results_json(report));
  atomic_write_text((dir / "table.md").string(),
                    results_table_md(report) + (published.empty() ? "" : "\n" + published_table_md(report, published)));
  for (const auto& [name, svg] : accuracy_plots(report)) atomic_write_text((dir / name).string(), svg);
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// What the cells of a float model take from its checkpoint.
struct FloatModel {
  std::string model_name;
  std::string augment;  // the augmentation its run chose ("": the dataset's default): its QAT cells keep it
  DataRecord record;    // its data: the cells load the dataset normalised as it was
  ModelSpec spec;
};

// A QAT cell's epochs as lines among the sweep's own, so that a long cell does not go silent:
// "      lsq-per-channel-w2a2-s1  epoch 5/30  train 91.20 %  test (simulation) 85.12 %  1:31".
class CellEpochLines : public TrainMonitor {
 public:
  explicit CellEpochLines(std::string id) : id_(std::move(id)) {}
  void epoch_done(int64_t epoch, int64_t epochs, const MetricsRow& row) override {
    std::printf("      %s  epoch %lld/%lld  train %.2f %%  test (simulation) %.2f %%  %s\n", id_.c_str(),
                static_cast<long long>(epoch), static_cast<long long>(epochs), 100 * row.at("train_acc"),
                100 * row.at("test_acc"), format_duration(row.at("epoch_seconds")).c_str());
    std::fflush(stdout);
  }

 private:
  std::string id_;
};

// A finished cell of another sweep that a QAT cell starts from (--qat-start): its checkpoint and its key.
struct StartCell {
  std::string checkpoint, key;
};

class Sweep {
 public:
  Sweep(const SweepSettings& s, const DataSettings& d, const DataBundle& data, ModelDescription model, std::string command)
      : s_(s), d_(d), data_(data), model_(std::move(model)) {
    report_.command = std::move(command);
  }

  int run() {
    const std::vector<SweepCell> cells = prepare();
    fs::create_directories(fs::path(s_.out) / "cells");
    // Under mpirun process 0 trains the float models that are missing, alone; the others then find them.
    agree_on_rank0([&] {
      for (int64_t i = 0; i < s_.seeds; ++i) report_.floats.push_back(float_baseline(s_.first_seed + i));
      return std::string();
    });
    if (world_rank() != 0)
      for (int64_t i = 0; i < s_.seeds; ++i) report_.floats.push_back(float_baseline(s_.first_seed + i));
    if (!s_.checkpoint.empty()) report_.floats.resize(1);  // one shared model
    // The teachers given, checked against each float model's inputs and classes before any cell runs.
    for (const FloatBaseline& f : report_.floats) {
      if (s_.qat_teachers.empty()) break;
      const FloatModel& base = floats_.at(f.checkpoint);
      DataBundle inputs;
      inputs.spec = base.spec;
      inputs.mean = base.record.mean.empty() ? data_.mean : base.record.mean;
      inputs.std = base.record.mean.empty() ? data_.std : base.record.std;
      try {
        load_teachers(s_.qat_teachers, inputs);
      } catch (const std::invalid_argument& e) {
        throw UsageError(std::string(e.what()) + " (--qat-teacher)");
      }
    }

    std::printf("sweep %s on %s: %zu cells (%zu W/A pairs x %zu methods x %zu granularities x %lld seeds), %s -> %s\n",
                model_.name.c_str(), report_.dataset.c_str(), cells.size(), pairs_.size(), methods_.size(), grans_.size(),
                static_cast<long long>(s_.seeds), report_.policy.c_str(), s_.out.c_str());
    if (world_size() > 1)
      std::printf("%d processes take the cells in turn as they free up; process 0 merges the results\n", world_size());

    start_ = std::chrono::steady_clock::now();
    int64_t ran = 0, failed = 0;
    if (world_size() == 1) {
      for (size_t i = 0; i < cells.size(); ++i) {
        bool reused = false;
        const CellResult r = result_of(cells[i], &reused);
        ran += !reused;
        failed += !r.ok;
        report_.cells.push_back(r);
        write_outputs();
        print_cell(i, cells.size(), r, reused);
      }
    } else {
      ran = run_shared(cells);
      if (world_rank() != 0) return 0;
      for (const CellResult& r : report_.cells) failed += !r.ok;
      write_outputs();
    }
    std::printf("sweep finished: %lld cells run, %lld reused, %lld failed; results in %s/results.csv, results.json, "
                "accuracy_vs_*.svg\n",
                static_cast<long long>(ran), static_cast<long long>(cells.size() - ran), static_cast<long long>(failed),
                s_.out.c_str());
    return 0;
  }

  // --status: where each cell stands in --out and what a run would do with it, and the QAT epochs left.
  // Reads files only: trains, evaluates and writes nothing.
  int status() {
    if (world_rank() != 0) return 0;  // under mpirun, one report
    const std::vector<SweepCell> cells = prepare();
    std::printf("sweep %s on %s in %s: %zu cells, %s\n", model_.name.c_str(), report_.dataset.c_str(), s_.out.c_str(),
                cells.size(), report_.policy.c_str());
    // The float models: a seed's cells are keyed by theirs, so a seed without one has only cells to run.
    std::set<uint64_t> have_float;  // the seeds whose float model is there
    for (int64_t i = 0; i < (s_.checkpoint.empty() ? s_.seeds : 1); ++i) {
      const uint64_t seed = s_.first_seed + static_cast<uint64_t>(i);
      FloatBaseline f;
      f.seed = seed;
      f.checkpoint = float_checkpoint_of(seed);
      if (!fs::exists(f.checkpoint)) {
        std::printf("  float model of seed %llu: not trained yet (%s; a run trains it first, %lld epochs)\n",
                    static_cast<unsigned long long>(seed), f.checkpoint.c_str(), static_cast<long long>(s_.float_epochs));
        continue;
      }
      const Checkpoint c = load_checkpoint(f.checkpoint);
      if (s_.checkpoint.empty() && c.epoch < s_.float_epochs)
        std::printf("  float model of seed %llu: at epoch %lld of %lld (a run goes on with it first)\n",
                    static_cast<unsigned long long>(seed), static_cast<long long>(c.epoch),
                    static_cast<long long>(s_.float_epochs));
      remember_float(f.checkpoint, c);
      report_.floats.push_back(f);
      have_float.insert(seed);
    }
    const auto float_of = [&](const SweepCell& cell) { return !s_.checkpoint.empty() || have_float.count(cell.seed) > 0; };

    int64_t finished = 0, failed = 0, training = 0, to_run = 0, epochs_left = 0;
    double pace_sum = 0.0;  // the training cells' last epochs, for the estimate
    int64_t paced = 0;
    size_t width = 4;
    for (const SweepCell& cell : cells) width = std::max(width, cell.id().size());
    std::printf("  %-*s  state\n", static_cast<int>(width), "cell");
    for (const SweepCell& cell : cells) {
      const bool qat = !sweep_method_is_ptq(cell.method);
      std::string state;
      SweepCellState st;
      if (float_of(cell)) st = sweep_cell_state(cell_settings(cell));
      switch (st.kind) {
        case SweepCellState::Kind::Finished:
          ++finished;
          if (st.result->ok) {
            state = "finished: integer graph " + fixed(100 * st.result->int_accuracy, 2) + " %, simulation " +
                    fixed(100 * st.result->sim_accuracy, 2) + " %";
          } else {
            ++failed;
            state = "failed: " + st.result->error + " (kept: a run reuses it; remove its directory to run it again)";
          }
          break;
        case SweepCellState::Kind::Interrupted:
          ++training;
          epochs_left += s_.qat_epochs - st.epoch;
          state = "training: epoch " + std::to_string(st.epoch) + " of " + std::to_string(s_.qat_epochs) + " done";
          if (st.last_epoch_seconds > 0) {
            state += " (the last took " + format_duration(st.last_epoch_seconds) + ")";
            pace_sum += st.last_epoch_seconds;
            ++paced;
          }
          break;
        case SweepCellState::Kind::Extendable:
          ++training;
          epochs_left += s_.qat_epochs - st.epoch;
          state = "finished at epoch " + std::to_string(st.epoch) + ": a run goes on to epoch " +
                  std::to_string(s_.qat_epochs) + ", averaging the weights";
          break;
        case SweepCellState::Kind::Replaced:
        case SweepCellState::Kind::New:
          ++to_run;
          if (qat) epochs_left += s_.qat_epochs;
          state = qat ? "to run (" + std::to_string(s_.qat_epochs) + " epochs)" : "to run (calibration)";
          if (!float_of(cell)) state += ", after its float model";
          if (st.kind == SweepCellState::Kind::Replaced)
            state += "; its directory holds another setting's cell, which a run deletes";
          break;
      }
      std::printf("  %-*s  %s\n", static_cast<int>(width), cell.id().c_str(), state.c_str());
    }
    std::printf("%lld finished (%lld failed), %lld training, %lld to run; %lld QAT epochs left",
                static_cast<long long>(finished), static_cast<long long>(failed), static_cast<long long>(training),
                static_cast<long long>(to_run), static_cast<long long>(epochs_left));
    if (paced > 0 && epochs_left > 0) {
      const double pace = pace_sum / static_cast<double>(paced);
      std::printf(" (about %s at %s an epoch, the training cells' last, for one process)",
                  format_duration(pace * static_cast<double>(epochs_left)).c_str(), format_duration(pace).c_str());
    }
    std::printf("\n");
    return 0;
  }

  // The grid's cells in order (W/A pair, method, granularity, seed), the layer-bits policy every cell keeps,
  // and (--qat-start) each QAT cell's start. Reads files only.
  std::vector<SweepCell> prepare() {
    pairs_ = parse_bit_pairs(s_.pairs);
    methods_ = parse_name_list(s_.methods, kSweepMethods, "method");
    grans_ = parse_name_list(s_.granularity, {"per-tensor", "per-channel"}, "granularity");
    report_.model = model_.name;
    report_.dataset = data_.test.name;
    const auto [first, last] = first_and_last_layers(model_, data_.spec);
    // --layer-bits first: QConfig keeps the first entry of a key, so they beat the first-last policy.
    policy_ = s_.layer_bits;
    if (s_.first_last == "8") {
      policy_.insert(policy_.end(), {first + "=8:8", last + "=8:8"});
      report_.policy = "first and last layer 8-bit";
    } else {
      report_.policy = "every layer at W/A";
    }
    for (const std::string& o : s_.layer_bits) report_.policy += ", " + o;
    if (!s_.layer_bits.empty()) check_layer_bits();
    std::vector<SweepCell> cells;
    for (const BitPair& bits : pairs_)
      for (const std::string& method : methods_)
        for (const std::string& gran : grans_)
          for (int64_t i = 0; i < s_.seeds; ++i) cells.push_back({method, gran, bits, s_.first_seed + i});
    if (!s_.qat_start.empty()) {  // every QAT cell's start, found before anything is written
      const SweepReport started = start_sweep();
      for (const SweepCell& cell : cells)
        if (!sweep_method_is_ptq(cell.method)) starts_[cell.id()] = start_cell(started, cell);
    }
    return cells;
  }

 private:
  // The --layer-bits keys name layers (or types) of the model, before any cell runs: a typo would fail
  // every cell.
  void check_layer_bits() const {
    Rng rng(0);
    try {
      prepare_qat(build_model(model_, data_.spec, rng), QConfig::from_options(8, 8, true, "minmax", "ema", policy_));
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }

  // --qat-start: the sweep the QAT cells start from, its results.json read. UsageError when DIR is not a sweep.
  SweepReport start_sweep() const {
    const fs::path dir(s_.qat_start);
    std::ifstream in(dir / "results.json", std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in || !fs::is_directory(dir / "cells"))
      throw UsageError("--qat-start " + s_.qat_start + ": not the directory of a sweep (its results.json and cells/)");
    try {
      return parse_results_json(text.str());
    } catch (const std::exception& e) {
      throw UsageError("--qat-start " + s_.qat_start + ": " + e.what());
    }
  }

  // The finished cell of that sweep a QAT cell starts from, the one with the cell's method, granularity and
  // seed (at other bits: progressive quantization, e.g. W2A2 from W4A4). UsageError when there is none or
  // more than one.
  StartCell start_cell(const SweepReport& started, const SweepCell& cell) const {
    const fs::path dir(s_.qat_start);
    std::vector<const CellResult*> found;
    for (const CellResult& r : started.cells)
      if (r.ok && r.cell.method == cell.method && r.cell.granularity == cell.granularity && r.cell.seed == cell.seed)
        found.push_back(&r);
    if (found.size() != 1)
      throw UsageError("--qat-start " + s_.qat_start + " has " + (found.empty() ? "no" : "more than one") +
                       " finished " + cell.method + " " + cell.granularity + " cell of seed " + std::to_string(cell.seed) +
                       " for " + cell.id() + " to start from (one is needed)");
    const std::string checkpoint = (dir / "cells" / found[0]->cell.id() / "checkpoint.h5").string();
    if (!fs::is_regular_file(checkpoint)) throw UsageError("--qat-start: " + checkpoint + " is missing");
    return {checkpoint, found[0]->key};
  }

  // A cell's result: the one a finished run left in its directory when its settings are the same, else
  // the cell run now (by this process alone).
  CellResult result_of(const SweepCell& cell, bool* reused) {
    const SweepCellSettings settings = cell_settings(cell);
    SweepCellState state = sweep_cell_state(settings);  // as --status reports it
    *reused = state.kind == SweepCellState::Kind::Finished;
    if (*reused) {
      state.result->schedule = sweep_cell_schedule(settings);  // the same settings (result files before it lack it)
      return *state.result;
    }
    ProcessLocalScope alone;
    CellEpochLines lines(cell.id());
    SweepCellSettings run = settings;
    run.monitor = &lines;
    return run_sweep_cell(run, [this, &cell] { return cell_data(cell); });
  }

  void print_cell(size_t i, size_t n, const CellResult& r, bool reused) const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::printf("[%zu/%zu] %-34s ", i + 1, n, r.cell.id().c_str());
    if (r.ok)
      std::printf("sim %6.2f %%  int %6.2f %%  top-1 agree %6.2f %%  exact mode identical %6.2f %%  %7lld B",
                  100 * r.sim_accuracy, 100 * r.int_accuracy, 100 * r.top1_agreement, 100 * r.exact_identical,
                  static_cast<long long>(r.int_file_bytes));
    else
      std::printf("FAILED: %s", r.error.c_str());
    std::printf("  %s  (sweep %s)\n", reused ? "done before" : format_duration(r.seconds).c_str(),
                format_duration(elapsed).c_str());
    std::fflush(stdout);
  }

  // Under mpirun: every process draws the next cell from a shared counter until none is left (a queue
  // served as processes free up); then process 0 gathers every result (its report_.cells, in grid order).
  // Returns the number of cells run (not reused), on process 0.
  int64_t run_shared(const std::vector<SweepCell>& cells) {
    std::string mine;  // per cell: "<index> <reused>\n<result.ini>" and a record separator
    {
      SharedCounter counter;
      for (int64_t i = counter.next(); i < static_cast<int64_t>(cells.size()); i = counter.next()) {
        bool reused = false;
        const CellResult r = result_of(cells[i], &reused);
        print_cell(static_cast<size_t>(i), cells.size(), r, reused);
        mine += std::to_string(i) + " " + (reused ? "1" : "0") + "\n" + cell_result_ini(r) + kRecordEnd;
      }
    }
    const std::vector<std::string> all = gather_texts(mine);
    if (world_rank() != 0) return 0;
    std::vector<std::optional<CellResult>> by_index(cells.size());
    int64_t ran = 0;
    for (const std::string& text : all) {
      for (size_t at = 0, end; (end = text.find(kRecordEnd, at)) != std::string::npos; at = end + 1) {
        const std::string record = text.substr(at, end - at);
        const size_t eol = record.find('\n');
        const size_t i = std::stoull(record.substr(0, record.find(' ')));
        if (i >= cells.size()) throw std::logic_error("sweep: a process reported cell " + std::to_string(i));
        by_index[i] = parse_cell_result(record.substr(eol + 1), cells[i]);
        if (!by_index[i]) throw std::logic_error("sweep: unreadable result of cell " + cells[i].id());
        ran += record[eol - 1] == '0';
      }
    }
    for (size_t i = 0; i < cells.size(); ++i) {
      if (!by_index[i]) throw std::logic_error("sweep: no process reported cell " + cells[i].id());
      report_.cells.push_back(*by_index[i]);
    }
    return ran;
  }

  static constexpr char kRecordEnd = '\x1e';  // ASCII record separator: never in a result file

  // The data options every run of the sweep shares, as `qatlab train`, `qat` and `ptq` would take them
  // from the sweep's: the dataset as resolved, its folder and limits; no normalisation or augmentation
  // given (a run takes its float model's).
  DataSettings run_data_settings() const {
    DataSettings d;
    d.dataset = data_.source;
    d.data_dir = d_.data_dir;
    d.train_limit = d_.train_limit;
    d.test_limit = d_.test_limit;
    return d;
  }

  // The float model of one seed: the given checkpoint, or trained (or resumed, or reused) under --out.
  FloatBaseline float_baseline(uint64_t seed) {
    FloatBaseline f;
    f.seed = seed;
    f.checkpoint = float_checkpoint_of(seed);
    if (s_.checkpoint.empty()) {
      const std::string dir = fs::path(f.checkpoint).parent_path().string();
      std::optional<Checkpoint> resumed;
      bool train = true;
      if (fs::exists(f.checkpoint)) {
        const Checkpoint c = load_checkpoint(f.checkpoint);
        if (c.model_name != model_.name || c.dataset != data_.test.name)
          throw UsageError(f.checkpoint + " holds a " + c.model_name + " on " + c.dataset + ", not " + model_.name +
                           " on " + data_.test.name + ": use another --out");
        const std::string trained_seed = ini_value(c.config_ini, "seed");
        if (trained_seed != std::to_string(seed))
          throw UsageError(f.checkpoint + " was trained with seed " + (trained_seed.empty() ? "?" : trained_seed) +
                           ", not " + std::to_string(seed) + ": use another --out");
        if (c.epoch > s_.float_epochs)
          throw UsageError(f.checkpoint + " holds " + std::to_string(c.epoch) + " epochs, more than --float-epochs " +
                           std::to_string(s_.float_epochs) + ": use another --out");
        train = c.epoch < s_.float_epochs;
        resumed = c;
      }
      if (train) {
        fs::create_directories(dir);
        std::printf("training the float %s of seed %llu (%lld epochs, log %s/log.txt)\n", model_.name.c_str(),
                    static_cast<unsigned long long>(seed), static_cast<long long>(s_.float_epochs), dir.c_str());
        std::fflush(stdout);
        ProcessLocalScope alone;  // trained by this process only, as in a single-process sweep
        train_float(seed, dir, resumed ? &*resumed : nullptr);
      }
    }
    const Checkpoint c = load_checkpoint(f.checkpoint);
    remember_float(f.checkpoint, c);
    const ModulePtr model = model_from_checkpoint(c);
    DataLoader test(data_.test, loader_options(data_, 256, 0, false));
    f.accuracy = evaluate(*model, test).accuracy;
    f.checkpoint_bytes = file_bytes(f.checkpoint);
    std::printf("float %s (seed %llu): test accuracy %.2f %%, %s\n", model_.name.c_str(),
                static_cast<unsigned long long>(seed), 100 * f.accuracy, f.checkpoint.c_str());
    return f;
  }

  // The float checkpoint of a seed's cells: the given one, or the one the sweep trains under --out.
  std::string float_checkpoint_of(uint64_t seed) const {
    if (!s_.checkpoint.empty()) return s_.checkpoint;
    return (fs::path(s_.out) / ("float-s" + std::to_string(seed)) / "checkpoint.h5").string();
  }

  // What the cells of a float model take from it.
  void remember_float(const std::string& path, const Checkpoint& c) {
    floats_[path] = {c.model_name, ini_value(c.config_ini, "augment"), data_record(c), c.spec};
  }

  // Trains (or, from `resumed`, continues) the float model of `seed` in `dir` as `qatlab train` would with
  // the sweep's model, seed, float epochs, threads and data (resumed: the run's own stored settings,
  // which must not have changed), its report in dir/log.txt.
  void train_float(uint64_t seed, const std::string& dir, const Checkpoint* resumed) {
    TrainOptions o;
    DataSettings d;
    if (resumed) {
      require(resumed->model_kind == "float", resumed->source + " is a '" + resumed->model_kind +
                                                  "' checkpoint: resume it with the command that made it");
      read_stored_train_options(*resumed, o, d);
      o.resume = resumed->source;
    } else {
      o.model = s_.model;
      o.train.seed = seed;
      o.out = dir;
    }
    o.train.epochs = s_.float_epochs;
    o.progress = "none";
    o.threads = s_.threads;
    // The sweep's data options win over stored ones where it gives them (as on a command line).
    const DataSettings given = run_data_settings();
    d.dataset = given.dataset;
    if (!given.data_dir.empty()) d.data_dir = given.data_dir;
    if (given.train_limit > 0) d.train_limit = given.train_limit;
    if (given.test_limit > 0) d.test_limit = given.test_limit;
    if (!d_.augment.empty()) d.augment = d_.augment;
    if (resumed) check_resume_changes(resumed->config_ini, train_options_ini(o) + data_settings_ini(d), resumed->epoch);
    o.train.grad_chunks = resolve_grad_chunks(o.train.grad_chunks, o.train.batch_size);
    const DataRecord record = resumed ? data_record(*resumed) : DataRecord{};
    const DataBundle data = load_data(d, /*with_train=*/true, &record);
    require(data.train.n > 0, "the training split of " + data.source + " is empty");
    d.dataset = data.source;  // as resolved: a resumed run finds it from any directory

    TrainRun run;
    run.description = resumed ? checkpoint_model_description(*resumed) : resolve_model(o.model);
    Rng rng(o.train.seed);
    run.model = build_model(run.description, data.spec, rng);
    run.settings = o.train;
    run.model_label = o.model;
    run.data = &data;
    if (resumed) {
      try {
        check_resumable(*resumed, run.description, o.train);
      } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
      }
      run.resume_from = resumed;
      run.out_dir = dir;
    } else {
      run.out_dir = choose_out_dir(o.out, o.overwrite, "");
    }
    run.config_ini = train_options_ini(o) + data_settings_ini(d);
    run.command_line = report_.command;
    const std::unique_ptr<std::FILE, FileCloser> log(std::fopen((dir + "/log.txt").c_str(), "a"));
    if (!log) throw std::runtime_error("cannot write " + dir + "/log.txt");
    run.log = log.get();
    train_model(run);
  }

  const FloatBaseline& base_of(const SweepCell& cell) const {
    for (const FloatBaseline& f : report_.floats)
      if (f.seed == cell.seed) return f;
    return report_.floats.front();
  }

  // The key of a cell with the sweep's settings, or (QAT cells) the same cell trained for `epochs` with
  // averaging from `swa_start` at `swa_lr` (0: none).
  std::string cell_key(const SweepCell& cell) const { return cell_key(cell, s_.qat_epochs, s_.qat_swa_start, s_.qat_swa_lr); }
  std::string cell_key(const SweepCell& cell, int64_t epochs, int64_t swa_start, float swa_lr) const {
    std::string key = cell.id() + " from " + base_of(cell).checkpoint + " policy " + s_.first_last;
    for (const std::string& o : s_.layer_bits) key += " layer-bits " + o;
    if (sweep_method_is_ptq(cell.method))
      key += " calib " + std::to_string(s_.calib_batches) + "x" + std::to_string(s_.batch_size);
    else
      key += " qat " + std::to_string(epochs) + " epochs lr " + num_str(s_.qat_lr) + " batch " +
             std::to_string(s_.batch_size);
    // (Only a weight decay other than the default's: cells finished before the option keep their key.)
    if (!sweep_method_is_ptq(cell.method) && s_.qat_weight_decay != SweepSettings{}.qat_weight_decay)
      key += " weight-decay " + num_str(s_.qat_weight_decay);
    if (!sweep_method_is_ptq(cell.method) && s_.qat_warmup_epochs > 0)
      key += " warmup " + std::to_string(s_.qat_warmup_epochs);
    if (!sweep_method_is_ptq(cell.method) && s_.qat_freeze_bn_after >= 0)
      key += " freeze-bn-after " + std::to_string(s_.qat_freeze_bn_after);
    if (!sweep_method_is_ptq(cell.method) && swa_start > 0)
      key += " swa-start " + std::to_string(swa_start) + " lr " + num_str(swa_lr);
    if (cell.method == "lsq" && !s_.lsq_init.empty()) key += " lsq-init " + s_.lsq_init;
    // (Only "layer": "channel" is what every lsq cell used before the option, and keeps their keys.)
    if (cell.method == "lsq" && s_.lsq_grad_scale == "layer") key += " lsq-grad-scale layer";
    if (cell.method == "lsq" && s_.lsq_step_bounds != 0) key += " lsq-step-bounds " + num_str(s_.lsq_step_bounds);
    if (!s_.weight_range.empty() && s_.weight_range != "narrow") key += " weight-range " + s_.weight_range;
    if (!sweep_method_is_ptq(cell.method) && s_.qat_distill > 0)
      key += " distill " + num_str(s_.qat_distill) + " T " + num_str(s_.qat_distill_temperature);
    if (!sweep_method_is_ptq(cell.method) && s_.qat_distill > 0)
      for (const std::string& t : s_.qat_teachers) key += " teacher " + t;
    if (!sweep_method_is_ptq(cell.method) && !d_.augment.empty()) key += " augment " + d_.augment;
    if (const auto start = starts_.find(cell.id()); start != starts_.end())
      key += " start " + start->second.checkpoint + " (" + start->second.key + ")";
    if (d_.train_limit > 0) key += " train-limit " + std::to_string(d_.train_limit);
    if (d_.test_limit > 0) key += " test-limit " + std::to_string(d_.test_limit);
    return key;
  }

  // The data options of a cell: the sweep's; a QAT cell trains with the sweep's --augment when given,
  // else with its float model's augmentation.
  DataSettings cell_data_settings(const SweepCell& cell) const {
    DataSettings d = run_data_settings();
    if (!sweep_method_is_ptq(cell.method))
      d.augment = d_.augment.empty() ? floats_.at(base_of(cell).checkpoint).augment : d_.augment;
    return d;
  }

  // The dataset of a cell, with its training split, normalised as its float model records.
  DataBundle cell_data(const SweepCell& cell) const {
    const FloatModel& base = floats_.at(base_of(cell).checkpoint);
    DataBundle data = load_data(cell_data_settings(cell), /*with_train=*/true, &base.record);
    if (sweep_method_is_ptq(cell.method))
      check_data_fits(data, base_of(cell).checkpoint, base.spec, base.record.class_names, /*allow_mismatch=*/false);
    else
      require(data.train.n > 0, "the training split of " + data.source + " is empty");
    return data;
  }

  SweepCellSettings cell_settings(const SweepCell& cell) const {
    SweepCellSettings c;
    c.cell = cell;
    c.float_checkpoint = base_of(cell).checkpoint;
    if (const auto start = starts_.find(cell.id()); start != starts_.end()) c.start_checkpoint = start->second.checkpoint;
    c.layer_bits = policy_;
    c.qat_epochs = s_.qat_epochs;
    c.qat_lr = s_.qat_lr;
    c.qat_weight_decay = s_.qat_weight_decay;
    c.qat_warmup_epochs = s_.qat_warmup_epochs;
    c.freeze_bn_after = sweep_method_is_ptq(cell.method) ? -1 : s_.qat_freeze_bn_after;
    if (!sweep_method_is_ptq(cell.method)) c.swa_start = s_.qat_swa_start, c.swa_lr = s_.qat_swa_lr;
    if (cell.method == "lsq" && !s_.lsq_init.empty()) c.lsq_init = parse_lsq_init(s_.lsq_init, "--lsq-init");
    if (cell.method == "lsq" && !s_.lsq_grad_scale.empty())
      c.lsq_grad_scale = parse_lsq_grad_scale(s_.lsq_grad_scale, "--lsq-grad-scale");
    if (cell.method == "lsq" && s_.lsq_step_bounds != 0) c.lsq_step_bounds = s_.lsq_step_bounds;
    if (!s_.weight_range.empty()) c.weight_range = parse_weight_range(s_.weight_range, "--weight-range");
    if (!sweep_method_is_ptq(cell.method)) c.augment = cell_data_settings(cell).augment;
    if (!sweep_method_is_ptq(cell.method) && s_.qat_distill > 0)
      c.distill_weight = s_.qat_distill, c.distill_temperature = s_.qat_distill_temperature, c.teachers = s_.qat_teachers,
      c.teacher_cache = s_.qat_teacher_cache;
    c.detect_anomaly = s_.detect_anomaly;
    c.batch_size = s_.batch_size;
    c.calib_batches = s_.calib_batches;
    c.dir = (fs::path(s_.out) / "cells" / cell.id()).string();
    c.key = cell_key(cell);
    // A finished cell of the same settings that ended where averaging starts: extended, not trained again.
    if (!sweep_method_is_ptq(cell.method) && s_.qat_swa_start > 0) c.extends_key = cell_key(cell, s_.qat_swa_start, 0, 0.0f);
    c.command_line = report_.command;
    c.config_ini = cell_settings_ini(c);
    return c;
  }

  // What a cell's checkpoint stores as its settings: those `qatlab ptq` or `qat --from` would store for
  // the same model (their options in their order, typed).
  std::string cell_settings_ini(const SweepCellSettings& c) const {
    const SweepQuantizers quantizers = sweep_quantizers(parse_sweep_method(c.cell.method));
    QatSettings q;
    q.wbits = c.cell.bits.wbits;
    q.abits = c.cell.bits.abits;
    q.per_channel = c.cell.granularity == "per-channel";
    q.observer = observer_kind_name(quantizers.activation_observer);
    q.weight_observer = observer_kind_name(quantizers.weight_observer);
    q.wquant = quantizer_method_name(quantizers.weight_method);
    q.aquant = quantizer_method_name(quantizers.activation_method);
    if (c.lsq_init) q.lsq_init = lsq_init_name(*c.lsq_init);
    if (c.lsq_grad_scale) q.lsq_grad_scale = lsq_grad_scale_name(*c.lsq_grad_scale);
    if (c.lsq_step_bounds) q.lsq_step_bounds = *c.lsq_step_bounds;
    if (c.weight_range != WeightRange::Narrow) q.weight_range = weight_range_name(c.weight_range);
    q.freeze_bn_after = c.freeze_bn_after;
    q.layer_bits = c.layer_bits;
    const DataSettings d = cell_data_settings(c.cell);
    if (sweep_method_is_ptq(c.cell.method)) {
      PtqOptions p;
      p.checkpoint = c.float_checkpoint;
      p.calib_batches = c.calib_batches;
      p.batch_size = c.batch_size;
      p.seed = c.cell.seed;
      p.out = c.dir;
      p.overwrite = true;
      p.threads = s_.threads;
      return ptq_settings_ini(p, q, d);
    }
    TrainOptions o;
    o.model = floats_.at(c.float_checkpoint).model_name;
    o.train = sweep_cell_train_settings(c);
    o.threads = s_.threads;
    o.out = c.dir;
    o.overwrite = true;
    o.progress = "none";
    if (c.distill_weight > 0) o.distill = c.teachers.empty() ? std::vector<std::string>{c.float_checkpoint} : c.teachers;
    o.teacher_cache = c.teacher_cache;
    o.detect_anomaly = c.detect_anomaly;
    SettingsIni from;
    from.add("from", c.start_checkpoint.empty() ? c.float_checkpoint : c.start_checkpoint);
    return qat_settings_ini(q) + from.text() + train_options_ini(o) + data_settings_ini(d);
  }

  void write_outputs() {
    report_.rows = summarize(report_.cells);
    write_sweep_outputs(report_, s_.out, s_.published);
  }

  const SweepSettings& s_;
  const DataSettings& d_;
  const DataBundle& data_;
  const ModelDescription model_;  // the network every cell quantizes
  std::vector<BitPair> pairs_;        // the grid (prepare)
  std::vector<std::string> methods_, grans_;
  std::vector<std::string> policy_;  // layer bits every cell keeps (the first-last policy)
  std::map<std::string, FloatModel> floats_;  // by checkpoint path
  std::map<std::string, StartCell> starts_;    // --qat-start: each QAT cell's start, by cell id
  SweepReport report_;
  std::chrono::steady_clock::time_point start_;
};

// --published FILE, read and checked before anything runs.
std::vector<PublishedFigures> read_published(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!fs::is_regular_file(path) || !in) throw UsageError("--published: cannot read " + path + " (a file of papers' figures)");
  std::ostringstream text;
  text << in.rdbuf();
  try {
    return parse_published_ini(text.str());
  } catch (const std::invalid_argument& e) {
    throw UsageError("--published " + path + ": " + e.what());
  }
}

// `--merge`: the finished sweeps in `list` (directories, comma-separated) joined into `out`.
int merge_sweeps(const std::string& list, const std::string& out, const std::vector<PublishedFigures>& published,
                 const std::string& command) {
  std::vector<std::pair<std::string, SweepReport>> parts;
  std::istringstream dirs(list);
  for (std::string dir; std::getline(dirs, dir, ',');) {
    if (dir.empty()) continue;
    const std::string path = (fs::path(dir) / "results.json").string();
    std::ifstream in(path);
    if (!in) throw UsageError("--merge: cannot read " + path + " (a finished sweep's directory?)");
    std::ostringstream text;
    text << in.rdbuf();
    try {
      parts.emplace_back(dir, parse_results_json(text.str()));
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(path + ": " + e.what());
    }
    std::error_code ec;
    if (fs::equivalent(dir, out, ec)) throw UsageError("--out " + out + " is one of the merged sweeps: choose another");
  }
  require(parts.size() >= 2, "--merge takes two or more sweep directories, comma-separated");
  if (fs::exists(fs::path(out) / "cells"))
    throw UsageError("--out " + out + " holds a sweep's own cells: merge into another directory");
  SweepReport merged;
  try {
    merged = merge_sweep_reports(parts, command);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  fs::create_directories(out);
  write_sweep_outputs(merged, out, published);
  std::printf("merged %zu sweeps (%zu cells, %zu rows) of %s on %s into %s: results.csv, results.json, table.md, "
              "accuracy_vs_*.svg\n",
              parts.size(), merged.cells.size(), merged.rows.size(), merged.model.c_str(), merged.dataset.c_str(),
              out.c_str());
  return 0;
}

}  // namespace

int cmd_sweep(int argc, char** argv) {
  SweepSettings s;
  DataSettings d;
  po::options_description desc("sweep options");
  desc.add_options()("checkpoint", po::value(&s.checkpoint),
                     "float checkpoint shared by every seed (also the first positional argument); "
                     "default: train one per seed")
      ("model", po::value(&s.model)->default_value(s.model), "model to train when no checkpoint is given")
      ("float-epochs", po::value(&s.float_epochs)->default_value(s.float_epochs), "epochs of each float model trained here")
      ("pairs", po::value(&s.pairs)->default_value(s.pairs), "W/A bit pairs, comma-separated")
      ("methods", po::value(&s.methods)->default_value(s.methods),
       "comma-separated: ptq-minmax, ptq-histogram, qat-minmax, lsq, pact")
      ("granularity", po::value(&s.granularity)->default_value(s.granularity),
       "weight quantization: per-tensor, per-channel, or both comma-separated")
      ("first-last", po::value(&s.first_last)->default_value(s.first_last),
       "8: first and last layer stay at 8 bits; same: every layer at W/A")
      ("layer-bits", po::value(&s.layer_bits)->composing(),
       "NAME=W:A kept by every cell, by dotted module name, layer type, residual-branches or residual-sums "
       "(repeatable; beats --first-last), e.g. residual-branches=:8")
      ("seeds", po::value(&s.seeds)->default_value(s.seeds), "seeds per cell (data order, calibration batches, float model)")
      ("seed", po::value(&s.first_seed)->default_value(s.first_seed), "the first seed")
      ("qat-epochs", po::value(&s.qat_epochs)->default_value(s.qat_epochs), "epochs of each QAT cell")
      ("qat-lr", po::value(&s.qat_lr)->default_value(s.qat_lr), "learning rate of each QAT cell (cosine schedule)")
      ("qat-weight-decay", po::value(&s.qat_weight_decay)->default_value(s.qat_weight_decay),
       "weight decay of each QAT cell (L2 on conv and linear weights; the papers lower it at low bits)")
      ("qat-warmup-epochs", po::value(&s.qat_warmup_epochs)->default_value(s.qat_warmup_epochs),
       "linear warm-up epochs of each QAT cell before its cosine schedule (0..--qat-epochs - 1)")
      ("qat-freeze-bn-after", po::value(&s.qat_freeze_bn_after)->default_value(s.qat_freeze_bn_after),
       "each QAT cell's batch norm uses its running statistics from this epoch on (0-based: 12 of 15 epochs freezes "
       "the last 3; -1 = never; qatlab qat --freeze-bn-after)")
      ("qat-swa-start", po::value(&s.qat_swa_start)->default_value(s.qat_swa_start),
       "> 0: each QAT cell's schedule ends after this many of its --qat-epochs; the rest train at --qat-swa-lr and "
       "their weights, averaged, are the cell's model (qatlab qat --swa-start; 0 = off). A cell already finished in "
       "--out with --qat-epochs equal to this and no averaging goes on from its checkpoint")
      ("qat-swa-lr", po::value(&s.qat_swa_lr)->default_value(s.qat_swa_lr), "--qat-swa-start: the constant learning rate")
      ("qat-start", po::value(&s.qat_start),
       "DIR: each QAT cell starts from the finished cell of the sweep in DIR with its method, granularity and seed "
       "(its latent weights and batch norm; quantizers afresh) instead of from the float model: progressive "
       "quantization, e.g. W2A2 cells from a sweep's W4A4 ones (qatlab qat --from a QAT checkpoint); distillation "
       "still from the float model")
      ("qat-distill", po::value(&s.qat_distill)->default_value(s.qat_distill),
       "> 0: each QAT cell distils from its float model with this weight in (0, 1] (qatlab qat --distill; 0 = off)")
      ("qat-distill-temperature", po::value(&s.qat_distill_temperature)->default_value(s.qat_distill_temperature),
       "--qat-distill: the temperature (> 0)")
      ("qat-teacher-cache", po::value(&s.qat_teacher_cache),
       "--qat-distill: the teachers' outputs for every crop and flip of every training image, computed ahead by "
       "`qatlab teacher-cache` (the float model, or the --qat-teacher networks): read instead of running them")
      ("detect-anomaly", po::bool_switch(&s.detect_anomaly),
       "QAT cells: every op checks its output and the gradients it passes back for NaN and infinity, and the first "
       "fails the cell naming the op, its layer and the batch (slower; qatlab qat --detect-anomaly)")
      ("qat-teacher", po::value(&s.qat_teachers)->composing(),
       "--qat-distill: the QAT cells' teacher is this float checkpoint instead of their float model; repeat it for an "
       "ensemble (logits averaged; qatlab qat --distill)")
      ("lsq-init", po::value(&s.lsq_init),
       "where the lsq cells' steps start: lsq (the paper's formula, the default) | minmax | mse (qatlab qat --help)")
      ("lsq-grad-scale", po::value(&s.lsq_grad_scale),
       "N of the lsq cells' step gradient scale: channel (the default) | layer (qatlab qat --help)")
      ("lsq-step-bounds", po::value(&s.lsq_step_bounds),
       "k >= 1: the lsq cells' weight steps stay within [min/max step / k, 15/8 largest |w|] per channel (qatlab qat --help)")
      ("weight-range", po::value(&s.weight_range),
       "every cell's weight codes below 8 bits: narrow (the default; [-1, 1] at 2 bits) | full ([-2, 1]) | mid-rise "
       "(odd codes {-3, -1, 1, 3} on half a level's distance) (qatlab qat --help)")
      ("batch-size", po::value(&s.batch_size)->default_value(s.batch_size), "images per QAT / calibration batch")
      ("calib-batches", po::value(&s.calib_batches)->default_value(s.calib_batches), "calibration batches of each PTQ cell")
      ("out", po::value(&s.out), "output directory (default runs/sweep-MODEL-DATASET); run again to resume")
      ("status", po::bool_switch(&s.status),
       "list each cell's state in --out (finished with its accuracies, training at epoch k, to run) and the QAT "
       "epochs left; trains, evaluates and writes nothing")
      ("merge", po::value<std::string>(),
       "DIR,DIR,...: join these finished sweeps of one model (their results.json) into --out; runs nothing")
      ("published", po::value<std::string>(),
       "FILE: papers' accuracies (INI, a [PAPER] section each: float = 91.6, 4/4 = 91.3, cite = ...): table.md "
       "shows the best learned rows beside them")
      ("threads", po::value(&s.threads)->default_value(0), "worker threads (0 = all cores)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("sweep", "[FLOAT_CHECKPOINT] [options]", desc, positional, argc, argv, vm)) return 0;
  std::string command = "qatlab";
  for (int i = 0; i < argc; ++i) command += std::string(" ") + argv[i];
  if (s.status && vm.count("published"))
    throw UsageError("--status writes nothing: --published does not apply");
  if (vm.count("published")) s.published = read_published(vm["published"].as<std::string>());
  if (vm.count("merge")) {
    for (const auto& [name, value] : vm)
      if (name != "merge" && name != "out" && name != "published" && !value.defaulted())
        throw UsageError("--merge joins finished sweeps and runs nothing: --" + name + " does not apply");
    require(!s.out.empty(), "--merge needs --out (the directory of the joined results)");
    return merge_sweeps(vm["merge"].as<std::string>(), s.out, s.published, command);
  }
  require(s.seeds >= 1 && s.seeds <= 100, "--seeds must be in 1..100, got " + std::to_string(s.seeds));
  require(s.float_epochs >= 1 && s.float_epochs <= kMaxEpochs,
          "--float-epochs must be in 1.." + std::to_string(kMaxEpochs) + ", got " + std::to_string(s.float_epochs));
  require(s.qat_epochs >= 1 && s.qat_epochs <= kMaxEpochs,
          "--qat-epochs must be in 1.." + std::to_string(kMaxEpochs) + ", got " + std::to_string(s.qat_epochs));
  require(s.qat_warmup_epochs >= 0 && s.qat_warmup_epochs < s.qat_epochs,
          "--qat-warmup-epochs must be below --qat-epochs (" + std::to_string(s.qat_epochs) +
              ": the cosine schedule anneals over the epochs after the warm-up), got " +
              std::to_string(s.qat_warmup_epochs));
  require(s.qat_freeze_bn_after >= -1 && s.qat_freeze_bn_after < s.qat_epochs,
          "--qat-freeze-bn-after must be an epoch in 0..--qat-epochs - 1 (" + std::to_string(s.qat_epochs - 1) +
              ") or -1 (never), got " + std::to_string(s.qat_freeze_bn_after));
  require(s.qat_swa_start >= 0 && s.qat_swa_start < s.qat_epochs,
          "--qat-swa-start must be in 0..--qat-epochs - 1 (" + std::to_string(s.qat_epochs - 1) + "), got " +
              std::to_string(s.qat_swa_start));
  require(s.qat_swa_start == 0 || (s.qat_swa_lr > 0 && std::isfinite(s.qat_swa_lr)),
          "--qat-swa-start needs --qat-swa-lr > 0, got " + num_str(s.qat_swa_lr));
  require(s.qat_swa_start > 0 || s.qat_swa_lr == 0, "--qat-swa-lr needs --qat-swa-start");
  require(s.qat_swa_start == 0 || s.qat_warmup_epochs < s.qat_swa_start,
          "--qat-warmup-epochs must end before --qat-swa-start");
  require(s.qat_lr > 0 && std::isfinite(s.qat_lr), "--qat-lr must be > 0, got " + num_str(s.qat_lr));
  require(s.qat_weight_decay >= 0 && std::isfinite(s.qat_weight_decay),
          "--qat-weight-decay must be >= 0, got " + num_str(s.qat_weight_decay));
  require(s.qat_distill >= 0 && s.qat_distill <= 1, "--qat-distill must be in [0, 1] (0 = off), got " + num_str(s.qat_distill));
  require(s.qat_distill_temperature > 0 && std::isfinite(s.qat_distill_temperature),
          "--qat-distill-temperature must be > 0, got " + num_str(s.qat_distill_temperature));
  require(s.qat_distill > 0 || s.qat_distill_temperature == 1.0f, "--qat-distill-temperature needs --qat-distill");
  require(s.qat_distill > 0 || s.qat_teachers.empty(), "--qat-teacher needs --qat-distill (the distillation's weight)");
  require(s.qat_distill > 0 || s.qat_teacher_cache.empty(), "--qat-teacher-cache needs --qat-distill (the distillation's weight)");
  for (const std::string& t : s.qat_teachers) {  // readable float models; their inputs are checked with the float model's
    const Checkpoint c = load_checkpoint(t);
    require(c.model_kind == "float", "--qat-teacher " + t + " is a '" + c.model_kind + "' checkpoint; the teacher is a float one");
  }
  require_batch_size("batch-size", s.batch_size);
  require(s.calib_batches >= 1 && s.calib_batches <= 100000,
          "--calib-batches must be in 1..100000, got " + std::to_string(s.calib_batches));
  require_seed("seed", s.first_seed);
  require(s.first_seed + static_cast<uint64_t>(s.seeds) <= static_cast<uint64_t>(INT64_MAX),
          "--seed + --seeds must stay below 2^63");
  require(s.first_last == "8" || s.first_last == "same", "--first-last must be 8 or same, got '" + s.first_last + "'");
  require_threads("threads", s.threads);
  try {  // the grid's own settings, before anything is trained
    parse_bit_pairs(s.pairs);
    const std::vector<std::string> methods = parse_name_list(s.methods, kSweepMethods, "method");
    const bool trains = s.checkpoint.empty() ||
                        std::any_of(methods.begin(), methods.end(), [](const std::string& m) { return !sweep_method_is_ptq(m); });
    if (s.qat_distill > 0 && std::all_of(methods.begin(), methods.end(), [](const std::string& m) { return sweep_method_is_ptq(m); }))
      throw std::invalid_argument("--qat-distill applies to QAT cells; this sweep has none");
    if (!d.augment.empty() && !trains)
      throw std::invalid_argument("--augment applies to the QAT cells and to the float models a sweep trains; this sweep "
                                  "has neither (PTQ cells from " + s.checkpoint + ")");
    parse_name_list(s.granularity, {"per-tensor", "per-channel"}, "granularity");
    if (!s.lsq_init.empty()) {
      parse_lsq_init(s.lsq_init, "--lsq-init");
      if (std::find(methods.begin(), methods.end(), "lsq") == methods.end())
        throw std::invalid_argument("--lsq-init " + s.lsq_init + " applies to lsq cells; this sweep has none");
    }
    if (!s.lsq_grad_scale.empty()) {
      parse_lsq_grad_scale(s.lsq_grad_scale, "--lsq-grad-scale");
      if (std::find(methods.begin(), methods.end(), "lsq") == methods.end())
        throw std::invalid_argument("--lsq-grad-scale " + s.lsq_grad_scale + " applies to lsq cells; this sweep has none");
    }
    if (s.lsq_step_bounds != 0) {
      if (!(std::isfinite(s.lsq_step_bounds) && s.lsq_step_bounds >= 1.0f))
        throw std::invalid_argument("--lsq-step-bounds " + num_str(s.lsq_step_bounds) + ": expected a finite k >= 1");
      if (std::find(methods.begin(), methods.end(), "lsq") == methods.end())
        throw std::invalid_argument("--lsq-step-bounds applies to lsq cells; this sweep has none");
    }
    if (!s.weight_range.empty()) parse_weight_range(s.weight_range, "--weight-range");
    if (!s.qat_start.empty()) {
      if (std::all_of(methods.begin(), methods.end(), [](const std::string& m) { return sweep_method_is_ptq(m); }))
        throw std::invalid_argument("--qat-start applies to QAT cells; this sweep has none");
      if (!s.out.empty() && fs::weakly_canonical(s.qat_start) == fs::weakly_canonical(s.out))
        throw std::invalid_argument("--qat-start " + s.qat_start + " is --out: cells start from another sweep's");
    }
    QConfig::from_options(8, 8, true, "minmax", "ema", s.layer_bits);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  ModelDescription model;  // the network: the checkpoint's, or --model's
  DataRecord record;
  if (!s.checkpoint.empty()) {
    const Checkpoint base = load_checkpoint(s.checkpoint);
    require(base.model_kind == "float", s.checkpoint + " is a '" + base.model_kind + "' checkpoint; sweep takes a float one");
    model = checkpoint_model_description(base);
    record = data_record(base);
    use_model_dataset(d, vm["dataset"].defaulted(), record);
  } else {
    try {
      model = resolve_model(s.model);
    } catch (const ModelDescriptionError&) {
      throw;
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
  }
  apply_threads(s.threads);
  const DataBundle data = load_data(d, /*with_train=*/false, &record);
  if (s.out.empty()) s.out = "runs/sweep-" + model.name + "-" + data.label;

  Sweep sweep(s, d, data, model, command);
  return s.status ? sweep.status() : sweep.run();
}

}  // namespace qatlab
