// test_sweep.cpp: the sweep's study as data (quant/workflow/sweep.h): the grid parsing, the summary over
// seeds, the result files, a cell's result file read back. (tests/apps/test_sweep_cli.cpp runs the
// command; test_sweep_cell.cpp runs cells.)
#include "quant/workflow/sweep.h"
#include "tests/quant/workflow/sweep_test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
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
  EXPECT_TRUE(lines[2].ends_with(",8000,80.0,,100.00,")) << lines[2];  // W8 file: 8000 B of the 10000 B float checkpoint

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
  r.exact_identical = 0.9999;
  r.schedule = "15 epochs, lr 0.01 cosine, batch 128";
  write_text(ini.path(), cell_result_ini(r));
  const std::optional<CellResult> back = read_cell_result(ini.path(), r.cell);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->key, r.key);
  EXPECT_EQ(back->schedule, r.schedule);
  EXPECT_NEAR(back->exact_identical, 0.9999, 1e-12);
  // A result file from before the exact-mode field: read, the field unknown (-1), not the cell rerun.
  std::string old = cell_result_ini(r);
  old.erase(old.find("exact_identical"), old.find('\n', old.find("exact_identical")) - old.find("exact_identical") + 1);
  write_text(ini.path(), old);
  ASSERT_TRUE(read_cell_result(ini.path(), r.cell).has_value());
  EXPECT_EQ(read_cell_result(ini.path(), r.cell)->exact_identical, -1.0);
  write_text(ini.path(), cell_result_ini(r));
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

TEST(SweepFiles, TableShowsEachRowAgainstTheFloatModel) {
  SweepReport rep = made_up_report();
  for (CellResult& c : rep.cells) c.schedule = c.cell.method == "lsq" ? "2 epochs, lr 0.01 cosine, batch 64" : "";
  rep.rows = summarize(rep.cells);
  const std::vector<std::string> lines = split_lines(results_table_md(rep));
  ASSERT_EQ(lines.size(), 2u + 1u + 6u);  // header and rule, float, 2 methods x 3 pairs
  EXPECT_EQ(lines[2], "| float | | 32/32 | | 2 | 98.50 ± 0.71 | | | | |");
  // LSQ W8A8: 96 and 95 % over the seeds, 3 points below the float models' mean.
  EXPECT_EQ(lines[3], "| lsq | per-tensor | W8A8 | 2 epochs, lr 0.01 cosine, batch 64 | 2 | 95.50 ± 0.71 | -3.00 | "
                      "95.60 ± 0.71 | 99.00 | 100.00 |");
  EXPECT_NE(lines.back().find("| 1 (1 failed) | 60.00 | -38.50 |"), std::string::npos) << lines.back();
}

// A report as written and read back: the cells and floats it needs to be merged, the rows summarized again.
TEST(SweepFiles, ResultsJsonReadsBack) {
  SweepReport rep = made_up_report();
  rep.command = "qatlab sweep --model \"x\"";
  rep.cells[0].schedule = "2 epochs, lr 0.01 cosine, batch 64";
  rep.rows = summarize(rep.cells);
  const SweepReport back = parse_results_json(results_json(rep));
  EXPECT_EQ(back.model, "lenet5");
  EXPECT_EQ(back.command, rep.command);
  ASSERT_EQ(back.floats.size(), 2u);
  EXPECT_EQ(back.floats[1].seed, 2u);
  EXPECT_NEAR(back.floats[1].accuracy, 0.98, 1e-12);
  EXPECT_EQ(back.floats[1].checkpoint_bytes, 10000);
  ASSERT_EQ(back.cells.size(), rep.cells.size());
  for (size_t i = 0; i < rep.cells.size(); ++i) {
    EXPECT_EQ(back.cells[i].cell.id(), rep.cells[i].cell.id());
    EXPECT_EQ(back.cells[i].ok, rep.cells[i].ok);
    EXPECT_EQ(back.cells[i].error, rep.cells[i].error);
    EXPECT_EQ(back.cells[i].schedule, rep.cells[i].schedule);
    if (!rep.cells[i].ok) continue;
    EXPECT_NEAR(back.cells[i].int_accuracy, rep.cells[i].int_accuracy, 5e-5);  // kept to 0.01 %
    EXPECT_EQ(back.cells[i].exact_identical, 1.0);
  }
  EXPECT_EQ(results_csv(back), results_csv(rep));

  EXPECT_THROW(parse_results_json("{\"model\": "), std::invalid_argument);
  EXPECT_THROW(parse_results_json("{\"model\": \"m\"}"), std::invalid_argument);  // no dataset, floats, cells
  std::string bad = results_json(rep);
  bad.replace(bad.find("\"wbits\": 8, \"abits\": 8, \"seed\""), 11, "\"wbits\": 9,");  // 9-bit weights in a cell
  EXPECT_THROW(parse_results_json(bad), std::invalid_argument);
}

