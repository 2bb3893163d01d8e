// sweep.h: the accuracy-vs-bitwidth study of `qatlab sweep` as data: the grid of cells (method x
// granularity x W/A pair x seed), what one cell produced, the mean and spread over seeds, and the
// result files the study writes (CSV, JSON; the command draws the plots, apps/sweep_plot.h). A cell is
// run by run_sweep_cell (sweep_cell.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qatlab {

// How a cell gets its quantized model from the float one.
//   ptq-minmax     post-training: min/max observers on weights and activations, calibration batches only
//   ptq-histogram  post-training: histogram (L2-optimal range) observers on the activations
//   qat-minmax     quantization-aware training with moving-average min/max observers
//   lsq            QAT with learned step sizes on weights and activations (Esser et al.)
//   pact           QAT with learned clipping levels on activations after a ReLU, min/max weights
inline const std::vector<std::string> kSweepMethods = {"ptq-minmax", "ptq-histogram", "qat-minmax", "lsq", "pact"};
enum class SweepMethod { PtqMinMax, PtqHistogram, QatMinMax, Lsq, Pact };
// A method by its name in kSweepMethods (the names cells, files and options use); std::invalid_argument
// "unknown sweep method 'NAME'" for any other.
SweepMethod parse_sweep_method(const std::string& name);
bool sweep_method_is_ptq(const std::string& method);

struct BitPair {
  int wbits = 8, abits = 8;
  std::string label() const;  // "W4A8"
  bool operator==(const BitPair&) const = default;
};

// "8/8,4/8" -> pairs; bits 2..8. Throws std::invalid_argument naming the bad entry.
std::vector<BitPair> parse_bit_pairs(const std::string& text);
// "a,b" -> {"a", "b"}, each checked against `allowed` (the message lists them).
std::vector<std::string> parse_name_list(const std::string& text, const std::vector<std::string>& allowed,
                                         const std::string& what);

struct SweepCell {
  std::string method, granularity;  // granularity: "per-tensor" | "per-channel" (weights)
  BitPair bits;
  uint64_t seed = 1;
  // The directory name under the sweep's cells/: "lsq-per-tensor-w4a4-s1".
  std::string id() const;
};

// What a finished cell measured. A cell that failed (e.g. training diverged) keeps its error instead.
struct CellResult {
  SweepCell cell;
  std::string key;             // every setting the cell depends on; a resumed sweep reruns a cell whose key changed
  bool ok = false;
  std::string error;           // when !ok: the one-line message
  double sim_accuracy = 0.0;   // the QAT model's float simulation on the test set, in [0, 1]
  double int_accuracy = 0.0;   // the integer graph's
  double top1_agreement = 0.0; // fraction of test images whose top-1 class is the same in both
  // Fraction of test images whose output codes the simulation's exact mode (the integer arithmetic run
  // in the QAT model) reproduces bit for bit; -1 where not recorded (result files before it).
  double exact_identical = -1.0;
  int64_t int_file_bytes = 0;  // the integer model file
  double seconds = 0.0;        // wall time of the cell
  std::string schedule;        // how it got its model (sweep_cell_schedule): "15 epochs, lr 0.01 cosine, ...[, lsq init mse]"
  // The layer bits it ran under ("first and last layer 8-bit, residual-branches=:8", SweepReport::policy)
  // where they differ from its report's (a merged report of sweeps with different --layer-bits); else empty.
  std::string policy;
};

// result.ini of a cell directory ("key = value" lines), and back. Reading returns nothing for a
// missing or unreadable file (the cell is then run again).
std::string cell_result_ini(const CellResult& r);
std::optional<CellResult> read_cell_result(const std::string& path, const SweepCell& cell);
// The same from the file's text (nothing when it is not this cell's or is damaged).
std::optional<CellResult> parse_cell_result(const std::string& ini, const SweepCell& cell);

