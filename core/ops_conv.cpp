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
  QATLAB_CHECK(x.dim() == 4, "conv2d: input must be (N, C, H, W), got " + shape_str(x.shape()));
  QATLAB_CHECK(weight.dim() == 4, "conv2d: weight must be (OC, C/groups, KH, KW), got " + shape_str(weight.shape()));
  QATLAB_CHECK(p.groups >= 1 && p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0,
            "conv2d: groups and strides must be >= 1 and padding >= 0");
  ConvGeometry g{};
  g.n = x.size(0), g.c = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.oc = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
  g.groups = p.groups;
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w;
  QATLAB_CHECK(g.c % g.groups == 0 && g.oc % g.groups == 0,
            "conv2d: channels " + std::to_string(g.c) + " -> " + std::to_string(g.oc) + " not divisible by groups " +
                std::to_string(g.groups));
  g.cg = g.c / g.groups;
  g.ocg = g.oc / g.groups;
  QATLAB_CHECK(weight.size(1) == g.cg, "conv2d: weight " + shape_str(weight.shape()) + " does not fit input " +
                                        shape_str(x.shape()) + " with groups " + std::to_string(g.groups));
  QATLAB_CHECK(!bias.defined() || bias.shape() == Shape{g.oc},
            "conv2d: bias must be (" + std::to_string(g.oc) + "), got " + (bias.defined() ? shape_str(bias.shape()) : ""));
  g.oh = conv_out_size(g.h, g.kh, g.sh, g.ph);
  g.ow = conv_out_size(g.w, g.kw, g.sw, g.pw);
  QATLAB_CHECK(g.oh > 0 && g.ow > 0, "conv2d: kernel " + shape_str(weight.shape()) + " larger than padded input " +
                                      shape_str(x.shape()));
  g.k = g.cg * g.kh * g.kw;
  return g;
}

// The input planes of one group, zero-padded, so that im2col and col2im need no bounds checks.
// xp (CG, HP, WP) with HP = H + 2 PH, WP = W + 2 PW.
int64_t padded_h(const ConvGeometry& g) { return g.h + 2 * g.ph; }
int64_t padded_w(const ConvGeometry& g) { return g.w + 2 * g.pw; }

void pad_planes(const float* __restrict x_g, const ConvGeometry& g, float* __restrict xp) {
  const int64_t hp = padded_h(g), wp = padded_w(g);
  for (int64_t c = 0; c < g.cg; ++c) {
    float* plane = xp + c * hp * wp;
    for (int64_t i = 0; i < g.ph * wp; ++i) plane[i] = 0.0f;
    for (int64_t y = 0; y < g.h; ++y) {
      float* row = plane + (y + g.ph) * wp;
      const float* src = x_g + (c * g.h + y) * g.w;
      for (int64_t i = 0; i < g.pw; ++i) row[i] = 0.0f;
      for (int64_t i = 0; i < g.w; ++i) row[g.pw + i] = src[i];
      for (int64_t i = g.pw + g.w; i < wp; ++i) row[i] = 0.0f;
    }
    for (int64_t i = (g.ph + g.h) * wp; i < hp * wp; ++i) plane[i] = 0.0f;
  }
}

// col (K, OH*OW) <- the receptive fields of padded planes xp (CG, HP, WP). Row (c, ki, kj) of col holds,
// for every output position, the input pixel that kernel tap meets.
void im2col(const float* __restrict xp, const ConvGeometry& g, float* __restrict col) {
  const int64_t hp = padded_h(g), wp = padded_w(g), ohw = g.oh * g.ow;
  for (int64_t c = 0; c < g.cg; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        float* row = col + ((c * g.kh + ki) * g.kw + kj) * ohw;
        const float* tap = xp + (c * hp + ki) * wp + kj;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const float* src = tap + oy * g.sh * wp;
          float* out = row + oy * g.ow;
          if (g.sw == 1)
            for (int64_t ox = 0; ox < g.ow; ++ox) out[ox] = src[ox];
          else
            for (int64_t ox = 0; ox < g.ow; ++ox) out[ox] = src[ox * g.sw];
        }
      }
}

// dxp (CG, HP, WP) += the column gradients scattered back to the pixels they were read from.
void col2im_add(const float* __restrict col, const ConvGeometry& g, float* __restrict dxp) {
  const int64_t hp = padded_h(g), wp = padded_w(g), ohw = g.oh * g.ow;
  for (int64_t c = 0; c < g.cg; ++c)
    for (int64_t ki = 0; ki < g.kh; ++ki)
      for (int64_t kj = 0; kj < g.kw; ++kj) {
        const float* row = col + ((c * g.kh + ki) * g.kw + kj) * ohw;
        float* tap = dxp + (c * hp + ki) * wp + kj;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          float* dst = tap + oy * g.sh * wp;
          const float* in = row + oy * g.ow;
          if (g.sw == 1)
            for (int64_t ox = 0; ox < g.ow; ++ox) dst[ox] += in[ox];
          else
            for (int64_t ox = 0; ox < g.ow; ++ox) dst[ox * g.sw] += in[ox];
        }
      }
}

// dx_g (CG, H, W) += the interior of dxp (CG, HP, WP).
void unpad_add(const float* __restrict dxp, const ConvGeometry& g, float* __restrict dx_g) {
  const int64_t hp = padded_h(g), wp = padded_w(g);
  for (int64_t c = 0; c < g.cg; ++c)
    for (int64_t y = 0; y < g.h; ++y) {
      const float* src = dxp + (c * hp + y + g.ph) * wp + g.pw;
      float* dst = dx_g + (c * g.h + y) * g.w;
      for (int64_t i = 0; i < g.w; ++i) dst[i] += src[i];
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
    // Column and padding buffers per thread, reused for every image and group it handles.
    const bool padded = g.ph > 0 || g.pw > 0;
    std::vector<float> col(g.pointwise() ? 0 : g.k * ohw);                       // (K, OH*OW)
    std::vector<float> xp(padded ? g.cg * padded_h(g) * padded_w(g) : 0);       // (CG, HP, WP)
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
        const float* cols = x_g;
        if (!g.pointwise()) {
          if (padded) pad_planes(x_g, g, xp.data());
          im2col(padded ? xp.data() : x_g, g, col.data());
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
      const bool padded = g.ph > 0 || g.pw > 0;
      const int64_t plane_size = g.cg * padded_h(g) * padded_w(g);
      std::vector<float> col(g.pointwise() || !need_w ? 0 : g.k * ohw);  // (K, OH*OW)
      std::vector<float> dcol(gx ? g.k * ohw : 0);                         // (K, OH*OW)
      std::vector<float> xp(padded && need_w ? plane_size : 0);          // (CG, HP, WP)
      std::vector<float> dxp(padded && gx ? plane_size : 0);             // (CG, HP, WP)
#pragma omp for schedule(static)
      for (int64_t n = 0; n < g.n; ++n) {
        for (int64_t gi = 0; gi < g.groups; ++gi) {
          ConstMapMatrix dy(gyd + (n * g.oc + gi * g.ocg) * ohw, g.ocg, ohw);
          const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
          if (need_w) {
            const float* cols = x_g;
            if (!g.pointwise()) {
              if (padded) pad_planes(x_g, g, xp.data());
              im2col(padded ? xp.data() : x_g, g, col.data());
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
              if (padded) {
                std::fill(dxp.begin(), dxp.end(), 0.0f);
                col2im_add(dcol.data(), g, dxp.data());
                unpad_add(dxp.data(), g, gx_g);
              } else {
                col2im_add(dcol.data(), g, gx_g);
              }
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
