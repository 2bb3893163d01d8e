// ops.h: every differentiable op of the autograd engine. Each op computes its forward result and, in
// the same function, records the closure that computes its inputs' gradients (see tensor.h).
//
// Shape letters: N batch, C channels, H height, W width, OC output channels, K kernel size,
// IN / OUT features of a linear map.
//
// Shapes and settings are checked when an op is called; a mismatch throws std::invalid_argument whose
// message names the shapes involved.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

namespace qatlab {

// ------------------------------------------------------------------------------- elementwise, binary
// Broadcasting follows NumPy: shapes are aligned at the trailing dimension and a dimension of size 1
// (or a missing leading one) is stretched. The gradient of a stretched input is summed back to its shape.
Shape broadcast_shapes(const Shape& a, const Shape& b);
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// relu(add(a, b)) in one pass, a and b of one shape (a residual block's end): the same values and
// gradients bit for bit, without the sum as a tensor of its own (one write and two reads fewer of a
// whole activation forward, and as many backward).
Tensor add_relu(const Tensor& a, const Tensor& b);

// ------------------------------------------------------------------------------- elementwise, unary
Tensor scale(const Tensor& x, float s);         // x * s
Tensor add_scalar(const Tensor& x, float s);    // x + s
Tensor neg(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor clamp(const Tensor& x, float lo, float hi);  // gradient 1 strictly inside (lo, hi), else 0
Tensor relu6(const Tensor& x);                      // clamp(x, 0, 6)
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sqrt(const Tensor& x);  // requires x > 0 where the gradient is taken
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);

// ---------------------------------------------------------------------------------- linear algebra
Tensor matmul(const Tensor& a, const Tensor& b);  // (M, K) x (K, N) -> (M, N)
// y = x w^T + b. x (N, IN), w (OUT, IN), b (OUT) or undefined -> y (N, OUT).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

struct Conv2dParams {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t groups = 1;
};
// Output spatial size of a convolution or pooling window along one axis.
int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad);
// x (N, C, H, W), w (OC, C/groups, KH, KW), b (OC) or undefined -> (N, OC, OH, OW).
// Shifted-tap kernels (ops_conv.cpp) on the CPU's widest float path. groups == C == OC is depthwise.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p);

// --------------------------------------------------------------------------------------- pooling
// x (N, C, H, W). Padding of max pooling never wins; average pooling divides by the whole window
// (padding counts as zeros, count_include_pad as in PyTorch's default).
Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad = 0);
Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad = 0);
Tensor global_avg_pool2d(const Tensor& x);  // (N, C, H, W) -> (N, C)

// ----------------------------------------------------------------------------------- normalisation
// Batch normalisation over all axes but axis 1: x (N, C) or (N, C, H, W); gamma, beta (C).
// In training, normalises with the batch statistics and updates running_mean/running_var in place
// (running = (1 - momentum) * running + momentum * batch, the variance unbiased) without recording
// history; in evaluation, normalises with the running statistics.
Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                  Tensor& running_var, bool training, float momentum, float eps);
// batch_norm(x * k) for a per-channel scale k (C), nonzero, without forming x * k: one pass and its
// backward fewer. The running statistics are those of x * k. QAT's conv + BN computes
// BN(conv(x, q(W sf)) / sf) this way, with k = 1 / sf.
// relu = true: relu(batch_norm_scaled(...)) in one op, the same values and gradients bit for bit.
Tensor batch_norm_scaled(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, bool training, float momentum, float eps,
                         bool relu = false);
// A per-tensor grid an op puts its output on (fake quantization: quant/qat/fake_quantize.h has the
// arithmetic): y -> scale * clamp(nearbyint(y * inv_scale), quant_min - zero_point, quant_max - zero_point),
// inv_scale = 1.0f / scale; the gradient passes where relu's output is > 0 (if any) and the unclamped
// code lies inside the grid.
struct OutputGrid {
  float scale = 1.0f, inv_scale = 1.0f;
  int32_t zero_point = 0, quant_min = 0, quant_max = 0;
};
// Given the exact range [lo, hi] of the values an op is about to output, the grid to put them on (an
// observer folds the range in), or nothing to leave them as they are.
using OutputGridFn = std::function<std::optional<OutputGrid>(float lo, float hi)>;
// Training-mode batch_norm_scaled (relu or not) followed by fake quantization in the same pass: grid is
// asked once the batch statistics are known; if it gives a grid, the op returns the quantized values,
// sets *quantized, and its backward applies both straight-through masks where dy is read, bit for bit
// the values and gradients of the ops in turn, two passes over the activations fewer forward and one
// backward. Otherwise *quantized is false and the result is batch_norm_scaled's.
Tensor batch_norm_scaled_quantized(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                                   Tensor& running_mean, Tensor& running_var, float momentum, float eps, bool relu,
                                   const OutputGridFn& grid, bool* quantized);
