// ops_conv.cpp: 2-d convolution. Stride-1 convolutions run on the shifted-tap kernels
// (ops_conv_taps.cpp); the others here, as im2col over blocks of output rows + Eigen GEMM, images over
// OpenMP threads. Shape letters: conv_geometry.h.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/conv_geometry.h"
#include "core/ops.h"
#include "core/profiler.h"

namespace qatlab {

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMatrix = Eigen::Map<RowMatrix>;
using ConstMapMatrix = Eigen::Map<const RowMatrix>;
// A block of columns of a row-major matrix: rows keep the full matrix's pitch.
using StridedMapMatrix = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;
using ConstStridedMapMatrix = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;

// The output rows [lo, hi) whose input row oy * SH + dy lies inside [0, H), and likewise the output
// columns whose input column ox * SW + dx lies inside [0, W); the others read padding.
struct Range {
  int64_t lo, hi;
};
Range valid_range(int64_t out, int64_t in, int64_t stride, int64_t d) {
  const int64_t lo = d >= 0 ? 0 : (-d + stride - 1) / stride;
  const int64_t hi = d > in - 1 ? 0 : std::min(out, (in - 1 - d) / stride + 1);
  return {std::min(lo, hi), hi};
}

// True when output and input rows have the same length and follow each other one to one (stride 1,
// "same" padding along W): a kernel tap then reads the input plane shifted by a constant offset, so a
// tap's row of col is one contiguous copy. Every 3x3 stride-1 convolution of a ResNet is this case.
bool shifted_copy(const ConvGeometry& g) { return g.sh == 1 && g.sw == 1 && g.ow == g.w; }

// The column matrices are built for a block of output rows [OY0, OY1) at a time, R = OY1 - OY0, so
// that a block (K, R*OW) stays in a core's L2 cache (512 KiB on the machines we train on) while the
// GEMM packs it. Built for a whole 32x32 image, ResNet-20's first stage needs 576 KiB per column
// matrix, and the copy and the GEMM both went out to L3: blocking made a training step ~9 % faster.
// Block sizes from 192 to 512 KiB measured the same. Blocks are balanced: 11 + 11 + 10 rows there.
int64_t block_rows(const ConvGeometry& g) {
  constexpr int64_t kBlockFloats = int64_t{64} * 1024;  // 256 KiB
  const int64_t rows = std::max<int64_t>(1, kBlockFloats / (g.k * g.ow));
  const int64_t blocks = (g.oh + rows - 1) / rows;
  return (g.oh + blocks - 1) / blocks;
}

// col (K, R*OW) <- the receptive fields of output rows [oy0, oy1) in x_g (CG, H, W). Row (c, ki, kj) of
// col holds, for each of those output positions, the input pixel that kernel tap meets, or 0 where the
// tap falls into the padding. Every element of col is written, so col needs no clearing beforehand.
void im2col(const float* __restrict x_g, const ConvGeometry& g, int64_t oy0, int64_t oy1, float* __restrict col) {
  const int64_t len = (oy1 - oy0) * g.ow;
  // Taps outermost: the valid rows and columns of a tap (integer divisions) are the same for every channel.
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t dy = ki - g.ph;  // input row = oy * SH + dy
    const Range rows_all = valid_range(g.oh, g.h, g.sh, dy);
    const int64_t r_lo = std::clamp(rows_all.lo, oy0, oy1), r_hi = std::clamp(rows_all.hi, r_lo, oy1);
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t dx = kj - g.pw;  // input column = ox * SW + dx
      const Range cols = valid_range(g.ow, g.w, g.sw, dx);
      const bool empty = r_lo == r_hi || cols.lo == cols.hi;
      for (int64_t c = 0; c < g.cg; ++c) {
        const float* plane = x_g + c * g.h * g.w;
        float* row = col + ((c * g.kh + ki) * g.kw + kj) * len;  // (R*OW) for output rows oy0..oy1
        if (empty) {
          std::fill(row, row + len, 0.0f);
          continue;
        }
        std::fill(row, row + (r_lo - oy0) * g.ow, 0.0f);
        std::fill(row + (r_hi - oy0) * g.ow, row + len, 0.0f);
        if (shifted_copy(g)) {
          // One copy from the first valid pixel to the last; the columns it wraps into from the
          // neighbouring input rows are then overwritten with the padding zeros (a strided loop per
          // padding column, not a call per output row).
          const int64_t begin = r_lo * g.ow + cols.lo, end = (r_hi - 1) * g.ow + cols.hi;
          std::memcpy(row + begin - oy0 * g.ow, plane + begin + dy * g.w + dx, sizeof(float) * (end - begin));
          for (int64_t ox = 0; ox < cols.lo; ++ox)
            for (int64_t oy = r_lo; oy < r_hi; ++oy) row[(oy - oy0) * g.ow + ox] = 0.0f;
          for (int64_t ox = cols.hi; ox < g.ow; ++ox)
            for (int64_t oy = r_lo; oy < r_hi; ++oy) row[(oy - oy0) * g.ow + ox] = 0.0f;
          continue;
        }
        for (int64_t oy = r_lo; oy < r_hi; ++oy) {
          float* out = row + (oy - oy0) * g.ow;
          const float* src = plane + (oy * g.sh + dy) * g.w;
          for (int64_t ox = 0; ox < cols.lo; ++ox) out[ox] = 0.0f;
          if (g.sw == 1)
            for (int64_t ox = cols.lo; ox < cols.hi; ++ox) out[ox] = src[ox + dx];
          else
            for (int64_t ox = cols.lo; ox < cols.hi; ++ox) out[ox] = src[ox * g.sw + dx];
          for (int64_t ox = cols.hi; ox < g.ow; ++ox) out[ox] = 0.0f;
        }
      }
    }
  }
}

