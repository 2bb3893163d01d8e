// inspect.cpp: the per-layer report (the walk convert lowers the model with, describing it instead,
// and a recording forward run twice: quantized and in float), the Graphviz text, histogram data and the
// description of an integer model file.
#include "quant/teach/inspect.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>

#include "quant/engine/int8_kernels.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/lower.h"
#include "quant/qat/prepare.h"
#include "quant/qat/walk.h"

namespace qatlab {

namespace {

// ------------------------------------------------------------------------------------------ formatting

std::string g4(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// "a" when the two ends agree, else "a..b".
template <typename T>
std::string span_str(const std::vector<T>& v) {
  if (v.empty()) return "-";
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return *lo == *hi ? std::to_string(*lo) : std::to_string(*lo) + ".." + std::to_string(*hi);
}

std::string spread_str(const ValueSpread& s) {
  if (s.count <= 1 || s.min == s.max) return g4(s.min);
  return g4(s.min) + " / " + g4(s.median) + " / " + g4(s.max);
}

std::string range_str(double lo, double hi) { return "[" + g4(lo) + ", " + g4(hi) + "]"; }

std::string sqnr_str(double db) {
  if (std::isnan(db)) return "n/a";
  if (std::isinf(db)) return db > 0 ? "exact" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", db);
  return buf;
}

// Columns padded to their widest cell, two spaces apart, a dashed line under the header.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) width[c] = std::max(width[c], row[c].size());
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string s = " ";
    for (size_t c = 0; c < width.size(); ++c) {
      const std::string& cell = c < cells.size() ? cells[c] : std::string();
      s += " " + cell;
      if (c + 1 < width.size()) s += std::string(width[c] - cell.size() + 1, ' ');
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(header);
  std::vector<std::string> dashes;
  for (const size_t w : width) dashes.push_back(std::string(w, '-'));
  out += line(dashes);
  for (const auto& row : rows) out += line(row);
  return out;
}

// ------------------------------------------------------------------------------------------ quantizers

std::string scheme_name(const QScheme& s) {
  std::string name = std::string(s.per_channel ? "per-channel" : "per-tensor") + (s.symmetric ? " symmetric" : " affine");
  if (s.mid_rise) name += " mid-rise";
  if (!s.is_signed) name += ", unsigned";
  return name;
}

GridReport grid_report(const std::string& path, const Quantizer& q) {
  GridReport g;
  g.quantizer = path;
  g.method = q.method_description();
  g.scheme = scheme_name(q.scheme());
  g.bits = q.scheme().bits;
  g.qparams = q.qparams();
  const QParams& qp = g.qparams;
  std::vector<double> scales(qp.scale.begin(), qp.scale.end()), zps(qp.zero_point.begin(), qp.zero_point.end());
  g.scale = value_spread(scales);
  g.zero_point = value_spread(zps);
  g.grid_min = std::numeric_limits<double>::infinity();
  g.grid_max = -std::numeric_limits<double>::infinity();
  for (size_t c = 0; c < qp.scale.size(); ++c) {
    g.grid_min = std::min(g.grid_min, static_cast<double>(qp.scale[c]) * (qp.quant_min - qp.zero_point[c]));
    g.grid_max = std::max(g.grid_max, static_cast<double>(qp.scale[c]) * (qp.quant_max - qp.zero_point[c]));
  }
  return g;
}

// "4-bit per-channel, scale 0.002..0.005" or "8-bit per-tensor, scale 0.0213, zp -128": a graph label.
std::string grid_label(const Quantizer& q) {
  std::string s = std::to_string(q.scheme().bits) + "-bit " + (q.scheme().per_channel ? "per-channel" : "per-tensor");
  try {
    const QParams qp = q.qparams();
    const auto [lo, hi] = std::minmax_element(qp.scale.begin(), qp.scale.end());
    s += "\\nscale " + (*lo == *hi ? g4(*lo) : g4(*lo) + ".." + g4(*hi));
    if (!qp.per_channel()) s += ", zp " + std::to_string(qp.zero_point[0]);
  } catch (const std::logic_error&) {
    s += "\\nscale unset";  // a quantizer that has not seen data yet
  }
  return s;
}

// ------------------------------------------------------------------------------------- the static walk

// The model's entries in execution order, from the one walk convert lowers the model with (walk.h), so
// that lower_layer and lower_add get the very grids convert gives them.
std::vector<DescribedNode> described_nodes(const QatModel& model) {
  Description walk;
  walk.walk(model, "");
  return std::move(walk.nodes);
}

LayerReport::Kind report_kind(DescribedNode::Kind kind) {
  switch (kind) {
    case DescribedNode::Kind::Input: return LayerReport::Kind::Input;
    case DescribedNode::Kind::Conv: return LayerReport::Kind::Conv;
    case DescribedNode::Kind::Linear: return LayerReport::Kind::Linear;
    case DescribedNode::Kind::Add: return LayerReport::Kind::Add;
    case DescribedNode::Kind::Requantize: return LayerReport::Kind::Requantize;
    case DescribedNode::Kind::Keep: break;
  }
  throw std::logic_error("inspect: an entry that keeps its input's grid has no row");
}

// The rows: every entry with a grid of its own.
std::vector<LayerReport> static_rows(const QatModel& model) {
  std::vector<LayerReport> rows;
  for (const DescribedNode& n : described_nodes(model)) {
    if (n.kind == DescribedNode::Kind::Keep) continue;
    LayerReport r;
    r.kind = report_kind(n.kind);
    r.name = n.name;
    r.description = n.description;
    r.has_weights = n.weights != nullptr;
    if (r.has_weights) r.weights = grid_report(n.weights_name, *n.weights);
    r.output = grid_report(n.output_name, *n.output_quant);
    r.output_multiplier = n.output_multiplier;
    r.output_shift = n.output_shift;
    r.lowering_error = n.lowering_error;
    r.weight_min = n.weight_min, r.weight_max = n.weight_max;
    r.zeroed_channels = n.zeroed_channels;
    r.floor_channels = n.floor_channels;
    r.sign_only_channels = n.sign_only_channels;
    r.weight_mid_rise = n.weight_mid_rise;
    r.out_channels = n.out_channels;
    rows.push_back(std::move(r));
  }
  return rows;
}

// ---------------------------------------------------------------------------- the float reference run

// A stand-in for a learned quantizer during the float run: passes values through, reports the grid of
// the quantizer it replaces, and says it is not quantizing, so layers skip the bias rounding they
// simulate on its behalf (as they do for a FakeQuantize with fake-quant off).
class PassThroughQuantizer : public Quantizer {
 public:
  explicit PassThroughQuantizer(std::shared_ptr<Quantizer> original)
      : Quantizer("PassThroughQuantizer", original->scheme()), original_(std::move(original)) {}
  Tensor forward(const Tensor& x) override { return x; }
  QParams qparams() const override { return original_->qparams(); }
  bool quantizing() const override { return false; }
  QuantizerMethod method() const override { return original_->method(); }
  std::string method_description() const override { return original_->method_description(); }

 private:
  std::shared_ptr<Quantizer> original_;
};

// While alive, the model computes in float: every FakeQuantize has fake-quant switched off, and the
// learned quantizers (LSQ, LSQ+, PACT have no such switch) are swapped for pass-throughs, in the module
// tree and in the grid pointers layers hold (QatNode::grid_links). The destructor
// puts back every switch as it was and every original quantizer.
class FloatReference {
 public:
  explicit FloatReference(const ModulePtr& model) : model_(model) {
    for (const auto& [name, m] : model->named_modules(model)) {
      if (FakeQuantize* q = m->as<FakeQuantize>()) {
        FakeQuantize& fq = *q;
        switches_.emplace_back(&fq, fq.fake_quant_enabled());
      } else if (m->is<Quantizer>()) {
        auto original = std::static_pointer_cast<Quantizer>(m);
        swaps_.push_back({name, original, std::make_shared<PassThroughQuantizer>(original)});
      }
    }
    for (auto& [fq, was_on] : switches_) fq->enable_fake_quant(false);
    std::map<const Quantizer*, std::shared_ptr<Quantizer>> to_pass;
    for (const Swap& s : swaps_) {
      model_->set_submodule(s.name, s.pass);
      to_pass[s.original.get()] = s.pass;
    }
    retarget(to_pass);
  }

  ~FloatReference() {
    std::map<const Quantizer*, std::shared_ptr<Quantizer>> to_original;
    for (const Swap& s : swaps_) {
      model_->set_submodule(s.name, s.original);
      to_original[s.pass.get()] = s.original;
    }
    retarget(to_original);
    for (auto& [fq, was_on] : switches_) fq->enable_fake_quant(was_on);
  }

  FloatReference(const FloatReference&) = delete;
  FloatReference& operator=(const FloatReference&) = delete;

 private:
  struct Swap {
    std::string name;
    std::shared_ptr<Quantizer> original, pass;
  };

  void retarget(const std::map<const Quantizer*, std::shared_ptr<Quantizer>>& replace) {
    const auto fix = [&](std::shared_ptr<Quantizer>& p) {
      if (!p) return;
      const auto it = replace.find(p.get());
      if (it != replace.end()) p = it->second;
    };
    for (const auto& [name, m] : model_->named_modules(model_))
      if (QatNode* node = m->as<QatNode>())
        for (std::shared_ptr<Quantizer>* link : node->grid_links()) fix(*link);
  }

  ModulePtr model_;
  std::vector<std::pair<FakeQuantize*, bool>> switches_;
  std::vector<Swap> swaps_;
};

// Puts the model in evaluation mode without gradients for the guard's life; restores its mode after.
class EvalScope {
 public:
  explicit EvalScope(Module& m) : m_(m), was_training_(m.training()) { m_.eval(); }
  ~EvalScope() { m_.set_training(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  Module& m_;
  bool was_training_;
  NoGradGuard no_grad_;
};

void check_batches(const std::vector<Tensor>& batches) {
  for (size_t b = 0; b < batches.size(); ++b) {
    const Tensor& x = batches[b];
    QATLAB_CHECK(x.defined() && x.dim() >= 2, "inspect: batch " + std::to_string(b) + " must be (N, ...), got " +
                                                   (x.defined() ? shape_str(x.shape()) : std::string("nothing")));
    const float* p = x.data();
    for (int64_t i = 0; i < x.numel(); ++i)
      QATLAB_CHECK(!std::isnan(p[i]), "inspect: batch " + std::to_string(b) + " holds NaN at element " + std::to_string(i));
  }
}

size_t row_index(const std::map<std::string, size_t>& index, const std::string& name) {
  const auto it = index.find(name);
  if (it == index.end()) throw std::logic_error("inspect: the recording run saw '" + name + "', which the walk did not");
  return it->second;
}

// The rows' names joined for an "unknown layer" message.
std::string names_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

const LayerReport& find_row(const std::vector<LayerReport>& rows, const std::string& layer) {
  std::vector<std::string> names;
  for (const LayerReport& r : rows) {
    if (r.name == layer) return r;
    names.push_back(r.name);
  }
  throw std::invalid_argument("no layer '" + layer + "'; layers: " + names_list(names));
}

// Counts of `values` in `bins` equal bins over [lo, hi] (widened when empty).
void fill_histogram(const std::vector<float>& values, double lo, double hi, int bins, GridHistogram& h) {
  QATLAB_CHECK(bins >= 1, "histogram: bins must be >= 1, got " + std::to_string(bins));
  for (const float v : values) {
    lo = std::min(lo, static_cast<double>(v));
    hi = std::max(hi, static_cast<double>(v));
  }
  if (!(hi > lo)) {
    const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo -= pad, hi += pad;
  }
  h.edges.resize(bins + 1);
  for (int i = 0; i <= bins; ++i) h.edges[i] = lo + (hi - lo) * i / bins;
  h.counts.assign(bins, 0.0);
  for (const float v : values) {
    const int64_t b = static_cast<int64_t>((v - lo) / (hi - lo) * bins);
    h.counts[std::clamp<int64_t>(b, 0, bins - 1)] += 1;
  }
}

// Every code's real value S * (q - Z) for channel c of qp, and the range they span.
void grid_levels(const QParams& qp, size_t c, GridHistogram& h) {
  const double s = qp.scale[c];
  const int32_t z = qp.zero_point[c];
  // A mid-rise grid's codes are the odd ones only.
  for (int32_t q = qp.quant_min; q <= qp.quant_max; q += qp.odd_codes ? 2 : 1) h.levels.push_back(s * (q - z));
  h.clip_min = s * (qp.quant_min - z);
  h.clip_max = s * (qp.quant_max - z);
}

}  // namespace

// --------------------------------------------------------------------------------------------- public

ValueSpread value_spread(std::vector<double> values) {
  ValueSpread s;
  s.count = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  s.min = values.front();
  s.max = values.back();
  s.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  return s;
}

int grid_bits(const QParams& qp) {
  const int64_t levels = qp.levels();
  int bits = 0;
  while ((int64_t{1} << bits) < levels) ++bits;
  return bits;
}

Tensor forward_recording(QatModel& model, const Tensor& x, const OutputVisitor& seen) {
  Recording walk(seen);
  return walk.run(model, "", x);
}

std::vector<std::string> inspectable_layers(const QatModel& model) {
  std::vector<std::string> names;
  for (const LayerReport& r : static_rows(model)) names.push_back(r.name);
  return names;
}

ModelReport inspect_model(const std::shared_ptr<QatModel>& model, const std::vector<Tensor>& batches) {
  QATLAB_CHECK(model != nullptr, "inspect: no model");
  check_batches(batches);
  ModelReport report;
  report.layers = static_rows(*model);
  std::vector<LayerReport>& rows = report.layers;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < rows.size(); ++i) index[rows[i].name] = i;

  std::vector<float> act_lo(rows.size(), std::numeric_limits<float>::infinity());
  std::vector<float> act_hi(rows.size(), -std::numeric_limits<float>::infinity());
  std::vector<int64_t> clipped(rows.size(), 0);
  {
    EvalScope eval(*model);
    for (const Tensor& x : batches) {
      std::vector<Tensor> quantized(rows.size());  // each row's output in the QAT model, this batch
      forward_recording(*model, x, [&](const std::string& name, const Tensor& y) { quantized[row_index(index, name)] = y; });
      FloatReference float_run(model);
      forward_recording(*model, x, [&](const std::string& name, const Tensor& yf) {
        const size_t i = row_index(index, name);
        LayerReport& r = rows[i];
        const Tensor& yq = quantized[i];
        QATLAB_CHECK(yq.defined() && yq.shape() == yf.shape(),
                     "inspect: '" + name + "' gave " + (yq.defined() ? shape_str(yq.shape()) : std::string("nothing")) +
                         " quantized but " + shape_str(yf.shape()) + " in float");
        // The unclamped code decides clipping, as in fake-quant's straight-through test: a value is
        // clipped when the clamp, not the rounding, sets its code.
        const QParams& g = r.output.qparams;
        const float inv_scale = 1.0f / g.scale[0];
        const float lo_code = static_cast<float>(g.quant_min - g.zero_point[0]);
        const float hi_code = static_cast<float>(g.quant_max - g.zero_point[0]);
        const float* f = yf.data();
        const float* q = yq.data();
        double signal = 0, noise = 0;
        for (int64_t k = 0; k < yf.numel(); ++k) {
          const double d = static_cast<double>(q[k]) - f[k];
          signal += static_cast<double>(f[k]) * f[k];
          noise += d * d;
          act_lo[i] = std::min(act_lo[i], f[k]);
          act_hi[i] = std::max(act_hi[i], f[k]);
          const float code = std::nearbyint(f[k] * inv_scale);
          clipped[i] += code < lo_code || code > hi_code;
        }
        r.signal += signal;
        r.noise += noise;
        r.elements += yf.numel();
      });
      report.images += x.size(0);
    }
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    LayerReport& r = rows[i];
    if (r.elements > 0) {
      r.act_min = act_lo[i];
      r.act_max = act_hi[i];
      r.clipped_fraction = static_cast<double>(clipped[i]) / static_cast<double>(r.elements);
    }
    if (r.elements == 0 || (r.signal == 0 && r.noise == 0))
      r.sqnr_db = std::numeric_limits<double>::quiet_NaN();
    else
      r.sqnr_db = r.noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(r.signal / r.noise);
  }
  return report;
}

SqnrByBits ptq_sqnr_by_bits(const std::function<ModulePtr()>& make_float, const std::vector<int>& bits,
                            const std::vector<Tensor>& calib, const std::vector<Tensor>& batches) {
  check_batches(calib);
  SqnrByBits out;
  out.bits = bits;
  for (size_t b = 0; b < bits.size(); ++b) {
    QATLAB_CHECK(bits[b] >= 2 && bits[b] <= 8, "sqnr by bits: bit widths must be in 2..8, got " + std::to_string(bits[b]));
    const auto model = prepare_qat(make_float(), QConfig::from_options(bits[b], bits[b], true, "minmax", "minmax", {}));
    size_t next = 0;
    calibrate_observers(*model, [&](Tensor& x) {
      if (next == calib.size()) return false;
      x = calib[next++];
      return true;
    });
    const ModelReport report = inspect_model(model, batches);
    if (b == 0) {
      for (const LayerReport& r : report.layers) out.layers.push_back(r.name);
      out.sqnr_db.assign(out.layers.size(), std::vector<double>(bits.size()));
    }
    QATLAB_CHECK(report.layers.size() == out.layers.size(), "sqnr by bits: the model's layers changed between runs");
    for (size_t l = 0; l < report.layers.size(); ++l) out.sqnr_db[l][b] = report.layers[l].sqnr_db;
  }
  return out;
}

std::string format_sqnr_by_bits(const SqnrByBits& s) {
  std::vector<std::string> header{"layer"};
  for (const int b : s.bits) header.push_back("W" + std::to_string(b) + "A" + std::to_string(b));
  std::vector<std::vector<std::string>> rows;
  for (size_t l = 0; l < s.layers.size(); ++l) {
    std::vector<std::string> row{s.layers[l]};
    for (const double db : s.sqnr_db[l]) row.push_back(sqnr_str(db));
    rows.push_back(row);
  }
  return render_table(header, rows);
}

std::string format_report(const ModelReport& report) {
  std::vector<std::vector<std::string>> quantizers, integers, ranges;
  for (const LayerReport& r : report.layers) {
    const std::string w_bits = r.has_weights ? std::to_string(r.weights.bits) : "-";
    quantizers.push_back({r.name, r.description, w_bits + ":" + std::to_string(r.output.bits),
                          r.has_weights ? r.weights.scheme + ", " + r.weights.method : "-",
                          r.output.scheme + ", " + r.output.method});
    std::string mult = span_str(r.output_multiplier), shift = span_str(r.output_shift);
    if (!r.lowering_error.empty()) mult = "no integer form", shift = "-";
    if (r.kind == LayerReport::Kind::Input) mult = "-", shift = "-";
    integers.push_back({r.name, r.has_weights ? spread_str(r.weights.scale) : "-", g4(r.output.scale.min),
                        std::to_string(static_cast<int64_t>(r.output.zero_point.min)), mult, shift});
    const bool measured = r.elements > 0;
    // Two significant digits for small shares: a handful of clipped values out of a million still shows.
    const double pct = 100.0 * r.clipped_fraction;
    char clip[32];
    std::snprintf(clip, sizeof clip, pct == 0 ? "0 %%" : pct < 0.1 ? "%.2g %%" : "%.1f %%", pct);
    ranges.push_back({r.name, r.has_weights ? range_str(r.weight_min, r.weight_max) : "-",
                      r.has_weights ? range_str(r.weights.grid_min, r.weights.grid_max) : "-",
                      measured ? range_str(r.act_min, r.act_max) : "-", range_str(r.output.grid_min, r.output.grid_max),
                      measured ? clip : "-", sqnr_str(r.sqnr_db)});
  }
  std::string out = "Quantizers (bits as weights:activations)\n";
  out += render_table({"layer", "module", "bits", "weights", "activations (output)"}, quantizers);
  out += "\nGrids and integer requantization (weight scales per channel as min / median / max; "
         "output_multiplier and output_shift as convert emits them, min..max over channels)\n";
  out += render_table({"layer", "weight scale", "act scale", "act zp", "output_multiplier", "output_shift"}, integers);
  out += "\nRanges and SQNR over " + std::to_string(report.images) +
         " images (act range: the float model's output; clipped: its share outside the grid;\n"
         "SQNR = 10 log10(sum y_float^2 / sum (y_qat - y_float)^2) of each output, the QAT model against the "
         "same model in float)\n";
  out += render_table({"layer", "weight range", "weight grid", "act range", "act grid", "clipped", "SQNR dB"}, ranges);
  // Channels that learned themselves away (an LSQ step grown past every weight, or pushed to its floor)
  // look like any other in the tables above; they are listed here.
  std::vector<std::vector<std::string>> dead;
  const auto list = [](const std::vector<int64_t>& c) {
    std::string s;
    for (const int64_t v : c) s += (s.empty() ? "" : ",") + std::to_string(v);
    return s.empty() ? std::string("-") : s;
  };
  for (const LayerReport& r : report.layers)
    if (!r.zeroed_channels.empty() || !r.floor_channels.empty())
      dead.push_back({r.name, std::to_string(r.zeroed_channels.size() + r.floor_channels.size()) + " of " +
                                  std::to_string(r.out_channels),
                      list(r.zeroed_channels), list(r.floor_channels)});
  out += "\nDead output channels (every weight code 0, or the weight step at its floor of 1.2e-07: the channel's "
         "output is its bias, whatever the input)";
  out += dead.empty() ? ": none\n" : "\n" + render_table({"layer", "dead", "codes all 0", "step at the floor"}, dead);
  // A mid-rise grid has no 0 code: a channel whose step outgrew its weights keeps their signs alone.
  std::vector<std::vector<std::string>> sign_only;
  bool mid_rise = false;
  for (const LayerReport& r : report.layers) {
    mid_rise = mid_rise || r.weight_mid_rise;
    if (!r.sign_only_channels.empty())
      sign_only.push_back({r.name, std::to_string(r.sign_only_channels.size()) + " of " + std::to_string(r.out_channels),
                           list(r.sign_only_channels)});
  }
  if (!mid_rise) return out;
  out += "\nMid-rise channels on their innermost levels only (every weight code +-1: the channel keeps its weights' "
         "signs alone)";
  out += sign_only.empty() ? ": none\n" : "\n" + render_table({"layer", "sign only", "channels"}, sign_only);
  return out;
}

// ------------------------------------------------------------------------------------------- graphviz

namespace {

std::string dot_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// Writes nodes and edges while walking the model in execution order; each call returns the id of the
// node whose output the next module reads.
class DotWriter {
 public:
  std::string text;

  std::string node(const std::string& label, const std::string& attrs) {
    const std::string id = "n" + std::to_string(next_id_++);
    text += "  " + id + " [label=\"" + label + "\"" + (attrs.empty() ? "" : ", " + attrs) + "];\n";
    return id;
  }
  void edge(const std::string& from, const std::string& to, const std::string& attrs = "") {
    text += "  " + from + " -> " + to + (attrs.empty() ? "" : " [" + attrs + "]") + ";\n";
  }
  // label already escaped where it carries \n separators of its own.
  std::string quantizer(const std::string& path, const Quantizer& q, bool weights) {
    return node(dot_escape(path) + "\\n" + dot_escape(q.method_description()) + "\\n" + grid_label(q),
                std::string("shape=ellipse, style=filled, class=\"fake_quant\", fillcolor=\"") +
                    (weights ? "#cfe3f7" : "#fbd9bd") + "\"");
  }

  // The boxes and ellipses of one entry of the description, with edges from the nodes of the slots it
  // reads; returns the node whose output the entries after it read.
  std::string entry(const DescribedNode& n, const std::vector<std::string>& slot_node) {
    const std::string prev = n.inputs.empty() ? "" : slot_node[n.inputs[0]];
    const std::string layer_box = "shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\"";
    switch (n.kind) {
      case DescribedNode::Kind::Input:
        return quantizer(n.output_name, *n.output_quant, false);
      case DescribedNode::Kind::Conv:
      case DescribedNode::Kind::Linear: {
        const std::string id = node(dot_escape(n.name + "\n" + n.description), layer_box);
        const std::string w = quantizer(n.weights_name, *n.weights, true);
        edge(w, id, "label=\"weights\", style=dashed");
        edge(prev, id);
        const std::string out = quantizer(n.output_name, *n.output_quant, false);
        edge(id, out);
        return out;
      }
      case DescribedNode::Kind::Requantize: {
        const std::string out = quantizer(n.output_name, *n.output_quant, false);
        edge(prev, out, "label=\"requantize\"");
        return out;
      }
      case DescribedNode::Kind::Add: {
        const std::string id = node(dot_escape(n.name + "\n" + n.description), layer_box);
        edge(prev, id);
        edge(slot_node[n.inputs[1]], id, "label=\"shortcut\"");
        const std::string out = quantizer(n.output_name, *n.output_quant, false);
        edge(id, out);
        return out;
      }
      case DescribedNode::Kind::Keep:
        break;
    }
    std::string label = n.name + "\n" + n.type;
    if (!n.description.empty()) label += " " + n.description;
    if (n.keeps_grid) label += "\n(keeps its input's grid)";
    const std::string id = node(dot_escape(label), "shape=box");
    edge(prev, id);
    return id;
  }

 private:
  int next_id_ = 0;
};

}  // namespace

std::string model_to_dot(const QatModel& model) {
  DotWriter w;
  w.text = "digraph qat_model {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
           "  edge [fontname=\"Helvetica\", fontsize=9];\n";
  Description walk;
  walk.walk(model, "");
  std::vector<std::string> slot_node(walk.slots());  // the node each slot's values come out of
  slot_node[0] = w.node("input (float)", "shape=plaintext");
  for (const DescribedNode& n : walk.nodes) {
    const std::string id = w.entry(n, slot_node);
    if (n.kind == DescribedNode::Kind::Input) w.edge(slot_node[0], id);
    slot_node[n.output] = id;
  }
  const std::string output = w.node("output (float logits)", "shape=plaintext");
  w.edge(slot_node[walk.at.slot], output);
  w.text += "}\n";
  return w.text;
}

// ----------------------------------------------------------------------------------------- histograms

GridHistogram weight_histogram(const QatModel& model, const std::string& layer, int64_t channel, int bins) {
  const std::vector<LayerReport> rows = static_rows(model);
  const LayerReport& row = find_row(rows, layer);
  QATLAB_CHECK(row.has_weights, "layer '" + layer + "' (" + row.description +
                                    ") has no weights; ask for its output values instead (--activations)");
  const auto& l = static_cast<const QatLayer&>(*model.submodule(layer));
  const Tensor w = l.folded_weight();  // (OC, C/groups, KH, KW) or (OC, IN)
  const int64_t oc = w.size(0), per_channel = w.numel() / oc;
  const QParams& qp = row.weights.qparams;
  QATLAB_CHECK(channel < oc, "--channel " + std::to_string(channel) + " is out of range: layer '" + layer + "' has " +
                                 std::to_string(oc) + " output channels (0.." + std::to_string(oc - 1) + ")");
  GridHistogram h;
  h.x_label = "folded weight value";
  std::string which;
  if (qp.per_channel()) {
    if (channel < 0) {
      channel = std::max_element(qp.scale.begin(), qp.scale.end()) - qp.scale.begin();
      which = ", channel " + std::to_string(channel) + " of " + std::to_string(oc) + " (largest scale)";
    } else {
      which = ", channel " + std::to_string(channel) + " of " + std::to_string(oc);
    }
  } else if (channel >= 0) {
    which = ", channel " + std::to_string(channel) + " of " + std::to_string(oc) + " (one grid for all channels)";
  }
  const int64_t begin = channel >= 0 ? channel * per_channel : 0;
  const int64_t end = channel >= 0 ? begin + per_channel : w.numel();
  const std::vector<float> values(w.data() + begin, w.data() + end);
  grid_levels(qp, qp.per_channel() ? static_cast<size_t>(channel) : 0, h);
  fill_histogram(values, h.clip_min, h.clip_max, bins, h);
  h.channel = channel;
  h.title = layer + " weights (BN-folded)" + which + ", " + std::to_string(row.weights.bits) + "-bit " +
            row.weights.scheme + " grid";
  return h;
}

GridHistogram activation_histogram(const std::shared_ptr<QatModel>& model, const std::string& layer,
                                   const std::vector<Tensor>& batches, int bins) {
  QATLAB_CHECK(model != nullptr, "inspect: no model");
  const std::vector<LayerReport> rows = static_rows(*model);
  const LayerReport& row = find_row(rows, layer);
  check_batches(batches);
  std::vector<float> values;
  int64_t images = 0;
  {
    EvalScope eval(*model);
    FloatReference float_run(model);
    for (const Tensor& x : batches) {
      forward_recording(*model, x, [&](const std::string& name, const Tensor& y) {
        if (name == layer) values.insert(values.end(), y.data(), y.data() + y.numel());
      });
      images += x.size(0);
    }
  }
  GridHistogram h;
  h.x_label = "output value (float model)";
  grid_levels(row.output.qparams, 0, h);
  fill_histogram(values, h.clip_min, h.clip_max, bins, h);
  h.title = layer + " output of the float model over " + std::to_string(images) + " images, " +
            std::to_string(row.output.bits) + "-bit " + row.output.scheme + " grid";
  return h;
}

// ------------------------------------------------------------------------------------ integer model

namespace {

// One op of an integer model as the table and the graph drawing show it; the shapes and grids of the
// slots are followed from the Quantize entry (one image).
struct OpView {
  Shape out;
  QParams out_grid;
  std::string w_bits = "-", w_scale = "-", mult = "-", shift = "-", extra;
};

std::vector<OpView> view_ops(const Int8Graph& graph) {
  std::vector<Shape> shape(graph.num_slots);  // (1, ...) per slot: one image
  std::vector<QParams> grid(graph.num_slots);
  std::vector<OpView> views;
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Int8Op& op = graph.ops[i];
    QATLAB_CHECK(op.output >= 0 && op.output < graph.num_slots,
                 "integer model: op " + std::to_string(i) + " writes slot " + std::to_string(op.output) + " of " +
                     std::to_string(graph.num_slots));
    for (const int s : op.inputs)
      QATLAB_CHECK(s >= 0 && s < op.output, "integer model: op " + std::to_string(i) + " reads slot " + std::to_string(s) +
                                                " before it is written");
    const Shape in = op.inputs.empty() ? Shape{} : shape[op.inputs[0]];
    OpView v;
    v.out = in;
    v.out_grid = op.inputs.empty() ? QParams{} : grid[op.inputs[0]];
    switch (op.kind) {
      case Int8OpKind::Quantize:
        v.out = {1};
        v.out.insert(v.out.end(), graph.input_shape.begin(), graph.input_shape.end());
        v.out_grid = op.grid;
        v.extra = op.pixel_codes.empty() ? "from floats" : "from raw pixels: table (C, 256)";
        break;
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected: {
        const LoweredLayer& l = op.layer;
        v.out = l.is_conv ? conv2d_int8_output_shape(l.conv, in, l.weight_shape)
                          : fully_connected_int8_output_shape(l.fc, in, l.weight_shape);
        v.out_grid = l.output;
        v.w_bits = std::to_string(grid_bits(l.weights));
        v.w_scale = spread_str(value_spread(std::vector<double>(l.weights.scale.begin(), l.weights.scale.end())));
        v.mult = span_str(l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier);
        v.shift = span_str(l.is_conv ? l.conv.output_shift : l.fc.output_shift);
        v.extra = "weights " + shape_str(l.weight_shape) + (l.weights.odd_codes ? ", mid-rise (odd codes)" : "");
        break;
      }
      case Int8OpKind::MaxPool2d:
      case Int8OpKind::AvgPool2d:
        v.out = pool2d_int8_output_shape(in, op.kernel, op.stride, op.pad);
        v.extra = "k " + std::to_string(op.kernel) + " stride " + std::to_string(op.stride) + " pad " + std::to_string(op.pad);
        break;
      case Int8OpKind::GlobalAvgPool:
        v.out = {in.at(0), in.at(1)};
        break;
      case Int8OpKind::Flatten:
        v.out = {in.at(0), shape_numel(in) / in.at(0)};
        break;
      case Int8OpKind::Clamp:
        v.extra = "clamp [" + std::to_string(op.clamp_min) + ", " + std::to_string(op.clamp_max) + "]";
        break;
      case Int8OpKind::Add:
        v.out_grid = op.grid;
        v.mult = std::to_string(op.add.output_multiplier);
        v.shift = std::to_string(op.add.output_shift);
        v.extra = "inputs rescaled by " + std::to_string(op.add.input1_multiplier) + " >> " +
                  std::to_string(-op.add.input1_shift) + ", " + std::to_string(op.add.input2_multiplier) + " >> " +
                  std::to_string(-op.add.input2_shift);
        break;
      case Int8OpKind::Requantize:
        v.out_grid = op.grid;
        v.mult = std::to_string(op.requant.multiplier);
        v.shift = std::to_string(op.requant.shift);
        v.extra = "clamp [" + std::to_string(op.requant.quantized_activation_min) + ", " +
                  std::to_string(op.requant.quantized_activation_max) + "]";
        break;
      case Int8OpKind::Dequantize:
        v.out_grid = op.grid;
        break;
      case Int8OpKind::ImageRows:
        v.out = {in.at(0), in.at(2), in.at(1) * in.at(3)};
        break;
      case Int8OpKind::Lstm: {
        const LstmInt8Params& l = op.lstm;
        v.out = lstm_int8_output_shape(l, in);
        v.out_grid = l.hidden;
        v.w_bits = std::to_string(grid_bits(l.weights_ih));
        v.w_scale = spread_str(value_spread(std::vector<double>(l.weights_ih.scale.begin(), l.weights_ih.scale.end())));
        v.mult = span_str(l.input_multiplier);
        v.shift = span_str(l.input_shift);
        v.extra = "input side shown; recurrent " + span_str(l.recurrent_multiplier) + " shift " +
                  span_str(l.recurrent_shift) + ", hidden " + std::to_string(l.hidden_multiplier) + " shift " +
                  std::to_string(l.hidden_shift) + ", cell 2^-" + std::to_string(l.cell_frac_bits);
        break;
      }
      case Int8OpKind::LastStep:
        v.out = {in.at(0), in.at(2)};
        break;
    }
    shape[op.output] = v.out;
    grid[op.output] = v.out_grid;
    views.push_back(std::move(v));
  }
  return views;
}

std::string grid_str(const QParams& g) {
  return g.scale.empty() ? "-" : g4(g.scale[0]) + ", " + std::to_string(g.zero_point[0]);
}

// The input pipeline: the pixel table's first and last entries per channel, or that the input is floats.
std::string pixel_table_text(const Int8Graph& graph) {
  if (!graph.has_pixel_table())
    return "input pipeline: normalised floats quantized on the input grid (no pixel table in this file)\n";
  const Int8Op& entry = graph.ops.front();
  std::string out = "input pipeline: raw 8-bit pixels -> input codes by the pixel table (ops/000/pixel_codes, one "
                    "row of 256 per channel):\n";
  const size_t channels = entry.pixel_codes.size() / 256;
  for (size_t c = 0; c < channels; ++c) {
    out += "  channel " + std::to_string(c);
    if (c < entry.pixel_mean.size() && c < entry.pixel_std.size())
      out += " ((p / 255 - " + g4(entry.pixel_mean[c]) + ") / " + g4(entry.pixel_std[c]) + ")";
    out += ": p = 0..7 ->";
    for (int p = 0; p < 8; ++p) out += " " + std::to_string(entry.pixel_codes[c * 256 + p]);
    out += ", ..., p = 252..255 ->";
    for (int p = 252; p < 256; ++p) out += " " + std::to_string(entry.pixel_codes[c * 256 + p]);
    out += "\n";
  }
  return out;
}

}  // namespace

std::string describe_int8_graph(const Int8Graph& graph) {
  const std::vector<OpView> views = view_ops(graph);
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Int8Op& op = graph.ops[i];
    const OpView& v = views[i];
    const bool has_grid = !v.out_grid.scale.empty();
    rows.push_back({std::to_string(i), int8_op_name(op.kind), op.name.empty() ? "-" : op.name, shape_str(v.out),
                    v.w_bits + ":" + (has_grid ? std::to_string(grid_bits(v.out_grid)) : "-"), v.w_scale,
                    grid_str(v.out_grid), v.mult, v.shift, v.extra});
  }
  std::string out = "integer model: input " + shape_str(graph.input_shape) + ", " + std::to_string(graph.ops.size()) +
                    " ops, " + std::to_string(graph.parameter_bytes()) + " bytes of integer parameters\n";
  out += "(an integer model keeps no float weights, so no SQNR: inspect the QAT checkpoint it came from for that)\n";
  out += render_table({"#", "op", "name", "output (1 image)", "bits W:A", "weight scale", "out scale, zp",
                       "output_multiplier", "output_shift", "details"},
                      rows);
  out += pixel_table_text(graph);
  return out;
}

std::string int8_graph_to_dot(const Int8Graph& graph) {
  const std::vector<OpView> views = view_ops(graph);
  std::string t = "digraph int8_graph {\n  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];\n"
                  "  edge [fontname=\"Helvetica\", fontsize=9];\n";
  t += "  input [label=\"input (" + std::string(graph.has_pixel_table() ? "raw pixels" : "float") + ") " +
       dot_escape(shape_str(graph.input_shape)) + "\", shape=plaintext];\n";
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Int8Op& op = graph.ops[i];
    const OpView& v = views[i];
    std::string label = "#" + std::to_string(i) + " " + int8_op_name(op.kind) + (op.name.empty() ? "" : "\n" + op.name);
    if (v.extra.size()) label += "\n" + v.extra;
    if (v.w_bits != "-") label += (v.extra.rfind("weights ", 0) == 0 ? ", " : "\nweights ") + v.w_bits + "-bit, scale " + v.w_scale;
    // The lstm's table columns hold its input side's multipliers (the recurrent ones are in `extra`).
    const std::string m = op.kind == Int8OpKind::Lstm ? "input" : "output";
    if (v.mult != "-") label += "\n" + m + "_multiplier " + v.mult + "\n" + m + "_shift " + v.shift;
    const std::string id = "op" + std::to_string(i);
    t += "  " + id + " [label=\"" + dot_escape(label) +
         "\", class=\"op\", shape=box, style=\"rounded,filled\", fillcolor=\"#eeeeee\"];\n";
    if (op.inputs.empty()) t += "  input -> " + id + ";\n";
    for (size_t k = 0; k < op.inputs.size(); ++k)
      t += "  slot" + std::to_string(op.inputs[k]) + " -> " + id +
           (op.inputs.size() > 1 ? " [label=\"input " + std::to_string(k + 1) + "\"]" : "") + ";\n";
    std::string slot = "slot " + std::to_string(op.output) + "\n" + shape_str(v.out);
    if (op.kind == Int8OpKind::Dequantize) {
      slot += "\nfloat = " + g4(v.out_grid.scale[0]) + " * (code - " + std::to_string(v.out_grid.zero_point[0]) + ")";
    } else if (!v.out_grid.scale.empty()) {
      slot += "\n" + std::to_string(grid_bits(v.out_grid)) + "-bit, scale " + g4(v.out_grid.scale[0]) + ", zp " +
              std::to_string(v.out_grid.zero_point[0]);
    }
    t += "  slot" + std::to_string(op.output) + " [label=\"" + dot_escape(slot) +
         "\", class=\"slot\", shape=ellipse, style=filled, fillcolor=\"" +
         (op.kind == Int8OpKind::Dequantize ? "#ffffff" : "#fbd9bd") + "\"];\n";
    t += "  " + id + " -> slot" + std::to_string(op.output) + ";\n";
  }
  t += "}\n";
  return t;
}

}  // namespace qatlab
