// cmd_compare.cpp: `qatlab compare A B`: two runs' training curves side by side, as means over ranges of
// epochs (and epoch by epoch), from their metrics.csv or checkpoints: the figures an ablation's README
// sets against each other ("over epochs 21-30 it tested 85.30 against 84.77 %"), as a command.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "nn/checkpoint.h"
#include "nn/train/metrics_csv.h"

namespace qatlab {
namespace {

namespace fs = std::filesystem;

struct Curve {
  std::string source;  // the file read
  std::map<int64_t, MetricsRow> by_epoch;
};

// A run directory (its metrics.csv, else its checkpoint.h5), a metrics.csv file or a checkpoint.
Curve read_curve(const std::string& path) {
  Curve c;
  if (!fs::exists(path)) throw UsageError(path + ": no such file or directory (a run directory, metrics.csv or checkpoint)");
  std::vector<MetricsRow> rows;
  fs::path file = path;
  if (fs::is_directory(file)) {
    if (fs::is_regular_file(file / "metrics.csv")) file /= "metrics.csv";
    else if (fs::is_regular_file(file / "checkpoint.h5")) file /= "checkpoint.h5";
    else throw UsageError(path + " holds neither metrics.csv nor checkpoint.h5 (a run's directory?)");
  }
  c.source = file.string();
  if (file.extension() == ".csv") {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + c.source);
    std::ostringstream text;
    text << in.rdbuf();
    rows = parse_metrics_csv(text.str(), c.source);
  } else {
    rows = load_checkpoint(c.source).history;
  }
  for (MetricsRow& r : rows) {
    // (parse_metrics_csv checks its epochs; a checkpoint's history is checked here.)
    const auto e = r.find("epoch");
    if (e == r.end() || !(e->second >= 1 && e->second <= static_cast<double>(kMaxCheckpointEpochs)) ||
        e->second != std::floor(e->second) || c.by_epoch.count(static_cast<int64_t>(e->second)))
      throw std::runtime_error(c.source + ": a history row without a valid epoch of its own");
    c.by_epoch[static_cast<int64_t>(e->second)] = std::move(r);
  }
  if (c.by_epoch.empty()) throw std::runtime_error(c.source + ": no epoch recorded");
  return c;
}

struct EpochRange {
  int64_t first = 0, last = 0;
  std::string text() const { return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last); }
};

int64_t parse_epoch(const std::string& s, const std::string& list) {
  size_t used = 0;
  int64_t v = -1;
  try {
    v = std::stoll(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (s.empty() || used != s.size() || v < 1 || v > kMaxCheckpointEpochs)
    throw UsageError("--epochs " + list + ": '" + s + "' is not an epoch number (1, 2, ...)");
  return v;
}

// "1-16,21-25,30": ranges of epochs, each first <= last.
std::vector<EpochRange> parse_ranges(const std::string& list) {
  std::vector<EpochRange> ranges;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    const size_t dash = item.find('-');
    EpochRange r;
    r.first = parse_epoch(item.substr(0, dash), list);
    r.last = dash == std::string::npos ? r.first : parse_epoch(item.substr(dash + 1), list);
    require(r.first <= r.last, "--epochs " + list + ": range " + item + " ends before it begins");
    ranges.push_back(r);
  }
  require(!ranges.empty() && list.back() != ',', "--epochs takes ranges of epochs such as 1-16,21-30, got '" + list + "'");
  return ranges;
}

// Accuracies are stored as fractions and shown in percent.
bool is_accuracy(const std::string& column) {
  return column.size() > 4 && column.compare(column.size() - 4, 4, "_acc") == 0;
}

// The mean of `column` over the range's epochs; an accuracy in percent.
double range_mean(const Curve& c, const std::string& name, const std::string& column, const EpochRange& r) {
  double sum = 0;
  for (int64_t e = r.first; e <= r.last; ++e) {
    const auto row = c.by_epoch.find(e);
    if (row == c.by_epoch.end())
      throw UsageError("--epochs " + r.text() + ": run " + name + " (" + c.source + ") has no epoch " + std::to_string(e) +
                       " (it has " + std::to_string(c.by_epoch.begin()->first) + "-" +
                       std::to_string(c.by_epoch.rbegin()->first) + ")");
    const auto v = row->second.find(column);
    if (v == row->second.end())
      throw UsageError("--columns: run " + name + " (" + c.source + ") has no " + column + " at epoch " + std::to_string(e));
    if (!std::isfinite(v->second))
      throw UsageError("run " + name + " (" + c.source + "): " + column + " is " + num_str(v->second) + " at epoch " +
                       std::to_string(e) + ", which has no mean");
    sum += v->second;
  }
  const double mean = sum / static_cast<double>(r.last - r.first + 1);
  return is_accuracy(column) ? 100 * mean : mean;
}

}  // namespace

