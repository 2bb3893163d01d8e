// int8_gemm.cpp: the conv / fully connected drivers behind PackedConvInt8 and PackedFullyConnectedInt8
// (see int8_gemm.h): packing the weights once, framing and packing each image, and handing the GEMM to
// the backend of the kernel path (quant/engine/kernels/gemm_kernel.h), chosen once per call. No backend code
// lives here: the micro-kernels, packing and output stages are in quant/engine/kernels/, one file per backend.
//
// Shape letters: N batch, C input channels, H x W input (Hp x Wp padded), OC output channels, KH x KW
// kernel, OH x OW output, G groups, CG = C / G, OCG = OC / G, K the reduction length, KQ = ceil(K / 4)
// its quads, M x N the GEMM output (rows x columns), MR the rows of a micro-tile.
//
// OpenMP regions stay here, in plain functions: an outlined region does not inherit a target attribute.
#include "quant/engine/int8_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/engine/kernels/gemm_kernel.h"
#include "quant/engine/packed_codes.h"

namespace qatlab {

using kernels::ceil_div;
using kernels::Epilogue;
using kernels::GemmKernel;
using kernels::GemmOperands;
using kernels::gemm_kernel;
using kernels::kMaxK;
using kernels::kPanel;
using kernels::kQuadBytes;
using kernels::kNibbleQuadBytes;

namespace {

// Weights are narrow-range ([-127, 127]); the converter guarantees it, a debug build checks it. (The
// kernels here would stay exact with -128 too: it is TFLite's contract, kept for the other backends.)
[[maybe_unused]] bool narrow_range(const int8_t* w, int64_t n) {
  return std::find(w, w + n, int8_t{-128}) == w + n;
}

// How many threads a loop over `items` of `work_per_item` multiply-adds gets: one unless there is
// enough work to pay for waking the others (2^20 multiply-adds take ~20 us on one AVX2 core).
int threads_for(int64_t items, int64_t work_per_item) {
  if (items < 2 || items * work_per_item < (int64_t{1} << 20)) return 1;
  return static_cast<int>(std::min<int64_t>(omp_get_max_threads(), items));
}


// Rows of A (activations) per fully connected chunk: gemm() passes each chunk over every block of
// the weights while that block is in L1. Whole tiles of `mr` rows, at most kRowChunk, and at least
// one chunk per thread.
constexpr int64_t kRowChunk = 64;
int64_t row_chunk(int mr, int64_t batch, int threads) {
  const int64_t per_thread = ceil_div(ceil_div(batch, threads), mr) * mr;
  return std::max<int64_t>(mr, std::min<int64_t>(kRowChunk / mr * mr, per_thread));
}

// Columns of C per pass of gemm(): two panels, the widest tile of any backend.
constexpr int64_t kColumnBlock = 2 * kPanel;

// C = A * B for rows [0, m) of A and every column of the packed B, through the epilogue: the backend's
// GEMM (`rows`: its conv or its fully connected form) on blocks of up to its tile rows. Columns outer,
// rows inner: each block of B (kColumnBlock columns, all of K: 2 * 64 * KQ bytes) is read by every
// block of rows while it is in L1, and A (the filter, or a chunk of activation rows) is what passes
// over it; rows outer would stream all of B from L2 once per block of rows. A block of columns is a
// GEMM of its own: B and the epilogue's pointers move to its first column (a fully connected layer's
// channel with them).
void gemm(const GemmKernel& kernel, kernels::GemmRowsFn rows, const GemmOperands& g, int64_t m, const Epilogue& e) {
  for (int64_t c0 = 0; c0 < g.n; c0 += kColumnBlock) {
    GemmOperands block = g;
    block.b = g.b + c0 / kPanel * kernels::panel_bytes(g);
    block.n = std::min(kColumnBlock, g.n - c0);
    Epilogue at = e;
    if (!e.channel_per_row) at.channel0 += c0;
    if (at.out) at.out += c0;
    if (at.acc) at.acc += c0;
    if (at.sums) at.sums += c0;
    for (int64_t r0 = 0; r0 < m; r0 += kernel.mr)
      rows(block, r0, static_cast<int>(std::min<int64_t>(kernel.mr, m - r0)), at);
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------- conv

namespace {

// The GEMM's A operand from filter rows (OC, K) of codes: zero-padded to (OC, KQ*4) (the K padding
// must read 0), as signed bytes (portable, VNNI) or widened to int16 (AVX2).
void filter_rows_s8(const int8_t* filter, int64_t oc, int64_t k, int64_t kq, uint8_t* a) {
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < k; ++i) a[o * kq * 4 + i] = static_cast<uint8_t>(filter[o * k + i]);
    std::fill(a + o * kq * 4 + k, a + (o + 1) * kq * 4, uint8_t{0});
  }
}

void filter_rows_s16(const int8_t* filter, int64_t oc, int64_t k, int64_t kq, int16_t* a) {
  for (int64_t o = 0; o < oc; ++o) {
    for (int64_t i = 0; i < k; ++i) a[o * kq * 4 + i] = filter[o * k + i];
    std::fill(a + o * kq * 4 + k, a + (o + 1) * kq * 4, int16_t{0});
  }
}

// The tap-major direct convolution's filter: codes (OC, C, taps) -> a (OC, taps, C4) as signed bytes,
// C4 = C rounded up to a multiple of 4, the channels past C zero.
void filter_taps(const int8_t* filter, int64_t oc, int64_t c, int64_t taps, uint8_t* a) {
  const int64_t c4 = ceil_div(c, 4) * 4;
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t t = 0; t < taps; ++t) {
      uint8_t* dst = a + (o * taps + t) * c4;
      for (int64_t i = 0; i < c; ++i) dst[i] = static_cast<uint8_t>(filter[(o * c + i) * taps + t]);
      std::fill(dst + c, dst + c4, uint8_t{0});
    }
}

// d[j] = s[j * stride] for j < n. Stride 2 (the strided convolutions of ResNets) has a loop of its
// own, which the compiler vectorises (byte permutes); a byte at a time it cost several times the
// convolution's own multiply-adds.
void copy_strided(const uint8_t* __restrict s, uint8_t* __restrict d, int64_t n, int64_t stride) {
  if (stride == 2) {
    for (int64_t j = 0; j < n; ++j) d[j] = s[2 * j];
    return;
  }
  for (int64_t j = 0; j < n; ++j) d[j] = s[j * stride];
}

// The direct convolution's weights (OC, pairs): taps 2t and 2t + 1 as two int16 in one int32, tap 2t
// in the low half; an odd K's last pair gets a second tap of weight 0.
void filter_pairs(const int8_t* filter, int64_t oc, int64_t k, int64_t pairs, int32_t* w) {
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t t = 0; t < pairs; ++t) {
      const uint16_t w0 = static_cast<uint16_t>(int16_t{filter[o * k + 2 * t]});
      const uint16_t w1 = 2 * t + 1 < k ? static_cast<uint16_t>(int16_t{filter[o * k + 2 * t + 1]}) : 0;
      w[o * pairs + t] = static_cast<int32_t>(uint32_t{w0} | (uint32_t{w1} << 16));
    }
}

}  // namespace

