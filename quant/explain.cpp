// explain.cpp: the step-by-step arithmetic of one integer conv / fully connected output.
//
// The op's input codes are obtained by running the graph up to that op (a copy of the graph that
// stops there and hands the codes out), on the reference kernels; the walk-through then recomputes one
// output with the formulas of int8_kernels.h and requantize.h, and compares with the graph's own code.
#include "quant/explain.h"

#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "quant/requantize.h"

namespace qatlab {

namespace {

size_t find_op(const Int8Graph& graph, const std::string& name) {
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Int8Op& op = graph.ops[i];
    if (op.name == name && (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected)) return i;
  }
  std::string names;
  for (const std::string& n : explainable_ops(graph)) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("no conv or fully connected layer named '" + name + "' (layers: " + names + ")");
}

// The codes in `slot` after running ops [0, stop) of the graph on `image`, and their shape (with N).
std::vector<int8_t> codes_of_slot(const Int8Graph& graph, size_t stop, int slot, const Tensor& image, Shape* shape) {
  Int8Graph prefix;
  prefix.input_shape = graph.input_shape;
  prefix.num_slots = graph.num_slots + 1;
  prefix.ops.assign(graph.ops.begin(), graph.ops.begin() + static_cast<std::ptrdiff_t>(stop));
  Int8Op exit;
  exit.kind = Int8OpKind::Dequantize;  // hands the slot's codes out unchanged
  exit.name = "explain";
  exit.inputs = {slot};
  exit.output = graph.num_slots;
  prefix.ops.push_back(exit);
  return prefix.run_codes(image, shape, KernelPath::Reference);
}

struct Term {
  int64_t c = 0, ky = 0, kx = 0;  // fully connected: c is the input index
  bool padding = false;
  int32_t x = 0, w = 0;
};

// Everything the walk-through computes.
struct Walk {
  const Int8Op* op = nullptr;
  Shape in_shape, out_shape;       // with N = 1
  ExplainAt at;
  std::vector<Term> terms;
  int64_t sum = 0;                 // sum of (x + input_offset) * w, exact
  int32_t bias = 0, acc = 0;
  int32_t multiplier = 0;
  int shift = 0;
  int32_t shifted = 0, scaled = 0, offset_added = 0, code = 0, graph_code = 0;
  int64_t product = 0;  // shifted * multiplier, exact
  float s_in = 0, s_w = 0, s_out = 0;
  int32_t z_in = 0, z_out = 0, act_min = 0, act_max = 0, input_offset = 0;
};

Walk walk(const Int8Graph& graph, const std::string& op_name, const Tensor& image, ExplainAt at) {
  QATLAB_CHECK(image.dim() == 4 && image.size(0) == 1,
               "explain takes one image (1, C, H, W), got " + shape_str(image.shape()));
  const size_t i = find_op(graph, op_name);
  Walk w;
  w.op = &graph.ops[i];
  const LoweredLayer& l = w.op->layer;
  const bool conv = w.op->kind == Int8OpKind::Conv2d;
  const std::vector<int8_t> in = codes_of_slot(graph, i, w.op->inputs[0], image, &w.in_shape);
  const std::vector<int8_t> out = codes_of_slot(graph, i + 1, w.op->output, image, &w.out_shape);

  const int64_t OC = l.weight_shape[0];
  w.at = at;
  if (conv) {
    const int64_t OH = w.out_shape[2], OW = w.out_shape[3];
    if (w.at.y < 0) w.at.y = OH / 2;
    if (w.at.x < 0) w.at.x = OW / 2;
    QATLAB_CHECK(w.at.channel >= 0 && w.at.channel < OC && w.at.y < OH && w.at.x < OW,
                 "explain: position (" + std::to_string(at.channel) + ", " + std::to_string(at.y) + ", " +
                     std::to_string(at.x) + ") is outside the output (" + std::to_string(OC) + ", " +
                     std::to_string(OH) + ", " + std::to_string(OW) + ")");
  } else {
    QATLAB_CHECK(w.at.channel >= 0 && w.at.channel < OC, "explain: output " + std::to_string(at.channel) +
                                                             " is outside the layer's " + std::to_string(OC) +
                                                             " outputs");
    w.at.y = w.at.x = 0;
  }
  const int64_t oc = w.at.channel;
  const std::vector<int8_t> wcodes = l.weight_codes();
  const int32_t* mult = conv ? l.conv.output_multiplier.data() : l.fc.output_multiplier.data();
  const int* shifts = conv ? l.conv.output_shift.data() : l.fc.output_shift.data();
  w.input_offset = conv ? l.conv.input_offset : l.fc.input_offset;
  w.z_in = -w.input_offset;
  w.z_out = conv ? l.conv.output_offset : l.fc.output_offset;
  w.act_min = conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min;
  w.act_max = conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max;
  w.s_in = l.input.scale[0];
  w.s_w = l.weights.scale[l.weights.per_channel() ? oc : 0];
  w.s_out = l.output.scale[0];

  if (conv) {
    const ConvInt8Params& p = l.conv;
    const int64_t H = w.in_shape[2], W = w.in_shape[3];
    const int64_t CG = l.weight_shape[1], KH = l.weight_shape[2], KW = l.weight_shape[3];
    const int64_t g = oc / (OC / p.groups);
    for (int64_t c = 0; c < CG; ++c)
      for (int64_t ky = 0; ky < KH; ++ky)
        for (int64_t kx = 0; kx < KW; ++kx) {
          Term t{g * CG + c, ky, kx};
          const int64_t iy = w.at.y * p.stride_h - p.pad_h + ky, ix = w.at.x * p.stride_w - p.pad_w + kx;
          t.padding = iy < 0 || iy >= H || ix < 0 || ix >= W;
          t.x = t.padding ? w.z_in : in[(t.c * H + iy) * W + ix];
          t.w = wcodes[((oc * CG + c) * KH + ky) * KW + kx];
          w.terms.push_back(t);
        }
    w.graph_code = out[(oc * w.out_shape[2] + w.at.y) * w.out_shape[3] + w.at.x];
  } else {
    const int64_t IN = l.weight_shape[1];
    for (int64_t k = 0; k < IN; ++k) w.terms.push_back({k, 0, 0, false, in[k], wcodes[oc * IN + k]});
    w.graph_code = out[oc];
  }
  for (const Term& t : w.terms) w.sum += static_cast<int64_t>(t.x + w.input_offset) * t.w;
  w.bias = l.bias.empty() ? 0 : l.bias[oc];
  // The kernels accumulate in int32 (exact for every layer convert emits, see int8_kernels.h).
  w.acc = static_cast<int32_t>(static_cast<uint32_t>(w.sum) + static_cast<uint32_t>(w.bias));
  w.multiplier = mult[oc];
  w.shift = shifts[oc];
  w.shifted = saturating_left_shift(w.acc, requantize_left_shift(w.shift));
  w.product = static_cast<int64_t>(w.shifted) * w.multiplier;
  w.scaled = multiply_by_quantized_multiplier(w.acc, w.multiplier, w.shift);
  w.offset_added = w.scaled + w.z_out;  // shown to the reader; requantize() clamps before adding
  w.code = requantize(w.acc, w.multiplier, w.shift, w.z_out, w.act_min, w.act_max);
  return w;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::vector<std::string> explainable_ops(const Int8Graph& graph) {
  std::vector<std::string> names;
  for (const Int8Op& op : graph.ops)
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) names.push_back(op.name);
  return names;
}

ExplainCheck explain_check(const Int8Graph& graph, const std::string& op_name, const Tensor& image, ExplainAt at) {
  const Walk w = walk(graph, op_name, image, at);
  return {w.code, w.graph_code};
}

std::string explain_output(const Int8Graph& graph, const std::string& op_name, const Tensor& image, ExplainAt at) {
  const Walk w = walk(graph, op_name, image, at);
  const LoweredLayer& l = w.op->layer;
  const bool conv = w.op->kind == Int8OpKind::Conv2d;
  std::ostringstream os;
  os << "layer " << op_name << ": ";
  if (conv)
    os << "conv " << shape_str(l.weight_shape) << " (OC, C/G, KH, KW), stride " << l.conv.stride_h << ", padding "
       << l.conv.pad_h << ", input " << shape_str(w.in_shape) << " -> output " << shape_str(w.out_shape) << "\n"
       << "the output value explained: channel " << w.at.channel << ", y " << w.at.y << ", x " << w.at.x << "\n\n";
  else
    os << "fully connected " << shape_str(l.weight_shape) << " (OUT, IN), input " << shape_str(w.in_shape)
       << "\nthe output value explained: output " << w.at.channel << "\n\n";

  os << "1. Grids (real = scale * (code - zero_point))\n";
  os << "   input    scale " << fmt("%.6g", w.s_in) << ", zero point " << w.z_in << "  => input_offset = "
     << w.input_offset << "\n";
  os << "   weights  scale " << fmt("%.6g", w.s_w) << (l.weights.per_channel() ? " (this output channel's)" : "")
     << ", zero point 0, codes in [" << l.weights.quant_min << ", " << l.weights.quant_max << "]\n";
  os << "   output   scale " << fmt("%.6g", w.s_out) << ", zero point " << w.z_out << ", codes clamped to ["
     << w.act_min << ", " << w.act_max << "]" << (w.act_min > l.output.quant_min ? " (fused ReLU: nothing below real 0)" : "")
     << "\n\n";

  const size_t shown = std::min<size_t>(w.terms.size(), 8);
  os << "2. Accumulate in int32: acc = bias + sum (x + input_offset) * w over " << w.terms.size() << " terms";
  os << (shown < w.terms.size() ? "; the first " + std::to_string(shown) + ":\n" : ":\n");
  os << (conv ? "      c ky kx" : "     in") << " |  x code  real x    | w code  real w     | (x + off) * w\n";
  for (size_t k = 0; k < shown; ++k) {
    const Term& t = w.terms[k];
    char line[200];
    if (conv)
      std::snprintf(line, sizeof line, "   %4lld %2lld %2lld |", static_cast<long long>(t.c),
                    static_cast<long long>(t.ky), static_cast<long long>(t.kx));
    else
      std::snprintf(line, sizeof line, "   %9lld |", static_cast<long long>(t.c));
    os << line;
    std::snprintf(line, sizeof line, " %5d  %-10s   | %5d  %-10s  | %8lld%s\n", t.x,
                  fmt("%.4g", w.s_in * static_cast<double>(t.x - w.z_in)).c_str(), t.w,
                  fmt("%.4g", w.s_w * static_cast<double>(t.w)).c_str(),
                  static_cast<long long>(static_cast<int64_t>(t.x + w.input_offset) * t.w),
                  t.padding ? "  (padding: the zero point)" : "");
    os << line;
  }
  const double acc_scale = static_cast<double>(w.s_in) * w.s_w;
  os << "   sum of the " << w.terms.size() << " products      = " << w.sum << "\n";
  os << "   + bias (int32, scale s_in * s_w = " << fmt("%.6g", acc_scale) << ") = " << w.bias << "  (real "
     << fmt("%.6g", w.bias * acc_scale) << ")\n";
  os << "   = accumulator acc            = " << w.acc << "  (real acc * s_in * s_w = "
     << fmt("%.6g", w.acc * acc_scale) << ")\n\n";

  const double real_m = acc_scale / w.s_out;
  const double stored_m = dequantize_multiplier(w.multiplier, w.shift);
  os << "3. Rescale to the output grid: M = s_in * s_w / s_out = " << fmt("%.9g", real_m) << "\n";
  os << "   stored once at convert as output_multiplier " << w.multiplier << " and output_shift " << w.shift
     << ": M ~= " << w.multiplier << " * 2^(" << w.shift << " - 31) = " << fmt("%.9g", stored_m)
     << " (relative error " << fmt("%.1e", std::abs(stored_m - real_m) / real_m) << ")\n";
  os << "   a) shift left by max(shift, 0) = " << requantize_left_shift(w.shift) << ":                 " << w.shifted
     << "\n";
  os << "   b) times the multiplier, exact in int64: a * " << w.multiplier << " = " << w.product << "\n";
  os << "   c) divided by 2^(31 + max(-shift, 0)) = 2^" << requantize_total_shift(w.shift)
     << ", rounded once (ties up): " << w.scaled
     << "   (exact acc * M = " << fmt("%.6g", w.acc * stored_m) << ")\n";
  os << "   d) + output zero point " << w.z_out << " = " << w.offset_added << ", clamp to [" << w.act_min << ", "
     << w.act_max << "] -> output code " << w.code << "\n";
  os << "   real value: " << fmt("%.6g", w.s_out) << " * (" << w.code << " - " << w.z_out
     << ") = " << fmt("%.6g", w.s_out * static_cast<double>(w.code - w.z_out)) << "; before rounding it was "
     << fmt("%.6g", w.acc * acc_scale) << "\n\n";
  os << "4. The integer graph computed code " << w.graph_code << " here: "
     << (w.graph_code == w.code ? "the same." : "DIFFERENT (a bug: please report it).") << "\n";
  return os.str();
}

}  // namespace qatlab
