// test_published.cpp: papers' figures read from their INI file, and the table of the sweep's best learned
// rows beside them (quant/workflow/published.h).
#include "quant/workflow/published.h"
#include "tests/quant/workflow/sweep_test_util.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace qatlab {
namespace {

using testing::made_up_report;
using testing::made_up_result;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The table's line for `label` (its first cell), "" when there is none.
std::string row_of(const std::string& table, const std::string& label) {
  for (const std::string& line : lines_of(table))
    if (line.rfind("| " + label + " |", 0) == 0) return line;
  return "";
}

TEST(PublishedFigures, ReadsSectionsInOrder) {
  const std::vector<PublishedFigures> p = parse_published_ini(
      "# figures\n[PACT]\ncite = Choi et al. 2018, table 2\nfloat = 91.6\n4/4 = 91.3\n2/2 = 89.7\n\n"
      "; a float baseline alone\n[He et al. 2016]\nfloat = 91.25\n");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].name, "PACT");
  EXPECT_EQ(p[0].cite, "Choi et al. 2018, table 2");
  ASSERT_TRUE(p[0].float_accuracy.has_value());
  EXPECT_DOUBLE_EQ(*p[0].float_accuracy, 91.6);
  ASSERT_EQ(p[0].accuracy.size(), 2u);
  EXPECT_EQ(p[0].accuracy[0].first, (BitPair{4, 4}));
  EXPECT_DOUBLE_EQ(p[0].accuracy[1].second, 89.7);
  EXPECT_EQ(p[1].name, "He et al. 2016");
  EXPECT_TRUE(p[1].accuracy.empty());
}

TEST(PublishedFigures, RefusesWhatItCannotRead) {
  for (const auto& [text, says] : std::vector<std::pair<std::string, std::string>>{
           {"float = 91\n", "outside any section"},
           {"[A]\nfloat = high\n", "[A] float = 'high'"},
           {"[A]\nfloat = 101\n", "0 to 100"},
           {"[A]\n4/4 = 91.3%\n", "[A] 4/4 = '91.3%'"},
           {"[A]\n4/4 = nan\n", "0 to 100"},
           {"[A]\n4/4 = \n", "0 to 100"},
           {"[A]\nW4A4 = 90\n", "expected cite, float or one W/A pair"},
           {"[A]\n9/4 = 90\n", "2..8"},
           {"[A]\n4/4,2/2 = 90\n", "one W/A pair per line"},
           {"[A]\n4/4 = 90\n04/4 = 91\n", "W4A4 is given twice"},
           {"[A]\n4/4 = 90\n4/4 = 91\n", "duplicate key"},
           {"[A]\ncite = only words\n", "[A] has no figure"},
           {"[A]\n[B]\nfloat = 90\n", "[A] has no figure"},
           {"[A\nfloat = 90\n", "unmatched '['"},
           {"# nothing\n", "no [paper] section"}}) {
    try {
      parse_published_ini(text);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what() << "\nexpected: " << says;
    }
  }
}

TEST(PublishedTable, BestLearnedRowBesidePapersFigures) {
  SweepReport rep = made_up_report();  // floats 99 and 98 %; lsq 96 / 95 %, ptq-minmax 90 / 60 %
  // PACT beats LSQ at W4A4 (mean 96.6 %) but not at W8A8 (one seed at 94 %); PTQ at W4A4 per-channel is
  // higher than either, but PTQ is not learned.
  rep.cells.push_back(made_up_result("pact", 4, 4, 1, 0.967));
  rep.cells.push_back(made_up_result("pact", 4, 4, 2, 0.965));
  rep.cells.push_back(made_up_result("pact", 8, 8, 1, 0.94));
  CellResult channel = made_up_result("lsq", 4, 4, 1, 0.93);
  channel.cell.granularity = "per-channel";
  rep.cells.push_back(channel);
  CellResult ptq = made_up_result("ptq-histogram", 4, 4, 1, 0.99);
  ptq.cell.granularity = "per-channel";
  rep.cells.push_back(ptq);
  rep.cells.push_back(made_up_result("lsq", 3, 3, 1, 0.5, /*ok=*/false));  // failed: no row of ours at W3A3
  rep.rows = summarize(rep.cells);
  const std::vector<PublishedFigures> papers =
      parse_published_ini("[PACT | v2]\ncite = made up\nfloat = 91.6\n3/3 = 91.1\n4/4 = 91.3\n[He]\nfloat = 91.25\n");
  const std::string table = published_table_md(rep, papers);

  EXPECT_NE(table.find("| W/A | weights | best learned | seeds | integer graph (%) | vs float | PACT \\| v2 (%) | PACT "
                       "\\| v2 vs float | He (%) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"),
            std::string::npos)
      << table;
  EXPECT_EQ(row_of(table, "float"), "| float | | | 2 | 98.50 ± 0.71 | | 91.60 | | 91.25 |");
  EXPECT_EQ(row_of(table, "W8A8"), "| W8A8 | per-tensor | lsq | 2 | 95.50 ± 0.71 | -3.00 | | | |");
  EXPECT_EQ(row_of(table, "W4A4"), "| W4A4 | per-tensor | pact | 2 | 96.60 ± 0.14 | -1.90 | 91.30 | -0.30 | |");
  EXPECT_NE(table.find("| W4A4 | per-channel | lsq | 1 | 93.00 | -5.50 | 91.30 | -0.30 | |"), std::string::npos) << table;
  EXPECT_EQ(row_of(table, "W3A3"), "| W3A3 | | | | | | 91.10 | -0.50 | |");
  EXPECT_EQ(row_of(table, "W2A2"), "| W2A2 | per-tensor | lsq | 2 | 95.50 ± 0.71 | -3.00 | | | |");
  // Ordered by weight bits, then activation bits, high to low; the citation under the table.
  EXPECT_LT(table.find("| W8A8"), table.find("| W4A4"));
  EXPECT_LT(table.find("| W4A4"), table.find("| W3A3"));
  EXPECT_LT(table.find("| W3A3"), table.find("| W2A2"));
  EXPECT_NE(table.find("- PACT \\| v2: made up\n"), std::string::npos) << table;
}

}  // namespace
}  // namespace qatlab
