// observer.cpp: range statistics over observed tensors and their turn into quantization parameters.
//
// Shape letters: C channels along the scheme's axis; a per-channel input is seen as (outer, C, inner),
// outer the product of the dimensions before the axis and inner of those after it. B histogram bins.
#include "quant/qat/observer.h"

#include "core/parallel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>

namespace qatlab {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kFloatMax = std::numeric_limits<float>::max();

std::string num_str(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Minimum, maximum and the number of non-finite values of n contiguous floats, in one pass.
struct RangeScan {
  float lo = kInf, hi = -kInf;
  int64_t bad = 0;
};

RangeScan scan_range_serial(const float* p, int64_t n) {
  // kLanes independent accumulators: the loop over k is elementwise, so it compiles to vector
  // min/max/compare instructions; a single running min would be a serial dependency chain. The
  // non-finite count is kept in float lanes (an int32 count from a float compare kept GCC 12 from
  // vectorising the loop: 8 % of a QAT step went to this scan), exact while a lane counts at most
  // 2^24, so it is moved into the int64 total every kBlock elements.
  constexpr int kLanes = 16;
  constexpr int64_t kBlock = int64_t{1} << 24;  // <= 2^20 per lane
  float lo[kLanes], hi[kLanes], bad[kLanes];
  for (int k = 0; k < kLanes; ++k) {
    lo[k] = kInf;
    hi[k] = -kInf;
  }
  RangeScan r;
  int64_t i = 0;
  while (i + kLanes <= n) {
    for (int k = 0; k < kLanes; ++k) bad[k] = 0.0f;
    const int64_t block_end = std::min(n, i + kBlock);
    for (; i + kLanes <= block_end; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        const float v = p[i + k];
        lo[k] = v < lo[k] ? v : lo[k];
        hi[k] = v > hi[k] ? v : hi[k];
        // False for NaN and +-Inf alike. NaN never wins a < or > above, so it cannot poison lo / hi.
        bad[k] += std::abs(v) <= std::numeric_limits<float>::max() ? 0.0f : 1.0f;
      }
    }
    for (int k = 0; k < kLanes; ++k) r.bad += static_cast<int64_t>(bad[k]);
  }
  for (int k = 0; k < kLanes; ++k) {
    r.lo = std::min(r.lo, lo[k]);
    r.hi = std::max(r.hi, hi[k]);
  }
  for (; i < n; ++i) {
    const float v = p[i];
    r.lo = v < r.lo ? v : r.lo;
    r.hi = v > r.hi ? v : r.hi;
    r.bad += !(std::abs(v) <= std::numeric_limits<float>::max());
  }
  return r;
}

// scan_range_serial over thread-sized chunks: min, max and a count do not depend on the order in which
// the chunks are combined, so the result is the same for every thread count.
RangeScan scan_range(const float* p, int64_t n) {
  if (n < kParallelMin) return scan_range_serial(p, n);
  RangeScan total;
#pragma omp parallel
  {
    const int64_t threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
    const RangeScan r = scan_range_serial(p + begin, end - begin);
#pragma omp critical
    {
      total.lo = std::min(total.lo, r.lo);
      total.hi = std::max(total.hi, r.hi);
      total.bad += r.bad;
    }
  }
  return total;
}

[[noreturn]] void throw_non_finite(const std::string& kind, int64_t bad, const Tensor& x) {
  throw std::invalid_argument(kind + " observer saw NaN/Inf in " + std::to_string(bad) + " values (of " +
                              std::to_string(x.numel()) + ", shape " + shape_str(x.shape()) + ")");
}

void check_observable(const std::string& kind, const Tensor& x) {
  if (!x.defined()) throw std::invalid_argument(kind + " observer: undefined tensor");
  if (x.numel() == 0) throw std::invalid_argument(kind + " observer: empty tensor " + shape_str(x.shape()));
}

}  // namespace

// ------------------------------------------------------------------------------------------ Observer

Observer::Observer(const QScheme& scheme, int64_t channels) : scheme_(scheme), channels_(1) {
  scheme_.validate();
  if (scheme_.per_channel) {
    if (channels < 1)
      throw std::invalid_argument("per-channel observer needs the channel count (>= 1) along axis " +
                                  std::to_string(scheme_.axis) + ", got " + std::to_string(channels));
    channels_ = channels;
  }
  batches_ = Tensor::zeros({1});  // (1)
  add_state("batches", &batches_);
}

