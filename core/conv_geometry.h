// conv_geometry.h: the shape arithmetic of a 2-d convolution, shared by its implementations
// (ops_conv.cpp: im2col + GEMM; ops_conv_taps.cpp: shifted-tap kernels). Internal to core/.
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, CG = C / G and OCG = OC / G channels per group, K = CG * KH * KW.
#pragma once

#include <cstdint>
#include <string>

#include "core/ops.h"

namespace qatlab {

struct ConvGeometry {
  int64_t n, c, h, w, oc, kh, kw, oh, ow, groups, cg, ocg, k;
  int64_t sh, sw, ph, pw;
  // A 1x1 kernel with stride 1 and no padding reads the input as its own column matrix.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

inline ConvGeometry conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dParams& p) {
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

// Below this many multiply-adds a convolution pass runs on one thread: waking the team costs more, and
// on a busy machine a parallel region waits for a descheduled thread's next time slice.
inline constexpr int64_t kParallelMacs = int64_t{1} << 20;

// The shifted-tap kernels take every stride-1 convolution whose padding is at most KH - 1 by KW - 1
// (so that its input gradient is a stride-1 convolution too); ops_conv_taps.cpp.
inline bool taps_convolution(const ConvGeometry& g) {
  return g.sh == 1 && g.sw == 1 && g.ph <= g.kh - 1 && g.pw <= g.kw - 1;
}
Tensor conv2d_taps(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeometry& g);

}  // namespace qatlab
