// conv_taps_avx512.cpp: the shifted-tap convolution kernels on AVX-512 (conv_taps.h).
//
// Forward tile 8 output channels x 3 vectors of 16 positions, weight-gradient tile 6 output channels x
// 4 (channel, tap) pairs: 24 of the 32 zmm registers accumulate (conv_taps_tiles.h). The weight
// gradient is bound by loads: its dy rows are aligned (the caller's stacks are), its input rows are
// shifted by the taps, and of the tiles measured (4x6, 8x3, 6x4, 3x8, 5x5) 6x4 ran fastest. The functions
// carry target attributes, so the file builds for any x86-64; they run only where
// cpu_has(CpuFeature::Avx512).
#include "core/kernels/conv_taps.h"

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12's _mm512_reduce_add_ps passes _mm512_undefined_ps() (a self-initialised variable) as an unused
// operand, which -Wmaybe-uninitialized reports once inlined (GCC bug 105593, fixed in GCC 13). clang
// (the sanitizer build) has neither the bug nor the warning.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#define QATLAB_TAPS_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#include "core/kernels/conv_taps_tiles.h"

namespace qatlab {
namespace {

struct Zmm {
  using Reg = __m512;
  static constexpr int kWidth = 16;
  QATLAB_TAPS_TARGET static Reg zero() { return _mm512_setzero_ps(); }
  QATLAB_TAPS_TARGET static Reg load(const float* p) { return _mm512_loadu_ps(p); }
  QATLAB_TAPS_TARGET static void store(float* p, Reg r) { _mm512_storeu_ps(p, r); }
  QATLAB_TAPS_TARGET static Reg set1(float f) { return _mm512_set1_ps(f); }
  QATLAB_TAPS_TARGET static Reg fma(Reg a, Reg b, Reg acc) { return _mm512_fmadd_ps(a, b, acc); }
  QATLAB_TAPS_TARGET static float sum(Reg r) { return _mm512_reduce_add_ps(r); }
  QATLAB_TAPS_TARGET static Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  // The lanes in `mask` packed to the front (vcompressps), stored over as many floats.
  static constexpr bool kCompress = true;
  QATLAB_TAPS_TARGET static void store_valid(float* p, Reg r, uint32_t mask, bool accumulate) {
    const __mmask16 lanes = static_cast<__mmask16>(mask);
    const __mmask16 front = static_cast<__mmask16>((1u << __builtin_popcount(mask)) - 1);
    __m512 packed = _mm512_maskz_compress_ps(lanes, r);
    if (accumulate) packed = _mm512_add_ps(packed, _mm512_maskz_loadu_ps(front, p));
    _mm512_mask_storeu_ps(p, front, packed);
  }
};

using Tiles = TapTiles<Zmm, 8, 3, 6, 4>;

}  // namespace

const TapConvKernels kTapConvAvx512{FloatPath::Avx512, 8, true, Tiles::forward, Tiles::weight_grad};

}  // namespace qatlab

#else  // not x86-64: the path is never supported; its table has no kernels.

namespace qatlab {
const TapConvKernels kTapConvAvx512{FloatPath::Avx512, 1, false, nullptr, nullptr};
}  // namespace qatlab

#endif