PackedConvInt8::PackedConvInt8(const ConvInt8Params& params, const int8_t* filter, const Shape& f_shape,
                               const int32_t* bias, const Shape& in_shape_chw, bool fuse_max_pool)
    : PackedConvInt8(params, reinterpret_cast<const uint8_t*>(filter), 8, f_shape, bias, in_shape_chw,
                     fuse_max_pool) {}

PackedConvInt8::PackedConvInt8(const ConvInt8Params& params, const uint8_t* filter, int filter_bits,
                               const Shape& f_shape, const int32_t* bias, const Shape& in_shape_chw,
                               bool fuse_max_pool)
    : params_(params), f_shape_(f_shape), in_chw_(in_shape_chw), bits_(filter_bits), fuse_pool_(fuse_max_pool) {
  check_storage_bits(filter_bits, "PackedConvInt8");
  QATLAB_CHECK(in_shape_chw.size() == 3,
            "PackedConvInt8: input shape must be (C, H, W) without the batch, got " + shape_str(in_shape_chw));
  const Shape out = conv2d_int8_output_shape(params, {1, in_shape_chw[0], in_shape_chw[1], in_shape_chw[2]}, f_shape);
  c_ = in_shape_chw[0], h_ = in_shape_chw[1], w_ = in_shape_chw[2];
  oc_ = f_shape[0], kh_ = f_shape[2], kw_ = f_shape[3], oh_ = out[2], ow_ = out[3];
  groups_ = params.groups, cg_ = c_ / groups_, ocg_ = oc_ / groups_;
  k_ = cg_ * kh_ * kw_;
  QATLAB_CHECK(k_ <= kMaxK, "PackedConvInt8: reduction length C/groups*KH*KW = " + std::to_string(k_) +
                             " exceeds 65536 (int32 accumulator headroom) for filter " + shape_str(f_shape));
  kq_ = ceil_div(k_, 4);
  hp_ = h_ + 2 * params.pad_h, wp_ = w_ + 2 * params.pad_w;
  ohw_ = oh_ * ow_;
  panels_ = ceil_div(ohw_, kPanel);
  row_len_ = panels_ * kPanel + 64;
  if (fuse_pool_)
    QATLAB_CHECK(oh_ >= 2 && ow_ >= 2, "PackedConvInt8: a fused 2x2 max pool needs a conv output of at least 2x2, got " +
                                           std::to_string(oh_) + "x" + std::to_string(ow_));

  // The direct convolution (AVX2, stride 1, one group) where it takes fewer instructions than
  // im2col + GEMM, counted from the kernels' inner loops (RB = ceil(OC / 6) blocks of output rows):
  //   GEMM:   KQ * (32 per packed panel + per 8 columns (6 per row block + 5 per channel))
  //           + ~100 per tile call;
  //   direct: pairs * per 16 positions (11 per row block + 5 per channel) + ~80 per block call.
  // The direct one skips the packing but computes the Wp - OW positions of each row that the output
  // does not have. (LeNet-5, measured per image: conv1 direct 34k, GEMM 49k; conv2 direct 76k, GEMM 67k.)
  if (params.stride_h == 1 && params.stride_w == 1 && groups_ == 1) {
    const int64_t rb = ceil_div(oc_, kernels::kAvx2MR), pairs = ceil_div(k_, 2);
    const int64_t positions = (oh_ - 1) * wp_ + ow_, blocks = ceil_div(positions, 16), tiles = ceil_div(ohw_, 8);
    const int64_t gemm = kq_ * (32 * panels_ + tiles * (6 * rb + 5 * oc_)) + 100 * rb * tiles;
    const int64_t direct = pairs * blocks * (11 * rb + 5 * oc_) + 80 * rb * blocks;
    if (direct < gemm) {
      direct_ = true;
      pairs_ = pairs, positions_ = positions;
    }
  }
  // The tap-major direct convolution (VNNI; quant/engine/kernels/gemm_kernel.h): no im2col, only the framing
  // that the GEMM does too. It reads the filter's K in quads of 4 channels, so C is rounded up to a
  // multiple of 4 with zero weights: taken where that adds at most a third to the multiply-adds (C = 3,
  // an RGB stem, but not C = 1).
  const int64_t c4 = ceil_div(c_, 4) * 4, s = params.stride_h;
  if (params.stride_w == s && (s == 1 || s == 2) && groups_ == 1 && 3 * c4 <= 4 * c_ && !fuse_pool_) {
    taps_ = true;
    tap_stride_ = s;
    // Stride 1 shares each row's right padding with the next row's left (gemm_kernel.h).
    hq_ = ceil_div(hp_, s), wq_ = s == 1 ? std::max(w_ + params.pad_w, ow_) : ceil_div(wp_, s);
    tap_plane_ = s == 1 ? hq_ * wq_ + params.pad_w : hq_ * wq_;
    tap_positions_ = (oh_ - 1) * wq_ + ow_;
    kq_taps_ = kh_ * kw_ * c4 / 4;
    tap_kq_offset_.resize(kq_taps_);
    for (int64_t kq = 0; kq < kq_taps_; ++kq) {
      const int64_t tap = kq / (c4 / 4), cq = kq % (c4 / 4), ky = tap / kw_, kx = tap % kw_;
      const int64_t plane = cq * s * s + (ky % s) * s + kx % s;
      tap_kq_offset_[kq] = static_cast<int32_t>(4 * (plane * tap_plane_ + (ky / s) * wq_ + kx / s));
    }
    // The segments of each chunk of 16 positions: the output rows it touches, with the lanes of
    // their pixels (ox < OW) and below tap_positions_.
    for (int64_t q0 = 0; q0 < tap_positions_; q0 += kPanel) {
      tap_chunk_first_.push_back(static_cast<int32_t>(tap_segments_.size()));
      for (int64_t j = 0; j < kPanel && q0 + j < tap_positions_; ++j) {
        const int64_t q = q0 + j, oy = q / wq_, ox = q % wq_;
        if (ox >= ow_) continue;
        // The element of lane j is oy * OW + ox = offset + j.
        const int32_t offset = static_cast<int32_t>(oy * ow_ + ox - j);
        if (tap_segments_.empty() || tap_chunk_first_.back() == static_cast<int32_t>(tap_segments_.size()) ||
            tap_segments_.back().offset != offset)
          tap_segments_.push_back({offset, 0});
        tap_segments_.back().mask |= static_cast<uint16_t>(1u << j);
      }
    }
    tap_chunk_first_.push_back(static_cast<int32_t>(tap_segments_.size()));
  }
  acc_stride_ = std::max(panels_ * kPanel, ceil_div(positions_, 16) * 16);
  // padded image (C, Hp, Wp) + slack, 4 im2col rows, packed panels (panels, KQ, 16, 4), and for the
  // fused pool or the direct conv the accumulators (OC, acc_stride) int32 + 16 of slack, 64-byte aligned
  scratch_per_image_ = (c_ * hp_ * wp_ + 64) + 4 * row_len_ + panels_ * kq_ * kQuadBytes;
  acc_offset_ = ceil_div(scratch_per_image_, 64) * 64;
  if (fuse_pool_ || direct_) scratch_per_image_ = acc_offset_ + (oc_ * acc_stride_ + 16) * 4;
  if (taps_) {
    // the channel-quad planes + 128 bytes read and 64 written past them, a row of (Wp + 16) quads for
    // stride 2, then the codes (OC, codes_stride)
    const int64_t planes = kq_taps_ * 4 / (kh_ * kw_) * tap_stride_ * tap_stride_ * tap_plane_ * 4;
    tap_row_offset_ = ceil_div(planes + 4 * (wq_ + 16) + 64, 64) * 64;
    scratch_per_image_ = std::max(scratch_per_image_, tap_row_offset_ + ceil_div((wp_ + 16) * 4, 64) * 64);
  }
  scratch_per_image_ = ceil_div(scratch_per_image_, 64) * 64;
  pad_code_ = static_cast<int8_t>(-params.input_offset);
  k_offset_.assign(kq_ * 4, 0);  // K padding reads offset 0: any value will do, the filter is 0 there
  for (int64_t k = 0; k < k_; ++k) {
    const int64_t c = k / (kh_ * kw_), ky = (k / kw_) % kh_, kx = k % kw_;
    k_offset_[k] = static_cast<int32_t>((c * hp_ + ky) * wp_ + kx);
  }
  if (params.stride_w == 1) {
    panel_src_.resize(panels_);
    for (int64_t p = 0; p < panels_ && !panel_src_.empty(); ++p) {
      ConvPanelSource& ps = panel_src_[p];
      for (int64_t j = 0; j < kPanel && p * kPanel + j < ohw_; ++j) {
        const int64_t n = p * kPanel + j, oy = n / ow_, ox = n % ow_;
        if (j > 0 && ox > 0) continue;  // inside the current run
        if (ps.segments == 4) {
          panel_src_.clear();  // too many short output rows: im2col through row copies instead
          break;
        }
        ps.seg_start[ps.segments] = static_cast<int32_t>(j);
        ps.load_offset[ps.segments] = static_cast<int32_t>(oy * params.stride_h * wp_ + ox - j);
        ++ps.segments;
      }
    }
  }

  // The codes as int8, whatever their storage: for the sums of the folded bias, and for an 8-bit
  // filter the operands kept here. A packed filter is kept as it came; filter_operands() unpacks it.
  const int64_t count = shape_numel(f_shape);
  std::vector<int8_t> codes(count);  // (OC, K)
  unpack_codes(filter, count, bits_, codes.data());
  if (bias) bias_.assign(bias, bias + oc_);
  std::vector<int64_t> sums(oc_, 0);
  for (int64_t o = 0; o < oc_; ++o)
    for (int64_t k = 0; k < k_; ++k) sums[o] += codes[o * k_ + k];
  stage_ = kernels::make_output_stage(oc_, ceil_div(oc_, kPanel) * kPanel, sums, bias, params.input_offset,
                             params.output_offset, params.output_multiplier, params.output_shift,
                             params.quantized_activation_min, params.quantized_activation_max);

  if (direct_) {
    // Taps in pairs; an odd K's last pair gets a second tap (of weight 0) reading tap 0's pixel.
    tap_offset_.assign(pairs_ * 2, k_offset_[0]);
    for (int64_t k = 0; k < k_; ++k) tap_offset_[k] = k_offset_[k];
  }
  if (bits_ != 8) {
    filter_packed_.assign(filter, filter + packed_bytes(count, bits_));
    // Scratch after the image's: the unpacked codes (OC, K), then the largest operand a path needs:
    // int16 rows (OC, KQ*4) or the direct kernel's pairs (OC, pairs) int32.
    operand_bytes_ = ceil_div(count, 64) * 64 +
                     ceil_div(std::max({oc_ * kq_ * 4 * 2, direct_ ? oc_ * pairs_ * 4 : 0, oc_ * kq_taps_ * 4}), 64) * 64;
    return;
  }
  assert(narrow_range(codes.data(), count));
  filter_ = std::move(codes);
  if (direct_) {
    w_pairs_.assign(oc_ * pairs_, 0);
    filter_pairs(filter_.data(), oc_, k_, pairs_, w_pairs_.data());
  }
  if (taps_) {
    a_taps_.assign(oc_ * kq_taps_ * 4, 0);
    filter_taps(filter_.data(), oc_, c_, kh_ * kw_, a_taps_.data());
  }
  a_s8_.assign(oc_ * kq_ * 4, 0);
  a_s16_.assign(oc_ * kq_ * 4, 0);
  filter_rows_s8(filter_.data(), oc_, k_, kq_, a_s8_.data());
  filter_rows_s16(filter_.data(), oc_, k_, kq_, a_s16_.data());
}

