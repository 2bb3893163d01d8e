// int8_graph_validate.cpp: Int8Graph::validate: everything a graph read from a file must satisfy before
// any op runs (slots, order, shapes, ranges that keep the int32 arithmetic from overflowing).
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/format.h"
#include "quant/engine/int8_graph.h"
#include "quant/engine/packed_codes.h"

namespace qatlab {

namespace {

// The largest |input code - zero point| (255) times the largest |weight code| (128): what one
// multiply-add can add to an int32 accumulator.
constexpr int64_t kMaxProduct = 255 * 128;

class Checker {
 public:
  explicit Checker(std::string where) : where_(std::move(where)) {}

  [[noreturn]] void fail(const std::string& what) const { throw std::invalid_argument(where_ + ": " + what); }
  void require(bool ok, const std::string& what) const {
    if (!ok) fail(what);
  }
  void in_range(int64_t v, int64_t lo, int64_t hi, const std::string& name) const {
    require(v >= lo && v <= hi, name + " = " + std::to_string(v) + ", expected " + std::to_string(lo) + ".." +
                                    std::to_string(hi));
  }
  // The codes of every grid in the graph are int8.
  void grid(const QParams& qp, const std::string& name) const {
    try {
      qp.validate();
    } catch (const std::invalid_argument& e) {
      fail(name + " grid: " + e.what());
    }
    require(qp.quant_min >= -128 && qp.quant_max <= 127,
            name + " grid: codes [" + std::to_string(qp.quant_min) + ", " + std::to_string(qp.quant_max) +
                "], expected within the int8 range [-128, 127]");
  }
  // A requantization multiplier as quantize_multiplier makes it: in [2^30, 2^31) with a shift in
  // [-31, 30], or 0 with shift 0 (a real multiplier too small to matter).
  void multiplier(int64_t m, int64_t shift, const std::string& name) const {
    const bool normal = m >= (int64_t{1} << 30) && m <= INT32_MAX && shift >= -31 && shift <= 30;
    const bool zero = m == 0 && shift == 0;
    require(normal || zero, name + ": multiplier " + std::to_string(m) + " shift " + std::to_string(shift) +
                                ", expected a multiplier in [2^30, 2^31) with a shift in [-31, 30] (or 0, 0)");
  }
  void activation_range(int64_t lo, int64_t hi, const std::string& name) const {
    require(-128 <= lo && lo <= hi && hi <= 127, name + " [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                                     "], expected -128 <= min <= max <= 127");
  }

