// observer.h: observers watch the tensors flowing through a model and turn what they saw into a range,
// and so into quantization parameters (min/max, moving average, histogram with L2 search, percentile).
//
// Shape letters: C channels (the slices along the scheme's axis), B histogram bins.
//
// All of an observer's state lives in the tensors state() returns. Their shapes are fixed when the
// observer is built (that is why a per-channel observer is told its channel count up front) and they are
// only ever written in place, never replaced: a handle taken from state() stays a live view. FakeQuantize
// registers those handles as module buffers, so a checkpoint saves them and Module::load_state_dict
// restores them straight into the observer. Nothing is cached beside them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/batch_sync.h"
#include "core/tensor.h"
#include "nn/module.h"
#include "quant/engine/qscheme.h"
#include "quant/qat/quantizer_kind.h"

namespace qatlab {

class Observer {
 public:
  // channels: the number of slices along scheme.axis for a per-channel scheme (must be >= 1); ignored
  // (taken as 1) for a per-tensor one.
  Observer(const QScheme& scheme, int64_t channels);
  virtual ~Observer() = default;
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // Folds x into the statistics. Throws std::invalid_argument, leaving the state unchanged, when x holds
  // NaN or Inf ("... observer saw NaN/Inf in 3 values ...") or its shape does not fit a per-channel scheme.
  virtual void observe(const Tensor& x) = 0;
  // Folds in a batch known only by its minimum and maximum (finite): what observe(x) does for an x with
  // that range. False, and nothing changed, where the observer needs the values themselves (histograms,
  // per-channel schemes). Lets an op that produces x report its range instead of x being scanned again.
  virtual bool observe_range(float lo, float hi) { return false; }
  // observe(x) / observe_range() for one chunk of a global batch (core/batch_sync.h): the state changes
  // once per global batch, as observe() would for the whole batch's range. Observers that need the values
  // themselves (histograms) cannot combine chunks yet and throw std::invalid_argument saying so.
  virtual void observe_chunk(const Tensor& x, BatchSync& sync);
  virtual bool observe_range_chunk(float lo, float hi, BatchSync& sync) { return false; }
  // Throws std::logic_error when nothing has been observed yet.
  virtual QParams qparams() const = 0;
  // The range qparams() is computed from: (C) minima and maxima. Throws like qparams().
  virtual void range(std::vector<float>& min_vals, std::vector<float>& max_vals) const = 0;
  bool has_data() const;
  void reset();  // back to "nothing observed"

  const QScheme& scheme() const { return scheme_; }
  int64_t channels() const { return channels_; }
  virtual std::string kind() const = 0;  // "minmax", "ema", "histogram", "percentile"
  // One line of settings, e.g. "ema(c=0.01)".
  virtual std::string describe() const { return kind(); }

  // Checkpoint state: live handles on the tensors the observer computes with (see the file comment).
  NamedTensors state() const;
  // Copies values into the state tensors; every entry must be present with its shape.
  void load_state(const std::map<std::string, Tensor>& state);

 protected:
  // Subclasses register their state tensors once, in their constructor.
  void add_state(const std::string& name, Tensor* t);
  // Counts the batches seen (a float: exact up to 2^24 batches); 0 means no data. (1)
  Tensor batches_;
  void require_data() const;

 private:
  QScheme scheme_;
  int64_t channels_;
  std::vector<std::pair<std::string, Tensor*>> state_;
};

// Running minimum and maximum of everything observed, per tensor or per slice along the axis.
// State: "min_val", "max_val" (C), "batches" (1).
class MinMaxObserver : public Observer {
 public:
  MinMaxObserver(const QScheme& scheme, int64_t channels = 1);
  void observe(const Tensor& x) override;
  bool observe_range(float lo, float hi) override;
  void observe_chunk(const Tensor& x, BatchSync& sync) override;
  bool observe_range_chunk(float lo, float hi, BatchSync& sync) override;
  QParams qparams() const override;
  void range(std::vector<float>& min_vals, std::vector<float>& max_vals) const override;
  std::string kind() const override { return "minmax"; }

