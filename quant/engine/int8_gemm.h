// int8_gemm.h: the optimized int8 conv and fully connected kernels (packed weights, blocked GEMM,
// AVX2 / AVX-512 VNNI / portable paths chosen at run time), bit-identical to int8_kernels.h. The
// classes here are the drivers (int8_gemm.cpp); each backend's micro-kernels, packing and output
// stages are in quant/engine/kernels/ (gemm_kernel.h), the kernel paths in quant/engine/kernels/kernel_path.h.
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups, K = C/G * KH * KW (or IN) the reduction length, IN / OUT features.
//
// How it works (the arithmetic is the reference's; only the order of the sums changes):
// - Activations are moved to unsigned codes u = x + 128 (in [0, 255]) and the weights stay signed,
//   which is the operand order of the VNNI instruction (u8 x s8). Since
//     sum_k (x_k + input_offset) * w_k = sum_k u_k * w_k + (input_offset - 128) * sum_k w_k,
//   the second term is folded, once, into a per-channel int32 bias:
//     folded_bias[oc] = bias[oc] + (input_offset - 128) * sum_k w[oc, k]   (wrapped to int32).
//   Convolution padding holds the input zero point, i.e. u = zero_point + 128.
// - The GEMM is C (M x N) = A (M x K) * B (K x N) with K cut in quads of 4. B is packed in panels of
//   16 columns, [panel][K/4][16][4] bytes, so one 64-byte row of a panel is 16 columns x 4 k. A is
//   read row by row, 4 k at a time, and broadcast. Conv: A = filter (OC x K), B = im2col of one image
//   (K x OH*OW), C = the NCHW output. Fully connected: A = input (N x IN), B = weights^T (IN x OUT).
// - Conv im2col: each image is copied once into a buffer framed by the padding code; the panels are
//   then filled straight from it (AVX2 / VNNI with stride_w == 1: one or a few 16-byte loads per
//   panel row, blended where a panel crosses output rows), otherwise through 4 im2col rows at a time.
// - The AVX2 kernel widens u8 / s8 to int16 and multiplies with _mm256_madd_epi16 (exact: each pair
//   sum is at most 2 * 255 * 128), accumulating in int32. _mm256_maddubs_epi16 is not used: it
//   saturates its int16 pair sums and would break exactness. The VNNI kernel uses
//   _mm512_dpbusd_epi32 (u8 x s8, 4 products per int32 lane, no saturation). The portable kernel is
//   the same computation in plain C++ over the same packed layout, so it checks the VNNI packing
//   and bias folding on machines without AVX-512.
// - Requantization is the shared requantize() (portable) or a SIMD version of the same integer
//   formula (8 lanes on the AVX2 path, 16 straight from the tile's registers on the VNNI path); tests
//   demand bit-identical outputs on every path.
// - A conv followed by a 2x2 max pool of stride 2 can run both at once (fuse_max_pool): the GEMM
//   keeps each channel's int32 accumulators, the pool takes the largest of each window and only that
//   one is requantized. This is exact because requantization is non-decreasing in the accumulator
//   (the multiplier is >= 0; the saturating shift, both roundings and the clamp are monotonic), so
//   the largest accumulator gives the largest code: max(requantize(a_i)) = requantize(max(a_i)).
//   It saves three requantizations in four and the pool's pass over the int8 codes.
// - Stride-1 convolutions with one group may skip im2col on the AVX2 path: a direct kernel builds
//   the GEMM's operand from the padded image as it goes (pairs of taps, _mm256_madd_epi16), when
//   its instruction count is lower (small OC, rows not much narrower than the padded image).
// - The VNNI path convolves tap-major without im2col where it can (stride 1 or 2, one group, C a
//   multiple of 4, or padded to one where that costs little): the image framed as channel-quad planes
//   is B itself (quant/engine/kernels/gemm_kernel.h, ConvTapsFn; quant/README.md section 10).
// - The GEMM runs blocks of 32 columns outer and tile rows inner, so a block of B stays in L1 while
//   A passes over it (fully connected: A in chunks of up to 64 rows).
// - Threads (OpenMP, static schedule): run() spreads conv images, fully connected chunks of rows.
//   Small problems run on the calling thread. run_serial() never threads and takes its scratch from
//   the caller: the integer graph threads over images itself and calls it per group of images.
//
// Packed low-bit weights (2 to 4 bits, packed_codes.h), given to the constructors as (bytes, bits):
// - Fully connected keeps its operand B at 4 bits per weight. 2-bit codes use the 4-bit layout too:
//   one layout and one kernel, which is bound by its instruction count rather than by memory as long
//   as the weights fit in L2 (1024 x 1024 at 4 bits: 512 KB); 2-bit fields would take more to split.
//   The 4-bit panel is the 8-bit one with each 32-byte half row (8 columns x 4 k) folded onto itself:
//   byte b holds 8-bit byte b in its low nibble and byte b + 16 in its high nibble, so a panel is
//   (panels, KQ, 2, 16) bytes. The AVX2 kernel unpacks in registers: per k-quad, 32 bytes of a panel
//   split by a shift and masks into low and high nibbles, sign-extended by a 16-entry byte lookup
//   (_mm256_shuffle_epi8), give the 16 columns' weights as signed bytes, which meet the activations
//   (unsigned bytes) in _mm256_maddubs_epi16. That instruction saturates its int16 pair sums, which
//   is why the 8-bit kernel cannot use it; with 4-bit weights a pair sum is at most 2 * 255 * 8 =
//   4080, so it is exact, and 8 k-quads add up in int16 before _mm256_madd_epi16 by 1 widens them.
//   Half the bytes to read (at batch 1 a fully connected layer reads each weight for one
//   multiply-add) and fewer instructions per multiply-add than the 8-bit kernel. The portable and
//   VNNI kernels unfold one panel at a time into scratch (64 * KQ bytes, stays in L1) and run their
//   8-bit tiles on it: the VNNI path then shares every line of its weight handling with the portable
//   path, which the tests run on every machine.
// - Conv keeps its filter packed as given (2 or 4 bits) and unpacks it into the scratch once per
//   run_serial() call (run() makes one call per thread; the integer graph one per group of up to 16
//   images) in the form the path reads (int8 or int16 rows, or the direct kernel's pairs); the
//   kernels themselves are unchanged. The filter is small (LeNet-5 conv2: 2400 weights) next to the
//   work done with it (240 k multiply-adds per image), so unpacking costs little even per image, and
//   it keeps one set of conv kernels.
// - Every path stays bit-identical to the reference: the arithmetic is that of the int8 weights
//   with the same codes; conv2d_packed_reference / fully_connected_packed_reference are the
//   Reference path.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/kernels/kernel_path.h"  // KernelPath, kernel_path_supported, add_int8, ...

