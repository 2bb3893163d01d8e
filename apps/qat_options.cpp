// qat_options.cpp: quantization options and model reconstruction from checkpoints.
#include "apps/qat_options.h"

#include <map>
#include <sstream>

#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"

namespace qatlab {

void add_qconfig_options(po::options_description& desc, QatSettings& q) {
  desc.add_options()
      ("wbits", po::value(&q.wbits)->default_value(q.wbits), "weight bits (2..8)")
      ("abits", po::value(&q.abits)->default_value(q.abits), "activation bits (2..8)")
      ("per-channel", po::value(&q.per_channel)->default_value(q.per_channel)->implicit_value(true),
       "weights per output channel (true) or per tensor (false)")
      ("observer", po::value(&q.observer)->default_value(q.observer), "activation observer: minmax | ema | histogram | percentile")
      ("weight-observer", po::value(&q.weight_observer)->default_value(q.weight_observer), "weight observer: minmax | ema")
      ("wquant", po::value(&q.wquant)->default_value(q.wquant), "weight quantizer: observer | lsq (learned step size)")
      ("aquant", po::value(&q.aquant)->default_value(q.aquant),
       "activation quantizer: observer | lsq | lsq+ (learned step and offset) | pact (learned clip, after ReLU)")
      ("layer-bits", po::value(&q.layer_bits)->composing(),
       "per-layer bits NAME=W:A, by dotted module name or layer type (repeatable), e.g. features.0=8:8")
      ("freeze-bn-after", po::value(&q.freeze_bn_after)->default_value(q.freeze_bn_after),
       "use running BN statistics from this epoch on (-1 = never)")
      ("freeze-observers-after", po::value(&q.freeze_observers_after)->default_value(q.freeze_observers_after),
       "stop updating quantization ranges from this epoch on (-1 = never)");
}

QConfig qconfig_from(const QatSettings& q) {
  try {
    QConfig c = QConfig::from_options(q.wbits, q.abits, q.per_channel, q.weight_observer, q.observer, q.layer_bits,
                                      q.wquant, q.aquant);
    return c;
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

QConfig qconfig_from_ini(const std::string& ini, const std::string& source) {
  QatSettings q;
  po::options_description desc;
  add_qconfig_options(desc, q);
  po::variables_map vm;
  try {
    std::istringstream in(ini);
    po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/true), vm);
    po::notify(vm);
    return qconfig_from(q);
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": " + stored_setting_error(e.what()));
  }
}

QConfig checkpoint_qconfig(const Checkpoint& ckpt) {
  if (!ckpt.qconfig.empty()) return qconfig_from_data(ckpt.qconfig, ckpt.source);
  return qconfig_from_ini(ckpt.config_ini, ckpt.source);
}

ModulePtr model_from_any_checkpoint(const Checkpoint& ckpt) {
  if (ckpt.model_kind == "float") return model_from_checkpoint(ckpt);
  if (ckpt.model_kind != "qat") throw std::runtime_error("unknown model kind '" + ckpt.model_kind + "' in checkpoint");
  Rng unused(0);  // every value is overwritten by the stored state
  ModulePtr model =
      prepare_qat(build_checkpoint_model(ckpt, unused), checkpoint_qconfig(ckpt));
  model->load_state_dict(std::map<std::string, Tensor>(ckpt.model_state.begin(), ckpt.model_state.end()));
  return model;
}

}  // namespace qatlab
