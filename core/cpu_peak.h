// cpu_peak.h: measured peak arithmetic rates of this CPU, the yardstick `qatlab bench` reports GEMM
// rates against. Each runs register-only multiply-add chains on every thread for about `seconds`.
#pragma once

namespace qatlab {

// Peak float32 GFLOP/s (fused multiply-add, 2 flops each) with AVX2+FMA, 0 where the CPU lacks them.
double measure_peak_float_gflops(int threads, double seconds = 0.2);
// Peak int8-GEMM GOP/s (multiply + add = 2 ops per MAC) of the instruction the AVX2 integer kernels
// use (vpmaddwd on int16 pairs); 0 where the CPU lacks AVX2.
double measure_peak_int8_gops(int threads, double seconds = 0.2);

}  // namespace qatlab
