// sequence_models.cpp: RowLstmClassifier.
#include "nn/sequence_models.h"

#include <vector>

#include "core/ops.h"
#include "nn/linear.h"
#include "nn/lstm.h"

namespace qatlab {

Tensor image_rows(const Tensor& x) {
  QATLAB_CHECK(x.defined() && x.dim() == 4, "image_rows: input must be (N, C, H, W), got " +
                                                (x.defined() ? shape_str(x.shape()) : std::string("undefined")));
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  if (C == 1) return reshape(x, {N, H, W});  // already row after row
  std::vector<Tensor> planes;                // C tensors of (N, 1, H, W)
  for (int64_t c = 0; c < C; ++c) planes.push_back(slice(x, 1, c, c + 1));
  return reshape(concat(planes, 3), {N, H, C * W});  // (N, 1, H, C*W) -> (N, H, C*W)
}

RowLstmClassifier::RowLstmClassifier(int64_t channels, int64_t height, int64_t width, int64_t hidden,
                                     int64_t num_classes, Rng& rng)
    : Module("RowLstmClassifier"), channels(channels), height(height), width(width), hidden(hidden) {
  QATLAB_CHECK(channels > 0 && height > 0 && width > 0 && hidden > 0 && num_classes > 0,
               "RowLstmClassifier: sizes must be positive, got image (" + std::to_string(channels) + ", " +
                   std::to_string(height) + ", " + std::to_string(width) + "), hidden " + std::to_string(hidden) +
                   ", classes " + std::to_string(num_classes));
  LstmOptions o;
  o.input_size = channels * width;
  o.hidden_size = hidden;
  o.num_layers = 1;
  o.batch_first = true;
  register_module("lstm", std::make_shared<LSTM>(o, rng));
  register_module("head", std::make_shared<Linear>(hidden, num_classes, true, rng));
}

Tensor RowLstmClassifier::forward(const Tensor& x) {
  const Shape expected{x.defined() && x.dim() > 0 ? x.size(0) : 0, channels, height, width};
  QATLAB_CHECK(x.defined() && x.dim() == 4 && x.shape() == expected,
               "RowLstmClassifier: input must be (N, " + std::to_string(channels) + ", " + std::to_string(height) +
                   ", " + std::to_string(width) + "), got " +
                   (x.defined() ? shape_str(x.shape()) : std::string("undefined")));
  const Tensor seq = (*child("lstm"))(image_rows(x));  // (N, T = height, hidden)
  const int64_t N = seq.size(0), T = seq.size(1);
  const Tensor last = reshape(slice(seq, 1, T - 1, T), {N, seq.size(2)});  // (N, hidden)
  return (*child("head"))(last);
}

std::string RowLstmClassifier::describe() const {
  return "steps=" + std::to_string(height) + ", features=" + std::to_string(channels * width) +
         ", hidden=" + std::to_string(hidden);
}

}  // namespace qatlab
