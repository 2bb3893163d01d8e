// pack_avx2.cpp: the packed GEMM's conv packing with AVX2 (x86 only), byte for byte that of
// pack_portable.cpp: framing an image, im2col rows into panels, and panels gathered straight from the
// padded image when stride_w == 1. The AVX2 and AVX-512 VNNI backends both use it.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include <cstring>

#include "quant/engine/kernels/gemm_kernel.h"

namespace qatlab::kernels {

namespace {

// Interleaves 4 rows x 16 columns of codes into 16 column quads at dst.
__attribute__((target("avx2"), always_inline)) inline void interleave_quads(__m128i r0, __m128i r1, __m128i r2,
                                                                            __m128i r3, uint8_t* dst) {
  const __m128i r01_lo = _mm_unpacklo_epi8(r0, r1), r01_hi = _mm_unpackhi_epi8(r0, r1);  // (k0 k1) per column
  const __m128i r23_lo = _mm_unpacklo_epi8(r2, r3), r23_hi = _mm_unpackhi_epi8(r2, r3);  // (k2 k3) per column
  __m128i* out = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(out, _mm_unpacklo_epi16(r01_lo, r23_lo));      // columns 0..3
  _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(r01_lo, r23_lo));  // 4..7
  _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(r01_hi, r23_hi));  // 8..11
  _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(r01_hi, r23_hi));  // 12..15
}

// 16 bytes of one im2col row for one panel, straight from the padded image: one load per run of
// the panel's columns that lies in one output row, later runs blended over earlier ones.
template <int S>
__attribute__((target("avx2"), always_inline)) inline __m128i gather_panel_row(const uint8_t* base,
                                                                               const int32_t* load_offset,
                                                                               const __m128i* masks) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + load_offset[0]));
  for (int s = 1; s < S; ++s)
    v = _mm_blendv_epi8(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + load_offset[s])), masks[s]);
  return v;
}

template <int S>
__attribute__((target("avx2"))) void pack_panel_direct(const uint8_t* img, const int32_t* k_offset,
                                                       const ConvPanelSource& ps, int64_t kq_count,
                                                       uint8_t* dst) {
  // Byte j of masks[s] is set for j >= seg_start[s]: 16 bytes of {16 x 0, 16 x 0xFF} from 16 - start.
  alignas(32) static const uint8_t kStep[32] = {0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,
                                                0,    0,    0,    0,    0,    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                                0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  __m128i masks[4];
  for (int s = 0; s < S; ++s) masks[s] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kStep + 16 - ps.seg_start[s]));
  for (int64_t kq = 0; kq < kq_count; ++kq) {
    const int32_t* ko = k_offset + kq * 4;
    interleave_quads(gather_panel_row<S>(img + ko[0], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[1], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[2], ps.load_offset, masks),
                     gather_panel_row<S>(img + ko[3], ps.load_offset, masks), dst + kq * kQuadBytes);
  }
}

// 16 bytes of input row `src` (16 pixels of one channel), or what is left of the input before x_end.
__attribute__((target("avx2"), always_inline)) inline __m128i load_pixels(const int8_t* src, const int8_t* x_end) {
  if (x_end - src >= 16) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  alignas(16) int8_t tail[16] = {};
  std::memcpy(tail, src, x_end - src);
  return _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
}

}  // namespace

// The AVX2 form of frame_image_portable. Each padded row is written in address order with 16-byte
// stores that may run past their part (left padding, pixels, right padding): the next store, or
// the next row, rewrites what one spills, and the last row spills into the scratch's slack. Input
// rows are read 16 bytes at a time too, except near the end of the input, which must not be
// overrun.
__attribute__((target("avx2"))) void frame_image_avx2(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                                                      int64_t pad_w, uint8_t pad_u, uint8_t* padded) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80)), pad = _mm_set1_epi8(static_cast<char>(pad_u));
  const int8_t* x_end = x + C * H * W;
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t yy = 0; yy < Hp; ++yy) {
      uint8_t* row = padded + (c * Hp + yy) * Wp;
      if (yy < pad_h || yy >= pad_h + H) {
        for (int64_t j = 0; j < Wp; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + j), pad);
        continue;
      }
      for (int64_t j = 0; j < pad_w; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + j), pad);
      const int8_t* src = x + (c * H + yy - pad_h) * W;
      for (int64_t j = 0; j < W; j += 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(row + pad_w + j), _mm_xor_si128(load_pixels(src + j, x_end), flip));
      for (int64_t j = 0; j < pad_w; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(row + pad_w + W + j), pad);
    }
  }
}