TEST(SweepMerge, JoinsSweepsOfOneModelAndRefusesMismatches) {
  const SweepReport all = made_up_report();
  SweepReport lsq = all, ptq = all;
  std::erase_if(lsq.cells, [](const CellResult& c) { return c.cell.method != "lsq"; });
  std::erase_if(ptq.cells, [](const CellResult& c) { return c.cell.method == "lsq"; });
  lsq.command = "sweep a", ptq.command = "sweep b";
  const SweepReport m = merge_sweep_reports({{"a", lsq}, {"b", ptq}}, "merge");
  EXPECT_EQ(m.cells.size(), all.cells.size());
  EXPECT_EQ(m.floats.size(), 2u);
  ASSERT_EQ(m.sources.size(), 2u);
  EXPECT_EQ(m.sources[1].command, "sweep b");
  EXPECT_NE(results_json(m).find("\"merged_from\""), std::string::npos);
  // Ordered as a table reads: by bits (weights, then activations, high to low), then weights, then method.
  ASSERT_EQ(m.rows.size(), all.rows.size());
  EXPECT_EQ(m.rows[0].method, "ptq-minmax");
  EXPECT_EQ(m.rows[1].method, "lsq");
  EXPECT_EQ(m.rows[1].bits.wbits, 8);
  EXPECT_EQ(m.rows[2].bits.wbits, 4);
  EXPECT_EQ(m.cells[1].cell.id(), "ptq-minmax-per-tensor-w8a8-s2");

  auto message = [](const std::vector<std::pair<std::string, SweepReport>>& parts) {
    try {
      merge_sweep_reports(parts, "merge");
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message({{"a", lsq}, {"c", lsq}}), "cell lsq-per-tensor-w8a8-s1 is in both a and c");
  SweepReport other_float = ptq;
  other_float.floats[0].accuracy = 0.95;
  EXPECT_EQ(message({{"a", lsq}, {"b", other_float}}), "the float models of seed 1 differ: 95.00 % in b, 99.00 % in a");
  SweepReport other_model = ptq;
  other_model.model = "mlp";
  EXPECT_EQ(message({{"a", lsq}, {"b", other_model}}), "b is a sweep of mlp on mnist, a of lenet5 on mnist");
  EXPECT_EQ(message({}), "no sweeps to merge");
}

TEST(SweepMerge, KeepsEachSweepsLayerBits) {
  // Three sweeps of one study: PTQ, then LSQ at 8 bits with the shared layer bits, then LSQ at 4 and 2
  // bits that also keep the residual sums at 8 bits; and a seed-2 LSQ W8A8 cell run with those too.
  const SweepReport all = made_up_report();
  SweepReport ptq = all, lsq8 = all, lsq_low = all, lsq8_s2 = all;
  std::erase_if(ptq.cells, [](const CellResult& c) { return c.cell.method != "ptq-minmax"; });
  std::erase_if(lsq8.cells, [](const CellResult& c) { return c.cell.method != "lsq" || c.cell.bits.wbits != 8 || c.cell.seed != 1; });
  std::erase_if(lsq_low.cells, [](const CellResult& c) { return c.cell.method != "lsq" || c.cell.bits.wbits == 8; });
  std::erase_if(lsq8_s2.cells, [](const CellResult& c) { return c.cell.method != "lsq" || c.cell.bits.wbits != 8 || c.cell.seed != 2; });
  ptq.policy = lsq8.policy = "first and last layer 8-bit, residual-branches=:8";
  lsq_low.policy = lsq8_s2.policy = "first and last layer 8-bit, residual-branches=:8, residual-sums=:8";
  const SweepReport m = merge_sweep_reports({{"ptq", ptq}, {"lsq8", lsq8}, {"low", lsq_low}, {"s2", lsq8_s2}}, "merge");
  EXPECT_EQ(m.policy, "first and last layer 8-bit, residual-branches=:8");
  ASSERT_EQ(m.cells.size(), all.cells.size());
  for (const CellResult& c : m.cells) {
    const bool sums = c.cell.method == "lsq" && (c.cell.bits.wbits < 8 || c.cell.seed == 2);
    EXPECT_EQ(c.policy, sums ? lsq_low.policy : "") << c.cell.id();
  }
  // The two LSQ W8A8 seeds ran under different layer bits: two rows of one seed each, not one of two.
  std::vector<const SweepRow*> w8;
  for (const SweepRow& row : m.rows)
    if (row.method == "lsq" && row.bits.wbits == 8) w8.push_back(&row);
  ASSERT_EQ(w8.size(), 2u);
  EXPECT_EQ(w8[0]->seeds_ok + w8[1]->seeds_ok, 2);
  EXPECT_NE(w8[0]->policy, w8[1]->policy);
  EXPECT_EQ(policy_difference(lsq_low.policy, m.policy), "+ residual-sums=:8");
  EXPECT_EQ(policy_difference("every layer at W/A, residual-branches=:8", m.policy),
            "+ every layer at W/A, - first and last layer 8-bit");
  EXPECT_EQ(policy_difference("", m.policy), "");

  // The table says how a row's layer bits differ; the files keep every row's and cell's.
  const std::string table = results_table_md(m);
  EXPECT_NE(table.find("Layer bits of every row: first and last layer 8-bit, residual-branches=:8"), std::string::npos);
  EXPECT_NE(table.find("| lsq | per-tensor | W4A4 | + residual-sums=:8 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| ptq-minmax | per-tensor | W4A4 |  |"), std::string::npos) << table;
  EXPECT_EQ(results_table_md(all).find("layer bits"), std::string::npos);  // one sweep: no such column
  const std::vector<std::string> csv = split_lines(results_csv(m));
  EXPECT_TRUE(csv[0].ends_with(",layer_bits"));
  EXPECT_TRUE(std::any_of(csv.begin(), csv.end(), [](const std::string& l) {
    return l.rfind("lsq,per-tensor,4,4,", 0) == 0 && l.ends_with(",\"first and last layer 8-bit, residual-branches=:8, residual-sums=:8\"");
  }));

  // Read back, merged again with another sweep: the same cells under the same layer bits.
  const SweepReport back = parse_results_json(results_json(m));
  EXPECT_EQ(results_json(back), results_json(m));
  SweepReport every = all;
  every.cells = {made_up_result("qat-minmax", 8, 8, 1, 0.95)};
  every.policy = "every layer at W/A";
  const SweepReport again = merge_sweep_reports({{"all", back}, {"every", every}}, "merge again");
  EXPECT_EQ(again.policy, "");
  for (const CellResult& c : again.cells) {
    EXPECT_FALSE(c.policy.empty()) << c.cell.id();
    if (c.cell.method == "qat-minmax") {
      EXPECT_EQ(c.policy, "every layer at W/A");
    } else if (c.cell.method == "ptq-minmax") {
      EXPECT_EQ(c.policy, m.policy);
    }
  }
  EXPECT_NE(results_table_md(again).find("Layer bits of every row: none shared"), std::string::npos);
}

}  // namespace
}  // namespace qatlab
