// sweep_plot.h: the plots of `qatlab sweep`: integer-graph accuracy against bit width (SVG).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "quant/workflow/sweep.h"

namespace qatlab {

// A plot of one weight granularity: integer-graph accuracy (mean, error bars +-1 standard deviation over
// seeds) against bit width, one line per method (per method and layer bits where a merged report's rows
// differ in them), the float model as a dashed reference line. The y axis is zoomed to where the learned
// methods (QAT, LSQ, PACT) and the float model lie, not 0-100 %: PTQ points that collapse below it are
// marked at the bottom edge with their values, and error bars are clipped to the axis. `equal_bits`: the pairs with W == A, against that bit width; otherwise the pairs
// with 8-bit activations, against the weight bits. Empty when the grid has fewer than two such pairs.
std::string accuracy_plot_svg(const SweepReport& r, bool equal_bits, const std::string& granularity);
// The sweep's plots, (file name, SVG): accuracy_vs_bits (W = A) and accuracy_vs_wbits (8-bit
// activations), one per weight granularity (accuracy_vs_bits_per-channel.svg, ...; without the suffix
// when the sweep has one granularity); a plot with fewer than two bit widths is left out.
std::vector<std::pair<std::string, std::string>> accuracy_plots(const SweepReport& r);

}  // namespace qatlab
