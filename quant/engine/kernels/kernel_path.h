// kernel_path.h: the integer kernels' paths (reference, portable, AVX2, AVX-512 VNNI), which of them
// this CPU runs, their names, and the one dispatcher of an op family with no packed operands (add).
//
// Everything that picks an integer kernel at run time asks here: the packed GEMMs (int8_gemm.h), the
// dynamic matmul (dynamic_gemm.h), the integer LSTM, the integer graph and the CLI. A new backend adds
// its enumerator and its CPU test here, and its kernels in files of their own (see quant/README.md,
// "Adding a kernel backend").
#pragma once

#include <cstdint>
#include <string>

namespace qatlab {

struct AddInt8Params;  // int8_kernels.h
struct AddValueGrids;  // int8_kernels.h

enum class KernelPath { Reference, Portable, Avx2, Avx512Vnni };

// Whether this CPU can run `path` (Reference and Portable always can).
bool kernel_path_supported(KernelPath path);
// The fastest path this CPU supports: Avx512Vnni, else Avx2, else Portable.
KernelPath best_kernel_path();
const char* kernel_path_name(KernelPath path);  // "reference", "portable", "avx2", "avx512vnni"
// "auto" (best_kernel_path), "reference", "portable", "avx2", "avx512vnni". An unknown name or a path
// this CPU cannot run throws std::invalid_argument saying which paths are available.
KernelPath parse_kernel_path(const std::string& name);
// Throws std::invalid_argument naming `path` and the best available one unless this CPU can run it.
void require_supported(KernelPath path);

// The residual add on `path`'s kernel: the reference loop for Reference and Portable, the AVX2 one for
// Avx2, the AVX-512 one for Avx512Vnni (throws if the CPU cannot run `path`). The same codes on every path.
void add_int8(const AddInt8Params& params, const int8_t* a, const int8_t* b, int8_t* out, int64_t count,
              KernelPath path);
// The same add on float values (add_int8_values_reference, int8_kernels.h): the AVX-512 kernel for
// Avx512Vnni, else the reference's tiles through add_int8 on `path`. The same values on every path;
// false if a or b holds a NaN.
bool add_int8_values(const AddInt8Params& params, const AddValueGrids& grids, const float* a, const float* b,
                     float* out, int64_t count, KernelPath path);

}  // namespace qatlab
