// learnable_quantizer.h: quantizers whose grid is trained with the model: LSQ (learned step size), LSQ+
// (learned step size and offset) and PACT (learned clipping level), as autograd ops and Quantizer modules.
//
// Shape letters: C channels along the scheme's axis (C = 1 per tensor); an input is seen as
// (outer, C, inner) around that axis, and N = numel / C is the number of elements sharing one scale.
//
// Whatever is learned, the forward is always fake_quantize(x, qparams()) bit for bit: the learned floats
// are first turned into a valid grid (a scale >= kMinScale, an integer zero point in range), and the codes
// come from quantize_value (quant/engine/requantize.h), the very function the integer graph's Quantize op uses.
// Only the backward differs from FakeQuantize: gradients also reach the learned parameters.
//
// Each op's backward classifies every element by its un-clamped offset r = nearbyint(x * (1.0f / s)) (the
// rounding quantize_value does; on a mid-rise grid the odd integer nearest, as quantize_odd_value rounds) against the code range shifted by the zero point, lo = qmin - zp and
// hi = qmax - zp: "below" r < lo, "inside" lo <= r <= hi, "above" r > hi (NaN: no gradient anywhere).
// This is the same test as fake_quantize's straight-through estimator, so the x gradient of LSQ and LSQ+
// is exactly FakeQuantize's.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/quantizer_kind.h"

