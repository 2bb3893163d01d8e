// test_svg_plot.cpp: the SVG writer: balanced well-formed markup, one line per series joined in x order,
// escaped legend labels right of the plot area, one error bar per non-zero half-width, round tick values,
// histogram bars / levels / clip lines, and one-line errors for NaN, empty or mismatched input.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/svg_plot.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::throws_with;

size_t count(const std::string& s, const std::string& needle) {
  size_t n = 0;
  for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

// Every start tag is closed in order, every '&' starts an entity, and the document is one <svg> element.
::testing::AssertionResult well_formed(const std::string& svg) {
  if (svg.rfind("<?xml", 0) != 0) return ::testing::AssertionFailure() << "no XML declaration";
  std::vector<std::string> stack;
  int roots = 0;
  for (size_t i = 0; i < svg.size(); ++i) {
    if (svg[i] == '&') {
      static const std::regex entity("^&(amp|lt|gt|quot|apos);");
      if (!std::regex_search(svg.substr(i, 8), entity)) return ::testing::AssertionFailure() << "raw & at " << i;
      continue;
    }
    if (svg[i] == '>' ) continue;
    if (svg[i] != '<') continue;
    const size_t end = svg.find('>', i);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unclosed tag at " << i;
    const std::string tag = svg.substr(i + 1, end - i - 1);
    i = end;
    if (tag.empty()) return ::testing::AssertionFailure() << "empty tag";
    if (tag[0] == '?') continue;
    if (tag.find('<') != std::string::npos) return ::testing::AssertionFailure() << "'<' inside tag " << tag;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name)
        return ::testing::AssertionFailure() << "</" << name << "> closes " << (stack.empty() ? "nothing" : stack.back());
      stack.pop_back();
      continue;
    }
    const std::string name = tag.substr(0, tag.find_first_of(" \n/"));
    if (stack.empty()) ++roots;
    if (tag.back() != '/') stack.push_back(name);
  }
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> never closed";
  if (roots != 1) return ::testing::AssertionFailure() << roots << " root elements";
  if (svg.find("<svg ") == std::string::npos) return ::testing::AssertionFailure() << "no <svg> root";
  return ::testing::AssertionSuccess();
}

// The (x, y) pairs of the n-th <polyline class="series">.
std::vector<std::pair<double, double>> polyline_points(const std::string& svg, size_t n) {
  size_t p = 0;
  for (size_t k = 0; k <= n; ++k) {
    p = svg.find("<polyline class=\"series\" points=\"", p);
    if (p == std::string::npos) return {};
    p += 10;
  }
  const size_t start = svg.find("points=\"", p) + 8, end = svg.find('"', start);
  std::vector<std::pair<double, double>> pts;
  std::istringstream in(svg.substr(start, end - start));
  std::string pair;
  while (in >> pair) {
    const size_t comma = pair.find(',');
    pts.emplace_back(std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1)));
  }
  return pts;
}

