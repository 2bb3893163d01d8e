// checkpoint_model.h: the model a checkpoint holds, rebuilt: a float network with its weights, or a QAT
// model prepared with the QConfig it was trained with, its state (weights, quantizer ranges, learned steps)
// loaded.
#pragma once

#include <functional>
#include <memory>

#include "nn/checkpoint.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

// The QConfig a QAT checkpoint stores as data (/model/qconfig, quant/qat/qconfig_data.h). Throws
// std::runtime_error "<file>: ..." for bad data, and for none: a checkpoint written before the QConfig was
// stored as data holds it only as command-line settings (the qatlab command still reads those,
// apps/qat_options.h).
QConfig stored_qconfig(const Checkpoint& ckpt);

// A QAT checkpoint's model: its network rebuilt from the checkpoint, prepared with `qconfig`
// (prepare_qat), its state loaded.
std::shared_ptr<QatModel> qat_model_from_checkpoint(const Checkpoint& ckpt, const QConfig& qconfig);

// The float network under a QAT checkpoint: its latent weights and batch-norm statistics as quantization-
// aware training left them (prepare_qat shares the float model's tensors, so loading the QAT state fills
// them), without the quantizers. What `qatlab qat --from QAT.h5` quantizes again at other bits: progressive
// fine-tuning, e.g. a 2-bit model started from the 4-bit one rather than from the float model.
ModulePtr float_model_under_qat_checkpoint(const Checkpoint& ckpt, const QConfig& qconfig);

// How a caller reads a QAT checkpoint's QConfig.
using QConfigReader = std::function<QConfig(const Checkpoint&)>;

// The model a checkpoint holds, float or QAT, with its state loaded; a QAT model's QConfig is read by
// `qconfig_of` (stored_qconfig unless the caller reads older files too). std::runtime_error for another
// model kind.
ModulePtr model_from_any_checkpoint(const Checkpoint& ckpt, const QConfigReader& qconfig_of = stored_qconfig);

}  // namespace qatlab
