// ops_pool.cpp: max, average and global average pooling over (N, C, H, W), parallel over planes.
//
// Shape letters: N batch, C channels, H x W input, OH x OW output, P = N * C planes.
#include <limits>
#include <memory>
#include <vector>

#include "core/ops.h"

namespace qatlab {

namespace {

struct PoolGeometry {
  int64_t planes, h, w, oh, ow, k, s, pad;
};

PoolGeometry pool_geometry(const char* op, const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  QATLAB_CHECK(x.dim() == 4, std::string(op) + ": input must be (N, C, H, W), got " + shape_str(x.shape()));
  QATLAB_CHECK(kernel >= 1 && stride >= 1 && pad >= 0 && 2 * pad <= kernel,
            std::string(op) + ": need kernel >= 1, stride >= 1, 0 <= padding <= kernel/2; got kernel " +
                std::to_string(kernel) + " stride " + std::to_string(stride) + " padding " + std::to_string(pad));
  PoolGeometry g{x.size(0) * x.size(1), x.size(2), x.size(3), 0, 0, kernel, stride, pad};
  g.oh = conv_out_size(g.h, kernel, stride, pad);
  g.ow = conv_out_size(g.w, kernel, stride, pad);
  QATLAB_CHECK(g.oh > 0 && g.ow > 0, std::string(op) + ": window " + std::to_string(kernel) + " larger than input " +
                                      shape_str(x.shape()));
  return g;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  const PoolGeometry g = pool_geometry("max_pool2d", x, kernel, stride, pad);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.oh, g.ow});
  // Where each output's maximum came from (index into its input plane), for the backward pass.
  auto argmax = std::make_shared<std::vector<int32_t>>(y.numel());  // (N, C, OH, OW)
  const float* xd = x.data();
  float* yd = y.data();
  int32_t* am = argmax->data();
  const bool window2 = kernel == 2 && stride == 2 && pad == 0;
#pragma omp parallel for schedule(static) if (y.numel() > 16384)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* in = xd + p * g.h * g.w;
    if (window2) {
      // The common 2x2/2 window without bounds checks; same scan order and tie rule as below.
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const float* r0 = in + 2 * oy * g.w;
        const float* r1 = r0 + g.w;
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          const int64_t ix = 2 * ox;
          float best = r0[ix];
          int64_t where = 2 * oy * g.w + ix;
          if (r0[ix + 1] > best) best = r0[ix + 1], where = 2 * oy * g.w + ix + 1;
          if (r1[ix] > best) best = r1[ix], where = (2 * oy + 1) * g.w + ix;
          if (r1[ix + 1] > best) best = r1[ix + 1], where = (2 * oy + 1) * g.w + ix + 1;
          const int64_t o = (p * g.oh + oy) * g.ow + ox;
          yd[o] = best;
          am[o] = static_cast<int32_t>(where);
        }
      }
      continue;
    }
    for (int64_t oy = 0; oy < g.oh; ++oy) {
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        float best = -std::numeric_limits<float>::infinity();
        int32_t where = -1;
        for (int64_t ky = 0; ky < g.k; ++ky) {
          const int64_t iy = oy * g.s - g.pad + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.k; ++kx) {
            const int64_t ix = ox * g.s - g.pad + kx;
            if (ix < 0 || ix >= g.w) continue;
            const float v = in[iy * g.w + ix];
            // Strictly greater: the first maximum in scan order wins a tie, as in the integer kernel.
            if (v > best || where < 0) {
              best = v;
              where = static_cast<int32_t>(iy * g.w + ix);
            }
          }
        }
        const int64_t o = (p * g.oh + oy) * g.ow + ox;
        yd[o] = best;
        am[o] = where;
      }
    }
  }
  record_op(y, "max_pool2d", {x}, [x, argmax, g](const Tensor& gy) mutable {
    float* gx = x.mutable_grad();
    const float* gyd = gy.data();
    const int32_t* am = argmax->data();
#pragma omp parallel for schedule(static) if (gy.numel() > 16384)
    for (int64_t p = 0; p < g.planes; ++p) {
      float* plane = gx + p * g.h * g.w;
      const int64_t base = p * g.oh * g.ow;
      for (int64_t o = 0; o < g.oh * g.ow; ++o) plane[am[base + o]] += gyd[base + o];
    }
  });
  return y;
}

Tensor avg_pool2d(const Tensor& x, int64_t kernel, int64_t stride, int64_t pad) {
  const PoolGeometry g = pool_geometry("avg_pool2d", x, kernel, stride, pad);
  Tensor y = Tensor::empty({x.size(0), x.size(1), g.oh, g.ow});
  const float inv_area = 1.0f / static_cast<float>(g.k * g.k);  // padding counts as zeros
  const float* xd = x.data();
  float* yd = y.data();
#pragma omp parallel for schedule(static) if (y.numel() > 16384)
  for (int64_t p = 0; p < g.planes; ++p) {
    const float* in = xd + p * g.h * g.w;
    for (int64_t oy = 0; oy < g.oh; ++oy) {
      for (int64_t ox = 0; ox < g.ow; ++ox) {
        float acc = 0.0f;
        for (int64_t ky = 0; ky < g.k; ++ky) {
          const int64_t iy = oy * g.s - g.pad + ky;
          if (iy < 0 || iy >= g.h) continue;
          for (int64_t kx = 0; kx < g.k; ++kx) {
            const int64_t ix = ox * g.s - g.pad + kx;
            if (ix >= 0 && ix < g.w) acc += in[iy * g.w + ix];
          }
        }
        yd[(p * g.oh + oy) * g.ow + ox] = acc * inv_area;
      }
    }
  }
  record_op(y, "avg_pool2d", {x}, [x, g, inv_area](const Tensor& gy) mutable {
    float* gx = x.mutable_grad();
    const float* gyd = gy.data();
#pragma omp parallel for schedule(static) if (gy.numel() > 16384)
    for (int64_t p = 0; p < g.planes; ++p) {
      float* plane = gx + p * g.h * g.w;
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          const float d = gyd[(p * g.oh + oy) * g.ow + ox] * inv_area;
          for (int64_t ky = 0; ky < g.k; ++ky) {
            const int64_t iy = oy * g.s - g.pad + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int64_t kx = 0; kx < g.k; ++kx) {
              const int64_t ix = ox * g.s - g.pad + kx;
              if (ix >= 0 && ix < g.w) plane[iy * g.w + ix] += d;
            }
          }
        }
      }
    }
  });
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  QATLAB_CHECK(x.dim() == 4, "global_avg_pool2d: input must be (N, C, H, W), got " + shape_str(x.shape()));
  const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
  QATLAB_CHECK(hw > 0, "global_avg_pool2d: empty spatial size in " + shape_str(x.shape()));
  Tensor y = Tensor::empty({x.size(0), x.size(1)});  // (N, C)
  const float* xd = x.data();
  float* yd = y.data();
  for (int64_t p = 0; p < planes; ++p) {
    float acc = 0.0f;
    for (int64_t i = 0; i < hw; ++i) acc += xd[p * hw + i];
    yd[p] = acc / static_cast<float>(hw);
  }
  record_op(y, "global_avg_pool2d", {x}, [x, planes, hw](const Tensor& gy) mutable {
    float* gx = x.mutable_grad();
    const float* gyd = gy.data();
    for (int64_t p = 0; p < planes; ++p) {
      const float d = gyd[p] / static_cast<float>(hw);
      for (int64_t i = 0; i < hw; ++i) gx[p * hw + i] += d;
    }
  });
  return y;
}

}  // namespace qatlab
