// train_command.cpp: the shared body of `train` and `qat`.
#include "apps/train_command.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <vector>
#include <sstream>

#include "core/distributed.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

// The settings a resumed run takes from its checkpoint: all but those about this invocation.
std::string resumable_settings(const std::string& ini) {
  std::istringstream in(ini);
  std::string line, out;
  while (std::getline(in, line)) {
    const std::string key = line.substr(0, line.find(" = "));
    if (key == "resume" || key == "stop-after" || key == "overwrite" || key == "progress" || key == "threads" ||
        key == "out")
      continue;
    out += line + "\n";
  }
  return out;
}

// Settings as key -> values (a repeatable option has several).
std::map<std::string, std::vector<std::string>> settings_map(const std::string& ini) {
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream in(ini);
  std::string line;
  while (std::getline(in, line)) {
    const size_t eq = line.find(" = ");
    if (eq != std::string::npos) out[line.substr(0, eq)].push_back(line.substr(eq + 3));
  }
  return out;
}

// A resumed run must continue the run it resumes: only settings about this invocation may change.
void check_resume_changes(const std::string& saved, const std::string& now) {
  static const std::set<std::string> kMayChange = {"epochs", "threads", "progress", "stop-after", "out", "overwrite",
                                                   "resume", "data-dir"};
  const auto before = settings_map(saved), after = settings_map(now);
  for (const auto& [key, values] : before) {
    if (kMayChange.count(key)) continue;
    const auto it = after.find(key);
    if (it == after.end() || it->second != values)
      throw UsageError("--" + key + " cannot change when resuming (the run was made with " + key + " = " +
                       values.front() + "); only --epochs, --threads, --progress, --stop-after, --out and --data-dir can");
  }
}

// The settings a checkpoint stores must pass the checks the command line does, on their own: a bad
// one is the file's fault, reported as such rather than as a usage error naming an option.
void check_stored_settings(const std::string& path, const std::string& ini) {
  TrainSettings s;
  DataSettings d;
  po::options_description desc;
  add_train_options(desc, s);
  add_data_options(desc, d);
  po::variables_map vm;
  try {
    std::istringstream in(ini);
    po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/true), vm);
    po::notify(vm);
    validate_train_settings(s, /*check_model=*/false);  // the checkpoint holds its network
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + stored_setting_error(e.what()));
  }
}

// `ini` with its "key = ..." line holding `value` (added when absent).
std::string with_setting(const std::string& ini, const std::string& key, const std::string& value) {
  std::istringstream in(ini);
  std::string line, out;
  bool found = false;
  while (std::getline(in, line)) {
    const bool match = line.rfind(key + " = ", 0) == 0;
    found = found || match;
    out += (match ? key + " = " + value : line) + "\n";
  }
  return found ? out : out + key + " = " + value + "\n";
}

std::string join_args(const std::string& name, int argc, char** argv) {
  std::string s = "qatlab";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + (i == 0 ? name.c_str() : argv[i]);
  return s;
}

void print_results(const TrainJob& job, const TrainSettings& s, const TrainOutcome& outcome, double seconds) {
  const MetricsRow last = outcome.history.empty() ? MetricsRow{} : outcome.history.back();
  const auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  std::printf("\nresults %s\n", outcome.stopped_early ? "(stopped early: continue with --resume)" : "");
  std::printf("  %-14s %s (%lld parameters)\n", "model", s.model.c_str(),
              static_cast<long long>(job.model->parameter_count()));
  std::printf("  %-14s %s (%lld train / %lld test images)\n", "dataset", job.data->test.name.c_str(),
              static_cast<long long>(job.data->train.n), static_cast<long long>(job.data->test.n));
  std::printf("  %-14s %lld of %lld (this run: %s)\n", "epochs", static_cast<long long>(outcome.history.size()),
              static_cast<long long>(s.epochs), format_duration(seconds).c_str());
  std::printf("  %-14s %.2f %%\n", "test accuracy", 100.0 * get("test_acc"));
  std::printf("  %-14s %.4f\n", "test loss", get("test_loss"));
  std::printf("  %-14s %.0f img/s (batch %lld, %d threads, last epoch)\n", "throughput", get("train_img_per_s"),
              static_cast<long long>(s.batch_size), omp_get_max_threads());
  std::printf("  %-14s %s\n", "checkpoint", (fs::path(job.out_dir) / "checkpoint.h5").c_str());
  std::printf("  %-14s %s, %s\n", "metrics", (fs::path(job.out_dir) / "metrics.csv").c_str(),
              (fs::path(job.out_dir) / "summary.json").c_str());
}

}  // namespace

TrainCommand::TrainCommand(const std::string& name, const std::string& kind)
    : name_(name), kind_(kind), desc_(name + " options") {}

