// qat_training.cpp: prepare, the QAT hooks of the training loop, train.
#include "quant/workflow/qat_training.h"

#include <cstdio>
#include <vector>

#include "core/distributed.h"
#include "core/ops.h"
#include "quant/qat/learnable_quantizer.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"

namespace qatlab {

QatTraining train_qat(TrainRun run, const QConfig& qconfig, const QatSchedule& schedule) {
  QatTraining t;
  t.model = prepare_qat(run.model, qconfig);
  if (run.log && world_rank() == 0) std::fprintf(run.log, "quantization: %s", qconfig.describe().c_str());

  // PACT's clipping levels are kept in check by an L2 term on the loss.
  std::vector<std::shared_ptr<PactQuantizer>> pact;
  for (const auto& [name, m] : t.model->named_modules(t.model))
    if (m->is<PactQuantizer>()) pact.push_back(std::static_pointer_cast<PactQuantizer>(m));
  if (!pact.empty()) {
    run.extra_loss = [pact] {
      Tensor total = pact.front()->decay_loss();
      for (size_t i = 1; i < pact.size(); ++i) total = add(total, pact[i]->decay_loss());
      return total;
    };
  }
  const std::shared_ptr<QatModel> model = t.model;
  const int64_t freeze_bn = schedule.freeze_bn_after, freeze_obs = schedule.freeze_observers_after;
  run.on_epoch_start = [model, freeze_bn, freeze_obs](int64_t epoch) {
    set_bn_frozen(*model, freeze_bn >= 0 && epoch >= freeze_bn);
    set_observers_enabled(*model, !(freeze_obs >= 0 && epoch >= freeze_obs));
  };
  run.model = t.model;
  run.kind = "qat";
  run.qconfig_data = qconfig_to_data(qconfig);
  t.outcome = train_model(run);
  return t;
}

}  // namespace qatlab