 private:
  std::string where_;
};

constexpr int kMaxSlots = 4096;
constexpr size_t kMaxOps = 4096;
constexpr int64_t kMaxDim = 65536;
constexpr int64_t kMaxImageElements = int64_t{1} << 24;
constexpr int64_t kMaxWeights = int64_t{1} << 28;

void check_layer(const Checker& c, const LoweredLayer& l) {
  const size_t rank = l.is_conv ? 4 : 2;
  c.require(l.weight_shape.size() == rank, "weight shape " + shape_str(l.weight_shape) + ", expected " +
                                               std::to_string(rank) + " dimensions");
  int64_t numel = 1;
  for (int64_t d : l.weight_shape) {
    c.in_range(d, 1, kMaxDim, "weight dimension");
    numel *= d;
    c.require(numel <= kMaxWeights, "weight shape " + shape_str(l.weight_shape) + " holds more than 2^28 codes");
  }
  c.require(l.weight_bits == 8 || l.weight_bits == 4 || l.weight_bits == 2,
            "weight_bits " + std::to_string(l.weight_bits) + ", expected 2, 4 or 8");
  const int64_t stored = l.weight_bits == 8 ? static_cast<int64_t>(l.weight.size()) : static_cast<int64_t>(l.weight_packed.size());
  const int64_t expected = l.weight_bits == 8 ? numel : packed_bytes(numel, l.weight_bits);
  c.require(stored == expected, "weights hold " + std::to_string(stored) + " bytes, shape " +
                                    shape_str(l.weight_shape) + " needs " + std::to_string(expected));
  if (l.weight_bits == 8 && stored == expected) {
    // Weights are narrow-range: the optimized kernels pair codes in int16 sums that -128 could overflow
    // (their packing asserts it). A -128 in a file is refused here, not met by a kernel.
    const auto at = std::find(l.weight.begin(), l.weight.end(), int8_t{-128});
    c.require(at == l.weight.end(), "weight code -128 at index " + std::to_string(at - l.weight.begin()) +
                                        " (8-bit weights are narrow-range: [-127, 127])");
  }
  if (l.weights.odd_codes && stored == expected) {
    // A mid-rise grid: every code odd and within [-qmax, qmax].
    const std::vector<int8_t> codes = l.weight_codes();
    const auto at = std::find_if(codes.begin(), codes.end(), [&](int8_t q) {
      return q % 2 == 0 || q < l.weights.quant_min || q > l.weights.quant_max;
    });
    c.require(at == codes.end(), "weight code " + (at == codes.end() ? std::string() : std::to_string(*at)) +
                                     " at index " + std::to_string(at - codes.begin()) + " on a grid of odd codes in [" +
                                     std::to_string(l.weights.quant_min) + ", " + std::to_string(l.weights.quant_max) + "]");
  }
  const int64_t oc = l.weight_shape[0];
  const ConvInt8Params& cv = l.conv;
  const FullyConnectedInt8Params& fc = l.fc;
  const std::vector<int32_t>& mult = l.is_conv ? cv.output_multiplier : fc.output_multiplier;
  const std::vector<int>& shift = l.is_conv ? cv.output_shift : fc.output_shift;
  c.require(static_cast<int64_t>(l.bias.size()) == oc && static_cast<int64_t>(mult.size()) == oc &&
                static_cast<int64_t>(shift.size()) == oc,
            "bias, output_multiplier and output_shift hold " + std::to_string(l.bias.size()) + ", " +
                std::to_string(mult.size()) + " and " + std::to_string(shift.size()) + " values for " +
                std::to_string(oc) + " output channels");
  // Multiply-adds per output: the accumulator is bias + K products; both bounds together keep it in int32.
  const int64_t k = numel / oc;
  c.require(k * kMaxProduct < INT32_MAX, std::to_string(k) + " multiply-adds per output could overflow int32");
  const int64_t bias_limit = INT32_MAX - k * kMaxProduct;
  for (size_t o = 0; o < l.bias.size(); ++o) {
    c.require(l.bias[o] >= -bias_limit && l.bias[o] <= bias_limit,
              "bias[" + std::to_string(o) + "] = " + std::to_string(l.bias[o]) + " with " + std::to_string(k) +
                  " multiply-adds could overflow the int32 accumulator (|bias| must be <= " +
                  std::to_string(bias_limit) + ")");
    c.multiplier(mult[o], shift[o], "output_multiplier[" + std::to_string(o) + "]");
  }
  c.grid(l.input, "input");
  c.grid(l.weights, "weight");
  c.grid(l.output, "output");
  const int32_t in_off = l.is_conv ? cv.input_offset : fc.input_offset;
  const int32_t out_off = l.is_conv ? cv.output_offset : fc.output_offset;
  c.in_range(in_off, -127, 128, "input_offset");
  c.in_range(out_off, -128, 127, "output_offset");
  c.activation_range(l.is_conv ? cv.quantized_activation_min : fc.quantized_activation_min,
                     l.is_conv ? cv.quantized_activation_max : fc.quantized_activation_max, "quantized activation range");
  if (l.is_conv) {
    c.in_range(cv.stride_h, 1, 1024, "stride_h");
    c.in_range(cv.stride_w, 1, 1024, "stride_w");
    c.in_range(cv.pad_h, 0, 1024, "pad_h");
    c.in_range(cv.pad_w, 0, 1024, "pad_w");
    c.in_range(cv.groups, 1, kMaxDim, "groups");
  }
}

void check_op(const Checker& c, const Int8Op& op) {
  switch (op.kind) {
    case Int8OpKind::Quantize:
    case Int8OpKind::Dequantize:
    case Int8OpKind::AvgPool2d:
    case Int8OpKind::GlobalAvgPool: c.grid(op.grid, "op"); break;
    case Int8OpKind::Conv2d:
    case Int8OpKind::FullyConnected:
      c.require(op.layer.is_conv == (op.kind == Int8OpKind::Conv2d), "layer kind disagrees with the op kind");
      check_layer(c, op.layer);
      break;
    case Int8OpKind::Clamp: c.activation_range(op.clamp_min, op.clamp_max, "clamp range"); break;
    case Int8OpKind::Add: {
      c.grid(op.grid, "op");
      const AddInt8Params& a = op.add;
      // |code + offset| <= 255 shifted left by left_shift must stay below 2^31 (int8_kernels.h).
      c.in_range(a.left_shift, 0, 22, "left_shift");
      c.in_range(a.input1_offset, -127, 128, "input1_offset");
      c.in_range(a.input2_offset, -127, 128, "input2_offset");
      c.in_range(a.output_offset, -128, 127, "output_offset");
      c.multiplier(a.input1_multiplier, a.input1_shift, "input1_multiplier");
      c.multiplier(a.input2_multiplier, a.input2_shift, "input2_multiplier");
      c.multiplier(a.output_multiplier, a.output_shift, "output_multiplier");
      c.activation_range(a.quantized_activation_min, a.quantized_activation_max, "quantized activation range");
      break;
    }
    case Int8OpKind::Requantize: {
      c.grid(op.grid, "op");
      const RequantizeInt8Params& q = op.requant;
      c.in_range(q.input_offset, -127, 128, "input_offset");
      c.in_range(q.output_offset, -128, 127, "output_offset");
      c.require(q.output_offset == op.grid.zero_point.at(0), "output_offset " + std::to_string(q.output_offset) +
                                                                 " is not the grid's zero point");
      c.multiplier(q.multiplier, q.shift, "multiplier");
      c.activation_range(q.quantized_activation_min, q.quantized_activation_max, "quantized activation range");
      break;
    }
    case Int8OpKind::Lstm: {
      try {
        op.lstm.validate();
      } catch (const std::invalid_argument& e) {
        c.fail(e.what());
      }
      const LstmInt8Params& l = op.lstm;
      c.grid(l.input, "input");
      c.grid(l.weights_ih, "weight_ih");
      c.grid(l.weights_hh, "weight_hh");
      c.grid(l.hidden, "hidden");
      const int64_t k = l.input_size + l.hidden_size;
      c.require(k * kMaxProduct < INT32_MAX, std::to_string(k) + " multiply-adds per gate could overflow int32");
      for (size_t r = 0; r < l.bias.size(); ++r)
        c.require(l.bias[r] >= -(INT32_MAX - k * kMaxProduct) && l.bias[r] <= INT32_MAX - k * kMaxProduct,
                  "bias[" + std::to_string(r) + "] = " + std::to_string(l.bias[r]) +
                      " could overflow the int32 accumulator");
      break;
    }
    case Int8OpKind::MaxPool2d:
      c.in_range(op.kernel, 1, 1024, "kernel");
      c.in_range(op.stride, 1, 1024, "stride");
      c.in_range(op.pad, 0, 1024, "pad");
      break;
    default: break;
  }
  if (op.kind == Int8OpKind::AvgPool2d) {
    c.in_range(op.kernel, 1, 1024, "kernel");
    c.in_range(op.stride, 1, 1024, "stride");
    c.in_range(op.pad, 0, 1024, "pad");
  }
}

// The Quantize op's pixel table, when it has one: (C, 256) codes, each inside the input grid, so a lookup
// gives only codes the next op may meet; the normalisation it came from (C values each, if kept).
void check_pixel_table(const Int8Op& quantize, const Shape& input_shape) {
  if (quantize.pixel_codes.empty() && quantize.pixel_mean.empty() && quantize.pixel_std.empty()) return;
  const Checker c("integer graph: op 0 '" + printable(quantize.name) + "' (quantize): pixel table");
  const int64_t channels = input_shape[0];
  c.require(static_cast<int64_t>(quantize.pixel_codes.size()) == channels * 256,
            std::to_string(quantize.pixel_codes.size()) + " codes, expected (C, 256) = " +
                std::to_string(channels * 256) + " for the input's " + std::to_string(channels) + " channels");
  const QParams& grid = quantize.grid;
  for (size_t k = 0; k < quantize.pixel_codes.size(); ++k) {
    const int32_t code = quantize.pixel_codes[k];
    c.require(code >= grid.quant_min && code <= grid.quant_max,
              "channel " + std::to_string(k / 256) + ", pixel " + std::to_string(k % 256) + " -> code " +
                  std::to_string(code) + ", outside the input grid's [" + std::to_string(grid.quant_min) + ", " +
                  std::to_string(grid.quant_max) + "]");
  }
  for (const std::vector<float>* v : {&quantize.pixel_mean, &quantize.pixel_std})
    c.require(v->empty() || static_cast<int64_t>(v->size()) == channels,
              "normalisation of " + std::to_string(v->size()) + " values, expected one per channel (" +
                  std::to_string(channels) + ")");
}

}  // namespace

void Int8Graph::validate() const {
  const Checker graph("integer graph");
  graph.in_range(num_slots, 1, kMaxSlots, "num_slots");
  graph.require(ops.size() >= 2 && ops.size() <= kMaxOps,
                std::to_string(ops.size()) + " ops, expected 2.." + std::to_string(kMaxOps));
  graph.require(input_shape.size() == 3, "input shape " + shape_str(input_shape) + ", expected (C, H, W)");
  int64_t elements = 1;
  for (int64_t d : input_shape) {
    graph.in_range(d, 1, kMaxDim, "input dimension");
    elements *= d;
  }
  graph.require(elements <= kMaxImageElements, "input shape " + shape_str(input_shape) + " is too large");
  graph.require(ops.front().kind == Int8OpKind::Quantize && ops.back().kind == Int8OpKind::Dequantize,
                "an integer model must start with quantize and end with dequantize");

  // Ops run in list order; each reads slots that an earlier op wrote, so the list is a DAG in
  // execution order and no op reads memory nothing has filled.
  std::vector<bool> written(static_cast<size_t>(num_slots), false);
  for (size_t i = 0; i < ops.size(); ++i) {
    const Int8Op& op = ops[i];
    const Checker c("integer graph: op " + std::to_string(i) + " '" + printable(op.name) + "' (" +
                    int8_op_name(op.kind) + ")");
    const size_t want = op.kind == Int8OpKind::Quantize ? 0 : op.kind == Int8OpKind::Add ? 2 : 1;
    c.require(op.inputs.size() == want, "reads " + std::to_string(op.inputs.size()) + " slots, expected " +
                                            std::to_string(want));
    c.require(op.kind != Int8OpKind::Quantize || i == 0, "quantize is only the first op");
    for (int s : op.inputs) {
      c.in_range(s, 0, num_slots - 1, "input slot");
      c.require(written[static_cast<size_t>(s)], "reads slot " + std::to_string(s) + ", which no earlier op writes");
    }
    c.in_range(op.output, 0, num_slots - 1, "output slot");
    check_op(c, op);
    written[static_cast<size_t>(op.output)] = true;
  }
  check_pixel_table(ops.front(), input_shape);
  // Shapes op to op (an op 84 wide feeding one that expects 120 is refused here). Whether the exit
  // has one score per class is for the caller, who knows the classes (output_width()).
  try {
    op_shapes();
  } catch (const std::invalid_argument& e) {
    graph.fail(e.what());
  }
}

}  // namespace qatlab
