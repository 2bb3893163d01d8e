// residual.h: a residual connection y = act(body(x) + shortcut(x)), the building block of ResNets.
//
// Children: "body" and "shortcut" (each a Sequential, or Identity for a plain skip) and "act" (ReLU or
// Identity). Keeping them as named children lets prepare_qat rewrite each branch like any other
// Sequential and quantize the sum.
#pragma once

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/module.h"

namespace qatlab {

class Residual : public Module {
 public:
  // shortcut null means identity.
  Residual(ModulePtr body, ModulePtr shortcut, bool relu_after) : Module("Residual") {
    register_module("body", std::move(body));
    register_module("shortcut", shortcut ? std::move(shortcut) : std::make_shared<Identity>());
    register_module("act", relu_after ? ModulePtr(std::make_shared<ReLU>()) : ModulePtr(std::make_shared<Identity>()));
  }
  Tensor forward(const Tensor& x) override {
    const Tensor body = (*child("body"))(x), shortcut = (*child("shortcut"))(x);
    // A ReLU after the sum runs fused with it (the same values and gradients, one pass fewer).
    if (child("act")->is<ReLU>() && body.shape() == shortcut.shape()) return add_relu(body, shortcut);
    return (*child("act"))(add(body, shortcut));
  }
};

}  // namespace qatlab