int64_t PackedConvInt8::weight_bytes() const {
  return bits_ == 8 ? static_cast<int64_t>(a_s8_.size() + 2 * a_s16_.size() + 4 * w_pairs_.size() + a_taps_.size())
                    : static_cast<int64_t>(filter_packed_.size());
}

PackedConvInt8::FilterOperands PackedConvInt8::filter_operands(KernelPath path, uint8_t* scratch) const {
  FilterOperands f;
  if (bits_ == 8) {
    f.a_s8 = a_s8_.data(), f.a_s16 = a_s16_.data(), f.w_pairs = w_pairs_.data(), f.a_taps = a_taps_.data();
    return f;
  }
  int8_t* codes = reinterpret_cast<int8_t*>(scratch);  // (OC, K)
  uint8_t* operand = scratch + ceil_div(oc_ * k_, 64) * 64;
  unpack_codes(filter_packed_.data(), oc_ * k_, bits_, codes);
  // Only the form this path reads (see run_image).
  const GemmKernel& kernel = gemm_kernel(path);
  if (kernel.conv_taps && taps_) {
    filter_taps(codes, oc_, c_, kh_ * kw_, operand);
    f.a_taps = operand;
  } else if (kernel.direct_conv && direct_) {
    filter_pairs(codes, oc_, k_, pairs_, reinterpret_cast<int32_t*>(operand));
    f.w_pairs = reinterpret_cast<const int32_t*>(operand);
  } else if (kernel.a_int16) {
    filter_rows_s16(codes, oc_, k_, kq_, reinterpret_cast<int16_t*>(operand));
    f.a_s16 = reinterpret_cast<const int16_t*>(operand);
  } else {
    filter_rows_s8(codes, oc_, k_, kq_, operand);
    f.a_s8 = operand;
  }
  return f;
}

