// svg_plot.cpp: the SVG writer behind svg_plot.h: axes with "nice" ticks, series with markers and error
// bars, histograms with the quantization grid drawn over them.
#include "core/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <numeric>
#include <stdexcept>
#include <tuple>

namespace qatlab {

namespace {

// Page layout in SVG user units (pixels). The legend column sits right of the plot area so that it
// never hides a data point; its width grows with the longest legend label.
constexpr double kPlotLeft = 84, kPlotTop = 52, kPlotRight = 624, kPlotBottom = 430;
constexpr double kHeight = 500;
constexpr double kLegendGap = 18;

// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies (yellow left out: it
// vanishes on white).
constexpr const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
constexpr int kNumColours = sizeof(kColours) / sizeof(kColours[0]);
constexpr const char* kReferenceColour = "#555555";  // reference lines (baselines)
enum class Marker { kCircle, kSquare, kTriangleUp, kDiamond, kTriangleDown, kCross };
constexpr int kNumMarkers = 6;

std::string fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  if (n < 0) return {};
  if (static_cast<size_t>(n) < sizeof buf) return std::string(buf, n);
  std::string big(n + 1, '\0');
  va_start(args, format);
  std::vsnprintf(big.data(), big.size(), format, args);
  va_end(args);
  big.resize(n);
  return big;
}

std::string value_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void require_finite(double v, const std::string& what) {
  if (!std::isfinite(v)) throw std::invalid_argument(what + " is " + value_str(v) + "; every value must be finite");
}

// An axis: the value range mapped onto the plot area and where its ticks go.
struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  std::vector<std::string> labels;
};

// A round step (1, 2 or 5 times a power of ten) giving about `target` intervals over `span`.
double nice_step(double span, int target) {
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  const double nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  return nice * mag;
}

// A tick label with as many decimals as the step needs (0.25 steps: two), so that neighbours differ.
std::string tick_label(double v, double step, double magnitude) {
  if (magnitude >= 1e6 || step < 1e-4) return value_str(v);
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  std::string s = fmt("%.*f", decimals, v);
  if (s.find_first_not_of("-0.") == std::string::npos) s = fmt("%.*f", decimals, 0.0);  // no "-0"
  return s;
}

// Automatic ticks at round values inside [lo, hi].
void auto_ticks(Axis& a, int target) {
  const double step = nice_step(a.hi - a.lo, target);
  const double first = std::ceil(a.lo / step - 1e-9);
  const double magnitude = std::max(std::fabs(a.lo), std::fabs(a.hi));
  // Index-based, so that accumulated rounding never adds or drops the last tick.
  for (int i = 0;; ++i) {
    const double v = (first + i) * step;
    if (v > a.hi + step * 1e-9) break;
    a.ticks.push_back(v);
    a.labels.push_back(tick_label(v, step, magnitude));
    if (i > 100) break;
  }
}

// [lo, hi] widened by `frac` of its span on both sides; a single value gets a window around it.
std::pair<double, double> padded(double lo, double hi, double frac) {
  if (hi > lo) {
    const double pad = (hi - lo) * frac;
    return {lo - pad, hi + pad};
  }
  const double pad = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
  return {lo - pad, hi + pad};
}

double map_x(const Axis& a, double v) { return kPlotLeft + (v - a.lo) / (a.hi - a.lo) * (kPlotRight - kPlotLeft); }
double map_y(const Axis& a, double v) { return kPlotBottom - (v - a.lo) / (a.hi - a.lo) * (kPlotBottom - kPlotTop); }

double legend_width(const std::vector<std::string>& labels) {
  size_t longest = 0;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  // About 7 px per character at 13 px sans-serif, plus the swatch.
  return std::clamp(44.0 + 7.0 * static_cast<double>(longest), 120.0, 360.0);
}

