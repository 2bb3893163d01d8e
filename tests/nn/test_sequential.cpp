// test_sequential.cpp: a Sequential runs BatchNorm + ReLU as one fused op, and that gives exactly what
// the two modules give run one after the other: outputs, running statistics and every gradient.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/conv2d.h"
#include "nn/zoo.h"

namespace qatlab {
namespace {

// The children of `seq` one by one, each through its own forward: no fusion.
Tensor run_unfused(const Module& seq, const Tensor& x) {
  Tensor h = x;
  for (const auto& [name, m] : seq.children()) h = m->forward(h);
  return h;
}

TEST(Sequential, FusedBatchNormReluEqualsTheModulesInTurn) {
  for (bool training : {true, false}) {
    std::vector<float> out[2], grads[2], stats[2];
    for (int fused = 0; fused < 2; ++fused) {
      Rng rng(5);
      const ModulePtr model = make_model("lenet5", ModelSpec{}, rng);  // conv + BN + ReLU twice, fc + ReLU
      model->set_training(training);
      Tensor x = Tensor::empty({4, 1, 28, 28});
      Rng data(9);
      for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = data.normal();
      const auto& features = *model->submodule("features");
      Tensor y = fused ? (*model)(x) : run_unfused(*model->child("classifier"),
                                                   reshape(run_unfused(features, x), {4, -1}));
      Tensor loss = sum(mul(y, y));
      loss.backward();
      out[fused] = y.to_vector();
      for (const Tensor& p : model->parameters()) {
        const std::vector<float> g = p.grad().to_vector();
        grads[fused].insert(grads[fused].end(), g.begin(), g.end());
      }
      for (const auto& [name, b] : model->named_buffers()) {
        const std::vector<float> v = b.to_vector();
        stats[fused].insert(stats[fused].end(), v.begin(), v.end());
      }
    }
    EXPECT_EQ(out[0], out[1]) << "training " << training;
    EXPECT_EQ(grads[0], grads[1]) << "training " << training;
    EXPECT_EQ(stats[0], stats[1]) << "training " << training;
  }
}

TEST(Sequential, OnlyABatchNormFollowedByAReluIsFused) {
  EXPECT_TRUE(BatchNorm2d(3).fuses_relu());
  EXPECT_TRUE(ReLU().is_relu());
  EXPECT_FALSE(ReLU6().is_relu());
  EXPECT_FALSE(ReLU().fuses_relu());
}

}  // namespace
}  // namespace qatlab