namespace qatlab {

// ---------------------------------------------------------------------------------------------- grids
//
// The learned floats -> the grid the forward quantizes onto. qparams() of the modules and the ops below
// both call these, so a module's qparams() is always the grid its forward used.

// The scale actually used for a learned value s: max(s, kMinScale) (an optimizer step may push s to or
// below zero; 1 / scale must stay finite). Throws std::invalid_argument for a NaN or infinite s
// ("<who>: scale[c] = nan, expected a finite value").
float projected_scale(float s, const std::string& who, int64_t c);

// LSQ: scale (C) learned, zero points (C) fixed. Per tensor when scheme.per_channel is false.
QParams lsq_qparams(const Tensor& scale, const std::vector<int32_t>& zero_point, const QScheme& scheme);

// LSQ+: the learned real offset beta (the real value of code 0 in the paper's grid, y = s * q + beta)
// becomes the integer zero point
//   zp = clamp(nearbyint(-beta / s), qmin, qmax)        (in double; s the projected scale)
// so real 0 stays exactly representable (code zp) and the realised offset is beta_eff = -s * zp. The
// clamp keeps 0 inside the grid's range even when beta asks for a grid entirely above or below 0.
int32_t lsq_plus_zero_point(float scale, float offset, int32_t quant_min, int32_t quant_max);
QParams lsq_plus_qparams(const Tensor& scale, const Tensor& offset, const QScheme& scheme);

// PACT: the clipping level alpha (C) becomes the grid [0, alpha] spread over all codes:
//   scale = max((float)(alpha / (qmax - qmin)) (in double), kMinScale),  zero_point = qmin
// so real 0 -> qmin and alpha -> qmax: the unsigned range of a ReLU output stored in signed codes.
// Throws like projected_scale for a non-finite alpha.
QParams pact_qparams(const Tensor& alpha, const QScheme& scheme);

// ------------------------------------------------------------------------------------------------ ops
//
// Each op computes y = fake_quantize(x, grid) with the grid from the functions above and records its
// backward. Parameters are (C) tensors; grad_scale (C) multiplies the gradient that reaches scale (and
// offset): the modules pass LSQ's g = 1 / sqrt(N * Qp), tests may pass 1. The projection of the scale
// (max(s, kMinScale)) is passed straight through in the backward (for LSQ+'s zero point see its op).
// Per-channel reductions are summed in double, in element order, on one thread: deterministic.

// LSQ (Esser et al. 2020, "Learned Step Size Quantization"). With v = x / s (as x * (1.0f / s)),
// r = nearbyint(v) and the classification of the file comment:
//   dy/dx = 1 inside, 0 below and above                              (the straight-through estimator)
//   dy/ds = r - v inside, lo = qmin - zp below, hi = qmax - zp above  (times grad_scale[c])
// On a mid-rise grid (scheme.mid_rise: odd codes r, s half the distance between levels) the same formulas
// hold with r the nearest odd integer and lo = -qmax, hi = qmax: the weights DoReFa and PACT learn on.
// The inside term is the derivative of s * round(x / s) with round's derivative taken as 1 (the paper's
// straight-through choice: it keeps the rounding residual r - v, which tells s how the codes sit on the
// data); on the clamped sides the output is exactly linear in s, and the term is its slope.
// The step's gradient is summed in a fixed order whatever the thread count: per tensor, plane by plane
// (lsq_backward_planes, core/ops.h), as a QAT layer's batch norm sums it with this quantizer fused in.
Tensor lsq_fake_quantize(const Tensor& x, const Tensor& scale, const std::vector<int32_t>& zero_point,
                         const QScheme& scheme, const std::vector<float>& grad_scale);

// LSQ+ (Bhalgat et al. 2020, "LSQ+: Improving low-bit quantization through learnable offsets and better
// initialization"): y = s * round(clamp((x - beta) / s, qmin, qmax)) + beta, realised on the integer grid
// as fake_quantize(x, {s, zp}) with zp = lsq_plus_zero_point(s, beta) (so beta_eff = -s * zp). The
// gradients are the paper's, straight through the rounding of zp (beta_eff taken as beta):
//   dy/dx    = 1 inside, 0 below and above
//   dy/ds    = r - v inside, qmin below, qmax above                  (times grad_scale[c])
//   dy/dbeta = 0 inside, 1 below and above                           (times grad_scale[c])
// (dy/ds at a clamped side is qmin, not qmin - zp as in LSQ: here beta, not the zero point, is held fixed
// when s moves, and s * qmin + beta is the clamped output.)
// Straight through the rounding, but not through the clamp: when -beta / s rounds to a code outside
// [qmin, qmax] the zero point is pinned at the bound, beta_eff = -s * zp stops following beta, and that
// channel's backward is LSQ's with the fixed zero point (dy/ds = qmin - zp / qmax - zp clamped, dy/dbeta
// = 0). Without this, data entirely above (or below) 0 would drive beta away without end.
Tensor lsq_plus_fake_quantize(const Tensor& x, const Tensor& scale, const Tensor& offset, const QScheme& scheme,
                              const std::vector<float>& grad_scale);

// PACT (Choi et al. 2018, "PACT: Parameterized Clipping Activation for Quantized Neural Networks"):
// y = fake-quant of clamp(x, 0, alpha) on the grid of pact_qparams (quantize_value's code clamp is the
// clip: codes [qmin, qmax] are reals [0, scale * (qmax - qmin)]). PACT's published straight-through
// gradients, with alpha the projected clipping level (scale * (qmax - qmin) up to float rounding):
//   dy/dx     = 1 for 0 <= x < alpha, 0 elsewhere
//   dy/dalpha = 1 for x >= alpha, 0 elsewhere
// The rounding-error term (r - v) / (qmax - qmin) that an LSQ-style derivative would add inside [0, alpha)
// is left out, as in the paper: alpha learns only from clipped values, balanced by its L2 decay.
Tensor pact_fake_quantize(const Tensor& x, const Tensor& alpha, const QScheme& scheme);

// ------------------------------------------------------------------------------------------- modules
//
// All three initialise on their first forward in training mode (from that batch; see each class) and
// refuse to hand out qparams() before (std::logic_error), as FakeQuantize does before its observer has
// seen data. In training mode every forward first writes the projected parameters back (a scale or alpha
// pushed below kMinScale by an optimizer step becomes the smallest valid one), so the stored parameter is
// always the one the forward used. Evaluation never changes the module: it applies the same projection
// without writing. A NaN or infinite parameter (a diverging run) throws std::invalid_argument naming it.
//
// Checkpoint state: the learned parameters and the buffers named in each class; load_state_dict restores
// a module whose forward is bit-identical.

// LSQ. Parameter "scale" (C); buffers "zero_point" (C) (integers stored as floats, fixed at
// initialisation) and "initialized" (1) (1 or 0).
//
// Initialisation from the first training batch:
//   zero point: symmetric schemes 0 (signed) or the midpoint (qmin + qmax + 1) / 2 (unsigned), as
//     choose_qparams; affine schemes the zero point a MinMax observer picks for that batch (LSQ does not
//     learn offsets: it keeps the batch's split of the codes between negative and positive values).
//   scale (LsqInit, quantizer_kind.h):
//     "lsq" (the paper's): s = 2 * mean(|x|) / sqrt(Qp), per channel over its slice;
//     "minmax": the MinMax observer's scale for that batch, s_mm;
//     "mse": of the candidates s_mm * k / 100, k = 1..100, the one whose grid (with the min/max zero point)
//       gives the batch the least squared error sum (x - dequant(quant(x)))^2 per channel, ties to the
//       larger step. From a converged float model "lsq" starts far coarser than the others (4-bit ResNet-20:
//       2 * mean|w| / sqrt(7) is about 1.4x the min/max step) and fine-tuning starts several points lower;
//       "mse" clips where min/max wastes levels on outliers, which matters most at 2 and 3 bits.
//   Each is then projected (>= kMinScale: an all-zero batch gives the smallest scale, as observers do).
//   With a BatchSync the chunks agree on the whole batch's range and mean |x|, and for "mse" add their
//   error sums in chunk order: the scale is the one a single process would pick.
// Gradient scale: g[c] = 1 / sqrt(N * Qp[c]), N = numel / C of the current input, Qp[c] the number of
// positive codes above the zero point, qmax - zp[c] (or, if the grid has none, zp[c] - qmin, the
// negative ones): qmax for a signed symmetric grid, 2^b - 1 for the unsigned-like post-ReLU grid whose
// zero point is qmin, as in the paper (Q_P for unsigned data). With LsqGradScale::Layer N is numel for
// per-channel steps too (PyTorch's learnable fake quantizer's choice; the paper's steps are per tensor):
// a per-channel step then learns sqrt(C) times slower. At 8 bits, where one clipped weight pulls on its
// step with Qp = 127 and one inside with at most 1/2, the channel's own N let steps random-walk to the
// floor in a ResNet-20 (experiments/cifar10_resnet20/ablation/lsq-tensor-n).
//
// Folded inputs (set_input_factors): a QAT layer with batch norm quantizes x = W * f, not the parameter W
// the optimizer updates, so the step s lives in x's units: it is the step u = s / f of a quantizer on W
// (the codes round(x / s) = round(W / u) are the same). The paper's rule is written for u: with
// dL/du = f dL/ds, an SGD step of u, u -= lr g dL/du, is s -= lr g f^2 dL/ds. Without the f^2 the step
// learns 1/f^2 times as fast relative to its size as the paper's: with f ~ 0.05 (a channel with a large
// variance, or a small gamma) that is 400x, and on a converged ResNet-20 at W8A8 such channels' steps grew
// 300- to 470-fold in 100 steps at lr 0.001 and zeroed their channels (experiments/cifar10_resnet20/results.md).
// So the gradient scale of channel c is g[c] * f[c]^2; a per-tensor step on per-channel factors takes the
// median of f^2 (one step for all channels has no single u; the median is not moved by a dead channel's
// extreme factor).
class LsqQuantizer : public Quantizer {
 public:
  // channels: the slice count along scheme.axis for a per-channel scheme (>= 1), ignored (1) per tensor.
  LsqQuantizer(const QScheme& scheme, int64_t channels = 1, LsqInit init = LsqInit::Lsq,
               LsqGradScale grad_scale = LsqGradScale::Channel);