// The document head, background, title, plot frame, grid lines, tick labels and axis titles.
std::string open_document(double width, const std::string& title, const std::string& x_label,
                          const std::string& y_label, const Axis& x, const Axis& y) {
  std::string s;
  s += fmt("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  s += fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
           "font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n",
           width, kHeight, width, kHeight);
  s += fmt("<title>%s</title>\n", xml_escape(title).c_str());
  s += fmt("<defs><clipPath id=\"plot-area\"><rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\"/></clipPath></defs>\n",
           kPlotLeft, kPlotTop, kPlotRight - kPlotLeft, kPlotBottom - kPlotTop);
  s += fmt("<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", width, kHeight);
  // The title sits over the plot area; a longer one is centred on the page instead and, if even that is
  // too narrow, set smaller (about 0.55 em per character of bold sans-serif) so that no end is cut off.
  const double title_width = 0.55 * 16 * static_cast<double>(title.size());
  const bool wide_title = title_width > kPlotRight - kPlotLeft;
  const double title_size = std::clamp((width - 20) / (0.55 * static_cast<double>(std::max<size_t>(title.size(), 1))), 9.0, 16.0);
  s += fmt("<text class=\"title\" x=\"%.2f\" y=\"30\" text-anchor=\"middle\" font-size=\"%.1f\" font-weight=\"bold\">%s</text>\n",
           wide_title ? width / 2 : (kPlotLeft + kPlotRight) / 2, title_size, xml_escape(title).c_str());

  s += "<g class=\"y-ticks\">\n";
  for (size_t i = 0; i < y.ticks.size(); ++i) {
    const double py = map_y(y, y.ticks[i]);
    s += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e3e3e3\" stroke-width=\"1\"/>\n", kPlotLeft,
             py, kPlotRight, py);
    s += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>\n", kPlotLeft - 5, py, kPlotLeft, py);
    s += fmt("<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", kPlotLeft - 8, py + 4.5,
             xml_escape(y.labels[i]).c_str());
  }
  s += "</g>\n<g class=\"x-ticks\">\n";
  for (size_t i = 0; i < x.ticks.size(); ++i) {
    const double px = map_x(x, x.ticks[i]);
    if (px < kPlotLeft - 0.5 || px > kPlotRight + 0.5) continue;  // a given tick outside a fixed range
    s += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>\n", px, kPlotBottom, px,
             kPlotBottom + 5);
    s += fmt("<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n", px, kPlotBottom + 20,
             xml_escape(x.labels[i]).c_str());
  }
  s += "</g>\n";
  s += fmt("<rect class=\"frame\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"black\"/>\n",
           kPlotLeft, kPlotTop, kPlotRight - kPlotLeft, kPlotBottom - kPlotTop);
  s += fmt("<text class=\"x-label\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n",
           (kPlotLeft + kPlotRight) / 2, kPlotBottom + 46, xml_escape(x_label).c_str());
  const double cy = (kPlotTop + kPlotBottom) / 2;
  s += fmt("<text class=\"y-label\" x=\"22\" y=\"%.2f\" text-anchor=\"middle\" transform=\"rotate(-90 22 %.2f)\">%s</text>\n",
           cy, cy, xml_escape(y_label).c_str());
  return s;
}

std::string marker_svg(Marker m, double cx, double cy, const char* colour) {
  const double r = 4.5;
  switch (m) {
    case Marker::kCircle:
      return fmt("<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%.2f\" fill=\"%s\"/>", cx, cy, r, colour);
    case Marker::kSquare:
      return fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>", cx - r * 0.85,
                 cy - r * 0.85, r * 1.7, r * 1.7, colour);
    case Marker::kTriangleUp:
      return fmt("<polygon points=\"%.2f,%.2f %.2f,%.2f %.2f,%.2f\" fill=\"%s\"/>", cx, cy - r * 1.1, cx - r,
                 cy + r * 0.8, cx + r, cy + r * 0.8, colour);
    case Marker::kDiamond:
      return fmt("<polygon points=\"%.2f,%.2f %.2f,%.2f %.2f,%.2f %.2f,%.2f\" fill=\"%s\"/>", cx, cy - r * 1.2,
                 cx + r, cy, cx, cy + r * 1.2, cx - r, cy, colour);
    case Marker::kTriangleDown:
      return fmt("<polygon points=\"%.2f,%.2f %.2f,%.2f %.2f,%.2f\" fill=\"%s\"/>", cx, cy + r * 1.1, cx - r,
                 cy - r * 0.8, cx + r, cy - r * 0.8, colour);
    case Marker::kCross:
      return fmt("<path d=\"M%.2f,%.2f L%.2f,%.2f M%.2f,%.2f L%.2f,%.2f\" stroke=\"%s\" stroke-width=\"2\"/>", cx - r,
                 cy - r, cx + r, cy + r, cx - r, cy + r, cx + r, cy - r, colour);
  }
  return {};
}