// The x attributes of every legend label.
std::vector<double> legend_xs(const std::string& svg) {
  std::vector<double> xs;
  static const std::regex re("class=\"legend-label\" x=\"([0-9.]+)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    xs.push_back(std::stod((*it)[1]));
  return xs;
}

LineChart sweep_chart() {
  LineChart c;
  c.title = "LeNet-5 on MNIST";
  c.x_label = "weight bits";
  c.y_label = "test accuracy (%)";
  c.series.push_back({"float", {8, 2, 4, 6}, {99.1, 99.1, 99.1, 99.1}, {}});
  c.series.push_back({"QAT <W&A> \"per-channel\"", {2, 4, 6, 8}, {91.0, 98.5, 99.0, 99.1}, {1.5, 0.0, 0.2, 0.1}});
  c.series.push_back({"PTQ", {8, 6, 4, 2}, {99.0, 98.0, 90.0, 10.0}, {0.5, 0.5, 2.0, 3.0}});
  return c;
}

TEST(SvgLineChart, IsWellFormedWithOnePolylinePerSeriesAndTitles) {
  const std::string svg = render_line_chart(sweep_chart());
  EXPECT_TRUE(well_formed(svg)) << svg;
  EXPECT_EQ(count(svg, "<polyline class=\"series\""), 3u);
  EXPECT_NE(svg.find(">weight bits</text>"), std::string::npos);
  EXPECT_NE(svg.find(">test accuracy (%)</text>"), std::string::npos);
  EXPECT_NE(svg.find(">LeNet-5 on MNIST</text>"), std::string::npos);
  // Each series has one marker per point: the float series' circles.
  EXPECT_EQ(count(svg, "<circle "), 4u + 1u);  // + its legend swatch
}

TEST(SvgLineChart, JoinsPointsInXOrder) {
  const std::string svg = render_line_chart(sweep_chart());
  for (size_t s = 0; s < 3; ++s) {
    const auto pts = polyline_points(svg, s);
    ASSERT_EQ(pts.size(), 4u) << "series " << s;
    for (size_t i = 1; i < pts.size(); ++i) EXPECT_LT(pts[i - 1].first, pts[i].first) << "series " << s;
  }
  // PTQ was given with x descending: after sorting its y (screen coordinates grow downwards) decreases
  // from 10 % at 2 bits to 99 % at 8 bits, so the screen y falls.
  const auto ptq = polyline_points(svg, 2);
  EXPECT_GT(ptq.front().second, ptq.back().second);
}

TEST(SvgLineChart, LegendLabelsAreEscapedAndRightOfThePlot) {
  const std::string svg = render_line_chart(sweep_chart());
  EXPECT_NE(svg.find(">QAT &lt;W&amp;A&gt; &quot;per-channel&quot;</text>"), std::string::npos);
  EXPECT_EQ(svg.find("<W&A>"), std::string::npos);
  EXPECT_NE(svg.find(">float</text>"), std::string::npos);
  EXPECT_NE(svg.find(">PTQ</text>"), std::string::npos);
  double data_right = 0;
  for (size_t s = 0; s < 3; ++s)
    for (const auto& [x, y] : polyline_points(svg, s)) data_right = std::max(data_right, x);
  const std::vector<double> xs = legend_xs(svg);
  ASSERT_EQ(xs.size(), 3u);
  for (const double x : xs) EXPECT_GT(x, data_right + 10);
}

TEST(SvgLineChart, OneErrorBarPerNonZeroHalfWidth) {
  const std::string svg = render_line_chart(sweep_chart());
  EXPECT_EQ(count(svg, "class=\"errorbar\""), 3u + 4u);  // QAT has one zero half-width
  LineChart plain = sweep_chart();
  for (auto& s : plain.series) s.err.clear();
  EXPECT_EQ(count(render_line_chart(plain), "class=\"errorbar\""), 0u);
}

TEST(SvgLineChart, ErrorBarsWidenTheFittedRangeAndTicksAreRound) {
  LineChart c;
  c.series.push_back({"a", {0, 1}, {10, 10}, {5, 5}});
  const std::string svg = render_line_chart(c);
  // The range covers 5..15 plus a margin: round ticks at 6, 8, ..., 14 (step 2) or 5, 10, 15.
  EXPECT_TRUE(svg.find(">10</text>") != std::string::npos);
  EXPECT_TRUE(svg.find(">14</text>") != std::string::npos || svg.find(">15</text>") != std::string::npos) << svg;
  // Fixed limits and named x ticks are used as given.
  c.y_min = 0;
  c.y_max = 100;
  c.x_ticks = {0, 1};
  c.x_tick_labels = {"W2", "W8 & A8"};
  const std::string fixed = render_line_chart(c);
  EXPECT_TRUE(well_formed(fixed));
  EXPECT_NE(fixed.find(">100</text>"), std::string::npos);
  EXPECT_NE(fixed.find(">W8 &amp; A8</text>"), std::string::npos);
  EXPECT_NE(fixed.find(">W2</text>"), std::string::npos);
}

// A zoomed y range: the points below it are marked at the bottom edge with their values (the line and
// the error bars stay clipped to the plot), and a reference line is drawn across with a legend entry.
TEST(SvgLineChart, ZoomedRangeMarksPointsBeyondItAndDrawsReferences) {
  LineChart c = sweep_chart();
  c.y_min = 95;
  c.y_max = 100;
  c.references.push_back({"float baseline", 98.5});
  const std::string svg = render_line_chart(c);
  EXPECT_TRUE(well_formed(svg)) << svg;
  // QAT's 91 % and PTQ's 90 and 10 % lie under 95 %; nothing else does.
  EXPECT_EQ(count(svg, "class=\"off-axis\""), 3u) << svg;
  EXPECT_NE(svg.find(">10</text>"), std::string::npos);
  // Two of them share an x: their values stand in rows, none on top of another.
  std::vector<std::string> value_y;
  for (size_t at = svg.find("class=\"off-axis\""); at != std::string::npos; at = svg.find("class=\"off-axis\"", at + 1)) {
    const size_t text = svg.find("<text x=\"", at);
    const size_t y_at = svg.find("y=\"", text);
    value_y.push_back(svg.substr(text + 9, y_at - text - 9) + svg.substr(y_at, svg.find('"', y_at + 3) - y_at));
  }
  std::sort(value_y.begin(), value_y.end());
  EXPECT_EQ(std::adjacent_find(value_y.begin(), value_y.end()), value_y.end()) << svg;
  EXPECT_EQ(count(svg, "<line class=\"reference\""), 1u);
  EXPECT_NE(svg.find(">float baseline</text>"), std::string::npos);
  // Unzoomed, the reference's value widens the fitted range like a point's.
  LineChart wide;
  wide.series.push_back({"a", {0, 1}, {10, 11}, {}});
  wide.references.push_back({"b", 50});
  EXPECT_NE(render_line_chart(wide).find(">50</text>"), std::string::npos);
  wide.references[0].y = NAN;
  EXPECT_THROW(render_line_chart(wide), std::invalid_argument);
}

TEST(SvgLineChart, RejectsNanEmptyAndMismatchedData) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  LineChart c = sweep_chart();
  c.series[1].y[2] = nan;
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"'QAT", "y[2]", "nan", "finite"}));
  c = sweep_chart();
  c.series[0].x[0] = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"'float'", "x[0]", "inf"}));
  c = sweep_chart();
  c.series[2].err[1] = nan;
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"'PTQ'", "err[1]"}));
  c = sweep_chart();
  c.series[2].err[1] = -1;
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"err[1]", "-1", ">= 0"}));
  c = sweep_chart();
  c.series[0].y.pop_back();
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"'float'", "x has 4", "y has 3"}));
  c = sweep_chart();
  c.series[1].x.clear();
  c.series[1].y.clear();
  c.series[1].err.clear();
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"no points"}));
  c = sweep_chart();
  c.series.clear();
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"no series"}));
  c = sweep_chart();
  c.y_min = nan;
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"y_min", "nan"}));
  c = sweep_chart();
  c.y_min = 5;
  c.y_max = 5;
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"y range", "y_min < y_max"}));
  c = sweep_chart();
  c.x_ticks = {2, 4};
  c.x_tick_labels = {"a"};
  EXPECT_TRUE(throws_with([&] { render_line_chart(c); }, {"1 x tick labels", "2 x ticks"}));
}