namespace qatlab {

// Per-channel output stage, precomputed for the kernels (padded to whole panels with zeros).
struct PackedOutputStage {
  // The SIMD output stage reads kParams int32 per channel: folded bias, multiplier, left shift
  // (max(shift, 0)), the total right shift of the 64-bit product (31 + max(-shift, 0)).
  static constexpr int kParams = 4;
  int64_t padded = 0;                // channels rounded up to whole panels
  std::vector<int32_t> folded_bias;  // (padded) bias + (input_offset - 128) * sum_k w, wrapped to int32
  std::vector<int32_t> multiplier;   // (padded)
  std::vector<int32_t> shift;        // (padded) the signed shift of requantize()
  std::vector<int32_t> columns;      // (kParams, padded): a channel per lane (fully connected)
  std::vector<int32_t> rows;         // (padded, kParams, 8): each value in 8 lanes (conv: a channel per row)
  int32_t output_offset = 0;
  int32_t clamp_lo = -128, clamp_hi = 127;  // activation range minus output_offset
  bool any_left_shift = false;
};

// Where the 16 columns of one packed panel of a convolution's im2col matrix come from in a padded
// image (stride_w == 1): up to 4 runs, one per output row the panel touches; run s starts at column
// seg_start[s] and column j of it reads the image at (k's offset) + load_offset[s] + j.
struct ConvPanelSource {
  int32_t segments = 0;
  int32_t seg_start[4] = {};
  int32_t load_offset[4] = {};
};

// Where the tap-major direct convolution (kernels/gemm_kernel.h) stores the codes of one chunk of 16
// positions (q0 .. q0 + 15) in a channel's output (OH, OW): one segment per output row the chunk
// touches, lane j of the segment's `mask` to element offset + j of the channel (offset may be below
// 0: the lanes before the row are masked out). Lanes of the junk positions (ox >= OW) and past the
// last position are in no mask.
struct TapSegment {
  int32_t offset;
  uint16_t mask;
};

// A convolution with its weights packed once (at convert / load time) for every kernel path.
class PackedConvInt8 {
 public:
  // filter (OC, C/G, KH, KW), bias (OC) or null, in_shape_chw (C, H, W): the image shape without N.
  // Checks everything conv2d_int8_reference checks, plus K = C/G * KH * KW <= 65536.
  // fuse_max_pool: the conv's output goes on through a 2x2 max pool, stride 2, no padding
  // (max_pool2d_int8(..., 2, 2, 0)), computed here as well (see the top of this file).
  PackedConvInt8(const ConvInt8Params& params, const int8_t* filter, const Shape& f_shape, const int32_t* bias,
                 const Shape& in_shape_chw, bool fuse_max_pool = false);
  // The same with the filter's codes stored at filter_bits bits (packed_codes.h: 2 or 4, kept packed;
  // 8 is the int8 constructor above).
  PackedConvInt8(const ConvInt8Params& params, const uint8_t* filter, int filter_bits, const Shape& f_shape,
                 const int32_t* bias, const Shape& in_shape_chw, bool fuse_max_pool = false);

