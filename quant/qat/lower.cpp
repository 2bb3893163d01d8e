// lower.cpp: derives the integer parameters of a QAT layer (see lower.h for the formulas).
#include "quant/qat/lower.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "quant/engine/requantize.h"
#include "quant/qat/bias.h"
#include "quant/qat/qat_layers.h"

namespace qatlab {

std::pair<int32_t, int32_t> activation_clamp(const QParams& output, FusedActivation act) {
  int32_t lo = output.quant_min, hi = output.quant_max;
  const int32_t zp = output.zero_point[0];
  const float inv_scale = 1.0f / output.scale[0];
  // fake_quant(relu(y)) == max(fake_quant(y), code of 0) because rounding is monotonic and 0 -> zp;
  // likewise relu6 caps at the code of 6.0, computed with the very rounding the fake-quant uses.
  if (act == FusedActivation::ReLU || act == FusedActivation::ReLU6) lo = std::max(lo, zp);
  if (act == FusedActivation::ReLU6) hi = std::min(hi, quantize_value(6.0f, inv_scale, zp, output.quant_min, output.quant_max));
  return {lo, hi};
}

AddInt8Params lower_add(const QParams& a, const QParams& b, const QParams& out, bool relu_after) {
  const auto [lo, hi] = activation_clamp(out, relu_after ? FusedActivation::ReLU : FusedActivation::None);
  return make_add_params(a.scale[0], a.zero_point[0], b.scale[0], b.zero_point[0], out.scale[0], out.zero_point[0],
                         lo, hi);
}

RequantizeInt8Params lower_requantize(const QParams& in, const QParams& out) {
  check_int8_activation_grid(in, "a requantized value");
  check_int8_activation_grid(out, "a requantization's output");
  return make_requantize_params(in.scale[0], in.zero_point[0], out.scale[0], out.zero_point[0], out.quant_min,
                                out.quant_max);
}

LoweredLayer lower_layer(const QatLayer& layer, const QParams& input, const QParams& output) {
  check_int8_activation_grid(input, "a layer input");
  check_int8_activation_grid(output, "a layer output");
  const QParams wq = layer.weight_quant().qparams();
  wq.validate();
  const int64_t oc = layer.out_channels();
  if (!is_int8_weight_range(wq.quant_min, wq.quant_max))
    throw std::invalid_argument("integer graph: weights must be signed symmetric within [-127, 127], got codes [" +
                                std::to_string(wq.quant_min) + ", " + std::to_string(wq.quant_max) + "]");
  if (wq.per_channel() && (wq.axis != 0 || static_cast<int64_t>(wq.scale.size()) != oc))
    throw std::invalid_argument("integer graph: per-channel weights must be quantized along axis 0");
  for (int32_t z : wq.zero_point)
    if (z != 0) throw std::invalid_argument("integer graph: weight zero points must be 0 (symmetric weights)");

  LoweredLayer out;
  out.is_conv = layer.is_conv();
  out.input = input;
  out.output = output;
  out.weights = wq;

  const Tensor w = layer.folded_weight();  // (OC, ...)
  const Tensor b = layer.folded_bias();    // (OC)
  out.weight_shape = w.shape();
  const int64_t per_channel = w.numel() / oc;
  out.weight.resize(w.numel());
  out.bias.resize(oc);
  std::vector<int32_t> multipliers(oc);
  std::vector<int> shifts(oc);
  const double s_in = input.scale[0], s_out = output.scale[0];
  for (int64_t c = 0; c < oc; ++c) {
    const float s_w = wq.scale[wq.per_channel() ? c : 0];
    const float inv = 1.0f / s_w;
    for (int64_t i = 0; i < per_channel; ++i)
      out.weight[c * per_channel + i] =
          static_cast<int8_t>(quantize_weight_value(w.data()[c * per_channel + i], inv, wq));
    // The bias lives on the accumulator's grid (bias.h).
    const double acc_scale = bias_scale(s_in, s_w);
    out.bias[c] = quantize_bias(b.data()[c], acc_scale);
    quantize_multiplier(acc_scale / s_out, &multipliers[c], &shifts[c]);
  }
  const auto [act_min, act_max] = activation_clamp(output, layer.activation());
  if (out.is_conv) {
    const Conv2dParams& p = layer.conv_params();
    out.conv.stride_h = p.stride_h, out.conv.stride_w = p.stride_w;
    out.conv.pad_h = p.pad_h, out.conv.pad_w = p.pad_w;
    out.conv.groups = p.groups;
    out.conv.input_offset = -input.zero_point[0];
    out.conv.output_offset = output.zero_point[0];
    out.conv.quantized_activation_min = act_min;
    out.conv.quantized_activation_max = act_max;
    out.conv.output_multiplier = multipliers;
    out.conv.output_shift = shifts;
  } else {
    out.fc.input_offset = -input.zero_point[0];
    out.fc.output_offset = output.zero_point[0];
    out.fc.quantized_activation_min = act_min;
    out.fc.quantized_activation_max = act_max;
    out.fc.output_multiplier = multipliers;
    out.fc.output_shift = shifts;
  }
  return out;
}

}  // namespace qatlab