  Tensor forward(const Tensor& x) override;
  // Throws std::logic_error before initialisation; std::invalid_argument for invalid stored values.
  QParams qparams() const override;
  std::string describe() const override;
  QuantizerMethod method() const override { return QuantizerMethod::Lsq; }

  // For an op that fake-quantizes its output in its own pass and takes this quantizer's backward into
  // its own (a QAT layer's batch norm, batch_norm_scaled_lsq): the step of a training-mode forward(x),
  // its scale projected as forward() does first; nothing before initialisation (the first batch sets
  // the scale from the values), outside training, for a per-channel or mid-rise scheme or for a subclass.
  std::optional<LsqStep> training_step(const Tensor& x);

  bool initialized() const;
  LsqInit init_method() const { return init_; }
  LsqGradScale grad_scale() const { return grad_scale_; }
  int64_t channels() const { return channels_; }
  // The learned parameter, a live handle (C).
  const Tensor& scale() const { return scale_; }
  // Qp, the code count the gradient scale and the "lsq" init use, for a channel with this zero point
  // (see the class comment).
  virtual int32_t positive_levels(int32_t zero_point) const;
  // For a weight quantizer whose input is its layer's latent weight scaled per output channel, x = W * f
  // (QatLayer's batch-norm folding, f = gamma / sqrt(running_var + eps)): the `count` factors f (one per output
  // channel; gamma's sign does not matter), set before each forward; empty (the default) when x is the
  // parameter itself. The step's gradient is then multiplied by f^2 (the class comment, "Folded
  // inputs"). Throws std::invalid_argument for a factor that is not finite, or a count that is neither
  // the channel count nor (for one step over all channels) any. The layer sets them right before each
  // training forward; the chunks of a chunked step (nn/train/chunked_step.h) run one at a time and all
  // compute the same factors (the running variance they read changes only after the last chunk).
  void set_input_factors(const float* f, size_t count);

