// quant_test_util.h: small helpers the quantization tests share (random codes and tensors, bitwise
// tensor comparison, a conv + BN block builder, a few QAT training steps, simulation output codes,
// temporary files).
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "nn/zoo.h"
#include "quant/qat/lower.h"
#include "quant/qat/prepare.h"

namespace qatlab::test {

// A tensor of independent N(0, scale^2) values.
inline Tensor random_input(const Shape& shape, Rng& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = scale * rng.normal();
  return t;
}

// A float zoo model with random weights and batch-norm statistics moved by a few training-mode batches of
// random images, in eval mode.
inline ModulePtr random_float_model(const std::string& name, const ModelSpec& spec, Rng& rng) {
  const ModulePtr model = make_model(name, spec, rng);
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_input({8, spec.channels, spec.height, spec.width}, rng));
  }
  model->eval();
  return model;
}

// A file in the temporary directory (its name carries the process id, so test processes running at
// the same time never share one), removed when the test ends.
class TempFile {
 public:
  explicit TempFile(const std::string& name)
      : path_((std::filesystem::temp_directory_path() /
               ("qatlab_test_" + std::to_string(::getpid()) + "_" + name))
                  .string()) {}
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A few SGD steps (learning rate lr, momentum 0.9) on random inputs and labels with observers and BN
// statistics running, so every quantizer has a range and the BN running statistics differ from their
// initial values. Leaves the model in eval mode.
inline void train_a_little(const std::shared_ptr<QatModel>& model, const Shape& in_shape, int classes, Rng& rng,
                           int steps, float lr = 0.01f) {
  std::vector<ParamRef> params;
  for (auto& [name, t] : model->named_parameters()) params.push_back({name, t, true});
  SGD opt(params, SgdOptions{lr, 0.9f});
  model->train();
  for (int s = 0; s < steps; ++s) {
    const Tensor x = random_input(in_shape, rng);
    std::vector<int32_t> labels(in_shape[0]);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(classes));
    opt.zero_grad();
    Tensor loss = cross_entropy(model->forward(x), labels);
    loss.backward();
    opt.step();
  }
  model->eval();
}

// The QAT model's output for x on `grid` as codes: the float simulation, or exact mode when `exact`.
inline std::vector<int8_t> simulation_codes(const std::shared_ptr<QatModel>& model, const Tensor& x,
                                            const QParams& grid, bool exact,
                                            KernelPath exact_path = KernelPath::Reference) {
  NoGradGuard no_grad;
  set_exact_mode(*model, exact, exact_path);
  const Tensor y = model->forward(x);
  set_exact_mode(*model, false);
  return quantize_tensor(y, grid);
}

// Uniform integer in [lo, hi].
inline int32_t uniform_int(Rng& rng, int32_t lo, int32_t hi) {
  return static_cast<int32_t>(lo + static_cast<int64_t>(rng.below(static_cast<uint64_t>(int64_t{hi} - lo + 1))));
}

inline std::vector<int8_t> random_codes(Rng& rng, int64_t n, int32_t lo, int32_t hi) {
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(uniform_int(rng, lo, hi));
  return v;
}

inline bool bit_equal(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Bitwise equality of two tensors, naming the first mismatch.
inline ::testing::AssertionResult same_bits(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return ::testing::AssertionFailure() << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (!bit_equal(a.data()[i], b.data()[i]))
      return ::testing::AssertionFailure() << "element " << i << ": " << a.data()[i] << " vs " << b.data()[i];
  return ::testing::AssertionSuccess();
}

// A state dict as a map of deep copies (for load_state_dict into another model).
inline std::map<std::string, Tensor> as_map(const NamedTensors& named) {
  std::map<std::string, Tensor> m;
  for (const auto& [name, t] : named) m[name] = t.clone();
  return m;
}

// Sequential(conv k x k (padding k/2, no bias), BatchNorm2d, optional ReLU).
inline ModulePtr conv_bn(int64_t in, int64_t out, int64_t k, int64_t stride, bool relu, Rng& rng) {
  auto s = std::make_shared<Sequential>();
  s->add(std::make_shared<Conv2d>(in, out, k, Conv2dOptions{stride, k / 2, 1, false}, rng));
  s->add(std::make_shared<BatchNorm2d>(out));
  if (relu) s->add(std::make_shared<ReLU>());
  return s;
}

}  // namespace qatlab::test
