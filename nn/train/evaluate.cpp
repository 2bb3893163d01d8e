// evaluate.cpp: the test-set pass behind evaluate().
#include "nn/train/evaluate.h"

#include <algorithm>
#include <chrono>

#include "core/ops.h"

namespace qatlab {

EvalResult evaluate(Module& model, DataLoader& loader) {
  const auto t0 = std::chrono::steady_clock::now();
  NoGradGuard no_grad;
  const bool was_training = model.training();
  model.eval();
  EvalResult r;
  double loss_sum = 0.0;
  int64_t correct = 0;
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    const Tensor logits = model.forward(batch.images);  // (N, classes)
    const int64_t n = logits.size(0), classes = logits.size(1);
    loss_sum += cross_entropy(logits, batch.labels).item() * n;
    const float* l = logits.data();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t pred = static_cast<int32_t>(std::max_element(l + i * classes, l + (i + 1) * classes) - (l + i * classes));
      r.predictions.push_back(pred);
      correct += pred == batch.labels[i];
    }
    r.count += n;
  }
  model.set_training(was_training);
  r.loss = r.count ? loss_sum / r.count : 0.0;
  r.accuracy = r.count ? static_cast<double>(correct) / r.count : 0.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace qatlab
