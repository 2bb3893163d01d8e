// cmd_train.cpp: `qatlab train`: train a float model from the zoo, or resume a saved run.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "apps/commands.h"
#include "apps/train_loop.h"
#include "nn/checkpoint.h"
#include "nn/zoo.h"

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

std::string join_args(int argc, char** argv) {
  std::string s = "qatlab";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

void print_results(const TrainJob& job, const TrainSettings& s, const TrainOutcome& outcome, double seconds) {
  const MetricsRow last = outcome.history.empty() ? MetricsRow{} : outcome.history.back();
  const auto get = [&](const char* k) { auto it = last.find(k); return it == last.end() ? 0.0 : it->second; };
  std::printf("\n%-12s %s\n", "results", outcome.stopped_early ? "(stopped early: resume with --resume)" : "");
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

int cmd_train(int argc, char** argv) {
  TrainSettings s;
  DataSettings d;
  po::options_description desc("train options");
  add_train_options(desc, s);
  add_data_options(desc, d);

  // A resumed run takes its settings from the checkpoint; the command line may still change a few
  // (--epochs to extend a run, --threads, --progress).
  Checkpoint resumed;
  std::string fallback;
  const std::string resume_path = prescan_option(argc, argv, "resume");
  if (!resume_path.empty()) {
    resumed = load_checkpoint(resume_path);
    require(resumed.model_kind == "float", resume_path + " is a '" + resumed.model_kind +
                                               "' checkpoint: resume it with the command that made it");
    fallback = resumable_settings(resumed.config_ini);
  }
  po::variables_map vm;
  if (!parse_command("train", "[options]", desc, {}, argc, argv, vm, fallback)) return 0;
  validate_train_settings(s);
  const int threads = apply_threads(s.threads);

  DataBundle data = load_data(d, /*with_train=*/true);
  require(data.train.n > 0, "the training split of " + d.dataset + " is empty");

  Rng rng(s.seed);
  ModulePtr model = make_model(s.model, data.spec, rng);
  const std::vector<ParamRef> params = param_refs(*model, s.decay_bn_and_bias);
  OptimizerConfig oc;
  oc.lr = s.lr;
  oc.momentum = s.momentum;
  oc.nesterov = s.nesterov;
  oc.weight_decay = s.weight_decay;
  std::unique_ptr<Optimizer> optimizer = make_optimizer(s.optimizer, params, oc);
  LrSchedule schedule = parse_schedule(s.schedule, s.lr, s.milestones);
  schedule.step_epochs = s.step_epochs;
  schedule.gamma = s.gamma;
  schedule.warmup_epochs = s.warmup_epochs;
  validate_schedule(schedule);

  TrainJob job;
  job.model = model;
  job.optimizer = optimizer.get();
  job.schedule = schedule;
  job.data = &data;
  job.command_line = join_args(argc, argv);
  job.config_ini = settings_ini(vm, desc);
  if (!resume_path.empty()) {
    require(resumed.model_name == s.model, resume_path + " holds a " + resumed.model_name + " model, not " + s.model);
    std::map<std::string, Tensor> state(resumed.model_state.begin(), resumed.model_state.end());
    model->load_state_dict(state);
    require(resumed.optimizer_kind == optimizer->kind(),
            resume_path + " was trained with " + resumed.optimizer_kind + ", not " + optimizer->kind());
    optimizer->load_state(resumed.optimizer_state);
    job.resume_from = resumed;
    job.resuming = true;
    job.out_dir = s.out.empty() ? fs::path(resume_path).parent_path().string() : s.out;
    if (job.out_dir.empty()) job.out_dir = ".";
  } else {
    job.out_dir = choose_out_dir(s.out, s.overwrite, s.model + "-" + d.dataset);
  }
  const ModelSpec spec = data.spec;
  const std::string model_name = s.model;
  job.checkpoint_base = [spec, model_name] {
    Checkpoint c;
    c.model_name = model_name;
    c.model_kind = "float";
    c.spec = spec;
    return c;
  };

  std::printf("training %s on %s: %lld train / %lld test images, %lld epochs, batch %lld, %s lr %g (%s), %d threads -> %s\n",
              s.model.c_str(), d.dataset.c_str(), static_cast<long long>(data.train.n),
              static_cast<long long>(data.test.n), static_cast<long long>(s.epochs),
              static_cast<long long>(s.batch_size), s.optimizer.c_str(), s.lr, s.schedule.c_str(), threads,
              job.out_dir.c_str());
  if (job.resuming) std::printf("resuming after epoch %lld from %s\n", static_cast<long long>(resumed.epoch), resume_path.c_str());
  const auto t0 = std::chrono::steady_clock::now();
  const TrainOutcome outcome = run_training(job, s);
  print_results(job, s, outcome, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return 0;
}

}  // namespace qatlab
