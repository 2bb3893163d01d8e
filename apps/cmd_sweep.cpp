// cmd_sweep.cpp: `qatlab sweep`: the accuracy-vs-bitwidth study in one command. For every method x
// granularity x W/A pair x seed it makes a quantized model (by `ptq` or `qat`, run in this process),
// converts it to an integer graph, evaluates simulation and integer graph, and writes the study's CSV,
// JSON and plots after every cell. An interrupted sweep run again skips the cells it finished. Under
// `mpirun -np N`, process 0 trains the missing float models, then every process takes the next cell
// from a shared counter and runs it alone; process 0 writes the study's files from every cell's result.
//
// Layout of --out:
//   float-s<seed>/          the float model of each seed (trained here unless a checkpoint is given)
//   cells/<cell id>/        checkpoint.h5, model.int8.h5, log.txt (the cell's command output), result.ini
//   results.csv, results.json, cells.csv, accuracy_vs_bits.svg, accuracy_vs_wbits.svg
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "apps/commands.h"
#include "apps/integer_eval.h"
#include "apps/qat_options.h"
#include "apps/sweep.h"
#include "apps/train_loop.h"
#include "core/atomic_file.h"
#include "core/distributed.h"
#include "nn/checkpoint.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "quant/qat/convert.h"

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
  int64_t seeds = 2;
  uint64_t first_seed = 1;
  int64_t qat_epochs = 2;
  float qat_lr = 0.01f;
  int64_t batch_size = 64;
  int64_t calib_batches = 32;
  int threads = 0;
  std::string out;
};

// Runs a subcommand in this process, as if typed after `qatlab`; its standard output goes to `log`.
// The commands report failure by throwing; a non-zero return (e.g. after --help) is an error too.
void run_subcommand(int (*command)(int, char**), std::vector<std::string> args, const std::string& log) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::fflush(stdout);
  std::cout.flush();
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + log);
  const int saved = ::dup(STDOUT_FILENO);
  ::dup2(fd, STDOUT_FILENO);
  ::close(fd);
  const auto restore = [&] {
    std::fflush(stdout);
    std::cout.flush();
    ::dup2(saved, STDOUT_FILENO);
    ::close(saved);
  };
  int rc = 0;
  try {
    rc = command(static_cast<int>(args.size()), argv.data());
  } catch (...) {
    restore();
    throw;
  }
  restore();
  if (rc != 0) throw std::runtime_error(args.front() + " exited with " + std::to_string(rc) + " (see " + log + ")");
}

// The names of the first and the last weight layer of a model, in execution (registration) order.
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

int64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const auto n = fs::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// The test accuracy of a float checkpoint's model.
double float_accuracy(const std::string& path, const DataBundle& data) {
  const ModulePtr model = model_from_checkpoint(load_checkpoint(path));
  model->eval();
  DataLoader test(data.test, loader_options(data, 256, 0, false));
  return evaluate(*model, test).accuracy;
}

class Sweep {
 public:
  Sweep(const SweepSettings& s, const DataSettings& d, const DataBundle& data, ModelDescription model, std::string command)
      : s_(s), d_(d), data_(data), model_(std::move(model)) {
    report_.command = std::move(command);
  }