void Observer::add_state(const std::string& name, Tensor* t) { state_.push_back({name, t}); }

bool Observer::has_data() const { return batches_.data()[0] > 0.0f; }

void Observer::require_data() const {
  if (!has_data())
    throw std::logic_error(kind() + " observer has seen no data: observe() at least one batch before qparams()");
}

void Observer::reset() {
  for (auto& [name, t] : state_) t->fill(0.0f);
}

NamedTensors Observer::state() const {
  NamedTensors out;
  for (const auto& [name, t] : state_) out.push_back({name, *t});
  return out;
}

void Observer::load_state(const std::map<std::string, Tensor>& state) {
  for (const auto& [name, t] : state_) {
    auto it = state.find(name);
    QATLAB_CHECK(it != state.end(), kind() + " observer state has no entry '" + name + "' " + shape_str(t->shape()));
    QATLAB_CHECK(it->second.shape() == t->shape(), kind() + " observer state '" + name + "' has shape " +
                                                    shape_str(it->second.shape()) + ", expected " +
                                                    shape_str(t->shape()));
  }
  for (const auto& [name, t] : state) {
    bool known = false;
    for (const auto& entry : state_) known = known || entry.first == name;
    QATLAB_CHECK(known, kind() + " observer state has an unknown entry '" + name + "'");
  }
  // Checked everything first: a failed load leaves the observer as it was.
  for (const auto& [name, t] : state_) t->copy_from(state.at(name));
}

// ------------------------------------------------------------------------------------ MinMaxObserver

MinMaxObserver::MinMaxObserver(const QScheme& scheme, int64_t channels) : Observer(scheme, channels) {
  min_val_ = Tensor::zeros({this->channels()});  // (C)
  max_val_ = Tensor::zeros({this->channels()});  // (C)
  add_state("min_val", &min_val_);
  add_state("max_val", &max_val_);
  lo_.resize(static_cast<size_t>(this->channels()));
  hi_.resize(static_cast<size_t>(this->channels()));
}

void MinMaxObserver::batch_range(const Tensor& x, std::vector<float>& lo, std::vector<float>& hi) const {
  check_observable(kind(), x);
  const float* p = x.data();
  if (!scheme().per_channel) {
    const RangeScan r = scan_range(p, x.numel());
    if (r.bad) throw_non_finite(kind(), r.bad, x);
    lo[0] = r.lo;
    hi[0] = r.hi;
    return;
  }
  const int64_t axis = scheme().axis, C = channels();
  if (axis >= x.dim() || x.size(axis) != C)
    throw std::invalid_argument(kind() + " observer: per-channel along axis " + std::to_string(axis) + " with " +
                                std::to_string(C) + " channels cannot observe a tensor of shape " +
                                shape_str(x.shape()));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  for (int64_t d = axis + 1; d < x.dim(); ++d) inner *= x.size(d);
  std::fill(lo.begin(), lo.end(), kInf);
  std::fill(hi.begin(), hi.end(), -kInf);
  int64_t bad = 0;
  if (inner == 1) {
    // The channel is the last axis: rows of C, elementwise into the (C) accumulators.
    for (int64_t o = 0; o < outer; ++o) {
      const float* row = p + o * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = row[c];
        lo[c] = v < lo[c] ? v : lo[c];
        hi[c] = v > hi[c] ? v : hi[c];
        bad += !(std::abs(v) <= std::numeric_limits<float>::max());
      }
    }
  } else {
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t c = 0; c < C; ++c) {
        const RangeScan r = scan_range(p + (o * C + c) * inner, inner);
        lo[c] = std::min(lo[c], r.lo);
        hi[c] = std::max(hi[c], r.hi);
        bad += r.bad;
      }
    }
  }
  if (bad) throw_non_finite(kind(), bad, x);
}

void MinMaxObserver::observe(const Tensor& x) {
  batch_range(x, lo_, hi_);
  fold_batch();
}

bool MinMaxObserver::observe_range(float lo, float hi) {
  if (scheme().per_channel || !std::isfinite(lo) || !std::isfinite(hi) || lo > hi) return false;
  lo_[0] = lo;
  hi_[0] = hi;
  fold_batch();
  return true;
}

void Observer::observe_chunk(const Tensor& x, BatchSync& sync) {
  throw std::invalid_argument("the " + kind() + " observer cannot combine the chunks of a batch yet (training with "
                              "--grad-chunks above 1 or under mpirun): use minmax or ema");
}

