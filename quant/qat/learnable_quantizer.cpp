// learnable_quantizer.cpp: the LSQ, LSQ+ and PACT ops (fake-quant forward, learned-parameter backward) and
// their Quantizer modules.
//
// Shape letters: C channels along the scheme's axis; an input is seen as (outer, C, inner), and each
// (outer, channel) row of `inner` contiguous values shares one scale and zero point.
#include "quant/qat/learnable_quantizer.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/format.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/round_odd.h"
#include "quant/qat/observer.h"

namespace qatlab {
namespace {

struct Rows {
  int64_t outer = 1, channels = 1, inner = 1;
};

// The (outer, C, inner) view of x for C parameters along scheme.axis (per tensor: one row), checked.
Rows rows_for(const Tensor& x, const QScheme& scheme, int64_t C, const char* who) {
  QATLAB_CHECK(x.defined(), std::string(who) + ": undefined input");
  Rows r;
  if (!scheme.per_channel) {
    r.inner = x.numel();
    return r;
  }
  if (scheme.axis >= x.dim() || x.size(scheme.axis) != C)
    throw std::invalid_argument(std::string(who) + ": per-channel parameters of " + std::to_string(C) +
                                " channels along axis " + std::to_string(scheme.axis) + " do not fit input " +
                                shape_str(x.shape()));
  for (int64_t d = 0; d < scheme.axis; ++d) r.outer *= x.size(d);
  r.channels = C;
  for (int64_t d = scheme.axis + 1; d < x.dim(); ++d) r.inner *= x.size(d);
  return r;
}

// Calls f(begin, count, channel) for every row of x, in element order.
template <class F>
void for_each_row(const Rows& r, F f) {
  const int64_t rows = r.outer * r.channels;
  for (int64_t row = 0; row < rows; ++row) f(row * r.inner, r.inner, row % r.channels);
}

// Rows are cut into chunks of this many elements: the unit of parallel work and of the partial sums
// the scale's gradient is added up from, in a fixed order whatever the thread count.
constexpr int64_t kChunk = 4096;

// Calls sum = f(begin, count, channel) for every chunk of every row (in parallel when x is large) and
// adds the chunks' sums into acc[channel] in element order.
template <class F>
void for_each_chunk(const Rows& r, std::vector<double>& acc, F f) {
  const int64_t rows = r.outer * r.channels, per_row = (r.inner + kChunk - 1) / kChunk, items = rows * per_row;
  std::vector<double> partial(static_cast<size_t>(items));  // (rows * chunks per row)
#pragma omp parallel for schedule(static) if (rows * r.inner >= kParallelMin)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t row = item / per_row, begin = (item % per_row) * kChunk;
    partial[item] = f(row * r.inner + begin, std::min(kChunk, r.inner - begin), row % r.channels);
  }
  for (int64_t item = 0; item < items; ++item) acc[(item / per_row) % r.channels] += partial[item];
}

// A learned (C) parameter tensor for a scheme: C = 1 per tensor.
void check_parameter(const Tensor& p, const QScheme& scheme, const char* who, const char* what) {
  QATLAB_CHECK(p.defined() && p.dim() == 1 && p.numel() >= 1,
               std::string(who) + ": " + what + " must be a (C) tensor, got " +
                   (p.defined() ? shape_str(p.shape()) : std::string("undefined")));
  QATLAB_CHECK(scheme.per_channel || p.numel() == 1, std::string(who) + ": per-tensor scheme but " + what + " " +
                                                         shape_str(p.shape()) + " (expected (1))");
}

void check_grad_scale(const std::vector<float>& g, int64_t C, const char* who) {
  QATLAB_CHECK(static_cast<int64_t>(g.size()) == C, std::string(who) + ": " + std::to_string(g.size()) +
                                                        " gradient scales for " + std::to_string(C) + " channels");
}

// The projected clipping level of PACT: at least the one whose scale is kMinScale.
float projected_alpha(float alpha, int32_t levels, int64_t c) {
  if (!std::isfinite(alpha))
    throw std::invalid_argument("PactQuantizer: alpha[" + std::to_string(c) + "] = " + num_str(alpha) +
                                ", expected a finite value");
  return std::max(alpha, static_cast<float>(kMinScale * levels));
}

float pact_scale(float alpha_projected, int32_t levels) {
  return std::max(static_cast<float>(static_cast<double>(alpha_projected) / levels), static_cast<float>(kMinScale));
}

// The integer zero point of a scheme before any data: symmetric grids' fixed one, else the code of 0
// clamped into range (a placeholder; initialisation replaces it).
int32_t default_zero_point(const QScheme& s) {
  return s.symmetric && !s.is_signed ? (s.quant_min() + s.quant_max() + 1) / 2
                                     : std::clamp<int32_t>(0, s.quant_min(), s.quant_max());
}

// LSQ+'s zero point before its clamp into the code range: nearbyint(-offset / scale), in double, where the
// quotient of any two floats is exact to far below a code (and cannot overflow).
double unclamped_zero_point(float scale, float offset) {
  return std::nearbyint(-static_cast<double>(offset) / static_cast<double>(scale));
}

// Compact "a" or "a..b (C ch)" for describe().
std::string range_str(const std::vector<float>& v) {
  std::ostringstream os;
  if (v.size() == 1) {
    os << v[0];
  } else {
    const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    os << *lo << ".." << *hi << " (" << v.size() << " ch)";
  }
  return os.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------- grids

float projected_scale(float s, const std::string& who, int64_t c) {
  if (!std::isfinite(s))
    throw std::invalid_argument(who + ": scale[" + std::to_string(c) + "] = " + num_str(s) + ", expected a finite value");
  return std::max(s, static_cast<float>(kMinScale));
}

QParams lsq_qparams(const Tensor& scale, const std::vector<int32_t>& zero_point, const QScheme& scheme) {
  check_parameter(scale, scheme, "lsq", "scale");
  const int64_t C = scale.numel();
  QATLAB_CHECK(static_cast<int64_t>(zero_point.size()) == C, "lsq: " + std::to_string(zero_point.size()) +
                                                                 " zero points for " + std::to_string(C) + " scales");
  QParams qp = grid_of(scheme, static_cast<size_t>(C));
  const float* s = scale.data();
  for (int64_t c = 0; c < C; ++c) qp.scale[c] = projected_scale(s[c], "LsqQuantizer", c);
  qp.zero_point = zero_point;
  qp.validate();
  return qp;
}

int32_t lsq_plus_zero_point(float scale, float offset, int32_t quant_min, int32_t quant_max) {
  QATLAB_CHECK(std::isfinite(offset), "LsqPlusQuantizer: offset " + num_str(offset) + ", expected a finite value");
  QATLAB_CHECK(std::isfinite(scale) && scale > 0.0f,
               "LsqPlusQuantizer: scale " + num_str(scale) + ", expected finite and > 0");
  // The clamp happens before the conversion so that a huge quotient cannot overflow the integer.
  const double z = unclamped_zero_point(scale, offset);
  return static_cast<int32_t>(std::clamp<double>(z, quant_min, quant_max));
}

QParams lsq_plus_qparams(const Tensor& scale, const Tensor& offset, const QScheme& scheme) {
  check_parameter(scale, scheme, "lsq+", "scale");
  check_parameter(offset, scheme, "lsq+", "offset");
  const int64_t C = scale.numel();
  QATLAB_CHECK(offset.numel() == C, "lsq+: offset " + shape_str(offset.shape()) + " for scale " + shape_str(scale.shape()));
  QParams qp = grid_of(scheme, static_cast<size_t>(C));
  const float* s = scale.data();
  const float* b = offset.data();
  for (int64_t c = 0; c < C; ++c) {
    qp.scale[c] = projected_scale(s[c], "LsqPlusQuantizer", c);
    qp.zero_point[c] = lsq_plus_zero_point(qp.scale[c], b[c], qp.quant_min, qp.quant_max);
  }
  qp.validate();
  return qp;
}

QParams pact_qparams(const Tensor& alpha, const QScheme& scheme) {
  check_parameter(alpha, scheme, "pact", "alpha");
  const int64_t C = alpha.numel();
  QParams qp = grid_of(scheme, static_cast<size_t>(C));
  const int32_t levels = qp.quant_max - qp.quant_min;
  const float* a = alpha.data();
  for (int64_t c = 0; c < C; ++c) {
    qp.scale[c] = pact_scale(projected_alpha(a[c], levels, c), levels);
    qp.zero_point[c] = qp.quant_min;
  }
  qp.validate();
  return qp;
}

// ------------------------------------------------------------------------------------------------ ops

Tensor lsq_fake_quantize(const Tensor& x, const Tensor& scale, const std::vector<int32_t>& zero_point,
                         const QScheme& scheme, const std::vector<float>& grad_scale) {
  const QParams qp = lsq_qparams(scale, zero_point, scheme);
  const int64_t C = scale.numel();
  check_grad_scale(grad_scale, C, "lsq_fake_quantize");
  const Rows rows = rows_for(x, scheme, C, "lsq_fake_quantize");
  // The values: fake_quantize itself (on a detached handle, so it records nothing), hence bit-identical.
  Tensor y = fake_quantize(x.detach(), qp);
  std::vector<float> inv(C);  // (C) 1 / s in float, as fake_quantize and the integer graph compute it
  for (int64_t c = 0; c < C; ++c) inv[c] = 1.0f / qp.scale[c];
  record_op(y, "lsq_fake_quantize", {x, scale},
            [x, scale, rows, inv, per_channel = scheme.per_channel, zps = qp.zero_point, qmin = qp.quant_min,
             qmax = qp.quant_max, odd = qp.odd_codes, grad_scale](const Tensor& grad_out) {
              const float* px = x.data();
              const float* g = grad_out.data();
              // Each element of gx is written once: a fresh buffer is assigned, not zeroed.
              bool fresh = false;
              float* gx = x.requires_grad() ? x.grad_for_write(&fresh) : nullptr;
              std::vector<double> gs(inv.size(), 0.0);  // (C)
              // Bounds on the un-clamped offset, small integers and exact in float (as in fake_quantize).
              const auto lo = [&](int64_t c) { return static_cast<float>(qmin - zps[c]); };
              const auto hi = [&](int64_t c) { return static_cast<float>(qmax - zps[c]); };
              if (per_channel) {
                for_each_chunk(rows, gs, [&](int64_t begin, int64_t n, int64_t c) {
                  return lsq_backward_run(px + begin, g + begin, gx ? gx + begin : nullptr, fresh, n, inv[c], lo(c),
                                          hi(c), odd);
                });
              } else {
                // Per tensor, plane by plane of (N, C, S): the order in which batch_norm_scaled_lsq, the
                // same quantizer fused into a QAT layer's batch norm, adds the same terms.
                const int64_t n = x.dim() >= 1 ? x.size(0) : 1, c = x.dim() >= 2 ? x.size(1) : 1;
                const int64_t s = x.numel() / std::max<int64_t>(n * c, 1);
                gs[0] = lsq_backward_planes(px, g, gx, fresh, n, c, s, inv[0], lo(0), hi(0), odd);
              }
              if (scale.requires_grad()) {
                float* gsc = scale.mutable_grad();
                for (size_t c = 0; c < gs.size(); ++c) gsc[c] += static_cast<float>(gs[c] * grad_scale[c]);
              }
            });
  return y;
}

Tensor lsq_plus_fake_quantize(const Tensor& x, const Tensor& scale, const Tensor& offset, const QScheme& scheme,
                              const std::vector<float>& grad_scale) {
  const QParams qp = lsq_plus_qparams(scale, offset, scheme);
  const int64_t C = scale.numel();
  check_grad_scale(grad_scale, C, "lsq_plus_fake_quantize");
  const Rows rows = rows_for(x, scheme, C, "lsq_plus_fake_quantize");
  Tensor y = fake_quantize(x.detach(), qp);
  std::vector<float> inv(C);  // (C)
  // (C) 1 where the zero point sits at a code-range bound because -beta / s lies beyond it: there the
  // realised offset -s * zp no longer follows beta, and the backward is LSQ's with that fixed zero point.
  std::vector<char> pinned(C);
  for (int64_t c = 0; c < C; ++c) {
    inv[c] = 1.0f / qp.scale[c];
    const double z = unclamped_zero_point(qp.scale[c], offset.data()[c]);
    pinned[c] = z < qp.quant_min || z > qp.quant_max;
  }
  record_op(y, "lsq_plus_fake_quantize", {x, scale, offset},
            [x, scale, offset, rows, inv, pinned, zps = qp.zero_point, qmin = qp.quant_min, qmax = qp.quant_max,
             grad_scale](const Tensor& grad_out) {
              const float* px = x.data();
              const float* g = grad_out.data();
              float* gx = x.requires_grad() ? x.mutable_grad() : nullptr;
              std::vector<double> gs(inv.size(), 0.0), gb(inv.size(), 0.0);  // (C), (C)
              for_each_row(rows, [&](int64_t begin, int64_t n, int64_t c) {
                const float lo = static_cast<float>(qmin - zps[c]), hi = static_cast<float>(qmax - zps[c]);
                // A clamped output is s * qmin + beta (slope qmin in s, 1 in beta), or, with the zero point
                // pinned, s * (qmin - zp) (slope qmin - zp in s, 0 in beta); likewise at qmax.
                const double s_lo = pinned[c] ? lo : qmin, s_hi = pinned[c] ? hi : qmax;
                double acc_s = 0.0, acc_b = 0.0;
                for (int64_t i = begin; i < begin + n; ++i) {
                  const float v = px[i] * inv[c];
                  const float r = std::nearbyint(v);
                  if (r >= lo && r <= hi) {
                    if (gx) gx[i] += g[i];
                    acc_s += static_cast<double>(g[i]) * (static_cast<double>(r) - v);
                  } else if (r < lo) {
                    acc_s += static_cast<double>(g[i]) * s_lo;
                    acc_b += g[i];
                  } else if (r > hi) {
                    acc_s += static_cast<double>(g[i]) * s_hi;
                    acc_b += g[i];
                  }
                }
                gs[c] += acc_s;
                gb[c] += pinned[c] ? 0.0 : acc_b;
              });
              if (scale.requires_grad()) {
                float* p = scale.mutable_grad();
                for (size_t c = 0; c < gs.size(); ++c) p[c] += static_cast<float>(gs[c] * grad_scale[c]);
              }
              if (offset.requires_grad()) {
                float* p = offset.mutable_grad();
                for (size_t c = 0; c < gb.size(); ++c) p[c] += static_cast<float>(gb[c] * grad_scale[c]);
              }
            });
  return y;
}

Tensor pact_fake_quantize(const Tensor& x, const Tensor& alpha, const QScheme& scheme) {
  const QParams qp = pact_qparams(alpha, scheme);
  const int64_t C = alpha.numel();
  const Rows rows = rows_for(x, scheme, C, "pact_fake_quantize");
  Tensor y = fake_quantize(x.detach(), qp);
  std::vector<float> clip(C);  // (C) the projected alpha the grid was built from
  const int32_t levels = qp.quant_max - qp.quant_min;
  for (int64_t c = 0; c < C; ++c) clip[c] = projected_alpha(alpha.data()[c], levels, c);
  record_op(y, "pact_fake_quantize", {x, alpha}, [x, alpha, rows, clip](const Tensor& grad_out) {
    const float* px = x.data();
    const float* g = grad_out.data();
    float* gx = x.requires_grad() ? x.mutable_grad() : nullptr;
    std::vector<double> ga(clip.size(), 0.0);  // (C)
    for_each_row(rows, [&](int64_t begin, int64_t n, int64_t c) {
      const float a = clip[c];
      double acc = 0.0;
      for (int64_t i = begin; i < begin + n; ++i) {
        if (px[i] >= a) {
          acc += g[i];
        } else if (px[i] >= 0.0f) {
          if (gx) gx[i] += g[i];
        }  // x < 0 (and NaN): the clip's flat side
      }
      ga[c] += acc;
    });
    if (alpha.requires_grad()) {
      float* p = alpha.mutable_grad();
      for (size_t c = 0; c < ga.size(); ++c) p[c] += static_cast<float>(ga[c]);
    }
  });
  return y;
}

// ------------------------------------------------------------------------------------- LsqQuantizer

LsqQuantizer::LsqQuantizer(const QScheme& scheme, int64_t channels, LsqInit init, LsqGradScale grad_scale)
    : LsqQuantizer("LsqQuantizer", scheme, channels, init, true, grad_scale) {}

LsqQuantizer::LsqQuantizer(std::string type, const QScheme& scheme, int64_t channels, LsqInit init,
                           bool fixed_zero_point, LsqGradScale grad_scale)
    : Quantizer(std::move(type), scheme), init_(init), grad_scale_(grad_scale),
      channels_(scheme.per_channel ? channels : 1) {
  QATLAB_CHECK(channels_ >= 1, this->type() + ": a per-channel scheme needs channels >= 1, got " + std::to_string(channels));
  // Placeholders until the first training batch (qparams() refuses to hand them out), but valid ones.
  scale_ = Tensor::ones({channels_});  // (C)
  register_parameter("scale", &scale_);
  if (fixed_zero_point) {
    zero_point_ = Tensor::full({channels_}, static_cast<float>(default_zero_point(scheme)));  // (C)
    register_buffer("zero_point", &zero_point_);
  }
  initialized_ = Tensor::zeros({1});  // (1)
  register_buffer("initialized", &initialized_);
}

bool LsqQuantizer::initialized() const { return initialized_.data()[0] != 0.0f; }

void LsqQuantizer::require_initialized() const {
  if (!initialized())
    throw std::logic_error(type() + " has no quantization parameters yet: it initialises its scale from the first "
                                    "batch it sees in training mode (run a training-mode forward, or load a checkpoint)");
}

int32_t LsqQuantizer::positive_levels(int32_t zero_point) const {
  const int32_t qmin = scheme().quant_min(), qmax = scheme().quant_max();
  return qmax - zero_point > 0 ? qmax - zero_point : zero_point - qmin;
}

std::vector<double> LsqQuantizer::abs_sums(const Tensor& x, int64_t* per_channel) const {
  const Rows rows = rows_for(x, scheme(), channels_, type().c_str());
  std::vector<double> sum(static_cast<size_t>(channels_), 0.0);  // (C)
  const float* px = x.data();
  for_each_row(rows, [&](int64_t begin, int64_t n, int64_t c) {
    double acc = 0.0;
    for (int64_t i = begin; i < begin + n; ++i) acc += std::abs(static_cast<double>(px[i]));
    sum[c] += acc;
  });
  *per_channel = std::max<int64_t>(rows.outer * rows.inner, 1);
  return sum;
}

void LsqQuantizer::initialize(const Tensor& x) {
  std::vector<double> mean_abs;  // (C)
  const QParams qp = batch_grid(x, &mean_abs);
  switch (init_) {
    case LsqInit::Lsq: {
      std::vector<float> s(static_cast<size_t>(channels_));  // (C)
      for (int64_t c = 0; c < channels_; ++c)
        s[c] = static_cast<float>(2.0 * mean_abs[c] / std::sqrt(static_cast<double>(positive_levels(qp.zero_point[c]))));
      finish_init(std::move(s), qp.zero_point);
      return;
    }
    case LsqInit::MinMax: finish_init(qp.scale, qp.zero_point); return;
    case LsqInit::Mse: finish_init(mse_scales(x, qp), qp.zero_point); return;
  }
}

QParams LsqQuantizer::batch_grid(const Tensor& x, std::vector<double>* mean_abs) {
  // The observer checks the shape and rejects NaN/Inf before anything is written.
  MinMaxObserver observer(scheme(), channels_);
  observer.observe(x);
  std::vector<float> lo, hi;  // (C), (C)
  observer.range(lo, hi);
  int64_t count = 0;
  std::vector<double> sums = abs_sums(x, &count);  // (C)
  const size_t c = static_cast<size_t>(channels_);
  const auto grid = [this](const std::vector<float>& l, const std::vector<float>& h) {
    return choose_qparams(scheme(), std::span<const float>(l.data(), l.size()), std::span<const float>(h.data(), h.size()));
  };
  BatchSync* sync = batch_sync();
  if (!sync) {
    for (double& v : sums) v /= static_cast<double>(count);
    *mean_abs = std::move(sums);
    return grid(lo, hi);
  }
  // One chunk of a global batch: the whole batch's range and mean |x|, its sums added in chunk order.
  std::vector<double> mine;  // lo (C), hi (C), sums (C), count (1)
  mine.insert(mine.end(), lo.begin(), lo.end());
  mine.insert(mine.end(), hi.begin(), hi.end());
  mine.insert(mine.end(), sums.begin(), sums.end());
  mine.push_back(static_cast<double>(count));
  sync->exchange(mine, [this, c, &grid](std::span<const double> all, int64_t chunks) {
    const size_t n = 3 * c + 1;
    std::vector<float> g_lo(c), g_hi(c);  // (C)
    std::vector<double> g_sum(c, 0.0);    // (C)
    double g_count = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      const double* v = all.data() + k * n;
      for (size_t i = 0; i < c; ++i) {
        g_lo[i] = k == 0 ? static_cast<float>(v[i]) : std::min(g_lo[i], static_cast<float>(v[i]));
        g_hi[i] = k == 0 ? static_cast<float>(v[c + i]) : std::max(g_hi[i], static_cast<float>(v[c + i]));
        g_sum[i] += v[2 * c + i];
      }
      g_count += v[3 * c];
    }
    for (double& v : g_sum) v /= g_count;
    agreed_grid_ = grid(g_lo, g_hi);
    agreed_mean_abs_ = std::move(g_sum);
  });
  *mean_abs = agreed_mean_abs_;
  return agreed_grid_;
}

std::vector<float> LsqQuantizer::mse_scales(const Tensor& x, const QParams& qp) {
  constexpr int64_t kCandidates = 100;  // steps s_mm * k / 100, k = 1..100
  const Rows rows = rows_for(x, scheme(), channels_, type().c_str());
  const size_t c = static_cast<size_t>(channels_);
  const float* px = x.data();
  std::vector<double> err(static_cast<size_t>(kCandidates) * c, 0.0);  // (K, C)
  for (int64_t k = 0; k < kCandidates; ++k) {
    std::vector<double> acc(c, 0.0);  // (C)
    for_each_chunk(rows, acc, [&](int64_t begin, int64_t n, int64_t ch) {
      const float s = std::max(qp.scale[ch] * static_cast<float>(k + 1) / kCandidates, static_cast<float>(kMinScale));
      const float inv = 1.0f / s, z = static_cast<float>(qp.zero_point[ch]);
      const float lo = static_cast<float>(qp.quant_min), hi = static_cast<float>(qp.quant_max);
      double e = 0.0;
      for (int64_t i = begin; i < begin + n; ++i) {
        const float r = qp.odd_codes ? round_to_odd(px[i] * inv) : std::nearbyint(px[i] * inv);
        const float q = std::clamp(r + z, lo, hi);
        const double d = static_cast<double>(px[i]) - static_cast<double>((q - z) * s);
        e += d * d;
      }
      return e;
    });
    std::copy(acc.begin(), acc.end(), err.begin() + k * static_cast<int64_t>(c));
  }
  const auto pick = [c, &qp](std::span<const double> e) {  // (K, C) -> (C)
    std::vector<float> s(c);
    for (size_t ch = 0; ch < c; ++ch) {
      int64_t best = kCandidates - 1;
      for (int64_t k = kCandidates - 2; k >= 0; --k)
        if (e[k * c + ch] < e[best * c + ch]) best = k;
      s[ch] = qp.scale[ch] * static_cast<float>(best + 1) / kCandidates;
    }
    return s;
  };
  BatchSync* sync = batch_sync();
  if (!sync) return pick(err);
  sync->exchange(err, [this, c, &pick](std::span<const double> all, int64_t chunks) {
    std::vector<double> total(static_cast<size_t>(kCandidates) * c, 0.0);  // (K, C), chunks added in order
    for (int64_t k = 0; k < chunks; ++k)
      for (size_t i = 0; i < total.size(); ++i) total[i] += all[k * total.size() + i];
    agreed_scale_ = pick(total);
  });
  return agreed_scale_;
}

void LsqQuantizer::finish_init(std::vector<float> s, const std::vector<int32_t>& zero_point) {
  for (float& v : s) v = std::max(v, static_cast<float>(kMinScale));
  store_initial(s, zero_point);
  initialized_.data()[0] = 1.0f;
}

void LsqQuantizer::store_initial(const std::vector<float>& s, const std::vector<int32_t>& zp) {
  // In place: the optimizer already holds handles on these tensors.
  for (int64_t c = 0; c < channels_; ++c) {
    scale_.data()[c] = s[c];
    zero_point_.data()[c] = static_cast<float>(zp[c]);
  }
}

void LsqQuantizer::project(const Tensor& x) {
  float* s = scale_.data();
  for (int64_t c = 0; c < channels_; ++c) s[c] = projected_scale(s[c], type(), c);
  // A mid-rise grid's step stays at most max|x_c| even without bounds (the header says why).
  if (step_bounds_ == 0.0f && !scheme().mid_rise) return;
  const Rows rows = rows_for(x, scheme(), channels_, type().c_str());
  std::vector<float> max_abs(static_cast<size_t>(channels_), 0.0f);  // (C)
  const float* px = x.data();
  for_each_row(rows, [&](int64_t begin, int64_t n, int64_t c) {
    float m = max_abs[static_cast<size_t>(c)];
    for (int64_t i = begin; i < begin + n; ++i) m = std::max(m, std::abs(px[i]));
    max_abs[static_cast<size_t>(c)] = m;
  });
  const float* z = zero_point_.data();
  for (int64_t c = 0; c < channels_; ++c) {
    const float m = max_abs[static_cast<size_t>(c)];
    if (!(m > 0.0f) || !std::isfinite(m)) continue;  // all zero: kMinScale; NaN: the forward names it
    if (step_bounds_ == 0.0f) {  // mid-rise, unbounded: the cap alone
      s[c] = std::min(s[c], std::max(m, static_cast<float>(kMinScale)));
      continue;
    }
    const float lo = static_cast<float>(static_cast<double>(m) /
                                        (static_cast<double>(step_bounds_) * positive_levels(static_cast<int32_t>(z[c]))));
    // 15/8 of the largest |x|: that value is then 8/15 of a step, which still rounds to +-1. A mid-rise
    // grid has no 0 code (its innermost codes are +-1 whatever the step): 15/32 of it, where that value
    // (32/15 of a step) still rounds to +-3.
    const float hi = std::max(m * (scheme().mid_rise ? 0.46875f : 1.875f), static_cast<float>(kMinScale));
    s[c] = std::clamp(s[c], std::min(std::max(lo, static_cast<float>(kMinScale)), hi), hi);
  }
}

void LsqQuantizer::set_step_bounds(float k) {
  QATLAB_CHECK(k == 0.0f || (std::isfinite(k) && k >= 1.0f),
               type() + ": step bounds k = " + num_str(k) + ", expected 0 (off) or a finite k >= 1");
  QATLAB_CHECK(k == 0.0f || !is<LsqPlusQuantizer>(), type() + ": step bounds are for LSQ's symmetric weight grids");
  step_bounds_ = k;
}

void LsqQuantizer::set_input_factors(const float* f, size_t count) {
  for (size_t c = 0; c < count; ++c)
    QATLAB_CHECK(std::isfinite(f[c]), type() + ": input factor [" + std::to_string(c) + "] = " + num_str(f[c]) +
                                          ", expected a finite number");
  QATLAB_CHECK(count == 0 || channels_ == 1 || static_cast<int64_t>(count) == channels_,
               type() + ": " + std::to_string(count) + " input factors for " + std::to_string(channels_) + " channels");
  input_factors_.assign(f, f + count);  // a training step's layers set these each step: no new allocation
}

std::vector<float> LsqQuantizer::grad_scales(const Tensor& x, const std::vector<int32_t>& zp) const {
  const int64_t values = grad_scale_ == LsqGradScale::Layer ? x.numel() : x.numel() / channels_;
  const double n = static_cast<double>(std::max<int64_t>(values, 1));
  // Times f^2 per channel, or for one step over several channels' factors the median f^2 (the class comment).
  const std::vector<float>& f = input_factors_;
  double one_step_f2 = 1.0;
  if (channels_ == 1 && f.size() > 1) {
    std::vector<double> sq(f.size());
    for (size_t c = 0; c < sq.size(); ++c) sq[c] = static_cast<double>(f[c]) * f[c];
    std::sort(sq.begin(), sq.end());
    const size_t m = sq.size() / 2;
    one_step_f2 = sq.size() % 2 ? sq[m] : 0.5 * (sq[m - 1] + sq[m]);
  }
  std::vector<float> g(static_cast<size_t>(channels_));  // (C)
  for (int64_t c = 0; c < channels_; ++c) {
    const double f2 = f.size() == static_cast<size_t>(channels_) ? static_cast<double>(f[c]) * f[c] : one_step_f2;
    g[c] = static_cast<float>(f2 / std::sqrt(n * positive_levels(zp[c])));
  }
  return g;
}

Tensor LsqQuantizer::forward(const Tensor& x) {
  (void)rows_for(x, scheme(), channels_, type().c_str());  // a shape error names the module, not its parts
  if (training()) {
    if (!initialized()) initialize(x);
    project(x);
  }
  const QParams qp = qparams();
  return lsq_fake_quantize(x, scale_, qp.zero_point, scheme(), grad_scales(x, qp.zero_point));
}

std::optional<LsqStep> LsqQuantizer::training_step(const Tensor& x) {
  // LSQ+ (a subclass) learns an offset too, which this step does not carry, nor does it carry a mid-rise
  // grid's rounding.
  if (!training() || !initialized() || scheme().per_channel || scheme().mid_rise || is<LsqPlusQuantizer>())
    return std::nullopt;
  (void)rows_for(x, scheme(), channels_, type().c_str());
  project(x);  // as forward() does before it reads the grid
  const QParams qp = qparams();
  // 1 / scale in float, as fake_quantize computes it.
  const OutputGrid grid{qp.scale[0], 1.0f / qp.scale[0], qp.zero_point[0], qp.quant_min, qp.quant_max};
  return LsqStep{scale_, grid, grad_scales(x, qp.zero_point)[0]};
}

QParams LsqQuantizer::qparams() const {
  require_initialized();
  std::vector<int32_t> zp(static_cast<size_t>(channels_));  // (C)
  const float* z = zero_point_.data();
  for (int64_t c = 0; c < channels_; ++c) {
    // A zero point is an integer by construction; anything else came from a corrupt state dict.
    if (!(std::nearbyint(z[c]) == z[c]) || std::abs(z[c]) > 65536.0f)
      throw std::invalid_argument(type() + ": zero_point[" + std::to_string(c) + "] = " + num_str(z[c]) +
                                  " is not an integer code");
    zp[c] = static_cast<int32_t>(z[c]);
  }
  return lsq_qparams(scale_, zp, scheme());
}

std::string LsqQuantizer::describe() const {
  std::ostringstream os;
  os << "lsq, " << scheme().describe() << ", init=" << lsq_init_name(init_);
  if (grad_scale_ != LsqGradScale::Channel) os << ", gradient scale per " << lsq_grad_scale_name(grad_scale_);
  if (step_bounds_ > 0.0f)
    os << ", step within [min/max step / " << num_str(step_bounds_) << (scheme().mid_rise ? ", 15/32" : ", 15/8")
       << " max |x|]";
  if (!initialized()) {
    os << ", scale=unset";
  } else {
    const QParams qp = qparams();
    const std::vector<float> zp(qp.zero_point.begin(), qp.zero_point.end());
    os << ", scale=" << range_str(qp.scale) << ", zp=" << range_str(zp);
  }
  return os.str();
}

// --------------------------------------------------------------------------------- LsqPlusQuantizer

LsqPlusQuantizer::LsqPlusQuantizer(const QScheme& scheme, int64_t channels, LsqInit init, LsqGradScale grad_scale)
    : LsqQuantizer("LsqPlusQuantizer", scheme, channels, init, false, grad_scale) {
  QATLAB_CHECK(!scheme.symmetric, "LsqPlusQuantizer learns an offset: it needs an affine scheme, got " +
                                      scheme.describe() + " (use lsq for symmetric grids)");
  offset_ = Tensor::zeros({channels_});  // (C) beta = 0: zero point 0 (clamped into range) until initialised
  register_parameter("offset", &offset_);
}

int32_t LsqPlusQuantizer::positive_levels(int32_t) const { return scheme().quant_max() - scheme().quant_min(); }

void LsqPlusQuantizer::store_initial(const std::vector<float>& s, const std::vector<int32_t>& zp) {
  for (int64_t c = 0; c < channels_; ++c) {
    scale_.data()[c] = s[c];
    // beta = -s * z: lsq_plus_zero_point gives z back (the quotient is within a few ulps of z).
    offset_.data()[c] = -s[c] * static_cast<float>(zp[c]);
  }
}

Tensor LsqPlusQuantizer::forward(const Tensor& x) {
  (void)rows_for(x, scheme(), channels_, type().c_str());  // a shape error names the module, not its parts
  if (training()) {
    if (!initialized()) initialize(x);
    project(x);
  }
  const QParams qp = qparams();
  return lsq_plus_fake_quantize(x, scale_, offset_, scheme(), grad_scales(x, qp.zero_point));
}

QParams LsqPlusQuantizer::qparams() const {
  require_initialized();
  return lsq_plus_qparams(scale_, offset_, scheme());
}

std::string LsqPlusQuantizer::describe() const {
  std::ostringstream os;
  os << "lsq+, " << scheme().describe() << ", init=" << lsq_init_name(init_);
  if (grad_scale_ != LsqGradScale::Channel) os << ", gradient scale per " << lsq_grad_scale_name(grad_scale_);
  if (!initialized()) {
    os << ", scale=unset";
  } else {
    const QParams qp = qparams();
    const std::vector<float> zp(qp.zero_point.begin(), qp.zero_point.end());
    os << ", scale=" << range_str(qp.scale) << ", offset=" << range_str(offset_.to_vector()) << ", zp=" << range_str(zp);
  }
  return os.str();
}

// ------------------------------------------------------------------------------------ PactQuantizer

PactQuantizer::PactQuantizer(const QScheme& scheme, int64_t channels, float init_alpha, double l2_decay)
    : Quantizer("PactQuantizer", scheme),
      decay(l2_decay),
      channels_(scheme.per_channel ? channels : 1),
      init_alpha_(init_alpha) {
  QATLAB_CHECK(!scheme.symmetric, "PactQuantizer clips to [0, alpha] with zero point qmin: it needs an affine scheme, got " +
                                      scheme.describe() + " (use lsq for weights)");
  QATLAB_CHECK(channels_ >= 1, "PactQuantizer: a per-channel scheme needs channels >= 1, got " + std::to_string(channels));
  QATLAB_CHECK(std::isfinite(init_alpha) && init_alpha >= 0.0f,
               "PactQuantizer: init_alpha " + num_str(init_alpha) + ", expected finite and >= 0 (0: the first batch's max)");
  QATLAB_CHECK(std::isfinite(l2_decay) && l2_decay >= 0.0, "PactQuantizer: decay " + num_str(l2_decay) + ", expected finite and >= 0");
  alpha_ = Tensor::full({channels_}, init_alpha > 0.0f ? init_alpha : 1.0f);  // (C)
  register_parameter("alpha", &alpha_);
  initialized_ = Tensor::zeros({1});  // (1)
  register_buffer("initialized", &initialized_);
}

bool PactQuantizer::initialized() const { return initialized_.data()[0] != 0.0f; }

void PactQuantizer::require_initialized() const {
  if (!initialized())
    throw std::logic_error("PactQuantizer has no quantization parameters yet: it initialises alpha from the first "
                           "batch it sees in training mode (run a training-mode forward, or load a checkpoint)");
}

Tensor PactQuantizer::forward(const Tensor& x) {
  (void)rows_for(x, scheme(), channels_, "PactQuantizer");
  const int32_t levels = scheme().quant_max() - scheme().quant_min();
  if (training()) {
    float* a = alpha_.data();
    if (!initialized()) {
      // The observer checks the shape and rejects NaN/Inf before anything is written.
      MinMaxObserver observer(scheme(), channels_);
      observer.observe(x);
      std::vector<float> lo, hi;  // (C), (C)
      observer.range(lo, hi);
      const auto init = [this, a](const std::vector<float>& hi) {
        for (int64_t c = 0; c < channels_; ++c) a[c] = init_alpha_ > 0.0f ? init_alpha_ : (hi[c] > 0.0f ? hi[c] : 1.0f);
        initialized_.data()[0] = 1.0f;
      };
      // One chunk of a global batch: the whole batch's maximum.
      if (BatchSync* sync = batch_sync())
        exchange_range(*sync, lo, hi, [&init](const std::vector<float>&, const std::vector<float>& g_hi) { init(g_hi); });
      else
        init(hi);
    }
    for (int64_t c = 0; c < channels_; ++c) a[c] = projected_alpha(a[c], levels, c);
  }
  require_initialized();
  return pact_fake_quantize(x, alpha_, scheme());
}

QParams PactQuantizer::qparams() const {
  require_initialized();
  return pact_qparams(alpha_, scheme());
}

float PactQuantizer::l2_penalty() const {
  double s = 0.0;
  const float* a = alpha_.data();
  for (int64_t c = 0; c < channels_; ++c) s += static_cast<double>(a[c]) * a[c];
  return static_cast<float>(s);
}

Tensor PactQuantizer::decay_loss() const { return qatlab::scale(sum(square(alpha_)), static_cast<float>(decay)); }

std::string PactQuantizer::describe() const {
  std::ostringstream os;
  os << "pact, " << scheme().describe() << ", decay=" << decay;
  if (!initialized())
    os << ", alpha=unset";
  else
    os << ", alpha=" << range_str(alpha_.to_vector());
  return os.str();
}

// -------------------------------------------------------------------------------------------- factory

std::shared_ptr<Quantizer> make_learnable_quantizer(QuantizerMethod method, const QScheme& scheme, int64_t channels,
                                                    std::optional<LsqInit> init, LsqGradScale grad_scale,
                                                    float step_bounds) {
  if (step_bounds != 0.0f && !(method == QuantizerMethod::Lsq || (method == QuantizerMethod::LsqPlus && scheme.symmetric)))
    throw std::invalid_argument(std::string("make_learnable_quantizer: step bounds are for LSQ steps, not '") +
                                quantizer_method_name(method) + "'");
  switch (method) {
    case QuantizerMethod::Lsq: {
      auto q = std::make_shared<LsqQuantizer>(scheme, channels, init.value_or(LsqInit::Lsq), grad_scale);
      q->set_step_bounds(step_bounds);
      return q;
    }
    case QuantizerMethod::LsqPlus:
      if (scheme.symmetric) {
        auto q = std::make_shared<LsqQuantizer>(scheme, channels, init.value_or(LsqInit::Lsq), grad_scale);
        q->set_step_bounds(step_bounds);
        return q;
      }
      return std::make_shared<LsqPlusQuantizer>(scheme, channels, init.value_or(LsqInit::MinMax), grad_scale);
    case QuantizerMethod::Pact:
      if (init)
        throw std::invalid_argument(std::string("make_learnable_quantizer: PACT learns a clip, not a step; init '") +
                                    lsq_init_name(*init) + "' is for lsq and lsq+");
      return std::make_shared<PactQuantizer>(scheme, channels);
    case QuantizerMethod::Observer: break;
  }
  throw std::invalid_argument("make_learnable_quantizer: 'observer' is not a learned grid (expected lsq, lsq+ or pact)");
}

}  // namespace qatlab
