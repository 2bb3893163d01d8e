// grad_utils.h: whole-model gradient checks applied between backward() and the optimizer step.
#pragma once

#include <vector>

#include "nn/optim.h"

namespace qatlab {

// The global L2 norm of all gradients, accumulated in double. Parameters without a gradient count as
// zero. The result is the same for any thread count: each tensor is summed in fixed-size blocks whose
// partial sums are added in order.
double grad_norm(const std::vector<ParamRef>& params);

// Scales every gradient by max_norm / norm when the global norm exceeds max_norm (> 0), so the norm
// afterwards is max_norm; smaller gradients are left untouched. Returns the norm before clipping. A
// non-finite norm (an inf or NaN gradient) is returned as is and the gradients are left untouched, so
// the caller can see it and skip the step.
float clip_grad_norm(const std::vector<ParamRef>& params, float max_norm);

// False if any gradient element is inf or NaN. Parameters without a gradient are fine.
bool grads_finite(const std::vector<ParamRef>& params);

}  // namespace qatlab