void MinMaxObserver::observe_chunk(const Tensor& x, BatchSync& sync) {
  batch_range(x, lo_, hi_);
  // lo_ / hi_ are scratch that the next chunk's batch_range overwrites: exchange_range copies them first.
  exchange_range(sync, lo_, hi_, [this](const std::vector<float>& lo, const std::vector<float>& hi) {
    lo_ = lo, hi_ = hi;
    fold_batch();
  });
}

bool MinMaxObserver::observe_range_chunk(float lo, float hi, BatchSync& sync) {
  if (scheme().per_channel || !std::isfinite(lo) || !std::isfinite(hi) || lo > hi) return false;
  exchange_range(sync, {lo}, {hi}, [this](const std::vector<float>& g_lo, const std::vector<float>& g_hi) {
    lo_ = g_lo, hi_ = g_hi;
    fold_batch();
  });
  return true;
}

void MinMaxObserver::fold_batch() {
  float* mn = min_val_.data();
  float* mx = max_val_.data();
  const bool first = !has_data();
  for (int64_t c = 0; c < channels(); ++c) {
    mn[c] = first ? lo_[c] : std::min(mn[c], lo_[c]);
    mx[c] = first ? hi_[c] : std::max(mx[c], hi_[c]);
  }
  batches_.data()[0] += 1.0f;
}

void MinMaxObserver::range(std::vector<float>& min_vals, std::vector<float>& max_vals) const {
  require_data();
  min_vals = min_val_.to_vector();
  max_vals = max_val_.to_vector();
}

QParams MinMaxObserver::qparams() const {
  require_data();
  const float* mn = min_val_.data();
  const float* mx = max_val_.data();
  const size_t C = static_cast<size_t>(channels());
  return choose_qparams(scheme(), std::span<const float>(mn, C), std::span<const float>(mx, C));
}

// ----------------------------------------------------------------------- MovingAverageMinMaxObserver

MovingAverageMinMaxObserver::MovingAverageMinMaxObserver(const QScheme& scheme, int64_t channels,
                                                         float averaging_constant)
    : MinMaxObserver(scheme, channels), averaging_constant_(averaging_constant) {
  if (!(averaging_constant > 0.0f && averaging_constant <= 1.0f))
    throw std::invalid_argument("ema observer: averaging_constant must be in (0, 1], got " +
                                num_str(averaging_constant));
}

void MovingAverageMinMaxObserver::fold_batch() {
  float* mn = min_val_.data();
  float* mx = max_val_.data();
  const bool first = !has_data();
  const float c = averaging_constant_;
  for (int64_t i = 0; i < channels(); ++i) {
    mn[i] = first ? lo_[i] : mn[i] + c * (lo_[i] - mn[i]);
    mx[i] = first ? hi_[i] : mx[i] + c * (hi_[i] - mx[i]);
  }
  batches_.data()[0] += 1.0f;
}

std::string MovingAverageMinMaxObserver::describe() const { return "ema(c=" + num_str(averaging_constant_) + ")"; }

// --------------------------------------------------------------------------- HistogramBaseObserver

HistogramBaseObserver::HistogramBaseObserver(const QScheme& scheme, int64_t bins) : Observer(scheme, 1), bins_(bins) {
  if (this->scheme().per_channel)
    throw std::invalid_argument("histogram-based observers are per-tensor only; use minmax or ema for per-channel");
  if (bins < 16) throw std::invalid_argument("histogram observer: bins must be >= 16, got " + std::to_string(bins));
  histogram_ = Tensor::zeros({bins});  // (B)
  min_val_ = Tensor::zeros({1});       // (1)
  max_val_ = Tensor::zeros({1});       // (1)
  add_state("histogram", &histogram_);
  add_state("min_val", &min_val_);
  add_state("max_val", &max_val_);
  batch_counts_.resize(static_cast<size_t>(bins));
}

