// lowered_layer.cpp: the integer layer's weight forms and its runs on the kernels (see lowered_layer.h).
#include "quant/engine/lowered_layer.h"

#include <stdexcept>
#include <string>

#include "core/parallel.h"
#include "quant/engine/packed_codes.h"
#include "quant/engine/requantize.h"

namespace qatlab {

void check_int8_activation_grid(const QParams& qp, const char* what) {
  qp.validate();
  if (qp.per_channel())
    throw std::invalid_argument(std::string("integer graph: ") + what + " must be quantized per tensor");
  if (qp.quant_min < -128 || qp.quant_max > 127)
    throw std::invalid_argument(std::string("integer graph: ") + what + " codes [" + std::to_string(qp.quant_min) +
                                ", " + std::to_string(qp.quant_max) + "] do not fit int8 (use a signed scheme)");
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
  check_int8_activation_grid(qp, "a tensor");
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