  int run() {
    const std::vector<BitPair> pairs = parse_bit_pairs(s_.pairs);
    const std::vector<std::string> methods = parse_name_list(s_.methods, kSweepMethods, "method");
    const std::vector<std::string> grans = parse_name_list(s_.granularity, {"per-tensor", "per-channel"}, "granularity");
    fs::create_directories(fs::path(s_.out) / "cells");

    report_.model = model_.name;
    report_.dataset = data_.test.name;
    const auto [first, last] = first_and_last_layers(model_, data_.spec);
    if (s_.first_last == "8") {
      policy_args_ = {"--layer-bits", first + "=8:8", "--layer-bits", last + "=8:8"};
      report_.policy = "first and last layer 8-bit";
    } else {
      report_.policy = "every layer at W/A";
    }

    // Under mpirun process 0 trains the float models that are missing, alone; the others then find them.
    agree_on_rank0([&] {
      for (int64_t i = 0; i < s_.seeds; ++i) report_.floats.push_back(float_baseline(s_.first_seed + i));
      return std::string();
    });
    if (world_rank() != 0)
      for (int64_t i = 0; i < s_.seeds; ++i) report_.floats.push_back(float_baseline(s_.first_seed + i));
    if (!s_.checkpoint.empty()) report_.floats.resize(1);  // one shared model

    std::vector<SweepCell> cells;
    for (const BitPair& bits : pairs)
      for (const std::string& method : methods)
        for (const std::string& gran : grans)
          for (int64_t i = 0; i < s_.seeds; ++i) cells.push_back({method, gran, bits, s_.first_seed + i});
    std::printf("sweep %s on %s: %zu cells (%zu W/A pairs x %zu methods x %zu granularities x %lld seeds), %s -> %s\n",
                model_.name.c_str(), report_.dataset.c_str(), cells.size(), pairs.size(), methods.size(), grans.size(),
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
                "accuracy_vs_bits.svg\n",
                static_cast<long long>(ran), static_cast<long long>(cells.size() - ran), static_cast<long long>(failed),
                s_.out.c_str());
    return 0;
  }

 private:
  // A cell's result: the one a finished run left in its directory when its settings are the same, else
  // the cell run now (by this process alone).
  CellResult result_of(const SweepCell& cell, bool* reused) {
    const std::string dir = (fs::path(s_.out) / "cells" / cell.id()).string();
    const std::string key = cell_key(cell);
    std::optional<CellResult> r = read_cell_result(dir + "/result.ini", cell);
    *reused = r && r->key == key;
    if (*reused) return *r;
    ProcessLocalScope alone;
    return run_cell(cell, dir, key);
  }

  void print_cell(size_t i, size_t n, const CellResult& r, bool reused) const {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::printf("[%zu/%zu] %-34s ", i + 1, n, r.cell.id().c_str());
    if (r.ok)
      std::printf("sim %6.2f %%  int %6.2f %%  top-1 agree %6.2f %%  %7lld B", 100 * r.sim_accuracy,
                  100 * r.int_accuracy, 100 * r.top1_agreement, static_cast<long long>(r.int_file_bytes));
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

  std::vector<std::string> common_args() const {
    std::vector<std::string> a = {"--threads", std::to_string(s_.threads), "--dataset", data_.source};
    if (!d_.data_dir.empty()) a.insert(a.end(), {"--data-dir", d_.data_dir});
    if (d_.train_limit > 0) a.insert(a.end(), {"--train-limit", std::to_string(d_.train_limit)});
    if (d_.test_limit > 0) a.insert(a.end(), {"--test-limit", std::to_string(d_.test_limit)});
    return a;
  }

  // The float model of one seed: the given checkpoint, or trained (or resumed, or reused) under --out.
  FloatBaseline float_baseline(uint64_t seed) {
    FloatBaseline f;
    f.seed = seed;
    if (!s_.checkpoint.empty()) {
      f.checkpoint = s_.checkpoint;
    } else {
      const std::string dir = (fs::path(s_.out) / ("float-s" + std::to_string(seed))).string();
      f.checkpoint = dir + "/checkpoint.h5";
      std::vector<std::string> args = {"train"};
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
        args.insert(args.end(), {"--resume", f.checkpoint, "--epochs", std::to_string(s_.float_epochs)});
      } else {
        args.insert(args.end(), {"--model", s_.model, "--epochs", std::to_string(s_.float_epochs), "--seed",
                                 std::to_string(seed), "--out", dir});
      }
      if (train) {
        fs::create_directories(dir);
        std::printf("training the float %s of seed %llu (%lld epochs, log %s/log.txt)\n", model_.name.c_str(),
                    static_cast<unsigned long long>(seed), static_cast<long long>(s_.float_epochs), dir.c_str());
        std::fflush(stdout);
        args.insert(args.end(), {"--progress", "none"});
        const auto common = common_args();
        args.insert(args.end(), common.begin(), common.end());
        ProcessLocalScope alone;  // trained by this process only, as in a single-process sweep
        run_subcommand(cmd_train, args, dir + "/log.txt");
      }
    }
    f.accuracy = float_accuracy(f.checkpoint, data_);
    f.checkpoint_bytes = file_bytes(f.checkpoint);
    std::printf("float %s (seed %llu): test accuracy %.2f %%, %s\n", model_.name.c_str(),
                static_cast<unsigned long long>(seed), 100 * f.accuracy, f.checkpoint.c_str());
    return f;
  }