void HistogramBaseObserver::observe(const Tensor& x) {
  check_observable(kind(), x);
  const float* p = x.data();
  const int64_t n = x.numel(), B = bins_;
  const RangeScan r = scan_range(p, n);
  if (r.bad) throw_non_finite(kind(), r.bad, x);

  float* h = histogram_.data();
  float& lo = min_val_.data()[0];
  float& hi = max_val_.data()[0];
  if (!has_data()) {
    std::fill(h, h + B, 0.0f);
    lo = r.lo;
    hi = r.hi;
  } else if (r.lo < lo || r.hi > hi) {
    // Grow, keeping the old bin edges (see the header): m old bins are added below, the new width is
    // k old widths, and old bin j lands in new bin (j + m) / k.
    std::fill(batch_counts_.begin(), batch_counts_.end(), 0.0);
    const double lo0 = lo, hi0 = hi;
    const double new_min = std::min<double>(r.lo, lo0), new_max = std::max<double>(r.hi, hi0);
    const double w0 = (hi0 - lo0) / static_cast<double>(B);
    double new_lo = new_min, new_hi = new_max;
    bool aligned = false;
    if (w0 > 0.0) {
      const double m = std::ceil((lo0 - new_min) / w0);
      const double lo_a = lo0 - m * w0;
      const double k = std::max(1.0, std::ceil((new_max - lo_a) / (w0 * static_cast<double>(B))));
      const double hi_a = lo_a + k * static_cast<double>(B) * w0;
      // m and k must stay exact small integers and the edges floats; a jump by many orders of
      // magnitude takes the general path below instead.
      if (m < 1e9 && k < 1e9 && std::abs(lo_a) <= kFloatMax && std::abs(hi_a) <= kFloatMax) {
        aligned = true;
        new_lo = lo_a;
        new_hi = hi_a;
        const int64_t mi = static_cast<int64_t>(m), ki = static_cast<int64_t>(k);
        for (int64_t j = 0; j < B; ++j) batch_counts_[static_cast<size_t>(std::min((j + mi) / ki, B - 1))] += h[j];
      }
    }
    if (!aligned) {
      // Each old bin moves whole into the new bin holding its centre (all of them hold the one point
      // lo0 when the old range had zero width).
      const double to_bin = static_cast<double>(B) / (new_hi - new_lo);
      for (int64_t j = 0; j < B; ++j) {
        const double c = lo0 + (static_cast<double>(j) + 0.5) * w0;
        const double t = std::clamp((c - new_lo) * to_bin, 0.0, static_cast<double>(B - 1));
        batch_counts_[static_cast<size_t>(t)] += h[j];
      }
    }
    for (int64_t j = 0; j < B; ++j) h[j] = static_cast<float>(batch_counts_[static_cast<size_t>(j)]);
    // The float edges must still contain every value seen, whatever the rounding of new_lo / new_hi.
    lo = std::min(static_cast<float>(new_lo), static_cast<float>(new_min));
    hi = std::max(static_cast<float>(new_hi), static_cast<float>(new_max));
  }

  // Bin the batch exactly (double counts), then add it to the float histogram once per bin: adding 1s
  // to a float bin past 2^24 would drop them.
  std::fill(batch_counts_.begin(), batch_counts_.end(), 0.0);
  if (hi > lo) {
    const float inv_w = static_cast<float>(static_cast<double>(B) / (static_cast<double>(hi) - lo));
    const float flo = lo, last = static_cast<float>(B - 1);
    for (int64_t i = 0; i < n; ++i) {
      // Clamped in float before the conversion: rounding can step just outside [0, B), the top value
      // lands on B, and with a range near the float limit (v - lo) can overflow to inf.
      const float t = std::min(std::max((p[i] - flo) * inv_w, 0.0f), last);
      batch_counts_[static_cast<size_t>(t)] += 1.0;
    }
  } else {
    batch_counts_[0] += static_cast<double>(n);  // one point so far: everything is that point
  }
  for (int64_t j = 0; j < B; ++j) h[j] += static_cast<float>(batch_counts_[static_cast<size_t>(j)]);
  batches_.data()[0] += 1.0f;
}

// ------------------------------------------------------------------------------- HistogramObserver

namespace {

// Prefix sums over a histogram with edges [lo, lo + B w], each bin's mass taken at its centre c_j:
// count[i] = sum_{j<i} h_j, s1[i] = sum h_j c_j, s2[i] = sum h_j c_j^2. They make the clipping error
// of any run of bins O(1): sum h_j (c_j - t)^2 = count t^2 - 2 t s1 + s2.
struct HistogramStats {
  int64_t B = 0;
  double lo = 0.0, w = 0.0, total = 0.0;
  std::vector<double> count, s1, s2;  // (B + 1)
  int64_t first = 0, last = 0;        // first and last non-empty bin

