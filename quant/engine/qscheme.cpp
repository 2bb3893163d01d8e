// qscheme.cpp: code ranges of a quantization scheme and the range -> (scale, zero point) rules.
#include "quant/engine/qscheme.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace qatlab {
namespace {

std::string num_str(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

int32_t QScheme::quant_min() const {
  validate();
  if (mid_rise) return -quant_max();
  const int32_t lowest = is_signed ? -(int32_t{1} << (bits - 1)) : 0;
  return narrow_range ? lowest + 1 : lowest;
}

int32_t QScheme::quant_max() const {
  validate();
  if (mid_rise) return (int32_t{1} << bits) - 1;
  return is_signed ? (int32_t{1} << (bits - 1)) - 1 : (int32_t{1} << bits) - 1;
}

void QScheme::validate() const {
  if (bits < 2 || bits > 8) throw std::invalid_argument("bits must be in 2..8, got " + std::to_string(bits));
  if (per_channel && axis < 0)
    throw std::invalid_argument("per-channel quantization axis must be >= 0, got " + std::to_string(axis));
  if (mid_rise && !(is_signed && symmetric && !narrow_range && bits <= 7))
    throw std::invalid_argument("a mid-rise grid must be signed, symmetric, not narrow and of 2 to 7 bits, got " +
                                std::to_string(bits) + "-bit " + (is_signed ? "signed" : "unsigned") +
                                (symmetric ? " symmetric" : " affine") + (narrow_range ? " narrow" : ""));
}

std::string QScheme::describe() const {
  std::ostringstream s;
  s << bits << "-bit " << (is_signed ? "signed" : "unsigned") << " " << (symmetric ? "symmetric" : "affine") << " ";
  if (per_channel)
    s << "per-channel(axis " << axis << ")";
  else
    s << "per-tensor";
  if (narrow_range) s << " narrow";
  if (mid_rise) s << " mid-rise";
  s << ", " << (mid_rise ? "odd " : "") << "q in [" << quant_min() << ", " << quant_max() << "]";
  return s.str();
}

int64_t QParams::levels() const {
  const int64_t span = int64_t{quant_max} - quant_min;
  return odd_codes ? span / 2 + 1 : span + 1;
}

void QParams::validate() const {
  if (scale.empty() || scale.size() != zero_point.size())
    throw std::invalid_argument("QParams: " + std::to_string(scale.size()) + " scales and " +
                                std::to_string(zero_point.size()) + " zero points (expected equal, >= 1)");
  if (!per_channel() && scale.size() != 1)
    throw std::invalid_argument("QParams: per-tensor (axis -1) but " + std::to_string(scale.size()) + " scales");
  if (axis < -1) throw std::invalid_argument("QParams: axis must be -1 (per tensor) or >= 0, got " + std::to_string(axis));
  if (!(quant_min < quant_max))
    throw std::invalid_argument("QParams: quant_min " + std::to_string(quant_min) + " must be below quant_max " +
                                std::to_string(quant_max));
  for (size_t c = 0; c < scale.size(); ++c) {
    if (!(std::isfinite(scale[c]) && scale[c] > 0.0f))
      throw std::invalid_argument("QParams: scale[" + std::to_string(c) + "] = " + num_str(scale[c]) +
                                  ", expected finite and > 0");
    if (zero_point[c] < quant_min || zero_point[c] > quant_max)
      throw std::invalid_argument("QParams: zero_point[" + std::to_string(c) + "] = " + std::to_string(zero_point[c]) +
                                  " outside [" + std::to_string(quant_min) + ", " + std::to_string(quant_max) + "]");
    if (odd_codes && zero_point[c] != 0)
      throw std::invalid_argument("QParams: zero_point[" + std::to_string(c) + "] = " + std::to_string(zero_point[c]) +
                                  " on a mid-rise grid (odd codes), expected 0");
  }
  if (odd_codes && !(quant_min == -quant_max && quant_max % 2 == 1))
    throw std::invalid_argument("QParams: odd codes need a range [-q, q] with q odd, got [" + std::to_string(quant_min) +
                                ", " + std::to_string(quant_max) + "]");
}

ScaleZeroPoint choose_scale_zero_point(const QScheme& scheme, float min_val, float max_val) {
  if (!std::isfinite(min_val) || !std::isfinite(max_val))
    throw std::invalid_argument("choose_qparams: non-finite range [" + num_str(min_val) + ", " + num_str(max_val) + "]");
  if (min_val > max_val)
    throw std::invalid_argument("choose_qparams: min " + num_str(min_val) + " > max " + num_str(max_val));
  const int32_t qmin = scheme.quant_min(), qmax = scheme.quant_max();
  // Widen to contain 0: real zero (padding, ReLU's flat half) must map to a code exactly.
  const double lo = std::min<double>(min_val, 0.0);
  const double hi = std::max<double>(max_val, 0.0);

  ScaleZeroPoint out;
  if (scheme.symmetric) {
    const double amax = std::max(-lo, hi);
    const double scale = std::max(amax / ((qmax - qmin) / 2.0), kMinScale);
    out.scale = static_cast<float>(scale);
    // Unsigned: the middle code (128 for [0, 255] and for [1, 255]); integer division rounds [0, 255]'s
    // 127.5 up, as PyTorch does.
    out.zero_point = scheme.is_signed ? 0 : (qmin + qmax + 1) / 2;
  } else {
    const double scale = std::max((hi - lo) / (qmax - qmin), kMinScale);
    out.scale = static_cast<float>(scale);
    // The nudge: an integer zero point, computed from the scale actually stored, so that real 0 is a
    // code. lo <= 0 keeps it in range up to rounding; the clamp covers the kMinScale case and ties.
    const double zp = qmin - std::nearbyint(lo / static_cast<double>(out.scale));
    out.zero_point = static_cast<int32_t>(std::clamp<double>(zp, qmin, qmax));
  }
  return out;
}

QParams grid_of(const QScheme& scheme, size_t channels) {
  QParams qp;
  qp.axis = scheme.per_channel ? scheme.axis : -1;
  qp.quant_min = scheme.quant_min();
  qp.quant_max = scheme.quant_max();
  qp.odd_codes = scheme.mid_rise;
  qp.scale.resize(channels);
  qp.zero_point.resize(channels);
  return qp;
}

QParams choose_qparams(const QScheme& scheme, std::span<const float> min_vals, std::span<const float> max_vals) {
  scheme.validate();
  if (min_vals.empty() || min_vals.size() != max_vals.size())
    throw std::invalid_argument("choose_qparams: " + std::to_string(min_vals.size()) + " minima and " +
                                std::to_string(max_vals.size()) + " maxima (expected equal, >= 1)");
  if (!scheme.per_channel && min_vals.size() != 1)
    throw std::invalid_argument("choose_qparams: per-tensor scheme given " + std::to_string(min_vals.size()) +
                                " ranges (expected 1)");
  QParams qp = grid_of(scheme, min_vals.size());
  for (size_t c = 0; c < min_vals.size(); ++c) {
    try {
      const ScaleZeroPoint sz = choose_scale_zero_point(scheme, min_vals[c], max_vals[c]);
      qp.scale[c] = sz.scale;
      qp.zero_point[c] = sz.zero_point;
    } catch (const std::invalid_argument& e) {
      if (min_vals.size() == 1) throw;
      throw std::invalid_argument(std::string(e.what()) + " for channel " + std::to_string(c));
    }
  }
  return qp;
}

}  // namespace qatlab
