// fake_quantize.cpp: the fake_quantize op (forward and straight-through backward) and the FakeQuantize module.
//
// A tensor is seen as (outer, C, inner) around the quantization axis (C = 1, inner = numel per tensor);
// each (outer, channel) row of `inner` contiguous values shares one scale and zero point.
#include "quant/qat/fake_quantize.h"

#include "core/format.h"
#include "core/parallel.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "quant/engine/requantize.h"

namespace qatlab {
namespace {

// Per-tensor inputs are cut into blocks of this many elements for the threads.
constexpr int64_t kBlock = 8192;

// The (outer, C, inner) view of x for qp, checked.
struct Rows {
  int64_t outer = 1, channels = 1, inner = 1;
};

Rows rows_for(const Tensor& x, const QParams& qp) {
  Rows r;
  if (!qp.per_channel()) {
    r.inner = x.numel();
    return r;
  }
  if (qp.axis >= x.dim() || x.size(qp.axis) != static_cast<int64_t>(qp.scale.size()))
    throw std::invalid_argument("fake_quantize: per-channel qparams with " + std::to_string(qp.scale.size()) +
                                " channels along axis " + std::to_string(qp.axis) + " do not fit input " +
                                shape_str(x.shape()));
  for (int64_t d = 0; d < qp.axis; ++d) r.outer *= x.size(d);
  r.channels = x.size(qp.axis);
  for (int64_t d = qp.axis + 1; d < x.dim(); ++d) r.inner *= x.size(d);
  return r;
}

// The un-clamped code offset of v = x / scale: nearbyint(v), or on a mid-rise grid (kOdd) the nearest
// odd integer, as quantize_value and quantize_odd_value round.
template <bool kOdd>
inline float round_code(float v) {
  if constexpr (kOdd) return round_to_odd(v);
  return std::nearbyint(v);
}

// One row through quantize -> dequantize: scale * (quantize_value(x) - zp), written without branches so
// that it compiles to vector instructions (a NaN test per element kept it scalar: 8 % of a ResNet-20 QAT
// step). The clamp is done on the rounded float against qmin - zp and qmax - zp, as quantize_value does;
// NaN passes both comparisons unchanged and is then mapped to 0 (the zero point's value), and "+ 0.0f"
// turns the -0.0 that nearbyint gives for small negative x into the +0.0 that the integer path gives.
template <bool kOdd>
inline void fake_quantize_row(const float* __restrict x, float* __restrict y, int64_t n, float scale,
                              float inv_scale, int32_t zp, int32_t qmin, int32_t qmax) {
  const float lo = static_cast<float>(qmin - zp), hi = static_cast<float>(qmax - zp);
  for (int64_t i = 0; i < n; ++i) {
    float r = round_code<kOdd>(x[i] * inv_scale);
    r = r < lo ? lo : r;
    r = hi < r ? hi : r;
    r = r == r ? r + 0.0f : 0.0f;
    y[i] = scale * r;
  }
}

// One row of the straight-through gradient: g passes where the un-clamped code is inside [qmin, qmax].
// The rounded value is compared in float against qmin - zp and qmax - zp (small integers, exact), which
// is the integer test without the overflow a huge x would cause; NaN fails both tests and passes nothing.
// fresh: gx is a new buffer (Tensor::grad_for_write), assigned rather than added to.
template <bool kOdd>
inline void ste_row(const float* __restrict x, const float* __restrict g, float* __restrict gx, int64_t n,
                    float inv_scale, int32_t zp, int32_t qmin, int32_t qmax, bool fresh) {
  const float lo = static_cast<float>(qmin - zp), hi = static_cast<float>(qmax - zp);
  if (fresh) {
    for (int64_t i = 0; i < n; ++i) {
      const float r = round_code<kOdd>(x[i] * inv_scale);
      gx[i] = ((r >= lo) & (r <= hi)) ? g[i] : 0.0f;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float r = round_code<kOdd>(x[i] * inv_scale);
    gx[i] += ((r >= lo) & (r <= hi)) ? g[i] : 0.0f;
  }
}

// Calls f(begin, count, channel) over the rows of x, threaded when x is large. Per tensor, the one row is
// split into blocks so the threads have something to share.
template <class F>
void for_each_row(const Rows& r, int64_t numel, F f) {
  if (r.channels == 1 && r.outer == 1) {
    const int64_t blocks = (numel + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t b = 0; b < blocks; ++b) f(b * kBlock, std::min(kBlock, numel - b * kBlock), int64_t{0});
    return;
  }
  const int64_t rows = r.outer * r.channels;
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
  for (int64_t row = 0; row < rows; ++row) f(row * r.inner, r.inner, row % r.channels);
}

}  // namespace

Tensor fake_quantize(const Tensor& x, const QParams& qp) {
  QATLAB_CHECK(x.defined(), "fake_quantize: undefined input");
  qp.validate();
  const Rows rows = rows_for(x, qp);
  const int64_t numel = x.numel();
  // 1 / scale once per channel, in float: the integer graph's Quantize op computes it the same way.
  std::vector<float> inv_scale(qp.scale.size());  // (C)
  for (size_t c = 0; c < qp.scale.size(); ++c) inv_scale[c] = 1.0f / qp.scale[c];

  Tensor y = Tensor::empty(x.shape());
  {
    const float* px = x.data();
    float* py = y.data();
    const float* s = qp.scale.data();
    const float* is = inv_scale.data();
    const int32_t* zp = qp.zero_point.data();
    const int32_t qmin = qp.quant_min, qmax = qp.quant_max;
    for_each_row(rows, numel, [&](int64_t begin, int64_t n, int64_t c) {
      if (qp.odd_codes)
        fake_quantize_row<true>(px + begin, py + begin, n, s[c], is[c], zp[c], qmin, qmax);
      else
        fake_quantize_row<false>(px + begin, py + begin, n, s[c], is[c], zp[c], qmin, qmax);
    });
  }
  record_op(y, "fake_quantize", {x},
            [x, rows, inv_scale, zps = qp.zero_point, qmin = qp.quant_min, qmax = qp.quant_max,
             odd = qp.odd_codes](const Tensor& grad_out) {
              bool fresh = false;  // the rows cover x: every element is written
              float* gx = x.grad_for_write(&fresh);
              const float* g = grad_out.data();
              const float* px = x.data();
              for_each_row(rows, x.numel(), [&](int64_t begin, int64_t n, int64_t c) {
                if (odd)
                  ste_row<true>(px + begin, g + begin, gx + begin, n, inv_scale[c], zps[c], qmin, qmax, fresh);
                else
                  ste_row<false>(px + begin, g + begin, gx + begin, n, inv_scale[c], zps[c], qmin, qmax, fresh);
              });
            });
  return y;
}

// ------------------------------------------------------------------------------------- Quantizer

Quantizer::Quantizer(std::string type, const QScheme& scheme) : Module(std::move(type)), scheme_(scheme) {
  scheme_.validate();
}

// ---------------------------------------------------------------------------------- FakeQuantize

namespace {

const QScheme& scheme_of(const std::unique_ptr<Observer>& observer) {
  if (!observer) throw std::invalid_argument("FakeQuantize: null observer");
  return observer->scheme();
}

}  // namespace

FakeQuantize::FakeQuantize(std::unique_ptr<Observer> observer)
    : Quantizer("FakeQuantize", scheme_of(observer)), observer_(std::move(observer)) {
  const int64_t C = observer_->channels();
  // Until the observer has seen data these are placeholders (qparams() refuses to hand them out); they
  // are nevertheless valid parameters: scale 1 and a zero point inside the code range.
  const QScheme& s = scheme();
  const int32_t zp0 = s.symmetric && !s.is_signed ? (s.quant_min() + s.quant_max() + 1) / 2
                                                  : std::clamp<int32_t>(0, s.quant_min(), s.quant_max());
  scale_ = Tensor::ones({C});                                    // (C)
  zero_point_ = Tensor::full({C}, static_cast<float>(zp0));      // (C)
  observer_enabled_ = Tensor::ones({1});                         // (1)
  fake_quant_enabled_ = Tensor::ones({1});                       // (1)
  register_buffer("scale", &scale_);
  register_buffer("zero_point", &zero_point_);
  register_buffer("observer_enabled", &observer_enabled_);
  register_buffer("fake_quant_enabled", &fake_quant_enabled_);
  // The observer's tensors are written in place only, so these shallow handles stay views of them:
  // saving reads the observer's state, loading writes straight into it.
  const NamedTensors state = observer_->state();
  observer_state_.reserve(state.size());  // the registered pointers must never move
  for (const auto& [name, t] : state) observer_state_.push_back(t);
  for (size_t i = 0; i < state.size(); ++i) register_buffer("observer." + state[i].first, &observer_state_[i]);
}

FakeQuantize::FakeQuantize(const QScheme& scheme, ObserverKind observer_kind, int64_t channels)
    : FakeQuantize(make_observer(observer_kind, scheme, channels)) {}

void FakeQuantize::store(const QParams& qp) {
  float* s = scale_.data();
  float* z = zero_point_.data();
  for (size_t c = 0; c < qp.scale.size(); ++c) {
    s[c] = qp.scale[c];
    z[c] = static_cast<float>(qp.zero_point[c]);
  }
}

Tensor FakeQuantize::forward(const Tensor& x) {
  // Ranges are learned in training only: evaluating a model must never change it (and the integer graph
  // converted from it must keep matching it).
  if (training() && observer_enabled()) {
    if (BatchSync* sync = batch_sync())
      observer_->observe_chunk(x, *sync);
    else
      observer_->observe(x);
    store(observer_->qparams());
  }
  if (!fake_quant_enabled()) return x;
  return fake_quantize(x, qparams());
}

std::optional<OutputGrid> FakeQuantize::output_grid(float lo, float hi) {
  if (!fake_quant_enabled() || scheme().per_channel || scheme().mid_rise) return std::nullopt;
  if (training() && observer_enabled()) {
    BatchSync* sync = batch_sync();
    if (!(sync ? observer_->observe_range_chunk(lo, hi, *sync) : observer_->observe_range(lo, hi))) return std::nullopt;
    store(observer_->qparams());
  }
  const QParams qp = qparams();
  OutputGrid g;
  g.scale = qp.scale[0];
  g.inv_scale = 1.0f / qp.scale[0];  // as fake_quantize computes it
  g.zero_point = qp.zero_point[0];
  g.quant_min = qp.quant_min;
  g.quant_max = qp.quant_max;
  return g;
}

QParams FakeQuantize::qparams() const {
  if (!observer_->has_data())
    throw std::logic_error(
        "FakeQuantize has no quantization parameters yet: its " + observer_->kind() +
        " observer has seen no data (run training-mode batches with the observer enabled, or load a checkpoint)");
  const int64_t C = scale_.numel();
  QParams qp = grid_of(scheme(), static_cast<size_t>(C));
  const float* sc = scale_.data();
  const float* zp = zero_point_.data();
  qp.scale.assign(sc, sc + C);
  for (int64_t c = 0; c < C; ++c) {
    // A zero point is an integer by construction; anything else came from a corrupt state dict.
    if (!(std::nearbyint(zp[c]) == zp[c]))
      throw std::invalid_argument("FakeQuantize: zero_point[" + std::to_string(c) + "] = " + num_str(zp[c]) +
                                  " is not an integer");
    qp.zero_point[static_cast<size_t>(c)] = static_cast<int32_t>(zp[c]);
  }
  qp.validate();
  return qp;
}

void FakeQuantize::enable_observer(bool on) { observer_enabled_.data()[0] = on ? 1.0f : 0.0f; }
void FakeQuantize::enable_fake_quant(bool on) { fake_quant_enabled_.data()[0] = on ? 1.0f : 0.0f; }
bool FakeQuantize::observer_enabled() const { return observer_enabled_.data()[0] != 0.0f; }
bool FakeQuantize::fake_quant_enabled() const { return fake_quant_enabled_.data()[0] != 0.0f; }

std::string FakeQuantize::describe() const {
  std::ostringstream os;
  os << scheme().describe() << ", observer=" << observer_->describe();
  if (!observer_->has_data()) {
    os << ", scale=unset";
  } else {
    const std::vector<float> s = scale_.to_vector();
    const std::vector<float> z = zero_point_.to_vector();
    if (s.size() == 1) {
      os << ", scale=" << s[0] << ", zp=" << z[0];
    } else {
      const auto [smin, smax] = std::minmax_element(s.begin(), s.end());
      const auto [zmin, zmax] = std::minmax_element(z.begin(), z.end());
      os << ", scale=" << *smin << ".." << *smax << ", zp=" << *zmin << ".." << *zmax << " (" << s.size() << " ch)";
    }
  }
  if (!observer_enabled()) os << ", observer off";
  if (!fake_quant_enabled()) os << ", fake-quant off";
  return os.str();
}

}  // namespace qatlab
