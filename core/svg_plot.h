// svg_plot.h: line charts (with error bars) and histograms (with a quantization grid) as standalone SVG
// documents, written without any plotting library.
//
// Both renderers check their input first and throw std::invalid_argument with a one-line message naming
// the offending series/bin/value (NaN, infinite, empty, mismatched sizes). The output is about 800 x 500
// pixels: plot area on the left, legend to the right of it (never over the data), axis titles, numeric
// tick labels. All text is XML-escaped.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qatlab {

// One line of a chart. x, y and (when given) err have one entry per point; points are joined in x order.
struct PlotSeries {
  std::string label;
  std::vector<double> x, y, err;  // err: empty, or +-half-width per point (>= 0)
};

// A horizontal line across the plot at y (a baseline, e.g. the float model's accuracy): dashed, grey,
// with a legend entry after the series'.
struct ReferenceLine {
  std::string label;
  double y = 0;
};

struct LineChart {
  std::string title, x_label, y_label;  // labels carry units, e.g. "test accuracy (%)"
  std::vector<PlotSeries> series;       // one colour + marker per series, a legend entry each
  std::vector<ReferenceLine> references;
  std::vector<double> x_ticks;          // empty: automatic numeric ticks
  std::vector<std::string> x_tick_labels;  // empty: the x_ticks values printed; else one per x tick
  std::optional<double> y_min, y_max;   // unset: fitted to the data (with error bars) plus a margin
};

// The SVG document. Each series is one <polyline class="series">, each drawn error bar one
// <path class="errorbar"> (points with a zero half-width get none); lines and bars are clipped to the
// plot area. A point outside a fixed y range is marked at the edge it lies beyond by a
// <g class="off-axis"> (an arrow in the series' colour and the point's value; several at one x stack in
// rows), each reference line is one
// <line class="reference">.
std::string render_line_chart(const LineChart& chart);

struct Histogram {
  std::string title, x_label, y_label;
  std::vector<double> edges;   // (bins + 1), strictly increasing
  std::vector<double> counts;  // (bins), >= 0
  std::vector<double> grid;    // x positions of the quantization levels, drawn as thin vertical lines
  std::optional<std::pair<double, double>> clip;  // the representable range, drawn as two strong lines
};

// The SVG document: one <rect class="bar"> per bin, one <line class="level"> per grid position inside
// the x range, two <line class="clip"> when clip is set.
std::string render_histogram(const Histogram& h);

// s with & < > " ' replaced by XML entities.
std::string xml_escape(const std::string& s);

}  // namespace qatlab