void PackedConvInt8::run_image(const int8_t* x, int8_t* y, KernelPath path, const FilterOperands& f,
                               uint8_t* scratch) const {
  // Sizes in locals: stores through byte pointers may alias the members, locals keep loops tight.
  const int64_t C = c_, H = h_, W = w_, Hp = hp_, Wp = wp_, pad_h = params_.pad_h, pad_w = params_.pad_w;
  const int64_t OH = oh_, OW = ow_, OHW = ohw_, sh = params_.stride_h, sw = params_.stride_w;
  const int64_t K = k_, KQ = kq_, panels = panels_, row_len = row_len_;
  uint8_t* padded = scratch;                   // (C, Hp, Wp) unsigned codes, + 64 slack
  uint8_t* rows = padded + C * Hp * Wp + 64;   // (4, row_len)
  uint8_t* packed = rows + 4 * row_len;        // (panels, KQ, 16, 4)
  int32_t* acc = reinterpret_cast<int32_t*>(scratch + acc_offset_);  // fused pool, direct: (OC, acc_stride) + 16
  const GemmKernel& kernel = gemm_kernel(path);

  // The image as unsigned codes (x + 128, flipping the sign bit), framed by the padding code (the
  // input zero point, likewise flipped).
  const uint8_t pad_u = static_cast<uint8_t>(pad_code_) ^ 0x80;
  if (taps_ && kernel.conv_taps) {
    kernel.frame_quads(x, C, H, W, pad_h, pad_w, tap_stride_, wq_, kh_, kw_, pad_u, padded, scratch + tap_row_offset_);
    kernel.conv_taps(padded, tap_kq_offset_.data(), kq_taps_, f.a_taps, oc_, tap_positions_, stage_,
                     tap_segments_.data(), tap_chunk_first_.data(), y, OHW);
    return;
  }
  kernel.frame_image(x, C, H, W, pad_h, pad_w, pad_u, padded);

  if (direct_ && kernel.direct_conv) {
    kernel.direct_conv(padded, tap_offset_.data(), pairs_, f.w_pairs, stage_, oc_, positions_, acc, acc_stride_);
    // Output pixel (oy, ox) is position oy * Wp + ox.
    if (fuse_pool_)
      kernel.pool_requantize(acc, acc_stride_, Wp, oc_, OH, OW, stage_, y);
    else
      kernel.requantize_rows(acc, acc_stride_, Wp, oc_, OH, OW, stage_, y);
    return;
  }
  for (int64_t g = 0; g < groups_; ++g) {
    const uint8_t* img = padded + g * cg_ * Hp * Wp;  // (CG, Hp, Wp)
    if (kernel.pack_conv_direct && !panel_src_.empty()) {
      kernel.pack_conv_direct(img, k_offset_.data(), panel_src_.data(), panels, KQ, packed);
    } else {
      // im2col through row copies, 4 rows (one k-quad) at a time, then packed into the panels.
      for (int64_t kq = 0; kq < KQ; ++kq) {
        for (int64_t t = 0; t < 4; ++t) {
          uint8_t* row = rows + t * row_len;  // (OH*OW) and junk up to panels * 16
          if (kq * 4 + t >= K) continue;       // K padding: the filter is 0 there, any value will do
          const uint8_t* src = img + k_offset_[kq * 4 + t];
          for (int64_t oy = 0; oy < OH; ++oy) {
            const uint8_t* s = src + oy * sh * Wp;
            uint8_t* d = row + oy * OW;
            if (sw == 1)
              std::memcpy(d, s, OW);
            else
              copy_strided(s, d, OW, sw);
          }
        }
        kernel.pack_quad_rows(rows, row_len, panels, KQ, kq, packed);
      }
    }
    // Fused pool: the accumulators of group g go to its rows of acc (at least whole panels wide).
    const int64_t acc_stride = acc_stride_;
    const Epilogue e = fuse_pool_ ? Epilogue{&stage_, g * ocg_, true, nullptr, acc_stride, acc + g * ocg_ * acc_stride}
                                  : Epilogue{&stage_, g * ocg_, /*channel_per_row=*/true, y + g * ocg_ * OHW, OHW};
    // The group's filter rows, in the form this path reads (filter_operands leaves the other null).
    GemmOperands operands;
    operands.a8 = f.a_s8 ? f.a_s8 + g * ocg_ * KQ * 4 : nullptr;
    operands.a16 = f.a_s16 ? f.a_s16 + g * ocg_ * KQ * 4 : nullptr;
    operands.a_stride = KQ * 4;
    operands.b = packed;
    operands.kq_count = KQ;
    operands.n = OHW;
    gemm(kernel, kernel.conv, operands, ocg_, e);
  }
  if (fuse_pool_) kernel.pool_requantize(acc, acc_stride_, OW, oc_, OH, OW, stage_, y);
}