  // Bounds on each channel's step relative to the values it quantizes (off: k = 0, the default), for
  // weight quantizers: every training forward keeps s[c] within
  //   [max|x_c| / (k * Qp[c]), 15/8 max|x_c|]
  // (the channel's min/max step divided by k; and a step at which its largest value, 8/15 of a step,
  // still rounds to +-1, where from 2 max|x_c| on every code is 0; on a mid-rise grid, whose codes are
  // never 0, 15/32 max|x_c|, where that value still rounds to +-3), writing the bounded step back as
  // project() does. With batch norm after the layer the loss is
  // blind to a channel's overall scale, so nothing holds its step to its weights: at 2 bits LSQ's steps
  // drifted to the floor (every weight clipped to the tiny step: the channel's output is its bias) or far
  // above the weights (every code 0) in a few epochs (quant/README.md section 4; results.md of
  // experiments/cifar10_resnet20, "Low bits"). An all-zero channel keeps kMinScale. Throws std::invalid_argument unless k is 0 or
  // finite and >= 1. Not checkpoint state: the QConfig that builds the quantizer carries it.
  void set_step_bounds(float k);
  float step_bounds() const { return step_bounds_; }

 protected:
  // For LsqPlusQuantizer: registers "scale" and "initialized" only; the subclass adds its offset.
  LsqQuantizer(std::string type, const QScheme& scheme, int64_t channels, LsqInit init, bool fixed_zero_point,
               LsqGradScale grad_scale);
  // Initialises the grid from x (the class comment); store_initial writes the result in place (the
  // optimizer already holds the parameter handles).
  void initialize(const Tensor& x);
  virtual void store_initial(const std::vector<float>& scale, const std::vector<int32_t>& zero_point);
  // Writes max(scale, kMinScale) back into the parameter (training only), within the step bounds for x
  // when they are set. On a mid-rise grid without bounds each step is also held to at most max|x_c|:
  // with its step above the largest value the grid's codes are all +-1 (it has no 0), every value
  // quantizes to +-s whatever its size, and nothing in the forward pass answers the straight-through
  // gradients that shrink the values, which shrink without end. A W4A4 ResNet-20 on mid-rise weights
  // (its convs' batch norm folded in) saw one channel's step pass its weights in the warm-up epoch and
  // its folded weights fall from 1.1 to 2e-5 in 34 batches while the step stayed near 1.5, until its batch
  // variance overflowed (experiments/cifar10_resnet20/ablation/w4-mid-rise). At s = max|x_c| the
  // output's size follows the values' again.
  void project(const Tensor& x);
  // g[c] = 1 / sqrt(N * Qp[c]) for input x on a grid with these zero points, times f[c]^2 with input
  // factors (the class comment). (C)
  std::vector<float> grad_scales(const Tensor& x, const std::vector<int32_t>& zero_point) const;
  void require_initialized() const;
  // Sum of |x| per channel slice (C), in double, and the number of values in each slice.
  std::vector<double> abs_sums(const Tensor& x, int64_t* per_channel) const;
  // The whole batch's min/max grid and (C) mean |x|, agreed between the chunks when there are any.
  QParams batch_grid(const Tensor& x, std::vector<double>* mean_abs);
  // The "mse" init's step per channel (C) for x on grid qp (the whole batch's, with chunks).
  std::vector<float> mse_scales(const Tensor& x, const QParams& qp);
  void finish_init(std::vector<float> scale, const std::vector<int32_t>& zero_point);

