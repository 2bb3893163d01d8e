// cmd_qat.cpp: `qatlab qat`: quantization-aware training, from a float checkpoint or from scratch.
#include <cstdio>

#include "apps/commands.h"
#include "apps/qat_options.h"
#include "apps/train_command.h"
#include "core/distributed.h"
#include "nn/zoo.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"

namespace qatlab {

int cmd_qat(int argc, char** argv) {
  TrainCommand cmd("qat", "qat");
  QatSettings q;
  std::string from;
  add_qconfig_options(cmd.options(), q);
  cmd.options().add_options()("from", po::value(&from), "float checkpoint to start from (default: train from scratch)");

  // Starting from a float checkpoint: its model and dataset become the defaults.
  Checkpoint base;
  const std::string from_path = prescan_option(argc, argv, "from");
  if (!from_path.empty()) {
    base = load_checkpoint(from_path);
    require(base.model_kind == "float", from_path + " is a '" + base.model_kind + "' checkpoint; --from takes a float one");
    // Its augmentation too, when it chose one; its normalisation is the model's own (set_model_data).
    const std::string augment = ini_value(base.config_ini, "augment");
    cmd.set_defaults_ini("model = " + base.model_name + "\ndataset = " + base.dataset + "\n" +
                         (augment.empty() ? "" : "augment = " + augment + "\n"));
    cmd.set_base_model(checkpoint_model_description(base));
    cmd.set_model_data(data_record(base));
  }
  if (!cmd.parse(argc, argv)) return 0;
  // Histograms need every value of the batch; chunks exchange ranges only (core/batch_sync.h).
  for (const std::string* kind : {&q.observer, &q.weight_observer})
    require(cmd.settings().grad_chunks == 1 || (*kind != "histogram" && *kind != "percentile"),
            "the " + *kind + " observer cannot combine the chunks of a batch yet (--grad-chunks " +
                std::to_string(cmd.settings().grad_chunks) + (world_size() > 1 ? ", under mpirun" : "") +
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
  cmd.set_qconfig_data(qconfig_to_data(qconfig));
  const TrainSettings& s = cmd.settings();

  Rng rng(s.seed);
  const ModelDescription description = cmd.model_description();
  ModulePtr float_model = build_model(description, cmd.data().spec, rng);
  if (!from_path.empty() && !cmd.resuming()) {
    require(base.model_name == s.model, from_path + " holds a " + base.model_name + " model, not " + s.model);
    float_model = model_from_checkpoint(base);
  }
  const std::shared_ptr<QatModel> model = prepare_qat(float_model, qconfig);
  std::printf("quantization: %s", qconfig.describe().c_str());

  // PACT's clipping levels are kept in check by an L2 term on the loss.
  std::vector<std::shared_ptr<PactQuantizer>> pact;
  for (const auto& [name, m] : model->named_modules(model))
    if (m->is<PactQuantizer>()) pact.push_back(std::static_pointer_cast<PactQuantizer>(m));
  std::function<Tensor()> pact_decay;
  if (!pact.empty()) {
    pact_decay = [pact] {
      Tensor total = pact.front()->decay_loss();
      for (size_t i = 1; i < pact.size(); ++i) total = add(total, pact[i]->decay_loss());
      return total;
    };
  }
  const int64_t freeze_bn = q.freeze_bn_after, freeze_obs = q.freeze_observers_after;
  return cmd.run(
      model, description,
      [model, freeze_bn, freeze_obs](int64_t epoch) {
        set_bn_frozen(*model, freeze_bn >= 0 && epoch >= freeze_bn);
        set_observers_enabled(*model, !(freeze_obs >= 0 && epoch >= freeze_obs));
      },
      pact_decay);
}

}  // namespace qatlab