void check_series(const PlotSeries& s, size_t index) {
  const std::string name = "line chart series " + std::to_string(index) + " '" + s.label + "'";
  if (s.x.empty()) throw std::invalid_argument(name + " has no points; every series needs at least one");
  if (s.y.size() != s.x.size())
    throw std::invalid_argument(name + ": x has " + std::to_string(s.x.size()) + " values but y has " +
                                std::to_string(s.y.size()) + "; expected one y per x");
  if (!s.err.empty() && s.err.size() != s.x.size())
    throw std::invalid_argument(name + ": err has " + std::to_string(s.err.size()) +
                                " values; expected none or one per point (" + std::to_string(s.x.size()) + ")");
  for (size_t i = 0; i < s.x.size(); ++i) {
    require_finite(s.x[i], name + " x[" + std::to_string(i) + "]");
    require_finite(s.y[i], name + " y[" + std::to_string(i) + "]");
    if (!s.err.empty()) {
      require_finite(s.err[i], name + " err[" + std::to_string(i) + "]");
      if (s.err[i] < 0)
        throw std::invalid_argument(name + " err[" + std::to_string(i) + "] is " + value_str(s.err[i]) +
                                    "; expected a half-width >= 0");
    }
  }
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0 at all.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') out += ' ';
        else out += c;
    }
  }
  return out;
}