Histogram weight_histogram() {
  Histogram h;
  h.title = "conv1 weights (channel 3)";
  h.x_label = "weight value";
  h.y_label = "count";
  h.edges = {-1.0, -0.5, 0.0, 0.5, 1.0};
  h.counts = {2, 10, 12, 3};
  for (int q = -7; q <= 7; ++q) h.grid.push_back(q * 0.125);
  h.clip = std::make_pair(-0.875, 0.875);
  return h;
}

TEST(SvgHistogram, DrawsBarsLevelsAndClipLines) {
  const std::string svg = render_histogram(weight_histogram());
  EXPECT_TRUE(well_formed(svg)) << svg;
  EXPECT_EQ(count(svg, "<rect class=\"bar\""), 4u);
  EXPECT_EQ(count(svg, "<line class=\"level\""), 15u);
  EXPECT_EQ(count(svg, "<line class=\"clip\""), 2u);
  EXPECT_NE(svg.find(">quantization levels (15)</text>"), std::string::npos);
  EXPECT_NE(svg.find(">clip range [-0.875, 0.875]</text>"), std::string::npos);
  EXPECT_NE(svg.find(">conv1 weights (channel 3)</text>"), std::string::npos);
  // The tallest bar (12) reaches higher on screen than the 10 next to it.
  static const std::regex bar("<rect class=\"bar\" x=\"[0-9.]+\" y=\"([0-9.]+)\"");
  std::vector<double> tops;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), bar); it != std::sregex_iterator(); ++it)
    tops.push_back(std::stod((*it)[1]));
  ASSERT_EQ(tops.size(), 4u);
  EXPECT_LT(tops[2], tops[1]);
  EXPECT_LT(tops[1], tops[3]);

  // Without grid or clip: bars only.
  Histogram bare = weight_histogram();
  bare.grid.clear();
  bare.clip.reset();
  const std::string plain = render_histogram(bare);
  EXPECT_TRUE(well_formed(plain));
  EXPECT_EQ(count(plain, "class=\"level\""), 0u);
  EXPECT_EQ(count(plain, "class=\"clip\""), 0u);
}

TEST(SvgHistogram, RejectsBadBinsAndValues) {
  Histogram h = weight_histogram();
  h.counts[1] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"counts[1]", "nan"}));
  h = weight_histogram();
  h.edges.pop_back();
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"4 edges for 4 bins", "bins + 1"}));
  h = weight_histogram();
  h.edges[2] = -0.5;
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"edges[2]", "strictly increasing"}));
  h = weight_histogram();
  h.counts.clear();
  h.edges.clear();
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"no bins"}));
  h = weight_histogram();
  h.grid[0] = std::numeric_limits<double>::infinity();
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"grid[0]", "inf"}));
  h = weight_histogram();
  h.clip = std::make_pair(1.0, -1.0);
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"reversed"}));
  h = weight_histogram();
  h.counts[0] = -1;
  EXPECT_TRUE(throws_with([&] { render_histogram(h); }, {"counts[0]", ">= 0"}));
}

}  // namespace
}  // namespace qatlab
