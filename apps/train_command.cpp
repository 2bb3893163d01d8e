// train_command.cpp: what `train` and `qat` share: parsing, resuming, the run made from the options.
#include "apps/train_command.h"

#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <vector>

#include "core/distributed.h"
#include "core/format.h"
#include "nn/train/teacher.h"
#include "nn/train/teacher_cache.h"

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
        key == "out" || key == "teacher-cache")
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

}  // namespace

void check_resume_changes(const std::string& saved, const std::string& now, int64_t epochs_done) {
  static const std::set<std::string> kMayChange = {"epochs",   "threads",  "progress", "stop-after",
                                                   "out",      "overwrite", "resume",  "data-dir",
                                                   "swa-start", "swa-lr",  "teacher-cache"};
  const auto before = settings_map(saved), after = settings_map(now);
  for (const auto& [key, values] : before) {
    if (kMayChange.count(key)) continue;
    const auto it = after.find(key);
    if (it == after.end() || it->second != values)
      throw UsageError("--" + key + " cannot change when resuming (the run was made with " + key + " = " +
                       values.front() + "); only --epochs, --threads, --progress, --stop-after, --out and --data-dir can, "
                       "and --swa-start and --swa-lr before any epoch is averaged");
  }
  // Weight averaging may be added, moved or dropped only where the run so far stays what it was: no epoch
  // averaged yet, and the schedule over the epochs done unchanged (it spans --swa-start epochs, or all of
  // them without averaging). Files written before averaging existed lack its keys: 0, off.
  const auto value = [](const std::map<std::string, std::vector<std::string>>& m, const std::string& key,
                        const std::string& otherwise) {
    const auto it = m.find(key);
    return it == m.end() ? otherwise : it->second.front();
  };
  const std::string start_before = value(before, "swa-start", "0"), start_now = value(after, "swa-start", "0");
  if (start_before == start_now && value(before, "swa-lr", "0") == value(after, "swa-lr", "0")) return;
  const auto number = [](const std::string& text) {
    try {
      return std::stoll(text);
    } catch (const std::exception&) {
      throw UsageError("stored setting '" + text + "' is not a whole number");
    }
  };
  const int64_t swa_before = number(start_before), swa_now = number(start_now);
  const int64_t span_before = swa_before > 0 ? swa_before : number(value(before, "epochs", "0"));
  const int64_t span_now = swa_now > 0 ? swa_now : number(value(after, "epochs", "0"));
  if ((swa_before > 0 && epochs_done > swa_before) || (swa_now > 0 && epochs_done > swa_now))
    throw UsageError("--swa-start and --swa-lr cannot change when resuming after epoch " + std::to_string(epochs_done) +
                     ": the run has averaged weights, or would have by then");
  if (span_before != span_now)
    throw UsageError("--swa-start " + std::to_string(swa_now) + " would change the schedule of the epochs done (it spans " +
                     std::to_string(span_before) + " epochs in this run): pass --swa-start " +
                     std::to_string(span_before) + " (and --epochs beyond it)");
}

void read_stored_train_options(const Checkpoint& ckpt, TrainOptions& o, DataSettings& d) {
  po::options_description desc;
  add_train_options(desc, o);
  add_data_options(desc, d);
  po::variables_map vm;
  try {
    std::istringstream in(resumable_settings(ckpt.config_ini));
    po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/true), vm);
    po::notify(vm);
    validate_train_options(o, /*check_model=*/false);  // the checkpoint holds its network
  } catch (const std::exception& e) {
    throw std::runtime_error(ckpt.source + ": " + stored_setting_error(e.what()));
  }
}

TrainCommand::TrainCommand(const std::string& name, const std::string& kind)
    : name_(name), kind_(kind), desc_(name + " options") {}

bool TrainCommand::parse(int argc, char** argv) {
  add_train_options(desc_, o_);
  add_data_options(desc_, d_);
  std::string fallback = defaults_ini_;
  resume_path_ = prescan_option(argc, argv, "resume");
  if (!resume_path_.empty()) {
    resumed_ = load_checkpoint(resume_path_);
    require(resumed_.model_kind == kind_, resume_path_ + " is a '" + resumed_.model_kind +
                                              "' checkpoint: resume it with the command that made it");
    fallback = resumable_settings(resumed_.config_ini) + defaults_ini_;
    // The settings it stores must pass the checks the command line does, on their own: a bad one is
    // the file's fault, reported as such rather than as a usage error naming an option.
    TrainOptions stored;
    DataSettings stored_data;
    read_stored_train_options(resumed_, stored, stored_data);
  }
  if (!parse_command(name_, "[options]", desc_, {}, argc, argv, vm_, fallback, resume_path_)) return false;
  require(resume_path_.empty() == o_.resume.empty(),
          "--resume must be given on the command line (a config file cannot name the run to resume)");
  if (resuming()) check_resume_changes(resumed_.config_ini, settings_ini(vm_, desc_), resumed_.epoch);
  validate_train_options(o_, /*check_model=*/!resuming() && !(base_model_ && o_.model == base_model_->name));
  o_.train.grad_chunks = resolve_grad_chunks(o_.train.grad_chunks, o_.train.batch_size);
  apply_threads(o_.threads);
  command_line_ = join_args(name_, argc, argv);
  if (resuming()) model_data_ = data_record(resumed_);
  data_ = load_data(d_, /*with_train=*/true, &model_data_);
  require(data_.train.n > 0, "the training split of " + data_.source + " is empty");
  return true;
}

ModelDescription TrainCommand::model_description() const {
  if (resuming()) return checkpoint_model_description(resumed_);
  if (base_model_ && o_.model == base_model_->name) return *base_model_;
  return resolve_model(o_.model);
}

TrainRun TrainCommand::make_run(const ModulePtr& model, const ModelDescription& description) {
  TrainRun run;
  run.name = name_;
  run.kind = kind_;
  run.model = model;
  run.description = description;
  run.settings = o_.train;
  run.model_label = o_.model;
  run.data = &data_;
  run.command_line = command_line_;
  // The dataset as resolved (kind and absolute path): a resumed run finds it from any directory.
  // The chunk count as resolved: a resumed run keeps it whatever its process count.
  run.config_ini = with_setting(with_setting(settings_ini(vm_, desc_), "dataset", data_.source), "grad-chunks",
                                std::to_string(o_.train.grad_chunks));
  if (resuming()) {
    try {
      check_resumable(resumed_, description, o_.train);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    run.resume_from = &resumed_;
    run.out_dir = o_.out.empty() ? fs::path(resume_path_).parent_path().string() : o_.out;
    if (run.out_dir.empty()) run.out_dir = ".";
  } else {
    const std::string stem = description.name + "-" + (kind_ == "float" ? "" : kind_ + "-") + data_.label;
    // Process 0 alone writes there: it chooses.
    run.out_dir = agree_on_rank0([&] { return choose_out_dir(o_.out, o_.overwrite, stem); });
  }
  if (!o_.distill.empty()) {
    try {
      run.teacher = load_teachers(o_.distill, data_);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string(e.what()) + " (--distill)");
    }
    if (!o_.teacher_cache.empty())
      run.teacher_cache = std::make_shared<const TeacherCache>(
          TeacherCache::load(o_.teacher_cache, teacher_cache_key(o_.distill, data_)));
  }
  progress_ = std::make_unique<Progress>(o_.progress);
  run.monitor = progress_.get();
  run.detect_anomaly = o_.detect_anomaly;
  run.log = stdout;
  return run;
}

}  // namespace qatlab