std::string render_line_chart(const LineChart& chart) {
  if (chart.series.empty())
    throw std::invalid_argument("line chart '" + chart.title + "' has no series; expected at least one");
  for (size_t i = 0; i < chart.series.size(); ++i) check_series(chart.series[i], i);
  for (size_t i = 0; i < chart.x_ticks.size(); ++i) require_finite(chart.x_ticks[i], "line chart x_ticks[" + std::to_string(i) + "]");
  if (!chart.x_tick_labels.empty() && chart.x_tick_labels.size() != chart.x_ticks.size())
    throw std::invalid_argument("line chart has " + std::to_string(chart.x_tick_labels.size()) + " x tick labels for " +
                                std::to_string(chart.x_ticks.size()) + " x ticks; expected one label per tick");
  for (const ReferenceLine& r : chart.references) require_finite(r.y, "line chart reference '" + r.label + "'");
  if (chart.y_min) require_finite(*chart.y_min, "line chart y_min");
  if (chart.y_max) require_finite(*chart.y_max, "line chart y_max");

  // Ranges: x over the points and the requested ticks; y over the points with their error bars.
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const PlotSeries& s : chart.series) {
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double e = s.err.empty() ? 0.0 : s.err[i];
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i] - e);
      y_hi = std::max(y_hi, s.y[i] + e);
    }
  }
  for (const double t : chart.x_ticks) {
    x_lo = std::min(x_lo, t);
    x_hi = std::max(x_hi, t);
  }
  for (const ReferenceLine& r : chart.references) {
    y_lo = std::min(y_lo, r.y);
    y_hi = std::max(y_hi, r.y);
  }
  Axis x, y;
  std::tie(x.lo, x.hi) = padded(x_lo, x_hi, 0.04);
  std::tie(y.lo, y.hi) = padded(y_lo, y_hi, 0.06);
  if (chart.y_min) y.lo = *chart.y_min;
  if (chart.y_max) y.hi = *chart.y_max;
  if (!(y.hi > y.lo))
    throw std::invalid_argument("line chart y range [" + value_str(y.lo) + ", " + value_str(y.hi) +
                                "] is empty; expected y_min < y_max");
  if (chart.x_ticks.empty()) {
    auto_ticks(x, 8);
  } else {
    x.ticks = chart.x_ticks;
    for (size_t i = 0; i < x.ticks.size(); ++i)
      x.labels.push_back(chart.x_tick_labels.empty() ? value_str(x.ticks[i]) : chart.x_tick_labels[i]);
  }
  auto_ticks(y, 6);

  std::vector<std::string> labels;
  for (const PlotSeries& s : chart.series) labels.push_back(s.label);
  for (const ReferenceLine& r : chart.references) labels.push_back(r.label);
  const double legend_x = kPlotRight + kLegendGap;
  const double width = legend_x + legend_width(labels) + 10;
  std::string svg = open_document(width, chart.title, chart.x_label, chart.y_label, x, y);

  // Data, clipped to the plot area (a fixed y range may cut points off).
  svg += "<g class=\"data\" clip-path=\"url(#plot-area)\">\n";
  std::vector<size_t> order;
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const PlotSeries& s = chart.series[si];
    const char* colour = kColours[si % kNumColours];
    const auto marker = static_cast<Marker>(si % kNumMarkers);
    order.resize(s.x.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });

    svg += fmt("<g class=\"series-group\" data-series=\"%zu\">\n", si);
    for (const size_t i : order) {
      if (s.err.empty() || s.err[i] == 0) continue;
      const double px = map_x(x, s.x[i]), top = map_y(y, s.y[i] + s.err[i]), bottom = map_y(y, s.y[i] - s.err[i]);
      svg += fmt("<path class=\"errorbar\" d=\"M%.2f,%.2f V%.2f M%.2f,%.2f H%.2f M%.2f,%.2f H%.2f\" stroke=\"%s\" "
                 "stroke-width=\"1.3\" fill=\"none\"/>\n",
                 px, top, bottom, px - 4, top, px + 4, px - 4, bottom, px + 4, colour);
    }
    svg += "<polyline class=\"series\" points=\"";
    for (size_t k = 0; k < order.size(); ++k)
      svg += fmt("%s%.2f,%.2f", k ? " " : "", map_x(x, s.x[order[k]]), map_y(y, s.y[order[k]]));
    svg += fmt("\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n", colour);
    for (const size_t i : order) svg += marker_svg(marker, map_x(x, s.x[i]), map_y(y, s.y[i]), colour) + "\n";
    svg += "</g>\n";
  }
  for (const ReferenceLine& r : chart.references) {
    const double py = map_y(y, r.y);
    svg += fmt("<line class=\"reference\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
               "stroke-width=\"1.5\" stroke-dasharray=\"6,4\"/>\n",
               kPlotLeft, py, kPlotRight, py, kReferenceColour);
  }
  svg += "</g>\n";

  // Points beyond a fixed y range: an arrow at the edge, pointing out, with the value beside it; several at
  // one x and edge stack inwards, one row each, so that no value hides another.
  std::map<std::pair<double, bool>, int> stacked;  // (x, below) -> markers drawn there so far
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const PlotSeries& s = chart.series[si];
    const char* colour = kColours[si % kNumColours];
    for (size_t i = 0; i < s.x.size(); ++i) {
      const bool below = s.y[i] < y.lo, above = s.y[i] > y.hi;
      if (!below && !above) continue;
      const double row = 13.0 * stacked[{s.x[i], below}]++;
      const double px = map_x(x, s.x[i]), tip = below ? 6.0 : -6.0;
      const double edge = below ? kPlotBottom - 4 - row : kPlotTop + 4 + row;
      svg += fmt("<g class=\"off-axis\" data-series=\"%zu\"><path d=\"M%.2f,%.2f L%.2f,%.2f L%.2f,%.2f Z\" fill=\"%s\"/>"
                 "<text x=\"%.2f\" y=\"%.2f\" font-size=\"11\" fill=\"%s\">%s</text></g>\n",
                 si, px - 5, edge - tip, px + 5, edge - tip, px, edge, colour, px + 7, edge - (below ? 2 : -8),
                 colour, value_str(s.y[i]).c_str());
    }
  }

  svg += "<g class=\"legend\">\n";
  for (size_t si = 0; si < chart.series.size(); ++si) {
    const double ly = kPlotTop + 12 + 22.0 * static_cast<double>(si);
    const char* colour = kColours[si % kNumColours];
    svg += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"2\"/>", legend_x, ly,
               legend_x + 28, ly, colour);
    svg += marker_svg(static_cast<Marker>(si % kNumMarkers), legend_x + 14, ly, colour);
    svg += fmt("<text class=\"legend-label\" x=\"%.2f\" y=\"%.2f\">%s</text>\n", legend_x + 36, ly + 4.5,
               xml_escape(chart.series[si].label).c_str());
  }
  for (size_t ri = 0; ri < chart.references.size(); ++ri) {
    const double ly = kPlotTop + 12 + 22.0 * static_cast<double>(chart.series.size() + ri);
    svg += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" stroke-width=\"1.5\" "
               "stroke-dasharray=\"6,4\"/>",
               legend_x, ly, legend_x + 28, ly, kReferenceColour);
    svg += fmt("<text class=\"legend-label\" x=\"%.2f\" y=\"%.2f\">%s</text>\n", legend_x + 36, ly + 4.5,
               xml_escape(chart.references[ri].label).c_str());
  }
  svg += "</g>\n</svg>\n";
  return svg;
}