  HistogramStats(const float* h, int64_t bins, double lo_edge, double hi_edge)
      : B(bins), lo(lo_edge), w((hi_edge - lo_edge) / static_cast<double>(bins)) {
    count.assign(static_cast<size_t>(B + 1), 0.0);
    s1.assign(static_cast<size_t>(B + 1), 0.0);
    s2.assign(static_cast<size_t>(B + 1), 0.0);
    first = B;
    last = -1;
    for (int64_t j = 0; j < B; ++j) {
      const double c = lo + (static_cast<double>(j) + 0.5) * w;
      const double m = h[j];
      count[j + 1] = count[j] + m;
      s1[j + 1] = s1[j] + m * c;
      s2[j + 1] = s2[j] + m * c * c;
      if (m > 0.0) {
        first = std::min(first, j);
        last = j;
      }
    }
    total = count[B];
  }

  double edge(int64_t i) const { return lo + static_cast<double>(i) * w; }

  // The model's total squared error when the values are quantized with step `delta` over [a, b].
  double error(double a, double b, double delta) const {
    // Bins whose centre lies below a are clipped to a: [0, il). Above b: [ir, B).
    const int64_t il = std::clamp<int64_t>(static_cast<int64_t>(std::ceil((a - lo) / w - 0.5)), 0, B);
    const int64_t ir = std::clamp<int64_t>(static_cast<int64_t>(std::floor((b - lo) / w - 0.5)) + 1, il, B);
    const double within_bin = w * w / 12.0;  // a bin's own spread around its centre, uniform
    const double nl = count[il], nr = count[B] - count[ir];
    const double left = nl * a * a - 2.0 * a * s1[il] + s2[il] + nl * within_bin;
    const double right = nr * b * b - 2.0 * b * (s1[B] - s1[ir]) + (s2[B] - s2[ir]) + nr * within_bin;
    const double inside = (count[ir] - count[il]) * delta * delta / 12.0;
    return std::max(left, 0.0) + std::max(right, 0.0) + inside;
  }
};

// The range the integer codes actually cover for a requested clipping range [a, b], and the distance
// between levels (two scales on a mid-rise grid, whose codes are odd).
struct EffectiveRange {
  double lo, hi, step;
};

EffectiveRange effective_range(const QScheme& s, float a, float b) {
  const ScaleZeroPoint sz = choose_scale_zero_point(s, a, b);
  const double scale = sz.scale;
  return {scale * (s.quant_min() - sz.zero_point), scale * (s.quant_max() - sz.zero_point),
          s.mid_rise ? 2.0 * scale : scale};
}

}  // namespace

HistogramObserver::HistogramObserver(const QScheme& scheme, int64_t bins) : HistogramBaseObserver(scheme, bins) {}

double HistogramObserver::expected_error(float a, float b) const {
  require_data();
  const double lo = min_val_.data()[0], hi = max_val_.data()[0];
  const EffectiveRange er = effective_range(scheme(), a, b);
  if (!(hi > lo)) {
    // Every value so far is the one point lo: its exact error, clipped then rounded to the grid.
    const double v = std::clamp(lo, er.lo, er.hi);
    const double q = er.lo + std::nearbyint((v - er.lo) / er.step) * er.step;
    return (lo - q) * (lo - q);
  }
  const HistogramStats st(histogram_.data(), bins_, lo, hi);
  return st.total > 0.0 ? st.error(er.lo, er.hi, er.step) / st.total : 0.0;
}

