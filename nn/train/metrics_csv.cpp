// metrics_csv.cpp: writing and reading a run's metrics.csv (metrics_csv.h).
#include "nn/train/metrics_csv.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>
#include <stdexcept>

namespace qatlab {

std::string metrics_csv(const std::vector<MetricsRow>& history) {
  std::vector<std::string> columns = {"epoch",     "lr",       "train_loss",      "train_acc",
                                      "test_loss", "test_acc", "train_img_per_s", "epoch_seconds"};
  // A run with weight averaging adds its columns (empty in the epochs before it began).
  if (std::any_of(history.begin(), history.end(), [](const MetricsRow& r) { return r.count("swa_test_acc") > 0; }))
    columns.insert(columns.end(), {"swa_test_loss", "swa_test_acc"});
  std::ostringstream os;
  for (size_t i = 0; i < columns.size(); ++i) os << (i ? "," : "") << columns[i];
  os << "\n";
  os.precision(6);
  for (const auto& row : history) {
    for (size_t i = 0; i < columns.size(); ++i) {
      auto it = row.find(columns[i]);
      os << (i ? "," : "");
      if (it != row.end()) os << it->second;
    }
    os << "\n";
  }
  return os.str();
}

namespace {

// The file is ours and plain: names and numbers between commas, no quoting. getline drops the
// separator, so a trailing comma would lose its empty last field; the count check below catches it.
std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, ',')) fields.push_back(field);
  if (!line.empty() && line.back() == ',') fields.emplace_back();
  return fields;
}

}  // namespace

std::vector<MetricsRow> parse_metrics_csv(const std::string& text, const std::string& what) {
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0;
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(what + " line " + std::to_string(line_no) + ": " + why);
  };
  ++line_no;
  if (!std::getline(in, line) || line.empty()) fail("no header (expected column names such as epoch,lr,...,test_acc)");
  if (line.back() == '\r') line.pop_back();
  const std::vector<std::string> columns = split_fields(line);
  std::set<std::string> seen;
  for (const std::string& c : columns) {
    if (c.empty()) fail("an empty column name in the header");
    if (!seen.insert(c).second) fail("column '" + c + "' appears twice");
  }
  if (!seen.count("epoch")) fail("no 'epoch' column in the header '" + line + "'");
  const size_t epoch_column = static_cast<size_t>(std::find(columns.begin(), columns.end(), "epoch") - columns.begin());

  std::vector<MetricsRow> rows;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const std::vector<std::string> fields = split_fields(line);
    if (fields.size() != columns.size())
      fail(std::to_string(fields.size()) + " fields, the header has " + std::to_string(columns.size()));
    MetricsRow row;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (fields[i].empty()) continue;
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(fields[i].c_str(), &end);
      if (end != fields[i].c_str() + fields[i].size() || errno == ERANGE)
        fail(columns[i] + " is '" + fields[i] + "', not a number");
      row[columns[i]] = v;
    }
    const auto epoch = row.find("epoch");
    if (epoch == row.end()) fail("the epoch field is empty");
    const double e = epoch->second;
    if (!(e >= 1 && e <= static_cast<double>(kMaxCheckpointEpochs) && e == std::floor(e)))
      fail("epoch '" + fields[epoch_column] + "' is not an epoch number (1, 2, ...)");
    if (!rows.empty() && e <= rows.back().at("epoch"))
      fail("epoch " + std::to_string(static_cast<int64_t>(e)) + " after epoch " +
           std::to_string(static_cast<int64_t>(rows.back().at("epoch"))) + ": the rows must go up");
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace qatlab
