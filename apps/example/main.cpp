// main.cpp: qatlab used as a library by a program of its own (find_package(qatlab), qatlab::qatlab).
// It defines a small network in C++ and a synthetic data set, trains the network in float with the
// library's training run (nn/train/train_run.h), fine-tunes it with quantization-aware training (W8A8,
// quant/workflow/qat_training.h), converts it to the integer-only graph and runs that graph on the test
// images (quant/workflow/integer_eval.h), printing the float, simulated and integer accuracies and how
// often the integer graph's top-1 class equals the simulation's. Exits 1 if the integer graph is not a
// working classifier (accuracy below 90 %), so that a broken install fails the build that runs it.
//
// The task: 12 x 12 images of noise with one bright 4 x 4 square; the class is the quadrant it lies in.
// Shape letters: N images.
#include <cstdio>
#include <memory>

#include "core/rng.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/train/evaluate.h"
#include "nn/train/train_run.h"
#include "quant/qat/convert.h"
#include "quant/workflow/integer_eval.h"
#include "quant/workflow/qat_training.h"

using namespace qatlab;

namespace {

constexpr int64_t kSide = 12, kClasses = 4;

// n images (N, 1, 12, 12) of bytes, labelled with the quadrant of their square.
ImageDataset make_images(int64_t n, Rng& rng) {
  ImageDataset d;
  d.name = "quadrants";
  d.n = n, d.c = 1, d.h = kSide, d.w = kSide, d.num_classes = kClasses;
  d.pixels.resize(static_cast<size_t>(n * kSide * kSide));
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* img = d.pixels.data() + i * kSide * kSide;
    for (int64_t p = 0; p < kSide * kSide; ++p) img[p] = static_cast<uint8_t>(rng.below(180));
    const int32_t quadrant = static_cast<int32_t>(rng.below(kClasses));
    const int64_t y0 = (quadrant / 2) * 6 + static_cast<int64_t>(rng.below(3));
    const int64_t x0 = (quadrant % 2) * 6 + static_cast<int64_t>(rng.below(3));
    for (int64_t y = y0; y < y0 + 4; ++y)
      for (int64_t x = x0; x < x0 + 4; ++x) img[y * kSide + x] = static_cast<uint8_t>(img[y * kSide + x] + 70);  // at most 249
    d.labels.push_back(quadrant);
  }
  return d;
}

}  // namespace

int main() {
  Rng rng(7);
  DataBundle data;  // both splits, and how the loader normalises them: (pixel / 255 - mean) / std
  data.source = data.label = "quadrants";
  data.train = make_images(1024, rng);
  data.test = make_images(512, rng);
  data.mean = {0.38f};
  data.std = {0.22f};
  data.spec = {1, kSide, kSide, kClasses};

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

  // Float training: 3 epochs of SGD in batches of 32 (cosine schedule), a line per epoch on stdout, no
  // files written (no out_dir).
  TrainRun run;
  run.description.name = "example-net";
  run.model = model;
  run.data = &data;
  run.settings.epochs = 3;
  run.settings.batch_size = 32;
  run.settings.lr = 0.02f;
  run.log = stdout;
  train_model(run);
  DataLoader test(data.test, loader_options(data, 256, 0, false));
  const double float_acc = evaluate(*model, test).accuracy;

  // QAT: weights 8-bit per channel (min/max), activations 8-bit (moving-average min/max), one epoch.
  run.name = "qat";
  run.settings.epochs = 1;
  run.settings.lr = 0.005f;
  const QatTraining qat = train_qat(run, QConfig::from_options(8, 8, true, "minmax", "ema", {}));
  qat.model->eval();
  const double sim_acc = evaluate(*qat.model, test).accuracy;

  // The integer-only graph, on the best kernels this CPU runs, against the simulation image by image.
  const Int8Graph graph = convert(*qat.model, {1, kSide, kSide});
  DataLoader integer_test(data.test, integer_loader_options(graph, data, 256));
  EvalResult integer;
  Agreement agree;
  run_integer(graph, best_kernel_path(), integer_test, qat.model.get(), integer, agree);

  std::printf("float %.2f %%, QAT simulation %.2f %%, integer graph %.2f %% (%s kernels), top-1 agreement %.2f %%\n",
              100 * float_acc, 100 * sim_acc, 100 * integer.accuracy, kernel_path_name(best_kernel_path()),
              100.0 * agree.same_top1 / static_cast<double>(agree.images));
  std::printf("%s", graph.summary().c_str());
  return integer.accuracy >= 0.9 ? 0 : 1;
}
