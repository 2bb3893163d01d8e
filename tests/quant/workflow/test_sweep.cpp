// test_sweep.cpp: the sweep's study as data (quant/workflow/sweep.h): the grid parsing, the summary over
// seeds, the result files, a cell's result file read back. (tests/apps/test_sweep_cli.cpp runs the
// command; test_sweep_cell.cpp runs cells.)
#include "quant/workflow/sweep.h"
#include "tests/quant/workflow/sweep_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "quant/quant_test_util.h"

namespace qatlab {
namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

TEST(SweepGrid, ParsesPairsAndRejectsBadOnes) {
  const std::vector<BitPair> p = parse_bit_pairs("8/8, 4/8,2/2");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[1].wbits, 4);
  EXPECT_EQ(p[1].abits, 8);
  EXPECT_EQ(p[2].label(), "W2A2");
  EXPECT_THROW(parse_bit_pairs("8"), std::invalid_argument);
  EXPECT_THROW(parse_bit_pairs("9/8"), std::invalid_argument);
  EXPECT_THROW(parse_bit_pairs("4/1"), std::invalid_argument);
  EXPECT_THROW(parse_bit_pairs("4/x"), std::invalid_argument);
  EXPECT_THROW(parse_bit_pairs("4/4,4/4"), std::invalid_argument);
  EXPECT_THROW(parse_bit_pairs(""), std::invalid_argument);
}

TEST(SweepGrid, MethodListsAreChecked) {
  EXPECT_EQ(parse_name_list("lsq,ptq-minmax", kSweepMethods, "method").size(), 2u);
  try {
    parse_name_list("lsq,adaround", kSweepMethods, "method");
    FAIL() << "an unknown method was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("adaround"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("ptq-histogram"), std::string::npos);  // lists the choices
  }
  EXPECT_TRUE(sweep_method_is_ptq("ptq-histogram"));
  EXPECT_FALSE(sweep_method_is_ptq("qat-minmax"));
}

TEST(SweepSummary, SpreadIsMeanSampleStdMinMax) {
  const Spread s = spread_of({98.0, 99.0, 100.0});
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, 99.0);
  EXPECT_DOUBLE_EQ(s.std, 1.0);
  EXPECT_DOUBLE_EQ(s.min, 98.0);
  EXPECT_DOUBLE_EQ(s.max, 100.0);
  EXPECT_DOUBLE_EQ(spread_of({5.0}).std, 0.0);
  EXPECT_EQ(spread_of({}).n, 0);
}

using testing::made_up_report;
using testing::made_up_result;

TEST(SweepSummary, GroupsSeedsAndCountsFailures) {
  const std::vector<CellResult> cells = {made_up_result("lsq", 4, 4, 1, 0.98), made_up_result("lsq", 4, 4, 2, 0.96),
                                         made_up_result("ptq-minmax", 4, 4, 1, 0.50), made_up_result("ptq-minmax", 4, 4, 2, 0, false)};
  const std::vector<SweepRow> rows = summarize(cells);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].method, "lsq");
  EXPECT_EQ(rows[0].seeds_ok, 2);
  EXPECT_NEAR(rows[0].integer.mean, 97.0, 1e-9);
  EXPECT_NEAR(rows[0].integer.std, std::sqrt(2.0), 1e-9);
  EXPECT_EQ(rows[1].seeds_ok, 1);
  EXPECT_EQ(rows[1].seeds_failed, 1);
  EXPECT_NEAR(rows[1].integer.mean, 50.0, 1e-9);
  EXPECT_EQ(rows[1].int_file_bytes, 4000);
}

TEST(SweepFiles, CsvAndJsonCarryTheRows) {
  const SweepReport rep = made_up_report();
  const std::vector<std::string> lines = split_lines(results_csv(rep));
  ASSERT_EQ(lines.size(), 1u + 1u + 6u);  // header, float, 2 methods x 3 pairs
  EXPECT_EQ(lines[1].rfind("float,,32,32,2,0,98.50,", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("lsq,per-tensor,8,8,2,0,", 0), 0u) << lines[2];
  EXPECT_TRUE(lines[2].ends_with(",8000,80.0")) << lines[2];  // W8 file: 8000 B of the 10000 B float checkpoint

  const std::string cells = cells_csv(rep);
  EXPECT_NE(cells.find("failed"), std::string::npos);
  EXPECT_NE(cells.find("\"loss is NaN, \"\"diverged\"\"\""), std::string::npos);  // CSV-quoted error
  const std::string json = results_json(rep);
  EXPECT_NE(json.find("\"loss is NaN, \\\"diverged\\\"\""), std::string::npos);
  EXPECT_NE(json.find("\"seeds_failed\": 1"), std::string::npos);
}

TEST(SweepFiles, CellResultRoundTripsAndRejectsOtherCells) {
  const test::TempFile ini("sweep_result.ini"), broken("sweep_broken.ini"), missing("sweep_missing.ini");
  CellResult r = made_up_result("pact", 3, 3, 2, 0.9712345);
  r.key = "pact-per-tensor-w3a3-s2 from x.h5";
  r.seconds = 12.5;
  write_text(ini.path(), cell_result_ini(r));
  const std::optional<CellResult> back = read_cell_result(ini.path(), r.cell);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->key, r.key);
  EXPECT_TRUE(back->ok);
  EXPECT_NEAR(back->int_accuracy, 0.9712345, 1e-9);
  EXPECT_EQ(back->int_file_bytes, 3000);
  SweepCell other = r.cell;
  other.seed = 3;
  EXPECT_FALSE(read_cell_result(ini.path(), other).has_value());
  write_text(broken.path(), "cell = pact-per-tensor-w3a3-s2\nint_accuracy = abc\n");
  EXPECT_FALSE(read_cell_result(broken.path(), r.cell).has_value());
  EXPECT_FALSE(read_cell_result(missing.path(), r.cell).has_value());
}

}  // namespace
}  // namespace qatlab
