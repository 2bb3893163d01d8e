// qconfig_data.h: a QConfig as data, the way checkpoints store it (/model/qconfig): every field
// named, in a small YAML document, so that a checkpoint's quantization is read back field by field,
// not re-parsed from the command line that made it.
//
//   qatlab-qconfig: 1
//   weight:     {bits: 4, signed: true, symmetric: true, per_channel: true, narrow_range: true,
//                observer: minmax, method: lsq}
//   activation: {bits: 4, signed: true, symmetric: false, per_channel: false, narrow_range: false,
//                observer: ema, method: lsq, lsq_init: mse}   # lsq_init, lsq_grad_scale: only when set
//   layer_bits: {features.0: [8, 8], classifier.4: [8, 0]}   # W, A; 0 keeps the global value
#pragma once

#include <string>

#include "quant/qat/qconfig.h"

namespace qatlab {

std::string qconfig_to_data(const QConfig& q);
// Throws std::runtime_error "<source>: ..." (one line) for a document that is not a valid QConfig.
QConfig qconfig_from_data(const std::string& text, const std::string& source);

}  // namespace qatlab
