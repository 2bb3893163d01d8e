// gemm_avx512vnni.cpp: the AVX-512 VNNI backend of the packed int8 GEMM (x86 only): one-panel and
// two-panel tiles on _mm512_dpbusd_epi32 ending in the 16-lane output stage (output_stage_avx512.h),
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

#include "quant/kernels/output_stage_avx512.h"

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

// A (MR rows, KQ*4) bytes, row stride a_stride; B one panel (KQ, 16, 4). Each k-quad row of the panel
// is one zmm (16 columns x 4 bytes); dpbusd adds the 4 products u8 x s8 of each column to its int32
// lane (no saturation). The unsigned operand is the broadcast A (fully connected: activations) or the
// panel B (conv: im2col activations).
// One row of a VNNI micro-tile for one k-quad: the row's 4 bytes of A broadcast to every lane.
template <bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"), always_inline)) inline void vnni_row_step(
    const uint8_t* a_quad, __m512i bv, __m512i& acc) {
  int32_t quad;
  std::memcpy(&quad, a_quad, sizeof quad);
  const __m512i av = _mm512_set1_epi32(quad);
  acc = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc, av, bv) : _mm512_dpbusd_epi32(acc, bv, av);
}

// The accumulators are named variables for the reason given at avx2_tile (with an array GCC 12
// copies each one to another register after every dpbusd).
template <int MR, bool kBroadcastUnsigned>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void vnni_tile(const uint8_t* a, int64_t a_stride,
                                                                           const uint8_t* b, int64_t kq_count,
                                                                           int64_t row0, int64_t col0, int cols,
                                                                           const Epilogue& e) {
  static_assert(MR >= 1 && MR <= 8);
  const __m512i zero = _mm512_setzero_si512();
  __m512i acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero, acc4 = zero, acc5 = zero, acc6 = zero, acc7 = zero;
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const __m512i bv = _mm512_loadu_si512(b + kq * kQuadBytes);
    const uint8_t* ak = a + kq * 4;
    vnni_row_step<kBroadcastUnsigned>(ak, bv, acc0);
    if constexpr (MR > 1) vnni_row_step<kBroadcastUnsigned>(ak + a_stride, bv, acc1);
    if constexpr (MR > 2) vnni_row_step<kBroadcastUnsigned>(ak + 2 * a_stride, bv, acc2);
    if constexpr (MR > 3) vnni_row_step<kBroadcastUnsigned>(ak + 3 * a_stride, bv, acc3);
    if constexpr (MR > 4) vnni_row_step<kBroadcastUnsigned>(ak + 4 * a_stride, bv, acc4);
    if constexpr (MR > 5) vnni_row_step<kBroadcastUnsigned>(ak + 5 * a_stride, bv, acc5);
    if constexpr (MR > 6) vnni_row_step<kBroadcastUnsigned>(ak + 6 * a_stride, bv, acc6);
    if constexpr (MR > 7) vnni_row_step<kBroadcastUnsigned>(ak + 7 * a_stride, bv, acc7);
  }
  const __m512i accs[8] = {acc0, acc1, acc2, acc3, acc4, acc5, acc6, acc7};
  finish_rows<MR, kBroadcastUnsigned>(accs, e, row0, col0, cols);
}

using VnniTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, int64_t, int64_t, int,
                            const Epilogue&);

// Where the tiles find their two panels' rows of B: k-quad kq of the first panel at first(kq), of the
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

// Two neighbouring panels at once (32 columns): per k-quad, two zmm loads of B and MR broadcasts of A
// feed 2 * MR dpbusd. With one panel the MR broadcasts and the load (MR + 1 loads for MR dpbusd) kept
// the load ports, not the dpbusd units, busy: the 1024^3 GEMM ran at ~34 % of the vpdpbusd peak.
// Same products and sums per column as vnni_tile, so the same int32 accumulators bit for bit. Columns
// past `cols` are computed and not stored.
template <int MR, bool kBroadcastUnsigned, class Rows>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx2"))) void vnni_tile2(const uint8_t* a, int64_t a_stride,
                                                                            const Rows b, int64_t kq_count,
                                                                            int64_t row0, int64_t col0, int cols,
                                                                            const Epilogue& e) {
  static_assert(MR >= 1 && MR <= 8);
  const __m512i zero = _mm512_setzero_si512();
  __m512i p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero;  // panel 0
  __m512i q0 = zero, q1 = zero, q2 = zero, q3 = zero, q4 = zero, q5 = zero, q6 = zero, q7 = zero;  // panel 1
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const uint8_t* bk = b.first(kq);
    const __m512i bv0 = _mm512_loadu_si512(bk);
    const __m512i bv1 = _mm512_loadu_si512(bk + b.second);
    const uint8_t* ak = a + kq * 4;
    const auto row = [&](int r, __m512i& acc0, __m512i& acc1) __attribute__((always_inline)) {
      int32_t quad;
      std::memcpy(&quad, ak + r * a_stride, sizeof quad);
      const __m512i av = _mm512_set1_epi32(quad);
      acc0 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc0, av, bv0) : _mm512_dpbusd_epi32(acc0, bv0, av);
      acc1 = kBroadcastUnsigned ? _mm512_dpbusd_epi32(acc1, av, bv1) : _mm512_dpbusd_epi32(acc1, bv1, av);
    };
    row(0, p0, q0);
    if constexpr (MR > 1) row(1, p1, q1);
    if constexpr (MR > 2) row(2, p2, q2);
    if constexpr (MR > 3) row(3, p3, q3);
    if constexpr (MR > 4) row(4, p4, q4);
    if constexpr (MR > 5) row(5, p5, q5);
    if constexpr (MR > 6) row(6, p6, q6);
    if constexpr (MR > 7) row(7, p7, q7);
  }
  const __m512i first[8] = {p0, p1, p2, p3, p4, p5, p6, p7}, second[8] = {q0, q1, q2, q3, q4, q5, q6, q7};
  finish_rows<MR, kBroadcastUnsigned>(first, e, row0, col0, std::min(cols, int{kPanel}));
  if (cols > kPanel) finish_rows<MR, kBroadcastUnsigned>(second, e, row0, col0 + kPanel, cols - kPanel);
}