// dx_g (CG, H, W) += the column gradients col (K, R*OW) of output rows [oy0, oy1), scattered back to
// the pixels they were read from; entries that were read from the padding are dropped.
void col2im_add(const float* __restrict col, const ConvGeometry& g, int64_t oy0, int64_t oy1, float* __restrict dx_g) {
  const int64_t len = (oy1 - oy0) * g.ow;
  for (int64_t ki = 0; ki < g.kh; ++ki) {
    const int64_t dy = ki - g.ph;
    const Range rows_all = valid_range(g.oh, g.h, g.sh, dy);
    const int64_t r_lo = std::clamp(rows_all.lo, oy0, oy1), r_hi = std::clamp(rows_all.hi, r_lo, oy1);
    for (int64_t kj = 0; kj < g.kw; ++kj) {
      const int64_t dx = kj - g.pw;
      const Range cols = valid_range(g.ow, g.w, g.sw, dx);
      for (int64_t c = 0; c < g.cg; ++c) {
        float* plane = dx_g + c * g.h * g.w;
        const float* row = col + ((c * g.kh + ki) * g.kw + kj) * len;
        for (int64_t oy = r_lo; oy < r_hi; ++oy) {
          const float* in = row + (oy - oy0) * g.ow;
          float* dst = plane + (oy * g.sh + dy) * g.w;
          if (g.sw == 1)
            for (int64_t ox = cols.lo; ox < cols.hi; ++ox) dst[ox + dx] += in[ox];
          else
            for (int64_t ox = cols.lo; ox < cols.hi; ++ox) dst[ox * g.sw + dx] += in[ox];
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
  if (taps_convolution(g)) return conv2d_taps(x, weight, bias, g);
  const int64_t ohw = g.oh * g.ow;
  // A pointwise convolution reads the input as its column matrix: one block of all rows.
  const int64_t rows_per_block = g.pointwise() ? g.oh : block_rows(g);
  Tensor y = Tensor::empty({g.n, g.oc, g.oh, g.ow});
  const float* xd = x.data();
  const float* wd = weight.data();
  const float* bd = bias.defined() ? bias.data() : nullptr;
  float* yd = y.data();

#pragma omp parallel if (g.n * g.oc * ohw * g.cg * g.kh * g.kw >= kParallelMacs)
  {
    // One column buffer per thread, reused for every block, image and group it handles.
    // Uninitialised: im2col writes all of it.
    std::shared_ptr<float[]> col = g.pointwise() ? nullptr : alloc_floats(g.k * rows_per_block * g.ow);  // (K, R*OW)
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; ++n) {
      for (int64_t gi = 0; gi < g.groups; ++gi) {
        const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
        ConstMapMatrix w_g(wd + gi * g.ocg * g.k, g.ocg, g.k);
        float* y_g = yd + (n * g.oc + gi * g.ocg) * ohw;
        for (int64_t oy0 = 0; oy0 < g.oh; oy0 += rows_per_block) {
          const int64_t oy1 = std::min(g.oh, oy0 + rows_per_block), len = (oy1 - oy0) * g.ow;
          const float* cols = x_g;
          if (!g.pointwise()) {
            im2col(x_g, g, oy0, oy1, col.get());
            cols = col.get();
          }
          StridedMapMatrix out(y_g + oy0 * g.ow, g.ocg, len, Eigen::OuterStride<>(ohw));  // (OCG, R*OW) of (OCG, OH*OW)
          out.noalias() = w_g * ConstMapMatrix(cols, g.k, len);
        }
        if (bd) MapMatrix(y_g, g.ocg, ohw).colwise() += Eigen::Map<const Eigen::VectorXf>(bd + gi * g.ocg, g.ocg);
      }
    }
  }

  record_op(y, "conv2d", {x, weight, bias}, [x, weight, bias, g, rows_per_block](const Tensor& gy) mutable {
    const int64_t ohw = g.oh * g.ow;
    const float* xd = x.data();
    const float* wd = weight.data();
    const float* gyd = gy.data();
    // The transposed-conv input gradient writes every element of dx exactly once: a fresh buffer is
    // assigned (no zero fill); col2im adds overlapping taps and needs a zeroed one.
    const bool transposable = !g.pointwise() && shifted_copy(g) && g.ph <= g.kh - 1;
    bool gx_fresh = false;
    float* gx = !x.requires_grad() ? nullptr : transposable ? x.grad_for_write(&gx_fresh) : x.mutable_grad();
    const bool need_w = weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    const int threads = g.n * g.oc * ohw * g.cg * g.kh * g.kw >= kParallelMacs ? omp_get_max_threads() : 1;
    // Per-thread weight/bias gradient partials, summed in thread order afterwards: deterministic for a
    // given thread count, and no atomics in the loop.
    std::vector<float> gw_part(need_w ? threads * weight.numel() : 0, 0.0f);  // (T, OC, K)
    std::vector<float> gb_part(need_b ? threads * g.oc : 0, 0.0f);            // (T, OC)

    // The input gradient of a shifted-copy convolution is itself one: dx = conv(dy, W flipped in space,
    // channels swapped), stride 1, padding K - 1 - P. Computed that way it needs no col2im, whose
    // overlapping read-modify-writes of neighbouring taps cost more than the extra im2col of dy.
    const bool transposed = gx && transposable;
    ConvGeometry gt = g;  // the input-gradient convolution: dy (N, OC, OH, OW) -> dx (N, C, H, W)
    std::vector<float> wt;  // (G, CG, OCG * KH * KW): weight flipped and transposed, per group
    int64_t rows_per_block_t = 0;
    if (transposed) {
      gt.c = g.oc, gt.h = g.oh, gt.w = g.ow, gt.oc = g.c, gt.oh = g.h, gt.ow = g.w;
      gt.cg = g.ocg, gt.ocg = g.cg, gt.k = g.ocg * g.kh * g.kw;
      gt.ph = g.kh - 1 - g.ph, gt.pw = g.kw - 1 - g.pw;
      rows_per_block_t = block_rows(gt);
      wt.resize(static_cast<size_t>(weight.numel()));
      for (int64_t gi = 0; gi < g.groups; ++gi)
        for (int64_t c = 0; c < g.cg; ++c)
          for (int64_t oc = 0; oc < g.ocg; ++oc)
            for (int64_t ki = 0; ki < g.kh; ++ki)
              for (int64_t kj = 0; kj < g.kw; ++kj)
                wt[((gi * g.cg + c) * g.ocg + oc) * g.kh * g.kw + ki * g.kw + kj] =
                    wd[((gi * g.ocg + oc) * g.cg + c) * g.kh * g.kw + (g.kh - 1 - ki) * g.kw + (g.kw - 1 - kj)];
    }

    // The weight (and bias) gradient and the input gradient are two passes over the images: they share
    // nothing but dy, and apart they can be timed apart (profiler.h).
    if (need_w || need_b) {
      ProfilePart part("weight_grad");
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num();
        // Scratch per thread, uninitialised: im2col overwrites all of it.
        std::shared_ptr<float[]> col =
            g.pointwise() || !need_w ? nullptr : alloc_floats(g.k * rows_per_block * g.ow);  // (K, R*OW)
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g.n; ++n) {
          for (int64_t gi = 0; gi < g.groups; ++gi) {
            const float* dy_g = gyd + (n * g.oc + gi * g.ocg) * ohw;  // (OCG, OH*OW)
            const float* x_g = xd + (n * g.c + gi * g.cg) * g.h * g.w;
            if (need_b) {
              Eigen::Map<Eigen::VectorXf>(gb_part.data() + t * g.oc + gi * g.ocg, g.ocg) +=
                  ConstMapMatrix(dy_g, g.ocg, ohw).rowwise().sum();
            }
            if (!need_w) continue;
            for (int64_t oy0 = 0; oy0 < g.oh; oy0 += rows_per_block) {
              const int64_t oy1 = std::min(g.oh, oy0 + rows_per_block), len = (oy1 - oy0) * g.ow;
              ConstStridedMapMatrix dy(dy_g + oy0 * g.ow, g.ocg, len, Eigen::OuterStride<>(ohw));  // (OCG, R*OW)
              const float* cols = x_g;
              if (!g.pointwise()) {
                im2col(x_g, g, oy0, oy1, col.get());
                cols = col.get();
              }
              MapMatrix(gw_part.data() + t * weight.numel() + gi * g.ocg * g.k, g.ocg, g.k).noalias() +=
                  dy * ConstMapMatrix(cols, g.k, len).transpose();
            }
          }
        }
      }
    }
    if (gx) {
      ProfilePart part("input_grad");
#pragma omp parallel num_threads(threads)
      {
        // Scratch per thread, uninitialised: the GEMM or im2col overwrites all of it.
        std::shared_ptr<float[]> dcol =
            !g.pointwise() && !transposed ? alloc_floats(g.k * rows_per_block * g.ow) : nullptr;  // (K, R*OW)
        std::shared_ptr<float[]> tcol =
            transposed ? alloc_floats(gt.k * rows_per_block_t * gt.ow) : nullptr;  // (OCG*KH*KW, R*W)
#pragma omp for schedule(static)
        for (int64_t n = 0; n < g.n; ++n) {
          for (int64_t gi = 0; gi < g.groups; ++gi) {
            const float* dy_g = gyd + (n * g.oc + gi * g.ocg) * ohw;  // (OCG, OH*OW)
            float* gx_g = gx + (n * g.c + gi * g.cg) * g.h * g.w;
            if (transposed) {
              ConstMapMatrix wt_g(wt.data() + gi * g.cg * gt.k, g.cg, gt.k);
              for (int64_t iy0 = 0; iy0 < g.h; iy0 += rows_per_block_t) {
                const int64_t iy1 = std::min(g.h, iy0 + rows_per_block_t), len = (iy1 - iy0) * g.w;
                im2col(dy_g, gt, iy0, iy1, tcol.get());
                StridedMapMatrix dx(gx_g + iy0 * g.w, g.cg, len, Eigen::OuterStride<>(g.h * g.w));  // (CG, R*W)
                if (gx_fresh)
                  dx.noalias() = wt_g * ConstMapMatrix(tcol.get(), gt.k, len);
                else
                  dx.noalias() += wt_g * ConstMapMatrix(tcol.get(), gt.k, len);
              }
              continue;
            }
            ConstMapMatrix w_g(wd + gi * g.ocg * g.k, g.ocg, g.k);
            for (int64_t oy0 = 0; oy0 < g.oh; oy0 += rows_per_block) {
              const int64_t oy1 = std::min(g.oh, oy0 + rows_per_block), len = (oy1 - oy0) * g.ow;
              ConstStridedMapMatrix dy(dy_g + oy0 * g.ow, g.ocg, len, Eigen::OuterStride<>(ohw));  // (OCG, R*OW)
              if (g.pointwise()) {
                StridedMapMatrix(gx_g + oy0 * g.ow, g.k, len, Eigen::OuterStride<>(ohw)).noalias() +=
                    w_g.transpose() * dy;
              } else {
                MapMatrix(dcol.get(), g.k, len).noalias() = w_g.transpose() * dy;
                col2im_add(dcol.get(), g, oy0, oy1, gx_g);
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
