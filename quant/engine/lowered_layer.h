// lowered_layer.h: a conv or fully connected layer in integer form, as the integer graph runs it (int8 or
// packed 2-4-bit weights, int32 bias, per-channel output multipliers and shifts, activation clamp), its
// runs on the reference and the optimized kernels, and float tensors <-> int8 codes on a per-tensor grid.
//
// The integers are derived from a QAT layer by lower_layer (quant/qat/lower.h), the only place that does
// so; the graph (int8_graph.h) holds and runs the result, and so does exact-mode evaluation.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_gemm.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

struct LoweredLayer {
  bool is_conv = true;
  ConvInt8Params conv;            // when is_conv
  FullyConnectedInt8Params fc;    // otherwise
  Shape weight_shape;             // (OC, C/G, KH, KW) or (OUT, IN)
  // The weight codes, symmetric per output channel (zero point 0), flattened over weight_shape, in
  // one of two forms told by weight_bits, the bits each stored code takes:
  //   8:     `weight` holds them as int8 and weight_packed is empty (lower_layer's form);
  //   4, 2:  weight_packed holds them packed (packed_codes.h) and `weight` is empty (pack_weights()).
  int weight_bits = 8;
  std::vector<int8_t> weight;
  std::vector<uint8_t> weight_packed;
  std::vector<int32_t> bias;      // (OC), scale input_scale * weight_scale[oc], zero point 0
  QParams input, weights, output;

  // The stored codes as bytes in the form weight_bits says (int8 codes are bytes too, 8 bits each):
  // what the packed reference kernels and the packed optimized kernels take.
  const uint8_t* weight_data() const {
    return weight_bits == 8 ? reinterpret_cast<const uint8_t*>(weight.data()) : weight_packed.data();
  }
  int64_t weight_bytes() const {
    return static_cast<int64_t>(weight_bits == 8 ? weight.size() : weight_packed.size());
  }
  // The codes as int8 whichever the form (a copy; for tools and tests, not for the kernels).
  std::vector<int8_t> weight_codes() const;
};

// Moves weights whose grid fits 2 or 4 bits (storage_bits of the weight grid: [-1, 1] and [-2, 1] -> 2, 3 and 4
// bits -> 4) from `weight` to weight_packed; nothing to do for 8-bit grids or weights already packed.
// Throws std::invalid_argument if a code lies outside the bits of its grid.
void pack_weights(LoweredLayer& layer);

// The reference kernel of `layer` (conv2d_int8_reference / fully_connected_int8_reference, or their
// packed forms for packed weights): input (N, ...) in_shape -> output.
void run_lowered_reference(const LoweredLayer& layer, const int8_t* input, const Shape& in_shape, int8_t* output);

// The same integers on the kernels of `path`: Reference runs run_lowered_reference; the others pack the
// weights (PackedConvInt8 / PackedFullyConnectedInt8, equal to the reference bit for bit) and run them.
void run_lowered(const LoweredLayer& layer, const int8_t* input, const Shape& in_shape, int8_t* output,
                 KernelPath path);

// Throws std::invalid_argument ("integer graph: <what> ...") unless `qp` is a valid per-tensor grid whose
// codes fit int8: what activations entering or leaving an integer op must be.
void check_int8_activation_grid(const QParams& qp, const char* what);

// Float tensor -> int8 codes on a per-tensor grid; and back.
std::vector<int8_t> quantize_tensor(const Tensor& x, const QParams& qp);
Tensor dequantize_codes(const std::vector<int8_t>& q, const Shape& shape, const QParams& qp);

}  // namespace qatlab
