// ops_norm.cpp: batch normalisation over (N, C) or (N, C, H, W), one fused op with its own backward.
//
// Shape letters: N batch, C channels, S = H * W positions per channel and image (1 for (N, C)),
// M = N * S values per channel.
#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "core/lsq_run.h"
#include "core/ops.h"

namespace qatlab {
namespace {

// Which values of dy pass to batch norm's input: all (NoMask), those where relu's output is > 0
// (ReluMask: relu's backward applied where dy is read, not in a pass of its own), or those a fused
// output stage marked (ByteMask: relu's and the fake-quantizer's straight-through masks in one byte).
struct NoMask {
  bool operator()(int64_t) const { return true; }
};
struct ReluMask {
  const float* out;
  bool operator()(int64_t j) const { return out[j] > 0.0f; }
};
struct ByteMask {
  const uint8_t* m;
  bool operator()(int64_t j) const { return m[j] != 0; }
};

// One plane of the fused output stage: y = x * a + b (relu'd), fake-quantized on the grid (lo, hi the
// clamp bounds qmin - zp, qmax - zp), with fake_quantize's own expressions (quant/qat/fake_quantize.cpp),
// and the byte masks where dy will pass (relu's output > 0, the unclamped code inside the grid). The
// masks are products of 0/1 floats, not bools, and the pointers restrict: so the loop vectorises.
template <bool kRelu>
void quantize_plane(const float* __restrict x, float* __restrict y, uint8_t* __restrict pass, int64_t s, float a,
                    float b, float inv_scale, float scale, float lo, float hi) {
#pragma omp simd
  for (int64_t j = 0; j < s; ++j) {
    float v = x[j] * a + b;
    if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;  // relu's own expression
    float r = std::nearbyint(v * inv_scale);
    float on = (r >= lo ? 1.0f : 0.0f) * (r <= hi ? 1.0f : 0.0f);
    if constexpr (kRelu) on *= v > 0.0f ? 1.0f : 0.0f;
    pass[j] = static_cast<uint8_t>(on);
    r = r < lo ? lo : r;
    r = hi < r ? hi : r;
    r = r == r ? r + 0.0f : 0.0f;
    y[j] = scale * r;
  }
}

// The quantizer's input as batch norm wrote it, x * a + b (relu'd): the same expression, so the same
// bits (this file is compiled without contracting it into a fused multiply-add).
template <bool kRelu>
struct BatchNormOutput {
  const float* x;
  float a, b;
  float operator()(int64_t j) const {
    float v = x[j] * a + b;
    if constexpr (kRelu) v = v > 0.0f ? v : 0.0f;
    return v;
  }
};

// One plane of batch norm's input gradient, g = k * (d - mean_dy - (x - mu) * is * mean_dy_xhat) with
// d = dy where the mask passes: assigned to a fresh buffer or added. A loop per mask type (a template),
// so each compiles to straight vector code.
struct InputGradRow {
  const float* x;
  const float* dy;
  float* g;
  int64_t s;
  float k, mu, is, mean_dy, mean_dy_xhat;
  template <class Mask>
  void run(Mask pass, bool fresh) const {
    // dy loaded unconditionally: a load under the mask's condition keeps the loop scalar.
    const auto masked = [&](int64_t j) {
      const float v = dy[j];
      return pass(j) ? v : 0.0f;
    };
    if (fresh) {
#pragma omp simd
      for (int64_t j = 0; j < s; ++j) g[j] = k * (masked(j) - mean_dy - (x[j] - mu) * is * mean_dy_xhat);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < s; ++j) g[j] += k * (masked(j) - mean_dy - (x[j] - mu) * is * mean_dy_xhat);
    }
  }
};

// Over one plane of S values: sum(d) and sum(d * (x - mu)), d = dy where `pass` and 0 elsewhere. The
// same loop sums for every mask, in 16 lanes added in order at the end, so that a fused op and the
// modules in turn agree bit for bit. `omp simd` asks for the lanes as one vector: left to itself the
// compiler vectorised some masks' loops and not others'.
struct PlaneSums {
  float dy = 0.0f, dy_x = 0.0f;
};
template <class Mask>
PlaneSums plane_sums(const float* dy, Mask pass, const float* x, float mu, int64_t s) {
  constexpr int kLanes = 16;
  float a[kLanes] = {}, b[kLanes] = {};
  int64_t j = 0;
  // dy is loaded whether it passes or not: a load under the condition keeps the loop scalar.
  for (; j + kLanes <= s; j += kLanes)
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const float v = dy[j + l];
      const float d = pass(j + l) ? v : 0.0f;
      a[l] += d;
      b[l] += d * (x[j + l] - mu);
    }
  for (int l = 0; j < s; ++j, ++l) {
    const float v = dy[j];
    const float d = pass(j) ? v : 0.0f;
    a[l] += d;
    b[l] += d * (x[j] - mu);
  }
  PlaneSums r;
  for (int l = 0; l < kLanes; ++l) r.dy += a[l], r.dy_x += b[l];
  return r;
}

