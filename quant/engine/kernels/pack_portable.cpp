// pack_portable.cpp: the packed GEMM's layout in plain C++: an image framed by its padding code as
// unsigned codes, im2col rows packed into k-quad panels, and 8-bit panels folded to 4 bits and back
// (see int8_gemm.h for the layouts). The portable backend runs these; so do the tests on every CPU.
#include <cstring>

#include "quant/engine/kernels/gemm_kernel.h"

namespace qatlab::kernels {

// Packs 4 im2col rows of unsigned codes (each >= panels * 16 long, row stride row_len) into k-quad
// `kq` of every panel.
void pack_quad_rows_portable(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                             uint8_t* b) {
  for (int64_t p = 0; p < panels; ++p) {
    uint8_t* dst = b + (p * kq_count + kq) * kQuadBytes;
    for (int64_t j = 0; j < kPanel; ++j)
      for (int64_t t = 0; t < 4; ++t) dst[j * 4 + t] = rows[t * row_len + p * kPanel + j];
  }
}

// 8-bit panels -> 4-bit panels (int8_gemm.h): `halves` half rows of 32 bytes (8 columns x 4 k) each
// fold onto 16 bytes, byte b taking byte b of the half row in its low nibble and byte b + 16 in its
// high nibble. The codes must fit 4 bits.
void fold_to_nibbles(const uint8_t* b8, int64_t halves, uint8_t* b4) {
  for (int64_t h = 0; h < halves; ++h)
    for (int64_t b = 0; b < 16; ++b)
      b4[h * 16 + b] = static_cast<uint8_t>((b8[h * 32 + b] & 0x0F) | (b8[h * 32 + 16 + b] << 4));
}

// The reverse for one panel of KQ k-quads (2 * KQ half rows), each nibble sign-extended back to a byte
// (shifted to the top of a byte, then arithmetically back down): the 8-bit panel the portable and
// VNNI tiles read.
void unfold_nibble_panel(const uint8_t* b4, int64_t kq_count, uint8_t* b8) {
  for (int64_t h = 0; h < 2 * kq_count; ++h)
    for (int64_t b = 0; b < 16; ++b) {
      const uint8_t v = b4[h * 16 + b];
      b8[h * 32 + b] = static_cast<uint8_t>(static_cast<int8_t>(v << 4) >> 4);
      b8[h * 32 + 16 + b] = static_cast<uint8_t>(static_cast<int8_t>(v) >> 4);
    }
}

// The image (C, H, W) of int8 codes as unsigned codes (x + 128: the sign bit flipped), framed by the
// padding code pad_u (the input zero point, also unsigned) into padded (C, Hp, Wp).
void frame_image_portable(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                          uint8_t pad_u, uint8_t* padded) {
  const int64_t Hp = H + 2 * pad_h, Wp = W + 2 * pad_w;
  std::memset(padded, pad_u, C * Hp * Wp);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t iy = 0; iy < H; ++iy) {
      uint8_t* d = padded + (c * Hp + iy + pad_h) * Wp + pad_w;
      const int8_t* s = x + (c * H + iy) * W;
      for (int64_t ix = 0; ix < W; ++ix) d[ix] = static_cast<uint8_t>(s[ix]) ^ 0x80;
    }
}

const uint8_t* panel_8bit(const GemmOperands& g, int64_t p) {
  if (!g.b_nibbles) return g.b + p * panel_bytes(g);
  unfold_nibble_panel(g.b + p * panel_bytes(g), g.kq_count, g.unfolded);
  return g.unfolded;
}

}  // namespace qatlab::kernels
