// gemm_kernel.cpp: the table from kernel path to packed-GEMM backend (gemm_kernel.h): the one place a
// new backend is registered.
#include "quant/engine/kernels/gemm_kernel.h"

#include <cassert>

namespace qatlab::kernels {

const GemmKernel& gemm_kernel(KernelPath path) {
  switch (path) {
#if defined(__x86_64__) || defined(__i386__)
    case KernelPath::Avx2: return gemm_kernel_avx2();
    case KernelPath::Avx512Vnni: return gemm_kernel_avx512vnni();
#endif
    case KernelPath::Portable: return gemm_kernel_portable();
    default: assert(false && "no packed GEMM backend for this path: Reference runs the reference kernels"); break;
  }
  return gemm_kernel_portable();
}

}  // namespace qatlab::kernels
