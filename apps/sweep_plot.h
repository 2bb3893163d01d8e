// sweep_plot.h: the plots of `qatlab sweep`: integer-graph accuracy against bit width (SVG).
#pragma once

#include <string>

#include "quant/workflow/sweep.h"

namespace qatlab {

// Integer-graph accuracy (mean, error bars +-1 standard deviation over seeds) against bit width, one
// line per method (and granularity when both ran), the float model as a reference line. `equal_bits`:
// the pairs with W == A, against that bit width; otherwise the pairs with 8-bit activations, against the
// weight bits. Empty when the grid has fewer than two such pairs.
std::string accuracy_plot_svg(const SweepReport& r, bool equal_bits);

}  // namespace qatlab
