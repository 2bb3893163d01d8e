// conv_taps_tiles.h: the register-blocked tiles of the shifted-tap convolution (conv_taps.h), written
// once for any vector width. Included only by a backend file (conv_taps_avx2.cpp, conv_taps_avx512.cpp),
// which first defines
//   QATLAB_TAPS_TARGET  the function attribute that lets the tiles use its instructions, and
//   a vector type V:    V::Reg, V::kWidth (floats), and static zero(), load(p), store(p, r), set1(f),
//                       fma(a, b, acc) = a * b + acc, sum(r) = the sum of r's lanes, all
//                       QATLAB_TAPS_TARGET and inline; V::kCompress, and if true
//                       store_valid(p, r, mask, accumulate): r's lanes in `mask`, in order, to (or
//                       added to) p[0 ..), for TapForward's direct output,
// then names its kernels TapTiles<V, oc_block, q_block, wg_oc, wg_pairs>::forward / ::weight_grad.
//
// Forward tile: OB output channels x QB vectors of positions, OB * QB accumulators; per (channel, tap)
// QB input loads and OB weight broadcasts feed OB * QB multiply-adds. Weight-gradient tile: OB output
// channels x JB (channel, tap) pairs; per vector of positions OB dy loads and JB input loads feed
// OB * JB multiply-adds. Edges take the same tiles with smaller OB, QB, JB.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "core/kernels/conv_taps.h"
#include "core/tensor.h"

#ifndef QATLAB_TAPS_TARGET
#error "define QATLAB_TAPS_TARGET before including conv_taps_tiles.h"
#endif

namespace qatlab {
namespace {

template <class V, int kOcBlock, int kQBlock, int kWgOc, int kWgPairs>
struct TapTiles {
  static_assert(kTapQuantum % V::kWidth == 0, "a call's positions must fill whole vectors");

  template <int OB, int QB>
  QATLAB_TAPS_TARGET static void forward_tile(const TapForward& a, int64_t q0) {
    typename V::Reg acc[OB][QB];
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 16
      for (int v = 0; v < QB; ++v) acc[o][v] = V::zero();
    const float* w = a.w;
    // One (channel, tap) step: QB input vectors, OB broadcast weights.
    const auto step = [&](const float* xs) __attribute__((always_inline)) {
      typename V::Reg xv[QB];
#pragma GCC unroll 16
      for (int v = 0; v < QB; ++v) xv[v] = V::load(xs + V::kWidth * v);
#pragma GCC unroll 16
      for (int o = 0; o < OB; ++o) {
        const typename V::Reg wv = V::set1(w[o]);
#pragma GCC unroll 16
        for (int v = 0; v < QB; ++v) acc[o][v] = V::fma(wv, xv[v], acc[o][v]);
      }
      w += kOcBlock;
    };
    if (a.taps == 1) {  // a GEMM (core/gemm.h): one loop, no tap loop inside it
      const float* xs = a.x + a.offsets[0] + q0;
      for (int64_t c = 0; c < a.channels; ++c, xs += a.x_pitch) step(xs);
    } else {
      for (int64_t c = 0; c < a.channels; ++c) {
        const float* xc = a.x + c * a.x_pitch + q0;
        for (int64_t t = 0; t < a.taps; ++t) step(xc + a.offsets[t]);
      }
    }
    if constexpr (V::kCompress) {
      if (a.out) {
        static_assert(V::kWidth == kTapQuantum, "store masks are per kTapQuantum positions");
        const int64_t v0 = q0 / V::kWidth;
#pragma GCC unroll 16
        for (int o = 0; o < OB; ++o) {
          const typename V::Reg b = V::set1(a.bias ? a.bias[o] : 0.0f);
          float* out = a.out + o * a.out_pitch;
#pragma GCC unroll 16
          for (int v = 0; v < QB; ++v)
            V::store_valid(out + a.store_index[v0 + v], V::add(acc[o][v], b), a.store_masks[v0 + v], a.accumulate);
        }
        return;
      }
    }
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 16
      for (int v = 0; v < QB; ++v) V::store(a.y + o * a.y_pitch + q0 + V::kWidth * v, acc[o][v]);
  }

  // The last `rest` (< kQBlock) vectors, from vector v on.
  template <int OB, int R>
  QATLAB_TAPS_TARGET static void forward_rest(const TapForward& a, int64_t v, int64_t rest) {
    if (rest == R)
      forward_tile<OB, R>(a, v * V::kWidth);
    else if constexpr (R > 1)
      forward_rest<OB, R - 1>(a, v, rest);
  }

  template <int OB>
  QATLAB_TAPS_TARGET static void forward_rows(const TapForward& a) {
    const int64_t vectors = round_up_taps(a.q_count) / V::kWidth;
    int64_t v = 0;
    for (; v + kQBlock <= vectors; v += kQBlock) forward_tile<OB, kQBlock>(a, v * V::kWidth);
    if constexpr (kQBlock > 1)
      if (v < vectors) forward_rest<OB, kQBlock - 1>(a, v, vectors - v);
  }

  template <int... I>
  static void forward_channels(const TapForward& a, std::integer_sequence<int, I...>) {
    static constexpr void (*kRows[])(const TapForward&) = {forward_rows<I + 1>...};
    kRows[a.oc - 1](a);
  }

  static void forward(const TapForward& a) { forward_channels(a, std::make_integer_sequence<int, kOcBlock>{}); }

