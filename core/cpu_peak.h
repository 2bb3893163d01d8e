// cpu_peak.h: peak arithmetic rates of this CPU, the yardstick `qatlab bench` reports model and GEMM
// rates against. Each peak is measured, on every thread, with register-only chains of the very
// instruction the kernels' inner loops issue, so that no kernel can exceed it.
#pragma once

#include <string>

namespace qatlab {

// The instruction a peak is measured with.
enum class PeakInstruction {
  FmaZmm,           // vfmadd231ps on 16 floats (AVX-512F): 32 flops
  FmaYmm,           // vfmadd231ps on 8 floats (AVX2 + FMA): 16 flops
  DpbusdZmm,        // vpdpbusd on 64 u8 x s8 pairs into 16 int32 (AVX-512 VNNI): 128 ops
  MaddwdAddYmm,     // vpmaddwd on 16 int16 pairs + vpaddd into 8 int32 (AVX2): 32 ops per pair of instructions
};

struct Peak {
  double gops = 0;           // 10^9 operations per second (a multiply-add counts 2); 0 if not measurable
  std::string instruction;   // e.g. "vfmadd231ps zmm", or "none" when the CPU lacks it
};

// Whether this CPU can issue `instruction`.
bool peak_instruction_supported(PeakInstruction instruction);
// The widest float multiply-add the CPU has (FmaZmm, else FmaYmm); the float kernels (core/kernels/, on
// the widest float path) use it. Returns FmaYmm on CPUs with neither: measuring it then gives 0.
PeakInstruction widest_float_fma();
// Measures `instruction` on `threads` threads for about `seconds`; gops 0 where the CPU lacks it.
Peak measure_peak(PeakInstruction instruction, int threads, double seconds = 0.2);
// A peak for rates already measured, the highest being `highest_gops`: the best of three measurements
// (one varies by a few percent from run to run: clock changes, other work; a peak is the best rate),
// then, since on a busy machine even those can come out below a kernel's own rate, up to 4 more while
// it is below. `settled` is false if it stayed below: the caller must then not print shares of it.
struct SettledPeak {
  Peak peak;
  bool settled = true;
};
SettledPeak settle_peak(PeakInstruction instruction, int threads, double highest_gops);

}  // namespace qatlab