// batch_norm of z = x * k[ch] (k undefined: k = 1) without forming z. The statistics of z are those of x
// scaled: mean_z = k mu, var_z = k^2 var; with k = 1 every product by k is exact, so batch_norm itself
// computes bit for bit what it computed before k existed.
// relu: the output goes through max(., 0) in the same pass, and the backward masks dy by it first: the
// values and gradients of relu(batch_norm(...)) bit for bit, without relu's own pass, gradient buffer
// and backward pass.
// grid (training only, may be null): asked, once the statistics are known, for the grid to put the
// output on, given the output's exact range; if it gives one, the output is fake-quantized in the same
// pass and *quantized set (see batch_norm_scaled_quantized in ops.h).
Tensor batch_norm_impl(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                       Tensor& running_var, bool training, float momentum, float eps, bool relu,
                       const OutputGridFn* grid = nullptr, bool* quantized = nullptr, const LsqStep* lsq = nullptr) {
  QATLAB_CHECK(x.dim() == 2 || x.dim() == 4, "batch_norm: input must be (N, C) or (N, C, H, W), got " + shape_str(x.shape()));
  const int64_t n = x.size(0), c = x.size(1), s = x.dim() == 4 ? x.size(2) * x.size(3) : 1, m = n * s;
  const Shape per_channel{c};
  QATLAB_CHECK(gamma.shape() == per_channel && beta.shape() == per_channel && running_mean.shape() == per_channel &&
                running_var.shape() == per_channel,
            "batch_norm: gamma, beta and running statistics must be (" + std::to_string(c) + ") for input " +
                shape_str(x.shape()));
  QATLAB_CHECK(eps > 0.0f && momentum >= 0.0f && momentum <= 1.0f, "batch_norm: need eps > 0 and momentum in [0, 1]");
  QATLAB_CHECK(!training || m > 1, "batch_norm: training needs more than one value per channel, got input " +
                                    shape_str(x.shape()));
  QATLAB_CHECK(!k.defined() || k.shape() == per_channel,
               "batch_norm_scaled: the scale must be (" + std::to_string(c) + ") for input " + shape_str(x.shape()));
  // k as a vector: the scale per channel, all ones without one.
  auto scale = std::make_shared<std::vector<float>>(c, 1.0f);  // (C)
  if (k.defined()) scale->assign(k.data(), k.data() + c);

  // One channel of one image: S contiguous values.
  const auto plane = [c, s](const float* base, int64_t i, int64_t ch) {
    return Eigen::Map<const Eigen::VectorXf>(base + (i * c + ch) * s, s);
  };
  // Per-channel statistics used for this pass: the batch's in training, the running ones in evaluation.
  // mean is x's (not z's); invstd is z's: 1 / sqrt(var_z + eps).
  auto mean = std::make_shared<std::vector<float>>(c);    // (C)
  auto invstd = std::make_shared<std::vector<float>>(c);  // (C)
  std::vector<float> x_lo(grid ? c : 0), x_hi(grid ? c : 0);  // (C) x's extremes, for the output's range
  const float* xd = x.data();
  if (quantized) *quantized = false;
  if (training) {
    float* rm = running_mean.data();
    float* rv = running_var.data();
#pragma omp parallel for schedule(static) if (x.numel() > 65536)
    for (int64_t ch = 0; ch < c; ++ch) {
      // Two passes (mean, then squared deviations), so the variance of activations with a large mean
      // does not cancel away; vectorised float sums within a plane, double across planes.
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += plane(xd, i, ch).sum();
      if (grid) {
        float lo = plane(xd, 0, ch).minCoeff(), hi = plane(xd, 0, ch).maxCoeff();
        for (int64_t i = 1; i < n; ++i) {
          lo = std::min(lo, plane(xd, i, ch).minCoeff());
          hi = std::max(hi, plane(xd, i, ch).maxCoeff());
        }
        x_lo[ch] = lo, x_hi[ch] = hi;
      }
      const double mu = sum / static_cast<double>(m);
      double sq = 0.0;
      for (int64_t i = 0; i < n; ++i) sq += (plane(xd, i, ch).array() - static_cast<float>(mu)).square().sum();
      const double kc = (*scale)[ch];
      const double var = sq / static_cast<double>(m) * kc * kc;  // of z
      (*mean)[ch] = static_cast<float>(mu);
      (*invstd)[ch] = static_cast<float>(1.0 / std::sqrt(var + eps));
      rm[ch] = (1.0f - momentum) * rm[ch] + momentum * static_cast<float>(mu * kc);
      rv[ch] = (1.0f - momentum) * rv[ch] + momentum * static_cast<float>(var * m / (m - 1));
    }
  } else {
    for (int64_t ch = 0; ch < c; ++ch) {
      (*mean)[ch] = running_mean.data()[ch] / (*scale)[ch];  // the running mean is z's
      (*invstd)[ch] = 1.0f / std::sqrt(running_var.data()[ch] + eps);
    }
  }

  const float* gd = gamma.data();
  const float* bd = beta.data();
  // y = (x - mean) * a + beta = x * a + b per channel.
  std::vector<float> ca(c), cb(c);  // (C)
  for (int64_t ch = 0; ch < c; ++ch) {
    ca[ch] = gd[ch] * (*scale)[ch] * (*invstd)[ch];
    cb[ch] = bd[ch] - (*mean)[ch] * ca[ch];
  }
  // The output grid, asked with the output's range: y is monotone in x on each channel (a product and a
  // sum, each rounded, then relu), so its extremes are those of the channels' extreme x, exactly what a
  // scan of y would find. A non-finite statistic (NaN or Inf in x) leaves the output unquantized: the
  // caller's observer then scans it and reports the bad values.
  std::optional<OutputGrid> q;
  if (grid && training) {
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    bool finite = true;
    for (int64_t ch = 0; ch < c; ++ch) {
      for (const float v0 : {x_lo[ch], x_hi[ch]}) {
        float v = v0 * ca[ch] + cb[ch];
        if (relu) v = v > 0.0f ? v : 0.0f;
        finite = finite && std::isfinite(v) && std::isfinite((*mean)[ch]) && std::isfinite((*invstd)[ch]);
        lo = std::min(lo, v), hi = std::max(hi, v);
      }
    }
    if (finite) q = (*grid)(lo, hi);
  }
  if (lsq) q = lsq->grid;
  if (q && quantized) *quantized = true;

  Tensor y = Tensor::empty(x.shape());
  float* yd = y.data();
  // With a grid: the straight-through masks of relu and of the quantizer, one byte per value.
  // From the tensors' buffer pool (a fresh 2 MB allocation per step page-faulted its way in).
  std::shared_ptr<float[]> pass_buffer = q ? alloc_floats((x.numel() + 3) / 4) : nullptr;
  std::shared_ptr<uint8_t[]> pass(pass_buffer, reinterpret_cast<uint8_t*>(pass_buffer.get()));
#pragma omp parallel for schedule(static) if (x.numel() > 65536)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t ch = 0; ch < c; ++ch) {
      const float a = ca[ch], b = cb[ch];
      const float* p = xd + (i * c + ch) * s;
      float* out = yd + (i * c + ch) * s;
      if (q) {
        uint8_t* m = pass.get() + (i * c + ch) * s;
        const float lo = static_cast<float>(q->quant_min - q->zero_point);
        const float hi = static_cast<float>(q->quant_max - q->zero_point);
        if (relu)
          quantize_plane<true>(p, out, m, s, a, b, q->inv_scale, q->scale, lo, hi);
        else
          quantize_plane<false>(p, out, m, s, a, b, q->inv_scale, q->scale, lo, hi);
      } else if (relu) {
        for (int64_t j = 0; j < s; ++j) {
          const float v = p[j] * a + b;
          out[j] = v > 0.0f ? v : 0.0f;  // relu's own expression
        }
      } else {
        for (int64_t j = 0; j < s; ++j) out[j] = p[j] * a + b;
      }
    }
  }
  // The closure keeps y's values for the relu mask, not y itself (y owns the closure); with a grid, the
  // byte masks instead.
  std::shared_ptr<float[]> y_values = relu && !q ? y.impl()->data : nullptr;

  const char* name = lsq ? (relu ? "batch_norm_scaled_relu_lsq" : "batch_norm_scaled_lsq")
                   : q ? (relu ? "batch_norm_scaled_relu_fq" : "batch_norm_scaled_fq")
                      : k.defined() ? (relu ? "batch_norm_scaled_relu" : "batch_norm_scaled")
                                    : (relu ? "batch_norm_relu" : "batch_norm");
  // LSQ's step gradient recomputes the quantizer's inputs from x with the forward's a and b.
  std::optional<LsqStep> step;
  if (lsq) step = *lsq;
  record_op(y, name, {x, k, gamma, beta, lsq ? lsq->step : Tensor()},
            [x, k, gamma, beta, scale, mean, invstd, training, eps, n, c, s, m, y_values, pass, step, relu, ca,
             cb](const Tensor& gy) mutable {
    const float* xd = x.data();
    const float* gyd = gy.data();
    // relu's backward, dy where the output is > 0 and else 0, is applied where dy is read (no masked
    // copy): the same values, summed in the same order.
    const float* yv = y_values.get();
    const float* gd = gamma.data();
    bool gx_fresh = false;  // every element of gx is written below: assign to a fresh buffer
    float* gx = x.requires_grad() ? x.grad_for_write(&gx_fresh) : nullptr;
    float* ggamma = gamma.requires_grad() ? gamma.mutable_grad() : nullptr;
    float* gbeta = beta.requires_grad() ? beta.mutable_grad() : nullptr;
    float* gk = k.defined() && k.requires_grad() ? k.mutable_grad() : nullptr;
    const bool step_grad = step && step->step.requires_grad();
    std::vector<double> step_sums(step_grad ? c : 0, 0.0);  // (C) LSQ's step gradient per channel
#pragma omp parallel for schedule(static) if (x.numel() > 65536)
    for (int64_t ch = 0; ch < c; ++ch) {

      // xhat = (z - mean_z) * invstd = (x - mu) * is with is = k * invstd.
      const float kc = (*scale)[ch], mu = (*mean)[ch], is = kc * (*invstd)[ch];
      // sum(dy) and sum(dy * xhat) over the channel's M values.
      double sum_dy = 0.0, sum_dy_xhat = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t at = (i * c + ch) * s;
        const PlaneSums p = pass ? plane_sums(gyd + at, ByteMask{pass.get() + at}, xd + at, mu, s)
                            : yv   ? plane_sums(gyd + at, ReluMask{yv + at}, xd + at, mu, s)
                                   : plane_sums(gyd + at, NoMask{}, xd + at, mu, s);
        if (step_grad) {  // LSQ's step gradient, while the plane is in L1; added as lsq_backward_planes adds
          const OutputGrid& q = step->grid;
          const float lo = static_cast<float>(q.quant_min - q.zero_point);
          const float hi = static_cast<float>(q.quant_max - q.zero_point);
          step_sums[ch] += relu ? lsq_detail::lsq_run<false, false>(BatchNormOutput<true>{xd + at, ca[ch], cb[ch]}, gyd + at,
                                                         nullptr, s, q.inv_scale, lo, hi)
                                : lsq_detail::lsq_run<false, false>(BatchNormOutput<false>{xd + at, ca[ch], cb[ch]}, gyd + at,
                                                         nullptr, s, q.inv_scale, lo, hi);
        }
        sum_dy += p.dy;
        sum_dy_xhat += p.dy_x * is;
      }
      if (ggamma) ggamma[ch] += static_cast<float>(sum_dy_xhat);
      if (gbeta) gbeta[ch] += static_cast<float>(sum_dy);
      // dL/dk = sum(dz * x): in training only var_z's eps keeps it from vanishing, and it comes to
      // gamma * sum(dy * xhat) * eps * invstd^2 / k (the other terms cancel: BN is scale-invariant).
      if (gk && training)
        gk[ch] += static_cast<float>(gd[ch] * sum_dy_xhat * eps * (*invstd)[ch] * (*invstd)[ch] / kc);
      if (gk && !training) {
        double sum_dy_x = 0.0;  // evaluation: z -> (z - mean_z) * a is affine, dL/dk = sum(dy * a' x)
        for (int64_t i = 0; i < n; ++i) {
          const int64_t at = (i * c + ch) * s;
          sum_dy_x += (yv ? plane_sums(gyd + at, ReluMask{yv + at}, xd + at, 0.0f, s)
                          : plane_sums(gyd + at, NoMask{}, xd + at, 0.0f, s)).dy_x;  // (no grid in evaluation)
        }
        gk[ch] += static_cast<float>(gd[ch] * (*invstd)[ch] * sum_dy_x);
      }
      if (!gx) continue;
      const float k = gd[ch] * is;
      // Training: the statistics depend on x too, which removes the mean of dy and its projection on
      // xhat. Evaluation: the statistics are constants and the map is affine.
      const float mean_dy = training ? static_cast<float>(sum_dy / m) : 0.0f;
      const float mean_dy_xhat = training ? static_cast<float>(sum_dy_xhat / m) : 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float* p = xd + (i * c + ch) * s;
        const float* d = gyd + (i * c + ch) * s;
        float* g = gx + (i * c + ch) * s;
        const InputGradRow row{p, d, g, s, k, mu, is, mean_dy, mean_dy_xhat};
        const int64_t at = (i * c + ch) * s;
        if (pass)
          row.run(ByteMask{pass.get() + at}, gx_fresh);
        else if (yv)
          row.run(ReluMask{yv + at}, gx_fresh);
        else
          row.run(NoMask{}, gx_fresh);
      }
    }
    if (step_grad) {
      double total = 0.0;
      for (const double v : step_sums) total += v;
      step->step.mutable_grad()[0] += static_cast<float>(total * step->grad_scale);
    }
  });
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                  Tensor& running_var, bool training, float momentum, float eps) {
  return batch_norm_impl(x, Tensor(), gamma, beta, running_mean, running_var, training, momentum, eps, false);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& running_mean,
                       Tensor& running_var, bool training, float momentum, float eps) {
  return batch_norm_impl(x, Tensor(), gamma, beta, running_mean, running_var, training, momentum, eps, true);
}

