// gemm_kernel.h: the packed int8 GEMM's internals shared by its backends (internal to quant/): the
// layout constants, the Epilogue the micro-kernels end in, the one signature of a backend's GEMM
// (a block of rows times every column) and the table that picks a backend by kernel path.
//
// Shape letters as in int8_gemm.h: M x N the GEMM output, K the reduction length, KQ = ceil(K / 4) its
// quads, MR the rows of a micro-tile, C x H x W an image (Hp x Wp padded).
//
// A backend is one file per instruction set (gemm_portable.cpp, gemm_avx2.cpp, gemm_avx512vnni.cpp)
// that fills a GemmKernel: its tile rows, the form it wants A in, its GEMM for conv and for fully
// connected, and the packing and output-stage helpers the conv driver calls. PackedConvInt8 and
// PackedFullyConnectedInt8 (int8_gemm.cpp) hold no backend code: they call gemm_kernel(path).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/engine/int8_gemm.h"
#include "quant/engine/requantize.h"

namespace qatlab::kernels {

constexpr int64_t kPanel = 16;            // columns per packed panel of B
constexpr int64_t kQuadBytes = 64;        // one k-quad of a panel: 16 columns x 4 bytes
constexpr int64_t kNibbleQuadBytes = 32;  // the same in a 4-bit panel: 16 columns x 4 nibbles
constexpr int64_t kMaxK = 65536;          // K * 255 * 128 must fit in int32 (no overflow in any partial sum)
constexpr int kPortableMR = 4, kAvx2MR = 6, kVnniMR = 8;
constexpr int kMaxMR = 8;                 // the most tile rows of any backend (sizes the callers' scratch)

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Where the int32 sums of a GEMM go and how they become int8. Output element (i, j) of the GEMM is
// out[i * out_stride + j]; its channel is channel0 + i (conv: channel_per_row) or channel0 + j (fully
// connected). Tiles get this once by reference plus their first row and column.
// With `acc` set (a conv with a fused pool, channel_per_row), the tiles store the accumulators (sum
// plus folded bias, wrapped) at acc[i * out_stride + j] instead, for all the 8 or 16 columns of the
// tile (junk past the last real one: the buffer is whole panels wide), and `out` is not used.
// With `sums` set (the dynamic matmul, dynamic_gemm.h), the tiles store the raw int32 sums of the real
// columns at sums[i * out_stride + j]: no bias, no requantization; `stage` and `out` are not used.
struct Epilogue {
  const PackedOutputStage* stage;
  int64_t channel0;
  bool channel_per_row;
  int8_t* out;
  int64_t out_stride;
  int32_t* acc = nullptr;
  int32_t* sums = nullptr;
};

// The operands of one GEMM C = A * B: A (M, KQ*4) with row stride a_stride elements, as bytes (a8) or
// widened to int16 (a16, for a backend with a_int16 and 8-bit panels); B the packed panels, 8-bit
// (panels, KQ, 16, 4) or 4-bit (b_nibbles: panels, KQ, 2, 16; fully connected only). A backend whose
// tiles read 8-bit panels unfolds each 4-bit one into `unfolded` (KQ * 64 bytes) first.
struct GemmOperands {
  const uint8_t* a8 = nullptr;
  const int16_t* a16 = nullptr;
  int64_t a_stride = 0;
  const uint8_t* b = nullptr;
  bool b_nibbles = false;
  int64_t kq_count = 0;
  int64_t n = 0;  // columns of C
  uint8_t* unfolded = nullptr;
};

inline int64_t panel_bytes(const GemmOperands& g) {
  return g.kq_count * (g.b_nibbles ? kNibbleQuadBytes : kQuadBytes);
}
// The columns of C from col0 on that one tile of `width` columns covers.
inline int tile_cols(const GemmOperands& g, int64_t col0, int64_t width) {
  return static_cast<int>(width < g.n - col0 ? width : g.n - col0);
}

// The one micro-kernel signature: rows [row0, row0 + rows) of C (rows <= the backend's mr), every
// column, through the epilogue. The backend chooses its tile function once per call, not per tile.
using GemmRowsFn = void (*)(const GemmOperands& g, int64_t row0, int rows, const Epilogue& e);

// The conv driver's per-image helpers (PackedConvInt8::run_image), see the backends' definitions.
using FrameImageFn = void (*)(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                              uint8_t pad_u, uint8_t* padded);
using PackQuadRowsFn = void (*)(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                                uint8_t* b);
using PackConvDirectFn = void (*)(const uint8_t* img, const int32_t* k_offset, const ConvPanelSource* src,
                                  int64_t panels, int64_t kq_count, uint8_t* b);
using AccRequantizeFn = void (*)(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels,
                                 int64_t oh, int64_t ow, const PackedOutputStage& s, int8_t* y);
using DirectConvFn = void (*)(const uint8_t* img, const int32_t* tap_offset, int64_t pairs, const int32_t* w_pairs,
                              const PackedOutputStage& stage, int64_t channels, int64_t positions, int32_t* acc,
                              int64_t acc_stride);

// The tap-major direct convolution (PackedConvInt8: one group, stride S of 1 or 2 in both directions),
// which needs no im2col. The image is framed as channel quads: C4 = C rounded up to a multiple of 4
// (channels past C hold the padding code; their weights are 0), and for each quad cq and phase
// (py, px) a plane of Hq rows of Wq positions, 4 unsigned codes (the quad's channels) per position:
// 16 neighbouring positions are one 64-byte row of a panel.
// - Stride 1: one phase; the padded image's rows with a pitch of Wq = max(W + pad_w, OW) positions,
//   not Wp = W + 2 pad_w: the right padding of a row is the left padding of the next (both the
//   padding code), so each row stores its pad_w left columns, its pixels and only Wq - W - pad_w
//   right ones (0 unless the padding is wider than the filter's reach, KW - 1, and the output has
//   columns to the right of the image's), and pad_w more positions close the plane. A filter tap
//   reads column ox + kx < W + 2 pad_w, which past the pitch is the next row's left padding.
//   Plane length Hp * Wq + pad_w.
// - Stride 2: four phases, pixel (yy, xx) of the padded image in phase (yy % 2, xx % 2) at
//   (yy / 2, xx / 2): Hq = ceil(Hp / 2), Wq = ceil(Wp / 2), plane length Hq * Wq.
// The filter's K runs tap-major, k = (ky * KW + kx) * C4 + c, so k-quad kq = tap * C4/4 + cq reads its
// panel row at quads + kq_offset[kq] + 4 * q, kq_offset[kq] = 4 * ((cq * S * S + phase) * plane length
// + (ky / S) * Wq + kx / S). The GEMM's columns are the positions q = oy * Wq + ox of the output on the
// phase grid, (OH - 1) * Wq + OW of them; those with ox >= OW are computed and not stored.
// frame_quads writes 64 bytes of slack past the planes and uses `row` ((Wp + 16) * 4 bytes) for
// stride 2, where it may leave the phases a KH x KW filter does not read (py = 1 when KH = 1, px = 1
// when KW = 1) unwritten; conv_taps reads up to 4 * (Wq + 16) bytes past the planes.
using FrameQuadsFn = void (*)(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                              int64_t stride, int64_t Wq, int64_t KH, int64_t KW, uint8_t pad_u, uint8_t* quads,
                              uint8_t* row);

// filter (OC, KQ*4) signed bytes, tap-major; the segments of chunk c are
// segments[chunk_first[c] .. chunk_first[c + 1]); y (OC, OH * OW = ohw) the codes.
using ConvTapsFn = void (*)(const uint8_t* quads, const int32_t* kq_offset, int64_t kq_count, const uint8_t* filter,
                            int64_t oc, int64_t positions, const PackedOutputStage& stage,
                            const TapSegment* segments, const int32_t* chunk_first, int8_t* y, int64_t ohw);

struct GemmKernel {
  int mr;                        // rows of C per GemmRowsFn call
  bool a_int16;                  // 8-bit panels take A widened to int16 (4-bit panels always take bytes)
  GemmRowsFn conv;               // A = signed filter rows, B = unsigned im2col panels, a channel per row
  GemmRowsFn fully_connected;    // A = unsigned activations, B = signed weight panels, a channel per column
  FrameImageFn frame_image;      // image -> padded unsigned codes
  PackQuadRowsFn pack_quad_rows; // 4 im2col rows -> one k-quad of every panel
  PackConvDirectFn pack_conv_direct;  // panels straight from the padded image (stride_w 1), or null
  AccRequantizeFn pool_requantize;    // fused 2x2 max pool over accumulators, then requantize
  // The direct convolution (PackedConvInt8::direct_conv()) and its output stage, or null.
  DirectConvFn direct_conv;
  AccRequantizeFn requantize_rows;
  // The tap-major direct convolution (above), or null.
  FrameQuadsFn frame_quads = nullptr;
  ConvTapsFn conv_taps = nullptr;
};

// The backend of `path` (Portable, Avx2 or Avx512Vnni; the caller has checked the CPU runs it).
const GemmKernel& gemm_kernel(KernelPath path);

// The backends (gemm_portable.cpp, gemm_avx2.cpp, gemm_avx512vnni.cpp; the last two on x86 only).
const GemmKernel& gemm_kernel_portable();
const GemmKernel& gemm_kernel_avx2();
const GemmKernel& gemm_kernel_avx512vnni();

// ------------------------------------------------------------------------ packing (pack_portable.cpp)
// Panel p of g as the 8-bit tiles read it: in place, or a 4-bit panel unfolded into g.unfolded.
const uint8_t* panel_8bit(const GemmOperands& g, int64_t p);
// 8-bit panels -> 4-bit panels (int8_gemm.h): `halves` half rows of 32 bytes each fold onto 16 bytes.
void fold_to_nibbles(const uint8_t* b8, int64_t halves, uint8_t* b4);
// The reverse for one panel of KQ k-quads, each nibble sign-extended back to a byte.
void unfold_nibble_panel(const uint8_t* b4, int64_t kq_count, uint8_t* b8);
void frame_image_portable(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w,
                          uint8_t pad_u, uint8_t* padded);
void pack_quad_rows_portable(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                             uint8_t* b);

// ------------------------------------------------------------------- output stage (output_stage.cpp)
// The int32 sum plus the folded bias, wrapped as an int32 accumulator would (unsigned add).
inline int32_t accumulator(int32_t sum, const PackedOutputStage& s, int64_t ch) {
  return static_cast<int32_t>(static_cast<uint32_t>(sum) + static_cast<uint32_t>(s.folded_bias[ch]));
}
// The shared requantize() of an accumulator of channel ch.
inline int8_t requantize_channel(int32_t acc, const PackedOutputStage& s, int64_t ch) {
  return requantize(acc, s.multiplier[ch], s.shift[ch], s.output_offset, s.output_offset + s.clamp_lo,
                    s.output_offset + s.clamp_hi);
}
// The scalar output stage of a sum.
inline int8_t finish_scalar(int32_t sum, const PackedOutputStage& s, int64_t ch) {
  return requantize_channel(accumulator(sum, s, ch), s, ch);
}
PackedOutputStage make_output_stage(int64_t channels, int64_t padded, const std::vector<int64_t>& weight_sums,
                                    const int32_t* bias, int32_t input_offset, int32_t output_offset,
                                    const std::vector<int32_t>& multipliers, const std::vector<int>& shifts,
                                    int32_t act_min, int32_t act_max);
void pool_requantize_portable(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels, int64_t oh,
                              int64_t ow, const PackedOutputStage& s, int8_t* y);

// --------------------------------------------- AVX2 helpers shared by the AVX2 and VNNI backends (x86)
// pack_avx2.cpp
void frame_image_avx2(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w, uint8_t pad_u,
                      uint8_t* padded);
void pack_quad_rows_avx2(const uint8_t* rows, int64_t row_len, int64_t panels, int64_t kq_count, int64_t kq,
                         uint8_t* b);
void pack_conv_direct_avx2(const uint8_t* img, const int32_t* k_offset, const ConvPanelSource* src, int64_t panels,
                           int64_t kq_count, uint8_t* b);
void frame_quads_avx2(const int8_t* x, int64_t C, int64_t H, int64_t W, int64_t pad_h, int64_t pad_w, int64_t stride,
                      int64_t Wq, int64_t KH, int64_t KW, uint8_t pad_u, uint8_t* quads, uint8_t* row);
// output_stage_avx2.cpp
void pool_requantize_avx2(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels, int64_t oh,
                          int64_t ow, const PackedOutputStage& s, int8_t* y);
void requantize_rows_avx2(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels, int64_t oh,
                          int64_t ow, const PackedOutputStage& s, int8_t* y);
// conv_direct_avx2.cpp
void direct_conv_avx2(const uint8_t* img, const int32_t* tap_offset, int64_t pairs, const int32_t* w_pairs,
                      const PackedOutputStage& stage, int64_t channels, int64_t positions, int32_t* acc,
                      int64_t acc_stride);

}  // namespace qatlab::kernels