  const FloatBaseline& base_of(const SweepCell& cell) const {
    for (const FloatBaseline& f : report_.floats)
      if (f.seed == cell.seed) return f;
    return report_.floats.front();
  }

  std::string cell_key(const SweepCell& cell) const {
    std::string key = cell.id() + " from " + base_of(cell).checkpoint + " policy " + s_.first_last;
    if (sweep_method_is_ptq(cell.method))
      key += " calib " + std::to_string(s_.calib_batches) + "x" + std::to_string(s_.batch_size);
    else
      key += " qat " + std::to_string(s_.qat_epochs) + " epochs lr " + num_str(s_.qat_lr) + " batch " +
             std::to_string(s_.batch_size);
    if (d_.train_limit > 0) key += " train-limit " + std::to_string(d_.train_limit);
    if (d_.test_limit > 0) key += " test-limit " + std::to_string(d_.test_limit);
    return key;
  }

  // The quantized model of one cell, made by `ptq` or `qat` into `dir`.
  void make_quantized_model(const SweepCell& cell, const std::string& dir) {
    const std::string& m = cell.method;
    std::vector<std::string> args;
    if (sweep_method_is_ptq(m)) {
      args = {"ptq", base_of(cell).checkpoint, "--calib-batches", std::to_string(s_.calib_batches), "--batch-size",
              std::to_string(s_.batch_size), "--observer", m == "ptq-histogram" ? "histogram" : "minmax"};
    } else {
      args = {"qat", "--from", base_of(cell).checkpoint, "--epochs", std::to_string(s_.qat_epochs), "--lr",
              num_str(s_.qat_lr), "--batch-size", std::to_string(s_.batch_size), "--progress", "none"};
      if (m == "qat-minmax") args.insert(args.end(), {"--observer", "ema"});
      if (m == "lsq") args.insert(args.end(), {"--wquant", "lsq", "--aquant", "lsq"});
      if (m == "pact") args.insert(args.end(), {"--aquant", "pact"});
    }
    args.insert(args.end(), {"--wbits", std::to_string(cell.bits.wbits), "--abits", std::to_string(cell.bits.abits),
                             "--per-channel", cell.granularity == "per-channel" ? "1" : "0", "--weight-observer",
                             "minmax", "--seed", std::to_string(cell.seed), "--out", dir, "--overwrite"});
    args.insert(args.end(), policy_args_.begin(), policy_args_.end());
    const auto common = common_args();
    args.insert(args.end(), common.begin(), common.end());
    run_subcommand(sweep_method_is_ptq(m) ? cmd_ptq : cmd_qat, args, dir + "/log.txt");
  }

