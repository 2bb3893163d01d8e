// published.h: the accuracies papers report for the study a sweep reproduces, and the sweep's best
// learned rows beside them (`qatlab sweep --published FILE`: a second table in table.md).
//
// The file is INI, one section per paper (its name heads the paper's columns), `#` or `;` starting a
// comment line:
//   [PACT]
//   cite = Choi et al. 2018, PACT, table 2: ResNet-20 on CIFAR-10, first and last layer 8-bit
//   float = 91.6
//   4/4 = 91.3
//   2/2 = 89.7
// `cite` (optional) says where the figures come from; `float` (optional) is the paper's float model;
// every other key is one W/A pair (as --pairs writes them) with the paper's top-1 test accuracy in
// percent. A section may hold only `float` (a float baseline, e.g. He et al. 2016's ResNet-20).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "quant/workflow/sweep.h"

namespace qatlab {

struct PublishedFigures {
  std::string name, cite;
  std::optional<double> float_accuracy;              // percent
  std::vector<std::pair<BitPair, double>> accuracy;  // percent, in the file's order
};

// The sections of a published-figures file, in order. Throws std::invalid_argument naming the section
// and key of anything else: a key outside a section, an unknown key, a bad pair, an accuracy that is not
// a number in [0, 100], a pair given twice, a section with no figure, a file with no section.
std::vector<PublishedFigures> parse_published_ini(const std::string& text);

// lsq and pact: the methods whose quantizer parameters are trained (the "learned" rows).
bool sweep_method_is_learned(const std::string& method);

// The comparison as a Markdown section: for every W/A pair the sweep or a paper has, and every weight
// granularity the sweep ran it at, the best learned row (the highest mean integer-graph accuracy over its
// seeds) with its difference from the sweep's float model, and each paper's figure with its difference
// from the paper's own float model. The float models first. Pairs ordered by weight bits, then activation
// bits, high to low.
std::string published_table_md(const SweepReport& r, const std::vector<PublishedFigures>& papers);

}  // namespace qatlab
