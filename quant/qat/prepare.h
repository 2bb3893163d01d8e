// prepare.h: prepare_qat: float model -> QAT model, with no stubs in model code. It fuses
// Conv2d/Linear with a following BatchNorm and ReLU/ReLU6, puts a fake-quantizer on every weight and on
// the output of every fused block, quantizes the model input, and lets ReLU, max pooling, flatten and
// dropout reuse their input's grid; an LSTM (RowLstmClassifier's) becomes a QatLstm (qat_lstm.h). Plus the
// switches a QAT schedule needs. How each float module is rewritten is a rule of prepare_rules.h.
#pragma once

#include <functional>

#include "nn/module.h"
#include "quant/qat/qat_layers.h"
#include "quant/qat/prepare_rules.h"
#include "quant/qat/qconfig.h"

namespace qatlab {

// The float model's tensors are shared, not copied: the QAT model trains them in place. Throws
// std::invalid_argument naming the module it cannot quantize (e.g. a BatchNorm with no conv before it).
// The model input is quantized to 8 bits (images are 8-bit data) unless the QConfig overrides "input".
// `rules` says what each float module becomes (a program with layers of its own passes its own table).
std::shared_ptr<QatModel> prepare_qat(const ModulePtr& float_model, const QConfig& qconfig,
                                      const PrepareRules& rules = PrepareRules::builtin());

// Schedules and modes over the whole QAT model.
void set_observers_enabled(Module& model, bool on);   // every FakeQuantize's observer
void set_fake_quant_enabled(Module& model, bool on);  // every FakeQuantize's quantize-dequantize
void set_bn_frozen(Module& model, bool on);           // BN uses (and stops updating) running statistics
// Evaluation runs the integer arithmetic; conv and linear layers on the kernels of `path` (QatLayer::set_exact).
void set_exact_mode(Module& model, bool on, KernelPath path = KernelPath::Reference);

// Post-training calibration (`qatlab ptq`, `inspect --sqnr-vs-bits`): the observers watch the float
// activations (fake-quant off, BN on its running statistics, no gradients; training mode only so that they
// record) of every batch `next` hands out until it returns false; then fake-quant on, observers off (BN
// stays frozen), evaluation mode. Nothing is learned. Returns the number of images seen.
int64_t calibrate_observers(Module& model, const std::function<bool(Tensor& batch)>& next);

}  // namespace qatlab
