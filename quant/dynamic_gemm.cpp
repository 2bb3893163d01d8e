// dynamic_gemm.cpp: the reference, portable and AVX2 kernels of the dynamic u8 x s8 -> int32 matmul and
// the packing behind PackedDynamicWeights (see dynamic_gemm.h for the layout).
//
// Shape letters: M activation rows, K the reduction length, KP = ceil(K / 2) its pairs, N weight rows
// (output columns), P = ceil(N / 16) panels, MR the rows of a micro-tile.
//
// The AVX2 functions carry __attribute__((target("avx2"))) so that the file builds for baseline x86-64;
// they run only after dynamic_gemm_path_supported() said yes. The OpenMP region stays in a plain
// function: an outlined region does not inherit a target attribute.
#include "quant/dynamic_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QATLAB_DYN_X86 1
#else
#define QATLAB_DYN_X86 0
#endif

namespace qatlab {

namespace {

constexpr int64_t kPanel = 16;      // output columns per packed panel
constexpr int64_t kPairBytes = 32;  // one k-pair of a panel: 16 columns x 2 k
constexpr int kPortableMR = 4, kAvx2MR = 6;
// Below this many multiply-adds run() stays on the calling thread: forking a team costs more.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int tile_rows(KernelPath path) { return path == KernelPath::Avx2 ? kAvx2MR : kPortableMR; }

void require_dynamic_supported(KernelPath path) {
  if (dynamic_gemm_path_supported(path)) return;
  if (path == KernelPath::Avx512Vnni)
    throw std::invalid_argument(
        "dynamic int8 matmul: there is no avx512vnni kernel for it; use avx2, portable or reference");
  throw std::invalid_argument(std::string("dynamic int8 matmul: kernel path ") + kernel_path_name(path) +
                              " is not supported by this CPU (best available: " +
                              kernel_path_name(best_dynamic_gemm_path()) + ")");
}

// Stores the first `cols` of a tile row's 16 sums (cols < 16 only at the last panel).
inline void store_partial(const int32_t* sums, int32_t* dst, int cols) {
  std::memcpy(dst, sums, sizeof(int32_t) * cols);
}

// --------------------------------------------------------------------------------- portable kernel
// a: MR rows of KP*2 int16 codes (row stride a_stride); b: one panel (KP, 16, 2); acc: MR rows of the
// output (row stride acc_stride), of which the first `cols` columns are written.
//
// One row at a time, the panel re-read from L1 for each: the plain form. (Interleaving the rows inside
// the k loop, as the AVX2 kernel does, made GCC 12's vectoriser load pairs from rows MR..2MR-1 as well:
// reads past the caller's buffer, caught by a guard-page test.)

template <int MR>
void portable_tile(const int16_t* a, int64_t a_stride, const int8_t* b, int64_t kp_count, int32_t* acc,
                   int64_t acc_stride, int cols) {
  for (int r = 0; r < MR; ++r) {
    const int16_t* ar = a + r * a_stride;
    // Products of k and k + 1 go to separate lanes (a 32-lane multiply-add the compiler vectorises
    // without shuffles); each column's two lanes are added once at the end. Integer sums in any order
    // are the same sums.
    int32_t lanes[kPairBytes] = {};  // (16, 2)
    for (int64_t kp = 0; kp < kp_count; ++kp) {
      const int8_t* bq = b + kp * kPairBytes;
      const int32_t a0 = ar[2 * kp], a1 = ar[2 * kp + 1];
      for (int j = 0; j < kPanel; ++j) {
        lanes[2 * j] += a0 * bq[2 * j];
        lanes[2 * j + 1] += a1 * bq[2 * j + 1];
      }
    }
    int32_t sums[kPanel];  // (16)
    for (int j = 0; j < kPanel; ++j) sums[j] = lanes[2 * j] + lanes[2 * j + 1];
    store_partial(sums, acc + r * acc_stride, cols);
  }
}

using TileFn = void (*)(const int16_t*, int64_t, const int8_t*, int64_t, int32_t*, int64_t, int);

TileFn portable_tile_fn(int rows) {
  switch (rows) {
    case 1: return portable_tile<1>;
    case 2: return portable_tile<2>;
    case 3: return portable_tile<3>;
    default: return portable_tile<4>;
  }
}
static_assert(kPortableMR == 4);

#if QATLAB_DYN_X86

// ------------------------------------------------------------------------------------- AVX2 kernel

// One row of a tile for one k-pair: the row's two int16 codes broadcast to every 32-bit lane, times
// 8 columns x 2 k of the panel (b_lo: columns 0..7, b_hi: 8..15); _mm256_madd_epi16 adds each lane's
// two products, so lane j gains a0 * w[j, k] + a1 * w[j, k + 1].
__attribute__((target("avx2"), always_inline)) inline void avx2_row_step(const int16_t* a_pair, __m256i b_lo,
                                                                         __m256i b_hi, __m256i& lo, __m256i& hi) {
  int32_t pair;
  std::memcpy(&pair, a_pair, sizeof pair);
  const __m256i av = _mm256_set1_epi32(pair);
  lo = _mm256_add_epi32(lo, _mm256_madd_epi16(av, b_lo));
  hi = _mm256_add_epi32(hi, _mm256_madd_epi16(av, b_hi));
}

__attribute__((target("avx2"), always_inline)) inline void avx2_store_row(__m256i lo, __m256i hi, int32_t* dst,
                                                                          int cols) {
  if (cols == kPanel) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), hi);
    return;
  }
  alignas(32) int32_t sums[kPanel];
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums), lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), hi);
  store_partial(sums, dst, cols);
}