int cmd_compare(int argc, char** argv) {
  std::vector<std::string> runs;
  std::string epochs, columns_text = "test_acc,train_acc";
  bool per_epoch = false;
  po::options_description desc("compare options");
  desc.add_options()
      ("run", po::value(&runs)->composing(),
       "the two runs, A then B (also the positional arguments): a run's directory (its metrics.csv, else its "
       "checkpoint.h5), a metrics.csv file or a checkpoint")
      ("epochs", po::value(&epochs),
       "ranges of epochs to average over, e.g. 1-16,21-25,26-30 (default: every epoch both runs have, as one range)")
      ("per-epoch", po::bool_switch(&per_epoch), "also a row for each epoch of the ranges")
      ("columns", po::value(&columns_text)->default_value(columns_text),
       "metrics.csv columns to set side by side, comma-separated (test_acc, train_acc, test_loss, train_loss, lr, "
       "swa_test_acc, ...; *_acc in percent)");
  po::positional_options_description positional;
  positional.add("run", 2);
  po::variables_map vm;
  if (!parse_command("compare", "A B [options]", desc, positional, argc, argv, vm)) return 0;
  require(runs.size() == 2, "name two runs: qatlab compare A B (run directories, metrics.csv files or checkpoints)");
  std::vector<std::string> columns;
  {
    std::istringstream in(columns_text);
    for (std::string c; std::getline(in, c, ',');) {
      require(!c.empty(), "--columns: an empty column name in '" + columns_text + "'");
      columns.push_back(c);
    }
    require(!columns.empty() && columns_text.back() != ',', "--columns: an empty column name in '" + columns_text + "'");
  }
  std::vector<EpochRange> ranges;
  if (!epochs.empty()) ranges = parse_ranges(epochs);

  const Curve a = read_curve(runs[0]), b = read_curve(runs[1]);
  if (ranges.empty()) {
    // Every epoch both have, as one range.
    std::vector<int64_t> both;
    for (const auto& [e, row] : a.by_epoch)
      if (b.by_epoch.count(e)) both.push_back(e);
    if (both.empty()) throw UsageError("the two runs have no epoch in common");
    if (both.back() - both.front() + 1 != static_cast<int64_t>(both.size()))
      throw UsageError("the epochs both runs have are not consecutive: give the ranges with --epochs");
    ranges.push_back({both.front(), both.back()});
  }
  std::vector<EpochRange> rows = ranges;
  if (per_epoch)
    for (const EpochRange& r : ranges)
      for (int64_t e = r.first; e <= r.last; ++e) rows.push_back({e, e});

  // Every mean first: a missing epoch or column is an error before anything is printed.
  std::vector<std::vector<std::pair<double, double>>> means;  // [row][column] = (A, B)
  for (const EpochRange& r : rows) {
    means.emplace_back();
    for (const std::string& c : columns) {
      const double va = range_mean(a, "A", c, r);
      means.back().emplace_back(va, range_mean(b, "B", c, r));
    }
  }

  const auto epochs_of = [](const Curve& c) {
    return std::to_string(c.by_epoch.begin()->first) + "-" + std::to_string(c.by_epoch.rbegin()->first);
  };
  std::printf("A  %s (epochs %s)\nB  %s (epochs %s)\n\n| epochs |", a.source.c_str(), epochs_of(a).c_str(),
              b.source.c_str(), epochs_of(b).c_str());
  for (const std::string& c : columns) {
    const char* unit = is_accuracy(c) ? " (%)" : "";
    std::printf(" %s A%s | %s B%s | A - B |", c.c_str(), unit, c.c_str(), unit);
  }
  std::printf("\n| --- |");
  for (size_t i = 0; i < columns.size(); ++i) std::printf(" --- | --- | --- |");
  std::printf("\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    std::printf("| %s |", rows[i].text().c_str());
    for (size_t k = 0; k < columns.size(); ++k) {
      const auto [va, vb] = means[i][k];
      if (is_accuracy(columns[k]))  // (a difference that rounds to zero printed as +0.00, never -0.00)
        std::printf(" %.2f | %.2f | %+.2f |", va, vb, std::fabs(va - vb) < 0.005 ? 0.0 : va - vb);
      else  // losses, learning rates, speeds: four significant digits whatever their size
        std::printf(" %.4g | %.4g | %+.3g |", va, vb, va - vb);
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace qatlab
