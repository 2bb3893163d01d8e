// gemm_avx512vnni.cpp: the AVX-512 VNNI backend of the packed int8 GEMM (x86 only): tiles of one to
// three panels on _mm512_dpbusd_epi32 ending in the 16-lane output stage (output_stage_avx512.h),
// and its GemmKernel entry (gemm_kernel.h); its packing and fused-pool stage are the AVX2 ones. 4-bit
// panels are unfolded one at a time and run through the one-panel tile, so this path shares its weight
// handling with the portable one.
//
// The functions carry __attribute__((target(...))) so that the file builds for baseline x86-64; they
// run only after kernel_path_supported() said yes.
#if defined(__x86_64__) || defined(__i386__)
#include <algorithm>
#include <cassert>
#include <cstring>

#include "quant/engine/kernels/output_stage_avx512.h"

namespace qatlab::kernels {

namespace {

// The epilogue of a tile's rows over its 16 columns from col0 (accs[r] the sums of row row0 + r). The
// conv form (A the filter) has a channel per row and makes each row's stage; the fully connected form
// (A the activations) has a channel per lane and makes one stage for all the rows, from the columns'
// parameters. Pointers and strides are copied to locals first: the byte stores may alias the
// Epilogue and the stage, and everything read through them would be reloaded after each store.
template <int MR, bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw"), always_inline)) inline void finish_rows(
    const __m512i (&accs)[8], const Epilogue& e, int64_t row0, int64_t col0, int cols) {
  const __mmask16 lanes = first_lanes(cols);
  const int64_t stride = e.out_stride;
  if (e.sums) {  // raw sums of the real columns
    int32_t* dst = e.sums + row0 * stride + col0;
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_epi32(dst + r * stride, lanes, accs[r]);
    return;
  }
  const PackedOutputStage& s = *e.stage;
  // A conv row's parameters (PackedOutputStage::rows), from row0's channel on.
  constexpr int64_t kRowParams = PackedOutputStage::kParams * 8;
  const auto row_params = [&] { return s.rows.data() + (e.channel0 + row0) * kRowParams; };
  if (e.acc) {  // a conv with a fused pool: the accumulators of all 16 columns
    assert(e.channel_per_row);
    int32_t* dst = e.acc + row0 * stride + col0;
    const int32_t* rows = row_params();
    for (int r = 0; r < MR; ++r)
      _mm512_storeu_si512(dst + r * stride, _mm512_add_epi32(accs[r], _mm512_set1_epi32(rows[r * kRowParams])));
    return;
  }
  const Clamp16 clamp = clamp16(s);
  int8_t* dst = e.out + row0 * stride + col0;
  if constexpr (kBroadcastUnsigned) {
    const Stage16<LaneRequantize> stage = column_stage16(s, e.channel0 + col0);
    for (int r = 0; r < MR; ++r)
      _mm512_mask_cvtepi32_storeu_epi8(dst + r * stride, lanes, requantize16(accs[r], stage, clamp));
  } else {
    const int32_t* rows = row_params();
    for (int r = 0; r < MR; ++r)
      _mm512_mask_cvtepi32_storeu_epi8(dst + r * stride, lanes,
                                       requantize16(accs[r], row_stage16(rows + r * kRowParams), clamp));
  }
}

// Where the tiles find their panels' rows of B: k-quad kq of the first panel at first(kq), of the
// second `second` bytes after it. Packed panels (panels, KQ, 16, 4), or the tap-major direct
// convolution's channel-quad image (gemm_kernel.h), whose panels are 16 neighbouring positions.
struct PackedRows {
  const uint8_t* b;
  int64_t second;  // the bytes of one panel
  const uint8_t* first(int64_t kq) const { return b + kq * kQuadBytes; }
};
struct TapRows {
  const uint8_t* quads;      // at the tile's first position
  const int32_t* kq_offset;  // (KQ)
  static constexpr int64_t second = kQuadBytes;  // 16 positions x 4 channels further
  const uint8_t* first(int64_t kq) const { return quads + kq_offset[kq]; }
};

// Where a tile's sums go: the GEMM's Epilogue (finish_rows), or the tap-major convolution's output
// rows (finish_taps). Called once per panel with the MR accumulators of its 16 columns from col0.
template <bool kBroadcastUnsigned>
struct EpilogueOut {
  const Epilogue& e;
  template <int MR>
  __attribute__((always_inline)) void finish(const __m512i (&accs)[8], int64_t row0, int64_t col0, int cols) const {
    finish_rows<MR, kBroadcastUnsigned>(accs, e, row0, col0, cols);
  }
};

// The tap-major convolution's output stage: each row's 16 codes narrowed once, then stored by the
// segments of their chunk (gemm_kernel.h: one masked store per output row the chunk touches), so
// the junk positions never reach memory.
struct TapOut {
  const PackedOutputStage& stage;
  const TapSegment* segments;
  const int32_t* chunk_first;
  int8_t* y;
  int64_t ohw;
  template <int MR>
  __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline)) void finish(const __m512i (&accs)[8],
                                                                                   int64_t row0, int64_t col0,
                                                                                   int /*cols*/) const {
    constexpr int64_t kRowParams = PackedOutputStage::kParams * 8;
    const int32_t* rows = stage.rows.data() + row0 * kRowParams;
    const TapSegment* seg = segments + chunk_first[col0 / kPanel];
    const int count = static_cast<int>(segments + chunk_first[col0 / kPanel + 1] - seg);
    const Clamp16 clamp = clamp16(stage);
    int8_t* dst = y + row0 * ohw;
    for (int r = 0; r < MR; ++r, dst += ohw) {
      const __m128i codes = _mm512_cvtepi32_epi8(requantize16(accs[r], row_stage16(rows + r * kRowParams), clamp));
      for (int i = 0; i < count; ++i) _mm_mask_storeu_epi8(dst + seg[i].offset, seg[i].mask, codes);
    }
  }
};

