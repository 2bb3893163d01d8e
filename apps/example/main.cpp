// main.cpp: qatlab used as a library by a program of its own (find_package(qatlab), qatlab::qatlab).
// It defines a small network in C++, trains it in float on a synthetic task, prepares it for QAT
// (W8A8), fine-tunes it, converts it to the integer-only graph and runs that graph on the test images,
// printing the float, simulated and integer accuracies and how often the integer graph's top-1 class
// equals the simulation's. Exits 1 if the integer graph is not a working classifier (accuracy below
// 90 %), so that a broken install fails the build that runs it.
//
// The task: 12 x 12 images of noise with one bright 4 x 4 square; the class is the quadrant it lies in.
#include <cstdio>
#include <memory>
#include <span>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

using namespace qatlab;

namespace {

constexpr int64_t kSide = 12, kClasses = 4;

struct Images {
  Tensor x;                     // (N, 1, 12, 12)
  std::vector<int32_t> labels;  // (N)
};

Images make_images(int64_t n, Rng& rng) {
  std::vector<float> pixels(n * kSide * kSide);
  std::vector<int32_t> labels(n);
  for (int64_t i = 0; i < n; ++i) {
    float* img = pixels.data() + i * kSide * kSide;
    for (int64_t p = 0; p < kSide * kSide; ++p) img[p] = 0.8f * rng.uniform(-1.0f, 1.0f);
    const int32_t quadrant = static_cast<int32_t>(rng.below(kClasses));
    const int64_t y0 = (quadrant / 2) * 6 + static_cast<int64_t>(rng.below(3));
    const int64_t x0 = (quadrant % 2) * 6 + static_cast<int64_t>(rng.below(3));
    for (int64_t y = y0; y < y0 + 4; ++y)
      for (int64_t x = x0; x < x0 + 4; ++x) img[y * kSide + x] += 0.5f;
    labels[i] = quadrant;
  }
  return {Tensor::from_vector({n, 1, kSide, kSide}, pixels), labels};
}

std::vector<ParamRef> parameters_of(const Module& m) {
  std::vector<ParamRef> refs;
  for (const auto& [name, tensor] : m.named_parameters()) refs.push_back({name, tensor});
  return refs;
}

// Epochs of SGD in batches of 32 on the training images.
void train(Module& model, const Images& data, int epochs, float lr) {
  model.train();
  SGD opt(parameters_of(model), SgdOptions{lr, 0.9f});
  const int64_t n = data.x.size(0), batch = 32, per_image = kSide * kSide;
  for (int e = 0; e < epochs; ++e)
    for (int64_t b = 0; b + batch <= n; b += batch) {
      std::vector<float> values(data.x.data() + b * per_image, data.x.data() + (b + batch) * per_image);
      const Tensor x = Tensor::from_vector({batch, 1, kSide, kSide}, values);
      Tensor loss = cross_entropy(model.forward(x), std::span(data.labels).subspan(b, batch));
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
}

std::vector<int64_t> top1(const Tensor& logits) {  // (N, classes)
  std::vector<int64_t> best(logits.size(0), 0);
  for (int64_t i = 0; i < logits.size(0); ++i)
    for (int64_t c = 1; c < logits.size(1); ++c)
      if (logits.data()[i * logits.size(1) + c] > logits.data()[i * logits.size(1) + best[i]]) best[i] = c;
  return best;
}

double accuracy(const std::vector<int64_t>& predicted, const std::vector<int32_t>& labels) {
  int64_t right = 0;
  for (size_t i = 0; i < labels.size(); ++i) right += predicted[i] == labels[i];
  return 100.0 * right / static_cast<double>(labels.size());
}

}  // namespace

int main() {
  Rng rng(7);
  const Images train_set = make_images(1024, rng), test_set = make_images(512, rng);

  // The network: conv (with batch norm and ReLU, which prepare_qat fuses), pooling, two linear layers.
  auto model = std::make_shared<Sequential>();
  model->add(std::make_shared<Conv2d>(1, 8, 3, Conv2dOptions{.padding = 1}, rng));
  model->add(std::make_shared<BatchNorm2d>(8));
  model->add(std::make_shared<ReLU>());
  model->add(std::make_shared<MaxPool2d>(2));
  model->add(std::make_shared<Flatten>());
  model->add(std::make_shared<Linear>(8 * 6 * 6, 32, true, rng));
  model->add(std::make_shared<ReLU>());
  model->add(std::make_shared<Linear>(32, kClasses, true, rng));

  train(*model, train_set, 3, 0.02f);
  model->eval();
  const double float_acc = [&] {
    NoGradGuard no_grad;
    return accuracy(top1(model->forward(test_set.x)), test_set.labels);
  }();

  // QAT: weights 8-bit per channel (min/max), activations 8-bit (moving-average min/max).
  const QConfig qconfig = QConfig::from_options(8, 8, true, "minmax", "ema", {});
  const std::shared_ptr<QatModel> qat = prepare_qat(model, qconfig);
  train(*qat, train_set, 1, 0.005f);
  qat->eval();
  NoGradGuard no_grad;
  const std::vector<int64_t> sim = top1(qat->forward(test_set.x));

  // The integer-only graph, on the best kernels this CPU runs.
  const Int8Graph graph = convert(*qat, {1, kSide, kSide});
  const std::vector<int64_t> integer = top1(graph.run(test_set.x, best_kernel_path()));
  int64_t agree = 0;
  for (size_t i = 0; i < sim.size(); ++i) agree += sim[i] == integer[i];

  const double int_acc = accuracy(integer, test_set.labels);
  std::printf("float %.2f %%, QAT simulation %.2f %%, integer graph %.2f %% (%s kernels), top-1 agreement %.2f %%\n",
              float_acc, accuracy(sim, test_set.labels), int_acc, kernel_path_name(best_kernel_path()),
              100.0 * agree / static_cast<double>(sim.size()));
  std::printf("%s", graph.summary().c_str());
  return int_acc >= 90.0 ? 0 : 1;
}