void HistogramObserver::range(std::vector<float>& min_vals, std::vector<float>& max_vals) const {
  require_data();
  const float lo = min_val_.data()[0], hi = max_val_.data()[0];
  min_vals.assign(1, lo);
  max_vals.assign(1, hi);
  if (!(hi > lo)) return;
  const HistogramStats st(histogram_.data(), bins_, lo, hi);
  if (st.last < st.first) return;

  // A candidate is a pair of bins (s, e), s <= e, clipping to [edge(s), edge(e + 1)].
  auto cost = [&](int64_t s, int64_t e) {
    const EffectiveRange er =
        effective_range(scheme(), static_cast<float>(st.edge(s)), static_cast<float>(st.edge(e + 1)));
    return st.error(er.lo, er.hi, er.step);
  };
  // Coarse: about 64 x 64 pairs over the occupied bins, always including the min/max pair (first,
  // last), so the result never models worse than plain min/max.
  const int64_t span = st.last - st.first + 1;
  const int64_t stride = std::max<int64_t>(1, span / 64);
  int64_t best_s = st.first, best_e = st.last;
  double best = cost(best_s, best_e);
  for (int64_t s = st.first; s <= st.last; s += stride) {
    for (int64_t e = st.last; e >= s; e -= stride) {
      const double c = cost(s, e);
      if (c < best) {
        best = c;
        best_s = s;
        best_e = e;
      }
    }
  }
  // Fine: coordinate descent at full resolution, one end at a time, until neither end moves.
  for (int iter = 0; iter < 16; ++iter) {
    const int64_t prev_s = best_s, prev_e = best_e;
    for (int64_t s = st.first; s <= best_e; ++s) {
      const double c = cost(s, best_e);
      if (c < best) {
        best = c;
        best_s = s;
      }
    }
    for (int64_t e = best_s; e <= st.last; ++e) {
      const double c = cost(best_s, e);
      if (c < best) {
        best = c;
        best_e = e;
      }
    }
    if (best_s == prev_s && best_e == prev_e) break;
  }
  min_vals[0] = static_cast<float>(st.edge(best_s));
  max_vals[0] = static_cast<float>(st.edge(best_e + 1));
}

QParams HistogramObserver::qparams() const {
  std::vector<float> mn, mx;
  range(mn, mx);
  return choose_qparams(scheme(), mn, mx);
}

// ------------------------------------------------------------------------------ PercentileObserver

PercentileObserver::PercentileObserver(const QScheme& scheme, double percentile, int64_t bins)
    : HistogramBaseObserver(scheme, bins), percentile_(percentile) {
  if (!(percentile > 50.0 && percentile <= 100.0))
    throw std::invalid_argument("percentile observer: percentile must be in (50, 100], got " + num_str(percentile));
}

std::string PercentileObserver::describe() const { return "percentile(p=" + num_str(percentile_) + ")"; }

void PercentileObserver::range(std::vector<float>& min_vals, std::vector<float>& max_vals) const {
  require_data();
  const float lo = min_val_.data()[0], hi = max_val_.data()[0];
  min_vals.assign(1, lo);
  max_vals.assign(1, hi);
  if (!(hi > lo)) return;
  const float* h = histogram_.data();
  const int64_t B = bins_;
  const double w = (static_cast<double>(hi) - lo) / static_cast<double>(B);
  double total = 0.0;
  for (int64_t j = 0; j < B; ++j) total += h[j];
  if (!(total > 0.0)) return;

  // The value below which a fraction q of the mass lies, spreading each bin's mass evenly across it.
  auto quantile = [&](double q) {
    const double target = q * total;
    double below = 0.0;
    for (int64_t j = 0; j < B; ++j) {
      const double m = h[j];
      if (m > 0.0 && below + m >= target) {
        const double t = std::clamp((target - below) / m, 0.0, 1.0);
        return lo + (static_cast<double>(j) + t) * w;
      }
      below += m;
    }
    return static_cast<double>(hi);
  };
  const double tail = (100.0 - percentile_) / 100.0;
  min_vals[0] = static_cast<float>(quantile(tail));
  max_vals[0] = static_cast<float>(quantile(1.0 - tail));
}

QParams PercentileObserver::qparams() const {
  std::vector<float> mn, mx;
  range(mn, mx);
  return choose_qparams(scheme(), mn, mx);
}

// -------------------------------------------------------------------------------------- factory

std::unique_ptr<Observer> make_observer(ObserverKind kind, const QScheme& scheme, int64_t channels) {
  if (scheme.per_channel && !observer_supports_per_channel(kind))
    throw std::invalid_argument(std::string("observer kind '") + observer_kind_name(kind) +
                                "' is per-tensor only; per-channel schemes take 'minmax' or 'ema'");
  switch (kind) {
    case ObserverKind::MinMax: return std::make_unique<MinMaxObserver>(scheme, channels);
    case ObserverKind::Ema: return std::make_unique<MovingAverageMinMaxObserver>(scheme, channels);
    case ObserverKind::Histogram: return std::make_unique<HistogramObserver>(scheme);
    case ObserverKind::Percentile: return std::make_unique<PercentileObserver>(scheme);
  }
  throw std::invalid_argument("unknown observer kind");
}

}  // namespace qatlab