  // Weight gradient, one tile: positions [q0, q1), partial sums in vectors at part[(o * pairs + j) * width]
  // (the tile's rows o < OB of the current block of output channels).
  template <int OB, int JB>
  QATLAB_TAPS_TARGET static void weight_grad_tile(const TapWeightGrad& a, int64_t o0, int64_t j0, int64_t q0,
                                                  int64_t q1, float* part) {
    const int64_t pairs = a.channels * a.taps;
    const float* dy[OB];
    const float* x[JB];
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o) dy[o] = a.dy + (o0 + o) * a.dy_pitch;
#pragma GCC unroll 16
    for (int j = 0; j < JB; ++j) x[j] = a.x + ((j0 + j) / a.taps) * a.x_pitch + a.offsets[(j0 + j) % a.taps];
    typename V::Reg acc[OB][JB];
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 16
      for (int j = 0; j < JB; ++j) acc[o][j] = V::load(part + (o * pairs + j0 + j) * V::kWidth);
    for (int64_t q = q0; q < q1; q += V::kWidth) {
      typename V::Reg d[OB];
#pragma GCC unroll 16
      for (int o = 0; o < OB; ++o) d[o] = V::load(dy[o] + q);
#pragma GCC unroll 16
      for (int j = 0; j < JB; ++j) {
        const typename V::Reg xv = V::load(x[j] + q);
#pragma GCC unroll 16
        for (int o = 0; o < OB; ++o) acc[o][j] = V::fma(d[o], xv, acc[o][j]);
      }
    }
#pragma GCC unroll 16
    for (int o = 0; o < OB; ++o)
#pragma GCC unroll 16
      for (int j = 0; j < JB; ++j) V::store(part + (o * pairs + j0 + j) * V::kWidth, acc[o][j]);
  }

  template <int OB, int R>
  QATLAB_TAPS_TARGET static void weight_grad_rest(const TapWeightGrad& a, int64_t o0, int64_t j0, int64_t rest,
                                                  int64_t q0, int64_t q1, float* part) {
    if (rest == R)
      weight_grad_tile<OB, R>(a, o0, j0, q0, q1, part);
    else if constexpr (R > 1)
      weight_grad_rest<OB, R - 1>(a, o0, j0, rest, q0, q1, part);
  }

  // Partial sums of OB output channels (the block at o0) over [q0, q1): inner sweeps of kSweep
  // positions, in each every tile of (channel, tap) pairs in turn, so that the block's dy rows stay in
  // L1 while the pairs pass. The sums wait in `part` (OB * pairs vectors) between sweeps.
  template <int OB>
  QATLAB_TAPS_TARGET static void weight_grad_rows(const TapWeightGrad& a, int64_t o0, int64_t q0, int64_t q1,
                                                  float* part) {
    constexpr int64_t kSweep = 1024;
    const int64_t pairs = a.channels * a.taps;
    for (int64_t s0 = q0; s0 < q1; s0 += kSweep) {
      const int64_t s1 = std::min(q1, s0 + kSweep);
      int64_t j = 0;
      for (; j + kWgPairs <= pairs; j += kWgPairs) weight_grad_tile<OB, kWgPairs>(a, o0, j, s0, s1, part);
      if constexpr (kWgPairs > 1)
        if (j < pairs) weight_grad_rest<OB, kWgPairs - 1>(a, o0, j, pairs - j, s0, s1, part);
    }
  }

  template <int R>
  QATLAB_TAPS_TARGET static void weight_grad_rest_rows(const TapWeightGrad& a, int64_t o0, int64_t rest, int64_t q0,
                                                       int64_t q1, float* part) {
    if (rest == R)
      weight_grad_rows<R>(a, o0, q0, q1, part);
    else if constexpr (R > 1)
      weight_grad_rest_rows<R - 1>(a, o0, rest, q0, q1, part);
  }

  // The output channels go in groups whose partial sums fit in about 512 KiB (L2), and for each group
  // the range in outer sweeps whose x rows (every channel) take about 1 MiB: every block of the group
  // then reads those rows from L2, and each x row comes from memory once per group, not once per block.
  // The lanes of the partial sums are added up once per group, at the end.
  static void weight_grad(const TapWeightGrad& a) {
    const int64_t pairs = a.channels * a.taps;
    const int64_t block_floats = kWgOc * pairs * V::kWidth;
    const int64_t group = std::max<int64_t>(1, (int64_t{128} * 1024) / block_floats) * kWgOc;  // channels
    const int64_t outer = std::max<int64_t>(1, (int64_t{256} * 1024) / (a.channels * 1024)) * 1024;  // positions
    // From the tensors' buffer pool: a fresh allocation this size would page-fault in at every call.
    const std::shared_ptr<float[]> part_buffer = alloc_floats(group * pairs * V::kWidth);
    float* const part = part_buffer.get();
    for (int64_t g0 = 0; g0 < a.oc; g0 += group) {
      const int64_t g1 = std::min(a.oc, g0 + group);
      std::fill(part, part + group * pairs * V::kWidth, 0.0f);
      for (int64_t q0 = a.q_begin; q0 < a.q_end; q0 += outer) {
        const int64_t q1 = std::min(a.q_end, q0 + outer);
        int64_t o = g0;
        for (; o + kWgOc <= g1; o += kWgOc) weight_grad_rows<kWgOc>(a, o, q0, q1, part + (o - g0) * pairs * V::kWidth);
        if constexpr (kWgOc > 1)
          if (o < g1) weight_grad_rest_rows<kWgOc - 1>(a, o, g1 - o, q0, q1, part + (o - g0) * pairs * V::kWidth);
      }
      for (int64_t o = g0; o < g1; ++o)
        for (int64_t j = 0; j < pairs; ++j)
          a.acc[o * pairs + j] += V::sum(V::load(part + ((o - g0) * pairs + j) * V::kWidth));
    }
  }
};

}  // namespace
}  // namespace qatlab
