// ops_conv.cpp: 2-d convolution on the shifted-tap kernels (core/kernels/conv_taps.h): forward, input
// gradient and weight gradient, on the float path the CPU runs best (cpu_features.h).
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, CG = C / G and OCG = OC / G channels per group.
//
// Every pass reads a stack of padded planes: plane (c, n) holds image n's channel c with `top` zero rows
// above and `left` zero columns before each row, at row pitch P = left + W; planes of one channel follow
// each other image after image, so that a channel's planes for the whole batch are one flat range of
// positions (the weight gradient sums over it in one sweep). A stride-1 convolution's padding is
// symmetric, and the stack stores each zero once: the padding right of a row is the next row's left
// padding, the rows below an image are the next image's top rows (after the last image, the stack's
// tail of zeros). For a 3x3 kernel on 8x8 planes that is 9 x 9 positions per image instead of 10 x 10
// (rounded up to 112), and every pass sweeps fewer of them. A strided convolution splits the padded
// input into its sh * sw phases, each read with stride 1. The forward keeps the input's stack for the
// weight gradient. The input gradient of a stride-1 convolution pads dy the same way and runs the
// forward kernel with the kernel flipped and the channels swapped; with strides it goes phase by phase.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/kernels/conv_taps.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/profiler.h"

namespace qatlab {

namespace {

struct ConvGeometry {
  int64_t n, c, h, w, oc, kh, kw, oh, ow, groups, cg, ocg;
  int64_t sh, sw, ph, pw;
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
  return g;
}

// Below this many multiply-adds a convolution pass runs on one thread: waking the team costs more, and
// on a busy machine a parallel region waits for a descheduled thread's next time slice.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

struct PlaneStack {
  int64_t channels = 0, images = 0;
  int64_t rows = 0, pitch = 0;  // padded plane: rows x pitch
  int64_t plane = 0;            // floats from one image's plane to the next's (pad_planes)
  int64_t channel_pitch = 0;    // floats from one channel's first plane to the next's
  std::shared_ptr<float[]> buffer;
  float* data = nullptr;        // the first plane, inside buffer
  const float* channel(int64_t c) const { return data + c * channel_pitch; }
};

// The distance between channels: their planes, then at least `tail` zeros for the kernels' reads past
// the last plane, then 80 floats more than a multiple of 4 KiB. A kernel reads several channels at the
// same position at once; at a multiple of 2 KiB apart (a batch of 32x32 planes is) those rows all fall
// into the same few L1 cache sets and evict each other: forward tiles ran at half speed. 320 bytes
// apart mod 4 KiB, 12 channels meet 12 different groups of sets.
int64_t channel_pitch_for(int64_t images, int64_t plane, int64_t tail) {
  constexpr int64_t kPage = 1024, kSkew = 80;  // floats
  return (images * plane + tail + kPage - 1) / kPage * kPage + kSkew;
}

// The stack of src (N, C, H, W) padded into rows x pitch planes with the data at (top, left); every
// channel's planes are followed by at least `tail` zeros. Position `aligned` of the first plane is
// 64-byte aligned (a channel pitch is a multiple of 16 floats), and so is every 16th position from it:
// the weight gradient's loads of dy are, and unaligned they cost it 10 %.
//
// Planes are rows x pitch floats each, back to back; for stride 1 the caller chooses rows and pitch so
// that the zeros below and right of the data are the next image's and the next row's (see the top of
// the file). With strides sh x sw the padded image is split into its sh * sw phases, phase (ry, rx)
// holding the padded pixels (i * sh + ry, j * sw + rx) in a plane of its own: slot
// c * sh * sw + ry * sw + rx of the stack. A stride-s convolution reads each phase with stride 1
// (tap_offsets). A kh x kw kernel reads the phases ry < kh, rx < kw only; the others are left zero
// (kh, kw = 0: every phase is read).
PlaneStack pad_planes(const float* src, int64_t n, int64_t c, int64_t h, int64_t w, int64_t top, int64_t left,
                      int64_t rows, int64_t pitch, int64_t tail, int64_t aligned = 0, int64_t sh = 1,
                      int64_t sw = 1, int64_t kh = 0, int64_t kw = 0) {
  const int64_t phases = sh * sw;
  PlaneStack s;
  s.channels = c * phases, s.images = n, s.rows = rows, s.pitch = pitch;
  s.plane = rows * pitch;
  s.channel_pitch = channel_pitch_for(n, s.plane, tail);
  s.buffer = alloc_floats(s.channels * s.channel_pitch + kTapQuantum);  // alloc_floats aligns to 64 bytes
  s.data = s.buffer.get() + (kTapQuantum - aligned % kTapQuantum) % kTapQuantum;
  float* d = s.data;
#pragma omp parallel for schedule(static) if (s.channels * n * s.plane >= kParallelMin)
  for (int64_t i = 0; i < s.channels * n; ++i) {
    const int64_t slot = i / n, ni = i % n, ci = slot / phases, ry = slot % phases / sw, rx = slot % sw;
    const float* in = src + (ni * c + ci) * h * w;
    float* out = d + slot * s.channel_pitch + ni * s.plane;
    if (phases == 1) {
      // Rows are short (34 floats for a 32-wide image): plain loops, not three library calls a row.
      std::fill(out, out + top * pitch, 0.0f);
      for (int64_t y = 0; y < h; ++y) {
        float* __restrict row = out + (top + y) * pitch;
        const float* __restrict src = in + y * w;
        for (int64_t k = 0; k < left; ++k) row[k] = 0.0f;
#pragma omp simd
        for (int64_t k = 0; k < w; ++k) row[left + k] = src[k];
        for (int64_t k = left + w; k < pitch; ++k) row[k] = 0.0f;
      }
      std::fill(out + (top + h) * pitch, out + s.plane, 0.0f);
    } else {
      // Phase (ry, rx): row r, column q hold input pixel (r * sh + ry - top, q * sw + rx - left), which
      // lies inside the image for the columns [q_lo, q_hi). A phase no tap reads (a kernel narrower
      // than the stride, a 1x1 projection's) is zeros only.
      const bool read = (kh == 0 || ry < kh) && (kw == 0 || rx < kw);
      const int64_t x0 = rx - left, last = w - 1 - x0;
      const int64_t q_lo = x0 >= 0 ? 0 : (-x0 + sw - 1) / sw;
      const int64_t q_hi = last < 0 ? 0 : std::min(pitch, last / sw + 1);
      for (int64_t r = 0; r < rows; ++r) {
        float* __restrict row = out + r * pitch;
        const int64_t y = r * sh + ry - top;
        if (!read || y < 0 || y >= h || q_lo >= q_hi) {
          std::fill(row, row + pitch, 0.0f);
          continue;
        }
        const float* __restrict src = in + y * w + x0;
        for (int64_t q = 0; q < q_lo; ++q) row[q] = 0.0f;
#pragma omp simd
        for (int64_t q = q_lo; q < q_hi; ++q) row[q] = src[q * sw];
        for (int64_t q = q_hi; q < pitch; ++q) row[q] = 0.0f;
      }
    }
    if (ni == n - 1) std::memset(out + s.plane, 0, sizeof(float) * (s.channel_pitch - n * s.plane));
  }
  return s;
}

// Tap offsets on a grid of row pitch P, tap t = ki * KW + kj.
std::vector<int64_t> tap_offsets(int64_t kh, int64_t kw, int64_t pitch) {
  std::vector<int64_t> off;
  for (int64_t ki = 0; ki < kh; ++ki)
    for (int64_t kj = 0; kj < kw; ++kj) off.push_back(ki * pitch + kj);
  return off;
}

// The same for strides sh x sw over the phases of a stack (pad_planes): tap (ki, kj) reads phase
// (ki mod sh, kj mod sw), `phase_pitch` floats per phase apart, shifted by (ki / sh, kj / sw).
std::vector<int64_t> strided_tap_offsets(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pitch,
                                         int64_t phase_pitch) {
  std::vector<int64_t> off;
  for (int64_t ki = 0; ki < kh; ++ki)
    for (int64_t kj = 0; kj < kw; ++kj)
      off.push_back(((ki % sh) * sw + kj % sw) * phase_pitch + (ki / sh) * pitch + kj / sw);
  return off;
}

// Zeros the kernels may read past the last plane of a phase: up to the largest shift within a plane
// (plus one vector).
int64_t tail_for(int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pitch) {
  return round_up_taps((kh - 1) / sh * pitch + (kw - 1) / sw) + kTapQuantum;
}

// Weights (G, OUT, IN, T) -> per group, blocks of `block` outputs: (G, ceil(OUT / block), IN, NT, block),
// zero beyond OUT, packed tap i reading tap taps[i]. With `swapped`, the source is (G, IN, OUT, T): the
// input gradient's kernel, output and input channels swapped.
std::vector<float> pack_weights(const float* w, int64_t groups, int64_t out, int64_t in, int64_t total_taps,
                                const std::vector<int64_t>& taps, int block, bool swapped) {
  const int64_t blocks = (out + block - 1) / block, nt = static_cast<int64_t>(taps.size());
  std::vector<float> p(static_cast<size_t>(groups * blocks * in * nt * block), 0.0f);
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c)
        for (int64_t t = 0; t < nt; ++t) {
          const int64_t src = swapped ? ((gi * in + c) * out + o) * total_taps : ((gi * out + o) * in + c) * total_taps;
          p[(((gi * blocks + o / block) * in + c) * nt + t) * block + o % block] = w[src + taps[t]];
        }
  return p;
}

std::vector<int64_t> all_taps(int64_t count, bool reversed) {
  std::vector<int64_t> t(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) t[i] = reversed ? count - 1 - i : i;
  return t;
}

// The direct-output store map of a grid of row pitch P with OH x OW valid positions (TapForward): per
// kTapQuantum positions, which are valid and the output index of the first of them.
struct StoreMap {
  std::vector<uint16_t> masks;
  std::vector<int64_t> index;
};
StoreMap store_map(int64_t pitch, int64_t oh, int64_t ow) {
  const int64_t vectors = round_up_taps(oh * pitch) / kTapQuantum;
  StoreMap m;
  m.masks.resize(static_cast<size_t>(vectors));
  m.index.resize(static_cast<size_t>(vectors));
  int64_t valid = 0;  // valid positions before the current one
  for (int64_t v = 0; v < vectors; ++v) {
    m.index[v] = valid;
    uint16_t mask = 0;
    for (int64_t l = 0; l < kTapQuantum; ++l) {
      const int64_t q = v * kTapQuantum + l;
      if (q / pitch < oh && q % pitch < ow) {
        mask = static_cast<uint16_t>(mask | (1u << l));
        ++valid;
      }
    }
    m.masks[v] = mask;
  }
  return m;
}

// out (N, G * OUT, OH, OW) = (or +=, with `accumulate`) the convolution of the stack (G * IN channels
// of `phases` slots each) with packed weights (pack_weights), plus bias (or none). Output row oy is read from grid positions
// oy * P .. oy * P + OW - 1: by the kernel itself where it writes output planes, else from a grid
// scratch per thread. Images and blocks of output channels spread over the threads.
void run_forward(const TapConvKernels& k, const PlaneStack& in, int64_t phases, const std::vector<int64_t>& offsets,
                 int64_t groups, int64_t in_g, int64_t out_g, const std::vector<float>& packed, const float* bias,
                 int64_t oh, int64_t ow, float* out, bool accumulate) {
  const int64_t block = k.oc_block, blocks = (out_g + block - 1) / block;
  const int64_t taps = static_cast<int64_t>(offsets.size());
  const int64_t q_count = oh * in.pitch, y_pitch = round_up_taps(q_count);
  const int64_t tasks = in.images * groups * blocks;
  const int64_t out_c = groups * out_g;
  const StoreMap map = k.direct_output ? store_map(in.pitch, oh, ow) : StoreMap{};
  const bool parallel = in.images * out_c * q_count * in_g * taps >= kParallelMacs;
#pragma omp parallel if (parallel)
  {
    std::shared_ptr<float[]> scratch = k.direct_output ? nullptr : alloc_floats(block * y_pitch);  // (block, grid)
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t n = task / (groups * blocks), gi = task / blocks % groups, b = task % blocks;
      const int64_t o0 = gi * out_g + b * block, oc = std::min<int64_t>(block, out_g - b * block);
      TapForward a;
      a.x = in.channel(gi * in_g * phases) + n * in.plane;
      a.x_pitch = in.channel_pitch * phases;
      a.channels = in_g;
      a.offsets = offsets.data();
      a.taps = taps;
      a.w = packed.data() + (gi * blocks + b) * in_g * taps * block;
      a.oc = oc;
      a.q_count = q_count;
      if (k.direct_output) {
        a.out = out + (n * out_c + o0) * oh * ow;
        a.out_pitch = oh * ow;
        a.store_masks = map.masks.data();
        a.store_index = map.index.data();
        a.bias = bias ? bias + o0 : nullptr;
        a.accumulate = accumulate;
        k.forward(a);
        continue;
      }
      a.y = scratch.get();
      a.y_pitch = y_pitch;
      k.forward(a);
      for (int64_t o = 0; o < oc; ++o) {
        const float add = bias ? bias[o0 + o] : 0.0f;
        for (int64_t y = 0; y < oh; ++y) {
          const float* __restrict src = scratch.get() + o * y_pitch + y * in.pitch;
          float* __restrict dst = out + ((n * out_c + o0 + o) * oh + y) * ow;
          if (accumulate)
            for (int64_t x = 0; x < ow; ++x) dst[x] += src[x] + add;
          else
            for (int64_t x = 0; x < ow; ++x) dst[x] = src[x] + add;
        }
      }
    }
  }
}


