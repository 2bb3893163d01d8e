// cmd_ptq.cpp: `qatlab ptq FLOAT_CKPT`: post-training quantization: calibrate the quantizers of a float
// model on a few training batches (no training), convert, and evaluate simulation and integer graph.
#include <omp.h>

#include <cstdio>
#include <filesystem>

#include "apps/commands.h"
#include "apps/integer_eval.h"
#include "apps/ptq_dynamic.h"
#include "apps/qat_options.h"
#include "apps/train_loop.h"
#include "nn/checkpoint.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"

namespace qatlab {

namespace fs = std::filesystem;

int cmd_ptq(int argc, char** argv) {
  // --dynamic anywhere on the line: dynamic quantization, a different pipeline with its own options.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--dynamic") return cmd_ptq_dynamic(argc, argv);
  QatSettings q;
  DataSettings d;
  std::string path, out;
  int64_t batches = 32, batch_size = 64;
  uint64_t seed = 1;
  int threads = 0;
  bool overwrite = false;
  po::options_description desc("ptq options");
  desc.add_options()("checkpoint", po::value(&path), "the float checkpoint (also the first positional argument)")
      ("calib-batches", po::value(&batches)->default_value(batches), "training batches the observers see")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per calibration batch")
      ("seed", po::value(&seed)->default_value(seed), "seed of the calibration batches' order")
      ("out", po::value(&out), "output directory (default: beside the checkpoint, ptq-w<W>a<A>)")
      ("overwrite", po::bool_switch(&overwrite), "allow --out to name a directory that already holds a run")
      ("dynamic", "instead: dynamic quantization of Linear and LSTM layers (int8 weights, activation grids "
                  "computed per batch at run time); see qatlab ptq --dynamic --help")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  add_qconfig_options(desc, q);
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("ptq", "FLOAT_CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the float checkpoint: qatlab ptq CHECKPOINT");
  require(batches >= 1 && batches <= 100000, "--calib-batches must be in 1..100000, got " + std::to_string(batches));
  require_batch_size("batch-size", batch_size);
  require_seed("seed", seed);
  require(q.wquant == "observer" && q.aquant == "observer",
          "ptq calibrates observers; learned quantizers (--wquant/--aquant) need training: use qatlab qat");
  require_threads("threads", threads);
  const QConfig qconfig = qconfig_from(q);
  apply_threads(threads);

  const Checkpoint base = load_checkpoint(path);
  require(base.model_kind == "float", path + " is a '" + base.model_kind + "' checkpoint; ptq takes a float one");
  const DataRecord record = data_record(base);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  const DataBundle data = load_data(d, /*with_train=*/true, &record);
  check_data_fits(data, path, base.spec, record.class_names, /*allow_mismatch=*/false);
  if (out.empty())
    out = (fs::path(path).parent_path() / ("ptq-w" + std::to_string(q.wbits) + "a" + std::to_string(q.abits))).string();
  out = choose_out_dir(out, overwrite, "");

  // Calibration (calibrate_observers): observers watch float activations, nothing is learned.
  const std::shared_ptr<QatModel> model = prepare_qat(model_from_checkpoint(base), qconfig);
  DataLoader calib(data.train, loader_options(data, batch_size, seed, true));
  calib.start_epoch(0);
  Batch batch;
  int64_t taken = 0;
  const int64_t seen = calibrate_observers(*model, [&](Tensor& x) {
    if (taken == batches || !calib.next(batch)) return false;
    ++taken;
    x = batch.images;
    return true;
  });

  DataLoader test(data.test, loader_options(data, 256, 0, false));
  const EvalResult sim = evaluate(*model, test);
  fs::create_directories(out);
  Checkpoint c;
  c.model_name = base.model_name;
  c.model_description = base.model_description;
  c.qconfig = qconfig_to_data(qconfig);
  c.model_kind = "qat";
  c.spec = base.spec;
  for (auto& [name, t] : model->state_dict()) c.model_state.push_back({name, t});
  c.optimizer_kind = "none";
  c.dataset = data.source;
  c.data_mean = data.mean;
  c.data_std = data.std;
  c.class_names = data.class_names;
  c.config_ini = settings_ini(vm, desc);
  c.history.push_back({{"epoch", 0.0}, {"test_acc", sim.accuracy}, {"test_loss", sim.loss}});
  save_checkpoint(out + "/checkpoint.h5", c);
  Int8Graph graph = convert(*model, {base.spec.channels, base.spec.height, base.spec.width});
  set_checkpoint_pixel_table(graph, c);  // the input pipeline from raw pixels, as `convert` writes it
  graph.save(out + "/model.int8.h5");

  EvalResult integer;
  Agreement unused;
  DataLoader integer_test(data.test, integer_loader_options(graph, data, 256));
  run_integer(graph, best_kernel_path(), integer_test, nullptr, integer, unused);
  std::printf("ptq %s: calibrated on %lld images; %s", base.model_name.c_str(), static_cast<long long>(seen),
              qconfig.describe().c_str());
  std::printf("simulation accuracy %.2f %%, integer graph accuracy %.2f %% (%lld test images)\n", 100 * sim.accuracy,
              100 * integer.accuracy, static_cast<long long>(integer.count));
  std::printf("wrote %s/checkpoint.h5 and %s/model.int8.h5\n", out.c_str(), out.c_str());
  return 0;
}

}  // namespace qatlab
