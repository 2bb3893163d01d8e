// fake_quantize.h: simulated quantization for training: the fake_quantize autograd op (quantize, then
// dequantize, with a straight-through gradient) and the FakeQuantize module that prepare_qat inserts.
//
// Shape letters: C channels along the quantization axis.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/observer.h"

namespace qatlab {

// y = scale * (float)(q - zp), q = quantize_value(x, 1.0f / scale, zp, quant_min, quant_max) (see
// quant/engine/requantize.h), per tensor or per slice along qp.axis for a tensor of any rank. Because q is
// computed by the very function the integer graph's Quantize op uses, the simulation and the integer
// engine round identically. On a mid-rise grid (qp.odd_codes) q = quantize_odd_value(x, 1.0f / scale,
// quant_max), as the integer graph's weights are rounded (NaN -> 0 as well).
//
// Backward, the straight-through estimator: dL/dx = dL/dy where the un-clamped code
// zp + nearbyint(x * (1.0f / scale)) (the odd rounding on a mid-rise grid) lies in [quant_min, quant_max]
// (bounds included), 0 elsewhere.
// The scale and zero point are constants here (no gradient flows to them).
//
// Throws std::invalid_argument when qp is invalid (QParams::validate) or its per-channel size does not
// match x.size(qp.axis).
Tensor fake_quantize(const Tensor& x, const QParams& qp);

// Anything that can say how a tensor is quantized: FakeQuantize (observer driven) and learnable
// quantizers (scale as a trained parameter). convert asks only for qparams() and scheme().
//
// Contract: when forward returns a new tensor (not its input), no backward closure reads that tensor's
// values (the gradients depend on the input and the grid only), so a caller may overwrite them: the
// residual add writes its integer kernel's values there and keeps the quantizer's gradient path.
class Quantizer : public Module {
 public:
  Quantizer(std::string type, const QScheme& scheme);
  virtual QParams qparams() const = 0;
  // False while quantization is switched off (the module passes values through): layers then skip the
  // rounding they simulate on its behalf, such as the bias's.
  virtual bool quantizing() const { return true; }
  const QScheme& scheme() const { return scheme_; }
  // How the quantizer finds its grid (quantizer_kind.h), and that in words for printouts: the method's
  // name ("lsq", "lsq+", "pact"), or an observer's description ("ema(c=0.01) observer").
  virtual QuantizerMethod method() const = 0;
  virtual std::string method_description() const { return quantizer_method_name(method()); }

 private:
  QScheme scheme_;
};

// An observer plus the qparams it produced, applied with fake_quantize.
//
// forward(x): in training mode, if the observer is enabled, observe(x) and recompute the qparams; then, if fake-quant is
// enabled, return fake_quantize(x, qparams()), else x itself.
//
// Buffers (so a checkpoint holds everything and load_state_dict restores an identical module):
//   "scale", "zero_point"   (C) float; C = 1 per tensor; the zero points are integers stored as floats
//   "observer_enabled", "fake_quant_enabled"   (1) 1 or 0: the switches survive a resume
//   "observer.<name>"       the observer's state tensors (e.g. "observer.min_val"), live views
class FakeQuantize : public Quantizer {
 public:
  explicit FakeQuantize(std::unique_ptr<Observer> observer);
  // make_observer(observer_kind, scheme, channels) inside.
  explicit FakeQuantize(const QScheme& scheme, ObserverKind observer_kind = ObserverKind::MinMax, int64_t channels = 1);

  Tensor forward(const Tensor& x) override;
  // For an op that fake-quantizes its own output (OutputGridFn, core/ops.h): what forward would do to a
  // tensor whose range is [lo, hi], told only the range: the observer folds it in (in training, when
  // enabled) and the grid comes back. Nothing, and nothing changed, when forward needs the values
  // themselves (per-channel schemes, histogram observers) or passes them through (fake-quant off).
  std::optional<OutputGrid> output_grid(float lo, float hi);
  // The current parameters from the "scale" / "zero_point" buffers. Throws std::logic_error before the
  // observer has seen any data (and nothing was loaded), std::invalid_argument if the buffers hold
  // invalid values (e.g. a corrupt checkpoint).
  QParams qparams() const override;
  bool quantizing() const override { return fake_quant_enabled(); }
  std::string describe() const override;
  QuantizerMethod method() const override { return QuantizerMethod::Observer; }
  std::string method_description() const override { return observer_->describe() + " observer"; }

  void enable_observer(bool on);
  void enable_fake_quant(bool on);
  bool observer_enabled() const;
  bool fake_quant_enabled() const;
  const Observer& observer() const { return *observer_; }

 private:
  void store(const QParams& qp);

  std::unique_ptr<Observer> observer_;
  Tensor scale_, zero_point_;                      // (C)
  Tensor observer_enabled_, fake_quant_enabled_;   // (1)
  std::vector<Tensor> observer_state_;             // handles sharing the observer's state tensors
};

}  // namespace qatlab
