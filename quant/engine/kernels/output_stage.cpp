// output_stage.cpp: the packed GEMM's per-channel output stage (PackedOutputStage, int8_gemm.h) built
// once at pack time, and its portable form after a fused max pool. The per-tile scalar stage is inline
// in gemm_kernel.h; the AVX2 one is in output_stage_avx2.h / .cpp.
#include <algorithm>

#include "quant/engine/kernels/gemm_kernel.h"
#include "quant/engine/requantize.h"

namespace qatlab::kernels {

PackedOutputStage make_output_stage(int64_t channels, int64_t padded, const std::vector<int64_t>& weight_sums,
                                    const int32_t* bias, int32_t input_offset, int32_t output_offset,
                                    const std::vector<int32_t>& multipliers, const std::vector<int>& shifts,
                                    int32_t act_min, int32_t act_max) {
  PackedOutputStage s;
  s.padded = padded;
  for (auto* v : {&s.folded_bias, &s.multiplier, &s.shift}) v->assign(padded, 0);
  s.columns.assign(PackedOutputStage::kParams * padded, 0);
  s.rows.assign(PackedOutputStage::kParams * 8 * padded, 0);
  for (int64_t c = 0; c < channels; ++c) {
    // Exact in int64, then reduced modulo 2^32 (C++20 conversion): the kernels add it with int32
    // wrap-around, which gives the reference's wrapped accumulator (see int8_kernels.h).
    const int64_t folded = (bias ? bias[c] : 0) + static_cast<int64_t>(input_offset - 128) * weight_sums[c];
    s.folded_bias[c] = static_cast<int32_t>(folded);
    s.multiplier[c] = multipliers[c];
    s.shift[c] = shifts[c];
    s.any_left_shift = s.any_left_shift || shifts[c] > 0;
    const int32_t values[PackedOutputStage::kParams] = {s.folded_bias[c], multipliers[c],
                                                        requantize_left_shift(shifts[c]),
                                                        requantize_total_shift(shifts[c])};
    for (int k = 0; k < PackedOutputStage::kParams; ++k) {
      s.columns[k * padded + c] = values[k];
      std::fill_n(s.rows.begin() + (c * PackedOutputStage::kParams + k) * 8, 8, values[k]);
    }
  }
  s.output_offset = output_offset;
  s.clamp_lo = act_min - output_offset;
  s.clamp_hi = act_max - output_offset;
  return s;
}

// The fused 2x2 stride-2 max pool of a conv, after its GEMM: acc holds one row of wrapped
// accumulators per channel (acc_stride apart), output pixel (oy, ox) at oy * row_stride + ox;
// y (OC, OH/2, OW/2) gets the requantized largest accumulator of each window (see int8_gemm.h for why
// that is the max of the requantized codes).
void pool_requantize_portable(const int32_t* acc, int64_t acc_stride, int64_t row_stride, int64_t channels, int64_t oh,
                              int64_t ow, const PackedOutputStage& s, int8_t* y) {
  const int64_t poh = oh / 2, pow = ow / 2;
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t py = 0; py < poh; ++py) {
      const int32_t* r0 = acc + c * acc_stride + 2 * py * row_stride;  // conv output rows 2py and 2py + 1
      const int32_t* r1 = r0 + row_stride;
      for (int64_t px = 0; px < pow; ++px) {
        const int32_t best = std::max(std::max(r0[2 * px], r0[2 * px + 1]), std::max(r1[2 * px], r1[2 * px + 1]));
        y[(c * poh + py) * pow + px] = requantize_channel(best, s, c);
      }
    }
  }
}

}  // namespace qatlab::kernels