// dx (N, C, H, W) (+)= the input gradient of a strided convolution, phase by phase. Padded-input pixel
// (i * sh + ry, j * sw + rx) meets only the taps (ki, kj) with ki = ry, kj = rx (mod the strides), and
// receives sum over o and those taps of w[o][c][ki][kj] * dy[o][i - ki / sh][j - kj / sw]: per phase, a
// stride-1 convolution of dy (padded by the largest shift) with those taps, written to a phase plane of
// the padded input, whose inner pixels are then scattered into dx.
void strided_input_grad(const TapConvKernels& k, const ConvGeometry& g, const float* wd, const float* gyd, float* gx,
                        bool fresh, int64_t rows2, int64_t pitch2) {
  const int64_t a = (g.kh - 1) / g.sh, b = (g.kw - 1) / g.sw;  // largest shifts
  const int64_t d_rows = std::max(g.oh, rows2) + 2 * a, d_pitch = std::max(g.ow, pitch2) + 2 * b;
  const int64_t d_tail = round_up_taps(2 * a * d_pitch + 2 * b) + kTapQuantum;
  const PlaneStack dys = pad_planes(gyd, g.n, g.oc, g.oh, g.ow, a, b, d_rows, d_pitch, d_tail);
  if (fresh) std::fill(gx, gx + g.n * g.c * g.h * g.w, 0.0f);
  const std::shared_ptr<float[]> phase_buffer = alloc_floats(g.n * g.c * rows2 * pitch2);  // (N, C, rows2, pitch2)
  float* const phase = phase_buffer.get();
  for (int64_t ry = 0; ry < std::min(g.sh, g.kh); ++ry)
    for (int64_t rx = 0; rx < std::min(g.sw, g.kw); ++rx) {
      std::vector<int64_t> taps, offsets;
      for (int64_t ki = ry; ki < g.kh; ki += g.sh)
        for (int64_t kj = rx; kj < g.kw; kj += g.sw) {
          taps.push_back(ki * g.kw + kj);
          offsets.push_back((a - ki / g.sh) * d_pitch + (b - kj / g.sw));
        }
      run_forward(k, dys, 1, offsets, g.groups, g.ocg, g.cg,
                  pack_weights(wd, g.groups, g.cg, g.ocg, g.kh * g.kw, taps, k.oc_block, true), nullptr, rows2,
                  pitch2, phase, false);
      // Padded pixel (i * sh + ry, j * sw + rx) is input pixel (i * sh + ry - ph, j * sw + rx - pw).
#pragma omp parallel for schedule(static) if (g.n * g.c * g.h * g.w >= kParallelMin)
      for (int64_t nc = 0; nc < g.n * g.c; ++nc)
        for (int64_t i = 0; i < rows2; ++i) {
          const int64_t y = i * g.sh + ry - g.ph;
          if (y < 0 || y >= g.h) continue;
          for (int64_t j = 0; j < pitch2; ++j) {
            const int64_t x = j * g.sw + rx - g.pw;
            if (x >= 0 && x < g.w) gx[(nc * g.h + y) * g.w + x] += phase[(nc * rows2 + i) * pitch2 + j];
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
  const TapConvKernels& k = tap_conv_kernels(active_float_path());
  // The padded input, split into sh * sw phases of rows x pitch. One phase: the padded input itself, its
  // bottom and right padding shared with the next image and row (the top of the file); unless the
  // padding is wider than the kernel reaches, when an image's output grid would overlap the next's.
  const int64_t phases = g.sh * g.sw;
  const int64_t full_rows = (g.h + 2 * g.ph + g.sh - 1) / g.sh, full_pitch = (g.w + 2 * g.pw + g.sw - 1) / g.sw;
  const bool shared_padding = phases == 1 && g.ph <= g.kh - 1 && g.pw <= g.kw - 1;
  const int64_t rows = shared_padding ? g.ph + g.h : full_rows, pitch = shared_padding ? g.pw + g.w : full_pitch;
  const int64_t taps = g.kh * g.kw;
  // (The last image's bottom padding lies in the tail: tail_for covers a padding of up to K - 1.)
  PlaneStack xs = pad_planes(x.data(), g.n, g.c, g.h, g.w, g.ph, g.pw, rows, pitch,
                             tail_for(g.kh, g.kw, g.sh, g.sw, pitch), 0, g.sh, g.sw, g.kh, g.kw);
  auto offsets = std::make_shared<const std::vector<int64_t>>(
      strided_tap_offsets(g.kh, g.kw, g.sh, g.sw, pitch, xs.channel_pitch));
  Tensor y = Tensor::empty({g.n, g.oc, g.oh, g.ow});
  run_forward(k, xs, phases, *offsets, g.groups, g.cg, g.ocg,
              pack_weights(weight.data(), g.groups, g.ocg, g.cg, taps, all_taps(taps, false), k.oc_block, false),
              bias.defined() ? bias.data() : nullptr, g.oh, g.ow, y.data(), false);
  if (!weight.requires_grad()) xs.buffer.reset(), xs.data = nullptr;  // only the weight gradient reads it again

  record_op(y, "conv2d", {x, weight, bias}, [x, weight, bias, g, xs, offsets, phases, full_rows, full_pitch,
                                              &k](const Tensor& gy) {
    const int64_t taps = g.kh * g.kw, pairs = g.cg * taps;
    const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
    const bool need_b = bias.defined() && bias.requires_grad();
    // The phase-by-phase input gradient takes strides, and paddings over K - 1 (no transposed form).
    const bool strided = phases > 1 || g.ph > g.kh - 1 || g.pw > g.kw - 1;
    const float* gyd = gy.data();
    // Stride 1: dy padded for the input gradient, the transposed convolution's padding K - 1 - P on
    // each side. For "same" padding (K = 2P + 1) that stack is also the weight gradient's dy grid,
    // shifted by (top, left): the padding zeros sit exactly where the dropped positions are.
    const int64_t top = g.kh - 1 - g.ph, left = g.kw - 1 - g.pw;
    const int64_t t_rows = top + g.oh, t_pitch = left + g.ow;
    const bool shared = !strided && t_pitch == xs.pitch && t_rows == xs.rows;
    PlaneStack dys;
    if (!strided && (need_x || (need_w && shared)))
      dys = pad_planes(gyd, g.n, g.oc, g.oh, g.ow, top, left, t_rows, t_pitch,
                       std::max(tail_for(g.kh, g.kw, 1, 1, t_pitch), round_up_taps(top * t_pitch + left) + kTapQuantum),
                       shared ? top * t_pitch + left : 0);
    const int threads = g.n * g.oc * g.oh * g.ow * pairs >= kParallelMacs ? omp_get_max_threads() : 1;

    if (need_w || need_b) {
      ProfilePart part("weight_grad");
      // dy on the forward's output grid: row oy at oy * pitch, zero at the dropped positions.
      PlaneStack dyq;
      const float* dy = nullptr;
      int64_t dy_pitch = 0;
      if (need_w) {
        if (shared) {
          dy = dys.data + top * t_pitch + left;
          dy_pitch = dys.channel_pitch;
        } else {
          dyq = pad_planes(gyd, g.n, g.oc, g.oh, g.ow, 0, 0, xs.rows, xs.pitch, 0);
          dy = dyq.data;
          dy_pitch = dyq.channel_pitch;
        }
      }
      // Per-thread partial sums, each thread over its own positions (the bias: its own images), summed
      // in thread order afterwards: deterministic for a given thread count, and no atomics.
      std::vector<float> gw_part(need_w ? threads * g.oc * pairs : 0, 0.0f);  // (T, OC, CG * KH * KW)
      std::vector<float> gb_part(need_b ? threads * g.oc : 0, 0.0f);          // (T, OC)
      // The threads split the batch's positions at multiples of kTapQuantum (dy is zero up to the last).
      const int64_t quanta = round_up_taps(g.n * xs.plane) / kTapQuantum;
#pragma omp parallel num_threads(threads)
      {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t n0 = g.n * t / team, n1 = g.n * (t + 1) / team;
        if (need_b) {
          const int64_t ohw = g.oh * g.ow;
          for (int64_t n = n0; n < n1; ++n)
            for (int64_t o = 0; o < g.oc; ++o) {
              const float* row = gyd + (n * g.oc + o) * ohw;
              float s = 0.0f;
              for (int64_t i = 0; i < ohw; ++i) s += row[i];
              gb_part[t * g.oc + o] += s;
            }
        }
        if (need_w) {
          {
            for (int64_t gi = 0; gi < g.groups; ++gi) {
              TapWeightGrad a;
              a.dy = dy + gi * g.ocg * dy_pitch;
              a.dy_pitch = dy_pitch;
              a.oc = g.ocg;
              a.x = xs.channel(gi * g.cg * phases);
              a.x_pitch = xs.channel_pitch * phases;
              a.channels = g.cg;
              a.offsets = offsets->data();
              a.taps = taps;
              a.q_begin = quanta * t / team * kTapQuantum;
              a.q_end = quanta * (t + 1) / team * kTapQuantum;
              a.acc = gw_part.data() + (t * g.oc + gi * g.ocg) * pairs;
              k.weight_grad(a);
            }
          }
        }
      }
      if (need_w) {
        float* gw = weight.mutable_grad();
        for (int t = 0; t < threads; ++t)
          for (int64_t i = 0; i < g.oc * pairs; ++i) gw[i] += gw_part[t * g.oc * pairs + i];
      }
      if (need_b) {
        float* gb = bias.mutable_grad();
        for (int t = 0; t < threads; ++t)
          for (int64_t i = 0; i < g.oc; ++i) gb[i] += gb_part[t * g.oc + i];
      }
    }
    if (need_x) {
      ProfilePart part("input_grad");
      bool fresh = false;
      float* gx = x.grad_for_write(&fresh);
      if (strided) {
        strided_input_grad(k, g, weight.data(), gyd, gx, fresh, full_rows, full_pitch);
      } else {
        run_forward(k, dys, 1, tap_offsets(g.kh, g.kw, t_pitch), g.groups, g.ocg, g.cg,
                    pack_weights(weight.data(), g.groups, g.cg, g.ocg, taps, all_taps(taps, true), k.oc_block, true),
                    nullptr, g.h, g.w, gx, !fresh);
      }
    }
  });
  return y;
}

}  // namespace qatlab