  LsqInit init_;
  LsqGradScale grad_scale_;
  int64_t channels_;
  std::vector<float> input_factors_;  // set_input_factors: (OC) or empty
  float step_bounds_ = 0.0f;          // set_step_bounds: k, or 0
  // initialize()'s values agreed between chunks: written once by the exchange, read by every chunk.
  QParams agreed_grid_;
  std::vector<double> agreed_mean_abs_;  // (C)
  std::vector<float> agreed_scale_;      // (C) "mse"'s pick
  Tensor scale_;        // (C) parameter
  Tensor zero_point_;   // (C) buffer, LSQ only
  Tensor initialized_;  // (1) buffer
};

// LSQ+. Parameters "scale" (C) and "offset" (C) (beta, real units); buffer "initialized" (1). Needs an
// affine scheme (a symmetric grid's zero point is fixed; make_learnable_quantizer gives LSQ there).
//
// Initialisation from the first training batch: the MinMax observer's scale s and zero point z for that
// batch (the paper's min/max initialisation: s = (max - min) / (qmax - qmin), beta = min - qmin * s up to
// the nudge of z), beta = -s * z; with init "lsq" the scale is the LSQ formula instead, with the same z.
// Gradient scale: g = 1 / sqrt(N * Qp) with Qp = qmax - qmin (the paper's p for its grid [0, 2^b - 1]);
// fixed, since the zero point moves during training. The offset's gradient is scaled by the same g: like
// the scale, it is one number fed by the N elements of its channel.
class LsqPlusQuantizer : public LsqQuantizer {
 public:
  LsqPlusQuantizer(const QScheme& scheme, int64_t channels = 1, LsqInit init = LsqInit::MinMax,
                   LsqGradScale grad_scale = LsqGradScale::Channel);

  Tensor forward(const Tensor& x) override;
  QParams qparams() const override;
  std::string describe() const override;
  QuantizerMethod method() const override { return QuantizerMethod::LsqPlus; }
  int32_t positive_levels(int32_t zero_point) const override;
  // The learned offset beta, a live handle (C).
  const Tensor& offset() const { return offset_; }

 protected:
  void store_initial(const std::vector<float>& scale, const std::vector<int32_t>& zero_point) override;

 private:
  Tensor offset_;  // (C) parameter
};

// PACT. Parameter "alpha" (C); buffer "initialized" (1). Needs an affine scheme (the zero point is qmin).
//
// Initialisation on the first training batch: alpha = init_alpha when given (> 0), else the batch's
// maximum (per channel slice): the range a min/max observer of a ReLU output would pick, so training
// starts from the observer's grid. A batch with no positive value says nothing about the range: alpha = 1.
// The trainer adds decay * l2_penalty() to the loss (decay_loss() gives it as an autograd tensor).
class PactQuantizer : public Quantizer {
 public:
  // init_alpha: 0 for the first batch's maximum, else a fixed starting value (> 0, finite).
  PactQuantizer(const QScheme& scheme, int64_t channels = 1, float init_alpha = 0.0f, double l2_decay = 1e-4);

  Tensor forward(const Tensor& x) override;
  QParams qparams() const override;
  std::string describe() const override;
  QuantizerMethod method() const override { return QuantizerMethod::Pact; }

  bool initialized() const;
  int64_t channels() const { return channels_; }
  const Tensor& alpha() const { return alpha_; }
  float init_alpha() const { return init_alpha_; }
  // sum_c alpha[c]^2 (the value, for logs).
  float l2_penalty() const;
  // decay * sum_c alpha[c]^2 as a scalar autograd tensor: added to the loss, it gives alpha the gradient
  // 2 * decay * alpha.
  Tensor decay_loss() const;

  double decay = 1e-4;  // the L2 weight on alpha (PACT's regulariser)

 private:
  void require_initialized() const;

  int64_t channels_;
  float init_alpha_;
  Tensor alpha_;        // (C) parameter
  Tensor initialized_;  // (1) buffer
};

// method: Lsq, LsqPlus or Pact; channels as for the constructors. LsqPlus on a symmetric scheme gives
// an LsqQuantizer: a symmetric grid has no offset to learn (the LSQ+ paper, too, learns offsets for
// activations only). Throws std::invalid_argument for Observer (not a learned grid) and for schemes a
// method cannot use (PACT on a symmetric scheme). init: where LSQ's and LSQ+'s step starts; nothing keeps
// each one's default (LSQ the paper's formula, LSQ+ min/max); PACT has none and throws if given one.
// grad_scale: LSQ's and LSQ+'s (the LsqQuantizer comment); PACT ignores it. step_bounds: an LSQ step's
// (LsqQuantizer::set_step_bounds); 0 for the others, which throw otherwise.
std::shared_ptr<Quantizer> make_learnable_quantizer(QuantizerMethod method, const QScheme& scheme,
                                                    int64_t channels = 1, std::optional<LsqInit> init = std::nullopt,
                                                    LsqGradScale grad_scale = LsqGradScale::Channel,
                                                    float step_bounds = 0.0f);

}  // namespace qatlab