// A (MR rows, KQ*4) bytes, row stride a_stride, times kPanels (1 to 3) neighbouring panels of B (16
// columns each): per k-quad, one zmm load of B per panel (16 columns x 4 bytes) and MR broadcasts of
// A's 4 bytes feed kPanels * MR dpbusd, which add the 4 products u8 x s8 of each column to its int32
// lane (no saturation). The unsigned operand is the broadcast A (fully connected: activations) or B
// (conv: im2col or framed activations). With one panel the MR broadcasts and the load (MR + 1 loads
// for MR dpbusd) kept the load ports, not the dpbusd units, busy: the 1024^3 GEMM ran at ~34 % of the
// vpdpbusd peak; two or three panels share the broadcasts (three: 24 accumulators, 3 loads and 8
// broadcasts per 24 dpbusd). Columns past `cols` are computed and not stored.
// The accumulators are named variables for the reason given at avx2_tile (with an array GCC 12
// copies each one to another register after every dpbusd).
template <int MR, int kPanels, bool kBroadcastUnsigned, class Rows, class Out>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void vnni_tile(const uint8_t* a, int64_t a_stride,
                                                                           const Rows b, int64_t kq_count,
                                                                           int64_t row0, int64_t col0, int cols,
                                                                           const Out& out) {
  static_assert(MR >= 1 && MR <= 8 && kPanels >= 1 && kPanels <= 3);
  const __m512i zero = _mm512_setzero_si512();
  __m512i p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero;  // panel 0
  __m512i q0 = zero, q1 = zero, q2 = zero, q3 = zero, q4 = zero, q5 = zero, q6 = zero, q7 = zero;  // panel 1
  __m512i u0 = zero, u1 = zero, u2 = zero, u3 = zero, u4 = zero, u5 = zero, u6 = zero, u7 = zero;  // panel 2
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const uint8_t* bk = b.first(kq);
    const __m512i bv0 = _mm512_loadu_si512(bk);
    const __m512i bv1 = kPanels >= 2 ? _mm512_loadu_si512(bk + b.second) : zero;
    const __m512i bv2 = kPanels >= 3 ? _mm512_loadu_si512(bk + 2 * b.second) : zero;
    const uint8_t* ak = a + kq * 4;
    const auto row = [&](int r, __m512i& acc0, __m512i& acc1, __m512i& acc2) __attribute__((always_inline)) {
      int32_t quad;
      std::memcpy(&quad, ak + r * a_stride, sizeof quad);
      const __m512i av = _mm512_set1_epi32(quad);
      acc0 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc0, av, bv0) : _mm512_dpbusd_epi32(acc0, bv0, av);
      if constexpr (kPanels >= 2)
        acc1 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc1, av, bv1) : _mm512_dpbusd_epi32(acc1, bv1, av);
      if constexpr (kPanels >= 3)
        acc2 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc2, av, bv2) : _mm512_dpbusd_epi32(acc2, bv2, av);
    };
    row(0, p0, q0, u0);
    if constexpr (MR > 1) row(1, p1, q1, u1);
    if constexpr (MR > 2) row(2, p2, q2, u2);
    if constexpr (MR > 3) row(3, p3, q3, u3);
    if constexpr (MR > 4) row(4, p4, q4, u4);
    if constexpr (MR > 5) row(5, p5, q5, u5);
    if constexpr (MR > 6) row(6, p6, q6, u6);
    if constexpr (MR > 7) row(7, p7, q7, u7);
  }
  const __m512i first[8] = {p0, p1, p2, p3, p4, p5, p6, p7};
  out.template finish<MR>(first, row0, col0, std::min(cols, int{kPanel}));
  if constexpr (kPanels >= 2) {
    const __m512i second[8] = {q0, q1, q2, q3, q4, q5, q6, q7};
    if (cols > kPanel) out.template finish<MR>(second, row0, col0 + kPanel, static_cast<int>(std::min<int64_t>(cols - kPanel, kPanel)));
  }
  if constexpr (kPanels >= 3) {
    const __m512i third[8] = {u0, u1, u2, u3, u4, u5, u6, u7};
    if (cols > 2 * kPanel) out.template finish<MR>(third, row0, col0 + 2 * kPanel, cols - 2 * kPanel);
  }
}

