// sweep_plot.cpp: the sweep's accuracy-vs-bits charts, drawn with svg_plot.h.
#include "apps/sweep_plot.h"

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "core/svg_plot.h"

namespace qatlab {

std::string accuracy_plot_svg(const SweepReport& r, bool equal_bits) {
  const auto wanted = [&](const BitPair& b) { return equal_bits ? b.wbits == b.abits : b.abits == 8; };
  const auto x_of = [&](const BitPair& b) { return static_cast<double>(b.wbits); };
  std::set<int> xs;
  for (const SweepRow& row : r.rows)
    if (wanted(row.bits)) xs.insert(row.bits.wbits);
  if (xs.size() < 2) return "";

  std::set<std::string> granularities;
  for (const SweepRow& row : r.rows) granularities.insert(row.granularity);
  LineChart chart;
  chart.title = r.model + " on " + r.dataset + ": integer-graph accuracy" +
                (r.policy == "first and last layer 8-bit" ? " (first, last layer 8-bit)" : "");
  chart.x_label = equal_bits ? "bits of weights and activations" : "weight bits (activations 8 bits)";
  chart.y_label = "test accuracy (%), mean ± 1 std over seeds";
  for (int x : xs) {
    chart.x_ticks.push_back(x);
    chart.x_tick_labels.push_back(std::to_string(x));
  }
  std::vector<std::pair<std::string, std::string>> lines;  // (method, granularity) in first-seen order
  for (const SweepRow& row : r.rows)
    if (std::find(lines.begin(), lines.end(), std::make_pair(row.method, row.granularity)) == lines.end())
      lines.emplace_back(row.method, row.granularity);
  for (const auto& [method, gran] : lines) {
    PlotSeries s;
    s.label = granularities.size() > 1 ? method + " (" + gran + ")" : method;
    std::vector<std::tuple<double, double, double>> points;
    for (const SweepRow& row : r.rows)
      if (row.method == method && row.granularity == gran && wanted(row.bits) && row.seeds_ok > 0)
        points.emplace_back(x_of(row.bits), row.integer.mean, row.integer.std);
    std::sort(points.begin(), points.end());
    for (const auto& [x, y, e] : points) s.x.push_back(x), s.y.push_back(y), s.err.push_back(e);
    if (!s.x.empty()) chart.series.push_back(std::move(s));
  }
  if (!r.floats.empty()) {
    const Spread f = float_spread(r);
    PlotSeries s;
    s.label = "float (32-bit)";
    for (int x : xs) s.x.push_back(x), s.y.push_back(f.mean), s.err.push_back(0.0);
    chart.series.push_back(std::move(s));
  }
  return render_line_chart(chart);
}

}  // namespace qatlab
