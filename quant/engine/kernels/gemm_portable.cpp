// gemm_portable.cpp: the portable backend of the packed int8 GEMM: its micro-tile in plain C++ over the
// same packed panels as the SIMD backends (so the tests check the packing and the bias folding on any
// CPU), and its GemmKernel entry (gemm_kernel.h).
#include <algorithm>

#include "quant/engine/kernels/gemm_kernel.h"

namespace qatlab::kernels {

namespace {

// A (rows, KQ*4) bytes, row stride a_stride; B one panel (KQ, 16, 4) bytes. The broadcast operand A
// is unsigned (fully connected: activations) or signed (conv: filter); B is the other kind.

template <int MR, bool kBroadcastUnsigned>
void portable_tile(const uint8_t* a, int64_t a_stride, const uint8_t* b, int64_t kq_count, int64_t row0, int64_t col0,
                   int cols, const Epilogue& e) {
  int32_t acc[MR][kPanel] = {};  // (MR, 16)
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const uint8_t* bq = b + kq * kQuadBytes;
    for (int r = 0; r < MR; ++r) {
      const uint8_t* aq = a + r * a_stride + kq * 4;
      for (int j = 0; j < kPanel; ++j) {
        int32_t s = 0;
        for (int t = 0; t < 4; ++t) {
          const int32_t av = kBroadcastUnsigned ? int32_t{aq[t]} : int32_t{static_cast<int8_t>(aq[t])};
          const int32_t bv = kBroadcastUnsigned ? int32_t{static_cast<int8_t>(bq[j * 4 + t])} : int32_t{bq[j * 4 + t]};
          s += av * bv;
        }
        acc[r][j] += s;  // |partial sums| <= K * 255 * 128 < 2^31 (K <= kMaxK): no overflow
      }
    }
  }
  if (e.sums) {
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < cols; ++j) e.sums[(row0 + r) * e.out_stride + col0 + j] = acc[r][j];
    return;
  }
  if (e.acc) {
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < kPanel; ++j)
        e.acc[(row0 + r) * e.out_stride + col0 + j] = accumulator(acc[r][j], *e.stage, e.channel0 + row0 + r);
    return;
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < cols; ++j)
      e.out[(row0 + r) * e.out_stride + col0 + j] =
          finish_scalar(acc[r][j], *e.stage, e.channel0 + (e.channel_per_row ? row0 + r : col0 + j));
}


// A micro-tile: rows [row0, row0 + MR) of A (a points at row0) times the columns [col0, col0 + cols)
// of the packed B (b points at their first k-quad row), through the epilogue.
using PortableTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int,
                                const Epilogue&);

template <bool kBroadcastUnsigned>
PortableTileFn portable_tile_fn(int mr) {
  switch (mr) {
    case 1: return portable_tile<1, kBroadcastUnsigned>;
    case 2: return portable_tile<2, kBroadcastUnsigned>;
    case 3: return portable_tile<3, kBroadcastUnsigned>;
    default: return portable_tile<4, kBroadcastUnsigned>;
  }
}
static_assert(kPortableMR == 4);

template <bool kBroadcastUnsigned>
void gemm_rows_portable(const GemmOperands& g, int64_t row0, int rows, const Epilogue& e) {
  const PortableTileFn tile = portable_tile_fn<kBroadcastUnsigned>(rows);
  const int64_t panels = ceil_div(g.n, kPanel);
  for (int64_t p = 0; p < panels; ++p)
    tile(g.a8 + row0 * g.a_stride, g.a_stride, panel_8bit(g, p), g.kq_count, row0, p * kPanel,
         tile_cols(g, p * kPanel, kPanel), e);
}

}  // namespace

const GemmKernel& gemm_kernel_portable() {
  static const GemmKernel kernel{kPortableMR,
                                 /*a_int16=*/false,
                                 gemm_rows_portable<false>,
                                 gemm_rows_portable<true>,
                                 frame_image_portable,
                                 pack_quad_rows_portable,
                                 /*pack_conv_direct=*/nullptr,
                                 pool_requantize_portable,
                                 /*direct_conv=*/nullptr,
                                 /*requantize_rows=*/nullptr};
  return kernel;
}

}  // namespace qatlab::kernels
