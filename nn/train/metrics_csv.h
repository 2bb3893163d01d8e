// metrics_csv.h: the metrics.csv a run writes (a row per epoch), and reading it back (`qatlab compare`).
#pragma once

#include <string>
#include <vector>

#include "nn/checkpoint.h"

namespace qatlab {

// The CSV text of a run's history: a header of column names (epoch, lr, train_loss, train_acc, test_loss,
// test_acc, train_img_per_s, epoch_seconds, and swa_test_loss, swa_test_acc when a row has them), then a
// row per epoch; a value a row lacks is an empty field.
std::string metrics_csv(const std::vector<MetricsRow>& history);

// The rows of a metrics.csv text (`what` names it in errors, e.g. its path). Each row holds the columns
// whose field is not empty. Throws std::invalid_argument naming the line for: no header, an empty or
// repeated column name, no "epoch" column, a row with another number of fields than the header, a field
// that is not a whole number, an epoch that is not a positive integer or not above the previous row's.
std::vector<MetricsRow> parse_metrics_csv(const std::string& text, const std::string& what);

}  // namespace qatlab
