// published.cpp: reading a published-figures file and the table of the sweep's best learned rows beside it.
#include "quant/workflow/published.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include <boost/property_tree/ini_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include "core/format.h"

namespace qatlab {

namespace {

// A percentage as the file writes it: the whole text a number in [0, 100].
double parse_percent(const std::string& text, const std::string& where) {
  size_t used = 0;
  double v = NAN;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (text.empty() || used != text.size() || !(v >= 0 && v <= 100))
    throw std::invalid_argument(where + " = '" + printable(text) + "': expected an accuracy in percent, 0 to 100");
  return v;
}

// Section headers in the text: the parser drops a section without keys, which should not pass unseen.
std::vector<std::string> section_names(const std::string& text) {
  std::vector<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    line.erase(0, line.find_first_not_of(" \t\r"));
    if (!line.empty() && line[0] == '[') {
      const size_t end = line.find(']');
      std::string name = line.substr(1, end == std::string::npos ? std::string::npos : end - 1);
      name.erase(0, name.find_first_not_of(" \t"));
      name.erase(name.find_last_not_of(" \t") + 1);
      names.push_back(name);
    }
  }
  return names;
}

// Text for a Markdown table cell: a '|' would end the cell.
std::string md_cell(const std::string& text) {
  std::string out;
  for (const char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// Weight bits, then activation bits, high to low (the order results tables read in).
bool pair_before(const BitPair& a, const BitPair& b) {
  return a.wbits != b.wbits ? a.wbits > b.wbits : a.abits > b.abits;
}

}  // namespace

bool sweep_method_is_learned(const std::string& method) { return method == "lsq" || method == "pact"; }

std::vector<PublishedFigures> parse_published_ini(const std::string& text) {
  namespace pt = boost::property_tree;
  pt::ptree tree;
  std::istringstream in(text);
  try {
    pt::read_ini(in, tree);
  } catch (const pt::ini_parser_error& e) {
    throw std::invalid_argument("not an INI file: " + e.message() + " at line " + std::to_string(e.line()));
  }
  std::vector<PublishedFigures> papers;
  for (const auto& [name, section] : tree) {
    if (section.empty())
      throw std::invalid_argument("'" + printable(name) + "' is outside any section: each paper's figures go under [NAME]");
    PublishedFigures p;
    p.name = name;
    for (const auto& [key, value] : section) {
      std::string where = "[";  // (appended piece by piece: GCC 12 warns, wrongly, on "[" + std::string)
      where += printable(name);
      where += "] ";
      where += printable(key);
      const std::string v = value.data();
      if (key == "cite") {
        p.cite = v;
      } else if (key == "float") {
        p.float_accuracy = parse_percent(v, where);
      } else {
        std::vector<BitPair> pair;
        try {
          pair = parse_bit_pairs(key);
        } catch (const std::invalid_argument& e) {
          throw std::invalid_argument(where + ": expected cite, float or one W/A pair such as 4/4 (" + e.what() + ")");
        }
        if (pair.size() != 1) throw std::invalid_argument(where + ": one W/A pair per line");
        for (const auto& [seen, unused] : p.accuracy)
          if (seen == pair[0]) throw std::invalid_argument(where + ": " + pair[0].label() + " is given twice");
        p.accuracy.emplace_back(pair[0], parse_percent(v, where));
      }
    }
    if (!p.float_accuracy && p.accuracy.empty())
      throw std::invalid_argument("[" + printable(name) + "] has no figure (float = ... or W/A = ...)");
    papers.push_back(std::move(p));
  }
  for (const std::string& name : section_names(text))
    if (std::none_of(papers.begin(), papers.end(), [&](const PublishedFigures& p) { return p.name == name; }))
      throw std::invalid_argument("[" + printable(name) + "] has no figure (float = ... or W/A = ...)");
  if (papers.empty()) throw std::invalid_argument("no [paper] section with figures");
  return papers;
}

std::string published_table_md(const SweepReport& r, const std::vector<PublishedFigures>& papers) {
  std::vector<BitPair> pairs;
  auto add_pair = [&](const BitPair& b) {
    if (std::find(pairs.begin(), pairs.end(), b) == pairs.end()) pairs.push_back(b);
  };
  for (const SweepRow& row : r.rows)
    if (sweep_method_is_learned(row.method) && row.seeds_ok > 0) add_pair(row.bits);
  for (const PublishedFigures& p : papers)
    for (const auto& [bits, unused] : p.accuracy) add_pair(bits);
  std::stable_sort(pairs.begin(), pairs.end(), pair_before);

  std::ostringstream os;
  os << "## Beside published figures\n\n"
     << "Ours: the learned method (lsq or pact) with the highest mean integer-graph accuracy over its seeds at each "
        "pair and weight granularity; vs float: the difference from our float model. A paper's vs float: from its "
        "own float model.\n\n";
  os << "| W/A | weights | best learned | seeds | integer graph (%) | vs float |";
  // A paper with a float model alone (a baseline) gets one column; the others two: the figure and its
  // distance from the paper's float model.
  for (const PublishedFigures& p : papers) {
    os << " " << md_cell(p.name) << " (%) |";
    if (!p.accuracy.empty()) os << " " << md_cell(p.name) << " vs float |";
  }
  os << "\n| --- | --- | --- | --- | --- | --- |";
  for (const PublishedFigures& p : papers) os << (p.accuracy.empty() ? " --- |" : " --- | --- |");
  os << "\n";

  // Each paper's two cells: its figure at `bits` and the difference from its float (its float model's
  // figure alone for bits == nullptr).
  auto paper_cells = [&](const BitPair* bits) {
    std::ostringstream s;
    for (const PublishedFigures& p : papers) {
      if (!bits) {
        s << " " << (p.float_accuracy ? fixed(*p.float_accuracy, 2) : "") << (p.accuracy.empty() ? " |" : " | |");
        continue;
      }
      if (p.accuracy.empty()) {
        s << " |";
        continue;
      }
      const auto it = std::find_if(p.accuracy.begin(), p.accuracy.end(), [&](const auto& e) { return e.first == *bits; });
      if (it == p.accuracy.end()) {
        s << " | |";
      } else {
        s << " " << fixed(it->second, 2) << " | "
          << (p.float_accuracy ? signed_fixed(it->second - *p.float_accuracy, 2) : "") << " |";
      }
    }
    return s.str();
  };

  const Spread f = float_spread(r);
  os << "| float | | | " << f.n << " | " << mean_std(f) << " | |" << paper_cells(nullptr) << "\n";
  for (const BitPair& bits : pairs) {
    std::vector<std::string> granularities;
    for (const SweepRow& row : r.rows)
      if (row.bits == bits && sweep_method_is_learned(row.method) && row.seeds_ok > 0 &&
          std::find(granularities.begin(), granularities.end(), row.granularity) == granularities.end())
        granularities.push_back(row.granularity);
    if (granularities.empty()) {
      os << "| " << bits.label() << " | | | | | |" << paper_cells(&bits) << "\n";
      continue;
    }
    for (const std::string& g : granularities) {
      const SweepRow* best = nullptr;
      for (const SweepRow& row : r.rows)
        if (row.bits == bits && row.granularity == g && sweep_method_is_learned(row.method) && row.seeds_ok > 0 &&
            (!best || row.integer.mean > best->integer.mean))
          best = &row;
      os << "| " << bits.label() << " | " << g << " | " << best->method << " | " << best->seeds_ok << " | "
         << mean_std(best->integer) << " | " << signed_fixed(best->integer.mean - f.mean, 2) << " |"
         << paper_cells(&bits) << "\n";
    }
  }
  bool cited = false;
  for (const PublishedFigures& p : papers)
    if (!p.cite.empty()) {
      os << (cited ? "" : "\n") << "- " << md_cell(p.name) << ": " << md_cell(p.cite) << "\n";
      cited = true;
    }
  return os.str();
}

}  // namespace qatlab
