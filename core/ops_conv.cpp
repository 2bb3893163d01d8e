// ops_conv.cpp: 2-d convolution (im2col + Eigen GEMM per image and group, images over OpenMP threads).
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, CG = C / G and OCG = OC / G channels per group, K = CG * KH * KW.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <vector>

#include "core/ops.h"

namespace qatlab {

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMatrix = Eigen::Map<RowMatrix>;
using ConstMapMatrix = Eigen::Map<const RowMatrix>;

struct ConvGeometry {
  int64_t n, c, h, w, oc, kh, kw, oh, ow, groups, cg, ocg, k;
  int64_t sh, sw, ph, pw;
  // A 1x1 kernel with stride 1 and no padding reads the input as its own column matrix.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

ConvGeometry conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  check_arg(x.dim() == 4, "conv2d: input must be (N, C, H, W), got " + shape_str(x.shape()));
  check_arg(weight.dim() == 4, "conv2d: weight must be (OC, C/groups, KH, KW), got " + shape_str(weight.shape()));
  check_arg(p.groups >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
            "conv2d: groups and strides must be >= 1 and padding >= 0");
  ConvGeometry g{};
  g.n = x.size(0), g.c = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.oc = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
  g.groups = p.groups;
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w;
  check_arg(g.c % g.groups == 0 && g.oc % g.groups == 0,
            "conv2d: channels " + std::to_string(g.c) + " -> " + std::to_string(g.oc) + " not divisible by groups " +
                std::to_string(g.groups));
  g.cg = g.c / g.groups;
  g.ocg = g.oc / g.groups;
  check_arg(weight.size(1) == g.cg, "conv2d: weight " + shape_str(weight.shape()) + " does not fit input " +
                                        shape_str(x.shape()) + " with groups " + std::to_string(g.groups));
  check_arg(!bias.defined() || bias.shape() == Shape{g.oc},
            "conv2d: bias must be (" + std::to_string(g.oc) + "), got " + (bias.defined() ? shape_str(bias.shape()) : ""));
  g.oh = conv_out_size(g.h, g.kh, g.sh, g.ph);
  g.ow = conv_out_size(g.w, g.kw, g.sw, g.pw);
  check_arg(g.oh > 0 && g.ow > 0, "conv2d: kernel " + shape_str(weight.shape()) + " larger than padded input " +
                                      shape_str(x.shape()));
  g.k = g.cg * g.kh * g.kw;
  return g;
}

// col (K, OH*OW) <- the receptive fields of one group of one image; x_g (CG, H, W).
void im2col(const float* x_g, const ConvGeometry& g, float* col) {
  const int64_t ohw = g.oh * g.ow;
  for (int64_t c = 0; c < g.cg; ++c) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        float* row = col + ((c * g.kh + ki) * g.kw + kj) * ohw;
        const float* plane = x_g + c * g.h * g.w;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki;
          float* out = row + oy * g.ow;
          if (iy < 0 || iy >= g.h) {
            std::fill(out, out + g.ow, 0.0f);
            continue;
          }
          const float* in = plane + iy * g.w;
          if (g.sw == 1) {
            // Contiguous run: zeros where the window hangs over the left/right border, a copy between.
            const int64_t shift = kj - g.pw;  // ix = ox + shift
            const int64_t lo = std::clamp<int64_t>(-shift, 0, g.ow);
            const int64_t hi = std::clamp<int64_t>(g.w - shift, lo, g.ow);
            std::fill(out, out + lo, 0.0f);
            std::memcpy(out + lo, in + lo + shift, sizeof(float) * (hi - lo));
            std::fill(out + hi, out + g.ow, 0.0f);
          } else {
            for (int64_t ox = 0; ox < g.ow; ++ox) {
              const int64_t ix = ox * g.sw - g.pw + kj;
              out[ox] = (ix >= 0 && ix < g.w) ? in[ix] : 0.0f;
            }
          }
        }
      }
    }
  }
}

// dx_g (CG, H, W) += the column gradients scattered back to the pixels they were read from.
void col2im_add(const float* col, const ConvGeometry& g, float* dx_g) {
  const int64_t ohw = g.oh * g.ow;
  for (int64_t c = 0; c < g.cg; ++c) {
    for (int64_t ki = 0; ki < g.kh; ++ki) {
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float* row = col + ((c * g.kh + ki) * g.kw + kj) * ohw;
        float* plane = dx_g + c * g.h * g.w;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ki;
          if (iy < 0 || iy >= g.h) continue;
          const float* in = row + oy * g.ow;
          float* out = plane + iy * g.w;
          if (g.sw == 1) {
            const int64_t shift = kj - g.pw;
            const int64_t lo = std::clamp<int64_t>(-shift, 0, g.ow);
            const int64_t hi = std::clamp<int64_t>(g.w - shift, lo, g.ow);
            for (int64_t ox = lo; ox < hi; ++ox) out[ox + shift] += in[ox];
          } else {
            for (int64_t ox = 0; ox < g.ow; ++ox) {
              const int64_t ix = ox * g.sw - g.pw + kj;
              if (ix >= 0 && ix < g.w) out[ix] += in[ox];
            }
          }
        }
      }
    }
  }
}

}  // namespace