  CellResult run_cell(const SweepCell& cell, const std::string& dir, const std::string& key) {
    const auto start = std::chrono::steady_clock::now();
    CellResult r;
    r.cell = cell;
    r.key = key;
    fs::remove_all(dir);  // whatever an interrupted attempt left
    fs::create_directories(dir);
    try {
      make_quantized_model(cell, dir);
      const Checkpoint ckpt = load_checkpoint(dir + "/checkpoint.h5");
      const auto model = std::dynamic_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt));
      if (!model) throw std::runtime_error(dir + "/checkpoint.h5 does not hold a QAT model");
      model->eval();
      DataLoader test(data_.test, loader_options(data_, 256, 0, false));
      r.sim_accuracy = evaluate(*model, test).accuracy;
      Int8Graph graph = convert(*model, {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width});
      set_checkpoint_pixel_table(graph, ckpt);  // as `convert` writes it
      graph.save(dir + "/model.int8.h5");
      r.int_file_bytes = file_bytes(dir + "/model.int8.h5");
      EvalResult integer;
      Agreement agree;
      DataLoader test2(data_.test, integer_loader_options(graph, data_, 256));
      run_integer(graph, best_kernel_path(), test2, model.get(), integer, agree);
      r.int_accuracy = integer.accuracy;
      r.top1_agreement = agree.images > 0 ? static_cast<double>(agree.same_top1) / agree.images : 0.0;
      r.ok = true;
    } catch (const std::exception& e) {
      r.ok = false;
      r.error = e.what();
      r.error = r.error.substr(0, r.error.find('\n'));
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    atomic_write_text(dir + "/result.ini", cell_result_ini(r));
    return r;
  }

  void write_outputs() {
    report_.rows = summarize(report_.cells);
    const fs::path out(s_.out);
    atomic_write_text((out / "cells.csv").string(), cells_csv(report_));
    atomic_write_text((out / "results.csv").string(), results_csv(report_));
    atomic_write_text((out / "results.json").string(), results_json(report_));
    for (const bool equal : {true, false}) {
      const std::string svg = accuracy_plot_svg(report_, equal);
      if (!svg.empty())
        atomic_write_text((out / (equal ? "accuracy_vs_bits.svg" : "accuracy_vs_wbits.svg")).string(), svg);
    }
  }

  const SweepSettings& s_;
  const DataSettings& d_;
  const DataBundle& data_;
  const ModelDescription model_;  // the network every cell quantizes
  std::vector<std::string> policy_args_;
  SweepReport report_;
  std::chrono::steady_clock::time_point start_;
};

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
      ("seeds", po::value(&s.seeds)->default_value(s.seeds), "seeds per cell (data order, calibration batches, float model)")
      ("seed", po::value(&s.first_seed)->default_value(s.first_seed), "the first seed")
      ("qat-epochs", po::value(&s.qat_epochs)->default_value(s.qat_epochs), "epochs of each QAT cell")
      ("qat-lr", po::value(&s.qat_lr)->default_value(s.qat_lr), "learning rate of each QAT cell (cosine schedule)")
      ("batch-size", po::value(&s.batch_size)->default_value(s.batch_size), "images per QAT / calibration batch")
      ("calib-batches", po::value(&s.calib_batches)->default_value(s.calib_batches), "calibration batches of each PTQ cell")
      ("out", po::value(&s.out), "output directory (default runs/sweep-MODEL-DATASET); run again to resume")
      ("threads", po::value(&s.threads)->default_value(0), "worker threads (0 = all cores)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("sweep", "[FLOAT_CHECKPOINT] [options]", desc, positional, argc, argv, vm)) return 0;
  require(s.seeds >= 1 && s.seeds <= 100, "--seeds must be in 1..100, got " + std::to_string(s.seeds));
  require(s.float_epochs >= 1 && s.float_epochs <= kMaxEpochs,
          "--float-epochs must be in 1.." + std::to_string(kMaxEpochs) + ", got " + std::to_string(s.float_epochs));
  require(s.qat_epochs >= 1 && s.qat_epochs <= kMaxEpochs,
          "--qat-epochs must be in 1.." + std::to_string(kMaxEpochs) + ", got " + std::to_string(s.qat_epochs));
  require(s.qat_lr > 0 && std::isfinite(s.qat_lr), "--qat-lr must be > 0, got " + num_str(s.qat_lr));
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
    parse_name_list(s.methods, kSweepMethods, "method");
    parse_name_list(s.granularity, {"per-tensor", "per-channel"}, "granularity");
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

  std::string command = "qatlab";
  for (int i = 0; i < argc; ++i) command += std::string(" ") + argv[i];
  Sweep sweep(s, d, data, model, command);
  return sweep.run();
}

}  // namespace qatlab
