// quantizer_kind.h: the kinds of quantizer a QConfig chooses: how an observer finds a range, and how a
// grid is found at all (observed, or learned: LSQ, LSQ+, PACT). Code dispatches on these enums; the
// names are for options, stored settings and printouts, and parsed in one place (here).
#pragma once

#include <string>

namespace qatlab {

// How an observer turns what it saw into a range (observer.h).
enum class ObserverKind { MinMax, Ema, Histogram, Percentile };
// How a quantizer finds its grid: an observer's range, or one learned by gradient descent.
enum class QuantizerMethod { Observer, Lsq, LsqPlus, Pact };
// Where a learned step size (LSQ, LSQ+) starts, from the first training batch (learnable_quantizer.h):
// the LSQ paper's formula, the min/max grid of that batch, or the step minimising that batch's squared
// quantization error.
enum class LsqInit { Lsq, MinMax, Mse };
// N in a learned step's gradient scale 1 / sqrt(N Qp) (learnable_quantizer.h): the values of the step's own
// channel (a per-tensor step: the whole tensor's), or always the whole tensor's, as PyTorch's learnable fake
// quantizer takes it for per-channel steps too (sqrt(channels) times smaller). Per tensor the two agree.
enum class LsqGradScale { Channel, Layer };

// "minmax", "ema", "histogram", "percentile".
const char* observer_kind_name(ObserverKind kind);
// The reverse; throws std::invalid_argument naming `what` and the known names.
ObserverKind parse_observer_kind(const std::string& name, const std::string& what = "observer");
// Whether the kind keeps one range per channel (histogram and percentile are per-tensor only).
bool observer_supports_per_channel(ObserverKind kind);

// "observer", "lsq", "lsq+", "pact".
const char* quantizer_method_name(QuantizerMethod method);
QuantizerMethod parse_quantizer_method(const std::string& name, const std::string& what = "quantizer method");

// "lsq", "minmax", "mse".
const char* lsq_init_name(LsqInit init);
LsqInit parse_lsq_init(const std::string& name, const std::string& what = "LSQ initialisation");

// "channel", "layer".
const char* lsq_grad_scale_name(LsqGradScale scale);
LsqGradScale parse_lsq_grad_scale(const std::string& name, const std::string& what = "LSQ gradient scale");

}  // namespace qatlab