  // input (batch, C, H, W) -> output (batch, OC, OH, OW), or with the fused pool (batch, OC, OH / 2,
  // OW / 2) (rounded down). Throws if this CPU cannot run `path`.
  void run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const;
  // The same on the calling thread alone, with `scratch` (scratch_bytes() bytes, any alignment and
  // contents) instead of memory of its own: for callers that thread over images themselves.
  void run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path, uint8_t* scratch) const;
  int64_t scratch_bytes() const { return scratch_per_image_ + operand_bytes_ + 64; }

  Shape output_shape(int64_t batch) const {
    return fuse_pool_ ? Shape{batch, oc_, oh_ / 2, ow_ / 2} : Shape{batch, oc_, oh_, ow_};
  }
  const Shape& input_shape_chw() const { return in_chw_; }
  bool fused_max_pool() const { return fuse_pool_; }
  // Whether the AVX2 path convolves directly from the padded image instead of im2col + GEMM (stride
  // 1, one group, when that takes fewer instructions; other paths always use the GEMM).
  bool direct_conv() const { return direct_; }
  // Bits per stored filter code (8, or 4 / 2 when built from packed codes) and the bytes of filter
  // this kernel holds for its optimized paths.
  int weight_bits() const { return bits_; }
  int64_t weight_bytes() const;

 private:
  // The filter in the forms the kernels read: members (8-bit filter), or unpacked into scratch.
  struct FilterOperands {
    const uint8_t* a_s8 = nullptr;   // (OC, KQ*4) as a_s8_
    const int16_t* a_s16 = nullptr;  // (OC, KQ*4) as a_s16_
    const int32_t* w_pairs = nullptr;  // (OC, pairs) as w_pairs_
    const uint8_t* a_taps = nullptr;   // (OC, K) as a_taps_
  };
  FilterOperands filter_operands(KernelPath path, uint8_t* scratch) const;
  void run_image(const int8_t* x, int8_t* y, KernelPath path, const FilterOperands& f, uint8_t* scratch) const;
  void run_reference(const int8_t* input, int64_t batch, int8_t* output) const;