void PackedConvInt8::run_reference(const int8_t* input, int64_t batch, int8_t* output) const {
  if (batch == 0) return;
  const int32_t* bias = bias_.empty() ? nullptr : bias_.data();
  const auto conv = [&](int8_t* y) {
    if (bits_ == 8)
      conv2d_int8_reference(params_, input, {batch, c_, h_, w_}, filter_.data(), f_shape_, bias, y);
    else
      conv2d_packed_reference(params_, input, {batch, c_, h_, w_}, filter_packed_.data(), bits_, f_shape_, bias, y);
  };
  if (!fuse_pool_) return conv(output);
  std::vector<int8_t> y(batch * oc_ * ohw_);  // (N, OC, OH, OW)
  conv(y.data());
  max_pool2d_int8_reference(y.data(), {batch, oc_, oh_, ow_}, 2, 2, 0, output);
}

void PackedConvInt8::run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path,
                                uint8_t* scratch) const {
  QATLAB_CHECK(batch >= 0, "PackedConvInt8::run_serial: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_reference(input, batch, output);
  require_supported(path);
  if (batch == 0) return;
  uint8_t* mine = scratch + (64 - reinterpret_cast<uintptr_t>(scratch) % 64) % 64;  // 64-byte aligned
  // A packed filter is unpacked once for the whole call, after the image's scratch.
  const FilterOperands f = filter_operands(path, mine + scratch_per_image_);
  const int64_t in_stride = c_ * h_ * w_, out_stride = shape_numel(output_shape(1));
  for (int64_t n = 0; n < batch; ++n) run_image(input + n * in_stride, output + n * out_stride, path, f, mine);
}

void PackedConvInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedConvInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_reference(input, batch, output);
  require_supported(path);
  const int threads = threads_for(batch, oc_ * k_ * ohw_);
  // All scratch for this call, one slice per thread (slices a multiple of 64 bytes apart, so that
  // each aligns within its own); zeroed so that the junk columns are defined.
  const int64_t slice = scratch_per_image_ + operand_bytes_;
  std::vector<uint8_t> scratch(threads * slice + 64, 0);
  if (threads == 1) return run_serial(input, batch, output, path, scratch.data());
  const int64_t in_stride = c_ * h_ * w_, out_stride = shape_numel(output_shape(1));
#pragma omp parallel num_threads(threads)
  {
    // Each thread one contiguous run of images (a static schedule), in one run_serial call: a packed
    // filter is then unpacked once per thread.
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t n0 = batch * t / nt, n1 = batch * (t + 1) / nt;
    run_serial(input + n0 * in_stride, n1 - n0, output + n0 * out_stride, path, scratch.data() + t * slice);
  }
}

