// activation.h: parameter-free layers: ReLU, ReLU6, pooling, Flatten, Identity, Dropout.
#pragma once

#include "core/ops.h"
#include "nn/module.h"

namespace qatlab {

class ReLU : public Module {
 public:
  ReLU() : Module("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
  bool is_relu() const override { return true; }
};

class ReLU6 : public Module {
 public:
  ReLU6() : Module("ReLU6") {}
  Tensor forward(const Tensor& x) override { return relu6(x); }
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0)
      : Module("MaxPool2d"), kernel(kernel), stride(stride ? stride : kernel), padding(padding) {}
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel, stride, padding); }
  std::string describe() const override {
    return "k=" + std::to_string(kernel) + ", stride=" + std::to_string(stride) + ", pad=" + std::to_string(padding);
  }
  const int64_t kernel, stride, padding;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t kernel, int64_t stride = 0, int64_t padding = 0)
      : Module("AvgPool2d"), kernel(kernel), stride(stride ? stride : kernel), padding(padding) {}
  Tensor forward(const Tensor& x) override { return avg_pool2d(x, kernel, stride, padding); }
  std::string describe() const override {
    return "k=" + std::to_string(kernel) + ", stride=" + std::to_string(stride) + ", pad=" + std::to_string(padding);
  }
  const int64_t kernel, stride, padding;
};

class GlobalAvgPool2d : public Module {
 public:
  GlobalAvgPool2d() : Module("GlobalAvgPool2d") {}
  Tensor forward(const Tensor& x) override { return global_avg_pool2d(x); }
};

class Flatten : public Module {
 public:
  Flatten() : Module("Flatten") {}
  Tensor forward(const Tensor& x) override { return flatten(x, 1); }
};

class Identity : public Module {
 public:
  Identity() : Module("Identity") {}
  Tensor forward(const Tensor& x) override { return x; }
};

// Dropout draws its masks from its own generator; the trainer reseeds it at each epoch start
// (reseed(seed, epoch)), so a run resumed at an epoch boundary draws the same masks.
class Dropout : public Module {
 public:
  explicit Dropout(float p) : Module("Dropout"), p(p) {
    QATLAB_CHECK(p >= 0.0f && p < 1.0f, "Dropout: p must be in [0, 1), got " + std::to_string(p));
  }
  Tensor forward(const Tensor& x) override {
    // One chunk of a global batch (core/batch_sync.h) draws from its own stream: the masks do not depend
    // on which chunks a process ran before it.
    if (BatchSync* sync = batch_sync(); sync && training()) {
      Rng chunk_rng = Rng::derive(seed_, (stream_ << 32) ^ sync->chunk_stream());
      return dropout(x, p, true, chunk_rng);
    }
    return dropout(x, p, training(), rng_);
  }
  void reseed(uint64_t seed, uint64_t stream) {
    rng_ = Rng::derive(seed, stream);
    seed_ = seed, stream_ = stream;
  }
  std::string describe() const override { return "p=" + std::to_string(p); }
  const float p;

 private:
  Rng rng_;
  uint64_t seed_ = 0, stream_ = 0;  // of the last reseed
};

}  // namespace qatlab
