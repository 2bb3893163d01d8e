// test_sweep.cpp: `qatlab sweep`: the grid parsing, the summary over seeds, the result files, and a small
// sweep run end to end on synthetic data, interrupted and resumed.
#include <gtest/gtest.h>

#include <cmath>

#include "apps/sweep.h"
#include "cli_harness.h"

namespace qatlab::testing {
namespace {

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

CellResult result(const std::string& method, int w, int a, uint64_t seed, double acc, bool ok = true) {
  CellResult r;
  r.cell = {method, "per-tensor", {w, a}, seed};
  r.ok = ok;
  r.sim_accuracy = acc + 0.001;
  r.int_accuracy = acc;
  r.top1_agreement = 0.99;
  r.int_file_bytes = 1000 * w;
  if (!ok) r.error = "loss is NaN, \"diverged\"";
  return r;
}

TEST(SweepSummary, GroupsSeedsAndCountsFailures) {
  const std::vector<CellResult> cells = {result("lsq", 4, 4, 1, 0.98), result("lsq", 4, 4, 2, 0.96),
                                         result("ptq-minmax", 4, 4, 1, 0.50), result("ptq-minmax", 4, 4, 2, 0, false)};
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

TEST(SweepFiles, CsvJsonAndPlotCarryTheRows) {
  SweepReport rep;
  rep.model = "lenet5";
  rep.dataset = "mnist";
  rep.floats = {{1, "f1.h5", 0.99, 10000}, {2, "f2.h5", 0.98, 10000}};
  for (int b : {8, 4, 2})
    for (uint64_t seed : {1, 2}) {
      rep.cells.push_back(result("lsq", b, b, seed, 0.97 - 0.01 * seed));
      rep.cells.push_back(result("ptq-minmax", b, b, seed, 0.9 - 0.1 * (8 - b) / 2, !(b == 2 && seed == 2)));
    }
  rep.rows = summarize(rep.cells);
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

  const std::string svg = accuracy_plot_svg(rep, /*equal_bits=*/true, "per-tensor");
  ASSERT_FALSE(svg.empty());
  for (const char* label : {"lsq", "ptq-minmax", "float (32-bit)", "test accuracy (%)", "per-tensor weights"})
    EXPECT_NE(svg.find(label), std::string::npos) << label;
  EXPECT_NE(svg.find("<line class=\"reference\""), std::string::npos);  // the float model as a line
  // Zoomed to LSQ (~96 %) and the float model (98.5 %): PTQ's 80 and 60 % are marked at the bottom edge.
  EXPECT_NE(svg.find("class=\"off-axis\""), std::string::npos);
  EXPECT_TRUE(accuracy_plot_svg(rep, /*equal_bits=*/false, "per-tensor").empty());  // only W8A8 has 8-bit activations
  EXPECT_TRUE(accuracy_plot_svg(rep, /*equal_bits=*/true, "per-channel").empty());  // no such cells
  const auto plots = accuracy_plots(rep);
  ASSERT_EQ(plots.size(), 1u);
  EXPECT_EQ(plots[0].first, "accuracy_vs_bits.svg");
}

TEST(SweepFiles, CellResultRoundTripsAndRejectsOtherCells) {
  const TempDir dir("sweep_ini");
  CellResult r = result("pact", 3, 3, 2, 0.9712345);
  r.key = "pact-per-tensor-w3a3-s2 from x.h5";
  r.seconds = 12.5;
  write_text(dir / "result.ini", cell_result_ini(r));
  const std::optional<CellResult> back = read_cell_result(dir / "result.ini", r.cell);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->key, r.key);
  EXPECT_TRUE(back->ok);
  EXPECT_NEAR(back->int_accuracy, 0.9712345, 1e-9);
  EXPECT_EQ(back->int_file_bytes, 3000);
  SweepCell other = r.cell;
  other.seed = 3;
  EXPECT_FALSE(read_cell_result(dir / "result.ini", other).has_value());
  write_text(dir / "broken.ini", "cell = pact-per-tensor-w3a3-s2\nint_accuracy = abc\n");
  EXPECT_FALSE(read_cell_result(dir / "broken.ini", r.cell).has_value());
  EXPECT_FALSE(read_cell_result(dir / "missing.ini", r.cell).has_value());
}

// ------------------------------------------------------------------------------------- end to end

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(SweepCommand, RunsEveryCellWritesFilesAndResumes) {
  const TempDir dir("sweep_cli");
  write_synthetic_mnist(dir / "data", 512, 128, 3);
  const std::vector<std::string> args = {"sweep", "--data-dir", dir / "data", "--model", "mlp", "--float-epochs", "1",
                                         "--pairs", "8/8,2/2", "--methods", "ptq-minmax,qat-minmax", "--seeds", "1",
                                         "--qat-epochs", "1", "--calib-batches", "2", "--threads", "2",
                                         "--out", dir / "sweep"};
  const RunResult first = run_qatlab(args, dir.path(), "first");
  ASSERT_TRUE(first.exited && first.exit_code == 0) << first.describe();
  EXPECT_TRUE(contains(first.out, "4 cells")) << first.out;
  EXPECT_TRUE(contains(first.out, "4 cells run, 0 reused, 0 failed")) << first.out;
  for (const char* f : {"results.csv", "results.json", "cells.csv", "accuracy_vs_bits.svg",
                        "cells/qat-minmax-per-tensor-w2a2-s1/model.int8.h5", "float-s1/checkpoint.h5"})
    EXPECT_TRUE(fs::exists(dir / ("sweep/" + std::string(f)))) << f;
  const std::vector<std::string> rows = split_lines(read_text(dir / "sweep/results.csv"));
  ASSERT_EQ(rows.size(), 6u);  // header, float, 2 methods x 2 pairs
  EXPECT_EQ(rows[2].rfind("ptq-minmax,per-tensor,8,8,1,0,", 0), 0u) << rows[2];
  // The mlp's first and last layers keep 8 bits, so a W2A2 cell's file is smaller but not by 4x.
  const std::string cells = read_text(dir / "sweep/cells.csv");
  EXPECT_EQ(split_lines(cells).size(), 5u);

  // Interrupted after this point, or run again: finished cells are skipped with identical results.
  const RunResult again = run_qatlab(args, dir.path(), "again");
  ASSERT_TRUE(again.exited && again.exit_code == 0) << again.describe();
  EXPECT_TRUE(contains(again.out, "0 cells run, 4 reused")) << again.out;
  EXPECT_EQ(read_text(dir / "sweep/cells.csv"), cells);

  // A cell whose settings changed (more QAT epochs) is run again; PTQ cells are not.
  std::vector<std::string> changed = args;
  changed[std::find(changed.begin(), changed.end(), "--qat-epochs") - changed.begin() + 1] = "2";
  const RunResult rerun = run_qatlab(changed, dir.path(), "changed");
  ASSERT_TRUE(rerun.exited && rerun.exit_code == 0) << rerun.describe();
  EXPECT_TRUE(contains(rerun.out, "2 cells run, 2 reused")) << rerun.out;

  // A float model is reused only for the seed it was trained with: seed 1's model filed as seed 2's is
  // refused, not passed off as another seed's baseline.
  fs::create_directories(dir / "other");
  fs::copy(dir / "sweep/float-s1", dir / "other/float-s2");
  std::vector<std::string> seed2 = args;
  seed2.back() = dir / "other";
  seed2.insert(seed2.end(), {"--seed", "2"});
  const RunResult wrong_seed = run_qatlab(seed2, dir.path(), "wrong-seed");
  EXPECT_TRUE(wrong_seed.exited && wrong_seed.exit_code == 2) << wrong_seed.describe();
  EXPECT_TRUE(contains(wrong_seed.err, "was trained with seed 1, not 2")) << wrong_seed.err;
}

TEST(SweepCommand, BadSettingsAreOneLineUsageErrors) {
  const TempDir dir("sweep_bad");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--pairs", "8/9"}, {"--methods", "lsq,magic"}, {"--seeds", "0"},
        {"--first-last", "16"}, {"--granularity", "per-row"}, {"--qat-lr", "-1"}}) {
    std::vector<std::string> args = {"sweep", "--data-dir", dir / "nodata", "--out", dir / "s"};
    args.insert(args.end(), bad.begin(), bad.end());
    const RunResult r = run_qatlab(args, dir.path(), "bad");
    EXPECT_TRUE(r.exited && r.exit_code == 2) << r.describe();
    EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
    EXPECT_FALSE(fs::exists(dir / "s")) << "nothing is written for a bad command line";
  }
}

}  // namespace
}  // namespace qatlab::testing
