// conv_taps.h: the float convolution micro-kernels, one backend per file (conv_taps_<path>.cpp).
//
// A stride-1 convolution reads its input through kernel taps that are constant shifts. Lay each input
// plane out padded, with row pitch P (the padded width), and number the output positions on the same
// grid, q = oy * P + ox. Tap t = (ki, kj) then meets the input element at q + off[t], off[t] = ki * P + kj,
// for every q, so that
//     y[o][q] = sum over c, t of  w[o][c][t] * x[c][q + off[t]]
// is a sum of whole shifted planes: contiguous vector loads, no im2col. The P - OW positions at the end
// of each output row are computed too and dropped by the caller. The input gradient of a stride-1
// convolution is another one (dy padded by K - 1 - pad, the kernel flipped, channels swapped), and the
// weight gradient is the same sum turned around,
//     dw[o][c][t] = sum over q of  dy[o][q] * x[c][q + off[t]],
// with dy laid out on the same grid and zero at the dropped positions (core/ops_conv.cpp; strides go
// through the phases of the padded input, each read with stride 1).
//
// Every backend computes the same sums; their order differs (lane-wise partial sums), so results agree
// to rounding, not bit for bit. Adding a backend: a file defining its TapConvKernels and a FloatPath
// (core/cpu_features.h) that tap_conv_kernels() returns it for.
#pragma once

#include <cstdint>

#include "core/cpu_features.h"

namespace qatlab {

// The positions a kernel call computes are [0, q_count) rounded up to a multiple of kTapQuantum: the
// caller provides room for them in y and finite input values for every read they make.
inline constexpr int64_t kTapQuantum = 16;

inline int64_t round_up_taps(int64_t n) { return (n + kTapQuantum - 1) / kTapQuantum * kTapQuantum; }

// Forward over one block of at most oc_block output channels:
//   y[o * y_pitch + q] = sum_{c < channels, t < taps} w[(c * taps + t) * oc_block + o] * x[c * x_pitch + offsets[t] + q]
// for o < oc and q < round_up_taps(q_count). y is overwritten.
//
// Kernels with direct_output write the output planes themselves when `out` is set (y is then unused):
// of the 16 positions from 16 * v on, those in bit set store_masks[v] are the valid ones (inside a row
// and a row < OH); they go, plus bias[o] if bias is set, to out[o * out_pitch + store_index[v] + k] for
// the k-th valid position, added to what is there with `accumulate`. Valid positions of the grid are
// consecutive in the output plane, so a vector's valid lanes are one contiguous run there.
struct TapForward {
  const float* x = nullptr;
  int64_t x_pitch = 0;   // channel c's plane starts at x + c * x_pitch
  int64_t channels = 0;
  const int64_t* offsets = nullptr;
  int64_t taps = 0;
  const float* w = nullptr;  // packed (channels, taps, oc_block); lanes o >= oc are not read
  int64_t oc = 0;            // 1..oc_block
  float* y = nullptr;
  int64_t y_pitch = 0;
  int64_t q_count = 0;
  // Direct output (direct_output kernels only).
  float* out = nullptr;
  int64_t out_pitch = 0;
  const uint16_t* store_masks = nullptr;
  const int64_t* store_index = nullptr;
  const float* bias = nullptr;
  bool accumulate = false;
};

// Weight-gradient sums over q in [q_begin, q_end) (both multiples of kTapQuantum), for every o < oc
// and j = c * taps + t < channels * taps:
//   acc[o * channels * taps + j] += sum over q of dy[o * dy_pitch + q] * x[c * x_pitch + offsets[t] + q]
// Give a kernel a long range (a thread's share of the batch): it blocks the positions for the caches
// itself, and adds up its vector lanes once at the end.
struct TapWeightGrad {
  const float* dy = nullptr;
  int64_t dy_pitch = 0;
  int64_t oc = 0;
  const float* x = nullptr;
  int64_t x_pitch = 0;
  int64_t channels = 0;
  const int64_t* offsets = nullptr;
  int64_t taps = 0;
  int64_t q_begin = 0, q_end = 0;
  float* acc = nullptr;
};

struct TapConvKernels {
  FloatPath path;
  int oc_block;        // output channels per forward call (packed weight block width)
  bool direct_output;  // forward writes output planes (TapForward::out) without a y grid
  void (*forward)(const TapForward& args);
  void (*weight_grad)(const TapWeightGrad& args);
};

// The kernels of `path` (which the CPU must support).
const TapConvKernels& tap_conv_kernels(FloatPath path);

// The backends' tables, one per file.
extern const TapConvKernels kTapConvPortable;
extern const TapConvKernels kTapConvAvx2;
extern const TapConvKernels kTapConvAvx512;

}  // namespace qatlab
