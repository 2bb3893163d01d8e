// cmd_eval.cpp: `qatlab eval CHECKPOINT`: test-set accuracy and loss of a saved model.
#include <omp.h>

#include <cstdio>

#include "apps/commands.h"
#include "apps/train_loop.h"
#include "nn/checkpoint.h"

namespace qatlab {

int cmd_eval(int argc, char** argv) {
  std::string path;
  DataSettings d;
  int64_t batch_size = 256;
  int threads = 0;
  po::options_description desc("eval options");
  desc.add_options()("checkpoint", po::value(&path), "the checkpoint to evaluate (also the first positional argument)")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per batch")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("eval", "CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the checkpoint to evaluate: qatlab eval CHECKPOINT");
  require(batch_size >= 1, "--batch-size must be >= 1, got " + std::to_string(batch_size));
  require(threads >= 0, "--threads must be >= 0, got " + std::to_string(threads));
  apply_threads(threads);

  const Checkpoint ckpt = load_checkpoint(path);
  require(ckpt.model_kind == "float", path + ": evaluating '" + ckpt.model_kind + "' models is not supported yet");
  if (vm["dataset"].defaulted()) d.dataset = ckpt.dataset;
  DataBundle data = load_data(d, /*with_train=*/false);
  require(data.spec.channels == ckpt.spec.channels && data.spec.height == ckpt.spec.height &&
              data.spec.width == ckpt.spec.width,
          "the model was built for " + std::to_string(ckpt.spec.channels) + "x" + std::to_string(ckpt.spec.height) +
              "x" + std::to_string(ckpt.spec.width) + " images; " + d.dataset + " has " + std::to_string(data.spec.channels) +
              "x" + std::to_string(data.spec.height) + "x" + std::to_string(data.spec.width));
  ModulePtr model = model_from_checkpoint(ckpt);
  DataLoader loader(data.test, loader_options(data, batch_size, 0, false));
  const EvalResult r = evaluate(*model, loader);
  std::printf("%s (%s, epoch %lld) on %s test: accuracy %.2f %% (%lld images), loss %.4f, %.0f img/s\n",
              path.c_str(), ckpt.model_name.c_str(), static_cast<long long>(ckpt.epoch), d.dataset.c_str(),
              100.0 * r.accuracy, static_cast<long long>(r.count), r.loss, r.count / std::max(r.seconds, 1e-9));
  return 0;
}

}  // namespace qatlab
