// test_cpu_peak.cpp: every peak instruction the CPU has measures a positive rate, those it lacks say so;
// the rates themselves are benchmarks (`qatlab bench`), not tested here.
#include <gtest/gtest.h>

#include "core/cpu_peak.h"

namespace qatlab {
namespace {

TEST(CpuPeak, MeasuresWhatTheCpuHasAndNamesWhatItLacks) {
  for (PeakInstruction i : {PeakInstruction::FmaZmm, PeakInstruction::FmaYmm, PeakInstruction::DpbusdZmm,
                            PeakInstruction::MaddwdAddYmm}) {
    const Peak p = measure_peak(i, 1, 0.005);
    if (peak_instruction_supported(i)) {
      EXPECT_GT(p.gops, 0.0) << p.instruction;
      EXPECT_NE(p.instruction, "none");
    } else {
      EXPECT_EQ(p.gops, 0.0);
      EXPECT_EQ(p.instruction, "none");
      std::printf("[  SKIPPED ] this CPU lacks the instruction of peak %d\n", static_cast<int>(i));
    }
  }
}

TEST(CpuPeak, WidestFloatFmaIsOneTheCpuHasWhereItHasAny) {
  const PeakInstruction w = widest_float_fma();
  EXPECT_TRUE(w == PeakInstruction::FmaZmm || w == PeakInstruction::FmaYmm);
  if (peak_instruction_supported(PeakInstruction::FmaZmm)) {
    EXPECT_EQ(w, PeakInstruction::FmaZmm);
  }
}

}  // namespace
}  // namespace qatlab