template <bool kBroadcastUnsigned, class Rows>
using VnniTile2Fn = void (*)(const uint8_t*, int64_t, const Rows, int64_t, int64_t, int64_t, int, const Epilogue&);

template <bool kBroadcastUnsigned, class Rows>
VnniTile2Fn<kBroadcastUnsigned, Rows> vnni_tile2_fn(int mr) {
  switch (mr) {
    case 1: return vnni_tile2<1, kBroadcastUnsigned, Rows>;
    case 2: return vnni_tile2<2, kBroadcastUnsigned, Rows>;
    case 3: return vnni_tile2<3, kBroadcastUnsigned, Rows>;
    case 4: return vnni_tile2<4, kBroadcastUnsigned, Rows>;
    case 5: return vnni_tile2<5, kBroadcastUnsigned, Rows>;
    case 6: return vnni_tile2<6, kBroadcastUnsigned, Rows>;
    case 7: return vnni_tile2<7, kBroadcastUnsigned, Rows>;
    default: return vnni_tile2<8, kBroadcastUnsigned, Rows>;
  }
}

template <bool kBroadcastUnsigned>
VnniTileFn vnni_tile_fn(int mr) {
  switch (mr) {
    case 1: return vnni_tile<1, kBroadcastUnsigned>;
    case 2: return vnni_tile<2, kBroadcastUnsigned>;
    case 3: return vnni_tile<3, kBroadcastUnsigned>;
    case 4: return vnni_tile<4, kBroadcastUnsigned>;
    case 5: return vnni_tile<5, kBroadcastUnsigned>;
    case 6: return vnni_tile<6, kBroadcastUnsigned>;
    case 7: return vnni_tile<7, kBroadcastUnsigned>;
    default: return vnni_tile<8, kBroadcastUnsigned>;
  }
}
static_assert(kVnniMR == 8);

// Rows [row0, row0 + rows) of C: pairs of 8-bit panels in the two-panel tile; an odd last panel, and
// 4-bit panels (unfolded one at a time), in the one-panel tile.
template <bool kBroadcastUnsigned>
void gemm_rows_vnni(const GemmOperands& g, int64_t row0, int rows, const Epilogue& e) {
  const int64_t panels = ceil_div(g.n, kPanel), pb = panel_bytes(g);
  const uint8_t* a = g.a8 + row0 * g.a_stride;
  int64_t p = 0;
  if (!g.b_nibbles) {
    const auto tile2 = vnni_tile2_fn<kBroadcastUnsigned, PackedRows>(rows);
    for (; p + 1 < panels; p += 2)
      tile2(a, g.a_stride, PackedRows{g.b + p * pb, pb}, g.kq_count, row0, p * kPanel,
            tile_cols(g, p * kPanel, 2 * kPanel), e);
  }
  const VnniTileFn tile = vnni_tile_fn<kBroadcastUnsigned>(rows);
  for (; p < panels; ++p)
    tile(a, g.a_stride, panel_8bit(g, p), g.kq_count, row0, p * kPanel, tile_cols(g, p * kPanel, kPanel), e);
}

// The tap-major direct convolution (gemm_kernel.h): 32 positions at a time (the two-panel tile reading
// its rows from the channel-quad image), every block of 8 filter rows over them while they are in L1;
// the last block's positions past `positions` are computed and not stored.
void conv_taps_vnni(const uint8_t* quads, const int32_t* kq_offset, int64_t kq_count, const uint8_t* filter,
                    int64_t oc, int64_t positions, const PackedOutputStage& stage, int8_t* codes,
                    int64_t codes_stride) {
  const Epilogue e{&stage, 0, /*channel_per_row=*/true, codes, codes_stride};
  const int64_t a_stride = kq_count * 4;
  for (int64_t q0 = 0; q0 < positions; q0 += 2 * kPanel) {
    const TapRows b{quads + q0 * 4, kq_offset};
    const int cols = static_cast<int>(std::min<int64_t>(2 * kPanel, positions - q0));
    for (int64_t r0 = 0; r0 < oc; r0 += kVnniMR) {
      const int rows = static_cast<int>(std::min<int64_t>(kVnniMR, oc - r0));
      vnni_tile2_fn<false, TapRows>(rows)(filter + r0 * a_stride, a_stride, b, kq_count, r0, q0, cols, e);
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
