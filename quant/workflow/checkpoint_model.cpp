// checkpoint_model.cpp: rebuilding a checkpoint's float or QAT model.
#include "quant/workflow/checkpoint_model.h"

#include <map>
#include <stdexcept>
#include <string>

#include "core/rng.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"

namespace qatlab {

QConfig stored_qconfig(const Checkpoint& ckpt) {
  if (ckpt.qconfig.empty())
    throw std::runtime_error(ckpt.source + ": holds no quantization settings as data (/model/qconfig): it was written "
                             "before they were stored so; the qatlab command reads it from its stored settings");
  return qconfig_from_data(ckpt.qconfig, ckpt.source);
}

std::shared_ptr<QatModel> qat_model_from_checkpoint(const Checkpoint& ckpt, const QConfig& qconfig) {
  Rng unused(0);  // every value is overwritten by the stored state
  const std::shared_ptr<QatModel> model = prepare_qat(build_checkpoint_model(ckpt, unused), qconfig);
  model->load_state_dict(std::map<std::string, Tensor>(ckpt.model_state.begin(), ckpt.model_state.end()));
  return model;
}

ModulePtr float_model_under_qat_checkpoint(const Checkpoint& ckpt, const QConfig& qconfig) {
  Rng unused(0);  // every value is overwritten by the stored state
  // prepare_qat rewires the modules it is given, but their tensors stay the float network's: take them by
  // their float names first, load the QAT state through the prepared model, then give them to a fresh copy.
  const ModulePtr prepared = build_checkpoint_model(ckpt, unused);
  const NamedTensors float_tensors = prepared->state_dict();
  prepare_qat(prepared, qconfig)->load_state_dict(std::map<std::string, Tensor>(ckpt.model_state.begin(), ckpt.model_state.end()));
  const ModulePtr float_model = build_checkpoint_model(ckpt, unused);
  float_model->load_state_dict(std::map<std::string, Tensor>(float_tensors.begin(), float_tensors.end()));
  return float_model;
}

ModulePtr model_from_any_checkpoint(const Checkpoint& ckpt, const QConfigReader& qconfig_of) {
  if (ckpt.model_kind == "float") return model_from_checkpoint(ckpt);
  if (ckpt.model_kind != "qat") throw std::runtime_error("unknown model kind '" + ckpt.model_kind + "' in checkpoint");
  return qat_model_from_checkpoint(ckpt, qconfig_of(ckpt));
}

}  // namespace qatlab
