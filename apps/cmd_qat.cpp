// cmd_qat.cpp: `qatlab qat`: quantization-aware training, from a float checkpoint or from scratch.
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "apps/train_command.h"
#include "core/distributed.h"
#include "nn/model_description.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/qat_training.h"

namespace qatlab {

int cmd_qat(int argc, char** argv) {
  TrainCommand cmd("qat", "qat");
  QatSettings q;
  std::string from;
  add_qconfig_options(cmd.options(), q);
  cmd.options().add_options()("from", po::value(&from),
                              "checkpoint to start from (default: train from scratch): a float one, or a QAT one, whose "
                              "float weights and batch-norm statistics are quantized again at these settings "
                              "(progressive fine-tuning, e.g. 2 bits from the 4-bit model)");

  // Starting from a checkpoint: its model and dataset become the defaults.
  Checkpoint base;
  const std::string from_path = prescan_option(argc, argv, "from");
  if (!from_path.empty()) {
    base = load_checkpoint(from_path);
    require(base.model_kind == "float" || base.model_kind == "qat",
            from_path + " is a '" + base.model_kind + "' checkpoint; --from takes a float or a QAT one");
    // Its augmentation too, when it chose one; its normalisation is the model's own (set_model_data).
    const std::string augment = ini_value(base.config_ini, "augment");
    cmd.set_defaults_ini("model = " + base.model_name + "\ndataset = " + base.dataset + "\n" +
                         (augment.empty() ? "" : "augment = " + augment + "\n"));
    cmd.set_base_model(checkpoint_model_description(base));
    cmd.set_model_data(data_record(base));
  }
  if (!cmd.parse(argc, argv)) return 0;
  const TrainOptions& o = cmd.settings();
  // Histograms need every value of the batch; chunks exchange ranges only (core/batch_sync.h).
  for (const std::string* kind : {&q.observer, &q.weight_observer})
    require(o.train.grad_chunks == 1 || (*kind != "histogram" && *kind != "percentile"),
            "the " + *kind + " observer cannot combine the chunks of a batch yet (--grad-chunks " +
                std::to_string(o.train.grad_chunks) + (world_size() > 1 ? ", under mpirun" : "") +
                "): use minmax or ema, or train in one process with --grad-chunks 1");
  require(q.freeze_bn_after >= -1 && q.freeze_bn_after <= kMaxEpochs,
          "--freeze-bn-after must be an epoch in 0.." + std::to_string(kMaxEpochs) + " or -1 (never), got " +
              std::to_string(q.freeze_bn_after));
  require(q.freeze_observers_after >= -1 && q.freeze_observers_after <= kMaxEpochs,
          "--freeze-observers-after must be an epoch in 0.." + std::to_string(kMaxEpochs) + " or -1 (never), got " +
              std::to_string(q.freeze_observers_after));
  // A resumed run's quantization settings come from its checkpoint: a bad one is the file's fault.
  if (cmd.resuming()) qconfig_from_ini(cmd.resumed().config_ini, cmd.resumed().source);
  const QConfig qconfig = qconfig_from(q);

  Rng rng(o.train.seed);
  const ModelDescription description = cmd.model_description();
  ModulePtr float_model = build_model(description, cmd.data().spec, rng);
  if (!from_path.empty() && !cmd.resuming()) {
    require(base.model_name == o.model, from_path + " holds a " + base.model_name + " model, not " + o.model);
    float_model = base.model_kind == "float" ? model_from_checkpoint(base)
                                             : float_model_under_qat_checkpoint(base, checkpoint_qconfig(base));
  }
  train_qat(cmd.make_run(float_model, description), qconfig, {q.freeze_bn_after, q.freeze_observers_after});
  return 0;
}

}  // namespace qatlab