 protected:
  // The batch's (C) minima and maxima into lo / hi; throws on NaN/Inf.
  void batch_range(const Tensor& x, std::vector<float>& lo, std::vector<float>& hi) const;
  // Folds the batch range in lo_ / hi_ into the state.
  virtual void fold_batch();
  Tensor min_val_, max_val_;  // (C)
  std::vector<float> lo_, hi_;  // (C) scratch for one batch, sized once
};

// Exponential moving average of the batch minima and maxima (PyTorch's MovingAverageMinMaxObserver):
//   min <- min + c * (batch_min - min), same for max; the first batch sets min and max directly.
class MovingAverageMinMaxObserver : public MinMaxObserver {
 public:
  MovingAverageMinMaxObserver(const QScheme& scheme, int64_t channels = 1, float averaging_constant = 0.01f);
  std::string kind() const override { return "ema"; }
  std::string describe() const override;
  float averaging_constant() const { return averaging_constant_; }

 protected:
  void fold_batch() override;

 private:
  float averaging_constant_;
};

// A per-tensor histogram of everything observed, over a range that grows with the data.
// State: "histogram" (B) counts, "min_val", "max_val" (1) the histogram's edges, "batches" (1).
//
// When a batch falls outside the current edges, the range grows to the new data while keeping the old
// bin edges: the new bin width is an integer multiple k of the old one and the new lower edge sits a
// whole number of old bins below the old one, so each old bin lands inside exactly one new bin and no
// count is smeared (the same idea as PyTorch's HistogramObserver, which upsamples to the same effect).
class HistogramBaseObserver : public Observer {
 public:
  static constexpr int64_t kDefaultBins = 2048;
  HistogramBaseObserver(const QScheme& scheme, int64_t bins);
  void observe(const Tensor& x) override;
  int64_t bins() const { return bins_; }
  const Tensor& histogram() const { return histogram_; }

 protected:
  int64_t bins_;
  Tensor histogram_;          // (B) counts
  Tensor min_val_, max_val_;  // (1) the histogram's lower and upper edge
  std::vector<double> batch_counts_;  // (B) scratch: one batch binned exactly before the float add
};

// Chooses the clipping range [a, b] that minimises the expected squared quantization error of the
// observed distribution: for a candidate range with step delta (after the same zero-widening and
// nudging as choose_qparams), values inside cost delta^2 / 12 each (uniform rounding noise) and values
// outside cost their squared distance to the nearer edge (clipping). Bins are taken as uniform inside,
// prefix sums make each candidate O(1), and the search runs over bin-edge pairs coarse then fine.
class HistogramObserver : public HistogramBaseObserver {
 public:
  HistogramObserver(const QScheme& scheme, int64_t bins = kDefaultBins);
  QParams qparams() const override;
  void range(std::vector<float>& min_vals, std::vector<float>& max_vals) const override;
  std::string kind() const override { return "histogram"; }
  // The model error above for the range [a, b], per observed value; exposed for tests and reports.
  double expected_error(float a, float b) const;
};

// Range = [the (100 - p)-th percentile, the p-th percentile] of what was observed (p = 99.99 clips
// 0.01 % of the mass on each side), read from the histogram with linear interpolation inside a bin.
class PercentileObserver : public HistogramBaseObserver {
 public:
  PercentileObserver(const QScheme& scheme, double percentile = 99.99, int64_t bins = kDefaultBins);
  QParams qparams() const override;
  void range(std::vector<float>& min_vals, std::vector<float>& max_vals) const override;
  std::string kind() const override { return "percentile"; }
  std::string describe() const override;
  double percentile() const { return percentile_; }

 private:
  double percentile_;
};

// kind: "minmax" | "ema" | "histogram" | "percentile". channels as for Observer (per-channel schemes
// only; histogram and percentile are per-tensor only). Unknown kinds and unsupported combinations
// throw std::invalid_argument naming the choices.
std::unique_ptr<Observer> make_observer(ObserverKind kind, const QScheme& scheme, int64_t channels = 1);

}  // namespace qatlab