std::string render_histogram(const Histogram& h) {
  const std::string name = "histogram '" + h.title + "'";
  if (h.counts.empty()) throw std::invalid_argument(name + " has no bins; expected at least one count");
  if (h.edges.size() != h.counts.size() + 1)
    throw std::invalid_argument(name + " has " + std::to_string(h.edges.size()) + " edges for " +
                                std::to_string(h.counts.size()) + " bins; expected bins + 1 edges");
  for (size_t i = 0; i < h.edges.size(); ++i) {
    require_finite(h.edges[i], name + " edges[" + std::to_string(i) + "]");
    if (i > 0 && !(h.edges[i] > h.edges[i - 1]))
      throw std::invalid_argument(name + " edges[" + std::to_string(i) + "] = " + value_str(h.edges[i]) +
                                  " is not above edges[" + std::to_string(i - 1) + "] = " + value_str(h.edges[i - 1]) +
                                  "; expected strictly increasing edges");
  }
  double max_count = 0;
  for (size_t i = 0; i < h.counts.size(); ++i) {
    require_finite(h.counts[i], name + " counts[" + std::to_string(i) + "]");
    if (h.counts[i] < 0)
      throw std::invalid_argument(name + " counts[" + std::to_string(i) + "] is " + value_str(h.counts[i]) +
                                  "; expected a count >= 0");
    max_count = std::max(max_count, h.counts[i]);
  }
  for (size_t i = 0; i < h.grid.size(); ++i) require_finite(h.grid[i], name + " grid[" + std::to_string(i) + "]");
  if (h.clip) {
    require_finite(h.clip->first, name + " clip low");
    require_finite(h.clip->second, name + " clip high");
    if (h.clip->first > h.clip->second)
      throw std::invalid_argument(name + " clip range [" + value_str(h.clip->first) + ", " +
                                  value_str(h.clip->second) + "] is reversed; expected low <= high");
  }

  // x covers the bins and the representable range, so that both the clipped tail and unused levels show.
  double lo = h.edges.front(), hi = h.edges.back();
  if (h.clip) {
    lo = std::min(lo, h.clip->first);
    hi = std::max(hi, h.clip->second);
  }
  Axis x, y;
  std::tie(x.lo, x.hi) = padded(lo, hi, 0.03);
  y.lo = 0;
  y.hi = max_count > 0 ? max_count * 1.08 : 1.0;
  auto_ticks(x, 8);
  auto_ticks(y, 6);

  size_t levels_in_view = 0;
  for (const double g : h.grid) levels_in_view += (g >= x.lo && g <= x.hi);
  std::vector<std::string> legend{"values"};
  if (!h.grid.empty()) legend.push_back("quantization levels (" + std::to_string(h.grid.size()) + ")");
  std::string clip_label;
  if (h.clip) clip_label = "clip range [" + value_str(h.clip->first) + ", " + value_str(h.clip->second) + "]";
  if (h.clip) legend.push_back(clip_label);

  const double legend_x = kPlotRight + kLegendGap;
  const double width = legend_x + legend_width(legend) + 10;
  std::string svg = open_document(width, h.title, h.x_label, h.y_label, x, y);

  svg += "<g class=\"data\" clip-path=\"url(#plot-area)\">\n";
  for (size_t i = 0; i < h.counts.size(); ++i) {
    const double x0 = map_x(x, h.edges[i]), x1 = map_x(x, h.edges[i + 1]), top = map_y(y, h.counts[i]);
    svg += fmt("<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#8fb3d9\" "
               "stroke=\"#4a78a8\" stroke-width=\"0.4\"/>\n",
               x0, top, std::max(x1 - x0, 0.0), kPlotBottom - top);
  }
  // 8-bit grids put 256 levels across a few hundred pixels: fade the lines as they crowd, so that the
  // bars stay visible and the density of levels still reads as a tint.
  const double opacity =
      levels_in_view ? std::clamp((kPlotRight - kPlotLeft) / (6.0 * static_cast<double>(levels_in_view)), 0.15, 0.8) : 0;
  for (const double g : h.grid) {
    if (g < x.lo || g > x.hi) continue;
    const double px = map_x(x, g);
    svg += fmt("<line class=\"level\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\" "
               "stroke-width=\"0.8\" stroke-opacity=\"%.2f\"/>\n",
               px, kPlotTop, px, kPlotBottom, opacity);
  }
  if (h.clip) {
    for (const double c : {h.clip->first, h.clip->second}) {
      const double px = map_x(x, c);
      svg += fmt("<line class=\"clip\" x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#D55E00\" "
                 "stroke-width=\"2.5\"/>\n",
                 px, kPlotTop, px, kPlotBottom);
    }
  }
  svg += "</g>\n";

  svg += "<g class=\"legend\">\n";
  double ly = kPlotTop + 12;
  svg += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"28\" height=\"12\" fill=\"#8fb3d9\" stroke=\"#4a78a8\"/>", legend_x, ly - 6);
  svg += fmt("<text class=\"legend-label\" x=\"%.2f\" y=\"%.2f\">values</text>\n", legend_x + 36, ly + 4.5);
  if (!h.grid.empty()) {
    ly += 22;
    svg += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333333\" stroke-width=\"0.8\"/>",
               legend_x + 14, ly - 8, legend_x + 14, ly + 8);
    svg += fmt("<text class=\"legend-label\" x=\"%.2f\" y=\"%.2f\">%s</text>\n", legend_x + 36, ly + 4.5,
               xml_escape(legend[1]).c_str());
  }
  if (h.clip) {
    ly += 22;
    svg += fmt("<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#D55E00\" stroke-width=\"2.5\"/>",
               legend_x + 14, ly - 8, legend_x + 14, ly + 8);
    svg += fmt("<text class=\"legend-label\" x=\"%.2f\" y=\"%.2f\">%s</text>\n", legend_x + 36, ly + 4.5,
               xml_escape(clip_label).c_str());
  }
  svg += "</g>\n</svg>\n";
  return svg;
}

}  // namespace qatlab
