// sweep_plot.cpp: the sweep's accuracy-vs-bits charts, drawn with svg_plot.h.
#include "apps/sweep_plot.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "core/svg_plot.h"

namespace qatlab {

std::string accuracy_plot_svg(const SweepReport& r, bool equal_bits, const std::string& granularity) {
  const auto wanted = [&](const SweepRow& row) {
    return row.granularity == granularity && row.seeds_ok > 0 &&
           (equal_bits ? row.bits.wbits == row.bits.abits : row.bits.abits == 8);
  };
  std::set<int> xs;
  for (const SweepRow& row : r.rows)
    if (wanted(row)) xs.insert(row.bits.wbits);
  if (xs.size() < 2) return "";

  LineChart chart;
  chart.title = r.model + " on " + r.dataset + ", " + granularity + " weights: integer-graph accuracy" +
                (r.policy.rfind("first and last layer 8-bit", 0) == 0 ? " (first, last layer 8-bit)" : "");
  chart.x_label = equal_bits ? "bits of weights and activations" : "weight bits (activations 8 bits)";
  chart.y_label = "test accuracy (%), mean ± 1 std over seeds";
  for (int x : xs) {
    chart.x_ticks.push_back(x);
    chart.x_tick_labels.push_back(std::to_string(x));
  }
  // One line per method and layer bits (a merged report's rows may differ in them), in first-seen order.
  std::vector<std::pair<std::string, std::string>> methods;
  for (const SweepRow& row : r.rows)
    if (wanted(row) && std::find(methods.begin(), methods.end(), std::pair(row.method, row.policy)) == methods.end())
      methods.emplace_back(row.method, row.policy);
  // The zoomed range: the learned methods' points with their bars and the float model, or every point
  // when no method learns; PTQ below it goes to the edge markers.
  double lo = INFINITY, hi = -INFINITY, all_lo = INFINITY;
  bool any_learned = false;
  for (const auto& [method, policy] : methods) {
    PlotSeries s;
    s.label = method + (policy.empty() ? "" : " (" + policy_difference(policy, r.policy) + ")");
    std::vector<std::tuple<double, double, double>> points;
    for (const SweepRow& row : r.rows)
      if (wanted(row) && row.method == method && row.policy == policy)
        points.emplace_back(row.bits.wbits, row.integer.mean, row.integer.std);
    std::sort(points.begin(), points.end());
    const bool learned = method.rfind("ptq", 0) != 0;
    for (const auto& [x, y, e] : points) {
      s.x.push_back(x), s.y.push_back(y), s.err.push_back(e);
      all_lo = std::min(all_lo, y - e);
      hi = std::max(hi, y + e);
      if (learned) lo = std::min(lo, y - e);
    }
    any_learned = any_learned || (learned && !points.empty());
    chart.series.push_back(std::move(s));
  }
  if (!any_learned) lo = all_lo;
  if (!r.floats.empty()) {
    const Spread f = float_spread(r);
    chart.references.push_back({"float (32-bit)", f.mean});
    lo = std::min(lo, f.mean);
    hi = std::max(hi, f.mean);
  }
  const double span = std::max(hi - lo, 1.0);
  chart.y_min = std::max(0.0, lo - 0.15 * span);
  chart.y_max = std::min(100.0, hi + 0.1 * span);
  if (!(*chart.y_max > *chart.y_min)) chart.y_min.reset(), chart.y_max.reset();
  return render_line_chart(chart);
}

std::vector<std::pair<std::string, std::string>> accuracy_plots(const SweepReport& r) {
  std::vector<std::string> granularities;  // in first-seen order
  for (const SweepRow& row : r.rows)
    if (!row.granularity.empty() &&
        std::find(granularities.begin(), granularities.end(), row.granularity) == granularities.end())
      granularities.push_back(row.granularity);
  std::vector<std::pair<std::string, std::string>> plots;
  for (const std::string& g : granularities)
    for (const bool equal : {true, false}) {
      std::string svg = accuracy_plot_svg(r, equal, g);
      if (svg.empty()) continue;
      const std::string suffix = granularities.size() > 1 ? "_" + g : "";
      plots.emplace_back((equal ? "accuracy_vs_bits" : "accuracy_vs_wbits") + suffix + ".svg", std::move(svg));
    }
  return plots;
}

}  // namespace qatlab