// Mean, sample standard deviation (0 for one value), min and max of a few numbers.
struct Spread {
  int64_t n = 0;
  double mean = 0.0, std = 0.0, min = 0.0, max = 0.0;
};
Spread spread_of(const std::vector<double>& v);
// As the tables show them: "89.91 ± 0.12" (over two or more values; else "89.91"), and "+0.05" / "-1.20".
std::string mean_std(const Spread& s);
std::string signed_fixed(double v, int digits);

// One line of the study: a method at one granularity and W/A pair, over its seeds.
struct SweepRow {
  std::string method, granularity;
  BitPair bits;
  int64_t seeds_ok = 0, seeds_failed = 0;
  Spread sim, integer, agreement;  // accuracies in percent
  Spread exact;                    // exact_identical in percent, over the seeds that recorded it
  int64_t int_file_bytes = 0;      // of the first seed (the same for every seed)
  std::string schedule;            // its cells' (" / " between differing ones)
  std::string policy;              // its cells' layer bits where they differ from the report's; else empty
};
std::vector<SweepRow> summarize(const std::vector<CellResult>& results);

// The float baselines the cells started from, one per seed.
struct FloatBaseline {
  uint64_t seed = 1;
  std::string checkpoint;
  double accuracy = 0.0;     // test accuracy in [0, 1]
  int64_t checkpoint_bytes = 0;
};

// A sweep that a merged report joins: its directory and its command.
struct SweepSource {
  std::string dir, command;
};

struct SweepReport {
  std::string model, dataset, command;
  // The layer bits every cell keeps: the first-last policy, then each --layer-bits ("first and last layer
  // 8-bit, residual-branches=:8"). A merged report of sweeps that differ keeps the items they share here and
  // each cell's own in CellResult::policy.
  std::string policy;
  std::vector<FloatBaseline> floats;
  std::vector<CellResult> cells;
  std::vector<SweepRow> rows;
  std::vector<SweepSource> sources;  // a merged report's sweeps (merge_sweep_reports); empty for one sweep
};

// The float baselines' test accuracies in percent: mean and spread over seeds.
Spread float_spread(const SweepReport& r);

std::string cells_csv(const SweepReport& r);    // one line per cell
std::string results_csv(const SweepReport& r);  // one line per method x granularity x pair, over seeds
std::string results_json(const SweepReport& r);
// What `policy` (a cell's or row's, ", "-separated items) keeps beyond the report's `common` one: "+ ITEM" for
// each item `common` lacks and "- ITEM" for each of `common`'s it lacks; empty for an empty `policy`.
std::string policy_difference(const std::string& policy, const std::string& common);

// The rows as a Markdown table: the float model, then every row with its schedule, the integer graph's
// accuracy (mean +- standard deviation over seeds), its difference from the float model, the
// simulation's accuracy, the top-1 agreement and the share of images exact mode reproduces (the lowest
// over the seeds). Rows whose layer bits differ from the report's get a column saying how.
std::string results_table_md(const SweepReport& r);

// A report read back from its results.json text: everything but the rows, which are summarized again
// (accuracies are kept in the file to 0.01 %: exact for test sets of up to 10,000 images). Throws
// std::invalid_argument saying what is missing or malformed.
SweepReport parse_results_json(const std::string& text);

// One report of the cells of several sweeps of the same model and dataset, from the same float models
// (equal seed, accuracy and file size): e.g. a study whose bit widths need different fine-tuning schedules
// or layer bits, run as one sweep per setting. `parts`: (directory, report) pairs, in order; a cell in two
// of them, or sweeps that differ in any of the above, throw std::invalid_argument naming both directories.
// Sweeps whose layer bits differ keep them: the report's policy is the items every sweep has (in the first
// sweep's order), each cell with more or other items keeps its own, and a method's cells under different
// layer bits make different rows. The cells are ordered as a table reads: by weight bits, then activation bits (high
// to low), granularity, method (kSweepMethods' order), seed. `command` is the merging command.
SweepReport merge_sweep_reports(const std::vector<std::pair<std::string, SweepReport>>& parts, const std::string& command);

}  // namespace qatlab
