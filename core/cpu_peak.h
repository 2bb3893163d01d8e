// cpu_peak.h: peak arithmetic rates of this CPU, the yardstick `qatlab bench` reports GEMM rates
// against. The float peak is measured with register-only FMA chains on every thread.
#pragma once

namespace qatlab {

// Peak float32 GFLOP/s (fused multiply-add, 2 flops each) with AVX2+FMA, 0 where the CPU lacks them.
double measure_peak_float_gflops(int threads, double seconds = 0.2);
// Peak int8-GEMM GOP/s (multiply + add = 2 ops per MAC) of the instruction the AVX2 integer kernels
// use (vpmaddwd on int16 pairs), from the measured FMA rate: twice it (see cpu_peak.cpp); 0 without AVX2.
double estimate_peak_int8_gops(double float_gflops);

}  // namespace qatlab
