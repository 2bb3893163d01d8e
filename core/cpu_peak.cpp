// cpu_peak.cpp: register-only multiply-add loops. Many independent accumulators hide the instruction
// latency, so the loop runs at the issue rate of the multiply-add units.
#include "core/cpu_peak.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace qatlab {

namespace {

constexpr int64_t kInner = 1 << 16;

__attribute__((target("avx2,fma"))) float fma_chain(int64_t reps) {
  __m256 a[10];
  for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t r = 0; r < reps; ++r)
    for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, a[i]);
  return _mm256_cvtss_f32(s);
}

// Runs `body(reps)` on every thread for about `seconds`; returns the ops per second of all threads,
// `ops_per_rep` being one thread's operations per repetition.
template <typename Body>
double rate(int threads, double seconds, double ops_per_rep, Body body) {
  volatile double sink = 0;
  int64_t reps = kInner;
  // Grow the repetition count until one timed run lasts long enough to trust the clock.
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { sink = sink + body(reps); }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds) return threads * ops_per_rep * static_cast<double>(reps) / dt;
    reps = static_cast<int64_t>(static_cast<double>(reps) * (dt > 0 ? std::min(8.0, 1.2 * seconds / dt + 1) : 8.0));
  }
}

}  // namespace

double measure_peak_float_gflops(int threads, double seconds) {
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0.0;
  // 10 FMAs x 8 lanes x 2 flops per repetition.
  return rate(threads, seconds, 160.0, [](int64_t reps) { return static_cast<double>(fma_chain(reps)); }) * 1e-9;
}

double estimate_peak_int8_gops(double float_gflops) {
  // vpmaddwd (16 int16 multiply-adds, 32 ops) issues as often as an 8-lane FMA (16 flops) on current
  // AVX2 cores (two per cycle on Zen 3 and Skylake), so the int8 kernels' peak is twice the FMA rate.
  // A register loop of vpmaddwd measured lower than our own GEMM reaches, so we do not measure it.
  return __builtin_cpu_supports("avx2") ? 2.0 * float_gflops : 0.0;
}

}  // namespace qatlab
