// cmd_eval.cpp: `qatlab eval MODEL`: test-set accuracy of a float checkpoint, a QAT checkpoint (float
// simulation, or --exact integer arithmetic), an integer model file or a dynamic model file; with
// --compare, how closely an integer model agrees with its QAT simulation; with --dump, an integer model's
// output codes and the labels as CSV, for comparing another implementation with ours.
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"
#include "core/atomic_file.h"
#include "nn/checkpoint.h"
#include "nn/train/evaluate.h"
#include "quant/engine/dynamic_quant.h"
#include "quant/engine/int8_graph.h"
#include "quant/qat/prepare.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {


int cmd_eval(int argc, char** argv) {
  std::string path, compare, dump, kernel = "auto";
  DataSettings d;
  int64_t batch_size = 256;
  int threads = 0;
  bool exact = false, overwrite = false, allow_mismatch = false;
  po::options_description desc("eval options");
  desc.add_options()("model", po::value(&path), "checkpoint or integer model file (also the first positional argument)")
      ("exact", po::bool_switch(&exact), "QAT checkpoint: run the integer arithmetic in the simulation (exact mode)")
      ("compare", po::value(&compare), "integer model: also run this QAT checkpoint (float simulation and exact mode) and report how the outputs agree")
      ("dump", po::value(&dump), "integer model: write every test image's output codes, label and prediction to this CSV file")
      ("overwrite", po::bool_switch(&overwrite), "allow --dump to replace an existing file")
      ("kernel", po::value(&kernel)->default_value(kernel), "integer kernels (of the integer model and of exact mode): auto | reference | portable | avx2 | avx512vnni")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per batch")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)")
      ("allow-dataset-mismatch", po::bool_switch(&allow_mismatch), "evaluate on a dataset whose classes differ from the model's (count or names; the images must still have the model's shape)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command("eval", "MODEL [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the model to evaluate: qatlab eval MODEL");
  require_batch_size("batch-size", batch_size);
  require_threads("threads", threads);
  guard_output("--dump", dump, overwrite);
  const KernelPath kpath = kernel_option(kernel);
  apply_threads(threads);

  if (is_dynamic_model_file(path)) {
    require(compare.empty() && !exact && dump.empty(), "--compare, --exact and --dump do not apply to " +
                                           path + " (a dynamic model)");
    const DynamicModelFile file = load_dynamic_model(path);
    if (kernel != "auto") set_dynamic_kernel_path(*file.model, kpath);
    const DataRecord record{file.dataset, file.data_mean, file.data_std, file.class_names};
    use_model_dataset(d, vm["dataset"].defaulted(), record);
    DataBundle data = load_data(d, /*with_train=*/false, &record);
    check_data_fits(data, path, file.spec, record.class_names, allow_mismatch);
    DataLoader loader(data.test, loader_options(data, batch_size, 0, false));
    const EvalResult r = evaluate(*file.model, loader);
    std::printf("%s (dynamic int8 %s) on %s test: accuracy %.2f %% (%lld images), loss %.4f, %.0f img/s\n", path.c_str(),
                file.model_name.c_str(), data.source.c_str(), 100.0 * r.accuracy, static_cast<long long>(r.count), r.loss,
                r.count / std::max(r.seconds, 1e-9));
    return 0;
  }

  if (Int8Graph::is_int8_graph_file(path)) {
    const Int8Graph graph = Int8Graph::load(path);
    DataRecord record = data_record(graph);
    use_model_dataset(d, vm["dataset"].defaulted(), record);
    ModulePtr sim;
    if (!compare.empty()) {
      const Checkpoint ckpt = load_checkpoint(compare);
      require(ckpt.model_kind == "qat", compare + " is not a QAT checkpoint");
      if (vm["dataset"].defaulted()) d.dataset = ckpt.dataset;
      // A file without a pixel table records no normalisation: the checkpoint's is the one it was made with.
      if (record.mean.empty()) record.mean = ckpt.data_mean, record.std = ckpt.data_std;
      if (record.class_names.empty()) record.class_names = ckpt.class_names;
      sim = model_from_any_checkpoint(ckpt, checkpoint_qconfig);
      sim->eval();
    }
    DataBundle data = load_data(d, false, &record);
    require(graph.input_shape.size() == 3, path + ": input shape " + shape_str(graph.input_shape) + " is not (C, H, W)");
    const ModelSpec graph_spec{graph.input_shape[0], graph.input_shape[1], graph.input_shape[2], graph.output_width()};
    check_data_fits(data, path, graph_spec, record.class_names, allow_mismatch);
    const std::string note = input_pipeline_note(graph, path);
    if (!note.empty()) std::printf("%s\n", note.c_str());
    DataLoader loader(data.test, integer_loader_options(graph, data, batch_size));
    EvalResult r;
    Agreement a;
    IntegerOutputs outputs;
    run_integer(graph, kpath, loader, sim.get(), r, a, dump.empty() ? nullptr : &outputs);
    std::printf("%s (integer, %s kernels) on %s test: accuracy %.2f %% (%lld images), %.0f img/s\n", path.c_str(),
                kernel_path_name(kpath), data.source.c_str(), 100.0 * r.accuracy, static_cast<long long>(r.count),
                r.count / std::max(r.seconds, 1e-9));
    if (!dump.empty()) {
      atomic_write_text(dump, outputs_csv(outputs, graph.output_grid()));
      std::printf("output codes of %lld images (%lld classes) -> %s\n", static_cast<long long>(r.count),
                  static_cast<long long>(outputs.classes), dump.c_str());
    }
    if (sim) {
      double sim_correct = 0;
      // The simulation's accuracy over the same images, from its agreement counts is not enough: rerun.
      DataLoader sim_loader(data.test, loader_options(data, batch_size, 0, false));
      const EvalResult s = evaluate(*sim, sim_loader);
      sim_correct = s.accuracy;
      std::printf("simulation %s: accuracy %.2f %% (difference %+.2f points)\n", compare.c_str(), 100.0 * sim_correct,
                  100.0 * (r.accuracy - sim_correct));
      std::printf("agreement: %.4f %% of output elements differ (max %lld LSB), top-1 identical on %.4f %% of images\n",
                  100.0 * a.differing / std::max<int64_t>(a.elements, 1), static_cast<long long>(a.max_lsb),
                  100.0 * a.same_top1 / std::max<int64_t>(a.images, 1));
      std::printf("exact mode: output codes bit-identical on %lld of %lld images\n",
                  static_cast<long long>(a.exact_identical_images), static_cast<long long>(a.images));
    }
    return 0;
  }

  require(dump.empty(), "--dump writes an integer model's output codes: " + path +
                           " is a checkpoint (convert it first: qatlab convert " + path + ")");
  const Checkpoint ckpt = load_checkpoint(path);
  const DataRecord record = data_record(ckpt);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  DataBundle data = load_data(d, /*with_train=*/false, &record);
  check_data_fits(data, path, ckpt.spec, record.class_names, allow_mismatch);
  ModulePtr model = model_from_any_checkpoint(ckpt, checkpoint_qconfig);
  require(!exact || ckpt.model_kind == "qat", "--exact applies to QAT checkpoints");
  if (exact) set_exact_mode(*model, true, kpath);
  DataLoader loader(data.test, loader_options(data, batch_size, 0, false));
  const EvalResult r = evaluate(*model, loader);
  std::printf("%s (%s %s%s, epoch %lld) on %s test: accuracy %.2f %% (%lld images), loss %.4f, %.0f img/s\n",
              path.c_str(), ckpt.model_kind.c_str(), ckpt.model_name.c_str(), exact ? ", exact mode" : "",
              static_cast<long long>(ckpt.epoch), data.source.c_str(), 100.0 * r.accuracy,
              static_cast<long long>(r.count), r.loss, r.count / std::max(r.seconds, 1e-9));
  return 0;
}

}  // namespace qatlab
