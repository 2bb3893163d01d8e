// conv_taps_avx2.cpp: the shifted-tap convolution kernels on AVX2 + FMA (conv_taps.h).
//
// Forward tile 4 output channels x 3 vectors of 8 positions, weight-gradient tile 2 output channels x
// 6 (channel, tap) pairs: 12 of the 16 ymm registers accumulate (conv_taps_tiles.h). The functions
// carry target attributes, so the file builds for any x86-64; they run only where
// cpu_has(CpuFeature::Avx2Fma).
#include "core/kernels/conv_taps.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define QATLAB_TAPS_TARGET __attribute__((target("avx2,fma")))
#include "core/kernels/conv_taps_tiles.h"

namespace qatlab {
namespace {

struct Ymm {
  using Reg = __m256;
  static constexpr int kWidth = 8;
  QATLAB_TAPS_TARGET static Reg zero() { return _mm256_setzero_ps(); }
  QATLAB_TAPS_TARGET static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  QATLAB_TAPS_TARGET static void store(float* p, Reg r) { _mm256_storeu_ps(p, r); }
  QATLAB_TAPS_TARGET static Reg set1(float f) { return _mm256_set1_ps(f); }
  QATLAB_TAPS_TARGET static Reg fma(Reg a, Reg b, Reg acc) { return _mm256_fmadd_ps(a, b, acc); }
  static constexpr bool kCompress = false;  // no vcompressps: the caller compacts the y grid
  QATLAB_TAPS_TARGET static float sum(Reg r) {
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
  }
};

using Tiles = TapTiles<Ymm, 4, 3, 2, 6>;

}  // namespace

const TapConvKernels kTapConvAvx2{FloatPath::Avx2, 4, false, Tiles::forward, Tiles::weight_grad};

}  // namespace qatlab

#else  // not x86-64: the path is never supported; its table has no kernels.

namespace qatlab {
const TapConvKernels kTapConvAvx2{FloatPath::Avx2, 1, false, nullptr, nullptr};
}  // namespace qatlab

#endif