// -------------------------------------------------------------------------------- fully connected

PackedFullyConnectedInt8::PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const int8_t* weights,
                                                   const Shape& w_shape, const int32_t* bias)
    : PackedFullyConnectedInt8(params, reinterpret_cast<const uint8_t*>(weights), 8, w_shape, bias) {}

PackedFullyConnectedInt8::PackedFullyConnectedInt8(const FullyConnectedInt8Params& params, const uint8_t* weights,
                                                   int weight_bits, const Shape& w_shape, const int32_t* bias)
    : params_(params), bits_(weight_bits) {
  check_storage_bits(weight_bits, "PackedFullyConnectedInt8");
  QATLAB_CHECK(w_shape.size() == 2, "PackedFullyConnectedInt8: weights must be (OUT, IN), got " + shape_str(w_shape));
  fully_connected_int8_output_shape(params, {1, w_shape[1]}, w_shape);
  out_ = w_shape[0], in_ = w_shape[1];
  QATLAB_CHECK(in_ <= kMaxK, "PackedFullyConnectedInt8: IN = " + std::to_string(in_) +
                              " exceeds 65536 (int32 accumulator headroom) for weights " + shape_str(w_shape));
  kq_ = ceil_div(in_, 4);
  panels_ = ceil_div(out_, kPanel);
  std::vector<int8_t> codes(out_ * in_);  // (OUT, IN)
  unpack_codes(weights, out_ * in_, bits_, codes.data());
  if (bits_ == 8) {
    assert(narrow_range(codes.data(), out_ * in_));
    weights_ = codes;
  } else {
    weights_packed_.assign(weights, weights + packed_bytes(out_ * in_, bits_));
  }
  if (bias) bias_.assign(bias, bias + out_);

  // B: weights^T (IN, OUT) in panels of 16 output columns, zero-padded in both IN and OUT.
  b_panels_.assign(panels_ * kq_ * kQuadBytes, 0);
  std::vector<int64_t> sums(out_, 0);
  for (int64_t o = 0; o < out_; ++o) {
    const int64_t p = o / kPanel, j = o % kPanel;
    for (int64_t i = 0; i < in_; ++i) {
      const int8_t w = codes[o * in_ + i];
      b_panels_[((p * kq_ + i / 4) * kPanel + j) * 4 + i % 4] = static_cast<uint8_t>(w);
      sums[o] += w;
    }
  }
  if (bits_ != 8) {
    // Folded to 4 bits: 2-bit codes take the 4-bit layout as well (see int8_gemm.h).
    std::vector<uint8_t> folded(panels_ * kq_ * kNibbleQuadBytes);
    kernels::fold_to_nibbles(b_panels_.data(), panels_ * kq_ * 2, folded.data());
    b_panels_ = std::move(folded);
  }
  stage_ = kernels::make_output_stage(out_, panels_ * kPanel, sums, bias, params.input_offset, params.output_offset,
                             params.output_multiplier, params.output_shift, params.quantized_activation_min,
                             params.quantized_activation_max);
}

