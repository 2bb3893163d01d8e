// lower.cpp: derives the integer parameters of a QAT layer (see lower.h for the formulas).
#include "quant/qat/bias.h"
#include "quant/qat/lower.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "core/parallel.h"
#include "quant/engine/packed_codes.h"
#include "quant/engine/requantize.h"
#include "quant/qat/qat_layers.h"

namespace qatlab {

namespace {

void check_activation_grid(const QParams& qp, const char* what) {
  qp.validate();
  if (qp.per_channel())
    throw std::invalid_argument(std::string("integer graph: ") + what + " must be quantized per tensor");
  if (qp.quant_min < -128 || qp.quant_max > 127)
    throw std::invalid_argument(std::string("integer graph: ") + what + " codes [" + std::to_string(qp.quant_min) +
                                ", " + std::to_string(qp.quant_max) + "] do not fit int8 (use a signed scheme)");
}

}  // namespace

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

LoweredLayer lower_layer(const QatLayer& layer, const QParams& input, const QParams& output) {
  check_activation_grid(input, "a layer input");
  check_activation_grid(output, "a layer output");
  const QParams wq = layer.weight_quant().qparams();
  wq.validate();
  const int64_t oc = layer.out_channels();
  if (wq.quant_min != -wq.quant_max || wq.quant_max > 127)
    throw std::invalid_argument("integer graph: weights must be signed symmetric narrow-range, got codes [" +
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
          static_cast<int8_t>(quantize_value(w.data()[c * per_channel + i], inv, 0, wq.quant_min, wq.quant_max));
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

std::vector<int8_t> LoweredLayer::weight_codes() const {
  if (weight_bits == 8) return weight;
  std::vector<int8_t> codes(shape_numel(weight_shape));
  unpack_codes(weight_packed.data(), static_cast<int64_t>(codes.size()), weight_bits, codes.data());
  return codes;
}

void pack_weights(LoweredLayer& l) {
  if (l.weight_bits != 8) return;  // already packed
  const int64_t n = shape_numel(l.weight_shape);
  QATLAB_CHECK(static_cast<int64_t>(l.weight.size()) == n,
               "pack_weights: " + std::to_string(l.weight.size()) + " weight codes for shape " +
                   shape_str(l.weight_shape) + ": expected " + std::to_string(n));
  const int bits = storage_bits(l.weights.quant_min, l.weights.quant_max);
  if (bits == 8) return;
  l.weight_packed = pack_codes(l.weight.data(), n, bits);
  l.weight_bits = bits;
  l.weight = {};  // releases the int8 copy: the graph keeps the packed form only
}

void run_lowered_reference(const LoweredLayer& l, const int8_t* input, const Shape& in_shape, int8_t* output) {
  const int32_t* bias = l.bias.empty() ? nullptr : l.bias.data();
  if (l.weight_bits == 8) {
    if (l.is_conv)
      conv2d_int8_reference(l.conv, input, in_shape, l.weight.data(), l.weight_shape, bias, output);
    else
      fully_connected_int8_reference(l.fc, input, in_shape, l.weight.data(), l.weight_shape, bias, output);
  } else if (l.is_conv) {
    conv2d_packed_reference(l.conv, input, in_shape, l.weight_packed.data(), l.weight_bits, l.weight_shape, bias,
                            output);
  } else {
    fully_connected_packed_reference(l.fc, input, in_shape, l.weight_packed.data(), l.weight_bits, l.weight_shape,
                                     bias, output);
  }
}

void run_lowered(const LoweredLayer& l, const int8_t* input, const Shape& in_shape, int8_t* output, KernelPath path) {
  if (path == KernelPath::Reference) return run_lowered_reference(l, input, in_shape, output);
  const int32_t* bias = l.bias.empty() ? nullptr : l.bias.data();
  if (l.is_conv) {
    QATLAB_CHECK(in_shape.size() == 4, "run_lowered: conv input must be (N, C, H, W), got " + shape_str(in_shape));
    const Shape chw = {in_shape[1], in_shape[2], in_shape[3]};
    const PackedConvInt8 packed = l.weight_bits == 8
                                      ? PackedConvInt8(l.conv, l.weight.data(), l.weight_shape, bias, chw)
                                      : PackedConvInt8(l.conv, l.weight_packed.data(), l.weight_bits, l.weight_shape,
                                                       bias, chw);
    packed.run(input, in_shape[0], output, path);
  } else {
    QATLAB_CHECK(in_shape.size() == 2, "run_lowered: linear input must be (N, IN), got " + shape_str(in_shape));
    const PackedFullyConnectedInt8 packed =
        l.weight_bits == 8 ? PackedFullyConnectedInt8(l.fc, l.weight.data(), l.weight_shape, bias)
                           : PackedFullyConnectedInt8(l.fc, l.weight_packed.data(), l.weight_bits, l.weight_shape, bias);
    packed.run(input, in_shape[0], output, path);
  }
}

std::vector<int8_t> quantize_tensor(const Tensor& x, const QParams& qp) {
  check_activation_grid(qp, "a tensor");
  // Scanned for NaN and quantized in parallel ranges (ResNet-20's residual adds quantize two 8 MB
  // activations per block in QAT training). for_ranges rethrows the lowest range's error, so the element
  // named is the first NaN, as quantize_float_to_int8 would name it.
  const int64_t n = x.numel();
  const float* px = x.data();
  std::vector<int8_t> q(static_cast<size_t>(n));
  for_ranges(n, [&](int64_t begin, int64_t end) {
    const int64_t at = find_first_nan(px + begin, end - begin);
    if (at >= 0)
      throw std::invalid_argument("quantize_float_to_int8: input element " + std::to_string(begin + at) + " is NaN");
    quantize_float_to_int8_values(px + begin, q.data() + begin, end - begin, qp.scale[0], qp.zero_point[0],
                                  qp.quant_min, qp.quant_max);
  });
  return q;
}

Tensor dequantize_codes(const std::vector<int8_t>& q, const Shape& shape, const QParams& qp) {
  Tensor t = Tensor::empty(shape);
  float* pt = t.data();
  for_ranges(t.numel(), [&](int64_t begin, int64_t end) {
    dequantize_int8_to_float(q.data() + begin, pt + begin, end - begin, qp.scale[0], qp.zero_point[0]);
  });
  return t;
}

}  // namespace qatlab