int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
  const ConvGeometry g = conv_geometry(x, weight, bias, p);
  const int64_t ohw = g.oh * g.ow;
  Tensor y = Tensor::empty({g.n, g.oc, g.oh, g.ow});
  const float* xd = x.data();
  const float* wd = weight.data();
  const float* bd = bias.defined() ? bias.data() : nullptr;
  float* yd = y.data();

#pragma omp parallel
  {
    // One column buffer per thread, reused for every image and group it handles.
    std::vector<float> col(g.pointwise() ? 0 : g.k * ohw);  // (K, OH*OW)
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
        const float* cols = x_g;
        if (!g.pointwise()) {
          im2col(x_g, g, col.data());
          cols = col.data();
        }
        MapMatrix out(yd + (n * g.oc + gi * g.ocg) * ohw, g.ocg, ohw);
        out.noalias() = ConstMapMatrix(wd + gi * g.ocg * g.k, g.ocg, g.k) * ConstMapMatrix(cols, g.k, ohw);
        if (bd) out.colwise() += Eigen::Map<const Eigen::VectorXf>(bd + gi * g.ocg, g.ocg);
      }
    }
  }

  record_op(y, "conv2d", {x, weight, bias}, [x, weight, bias, g](const Tensor& gy) mutable {
    const int64_t ohw = g.oh * g.ow;
    const float* xd = x.data();
    const float* wd = weight.data();
    const float* gyd = gy.data();
    float* gx = x.requires_grad() ? x.mutable_grad() : nullptr;
    const bool need_w = weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    const int threads = omp_get_max_threads();
    // Per-thread weight/bias gradient partials, summed in thread order afterwards: deterministic for a
    // given thread count, and no atomics in the loop.
    std::vector<float> gw_part(need_w ? threads * weight.numel() : 0, 0.0f);  // (T, OC, K)
    std::vector<float> gb_part(need_b ? threads * g.oc : 0, 0.0f);            // (T, OC)

#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num();
      std::vector<float> col(g.pointwise() || !need_w ? 0 : g.k * ohw);  // (K, OH*OW)
      std::vector<float> dcol(gx ? g.k * ohw : 0);                         // (K, OH*OW)
#pragma omp for schedule(static)
      for (int64_t n = 0; n < g.n; ++n) {
        for (int64_t gi = 0; gi < g.groups; ++gi) {
          ConstMapMatrix dy(gyd + (n * g.oc + gi * g.ocg) * ohw, g.ocg, ohw);
          const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
          if (need_w) {
            const float* cols = x_g;
            if (!g.pointwise()) {
              im2col(x_g, g, col.data());
              cols = col.data();
            }
            MapMatrix(gw_part.data() + t * weight.numel() + gi * g.ocg * g.k, g.ocg, g.k).noalias() +=
                dy * ConstMapMatrix(cols, g.k, ohw).transpose();
          }
          if (need_b) {
            Eigen::Map<Eigen::VectorXf>(gb_part.data() + t * g.oc + gi * g.ocg, g.ocg) += dy.rowwise().sum();
          }
          if (gx) {
            float* gx_g = gx + (n * g.c + gi * g.cg) * g.h * g.w;
            ConstMapMatrix w_g(wd + gi * g.ocg * g.k, g.ocg, g.k);
            if (g.pointwise()) {
              MapMatrix(gx_g, g.k, ohw).noalias() += w_g.transpose() * dy;
            } else {
              MapMatrix(dcol.data(), g.k, ohw).noalias() = w_g.transpose() * dy;
              col2im_add(dcol.data(), g, gx_g);
            }
          }
        }
      }
    }
    if (need_w) {
      float* gw = weight.mutable_grad();
      for (int t = 0; t < threads; ++t)
        for (int64_t i = 0; i < weight.numel(); ++i) gw[i] += gw_part[t * weight.numel() + i];
    }
    if (need_b) {
      float* gb = bias.mutable_grad();
      for (int t = 0; t < threads; ++t)
        for (int64_t i = 0; i < g.oc; ++i) gb[i] += gb_part[t * g.oc + i];
    }
  });
  return y;
}

}  // namespace qatlab