int64_t PackedFullyConnectedInt8::scratch_bytes() const {
  // One chunk of rows of A: (kRowChunk, KQ*4) as int16 (AVX2) or bytes; with 4-bit panels one
  // unfolded 8-bit panel (KQ, 16, 4) after it; + alignment.
  return kRowChunk * kq_ * 4 * static_cast<int64_t>(sizeof(int16_t)) +
         (bits_ == 8 ? 0 : kq_ * kQuadBytes) + 64;
}

void PackedFullyConnectedInt8::run_block(const int8_t* input, int64_t m0, int64_t m, int8_t* output, KernelPath path,
                                         void* a) const {
  // A rows: unsigned codes u = x + 128 (the sign bit flipped); the K padding must read 0.
  // The AVX2 kernel of 8-bit weights takes A widened to int16; every other kernel takes bytes.
  // The length in a local: the byte stores below may alias the members, and a member bound would be
  // reloaded after each store (which keeps the loops scalar).
  const int64_t in = in_, row = kq_ * 4;
  const GemmKernel& kernel = gemm_kernel(path);
  const bool wide = kernel.a_int16 && bits_ == 8;
  uint8_t* a8 = wide ? nullptr : static_cast<uint8_t*>(a);  // (m, KQ*4)
  int16_t* a16 = wide ? static_cast<int16_t*>(a) : nullptr;  // (m, KQ*4)
  for (int64_t r = 0; r < m; ++r) {
    const int8_t* x = input + (m0 + r) * in;
    if (a16) {
      int16_t* dst = a16 + r * row;
      for (int64_t i = 0; i < in; ++i) dst[i] = static_cast<int16_t>(x[i] + 128);
      std::fill(dst + in, dst + row, int16_t{0});
    } else {
      uint8_t* dst = a8 + r * row;
      for (int64_t i = 0; i < in; ++i) dst[i] = static_cast<uint8_t>(x[i]) ^ 0x80;
      std::fill(dst + in, dst + row, uint8_t{0});
    }
  }
  // The unfolded panel goes after the largest chunk of A (a multiple of 64 bytes).
  uint8_t* unfolded = static_cast<uint8_t*>(a) + kRowChunk * row * 2;
  const Epilogue e{&stage_, 0, /*channel_per_row=*/false, output + m0 * out_, out_};
  GemmOperands operands;
  operands.a8 = a8;
  operands.a16 = a16;
  operands.a_stride = row;
  operands.b = b_panels_.data();
  operands.b_nibbles = bits_ != 8;
  operands.kq_count = kq_;
  operands.n = out_;
  operands.unfolded = unfolded;
  gemm(kernel, kernel.fully_connected, operands, m, e);
}

