// test_metrics_csv.cpp: a run's metrics.csv (nn/train/metrics_csv.h): what the writer writes reads back
// as the same rows (weight averaging's columns empty before it began), and a damaged file is refused
// naming its line.
#include "nn/train/metrics_csv.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace qatlab {
namespace {

std::vector<MetricsRow> two_epochs() {
  return {{{"epoch", 1}, {"lr", 0.1}, {"train_loss", 1.25}, {"train_acc", 0.5}, {"test_loss", 1.5}, {"test_acc", 0.4},
           {"train_img_per_s", 1000}, {"epoch_seconds", 12.5}},
          {{"epoch", 2}, {"lr", 3e-06}, {"train_loss", 0.75}, {"train_acc", 0.75}, {"test_loss", 1.0}, {"test_acc", 0.625},
           {"train_img_per_s", 1100}, {"epoch_seconds", 11.0}, {"swa_test_loss", 0.9}, {"swa_test_acc", 0.65}}};
}

TEST(MetricsCsv, WhatIsWrittenReadsBackAsTheSameRows) {
  const std::vector<MetricsRow> rows = two_epochs();
  const std::string text = metrics_csv(rows);
  EXPECT_EQ(text.substr(0, text.find('\n')),
            "epoch,lr,train_loss,train_acc,test_loss,test_acc,train_img_per_s,epoch_seconds,swa_test_loss,swa_test_acc");
  // Six significant digits are written; every value here has fewer.
  EXPECT_EQ(parse_metrics_csv(text, "metrics.csv"), rows);
  // Windows line ends and blank lines change nothing.
  std::string crlf;
  for (char c : text) crlf += c == '\n' ? std::string("\r\n\r\n") : std::string(1, c);
  EXPECT_EQ(parse_metrics_csv(crlf, "metrics.csv"), rows);
}

TEST(MetricsCsv, ADamagedFileIsRefusedNamingItsLine) {
  const std::string header = "epoch,test_acc\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "line 1: no header"},
      {"epoch,,test_acc\n", "line 1: an empty column name"},
      {"epoch,test_acc,epoch\n", "line 1: column 'epoch' appears twice"},
      {"test_acc,lr\n0.5,0.1\n", "line 1: no 'epoch' column"},
      {header + "1,0.5\n2,0.6,7\n", "line 3: 3 fields, the header has 2"},
      {header + "1,0.5,\n", "line 2: 3 fields, the header has 2"},
      {header + "1,0.5x\n", "line 2: test_acc is '0.5x', not a number"},
      {header + "1,1e999\n", "line 2: test_acc is '1e999', not a number"},
      {header + ",0.5\n", "line 2: the epoch field is empty"},
      {header + "0,0.5\n", "line 2: epoch '0' is not an epoch number"},
      {header + "1.5,0.5\n", "line 2: epoch '1.5' is not an epoch number"},
      {header + "2,0.5\n2,0.6\n", "line 3: epoch 2 after epoch 2"},
      {header + "3,0.5\n\n1,0.6\n", "line 4: epoch 1 after epoch 3"},
  };
  for (const auto& [text, expected] : cases) {
    try {
      parse_metrics_csv(text, "run/metrics.csv");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const std::invalid_argument& e) {
      EXPECT_EQ(std::string(e.what()).rfind("run/metrics.csv " + expected, 0), 0u) << e.what();
    }
  }
}

TEST(MetricsCsv, EmptyFieldsAreAbsentColumns) {
  const auto rows = parse_metrics_csv("epoch,test_acc,swa_test_acc\n1,0.5,\n2,0.6,0.7\n", "m");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (MetricsRow{{"epoch", 1}, {"test_acc", 0.5}}));
  EXPECT_EQ(rows[1], (MetricsRow{{"epoch", 2}, {"test_acc", 0.6}, {"swa_test_acc", 0.7}}));
}

}  // namespace
}  // namespace qatlab