  ConvInt8Params params_;
  Shape f_shape_, in_chw_;
  int bits_ = 8;                       // bits per stored filter code
  std::vector<int8_t> filter_;         // (OC, C/G, KH, KW), for the Reference path (8-bit filter)
  std::vector<uint8_t> filter_packed_; // the same codes packed at bits_ (packed filter): every path's source
  int64_t operand_bytes_ = 0;          // scratch for the unpacked filter (packed filter), after the image's
  std::vector<int32_t> bias_;   // (OC) or empty
  int64_t c_ = 0, h_ = 0, w_ = 0, oc_ = 0, kh_ = 0, kw_ = 0, oh_ = 0, ow_ = 0, groups_ = 1, cg_ = 0, ocg_ = 0;
  int64_t hp_ = 0, wp_ = 0;          // padded input plane
  int64_t k_ = 0, kq_ = 0;           // reduction length and its quads: K = CG*KH*KW, KQ = ceil(K / 4)
  int64_t ohw_ = 0, panels_ = 0;     // N of the GEMM (OH*OW) and its panels of 16 columns
  int64_t row_len_ = 0;              // length of one im2col row in scratch (>= panels * 16, + slack)
  int64_t scratch_per_image_ = 0;    // bytes of scratch one thread needs (64-byte aligned)
  bool fuse_pool_ = false;           // the 2x2 / 2 max pool is fused (accumulators staged in scratch)
  // Stride 1 and one group, when it costs less than the GEMM: the AVX2 path convolves directly
  // (quant/engine/kernels/conv_direct_avx2.cpp), from the padded image into the accumulators.
  bool direct_ = false;
  int64_t pairs_ = 0;                // direct: pairs of taps, ceil(K / 2)
  int64_t positions_ = 0;            // direct: (OH - 1) * Wp + OW positions of the padded image
  std::vector<int32_t> tap_offset_;  // direct: (pairs * 2) offset of tap k in the padded image
  std::vector<int32_t> w_pairs_;     // direct: (OC, pairs) the int16 weights of taps 2t, 2t + 1 in an int32
  // Stride 1 or 2, one group, C a multiple of 4 (or 3), no fused pool: the VNNI path convolves
  // tap-major straight from the image framed as channel-quad planes (quant/engine/kernels/gemm_kernel.h).
  bool taps_ = false;
  int64_t tap_stride_ = 1;            // taps: S
  int64_t hq_ = 0, wq_ = 0;           // taps: a plane's rows and their pitch (gemm_kernel.h)
  int64_t tap_plane_ = 0;             // taps: positions per plane
  int64_t kq_taps_ = 0;               // taps: k-quads, KH * KW * C4 / 4
  int64_t tap_positions_ = 0;         // taps: (OH - 1) * Wq + OW positions of the phase grid
  int64_t tap_row_offset_ = 0;        // taps: where the stride-2 framing row starts in scratch
  std::vector<int32_t> tap_kq_offset_;  // taps: (KQ taps) where k-quad kq reads the planes
  // taps: where each chunk of 16 positions stores its codes (TapSegment), chunk c's
  // segments from tap_chunk_first_[c] to tap_chunk_first_[c + 1]
  std::vector<TapSegment> tap_segments_;
  std::vector<int32_t> tap_chunk_first_;
  std::vector<uint8_t> a_taps_;       // taps: (OC, KH * KW * C4) the filter as signed bytes, tap-major
  int64_t acc_offset_ = 0;           // where the int32 accumulators start in scratch (fused pool, direct)
  int64_t acc_stride_ = 0;           // their row stride: >= panels * 16, and positions rounded up to 16
  int8_t pad_code_ = 0;              // the code of the padding: the input zero point
  // Empty when some panel needs more than 4 runs (OW < 6) or stride_w > 1: im2col by row copies.
  std::vector<ConvPanelSource> panel_src_;  // (panels)
  std::vector<int32_t> k_offset_;       // (KQ*4) offset of k = (c, ky, kx) in a padded group image
  std::vector<uint8_t> a_s8_;        // (OC, KQ*4) filter as signed bytes, zero-padded in K (portable, VNNI)
  std::vector<int16_t> a_s16_;       // (OC, KQ*4) the same widened to int16 (AVX2)
  // (a_s8_, a_s16_, w_pairs_ and a_taps_ stay empty for a packed filter: filter_operands() builds them
  // per call.)
  PackedOutputStage stage_;
};

// A fully connected layer with its weights packed once for every kernel path.
class PackedFullyConnectedInt8 {
 public:
  // weights (OUT, IN), bias (OUT) or null. Checks what fully_connected_int8_reference checks, plus
  // IN <= 65536.
  PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const int8_t* weights, const Shape& w_shape,
                           const int32_t* bias);
  // The same with the weights' codes stored at weight_bits bits (packed_codes.h: 2 or 4, run from
  // 4-bit panels; 8 is the int8 constructor above).
  PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const uint8_t* weights, int weight_bits,
                           const Shape& w_shape, const int32_t* bias);

  // input (batch, IN) -> output (batch, OUT). Throws if this CPU cannot run `path`.
  void run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const;
  // The same on the calling thread alone, with `scratch` (scratch_bytes() bytes, any alignment and
  // contents) instead of memory of its own.
  void run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path, uint8_t* scratch) const;
  int64_t scratch_bytes() const;

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // Bits per stored weight code as given (8, 4 or 2), and the bytes of the panels the optimized
  // paths read (4 bits per weight for packed weights, 8 otherwise; padded to whole panels).
  int weight_bits() const { return bits_; }
  int64_t weight_bytes() const { return static_cast<int64_t>(b_panels_.size()); }

 private:
  // Rows [m0, m0 + m) of the batch, one chunk (at most 64 rows); `a` holds that chunk of A (see run()),
  // followed for 4-bit panels by room for one unfolded 8-bit panel.
  void run_block(const int8_t* input, int64_t m0, int64_t m, int8_t* output, KernelPath path, void* a) const;

  FullyConnectedInt8Params params_;
  int bits_ = 8;                          // bits per stored weight code as given
  std::vector<int8_t> weights_;           // (OUT, IN), for the Reference path (8-bit weights)
  std::vector<uint8_t> weights_packed_;   // (OUT, IN) packed at bits_, for the Reference path (packed weights)
  std::vector<int32_t> bias_;    // (OUT) or empty
  int64_t in_ = 0, out_ = 0, kq_ = 0, panels_ = 0;
  // 8-bit weights: (panels, KQ, 16, 4) weights^T as signed bytes, zero-padded. Packed weights: the
  // same folded to 4 bits, (panels, KQ, 2, 16) (see the top of this file).
  std::vector<uint8_t> b_panels_;
  PackedOutputStage stage_;
};

}  // namespace qatlab