bool TrainCommand::parse(int argc, char** argv) {
  add_train_options(desc_, s_);
  add_data_options(desc_, d_);
  std::string fallback = defaults_ini_;
  resume_path_ = prescan_option(argc, argv, "resume");
  if (!resume_path_.empty()) {
    resumed_ = load_checkpoint(resume_path_);
    require(resumed_.model_kind == kind_, resume_path_ + " is a '" + resumed_.model_kind +
                                              "' checkpoint: resume it with the command that made it");
    fallback = resumable_settings(resumed_.config_ini) + defaults_ini_;
    check_stored_settings(resume_path_, resumable_settings(resumed_.config_ini));
  }
  if (!parse_command(name_, "[options]", desc_, {}, argc, argv, vm_, fallback, resume_path_)) return false;
  require(resume_path_.empty() == s_.resume.empty(),
          "--resume must be given on the command line (a config file cannot name the run to resume)");
  if (resuming()) check_resume_changes(resumed_.config_ini, settings_ini(vm_, desc_));
  validate_train_settings(s_, /*check_model=*/!resuming() && !(base_model_ && s_.model == base_model_->name));
  s_.grad_chunks = resolve_grad_chunks(s_.grad_chunks, s_.batch_size);
  apply_threads(s_.threads);
  command_line_ = join_args(name_, argc, argv);
  if (resuming()) model_data_ = data_record(resumed_);
  data_ = load_data(d_, /*with_train=*/true, &model_data_);
  require(data_.train.n > 0, "the training split of " + data_.source + " is empty");
  return true;
}

ModelDescription TrainCommand::model_description() const {
  if (resuming()) return checkpoint_model_description(resumed_);
  if (base_model_ && s_.model == base_model_->name) return *base_model_;
  return resolve_model(s_.model);
}

int TrainCommand::run(const ModulePtr& model, const ModelDescription& description, std::function<void(int64_t)> on_epoch_start,
                      std::function<Tensor()> extra_loss) {
  const std::string& model_name = description.name;
  const std::vector<ParamRef> params = param_refs(*model, s_.decay_bn_and_bias);
  OptimizerConfig oc;
  oc.lr = s_.lr;
  oc.momentum = s_.momentum;
  oc.nesterov = s_.nesterov;
  oc.weight_decay = s_.weight_decay;
  std::unique_ptr<Optimizer> optimizer = make_optimizer(s_.optimizer, params, oc);
  LrSchedule schedule = parse_schedule(s_.schedule, s_.lr, s_.milestones);
  schedule.step_epochs = s_.step_epochs;
  schedule.gamma = s_.gamma;
  schedule.warmup_epochs = s_.warmup_epochs;
  validate_schedule(schedule);

  TrainJob job;
  job.model = model;
  job.optimizer = optimizer.get();
  job.schedule = schedule;
  job.data = &data_;
  job.command_line = command_line_;
  // The dataset as resolved (kind and absolute path): a resumed run finds it from any directory.
  // The chunk count as resolved: a resumed run keeps it whatever its process count.
  job.config_ini = with_setting(with_setting(settings_ini(vm_, desc_), "dataset", data_.source), "grad-chunks",
                                std::to_string(s_.grad_chunks));
  job.on_epoch_start = std::move(on_epoch_start);
  job.extra_loss = std::move(extra_loss);
  if (resuming()) {
    require(resumed_.model_name == model_name, resume_path_ + " holds a " + resumed_.model_name + " model, not " + model_name);
    require(resumed_.model_description.empty() || resumed_.model_description == description.text,
            resume_path_ + " holds another network than " + description.source + " describes");
    model->load_state_dict(std::map<std::string, Tensor>(resumed_.model_state.begin(), resumed_.model_state.end()));
    require(resumed_.optimizer_kind == optimizer->kind(),
            resume_path_ + " was trained with " + resumed_.optimizer_kind + ", not " + optimizer->kind());
    optimizer->load_state(resumed_.optimizer_state);
    job.resume_from = resumed_;
    job.resuming = true;
    job.out_dir = s_.out.empty() ? fs::path(resume_path_).parent_path().string() : s_.out;
    if (job.out_dir.empty()) job.out_dir = ".";
  } else {
    const std::string stem = model_name + "-" + (kind_ == "float" ? "" : kind_ + "-") + data_.label;
    // Process 0 alone writes there: it chooses.
    job.out_dir = agree_on_rank0([&] { return choose_out_dir(s_.out, s_.overwrite, stem); });
  }
  const ModelSpec spec = data_.spec;
  const std::string kind = kind_;
  const std::string model_text = description.text;
  const std::string qconfig = qconfig_data_;
  job.checkpoint_base = [spec, model_name, model_text, qconfig, kind] {
    Checkpoint c;
    c.model_name = model_name;
    c.model_description = model_text;
    c.qconfig = qconfig;
    c.model_kind = kind;
    c.spec = spec;
    return c;
  };
  if (data_.norm_origin != "the model's" && !data_.source.empty() && data_.source.find(':') != std::string::npos)
    std::printf("normalisation (%s): mean %s, std %s\n", data_.norm_origin.c_str(), floats_text(data_.mean).c_str(),
                floats_text(data_.std).c_str());

  std::printf("%s %s on %s: %lld train / %lld test images, %lld epochs, batch %lld, %s lr %g (%s), %d threads -> %s\n",
              name_.c_str(), model_name.c_str(), data_.source.c_str(), static_cast<long long>(data_.train.n),
              static_cast<long long>(data_.test.n), static_cast<long long>(s_.epochs),
              static_cast<long long>(s_.batch_size), s_.optimizer.c_str(), s_.lr, s_.schedule.c_str(),
              omp_get_max_threads(), job.out_dir.c_str());
  if (world_size() > 1 || s_.grad_chunks > 1)
    std::printf("%d processes x %d threads, each batch in %lld chunks (gradients summed in chunk order)\n", world_size(),
                omp_get_max_threads(), static_cast<long long>(s_.grad_chunks));
  if (job.resuming)
    std::printf("resuming after epoch %lld from %s\n", static_cast<long long>(resumed_.epoch), resume_path_.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  const TrainOutcome outcome = run_training(job, s_);
  print_results(job, s_, outcome, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace qatlab