template <int kPanels, bool kBroadcastUnsigned, class Rows, class Out>
using VnniTileFn = void (*)(const uint8_t*, int64_t, const Rows, int64_t, int64_t, int64_t, int, const Out&);

template <int kPanels, bool kBroadcastUnsigned, class Rows, class Out>
VnniTileFn<kPanels, kBroadcastUnsigned, Rows, Out> vnni_tile_fn(int mr) {
  switch (mr) {
    case 1: return vnni_tile<1, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 2: return vnni_tile<2, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 3: return vnni_tile<3, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 4: return vnni_tile<4, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 5: return vnni_tile<5, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 6: return vnni_tile<6, kPanels, kBroadcastUnsigned, Rows, Out>;
    case 7: return vnni_tile<7, kPanels, kBroadcastUnsigned, Rows, Out>;
    default: return vnni_tile<8, kPanels, kBroadcastUnsigned, Rows, Out>;
  }
}
static_assert(kVnniMR == 8);

// Rows [row0, row0 + rows) of C: pairs of 8-bit panels in the two-panel tile; an odd last panel, and
// 4-bit panels (unfolded one at a time), in the one-panel tile.
template <bool kBroadcastUnsigned>
void gemm_rows_vnni(const GemmOperands& g, int64_t row0, int rows, const Epilogue& e) {
  using Out = EpilogueOut<kBroadcastUnsigned>;
  const Out out{e};
  const int64_t panels = ceil_div(g.n, kPanel), pb = panel_bytes(g);
  const uint8_t* a = g.a8 + row0 * g.a_stride;
  int64_t p = 0;
  if (!g.b_nibbles) {
    const auto tile2 = vnni_tile_fn<2, kBroadcastUnsigned, PackedRows, Out>(rows);
    for (; p + 1 < panels; p += 2)
      tile2(a, g.a_stride, PackedRows{g.b + p * pb, pb}, g.kq_count, row0, p * kPanel,
            tile_cols(g, p * kPanel, 2 * kPanel), out);
  }
  const auto tile = vnni_tile_fn<1, kBroadcastUnsigned, PackedRows, Out>(rows);
  for (; p < panels; ++p)
    tile(a, g.a_stride, PackedRows{panel_8bit(g, p), pb}, g.kq_count, row0, p * kPanel,
         tile_cols(g, p * kPanel, kPanel), out);
}

// The tap-major direct convolution (gemm_kernel.h): 48 positions at a time (the three-panel tile reading
// its rows from the channel-quad image), every block of 8 filter rows over them while they are in L1;
// a last chunk of at most 32 positions in the two- or one-panel tile.
constexpr int kTapPanels = 3;  // panels per tile of the tap-major convolution

void conv_taps_vnni(const uint8_t* quads, const int32_t* kq_offset, int64_t kq_count, const uint8_t* filter,
                    int64_t oc, int64_t positions, const PackedOutputStage& stage, const TapSegment* segments,
                    const int32_t* chunk_first, int8_t* y, int64_t ohw) {
  const TapOut out{stage, segments, chunk_first, y, ohw};
  const int64_t a_stride = kq_count * 4;
  for (int64_t q0 = 0; q0 < positions; q0 += kTapPanels * kPanel) {
    const TapRows b{quads + q0 * 4, kq_offset};
    const int cols = static_cast<int>(std::min<int64_t>(kTapPanels * kPanel, positions - q0));
    for (int64_t r0 = 0; r0 < oc; r0 += kVnniMR) {
      const int rows = static_cast<int>(std::min<int64_t>(kVnniMR, oc - r0));
      const uint8_t* a = filter + r0 * a_stride;
      if (cols > 2 * kPanel)
        vnni_tile_fn<3, false, TapRows, TapOut>(rows)(a, a_stride, b, kq_count, r0, q0, cols, out);
      else if (cols > kPanel)
        vnni_tile_fn<2, false, TapRows, TapOut>(rows)(a, a_stride, b, kq_count, r0, q0, cols, out);
      else
        vnni_tile_fn<1, false, TapRows, TapOut>(rows)(a, a_stride, b, kq_count, r0, q0, cols, out);
    }
  }
}

}  // namespace

const GemmKernel& gemm_kernel_avx512vnni() {
  static const GemmKernel kernel{kVnniMR,
                                 /*a_int16=*/false,
                                 gemm_rows_vnni<false>,
                                 gemm_rows_vnni<true>,
                                 frame_image_avx2,
                                 pack_quad_rows_avx2,
                                 pack_conv_direct_avx2,
                                 pool_requantize_avx2,
                                 /*direct_conv=*/nullptr,
                                 /*requantize_rows=*/nullptr,
                                 frame_quads_avx2,
                                 conv_taps_vnni};
  return kernel;
}

}  // namespace qatlab::kernels

#endif  // x86