// The same contract as portable_tile. The accumulators are named variables rather than an array, so
// that the compiler keeps all of them in registers: 6 rows x 2 + 2 of B + the broadcast = 15 ymm.
template <int MR>
__attribute__((target("avx2"))) void avx2_tile(const int16_t* a, int64_t a_stride, const int8_t* b, int64_t kp_count,
                                               int32_t* acc, int64_t acc_stride, int cols) {
  static_assert(MR >= 1 && MR <= 6);
  const __m256i zero = _mm256_setzero_si256();
  __m256i lo0 = zero, hi0 = zero, lo1 = zero, hi1 = zero, lo2 = zero, hi2 = zero;
  __m256i lo3 = zero, hi3 = zero, lo4 = zero, hi4 = zero, lo5 = zero, hi5 = zero;
  for (int64_t kp = 0; kp < kp_count; ++kp) {
    const int8_t* bq = b + kp * kPairBytes;
    const __m256i b_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq)));
    const __m256i b_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bq + 16)));
    const int16_t* ak = a + 2 * kp;
    avx2_row_step(ak, b_lo, b_hi, lo0, hi0);
    if constexpr (MR > 1) avx2_row_step(ak + a_stride, b_lo, b_hi, lo1, hi1);
    if constexpr (MR > 2) avx2_row_step(ak + 2 * a_stride, b_lo, b_hi, lo2, hi2);
    if constexpr (MR > 3) avx2_row_step(ak + 3 * a_stride, b_lo, b_hi, lo3, hi3);
    if constexpr (MR > 4) avx2_row_step(ak + 4 * a_stride, b_lo, b_hi, lo4, hi4);
    if constexpr (MR > 5) avx2_row_step(ak + 5 * a_stride, b_lo, b_hi, lo5, hi5);
  }
  avx2_store_row(lo0, hi0, acc, cols);
  if constexpr (MR > 1) avx2_store_row(lo1, hi1, acc + acc_stride, cols);
  if constexpr (MR > 2) avx2_store_row(lo2, hi2, acc + 2 * acc_stride, cols);
  if constexpr (MR > 3) avx2_store_row(lo3, hi3, acc + 3 * acc_stride, cols);
  if constexpr (MR > 4) avx2_store_row(lo4, hi4, acc + 4 * acc_stride, cols);
  if constexpr (MR > 5) avx2_store_row(lo5, hi5, acc + 5 * acc_stride, cols);
}

TileFn avx2_tile_fn(int rows) {
  switch (rows) {
    case 1: return avx2_tile<1>;
    case 2: return avx2_tile<2>;
    case 3: return avx2_tile<3>;
    case 4: return avx2_tile<4>;
    case 5: return avx2_tile<5>;
    default: return avx2_tile<6>;
  }
}
static_assert(kAvx2MR == 6);

#endif  // QATLAB_DYN_X86

}  // namespace

void dynamic_gemm_reference(const uint8_t* a, int64_t m, int64_t k, const int8_t* w, int64_t n, int32_t* acc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int32_t s = 0;
      for (int64_t t = 0; t < k; ++t) s += int32_t{a[i * k + t]} * int32_t{w[j * k + t]};
      acc[i * n + j] = s;
    }
}

