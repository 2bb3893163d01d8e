// sequence_models.h: models that read an image as a sequence: RowLstmClassifier runs an LSTM over the
// image rows and classifies from the last step (`--model lstm-rows`).
#pragma once

#include <string>

#include "core/rng.h"
#include "nn/module.h"

namespace qatlab {

// x (N, C, H, W) -> H steps of C*W features (each row's channels side by side) -> LSTM (1 layer,
// `hidden` units) -> the last step's output (N, hidden) -> Linear -> (N, classes).
// Children: "lstm" (LSTM, batch-first) and "head" (Linear). They are reached through child(name) and
// their generic forward only, so a pass may replace either in place.
class RowLstmClassifier : public Module {
 public:
  RowLstmClassifier(int64_t channels, int64_t height, int64_t width, int64_t hidden, int64_t num_classes, Rng& rng);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;

  const int64_t channels, height, width, hidden;
};

// The image as a batch-first sequence: (N, C, H, W) -> (N, H, C*W), row h of step h holding row h of
// channel 0, then of channel 1, ...
Tensor image_rows(const Tensor& x);

}  // namespace qatlab
