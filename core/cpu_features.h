// cpu_features.h: the one place that asks the CPU what it can run, and the float kernels' paths.
//
// Float kernels (core/kernels/) and integer kernels (quant/engine/kernels/kernel_path.h) both pick their
// backend from the features reported here, at run time: the same binary runs the widest code a machine
// has and a portable path everywhere else.
#pragma once

namespace qatlab {

enum class CpuFeature {
  Avx2Fma,     // AVX2 and FMA3 (256-bit integer and float multiply-add)
  Avx512,      // AVX-512 F, BW, DQ, VL (512-bit float and byte/word)
  Avx512Vnni,  // AVX-512 F, BW and VNNI (vpdpbusd)
};

bool cpu_has(CpuFeature feature);

// The float kernels' paths: a backend each, files core/kernels/*_<name>.cpp.
enum class FloatPath { Portable, Avx2, Avx512 };

bool float_path_supported(FloatPath path);
FloatPath best_float_path();
const char* float_path_name(FloatPath path);  // "portable", "avx2", "avx512"

// The path the float ops run on: best_float_path() unless set. Setting a path the CPU cannot run throws
// std::invalid_argument. Tests set each supported path in turn; not meant to change while ops run.
FloatPath active_float_path();
void set_float_path(FloatPath path);

}  // namespace qatlab
