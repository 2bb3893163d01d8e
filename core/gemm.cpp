// gemm.cpp: packing and blocking around the shifted-tap forward kernel (gemm.h).
//
// A is packed into blocks of oc_block rows, (K, oc_block) each: the kernel's weights. B is packed into
// panels of kPanel columns, (K, kPanel) each and contiguous: the kernel's input with one tap and a
// channel pitch of kPanel, so that each step over K reads three adjacent vectors (unpacked, B's rows
// are N floats apart and at N = 1024 every row falls into the same L1 sets: a third of the speed). A
// tile of C is computed into a small buffer and then stored or added into C, edges cut. The inner
// dimension goes in passes of kDepth (C's tiles add up the passes, in order).
#include "core/gemm.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/kernels/conv_taps.h"
#include "core/tensor.h"

namespace qatlab {

namespace {

constexpr int64_t kMaxBlock = 8;  // rows of a tile: the widest backend's oc_block (AVX-512)
constexpr int64_t kPanel = 48;  // columns of B per panel: three AVX-512 vectors, six AVX2 ones
constexpr int64_t kDepth = 512;  // inner dimension per pass (of 128 to 1024 measured, 512 ran fastest)
constexpr int64_t kGroupFloats = int64_t{64} * 1024;  // A's blocks per group: 256 KiB (L2)
// Below this many multiply-adds a product runs on one thread: waking the team and packing in two costs
// more (LeNet-5's 64 x 400 x 120 layer measured faster on one).
constexpr int64_t kParallelMacs = int64_t{1} << 22;

}  // namespace

void gemm(int64_t m, int64_t n, int64_t k, MatrixView a, MatrixView b, float* c, int64_t ldc, bool accumulate) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  const TapConvKernels& kern = tap_conv_kernels(active_float_path());
  QATLAB_CHECK(kern.oc_block <= kMaxBlock, "gemm: a float backend's oc_block exceeds the tile buffer");
  const int64_t block = kern.oc_block, blocks = (m + block - 1) / block, panels = (n + kPanel - 1) / kPanel;
  const int64_t kc = std::min(k, kDepth);
  std::shared_ptr<float[]> ap = alloc_floats(blocks * kc * block);   // (blocks, kc, block)
  std::shared_ptr<float[]> bp = alloc_floats(panels * kc * kPanel);  // (panels, kc, kPanel)
  float* apd = ap.get();
  float* bpd = bp.get();
  const int64_t group = std::max<int64_t>(1, kGroupFloats / (kc * block));  // blocks of A per group
  static const auto masks = [] {  // direct output: the valid lanes of a panel with 1..kPanel columns
    std::array<std::array<uint16_t, kPanel / kTapQuantum>, kPanel> m{};
    for (int64_t cols = 1; cols <= kPanel; ++cols)
      for (int64_t v = 0; v < kPanel / kTapQuantum; ++v) {
        const int64_t valid = std::clamp<int64_t>(cols - v * kTapQuantum, 0, kTapQuantum);
        m[cols - 1][v] = static_cast<uint16_t>((1u << valid) - 1);
      }
    return m;
  }();
  static constexpr int64_t kIndex[kPanel / kTapQuantum] = {0, kTapQuantum, 2 * kTapQuantum};
  const int64_t groups = (blocks + group - 1) / group;
#pragma omp parallel if (m * n * k >= kParallelMacs)
  {
    float tile[kMaxBlock * kPanel];  // (block, kPanel)
    const int64_t zero = 0;
    for (int64_t k0 = 0; k0 < k; k0 += kc) {
      const int64_t depth = std::min(kc, k - k0);
      // Packing walks each source along its contiguous direction.
#pragma omp for schedule(static) nowait
      for (int64_t bi = 0; bi < blocks; ++bi) {
        float* dst = apd + bi * kc * block;
        for (int64_t r = 0; r < block; ++r) {
          const int64_t i = bi * block + r;
          if (i >= m) {
            for (int64_t kk = 0; kk < depth; ++kk) dst[kk * block + r] = 0.0f;
            continue;
          }
          const float* src = a.data + i * a.row_stride + k0 * a.col_stride;
          if (a.col_stride == 1)
            for (int64_t kk = 0; kk < depth; ++kk) dst[kk * block + r] = src[kk];
          else
            for (int64_t kk = 0; kk < depth; ++kk) dst[kk * block + r] = src[kk * a.col_stride];
        }
      }
#pragma omp for schedule(static)
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t cols = std::min(kPanel, n - p * kPanel);
        float* dst = bpd + p * kc * kPanel;
        if (b.col_stride == 1) {
          for (int64_t kk = 0; kk < depth; ++kk) {
            const float* src = b.data + (k0 + kk) * b.row_stride + p * kPanel;
            std::copy(src, src + cols, dst + kk * kPanel);
            std::fill(dst + kk * kPanel + cols, dst + (kk + 1) * kPanel, 0.0f);
          }
        } else {
          for (int64_t kk = 0; kk < depth; ++kk) std::fill(dst + kk * kPanel + cols, dst + (kk + 1) * kPanel, 0.0f);
          for (int64_t j = 0; j < cols; ++j) {
            const float* src = b.data + k0 * b.row_stride + (p * kPanel + j) * b.col_stride;
            for (int64_t kk = 0; kk < depth; ++kk) dst[kk * kPanel + j] = src[kk * b.row_stride];
          }
        }
      }
      // A group of A's blocks (in L2) meets every panel (in L1 or L2) before the next group.
      const bool add = accumulate || k0 > 0;
#pragma omp for schedule(static)
      for (int64_t task = 0; task < groups * panels; ++task) {
        const int64_t gi = task / panels, p = task % panels;
        const int64_t cols = std::min(kPanel, n - p * kPanel);
        for (int64_t bi = gi * group; bi < std::min(blocks, (gi + 1) * group); ++bi) {
          TapForward f;
          f.x = bpd + p * kc * kPanel;
          f.x_pitch = kPanel;
          f.channels = depth;
          f.offsets = &zero;
          f.taps = 1;
          f.w = apd + bi * kc * block;
          f.oc = std::min(block, m - bi * block);
          f.y = tile;
          f.y_pitch = kPanel;
          f.q_count = kPanel;
          if (kern.direct_output) {  // straight into C: the panel is one row of `cols` valid positions
            f.out = c + bi * block * ldc + p * kPanel;
            f.out_pitch = ldc;
            f.store_masks = masks[cols - 1].data();
            f.store_index = kIndex;
            f.accumulate = add;
            kern.forward(f);
            continue;
          }
          kern.forward(f);
          for (int64_t r = 0; r < f.oc; ++r) {
            float* dst = c + (bi * block + r) * ldc + p * kPanel;
            const float* src = tile + r * kPanel;
            if (add)
              for (int64_t j = 0; j < cols; ++j) dst[j] += src[j];
            else
              std::copy(src, src + cols, dst);
          }
        }
      }
    }
  }
}

}  // namespace qatlab
