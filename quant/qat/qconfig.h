// qconfig.h: which quantizer goes where: global weight/activation settings with overrides per layer,
// by dotted module name or by layer type.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "quant/engine/qscheme.h"
#include "quant/qat/quantizer_kind.h"

namespace qatlab {

// The override key for the outputs of residual blocks' branches: the values each residual add reads (the
// last layer of its body, and of its shortcut when that has layers), e.g. "residual-branches=:8". The
// papers' low-bit ResNets quantize each conv's input at A bits and add the branches in full precision; an
// integer graph needs a grid for them, and 8 bits is that comparison's (quant/README.md section 5, "Which
// bits the add reads").
inline constexpr const char* kResidualBranches = "residual-branches";

// The override key for the residual adds' outputs, the residual stream, e.g. "residual-sums=:8": every
// residual sum on those bits, and a conv or linear layer that reads a sum at fewer bits than its own
// activation bits requantizes it to those first (QatLayer::input_requant; the model input is never
// requantized). The papers' low-bit ResNets read A-bit values in every conv but the first and add the
// branches in full precision; this keeps the stream at 8 bits in the integer graph (quant/README.md
// section 5, "A residual stream of its own"). A block's name still sets its own sum's bits.
inline constexpr const char* kResidualSums = "residual-sums";

// One quantizer's settings: its scheme and how it finds its grid: an observer's range (method
// "observer"), or a grid learned by gradient descent: "lsq" (learned step size), "lsq+" (step and
// offset), "pact" (learned clipping level; activations after a ReLU only).
// lsq_init: where an LSQ or LSQ+ step starts (quantizer_kind.h); nothing keeps the method's default (LSQ the
// paper's formula, LSQ+ the batch's min/max grid). lsq_grad_scale: the N of an LSQ or LSQ+ step's gradient
// scale (quantizer_kind.h); nothing is "channel". lsq_step_bounds: below.
struct QuantizerSpec {
  QScheme scheme;
  ObserverKind observer = ObserverKind::MinMax;
  QuantizerMethod method = QuantizerMethod::Observer;
  std::optional<LsqInit> lsq_init;
  std::optional<LsqGradScale> lsq_grad_scale;
  // k of an LSQ weight step's bounds (LsqQuantizer::set_step_bounds); nothing: none.
  std::optional<float> lsq_step_bounds;
  std::string describe() const;
};

// Bit widths for one layer: its weights, and its output activations. 0 keeps the global value.
struct LayerBits {
  int weight_bits = 0, activation_bits = 0;
};

// Which codes b-bit weights use (--weight-range): narrow, [-(2^(b-1) - 1), 2^(b-1) - 1], an odd count
// centred on 0 (2 bits: [-1, 1], three levels); or full, [-2^(b-1), 2^(b-1) - 1], every code of b bits
// (2 bits: [-2, 1], four levels, as LSQ's low-bit weights). Full applies below 8 bits only: 8-bit weights
// stay [-127, 127] whatever the setting, the int8 contract (TFLite's; the integer LSTM's int16 pair sums
// rely on it: quant/README.md section 1). Or mid-rise, below 8 bits too: 2^b levels symmetric around 0
// without a level at 0, the odd codes [-(2^b - 1), 2^b - 1] on half a level's distance (2 bits:
// {-3, -1, 1, 3}; QScheme::mid_rise), DoReFa's and PACT's weight grid. Every way the
// weights are symmetric (zero point 0), so an integer graph needs no weight zero-point correction.
enum class WeightRange { Narrow, Full, MidRise };
// "narrow" | "full" | "mid-rise". Throws std::invalid_argument naming `what` and the text.
WeightRange parse_weight_range(const std::string& text, const std::string& what);
const char* weight_range_name(WeightRange range);

struct QConfig {
  // Weights: symmetric, narrow range ([-127, 127] at 8 bits), per output channel, min/max observer.
  // (weight.scheme.narrow_range false: WeightRange::Full, or MidRise with weight_mid_rise; weight_for
  // keeps 8-bit layers narrow.)
  QuantizerSpec weight{QScheme{8, true, true, true, 0, true}, ObserverKind::MinMax, QuantizerMethod::Observer,
                       std::nullopt, std::nullopt, std::nullopt};
  // Activations: affine signed (int8 [-128, 127] at 8 bits), per tensor, moving-average min/max.
  QuantizerSpec activation{QScheme{8, true, false, false, 0, false}, ObserverKind::Ema, QuantizerMethod::Observer,
                           std::nullopt, std::nullopt, std::nullopt};
  // Overrides: a key is a dotted module name of the float model ("features.0", "classifier.4"), a layer
  // type ("Conv2d", "Linear", "Residual": the sums), "input" (the model's input quantizer), kResidualBranches
  // or kResidualSums (activation bits only). A name beats kResidualBranches and kResidualSums, which beat
  // a type.
  std::map<std::string, LayerBits> layer_bits;
  // WeightRange::MidRise (set with set_weight_range): weight_for gives layers below 8 bits a mid-rise grid.
  // Not on `weight.scheme` itself, whose bits may be 8 (a mid-rise scheme has at most 7).
  bool weight_mid_rise = false;

  // A layer's weight quantizer: `weight` with the layer's bits, narrow at 8 bits, mid-rise below 8 with
  // weight_mid_rise (see WeightRange).
  QuantizerSpec weight_for(const std::string& name, const std::string& type) const;
  // `residual_branch`: the layer's output is the output of a residual block's branch (what the add reads).
  // Type "Residual": a residual sum (kResidualSums applies).
  QuantizerSpec activation_for(const std::string& name, const std::string& type, bool residual_branch = false) const;

  // Settings from the command line: bits 2..8, observer names, "NAME=W:A" overrides (either side may be
  // empty to keep the global value, e.g. "classifier.4=8:"), the LSQ init for every LSQ/LSQ+ quantizer
  // ("" keeps each method's default). Throws std::invalid_argument on bad values.
  static QConfig from_options(int wbits, int abits, bool per_channel, const std::string& weight_observer,
                              const std::string& activation_observer, const std::vector<std::string>& layer_bits,
                              const std::string& weight_method = "observer",
                              const std::string& activation_method = "observer", const std::string& lsq_init = "");
  WeightRange weight_range() const {
    return weight_mid_rise ? WeightRange::MidRise : weight.scheme.narrow_range ? WeightRange::Narrow : WeightRange::Full;
  }
  // Sets the gradient scale's N of every LSQ / LSQ+ quantizer (--lsq-grad-scale); throws
  // std::invalid_argument when there is none.
  void set_lsq_grad_scale(LsqGradScale scale);
  // Bounds every LSQ weight step to [its channel's min/max step / k, 15/8 max |w|] (--lsq-step-bounds;
  // LsqQuantizer::set_step_bounds); throws std::invalid_argument when the weights learn no step or k is
  // not finite and >= 1.
  void set_lsq_step_bounds(float k);
  void set_weight_range(WeightRange range) {
    weight.scheme.narrow_range = range == WeightRange::Narrow;
    weight_mid_rise = range == WeightRange::MidRise;
  }
  void validate() const;
  // A few lines for logs and `info`.
  std::string describe() const;
};

// "features.0=8:8" -> {"features.0", {8, 8}}. Throws std::invalid_argument naming the text.
std::pair<std::string, LayerBits> parse_layer_bits(const std::string& text);

}  // namespace qatlab