Tensor batch_norm_scaled_quantized(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                                   Tensor& running_mean, Tensor& running_var, float momentum, float eps, bool relu,
                                   const OutputGridFn& grid, bool* quantized) {
  QATLAB_CHECK(k.defined(), "batch_norm_scaled: undefined scale");
  QATLAB_CHECK(quantized != nullptr, "batch_norm_scaled_quantized: null result flag");
  return batch_norm_impl(x, k, gamma, beta, running_mean, running_var, true, momentum, eps, relu, &grid, quantized);
}

Tensor batch_norm_scaled_lsq(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                             Tensor& running_mean, Tensor& running_var, float momentum, float eps, bool relu,
                             const LsqStep& lsq) {
  QATLAB_CHECK(k.defined(), "batch_norm_scaled: undefined scale");
  QATLAB_CHECK(lsq.step.defined() && lsq.step.numel() == 1, "batch_norm_scaled_lsq: the step must be a (1) tensor");
  return batch_norm_impl(x, k, gamma, beta, running_mean, running_var, true, momentum, eps, relu, nullptr, nullptr,
                         &lsq);
}

Tensor batch_norm_scaled(const Tensor& x, const Tensor& k, const Tensor& gamma, const Tensor& beta,
                         Tensor& running_mean, Tensor& running_var, bool training, float momentum, float eps,
                         bool relu) {
  QATLAB_CHECK(k.defined(), "batch_norm_scaled: undefined scale");
  return batch_norm_impl(x, k, gamma, beta, running_mean, running_var, training, momentum, eps, relu);
}

}  // namespace qatlab
