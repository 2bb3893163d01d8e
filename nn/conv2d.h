// conv2d.h: the 2-d convolution layer (stride, padding, groups; depthwise when groups == channels).
#pragma once

#include "core/ops.h"
#include "nn/init.h"
#include "nn/module.h"

namespace qatlab {

struct Conv2dOptions {
  int64_t stride = 1, padding = 0, groups = 1;
  bool bias = true;
};

class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Conv2dOptions opt, Rng& rng)
      : Module("Conv2d"), in_channels(in_channels), out_channels(out_channels), kernel(kernel), options(opt) {
    QATLAB_CHECK(in_channels > 0 && out_channels > 0 && kernel > 0, "Conv2d: channels and kernel must be positive");
    QATLAB_CHECK(opt.groups >= 1 && in_channels % opt.groups == 0 && out_channels % opt.groups == 0,
              "Conv2d: channels " + std::to_string(in_channels) + " -> " + std::to_string(out_channels) +
                  " not divisible by groups " + std::to_string(opt.groups));
    const int64_t fan_in = in_channels / opt.groups * kernel * kernel;
    weight = Tensor::empty({out_channels, in_channels / opt.groups, kernel, kernel});  // (OC, C/G, K, K)
    init_default(weight, fan_in, rng);
    register_parameter("weight", &weight);
    if (opt.bias) {
      bias = Tensor::empty({out_channels});  // (OC)
      init_default(bias, fan_in, rng);
      register_parameter("bias", &bias);
    }
  }
  Conv2dParams params() const { return {options.stride, options.stride, options.padding, options.padding, options.groups}; }
  Tensor forward(const Tensor& x) override { return conv2d(x, weight, bias, params()); }
  std::string describe() const override {
    return std::to_string(in_channels) + "->" + std::to_string(out_channels) + ", k=" + std::to_string(kernel) +
           ", stride=" + std::to_string(options.stride) + ", pad=" + std::to_string(options.padding) +
           (options.groups > 1 ? ", groups=" + std::to_string(options.groups) : "") +
           ", bias=" + (bias.defined() ? "true" : "false");
  }

  const int64_t in_channels, out_channels, kernel;
  const Conv2dOptions options;
  Tensor weight, bias;  // bias undefined when off
};

}  // namespace qatlab