// A learned step size on a per-tensor grid (LSQ, quant/qat/learnable_quantizer.h): the (1) parameter, the
// grid it gives (grid.scale its value) and the factor its gradient is scaled by.
struct LsqStep {
  Tensor step;
  OutputGrid grid;
  float grad_scale = 1.0f;
};
// Training-mode batch_norm_scaled (relu or not) followed by LSQ's fake quantization on lsq.grid, in one
// op: returns the quantized values; the backward applies relu's and the quantizer's straight-through
// masks where dy is read and adds LSQ's step gradient (lsq_step_gradient's sum, times grad_scale) to
// lsq.step, recomputing the quantizer's inputs from x. Values and gradients are bit for bit those of
// batch_norm_scaled and lsq_fake_quantize in turn, with one pass fewer forward and two backward (no
// quantizer input kept, no gradient buffer between the two).
Tensor batch_norm_scaled_lsq(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, float momentum, float eps, bool relu,
                             const LsqStep& lsq);
// The residual sum a + b (relu'd with `relu`) fake-quantized by a learned step (LSQ) on lsq.grid, with
// output values the caller computes (`values`, a's shape: the QAT simulation's integer add, whose codes
// replace the rounded float sum's): returns `values` with the backward of add (or add_relu) and
// lsq_fake_quantize in turn, bit for bit, the sum recomputed from a and b: no tensor for the sum, no
// gradient buffer between the two, and none of their passes.
Tensor add_lsq(const Tensor& a, const Tensor& b, bool relu, const LsqStep& lsq, const Tensor& values);
// The same for a grid that is not learned (an observer's: min/max, EMA): returns `values` with the
// backward of add (or add_relu) and fake_quantize on `grid` in turn, bit for bit, the sum recomputed
// from a and b.
Tensor add_quantized(const Tensor& a, const Tensor& b, bool relu, const OutputGrid& grid, const Tensor& values);
// The range [*lo, *hi] of a + b (relu'd with `relu`) as add (add_relu) computes the sum, without making
// it: what an observer of the sum would see. False, and no range, if a sum is NaN or infinite.
bool sum_range(const Tensor& a, const Tensor& b, bool relu, float* lo, float* hi);
// LSQ's backward (quant/qat/learnable_quantizer.h has the formula) over `count` values v of one grid
// (inv = 1 / scale, codes clamped to [lo, hi]): gx gets dy where the code is inside (assigned if
// `fresh`, else added; gx may be null); returns sum(dy * dq/ds) / s, in 16 float lanes added up in
// double.
// odd: the codes of a mid-rise grid, r the odd integer nearest v (core/round_odd.h) instead of nearbyint(v).
double lsq_backward_run(const float* v, const float* dy, float* gx, bool fresh, int64_t count, float inv, float lo,
                        float hi, bool odd = false);
// The same over v seen as (N, C, S): lsq_backward_run per plane, the planes' sums added per channel over
// the images, then over the channels, in order; the order batch_norm_scaled_lsq adds its terms in.
double lsq_backward_planes(const float* v, const float* dy, float* gx, bool fresh, int64_t n, int64_t c, int64_t s,
                           float inv, float lo, float hi, bool odd = false);
// relu(batch_norm(...)) in one op (the output clamped in BN's pass, dy masked in its backward): the same
// values and gradients bit for bit, one pass and one gradient buffer fewer.
Tensor batch_norm_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                       Tensor& running_var, bool training, float momentum, float eps);

// -------------------------------------------------------------------------------------- shape ops
// reshape shares the data (storage is contiguous); one dimension may be -1.
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 1);  // (N, C, H, W) -> (N, C*H*W)
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);  // [start, end) along dim
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor transpose2d(const Tensor& x);  // (M, N) -> (N, M)

// -------------------------------------------------------------------------------------- reductions
Tensor sum(const Tensor& x);                                   // -> scalar shape ()
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, int64_t dim, bool keepdim = false);

// ---------------------------------------------------------------------------------------- losses
Tensor log_softmax(const Tensor& x);  // over the last axis of (N, C)
// Mean over the batch of -log p(label). logits (N, C); labels in [0, C). With label smoothing e the
// target is (1 - e) one-hot + e / C uniform.
Tensor cross_entropy(const Tensor& logits, std::span<const int32_t> labels, float label_smoothing = 0.0f);

// ---------------------------------------------------------------------------------------- dropout
// In training, zeroes each element with probability p and scales the rest by 1 / (1 - p); the mask
// comes from rng. In evaluation (or p == 0), returns x unchanged.
Tensor dropout(const Tensor& x, float p, bool training, Rng& rng);

}  // namespace qatlab