bool dynamic_gemm_path_supported(KernelPath path) {
  switch (path) {
    case KernelPath::Reference:
    case KernelPath::Portable: return true;
    case KernelPath::Avx2: return QATLAB_DYN_X86 && kernel_path_supported(KernelPath::Avx2);
    case KernelPath::Avx512Vnni: return false;
  }
  return false;
}

KernelPath best_dynamic_gemm_path() {
  return dynamic_gemm_path_supported(KernelPath::Avx2) ? KernelPath::Avx2 : KernelPath::Portable;
}

PackedDynamicWeights::PackedDynamicWeights(const int8_t* w, int64_t n, int64_t k) : n_(n), k_(k) {
  QATLAB_CHECK(n >= 1 && k >= 1 && k <= kDynamicGemmMaxK,
               "PackedDynamicWeights: weights must be (N, K) with N >= 1 and 1 <= K <= 65536 (int32 accumulator "
               "headroom), got (" + std::to_string(n) + ", " + std::to_string(k) + ")");
  kp_ = ceil_div(k, 2);
  panels_ = ceil_div(n, kPanel);
  codes_.assign(w, w + n * k);
  row_sums_.assign(n, 0);
  panels_data_.assign(panels_ * kp_ * kPairBytes, 0);
  for (int64_t o = 0; o < n; ++o) {
    const int64_t p = o / kPanel, j = o % kPanel;
    for (int64_t i = 0; i < k; ++i) {
      panels_data_[(p * kp_ + i / 2) * kPairBytes + j * 2 + i % 2] = w[o * k + i];
      row_sums_[o] += w[o * k + i];
    }
  }
}

int64_t PackedDynamicWeights::scratch_elems() const { return std::max(kPortableMR, kAvx2MR) * kp_ * 2; }

void PackedDynamicWeights::run_serial(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path,
                                      int16_t* scratch) const {
  QATLAB_CHECK(m >= 0, "PackedDynamicWeights::run_serial: rows " + std::to_string(m) + " must be >= 0");
  QATLAB_CHECK(n_ > 0, "PackedDynamicWeights::run_serial: no weights packed");
  if (path == KernelPath::Reference) {
    dynamic_gemm_reference(a, m, k_, codes_.data(), n_, acc);
    return;
  }
  require_dynamic_supported(path);
  const int mr = tile_rows(path);
  const int64_t row = kp_ * 2;  // a widened row, zero-padded to whole pairs
  for (int64_t m0 = 0; m0 < m; m0 += mr) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, m - m0));
    // The block's activation rows widened to int16 once, so the kernel broadcasts a pair with one load.
    for (int r = 0; r < rows; ++r) {
      const uint8_t* src = a + (m0 + r) * k_;
      int16_t* dst = scratch + r * row;
      for (int64_t i = 0; i < k_; ++i) dst[i] = src[i];
      if (row > k_) dst[k_] = 0;
    }
    TileFn tile = portable_tile_fn(rows);
#if QATLAB_DYN_X86
    if (path == KernelPath::Avx2) tile = avx2_tile_fn(rows);
#endif
    for (int64_t p = 0; p < panels_; ++p) {
      const int cols = static_cast<int>(std::min<int64_t>(kPanel, n_ - p * kPanel));
      tile(scratch, row, panels_data_.data() + p * kp_ * kPairBytes, kp_, acc + m0 * n_ + p * kPanel, n_, cols);
    }
  }
}

void PackedDynamicWeights::run(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path) const {
  QATLAB_CHECK(m >= 0, "PackedDynamicWeights::run: rows " + std::to_string(m) + " must be >= 0");
  if (path != KernelPath::Reference) require_dynamic_supported(path);
  const int mr = tile_rows(path);
  const int64_t blocks = ceil_div(m, mr);
  const int threads = blocks >= 2 && m * n_ * k_ >= kParallelMacs
                          ? static_cast<int>(std::min<int64_t>(omp_get_max_threads(), blocks))
                          : 1;
  const int64_t per_thread = scratch_elems();
  std::vector<int16_t> scratch(threads * per_thread);
  if (threads == 1) return run_serial(a, m, acc, path, scratch.data());
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t m0 = b * mr;
    run_serial(a + m0 * k_, std::min<int64_t>(mr, m - m0), acc + m0 * n_, path,
               scratch.data() + omp_get_thread_num() * per_thread);
  }
}

}  // namespace qatlab
