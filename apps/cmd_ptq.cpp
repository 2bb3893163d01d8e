// cmd_ptq.cpp: `qatlab ptq FLOAT_CKPT`: post-training quantization (run_ptq, quant/workflow/ptq.h):
// calibrate the quantizers of a float model on a few training batches (no training), convert, and
// evaluate simulation and integer graph.
#include <cstdio>
#include <filesystem>

#include "apps/commands.h"
#include "apps/ptq_dynamic.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"
#include "nn/checkpoint.h"
#include "quant/workflow/ptq.h"

namespace qatlab {

namespace fs = std::filesystem;

int cmd_ptq(int argc, char** argv) {
  // --dynamic anywhere on the line: dynamic quantization, a different pipeline with its own options.
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--dynamic") return cmd_ptq_dynamic(argc, argv);
  PtqOptions p;
  QatSettings q;
  DataSettings d;
  po::options_description desc("ptq options");
  add_ptq_options(desc, p);
  add_qconfig_options(desc, q);
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("ptq", "FLOAT_CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!p.checkpoint.empty(), "name the float checkpoint: qatlab ptq CHECKPOINT");
  require(p.calib_batches >= 1 && p.calib_batches <= 100000,
          "--calib-batches must be in 1..100000, got " + std::to_string(p.calib_batches));
  require_batch_size("batch-size", p.batch_size);
  require_seed("seed", p.seed);
  require_threads("threads", p.threads);
  PtqSettings settings;
  settings.qconfig = qconfig_from(q);
  require(settings.qconfig.weight.method == QuantizerMethod::Observer &&
              settings.qconfig.activation.method == QuantizerMethod::Observer,
          "ptq calibrates observers; learned quantizers (--wquant/--aquant) need training: use qatlab qat");
  settings.calib_batches = p.calib_batches;
  settings.batch_size = p.batch_size;
  settings.seed = p.seed;
  apply_threads(p.threads);
  // The options as given, before the defaults below are filled in: what the checkpoint stores.
  const std::string config_ini = settings_ini(vm, desc);

  const Checkpoint base = load_checkpoint(p.checkpoint);
  require(base.model_kind == "float", p.checkpoint + " is a '" + base.model_kind + "' checkpoint; ptq takes a float one");
  const DataRecord record = data_record(base);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  const DataBundle data = load_data(d, /*with_train=*/true, &record);
  check_data_fits(data, p.checkpoint, base.spec, record.class_names, /*allow_mismatch=*/false);
  std::string out = p.out;
  if (out.empty())
    out = (fs::path(p.checkpoint).parent_path() / ("ptq-w" + std::to_string(q.wbits) + "a" + std::to_string(q.abits))).string();
  out = choose_out_dir(out, p.overwrite, "");
  run_ptq(base, data, settings, out, config_ini, stdout);
  return 0;
}

}  // namespace qatlab
