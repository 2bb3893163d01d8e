// dynamic_gemm.h: the int32-accumulator matmul of dynamic quantization: unsigned 8-bit activation codes
// times signed 8-bit weight rows, a plain reference kernel and a packed fast one (AVX2 or portable).
//
// Shape letters: M rows of activations (the batch), K the reduction length (IN), N weight rows (OUT).
//
//   acc[m, n] = sum_k a[m, k] * w[n, k]        a uint8 (M, K), w int8 (N, K), acc int32 (M, N)
//
// No offsets, no rounding, no requantization: the caller turns the accumulator into floats
// (dynamic_quant.h). Every partial sum is bounded by K * 255 * 128 < 2^31 for K <= 65536, so the sums
// are exact in int32 in any order, and every path gives the same integers.
//
// The fast paths are the packed int8 GEMM's fully connected backends (quant/engine/kernels/gemm_kernel.h): the
// weights are packed once as that GEMM's operand B, in panels of 16 weight rows and quads of k:
//   panels[p][kq][j][t] = w[16 p + j, 4 kq + t]      (P, KQ, 16, 4) bytes, zero-padded in N and K
// and the same tiles run on them (AVX2: activation codes widened to int16, _mm256_madd_epi16, exact;
// portable: plain C++ over the same layout), ending in the raw int32 sums instead of the int8 output
// stage. The activations are not shifted to u = x + 128 here: they are unsigned codes already.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/engine/kernels/kernel_path.h"

namespace qatlab {

// The largest K the kernels accept: K * 255 * 128 must stay below 2^31.
inline constexpr int64_t kDynamicGemmMaxK = 65536;

// acc (M, N) = a (M, K) times w (N, K) transposed, plain nested loops: the definition the fast paths
// are tested against.
void dynamic_gemm_reference(const uint8_t* a, int64_t m, int64_t k, const int8_t* w, int64_t n, int32_t* acc);

// Whether the dynamic GEMM can run `path` on this CPU: Reference and Portable always, Avx2 when the CPU
// has it. There is no AVX-512 VNNI kernel for it: Avx512Vnni is never supported here.
bool dynamic_gemm_path_supported(KernelPath path);
// Avx2 when the CPU has it, else Portable.
KernelPath best_dynamic_gemm_path();

// Int8 weight rows packed once for every path.
class PackedDynamicWeights {
 public:
  PackedDynamicWeights() = default;
  // w (N, K) codes. Throws std::invalid_argument for N < 1, K < 1 or K > kDynamicGemmMaxK.
  PackedDynamicWeights(const int8_t* w, int64_t n, int64_t k);

  int64_t rows() const { return n_; }  // N
  int64_t cols() const { return k_; }  // K
  const std::vector<int8_t>& codes() const { return codes_; }      // (N, K), as given
  const std::vector<int32_t>& row_sums() const { return row_sums_; }  // (N): sum_k w[n, k]
  // (P, KQ, 16, 4) the codes as bytes, zero-padded in N and K (see the top of this file): the integer
  // LSTM's GEMV reads them too.
  const std::vector<uint8_t>& panels() const { return panels_data_; }

  // acc (m, N) = a (m, K) x w^T on the calling thread. scratch: scratch_elems() int16 of any contents
  // (the fast paths widen a few activation rows into it; Reference ignores it). Throws if this CPU
  // cannot run `path`.
  void run_serial(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path, int16_t* scratch) const;
  int64_t scratch_elems() const;
  // The same, spread over OpenMP threads by blocks of rows when the product is large (about 2^20
  // multiply-adds and more than one block); small products run on the calling thread.
  void run(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path) const;

 private:
  int64_t n_ = 0, k_ = 0, kq_ = 0, panels_ = 0;  // KQ = ceil(K / 4) quads, P = ceil(N / 16) panels
  std::vector<int8_t> codes_;                    // (N, K), for the Reference path and for saving
  std::vector<int32_t> row_sums_;                // (N)
  std::vector<uint8_t> panels_data_;             // (P, KQ, 16, 4), see the top of this file
};

}  // namespace qatlab
