// dynamic_gemm.cpp: the reference kernel of the dynamic u8 x s8 -> int32 matmul and the packing behind
// PackedDynamicWeights (see dynamic_gemm.h for the layout). The fast paths are the packed GEMM's own
// fully connected backends (quant/engine/kernels/gemm_kernel.h), ending in raw int32 sums (Epilogue::sums)
// instead of the int8 output stage.
//
// Shape letters: M activation rows, K the reduction length, KQ = ceil(K / 4) its quads, N weight rows
// (output columns), P = ceil(N / 16) panels, MR the rows of a micro-tile.
//
// The OpenMP region stays in a plain function: an outlined region does not inherit a target attribute.
#include "quant/engine/dynamic_gemm.h"

#include <omp.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "quant/engine/kernels/gemm_kernel.h"

namespace qatlab {

using kernels::ceil_div;
using kernels::kPanel;
using kernels::kQuadBytes;

namespace {

// Below this many multiply-adds run() stays on the calling thread: forking a team costs more.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

// Rows per block: the backend's tile rows (Reference: any block size gives the same sums).
int block_rows(KernelPath path) {
  return path == KernelPath::Reference ? kernels::kPortableMR : kernels::gemm_kernel(path).mr;
}

void require_dynamic_supported(KernelPath path) {
  if (dynamic_gemm_path_supported(path)) return;
  if (path == KernelPath::Avx512Vnni)
    throw std::invalid_argument(
        "dynamic int8 matmul: there is no avx512vnni kernel for it; use avx2, portable or reference");
  throw std::invalid_argument(std::string("dynamic int8 matmul: kernel path ") + kernel_path_name(path) +
                              " is not supported by this CPU (best available: " +
                              kernel_path_name(best_dynamic_gemm_path()) + ")");
}

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
    case KernelPath::Avx2: return kernel_path_supported(KernelPath::Avx2);
    // The VNNI backend could run these sums too (its tiles end in the same Epilogue); it is not offered
    // here, so that what each path accepts stays as it was.
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
  kq_ = ceil_div(k, 4);
  panels_ = ceil_div(n, kPanel);
  codes_.assign(w, w + n * k);
  row_sums_.assign(n, 0);
  panels_data_.assign(panels_ * kq_ * kQuadBytes, 0);
  for (int64_t o = 0; o < n; ++o) {
    const int64_t p = o / kPanel, j = o % kPanel;
    for (int64_t i = 0; i < k; ++i) {
      panels_data_[((p * kq_ + i / 4) * kPanel + j) * 4 + i % 4] = static_cast<uint8_t>(w[o * k + i]);
      row_sums_[o] += w[o * k + i];
    }
  }
}

// One block of A for the widest tile, as int16 (the AVX2 backend) or bytes (in the same room).
int64_t PackedDynamicWeights::scratch_elems() const { return kernels::kMaxMR * kq_ * 4; }

void PackedDynamicWeights::run_serial(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path,
                                      int16_t* scratch) const {
  QATLAB_CHECK(m >= 0, "PackedDynamicWeights::run_serial: rows " + std::to_string(m) + " must be >= 0");
  QATLAB_CHECK(n_ > 0, "PackedDynamicWeights::run_serial: no weights packed");
  if (path == KernelPath::Reference) {
    dynamic_gemm_reference(a, m, k_, codes_.data(), n_, acc);
    return;
  }
  require_dynamic_supported(path);
  const kernels::GemmKernel& kernel = kernels::gemm_kernel(path);
  const int64_t row = kq_ * 4;  // a row of A zero-padded to whole quads
  kernels::GemmOperands g;
  g.a_stride = row;
  g.b = panels_data_.data();
  g.kq_count = kq_;
  g.n = n_;
  uint8_t* a8 = reinterpret_cast<uint8_t*>(scratch);
  if (kernel.a_int16)
    g.a16 = scratch;
  else
    g.a8 = a8;
  for (int64_t m0 = 0; m0 < m; m0 += kernel.mr) {
    const int rows = static_cast<int>(std::min<int64_t>(kernel.mr, m - m0));
    // The block's activation rows copied once in the form the backend broadcasts (widened to int16 for
    // AVX2), the K padding zero.
    for (int r = 0; r < rows; ++r) {
      const uint8_t* src = a + (m0 + r) * k_;
      if (kernel.a_int16) {
        int16_t* dst = scratch + r * row;
        for (int64_t i = 0; i < k_; ++i) dst[i] = src[i];
        std::fill(dst + k_, dst + row, int16_t{0});
      } else {
        uint8_t* dst = a8 + r * row;
        std::copy(src, src + k_, dst);
        std::fill(dst + k_, dst + row, uint8_t{0});
      }
    }
    kernels::Epilogue e{nullptr, 0, /*channel_per_row=*/false, nullptr, n_};
    e.sums = acc + m0 * n_;
    kernel.fully_connected(g, 0, rows, e);
  }
}

void PackedDynamicWeights::run(const uint8_t* a, int64_t m, int32_t* acc, KernelPath path) const {
  QATLAB_CHECK(m >= 0, "PackedDynamicWeights::run: rows " + std::to_string(m) + " must be >= 0");
  if (path != KernelPath::Reference) require_dynamic_supported(path);
  const int mr = block_rows(path);
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
