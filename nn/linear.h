// linear.h: the fully connected layer y = x W^T + b.
#pragma once

#include "core/ops.h"
#include "nn/init.h"
#include "nn/module.h"

namespace qatlab {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng)
      : Module("Linear"), in_features(in_features), out_features(out_features) {
    QATLAB_CHECK(in_features > 0 && out_features > 0, "Linear: feature counts must be positive");
    weight = Tensor::empty({out_features, in_features});  // (OUT, IN)
    init_default(weight, in_features, rng);
    register_parameter("weight", &weight);
    if (bias) {
      this->bias = Tensor::empty({out_features});  // (OUT)
      init_default(this->bias, in_features, rng);
      register_parameter("bias", &this->bias);
    }
  }
  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }
  std::string describe() const override {
    return "in=" + std::to_string(in_features) + ", out=" + std::to_string(out_features) +
           ", bias=" + (bias.defined() ? "true" : "false");
  }

  const int64_t in_features, out_features;
  Tensor weight, bias;  // bias undefined when off
};

}  // namespace qatlab
