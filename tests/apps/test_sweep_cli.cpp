// test_sweep_cli.cpp: `qatlab sweep`: its plots, and a small sweep run end to end on synthetic data,
// interrupted and resumed; bad settings. (tests/quant/workflow/ tests the study's data and its cells.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <tuple>

#include "apps/sweep_plot.h"
#include "cli_harness.h"
#include "core/format.h"
#include "nn/checkpoint.h"
#include "quant/workflow/sweep.h"
#include "tests/quant/workflow/sweep_test_util.h"

namespace qatlab::testing {
namespace {


TEST(SweepPlot, DrawsEveryMethodAndTheFloatLine) {
  const SweepReport rep = made_up_report();
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

// A merged report whose LSQ cells ran under two sets of layer bits: a line for each, named by how its bits
// differ from the report's; the title says the first and last layers are 8-bit when the shared bits say so.
TEST(SweepPlot, OneLinePerMethodAndLayerBits) {
  SweepReport rep = made_up_report();
  rep.policy = "first and last layer 8-bit, residual-branches=:8";
  for (CellResult& c : rep.cells)
    if (c.cell.method == "lsq" && c.cell.bits.wbits < 8) c.policy = rep.policy + ", residual-sums=:8";
  rep.rows = summarize(rep.cells);
  const std::string svg = accuracy_plot_svg(rep, /*equal_bits=*/true, "per-tensor");
  EXPECT_NE(svg.find("(first, last layer 8-bit)"), std::string::npos);
  EXPECT_NE(svg.find("lsq (+ residual-sums=:8)"), std::string::npos);
  EXPECT_NE(svg.find(">lsq<"), std::string::npos) << svg;  // the W8A8 cells' line keeps the plain name
}

// With no learned method (a PTQ-only sweep) nothing is zoomed away: PTQ's collapse is the plot.
TEST(SweepPlot, PtqOnlySweepShowsEveryPoint) {
  SweepReport rep = made_up_report();
  std::erase_if(rep.cells, [](const CellResult& c) { return c.cell.method == "lsq"; });
  rep.rows = summarize(rep.cells);
  const std::string svg = accuracy_plot_svg(rep, /*equal_bits=*/true, "per-tensor");
  ASSERT_FALSE(svg.empty());
  EXPECT_EQ(svg.find("class=\"off-axis\""), std::string::npos) << svg;
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
  // A QAT cell's epochs show as they end.
  EXPECT_TRUE(contains(first.out, "      qat-minmax-per-tensor-w2a2-s1  epoch 1/1  train ")) << first.out;
  for (const char* f : {"results.csv", "results.json", "cells.csv", "table.md", "accuracy_vs_bits.svg",
                        "cells/qat-minmax-per-tensor-w2a2-s1/model.int8.h5", "float-s1/checkpoint.h5"})
    EXPECT_TRUE(fs::exists(dir / ("sweep/" + std::string(f)))) << f;
  const std::vector<std::string> rows = split_lines(read_text(dir / "sweep/results.csv"));
  ASSERT_EQ(rows.size(), 6u);  // header, float, 2 methods x 2 pairs
  EXPECT_EQ(rows[2].rfind("ptq-minmax,per-tensor,8,8,1,0,", 0), 0u) << rows[2];
  // The mlp's first and last layers keep 8 bits, so a W2A2 cell's file is smaller but not by 4x.
  const std::string cells = read_text(dir / "sweep/cells.csv");
  EXPECT_EQ(split_lines(cells).size(), 5u);
  // results.json reads back (as `--merge` reads it), every cell with its schedule.
  const SweepReport back = parse_results_json(read_text(dir / "sweep/results.json"));
  ASSERT_EQ(back.cells.size(), 4u);
  EXPECT_EQ(back.cells[0].schedule, "2 calibration batches of 64");
  EXPECT_EQ(back.cells[1].schedule, "1 epoch, lr 0.01 cosine, batch 64, weight decay 0.0005");
  // Every cell's integer graph gives the codes of its QAT model's exact mode, image for image.
  for (const CellResult& c : back.cells) EXPECT_EQ(c.exact_identical, 1.0) << c.cell.id();

  // Interrupted after this point, or run again: finished cells are skipped with identical results.
  const RunResult again = run_qatlab(args, dir.path(), "again");
  ASSERT_TRUE(again.exited && again.exit_code == 0) << again.describe();
  EXPECT_TRUE(contains(again.out, "0 cells run, 4 reused")) << again.out;
  EXPECT_EQ(read_text(dir / "sweep/cells.csv"), cells);

  // A cell whose settings changed (more QAT epochs) is run again; PTQ cells are not.
  std::vector<std::string> changed = args;
  changed[std::find(changed.begin(), changed.end(), "--qat-epochs") - changed.begin() + 1] = "2";
  // --status says so beforehand, each cell in a line, and writes nothing.
  std::vector<std::string> status = changed;
  status.push_back("--status");
  const RunResult before = run_qatlab(status, dir.path(), "status");
  ASSERT_TRUE(before.exited && before.exit_code == 0) << before.describe();
  EXPECT_TRUE(contains(before.out, "ptq-minmax-per-tensor-w2a2-s1  finished: integer graph ")) << before.out;
  EXPECT_TRUE(contains(before.out, "qat-minmax-per-tensor-w2a2-s1  to run (2 epochs); its directory holds another "
                                   "setting's cell, which a run deletes"))
      << before.out;
  EXPECT_TRUE(contains(before.out, "2 finished (0 failed), 0 training, 2 to run; 4 QAT epochs left")) << before.out;
  EXPECT_EQ(read_text(dir / "sweep/cells.csv"), cells);
  EXPECT_FALSE(contains(read_text(dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/start.ini"), "qat 2 epochs"));
  // Nothing there yet: every cell to run, after the float model the sweep would train first; no directory made.
  std::vector<std::string> elsewhere = status;
  elsewhere[std::find(elsewhere.begin(), elsewhere.end(), "--out") - elsewhere.begin() + 1] = dir / "none";
  const RunResult fresh = run_qatlab(elsewhere, dir.path(), "status-fresh");
  ASSERT_TRUE(fresh.exited && fresh.exit_code == 0) << fresh.describe();
  EXPECT_TRUE(contains(fresh.out, "float model of seed 1: not trained yet")) << fresh.out;
  EXPECT_TRUE(contains(fresh.out, "qat-minmax-per-tensor-w8a8-s1  to run (2 epochs), after its float model")) << fresh.out;
  EXPECT_TRUE(contains(fresh.out, "0 finished (0 failed), 0 training, 4 to run; 4 QAT epochs left")) << fresh.out;
  EXPECT_FALSE(fs::exists(dir / "none"));
  std::vector<std::string> published = status;
  published.insert(published.end(), {"--published", dir / "data/none.ini"});
  const RunResult with_published = run_qatlab(published, dir.path(), "status-published");
  EXPECT_TRUE(with_published.exited && with_published.exit_code == 2) << with_published.describe();
  EXPECT_TRUE(contains(with_published.err, "--status writes nothing: --published does not apply")) << with_published.err;
  const RunResult rerun = run_qatlab(changed, dir.path(), "changed");
  ASSERT_TRUE(rerun.exited && rerun.exit_code == 0) << rerun.describe();
  EXPECT_TRUE(contains(rerun.out, "2 cells run, 2 reused")) << rerun.out;

  // --augment is the QAT cells' (and part of their settings): given, they run again; PTQ cells do not.
  std::vector<std::string> augmented = changed;
  augmented.insert(augmented.end(), {"--augment", "flip"});
  const RunResult flipped = run_qatlab(augmented, dir.path(), "augment");
  ASSERT_TRUE(flipped.exited && flipped.exit_code == 0) << flipped.describe();
  EXPECT_TRUE(contains(flipped.out, "2 cells run, 2 reused")) << flipped.out;
  // So is --qat-weight-decay, which the QAT cells' schedule then names (as it names their augmentation).
  std::vector<std::string> decayed = augmented;
  decayed.insert(decayed.end(), {"--qat-weight-decay", "0.0001"});
  const RunResult decay = run_qatlab(decayed, dir.path(), "weight-decay");
  ASSERT_TRUE(decay.exited && decay.exit_code == 0) << decay.describe();
  EXPECT_TRUE(contains(decay.out, "2 cells run, 2 reused")) << decay.out;
  EXPECT_EQ(parse_results_json(read_text(dir / "sweep/results.json")).cells[1].schedule,
            "2 epochs, lr 0.01 cosine, batch 64, weight decay 0.0001, augment flip");
  // Distilled from an ensemble of teachers (--qat-teacher, repeated): part of the QAT cells' settings, named
  // in their schedule, each cell's log giving the ensemble's accuracy.
  fs::copy_file(dir / "sweep/float-s1/checkpoint.h5", dir / "second.h5");
  std::vector<std::string> taught = decayed;
  taught.insert(taught.end(), {"--qat-distill", "1", "--qat-teacher", dir / "sweep/float-s1/checkpoint.h5",
                               "--qat-teacher", dir / "second.h5"});
  const RunResult ensemble = run_qatlab(taught, dir.path(), "teachers");
  ASSERT_TRUE(ensemble.exited && ensemble.exit_code == 0) << ensemble.describe();
  EXPECT_TRUE(contains(ensemble.out, "2 cells run, 2 reused")) << ensemble.out;
  EXPECT_EQ(parse_results_json(read_text(dir / "sweep/results.json")).cells[1].schedule,
            "2 epochs, lr 0.01 cosine, batch 64, weight decay 0.0001, distilled from the ensemble of checkpoint.h5 + "
            "second.h5 (weight 1, temperature 1), augment flip");
  EXPECT_TRUE(contains(read_text(dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/log.txt"),
                       "teacher (2 networks, logits averaged): test accuracy"));
  // --qat-freeze-bn-after is part of the QAT cells' settings, stored in their checkpoints and named in their schedule.
  std::vector<std::string> frozen = taught;
  frozen.insert(frozen.end(), {"--qat-freeze-bn-after", "1"});
  const RunResult freeze = run_qatlab(frozen, dir.path(), "freeze-bn");
  ASSERT_TRUE(freeze.exited && freeze.exit_code == 0) << freeze.describe();
  EXPECT_TRUE(contains(freeze.out, "2 cells run, 2 reused")) << freeze.out;
  EXPECT_TRUE(contains(parse_results_json(read_text(dir / "sweep/results.json")).cells[1].schedule,
                       ", batch norm frozen from epoch 2,"));
  EXPECT_EQ(ini_value(load_checkpoint(dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/checkpoint.h5").config_ini,
                      "freeze-bn-after"),
            "1");
  // So is weight averaging (--qat-swa-start, --qat-swa-lr): the cells end on their averaged models. Added
  // after the finished cells' 2 epochs (3 epochs, averaging from 2), it extends them: they go on from their
  // checkpoints rather than train their first 2 epochs again.
  std::vector<std::string> averaged = frozen;
  averaged[std::find(averaged.begin(), averaged.end(), "--qat-epochs") - averaged.begin() + 1] = "3";
  averaged.insert(averaged.end(), {"--qat-swa-start", "2", "--qat-swa-lr", "0.005"});
  const RunResult swa = run_qatlab(averaged, dir.path(), "swa");
  ASSERT_TRUE(swa.exited && swa.exit_code == 0) << swa.describe();
  EXPECT_TRUE(contains(swa.out, "2 cells run, 2 reused")) << swa.out;
  EXPECT_TRUE(contains(parse_results_json(read_text(dir / "sweep/results.json")).cells[1].schedule,
                       ", epochs 3-3 at lr 0.005 averaged (SWA)"));
  const std::string cell_log = read_text(dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/log.txt");
  EXPECT_TRUE(contains(cell_log, "extending the finished 2-epoch cell: epochs 3-3 at lr 0.005, averaged")) << cell_log;
  const Checkpoint averaged_cell = load_checkpoint(dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/checkpoint.h5");
  EXPECT_EQ(ini_value(averaged_cell.config_ini, "swa-start"), "2");
  EXPECT_TRUE(averaged_cell.model_is_average);
  EXPECT_EQ(averaged_cell.swa_count, 1);
  // A teacher that is not a float model is refused before anything runs.
  std::vector<std::string> qat_teacher = taught;
  qat_teacher.back() = dir / "sweep/cells/qat-minmax-per-tensor-w2a2-s1/checkpoint.h5";
  qat_teacher[std::find(qat_teacher.begin(), qat_teacher.end(), "--out") - qat_teacher.begin() + 1] = dir / "taught";
  const RunResult refused = run_qatlab(qat_teacher, dir.path(), "qat-teacher");
  EXPECT_TRUE(refused.exited && refused.exit_code == 2) << refused.describe();
  EXPECT_TRUE(contains(refused.err, "is a 'qat' checkpoint; the teacher is a float one")) << refused.err;
  EXPECT_FALSE(fs::exists(dir / "taught"));
  // A sweep of PTQ cells from a checkpoint trains nothing: --augment there would change nothing.
  const RunResult ptq_only = run_qatlab({"sweep", dir / "sweep/float-s1/checkpoint.h5", "--data-dir", dir / "data",
                                         "--methods", "ptq-minmax", "--augment", "flip", "--out", dir / "ptq"},
                                        dir.path(), "ptq-augment");
  EXPECT_TRUE(ptq_only.exited && ptq_only.exit_code == 2) << ptq_only.describe();
  EXPECT_TRUE(contains(ptq_only.err, "--augment applies to the QAT cells")) << ptq_only.err;
  EXPECT_FALSE(fs::exists(dir / "ptq"));

  // --layer-bits are kept by every cell and named in the report; a key that names no layer of the model
  // (the mlp has no residual blocks) is refused before anything is written.
  const std::string base = dir / "sweep/float-s1/checkpoint.h5";
  const RunResult kept = run_qatlab({"sweep", base, "--data-dir", dir / "data", "--methods", "ptq-minmax", "--pairs",
                                     "4/4", "--seeds", "1", "--layer-bits", "Linear=8:", "--out", dir / "kept"},
                                    dir.path(), "layer-bits");
  ASSERT_TRUE(kept.exited && kept.exit_code == 0) << kept.describe();
  const SweepReport kept_back = parse_results_json(read_text(dir / "kept/results.json"));
  EXPECT_EQ(kept_back.policy, "first and last layer 8-bit, Linear=8:");
  ASSERT_EQ(kept_back.cells.size(), 1u);
  EXPECT_TRUE(kept_back.cells[0].ok);
  const RunResult no_residuals = run_qatlab({"sweep", base, "--data-dir", dir / "data", "--methods", "ptq-minmax",
                                             "--layer-bits", "residual-branches=:8", "--out", dir / "nores"},
                                            dir.path(), "layer-bits-bad");
  EXPECT_TRUE(no_residuals.exited && no_residuals.exit_code == 2) << no_residuals.describe();
  EXPECT_EQ(split_lines(no_residuals.err).size(), 1u) << no_residuals.describe();
  EXPECT_TRUE(contains(no_residuals.err, "residual-branches")) << no_residuals.err;
  EXPECT_FALSE(fs::exists(dir / "nores"));

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

// --merge: finished sweeps' results.json joined into one report; mismatched or damaged ones refused in one
// line, with nothing written.
TEST(SweepCommand, MergeJoinsFinishedSweeps) {
  const TempDir dir("sweep_merge");
  const SweepReport all = made_up_report();
  SweepReport lsq = all, ptq = all;
  std::erase_if(lsq.cells, [](const CellResult& c) { return c.cell.method != "lsq"; });
  std::erase_if(ptq.cells, [](const CellResult& c) { return c.cell.method == "lsq"; });
  for (const auto& [name, rep] : {std::pair{"a", lsq}, std::pair{"b", ptq}}) {
    fs::create_directories(dir / name);
    std::ofstream(dir / (std::string(name) + "/results.json")) << results_json(rep);
  }
  const RunResult ok = run_qatlab({"sweep", "--merge", dir / "a" + "," + dir / "b", "--out", dir / "m"}, dir.path(), "merge");
  ASSERT_TRUE(ok.exited && ok.exit_code == 0) << ok.describe();
  EXPECT_TRUE(contains(ok.out, "merged 2 sweeps (12 cells, 6 rows)")) << ok.out;
  const std::vector<std::string> rows = split_lines(read_text(dir / "m/results.csv"));
  ASSERT_EQ(rows.size(), 8u);  // header, float, 2 methods x 3 pairs
  EXPECT_EQ(rows[2].rfind("ptq-minmax,per-tensor,8,8,2,0,90.10,", 0), 0u) << rows[2];
  EXPECT_EQ(rows[3].rfind("lsq,per-tensor,8,8,2,0,95.60,", 0), 0u) << rows[3];
  for (const char* f : {"table.md", "cells.csv", "accuracy_vs_bits.svg"}) EXPECT_TRUE(fs::exists(dir / ("m/" + std::string(f)))) << f;
  EXPECT_FALSE(contains(read_text(dir / "m/table.md"), "published"));

  // --published: the papers' figures beside the best learned rows, in a second table of table.md.
  std::ofstream(dir / "papers.ini") << "[Paper]\nfloat = 99.1\n4/4 = 97.5\n";
  std::ofstream(dir / "bad.ini") << "float = 99.1\n";
  const RunResult pub = run_qatlab(
      {"sweep", "--merge", dir / "a" + "," + dir / "b", "--out", dir / "p", "--published", dir / "papers.ini"}, dir.path(), "published");
  ASSERT_TRUE(pub.exited && pub.exit_code == 0) << pub.describe();
  const std::string table = read_text(dir / "p/table.md");
  EXPECT_TRUE(contains(table, "## Beside published figures")) << table;
  EXPECT_TRUE(contains(table, "| W4A4 | per-tensor | lsq | 2 | 95.50 ± 0.71 | -3.00 | 97.50 | -1.60 |")) << table;

  fs::create_directories(dir / "broken");
  std::ofstream(dir / "broken/results.json") << "{\"model\": ";
  for (const auto& [args, exit_code, says] : std::vector<std::tuple<std::vector<std::string>, int, std::string>>{
           {{"--merge", dir / "a" + "," + dir / "a", "--out", dir / "x"}, 2, "is in both"},
           {{"--merge", dir / "a" + "," + dir / "nothing", "--out", dir / "x"}, 2, "cannot read"},
           {{"--merge", dir / "a" + "," + dir / "broken", "--out", dir / "x"}, 1, "not a JSON file"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "a"}, 2, "is one of the merged sweeps"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "x", "--seeds", "3"}, 2, "--seeds does not apply"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "x", "--status"}, 2, "--status does not apply"},
           {{"--merge", dir / "a"}, 2, "needs --out"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "x", "--published", dir / "none.ini"}, 2, "cannot read"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "x", "--published", dir.path()}, 2, "cannot read"},
           {{"--merge", dir / "a" + "," + dir / "b", "--out", dir / "x", "--published", dir / "bad.ini"}, 2,
            "outside any section"}}) {
    std::vector<std::string> full = {"sweep"};
    full.insert(full.end(), args.begin(), args.end());
    const RunResult r = run_qatlab(full, dir.path(), "bad-merge");
    EXPECT_TRUE(r.exited && r.exit_code == exit_code) << r.describe();
    EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
    EXPECT_TRUE(contains(r.err, says)) << r.err;
    EXPECT_FALSE(fs::exists(dir / "x"));
  }
  EXPECT_EQ(read_text(dir / "a/results.json"), results_json(lsq));  // untouched
}

// --qat-start: each QAT cell starts from the finished cell of another sweep with its method, granularity and
// seed (progressive quantization: W2A2 from W4A4). The start is part of the cells' settings, stored in their
// checkpoints as `qat --from` stores it and named in their schedule; a sweep without such a cell is refused
// before anything is written.
TEST(SweepCommand, QatStartTrainsEachCellOnFromAnotherSweepsCell) {
  const TempDir dir("sweep_start");
  write_synthetic_mnist(dir / "data", 256, 64, 5);
  const std::vector<std::string> common = {"sweep", "--data-dir", dir / "data", "--model", "mlp", "--float-epochs", "1",
                                           "--methods", "qat-minmax", "--seeds", "1", "--qat-epochs", "1",
                                           "--threads", "2"};
  std::vector<std::string> four = common;
  four.insert(four.end(), {"--pairs", "4/4", "--out", dir / "four"});
  const RunResult first = run_qatlab(four, dir.path(), "four");
  ASSERT_TRUE(first.exited && first.exit_code == 0) << first.describe();

  const std::vector<std::string> two = {"sweep", dir / "four/float-s1/checkpoint.h5", "--data-dir", dir / "data",
                                        "--methods", "qat-minmax", "--seeds", "1", "--qat-epochs", "1", "--threads", "2",
                                        "--pairs", "2/2", "--qat-start", dir / "four", "--out", dir / "two"};
  const RunResult progressive = run_qatlab(two, dir.path(), "two");
  ASSERT_TRUE(progressive.exited && progressive.exit_code == 0) << progressive.describe();
  const SweepReport back = parse_results_json(read_text(dir / "two/results.json"));
  ASSERT_EQ(back.cells.size(), 1u);
  EXPECT_TRUE(back.cells[0].ok) << back.cells[0].error;
  EXPECT_TRUE(back.cells[0].schedule.ends_with(", started from qat-minmax-per-tensor-w4a4-s1")) << back.cells[0].schedule;
  const std::string result = read_text(dir / "two/cells/qat-minmax-per-tensor-w2a2-s1/result.ini");
  EXPECT_TRUE(contains(result, " start " + dir / "four/cells/qat-minmax-per-tensor-w4a4-s1/checkpoint.h5")) << result;
  const Checkpoint cell = load_checkpoint(dir / "two/cells/qat-minmax-per-tensor-w2a2-s1/checkpoint.h5");
  EXPECT_EQ(ini_value(cell.config_ini, "from"), dir / "four/cells/qat-minmax-per-tensor-w4a4-s1/checkpoint.h5");
  // Run again: the same start, so the cell is reused.
  const RunResult again = run_qatlab(two, dir.path(), "two-again");
  ASSERT_TRUE(again.exited && again.exit_code == 0) << again.describe();
  EXPECT_TRUE(contains(again.out, "0 cells run, 1 reused")) << again.out;

  // No lsq cell there to start from, or no sweep at all: refused before anything is written.
  for (const auto& [start, says] : std::vector<std::pair<std::string, std::string>>{
           {dir / "four", "has no finished lsq per-tensor cell of seed 1"}, {dir / "data", "not the directory of a sweep"}}) {
    std::vector<std::string> bad = two;
    bad[std::find(bad.begin(), bad.end(), "qat-minmax") - bad.begin()] = "lsq";
    bad[std::find(bad.begin(), bad.end(), "--qat-start") - bad.begin() + 1] = start;
    bad.back() = dir / "refused";
    const RunResult r = run_qatlab(bad, dir.path(), "refused");
    EXPECT_TRUE(r.exited && r.exit_code == 2) << r.describe();
    EXPECT_EQ(split_lines(r.err).size(), 1u) << r.describe();
    EXPECT_TRUE(contains(r.err, says)) << r.err;
    EXPECT_FALSE(fs::exists(dir / "refused"));
  }
}

// --detect-anomaly: a diverging QAT cell fails naming the op and layer where its first infinity or NaN
// came from; the option changes no value, so it is not in the cells' keys, but the cell's stored settings
// say it was on.
TEST(SweepCommand, DetectAnomalyNamesWhereACellDiverged) {
  const TempDir dir("sweep_anomaly");
  write_synthetic_mnist(dir / "data", 256, 64, 7);
  const std::vector<std::string> common = {"sweep", "--data-dir", dir / "data", "--model", "mlp", "--float-epochs", "1",
                                           "--methods", "qat-minmax", "--seeds", "1", "--qat-epochs", "1",
                                           "--threads", "2", "--pairs", "8/8"};
  std::vector<std::string> diverging = common;
  diverging.insert(diverging.end(), {"--qat-lr", "1e30", "--detect-anomaly", "--out", dir / "diverging"});
  const RunResult r = run_qatlab(diverging, dir.path(), "diverging");
  ASSERT_TRUE(r.exited) << r.describe();
  const SweepReport failed = parse_results_json(read_text(dir / "diverging/results.json"));
  ASSERT_EQ(failed.cells.size(), 1u);
  EXPECT_FALSE(failed.cells[0].ok);
  EXPECT_TRUE(contains(failed.cells[0].error, "anomaly: ") && contains(failed.cells[0].error, " in body.fc") &&
              contains(failed.cells[0].error, "at epoch 1, batch "))
      << failed.cells[0].error;

  std::vector<std::string> fine = common;
  fine.insert(fine.end(), {"--detect-anomaly", "--out", dir / "fine"});
  const RunResult ok = run_qatlab(fine, dir.path(), "fine");
  ASSERT_TRUE(ok.exited && ok.exit_code == 0) << ok.describe();
  const Checkpoint cell = load_checkpoint(dir / "fine/cells/qat-minmax-per-tensor-w8a8-s1/checkpoint.h5");
  EXPECT_EQ(ini_value(cell.config_ini, "detect-anomaly"), "true");
  fine.erase(std::find(fine.begin(), fine.end(), "--detect-anomaly"));
  const RunResult again = run_qatlab(fine, dir.path(), "fine-again");
  ASSERT_TRUE(again.exited && again.exit_code == 0) << again.describe();
  EXPECT_TRUE(contains(again.out, "0 cells run, 1 reused")) << again.out;
}

TEST(SweepCommand, BadSettingsAreOneLineUsageErrors) {
  const TempDir dir("sweep_bad");
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--pairs", "8/9"}, {"--methods", "lsq,magic"}, {"--seeds", "0"},
        {"--first-last", "16"}, {"--granularity", "per-row"}, {"--qat-lr", "-1"}, {"--qat-weight-decay", "-0.1"},
        {"--qat-warmup-epochs", "3"}, {"--qat-warmup-epochs", "-1"}, {"--qat-warmup-epochs", "2"},
        {"--qat-freeze-bn-after", "2"}, {"--qat-freeze-bn-after", "-2"}, {"--qat-swa-start", "2"},
        {"--qat-swa-start", "1"}, {"--qat-swa-lr", "0.01"}, {"--qat-swa-start", "-1", "--qat-swa-lr", "0.01"},
        {"--qat-weight-decay", "nan"}, {"--layer-bits", "fc=9:8"},
        {"--layer-bits", "residual-branches=4:8"}, {"--layer-bits", "residual-sums=8:"}, {"--lsq-init", "median"},
        {"--methods", "pact", "--lsq-init", "mse"}, {"--lsq-grad-scale", "tensor"},
        {"--methods", "pact", "--lsq-grad-scale", "layer"}, {"--lsq-step-bounds", "0.5"},
        {"--methods", "pact", "--lsq-step-bounds", "4"}, {"--weight-range", "wide"}, {"--qat-distill", "1.5"}, {"--qat-distill-temperature", "2"},
        {"--methods", "ptq-minmax", "--qat-distill", "1"}, {"--qat-teacher", "teacher.h5"},
        {"--methods", "ptq-minmax", "--qat-start", "other"}, {"--qat-start", dir / "s"}}) {
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