void PackedFullyConnectedInt8::run_serial(const int8_t* input, int64_t batch, int8_t* output, KernelPath path,
                                          uint8_t* scratch) const {
  QATLAB_CHECK(batch >= 0, "PackedFullyConnectedInt8::run_serial: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) {
    if (batch == 0) return;
    const int32_t* bias = bias_.empty() ? nullptr : bias_.data();
    if (bits_ == 8)
      fully_connected_int8_reference(params_, input, {batch, in_}, weights_.data(), {out_, in_}, bias, output);
    else
      fully_connected_packed_reference(params_, input, {batch, in_}, weights_packed_.data(), bits_, {out_, in_}, bias,
                                       output);
    return;
  }
  require_supported(path);
  uint8_t* a = scratch + (64 - reinterpret_cast<uintptr_t>(scratch) % 64) % 64;  // 64-byte aligned
  const int64_t chunk = row_chunk(gemm_kernel(path).mr, batch, 1);
  for (int64_t m0 = 0; m0 < batch; m0 += chunk)
    run_block(input, m0, std::min<int64_t>(chunk, batch - m0), output, path, a);
}

void PackedFullyConnectedInt8::run(const int8_t* input, int64_t batch, int8_t* output, KernelPath path) const {
  QATLAB_CHECK(batch >= 0, "PackedFullyConnectedInt8::run: batch " + std::to_string(batch) + " must be >= 0");
  if (path == KernelPath::Reference) return run_serial(input, batch, output, path, nullptr);
  require_supported(path);
  const int mr = gemm_kernel(path).mr;
  const int threads = threads_for(ceil_div(batch, mr), mr * in_ * out_);
  const int64_t per_thread = scratch_bytes();
  // From the tensors' buffer pool: a fresh allocation of this size would take page faults on every
  // call (1024 rows of 1024: ~260 KB).
  const std::shared_ptr<float[]> buffer = alloc_floats(ceil_div(threads * per_thread, sizeof(float)));
  uint8_t* scratch = reinterpret_cast<uint8_t*>(buffer.get());
  if (threads == 1) return run_serial(input, batch, output, path, scratch);
  const int64_t chunk = row_chunk(mr, batch, threads), chunks = ceil_div(batch, chunk);
#pragma omp parallel num_threads(threads)
  {
    uint8_t* mine = scratch + omp_get_thread_num() * per_thread;
    uint8_t* a = mine + (64 - reinterpret_cast<uintptr_t>(mine) % 64) % 64;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c)
      run_block(input, c * chunk, std::min<int64_t>(chunk, batch - c * chunk), output, path, a);
  }
}

}  // namespace qatlab