// The image as channel-quad planes for the tap-major direct convolution (gemm_kernel.h), framed by the
// padding code. Each padded row of a quad is interleaved 16 pixels (64 bytes) at a time. Stride 1
// writes it in place (its pad_w left columns, the pixels, and the right padding that the next row's
// left padding does not already provide), in address order, spilling as frame_image_avx2's rows do (into the next
// row or the plane's closing padding, which rewrite it, and past the last plane into the 64 bytes of
// slack); stride 2 writes it whole to `row` and deals its even and odd pixels to the two phases' rows,
// skipping the phases a KH x KW filter never reads (a 1x1 projection shortcut reads one of four).
__attribute__((target("avx2"))) void frame_quads_avx2(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h,
                                                      int64_t pad_w, int64_t stride, int64_t Wq, int64_t KH,
                                                      int64_t KW, uint8_t pad_u, uint8_t* quads, uint8_t* row) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w, S = stride;
  const int64_t Hq = (Hp + S - 1) / S, quad_count = (C + 3) / 4;
  const int64_t plane = S == 1 ? Hp * Wq + pad_w : Hq * Wq;  // positions per plane
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80)), pad = _mm_set1_epi8(static_cast<char>(pad_u));
  const int8_t* x_end = x + C * H * W;
  const auto fill = [&](uint8_t* dst, int64_t bytes) {
    for (int64_t j = 0; j < bytes; j += 16) _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), pad);
  };
  // Row y of the input, channels 4cq .. 4cq + 3, interleaved into dst (W positions).
  const auto interleave_row = [&](int64_t cq, int64_t y, uint8_t* dst) {
    const int8_t* src = x + (4 * cq * H + y) * W;  // channel 4cq, row y; the others H * W apart
    for (int64_t j = 0; j < W; j += 16) {
      const auto channel = [&](int i) {
        return 4 * cq + i < C ? _mm_xor_si128(load_pixels(src + i * H * W + j, x_end), flip) : pad;
      };
      interleave_quads(channel(0), channel(1), channel(2), channel(3), dst + j * 4);
    }
  };
  for (int64_t cq = 0; cq < quad_count; ++cq) {
    if (S == 1) {
      uint8_t* dst = quads + cq * plane * 4;
      for (int64_t yy = 0; yy < Hp; ++yy, dst += Wq * 4) {
        if (yy < pad_h || yy >= pad_h + H) {
          fill(dst, Wq * 4);
        } else {
          fill(dst, pad_w * 4);
          interleave_row(cq, yy - pad_h, dst + pad_w * 4);
          fill(dst + (pad_w + W) * 4, (Wq - W - pad_w) * 4);
        }
      }
      fill(dst, pad_w * 4);  // the last row's right padding
      continue;
    }
    for (int64_t yy = 0; yy < Hp; ++yy) {
      // Pixel xx of the row goes to phase (yy % 2, xx % 2), position (yy / 2) * Wq + xx / 2. A filter
      // of one row or column reads only the even rows or columns (phases with py or px of 0).
      const int64_t py = yy % 2, yq = yy / 2;
      if (py == 1 && KH == 1) continue;
      if (yy < pad_h || yy >= pad_h + H) {
        fill(row, Wp * 4);
      } else {
        fill(row, pad_w * 4);
        interleave_row(cq, yy - pad_h, row + pad_w * 4);
        fill(row + (pad_w + W) * 4, pad_w * 4);
      }
      uint8_t* even = quads + ((cq * 4 + py * 2) * Hq + yq) * Wq * 4;
      uint8_t* odd = quads + ((cq * 4 + py * 2 + 1) * Hq + yq) * Wq * 4;
      for (int64_t xq = 0; xq < Wq; ++xq) std::memcpy(even + 4 * xq, row + 8 * xq, 4);
      if (KW > 1)  // an odd Wp: the last one is the row's junk, unused
        for (int64_t xq = 0; xq < Wq; ++xq) std::memcpy(odd + 4 * xq, row + 8 * xq + 4, 4);
    }
    if (Hp % 2 == 1 && KH > 1) {  // an odd Hp leaves the last row of the odd phases unused
      std::memset(quads + ((cq * 4 + 2) * Hq + Hq - 1) * Wq * 4, 0, Wq * 4);
      std::memset(quads + ((cq * 4 + 3) * Hq + Hq - 1) * Wq * 4, 0, Wq * 4);
    }
  }
}

// The SIMD form of pack_quad_rows_portable.
__attribute__((target("avx2"))) void pack_quad_rows_avx2(const uint8_t* rows, int64_t row_len, int64_t panels,
                                                         int64_t kq_count, int64_t kq, uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    const uint8_t* src = rows + p * kPanel;
    interleave_quads(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + row_len)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * row_len)),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 3 * row_len)),
                     b + (p * kq_count + kq) * kQuadBytes);
  }
}

// All panels (panels, KQ, 16, 4) of one group's im2col matrix straight from its padded image
// (stride_w == 1); reads at most 15 bytes past the last pixel used (the scratch has slack).
void pack_conv_direct_avx2(const uint8_t* img, const int32_t* k_offset, const ConvPanelSource* src,
                           int64_t panels, int64_t kq_count, uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* dst = b + p * kq_count * kQuadBytes;
    switch (src[p].segments) {
      case 1: pack_panel_direct<1>(img, k_offset, src[p], kq_count, dst); break;
      case 2: pack_panel_direct<2>(img, k_offset, src[p], kq_count, dst); break;
      case 3: pack_panel_direct<3>(img, k_offset, src[p], kq_count, dst); break;
      default: pack_panel_direct<4>(img, k_offset, src[p], kq_count, dst); break;
    }
  }
}

}  // namespace qatlab::kernels

#endif  // x86
