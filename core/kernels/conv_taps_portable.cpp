// conv_taps_portable.cpp: the shifted-tap convolution kernels in plain C++ (conv_taps.h), for every CPU.
// The loops are written for the compiler to vectorise: fixed-length inner loops over a block of
// positions (forward) or over the lanes of the partial sums (weight gradient).
#include <algorithm>

#include "core/kernels/conv_taps.h"

namespace qatlab {

namespace {

constexpr int kOcBlock = 4;
constexpr int kLanes = 8;
constexpr int64_t kPositions = 64;  // forward: positions summed in a local buffer at a time

void forward(const TapForward& a) {
  const int64_t nq = round_up_taps(a.q_count);
  for (int64_t q0 = 0; q0 < nq; q0 += kPositions) {
    const int64_t len = std::min(kPositions, nq - q0);  // a multiple of kTapQuantum
    for (int64_t o = 0; o < a.oc; ++o) {
      float sum[kPositions] = {};
      const float* w = a.w + o;
      for (int64_t c = 0; c < a.channels; ++c) {
        const float* xc = a.x + c * a.x_pitch + q0;
        for (int64_t t = 0; t < a.taps; ++t, w += kOcBlock) {
          const float wv = *w;
          const float* xs = xc + a.offsets[t];
          for (int64_t i = 0; i < len; ++i) sum[i] += wv * xs[i];
        }
      }
      std::copy(sum, sum + len, a.y + o * a.y_pitch + q0);
    }
  }
}

void weight_grad(const TapWeightGrad& a) {
  const int64_t j_count = a.channels * a.taps;
  for (int64_t o = 0; o < a.oc; ++o) {
    const float* dy = a.dy + o * a.dy_pitch;
    for (int64_t j = 0; j < j_count; ++j) {
      const float* x = a.x + (j / a.taps) * a.x_pitch + a.offsets[j % a.taps];
      float sum[kLanes] = {};
      for (int64_t q = a.q_begin; q < a.q_end; q += kLanes)
        for (int l = 0; l < kLanes; ++l) sum[l] += dy[q + l] * x[q + l];
      float total = 0.0f;
      for (int l = 0; l < kLanes; ++l) total += sum[l];
      a.acc[o * j_count + j] += total;
    }
  }
}

}  // namespace

const TapConvKernels kTapConvPortable{FloatPath::Portable, kOcBlock, false, forward, weight_grad};

}  // namespace qatlab
