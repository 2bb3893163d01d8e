// cpu_peak.cpp: register-only multiply-add loops. Many independent accumulators hide the instruction
// latency, so the loop runs at the issue rate of the multiply-add units; the results feed a volatile
// sink so that the compiler cannot drop the loop.
#include "core/cpu_peak.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace qatlab {

namespace {

constexpr int64_t kInner = 1 << 14;
constexpr int kChains = 12;  // >= latency (4-5 cycles) x ports (2): enough independent accumulators

__attribute__((target("avx2,fma"))) float fma_ymm(int64_t reps) {
  __m256 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t r = 0; r < reps; ++r)
    for (int i = 0; i < kChains; ++i) a[i] = _mm256_fmadd_ps(a[i], m, c);
  __m256 s = a[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, a[i]);
  return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float fma_zmm(int64_t reps) {
  __m512 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t r = 0; r < reps; ++r)
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, a[i]);
  // Summed through memory: GCC 12's _mm512_reduce_add_ps trips its own -Wuninitialized.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) float dpbusd_zmm(int64_t reps) {
  __m512i a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm512_set1_epi32(i);
  const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (int64_t r = 0; r < reps; ++r)
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_dpbusd_epi32(a[i], u, s);
  __m512i t = a[0];
  for (int i = 1; i < kChains; ++i) t = _mm512_add_epi32(t, a[i]);
  // Summed through memory: GCC 12's _mm512_reduce_add_epi32 trips its own -Wuninitialized.
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, t);
  int32_t sum = 0;
  for (int32_t v : lanes) sum += v;
  return static_cast<float>(sum);
}

// The AVX2 integer kernels' inner step: vpmaddwd (int16 pairs -> int32) then vpaddd into the accumulator.
// Each chain multiplies its own accumulator (wrapping, which is defined for these instructions), so the
// products cannot be hoisted out of the loop; a chain's latency (madd + add) is covered by 12 chains.
__attribute__((target("avx2"))) float maddwd_add_ymm(int64_t reps) {
  __m256i a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = _mm256_set1_epi32(i);
  const __m256i w = _mm256_set1_epi16(-2);
  for (int64_t r = 0; r < reps; ++r)
    for (int i = 0; i < kChains; ++i) a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(a[i], w));
  __m256i t = a[0];
  for (int i = 1; i < kChains; ++i) t = _mm256_add_epi32(t, a[i]);
  return static_cast<float>(_mm256_extract_epi32(t, 0));
}

// Runs `body(reps)` on every thread for about `seconds`; returns the ops per second of all threads,
// `ops_per_rep` being one thread's operations per repetition.
template <typename Body>
double rate(int threads, double seconds, double ops_per_rep, Body body) {
  volatile float sink = 0;
  int64_t reps = kInner;
  // Grow the repetition count until one timed run lasts long enough to trust the clock.
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      const float v = body(reps);
#pragma omp critical
      sink = sink + v;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt >= seconds) return threads * ops_per_rep * static_cast<double>(reps) / dt;
    reps = static_cast<int64_t>(static_cast<double>(reps) * (dt > 0 ? std::min(8.0, 1.2 * seconds / dt + 1) : 8.0));
  }
}

}  // namespace

bool peak_instruction_supported(PeakInstruction instruction) {
  switch (instruction) {
    case PeakInstruction::FmaZmm: return __builtin_cpu_supports("avx512f");
    case PeakInstruction::FmaYmm: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case PeakInstruction::DpbusdZmm:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    case PeakInstruction::MaddwdAddYmm: return __builtin_cpu_supports("avx2");
  }
  return false;
}

PeakInstruction widest_float_fma() {
  return peak_instruction_supported(PeakInstruction::FmaZmm) ? PeakInstruction::FmaZmm : PeakInstruction::FmaYmm;
}

Peak measure_peak(PeakInstruction instruction, int threads, double seconds) {
  if (!peak_instruction_supported(instruction)) return {0.0, "none"};
  const double ops = kChains;  // instructions per repetition, times the ops of one below
  switch (instruction) {
    case PeakInstruction::FmaZmm:
      return {rate(threads, seconds, ops * 32, fma_zmm) * 1e-9, "vfmadd231ps zmm"};
    case PeakInstruction::FmaYmm:
      return {rate(threads, seconds, ops * 16, fma_ymm) * 1e-9, "vfmadd231ps ymm"};
    case PeakInstruction::DpbusdZmm:
      return {rate(threads, seconds, ops * 128, dpbusd_zmm) * 1e-9, "vpdpbusd zmm"};
    case PeakInstruction::MaddwdAddYmm:
      return {rate(threads, seconds, ops * 32, maddwd_add_ymm) * 1e-9, "vpmaddwd+vpaddd ymm"};
  }
  return {0.0, "none"};
}

SettledPeak settle_peak(PeakInstruction instruction, int threads, double highest_gops) {
  SettledPeak r{measure_peak(instruction, threads), true};
  if (r.peak.gops <= 0) return r;
  for (int again = 0; again < 2; ++again) r.peak.gops = std::max(r.peak.gops, measure_peak(instruction, threads).gops);
  for (int attempt = 0; attempt < 4 && r.peak.gops < highest_gops; ++attempt)
    r.peak.gops = std::max(r.peak.gops, measure_peak(instruction, threads, 0.3).gops);
  r.settled = r.peak.gops >= highest_gops;
  return r;
}

}  // namespace qatlab
