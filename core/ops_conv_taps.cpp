// ops_conv_taps.cpp: stride-1 convolutions on the shifted-tap kernels (core/kernels/conv_taps.h):
// forward, input gradient and weight gradient, on the float path the CPU runs best (cpu_features.h).
//
// Every pass reads a stack of padded planes: plane (c, n) holds image n's channel c with `top` zero rows
// above, `left` zero columns before each row, zeros after, at row pitch P; planes of one channel follow
// each other image after image, so that a channel's planes for the whole batch are one flat range of
// positions (the weight gradient sums over it in one sweep). The forward keeps the input's stack for the
// weight gradient; the input gradient pads dy the same way and runs the forward kernel with the kernel
// flipped and the channels swapped. Shape letters: conv_geometry.h.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/conv_geometry.h"
#include "core/kernels/conv_taps.h"
#include "core/parallel.h"
#include "core/profiler.h"

namespace qatlab {

namespace {

struct PlaneStack {
  int64_t channels = 0, images = 0;
  int64_t rows = 0, pitch = 0;  // padded plane: rows x pitch
  int64_t plane = 0;            // floats per plane: rows * pitch rounded up to kTapQuantum
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
// channel's planes are followed by at least `tail` zeros. Position `aligned` of every plane is 64-byte
// aligned (a plane and a channel pitch are multiples of 16 floats): the weight gradient's loads of dy
// are, and unaligned they cost it 10 %.
PlaneStack pad_planes(const float* src, int64_t n, int64_t c, int64_t h, int64_t w, int64_t top, int64_t left,
                      int64_t rows, int64_t pitch, int64_t tail, int64_t aligned = 0) {
  PlaneStack s;
  s.channels = c, s.images = n, s.rows = rows, s.pitch = pitch;
  s.plane = round_up_taps(rows * pitch);
  s.channel_pitch = channel_pitch_for(n, s.plane, tail);
  s.buffer = alloc_floats(c * s.channel_pitch + kTapQuantum);  // alloc_floats aligns to 64 bytes
  s.data = s.buffer.get() + (kTapQuantum - aligned % kTapQuantum) % kTapQuantum;
  float* d = s.data;
#pragma omp parallel for schedule(static) if (c * n * s.plane >= kParallelMin)
  for (int64_t i = 0; i < c * n; ++i) {
    const int64_t ci = i / n, ni = i % n;
    const float* in = src + (ni * c + ci) * h * w;
    float* out = d + ci * s.channel_pitch + ni * s.plane;
    std::memset(out, 0, sizeof(float) * top * pitch);
    for (int64_t y = 0; y < h; ++y) {
      float* row = out + (top + y) * pitch;
      std::memset(row, 0, sizeof(float) * left);
      std::memcpy(row + left, in + y * w, sizeof(float) * w);
      std::memset(row + left + w, 0, sizeof(float) * (pitch - left - w));
    }
    std::memset(out + (top + h) * pitch, 0, sizeof(float) * (s.plane - (top + h) * pitch));
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

// Zeros the kernels may read past the last plane: up to the largest tap offset (plus one vector).
int64_t tail_for(const std::vector<int64_t>& offsets) { return round_up_taps(offsets.back()) + kTapQuantum; }

// Weights (G, OUT, IN, T) -> per group, blocks of `block` outputs: (G, ceil(OUT / block), IN, T, block),
// zero beyond OUT. With `flip`, the source is (G, IN, OUT, T) read at tap T - 1 - t: the input
// gradient's kernel (channels swapped, flipped in space).
std::vector<float> pack_weights(const float* w, int64_t groups, int64_t out, int64_t in, int64_t taps, int block,
                                bool flip) {
  const int64_t blocks = (out + block - 1) / block;
  std::vector<float> p(static_cast<size_t>(groups * blocks * in * taps * block), 0.0f);
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t c = 0; c < in; ++c)
        for (int64_t t = 0; t < taps; ++t) {
          const float v = flip ? w[((gi * in + c) * out + o) * taps + (taps - 1 - t)] : w[((gi * out + o) * in + c) * taps + t];
          p[(((gi * blocks + o / block) * in + c) * taps + t) * block + o % block] = v;
        }
  return p;
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

// out (N, G * OUT, OH, OW) = (or +=, with `accumulate`) the convolution of the stack (G * IN channels)
// with packed weights (pack_weights), plus bias (or none). Output row oy is read from grid positions
// oy * P .. oy * P + OW - 1: by the kernel itself where it writes output planes, else from a grid
// scratch per thread. Images and blocks of output channels spread over the threads.
void run_forward(const TapConvKernels& k, const PlaneStack& in, const std::vector<int64_t>& offsets, int64_t groups,
                 int64_t in_g, int64_t out_g, const std::vector<float>& packed, const float* bias, int64_t oh,
                 int64_t ow, float* out, bool accumulate) {
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
      a.x = in.channel(gi * in_g) + n * in.plane;
      a.x_pitch = in.channel_pitch;
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


}  // namespace

Tensor conv2d_taps(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeometry& g) {
  const TapConvKernels& k = tap_conv_kernels(active_float_path());
  const int64_t pitch = g.w + 2 * g.pw, rows = g.h + 2 * g.ph;
  const int64_t taps = g.kh * g.kw;
  auto offsets = std::make_shared<const std::vector<int64_t>>(tap_offsets(g.kh, g.kw, pitch));
  PlaneStack xs = pad_planes(x.data(), g.n, g.c, g.h, g.w, g.ph, g.pw, rows, pitch, tail_for(*offsets));
  Tensor y = Tensor::empty({g.n, g.oc, g.oh, g.ow});
  run_forward(k, xs, *offsets, g.groups, g.cg, g.ocg,
              pack_weights(weight.data(), g.groups, g.ocg, g.cg, taps, k.oc_block, false),
              bias.defined() ? bias.data() : nullptr, g.oh, g.ow, y.data(), false);
  if (!weight.requires_grad()) xs.buffer.reset(), xs.data = nullptr;  // only the weight gradient reads it again

  record_op(y, "conv2d", {x, weight, bias}, [x, weight, bias, g, xs, offsets, &k](const Tensor& gy) {
    const int64_t taps = g.kh * g.kw, pairs = g.cg * taps;
    const bool need_x = x.requires_grad(), need_w = weight.requires_grad();
    const bool need_b = bias.defined() && bias.requires_grad();
    const float* gyd = gy.data();
    // dy padded for the input gradient: the transposed convolution's padding K - 1 - P on each side.
    const int64_t top = g.kh - 1 - g.ph, left = g.kw - 1 - g.pw;
    const int64_t t_rows = g.oh + 2 * top, t_pitch = g.ow + 2 * left;
    const auto t_offsets = tap_offsets(g.kh, g.kw, t_pitch);
    // For "same" padding (K = 2P + 1) that stack is also the weight gradient's dy grid, shifted by
    // (top, left): the padding zeros sit exactly where the dropped positions are.
    const bool shared = t_pitch == xs.pitch && t_rows == xs.rows;
    PlaneStack dys;
    if (need_x || (need_w && shared))
      dys = pad_planes(gyd, g.n, g.oc, g.oh, g.ow, top, left, t_rows, t_pitch,
                       std::max(tail_for(t_offsets), round_up_taps(top * t_pitch + left) + kTapQuantum),
                       shared ? top * t_pitch + left : 0);
    const int threads = g.n * g.oc * g.oh * g.ow * pairs >= kParallelMacs ? omp_get_max_threads() : 1;

    if (need_w || need_b) {
      ProfilePart part("weight_grad");
      // dy on the forward's output grid: row oy at oy * P, zero at the dropped positions.
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
      // Per-thread partial sums, each thread over its own images, summed in thread order afterwards:
      // deterministic for a given thread count, and no atomics.
      std::vector<float> gw_part(need_w ? threads * g.oc * pairs : 0, 0.0f);  // (T, OC, CG * KH * KW)
      std::vector<float> gb_part(need_b ? threads * g.oc : 0, 0.0f);          // (T, OC)
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
              a.x = xs.channel(gi * g.cg);
              a.x_pitch = xs.channel_pitch;
              a.channels = g.cg;
              a.offsets = offsets->data();
              a.taps = taps;
              a.q_begin = n0 * xs.plane;
              a.q_end = n1 * xs.plane;
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
      run_forward(k, dys, t_offsets, g.groups, g.ocg, g.cg,
                  pack_weights(weight.data(), g.groups, g.cg, g.ocg, taps, k.oc_block, true), nullptr, g.h, g.w, gx,
                  !fresh);
    }
  });
  return y;
}

}  // namespace qatlab
