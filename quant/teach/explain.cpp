// explain.cpp: the step-by-step arithmetic of one integer conv / fully connected output.
//
// The op's input codes are obtained by running the graph up to that op (a copy of the graph that
// stops there and hands the codes out), on the reference kernels; the walk-through then recomputes one
// output with the formulas of int8_kernels.h and requantize.h, and compares with the graph's own code.
#include "quant/qat/bias.h"
#include "quant/teach/explain.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "quant/engine/requantize.h"
#include "quant/qat/qat_layers.h"
#include "quant/teach/inspect.h"

namespace qatlab {

namespace {

bool explainable(Int8OpKind kind) {
  switch (kind) {
    case Int8OpKind::Conv2d:
    case Int8OpKind::FullyConnected:
    case Int8OpKind::Add:
    case Int8OpKind::Requantize:
    case Int8OpKind::AvgPool2d:
    case Int8OpKind::GlobalAvgPool:
    case Int8OpKind::Lstm:
      return true;
    default:
      return false;
  }
}

size_t find_op(const Int8Graph& graph, const std::string& name) {
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Int8Op& op = graph.ops[i];
    if (op.name == name && explainable(op.kind)) return i;
  }
  std::string names;
  for (const std::string& n : explainable_ops(graph)) names += (names.empty() ? "" : ", ") + n;
  throw std::invalid_argument("no conv, fully connected, add, average pooling or lstm op named '" + name +
                              "' (layers: " + names + ")");
}

// The codes in `slot` after running ops [0, stop) of the graph on `image`, and their shape (with N).
std::vector<int8_t> codes_of_slot(const Int8Graph& graph, size_t stop, int slot, const ExplainImage& image, Shape* shape) {
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
  // The graph's own entry: its pixel table on the raw bytes when it has one and they are given.
  if (image.pixels && prefix.has_pixel_table()) return prefix.run_pixel_codes(image.pixels, 1, shape, KernelPath::Reference);
  return prefix.run_codes(image.floats, shape, KernelPath::Reference);
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

Walk walk(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at) {
  QATLAB_CHECK(image.floats.dim() == 4 && image.floats.size(0) == 1,
               "explain takes one image (1, C, H, W), got " + shape_str(image.floats.shape()));
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
    if (explainable(op.kind)) names.push_back(op.name);
  return names;
}

namespace {

// How many of n terms to list: `terms` of them, all when terms is 0.
size_t listed(size_t n, int64_t terms) { return terms <= 0 ? n : std::min<size_t>(n, static_cast<size_t>(terms)); }

// When `slot` holds the graph's input codes and the graph reads raw pixels: how the table made them, with
// a few of its entries per channel ("" otherwise).
std::string pixel_table_lines(const Int8Graph& graph, int slot) {
  if (!graph.has_pixel_table() || graph.ops.front().output != slot) return "";
  const Int8Op& entry = graph.ops.front();
  std::ostringstream os;
  os << "   the input codes come from the raw pixels through the file's pixel table (made at convert:\n"
     << "   (pixel / 255 - mean) / std as the data loader computes it, then quantized on the input grid):\n";
  const size_t channels = entry.pixel_codes.size() / 256;
  for (size_t c = 0; c < channels; ++c) {
    os << "     channel " << c;
    if (c < entry.pixel_mean.size() && c < entry.pixel_std.size())
      os << " (mean " << fmt("%.4g", entry.pixel_mean[c]) << ", std " << fmt("%.4g", entry.pixel_std[c]) << ")";
    os << ": pixel";
    for (int p : {0, 1, 2, 3, 64, 128, 192, 255})
      os << (p ? ", " : " ") << p << " -> " << int{entry.pixel_codes[c * 256 + p]};
    os << "\n";
  }
  return os.str();
}

std::string explain_linear(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at,
                           int64_t terms) {
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
  os << pixel_table_lines(graph, w.op->inputs[0]);
  os << "   weights  scale " << fmt("%.6g", w.s_w) << (l.weights.per_channel() ? " (this output channel's)" : "")
     << ", zero point 0, " << (l.weights.odd_codes ? "odd codes (mid-rise) in [" : "codes in [") << l.weights.quant_min
     << ", " << l.weights.quant_max << "]\n";
  os << "   output   scale " << fmt("%.6g", w.s_out) << ", zero point " << w.z_out << ", codes clamped to ["
     << w.act_min << ", " << w.act_max << "]" << (w.act_min > l.output.quant_min ? " (fused ReLU: nothing below real 0)" : "")
     << "\n\n";

  const size_t shown = listed(w.terms.size(), terms);
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

// ------------------------------------------------------------------------- the other explainable ops

// A walk-through's text, the code it arrives at and the code the graph computed there.
struct Explained {
  std::string text;
  int32_t computed = 0, graph = 0;
};

std::string at_str(const ExplainAt& at) {
  return "(" + std::to_string(at.channel) + ", " + std::to_string(at.y) + ", " + std::to_string(at.x) + ")";
}

// The position in a (1, C, H, W) or (1, C) output, defaults filled in (y, x: the middle); flat index out.
int64_t resolve_at(ExplainAt& at, const Shape& out) {
  const ExplainAt asked = at;
  const int64_t C = out.at(1);
  if (out.size() == 2) {
    QATLAB_CHECK(at.channel >= 0 && at.channel < C && at.y <= 0 && at.x <= 0,
                 "explain: position " + at_str(asked) + " is outside the output (" + std::to_string(C) +
                     " channels; give the channel only)");
    at.y = at.x = 0;
    return at.channel;
  }
  const int64_t H = out.at(2), W = out.at(3);
  if (at.y < 0) at.y = H / 2;
  if (at.x < 0) at.x = W / 2;
  QATLAB_CHECK(at.channel >= 0 && at.channel < C && at.y < H && at.x < W,
               "explain: position " + at_str(asked) + " is outside the output (" + std::to_string(C) + ", " +
                   std::to_string(H) + ", " + std::to_string(W) + ")");
  return (at.channel * H + at.y) * W + at.x;
}

// The grid of the codes in `slot`: that of the op that wrote it, followed back through the ops that keep
// their input's grid (max pooling, flatten, clamp, image_rows, last_step).
QParams grid_of_slot(const Int8Graph& graph, int slot) {
  for (size_t i = graph.ops.size(); i-- > 0;) {
    const Int8Op& op = graph.ops[i];
    if (op.output != slot) continue;
    switch (op.kind) {
      case Int8OpKind::Quantize:
      case Int8OpKind::Add:
      case Int8OpKind::Requantize:
      case Int8OpKind::AvgPool2d:
      case Int8OpKind::GlobalAvgPool:
      case Int8OpKind::Dequantize:
        if (!op.grid.scale.empty()) return op.grid;
        break;
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected:
        return op.layer.output;
      case Int8OpKind::Lstm:
        return op.lstm.hidden;
      default:
        break;
    }
    QATLAB_CHECK(!op.inputs.empty(), "explain: cannot tell the grid of slot " + std::to_string(slot));
    return grid_of_slot(graph, op.inputs[0]);
  }
  throw std::invalid_argument("explain: no op writes slot " + std::to_string(slot));
}

std::string multiplier_str(int32_t m, int shift) {
  return std::to_string(m) + " * 2^(" + std::to_string(shift) + " - 31) = " + fmt("%.9g", dequantize_multiplier(m, shift));
}

// One multiply_by_quantized_multiplier written out: the left shift, the int64 product, the one rounding.
std::string mbqm_steps(int32_t x, int32_t m, int shift, const std::string& indent) {
  const int32_t shifted = saturating_left_shift(x, requantize_left_shift(shift));
  const int64_t product = static_cast<int64_t>(shifted) * m;
  std::ostringstream os;
  if (requantize_left_shift(shift) > 0) os << indent << "shift left by " << requantize_left_shift(shift) << ": " << shifted << "\n";
  os << indent << shifted << " * " << m << " = " << product << ", / 2^" << requantize_total_shift(shift)
     << " rounded once (ties up) = " << multiply_by_quantized_multiplier(x, m, shift) << "   (exact "
     << fmt(std::abs(x * dequantize_multiplier(m, shift)) >= 1e5 ? "%.2f" : "%.6g", x * dequantize_multiplier(m, shift))
     << ")\n";
  return os.str();
}

std::string verdict(int32_t computed, int32_t graph) {
  return "The integer graph computed code " + std::to_string(graph) + " here: " +
         (computed == graph ? "the same." : "DIFFERENT (a bug: please report it).") + "\n";
}

Explained explain_requantize(const Int8Graph& graph, size_t i, const ExplainImage& image, ExplainAt at) {
  const Int8Op& op = graph.ops[i];
  const RequantizeInt8Params& p = op.requant;
  Shape si, so;
  const std::vector<int8_t> in = codes_of_slot(graph, i, op.inputs[0], image, &si);
  const std::vector<int8_t> out = codes_of_slot(graph, i + 1, op.output, image, &so);
  const int64_t k = resolve_at(at, so);
  const QParams gi = grid_of_slot(graph, op.inputs[0]);
  const double s_i = gi.scale[0], s_o = op.grid.scale[0];
  const int32_t z_i = gi.zero_point[0], z_o = op.grid.zero_point[0];
  const int32_t q = in[k], v = q + p.input_offset;
  const int32_t scaled = multiply_by_quantized_multiplier(v, p.multiplier, p.shift);
  Explained e;
  e.computed = p.output_offset + std::clamp(scaled, p.quantized_activation_min - p.output_offset,
                                            p.quantized_activation_max - p.output_offset);
  e.graph = out[k];

  std::ostringstream os;
  os << "layer " << op.name << ": slot " << op.inputs[0] << " requantized onto the grid the next layer reads, "
     << shape_str(so) << "\n"
     << "the output value explained: channel " << at.channel << ", y " << at.y << ", x " << at.x << "\n\n";
  os << "1. Grids (real = scale * (code - zero_point))\n";
  os << "   input   scale " << fmt("%.6g", s_i) << ", zero point " << z_i << "  => input_offset = " << p.input_offset << "\n";
  os << "   output  scale " << fmt("%.6g", s_o) << ", zero point " << z_o << ", codes clamped to ["
     << p.quantized_activation_min << ", " << p.quantized_activation_max << "] (its "
     << grid_bits(op.grid) << " bits)\n\n";
  os << "2. Constant, computed once at convert (lower_requantize, in double)\n";
  os << "   s_in / s_out = " << fmt("%.9g", s_i / s_o) << " -> multiplier " << p.multiplier << ", shift " << p.shift
     << " (" << multiplier_str(p.multiplier, p.shift) << ")\n\n";
  os << "3. The input code at this position: " << q << " (real " << fmt("%.6g", s_i * (q - z_i)) << ")\n\n";
  os << "4. Rescaled with one rounding\n";
  os << "   a) " << q << " + " << p.input_offset << " = " << v << "\n";
  os << mbqm_steps(v, p.multiplier, p.shift, "      ");
  os << "   b) + output zero point " << z_o << ", clamp to [" << p.quantized_activation_min << ", "
     << p.quantized_activation_max << "] -> output code " << e.computed << "\n";
  os << "   real value: " << fmt("%.6g", s_o) << " * (" << e.computed << " - " << z_o << ") = "
     << fmt("%.6g", s_o * (e.computed - z_o)) << "; the input's real value in output codes was "
     << fmt("%.4f", s_i * (q - z_i) / s_o + z_o) << "\n\n";
  os << "5. " << verdict(e.computed, e.graph);
  e.text = os.str();
  return e;
}

Explained explain_add(const Int8Graph& graph, size_t i, const ExplainImage& image, ExplainAt at) {
  const Int8Op& op = graph.ops[i];
  const AddInt8Params& p = op.add;
  Shape sa, sb, so;
  const std::vector<int8_t> a = codes_of_slot(graph, i, op.inputs[0], image, &sa);
  const std::vector<int8_t> b = codes_of_slot(graph, i, op.inputs[1], image, &sb);
  const std::vector<int8_t> out = codes_of_slot(graph, i + 1, op.output, image, &so);
  const int64_t k = resolve_at(at, so);
  const QParams ga = grid_of_slot(graph, op.inputs[0]), gb = grid_of_slot(graph, op.inputs[1]);
  const double s_a = ga.scale[0], s_b = gb.scale[0], s_o = op.grid.scale[0];
  const int32_t z_a = ga.zero_point[0], z_b = gb.zero_point[0], z_o = op.grid.zero_point[0];

  const int32_t qa = a[k], qb = b[k];
  const int32_t va = (qa + p.input1_offset) * (1 << p.left_shift), vb = (qb + p.input2_offset) * (1 << p.left_shift);
  const int32_t xa = multiply_by_quantized_multiplier(va, p.input1_multiplier, p.input1_shift);
  const int32_t xb = multiply_by_quantized_multiplier(vb, p.input2_multiplier, p.input2_shift);
  const int32_t scaled = multiply_by_quantized_multiplier(xa + xb, p.output_multiplier, p.output_shift);
  const int32_t lo = p.quantized_activation_min - p.output_offset, hi = p.quantized_activation_max - p.output_offset;
  Explained e;
  e.computed = p.output_offset + std::clamp(scaled, lo, hi);
  e.graph = out[k];

  std::ostringstream os;
  const double twice_max = 2.0 * std::max(s_a, s_b);
  os << "layer " << op.name << ": residual add of slot " << op.inputs[0] << " (the block's body) and slot "
     << op.inputs[1] << " (its shortcut), " << shape_str(so) << "\n"
     << "the output value explained: channel " << at.channel << ", y " << at.y << ", x " << at.x << "\n\n";
  os << "1. Grids (real = scale * (code - zero_point))\n";
  os << "   body      scale " << fmt("%.6g", s_a) << ", zero point " << z_a << "  => input1_offset = " << p.input1_offset << "\n";
  os << "   shortcut  scale " << fmt("%.6g", s_b) << ", zero point " << z_b << "  => input2_offset = " << p.input2_offset << "\n";
  os << "   sum       scale " << fmt("%.6g", s_o) << ", zero point " << z_o << ", codes clamped to ["
     << p.quantized_activation_min << ", " << p.quantized_activation_max << "]"
     << (p.quantized_activation_min > op.grid.quant_min ? " (the block's ReLU)" : "") << "\n\n";
  os << "2. Constants, computed once at convert (make_add_params, in double)\n";
  os << "   twice_max = 2 * max(s_body, s_shortcut) = " << fmt("%.6g", twice_max) << "\n";
  os << "   body:     s_body / twice_max = " << fmt("%.9g", s_a / twice_max) << " -> input1_multiplier "
     << p.input1_multiplier << ", input1_shift " << p.input1_shift << " (" << multiplier_str(p.input1_multiplier, p.input1_shift) << ")\n";
  os << "   shortcut: s_shortcut / twice_max = " << fmt("%.9g", s_b / twice_max) << " -> input2_multiplier "
     << p.input2_multiplier << ", input2_shift " << p.input2_shift << " (" << multiplier_str(p.input2_multiplier, p.input2_shift) << ")\n";
  os << "   output:   twice_max / (2^" << p.left_shift << " * s_sum) = "
     << fmt("%.9g", twice_max / (static_cast<double>(int64_t{1} << p.left_shift) * s_o)) << " -> output_multiplier "
     << p.output_multiplier << ", output_shift " << p.output_shift << " ("
     << multiplier_str(p.output_multiplier, p.output_shift) << ")\n\n";
  os << "3. The two codes at this position\n";
  os << "   body      code " << qa << " (real " << fmt("%.6g", s_a * (qa - z_a)) << ")\n";
  os << "   shortcut  code " << qb << " (real " << fmt("%.6g", s_b * (qb - z_b)) << ")\n\n";
  os << "4. Onto a common grid with " << p.left_shift << " bits of headroom, added, rescaled\n";
  os << "   a) body:     (" << qa << " + " << p.input1_offset << ") * 2^" << p.left_shift << " = " << va << "\n";
  os << mbqm_steps(va, p.input1_multiplier, p.input1_shift, "                ");
  os << "   b) shortcut: (" << qb << " + " << p.input2_offset << ") * 2^" << p.left_shift << " = " << vb << "\n";
  os << mbqm_steps(vb, p.input2_multiplier, p.input2_shift, "                ");
  os << "   c) sum " << xa << " + " << xb << " = " << xa + xb << " (on the grid twice_max / 2^" << p.left_shift << ")\n";
  os << mbqm_steps(xa + xb, p.output_multiplier, p.output_shift, "      ");
  os << "   d) + output zero point " << z_o << ", clamp to [" << p.quantized_activation_min << ", "
     << p.quantized_activation_max << "] -> output code " << e.computed << "\n";
  const double real_sum = s_a * (qa - z_a) + s_b * (qb - z_b);
  os << "   real value: " << fmt("%.6g", s_o) << " * (" << e.computed << " - " << z_o << ") = "
     << fmt("%.6g", s_o * (e.computed - z_o)) << "; the float sum of the two inputs was " << fmt("%.6g", real_sum)
     << " (" << fmt("%.4f", real_sum / s_o + z_o) << " in codes of the sum)\n\n";
  os << "5. " << verdict(e.computed, e.graph);
  e.text = os.str();
  return e;
}

Explained explain_avg_pool(const Int8Graph& graph, size_t i, const ExplainImage& image, ExplainAt at) {
  const Int8Op& op = graph.ops[i];
  const bool global = op.kind == Int8OpKind::GlobalAvgPool;
  Shape si, so;
  const std::vector<int8_t> in = codes_of_slot(graph, i, op.inputs[0], image, &si);
  const std::vector<int8_t> out = codes_of_slot(graph, i + 1, op.output, image, &so);
  const int64_t k = resolve_at(at, so);
  const QParams g = grid_of_slot(graph, op.inputs[0]);
  const double s = g.scale[0];
  const int32_t z = g.zero_point[0];
  const int64_t H = si[2], W = si[3];
  const int64_t kh = global ? H : op.kernel, kw = global ? W : op.kernel;
  const int64_t y0 = global ? 0 : at.y * op.stride - op.pad, x0 = global ? 0 : at.x * op.stride - op.pad;
  const int64_t count = kh * kw;
  const int8_t* plane = in.data() + at.channel * H * W;  // (H, W)

  std::ostringstream os;
  os << "layer " << op.name << ": ";
  if (global)
    os << "global average pooling over each " << H << " x " << W << " plane, input " << shape_str(si) << " -> output "
       << shape_str(so) << "\nthe output value explained: channel " << at.channel << "\n\n";
  else
    os << "average pooling " << op.kernel << " x " << op.kernel << ", stride " << op.stride << ", padding " << op.pad
       << ", input " << shape_str(si) << " -> output " << shape_str(so) << "\nthe output value explained: channel "
       << at.channel << ", y " << at.y << ", x " << at.x << "\n\n";
  os << "1. Grid: input and output share it (pooling stays on its input's grid): scale " << fmt("%.6g", s)
     << ", zero point " << z << "\n\n";
  os << "2. The " << kh << " x " << kw << " window of input codes (channel " << at.channel << ", rows " << y0 << ".."
     << y0 + kh - 1 << ", columns " << x0 << ".." << x0 + kw - 1 << (global ? "" : "; [z]: padding, the zero point code")
     << ")\n";
  int64_t sum = 0, padded = 0;
  for (int64_t ky = 0; ky < kh; ++ky) {
    os << "  ";
    for (int64_t kx = 0; kx < kw; ++kx) {
      const int64_t iy = y0 + ky, ix = x0 + kx;
      const bool pad = iy < 0 || iy >= H || ix < 0 || ix >= W;
      const int32_t q = pad ? z : plane[iy * W + ix];
      sum += q;
      padded += pad;
      char cell[16];
      std::snprintf(cell, sizeof cell, pad ? " [%4d]" : " %6d", q);
      os << cell;
    }
    os << "\n";
  }
  os << "   sum of the " << count << " codes = " << sum;
  if (padded) os << " (" << padded << " padded positions at " << z << ": real 0, as the float op averages zeros)";
  os << "\n\n";
  Explained e;
  e.computed = rounded_div_away_from_zero(sum, count);
  e.graph = out[k];
  os << "3. Divide by the window size " << count << ", to nearest, ties away from zero (in integers):\n";
  if (sum >= 0)
    os << "   sum >= 0: (sum + count / 2) / count = (" << sum << " + " << count / 2 << ") / " << count << " = " << e.computed;
  else
    os << "   sum < 0: -((-sum + count / 2) / count) = -((" << -sum << " + " << count / 2 << ") / " << count << ") = " << e.computed;
  os << "   (exact " << fmt("%.6g", static_cast<double>(sum) / count) << ")\n\n";
  os << "4. Output code " << e.computed << ": real " << fmt("%.6g", s) << " * (" << e.computed << " - " << z << ") = "
     << fmt("%.6g", s * (e.computed - z)) << "; the float average of the window's real values is "
     << fmt("%.6g", s * (static_cast<double>(sum) / count - z)) << "\n\n";
  os << "5. " << verdict(e.computed, e.graph);
  e.text = os.str();
  return e;
}

const char* const kGateNames[4] = {"i (input gate, sigmoid)", "f (forget gate, sigmoid)", "g (cell input, tanh)",
                                   "o (output gate, sigmoid)"};

// One step of one hidden unit of the integer LSTM, as lstm_int8_reference computes it.
struct LstmUnitStep {
  int64_t row[4] = {};                 // gate rows i, f, g, o
  int64_t bias[4] = {}, sum_x[4] = {}, sum_h[4] = {};
  int32_t acc_x[4] = {}, acc_h[4] = {};
  int16_t from_x[4] = {}, from_h[4] = {}, a[4] = {}, act[4] = {};
  int16_t c_prev = 0, c = 0, c_gate = 0, tanh_c = 0;
  int32_t f_c = 0, i_g = 0, cell_raw = 0, hidden_product = 0, code = 0;
};

LstmUnitStep lstm_unit_step(const LstmInt8Params& p, const int8_t* x, const int8_t* h_prev, int64_t j, int16_t c_prev) {
  const int64_t IN = p.input_size, H = p.hidden_size;
  LstmUnitStep u;
  for (int gate = 0; gate < 4; ++gate) {
    const int64_t r = gate * H + j;
    u.row[gate] = r;
    u.bias[gate] = p.bias[r];
    for (int64_t k = 0; k < IN; ++k) u.sum_x[gate] += (int64_t{x[k]} + p.input_offset) * p.weight_ih[r * IN + k];
    for (int64_t k = 0; k < H; ++k) {
      const int32_t h = h_prev ? h_prev[k] : p.output_offset;  // h_{-1}: the zero point (real 0)
      u.sum_h[gate] += (int64_t{h} + p.hidden_offset) * p.weight_hh[r * H + k];
    }
    u.acc_x[gate] = static_cast<int32_t>(u.bias[gate] + u.sum_x[gate]);
    u.acc_h[gate] = static_cast<int32_t>(u.sum_h[gate]);
    u.from_x[gate] = lstm_gate_from_accumulator(u.acc_x[gate], p.input_multiplier[r], p.input_shift[r]);
    u.from_h[gate] = lstm_gate_from_accumulator(u.acc_h[gate], p.recurrent_multiplier[r], p.recurrent_shift[r]);
    u.a[gate] = lstm_gate_sum(u.from_x[gate], u.from_h[gate]);
    u.act[gate] = gate == 2 ? lstm_tanh(u.a[gate]) : lstm_sigmoid(u.a[gate]);
  }
  u.c_prev = c_prev;
  const int k = p.cell_frac_bits;
  u.f_c = rounding_divide_by_pot(static_cast<int32_t>(u.act[1]) * c_prev, kLstmActFracBits);
  u.i_g = rounding_divide_by_pot(static_cast<int32_t>(u.act[0]) * u.act[2], 2 * kLstmActFracBits - k);
  u.cell_raw = lstm_cell_update(u.act[1], c_prev, u.act[0], u.act[2], k);
  u.c = saturate_int16(u.cell_raw);
  u.c_gate = lstm_cell_to_gate_grid(u.c, k);
  u.tanh_c = lstm_tanh(u.c_gate);
  u.hidden_product = lstm_hidden_product(u.act[3], u.tanh_c);
  u.code = requantize(u.hidden_product, p.hidden_multiplier, p.hidden_shift, p.output_offset, p.quantized_activation_min,
                      p.quantized_activation_max);
  return u;
}

Explained explain_lstm(const Int8Graph& graph, size_t i, const ExplainImage& image, ExplainAt at, int64_t terms) {
  const Int8Op& op = graph.ops[i];
  const LstmInt8Params& p = op.lstm;
  Shape si, so;
  const std::vector<int8_t> in = codes_of_slot(graph, i, op.inputs[0], image, &si);    // (1, T, IN)
  const std::vector<int8_t> out = codes_of_slot(graph, i + 1, op.output, image, &so);  // (1, T, H)
  const int64_t T = so[1], H = so[2], IN = p.input_size;
  const ExplainAt asked = at;
  if (at.y < 0) at.y = T - 1;
  QATLAB_CHECK(at.channel >= 0 && at.channel < H && at.y < T && at.x <= 0,
               "explain: position " + at_str(asked) + " is outside the lstm's output: UNIT,STEP with unit in 0.." +
                   std::to_string(H - 1) + " and step in 0.." + std::to_string(T - 1));
  at.x = 0;
  const int64_t j = at.channel, t = at.y;
  const int kf = p.cell_frac_bits;

  // The cell state of unit j depends only on its own four gate rows: run it from step 0, reading the
  // hidden states h_{s-1} the graph computed, and check every step's hidden code on the way.
  int16_t c = 0;
  int64_t agreeing_steps = 0;
  LstmUnitStep u;
  for (int64_t s = 0; s <= t; ++s) {
    u = lstm_unit_step(p, in.data() + s * IN, s > 0 ? out.data() + (s - 1) * H : nullptr, j, c);
    c = u.c;
    agreeing_steps += u.code == out[s * H + j];
  }
  Explained e;
  e.computed = u.code;
  e.graph = out[t * H + j];
  const double s_x = p.input.scale[0], s_h = p.hidden.scale[0];
  const int8_t* x = in.data() + t * IN;
  const int8_t* h_prev = t > 0 ? out.data() + (t - 1) * H : nullptr;

  std::ostringstream os;
  os << "layer " << op.name << ": integer LSTM, input " << shape_str(si) << " (N, T, IN) -> output " << shape_str(so)
     << " (N, T, H)\nthe output value explained: hidden unit " << j << " at step " << t << " (h_t[" << j << "])\n\n";
  os << "1. Grids (real = scale * (code - zero_point))\n";
  os << "   input x   scale " << fmt("%.6g", s_x) << ", zero point " << -p.input_offset << "  => input_offset = "
     << p.input_offset << "\n";
  os << "   hidden h  scale " << fmt("%.6g", s_h) << ", zero point " << p.output_offset << "  => hidden_offset = "
     << p.hidden_offset << ", output_offset = " << p.output_offset << ", codes in [" << p.quantized_activation_min
     << ", " << p.quantized_activation_max << "]\n";
  os << "   weights   symmetric per gate row (zero point 0); gate pre-activations int16 on 2^-12 (Q3.12), sigmoid and "
        "tanh outputs on 2^-15 (Q0.15), cell state on 2^-"
     << kf << " (cell_frac_bits k = " << kf << ")\n\n";
  os << "2. The four gate pre-activations of unit " << j << " (rows g * H + " << j << ", H = " << H << ")\n";
  os << "   acc_x = bias + sum_k (x_t[k] + input_offset) * w_ih[row, k] over " << IN << " inputs;  acc_h = sum_k (h_{t-1}[k] + "
        "hidden_offset) * w_hh[row, k] over "
     << H << " hidden units" << (t == 0 ? " (t = 0: h_{-1} is the zero point, so acc_h = 0)" : "") << "\n";
  {
    // The terms of gate i's row, four to a line.
    const int64_t r = u.row[0];
    const auto list = [&](const char* what, const int8_t* v, int32_t offset, const int8_t* w, int64_t n) {
      const int64_t shown = static_cast<int64_t>(listed(static_cast<size_t>(n), terms));
      os << "   " << (shown < n ? "the first " + std::to_string(shown) : "all " + std::to_string(n)) << " " << what
         << " terms of row " << r << ":";
      for (int64_t k = 0; k < shown; ++k)
        os << (k % 4 == 0 ? "\n     " : "; ") << "(" << int{v[k]} << " + " << offset << ") * " << int{w[k]} << " = "
           << (int64_t{v[k]} + offset) * w[k];
      os << "\n";
    };
    list("input", x, p.input_offset, p.weight_ih.data() + r * IN, IN);
    if (h_prev) list("recurrent", h_prev, p.hidden_offset, p.weight_hh.data() + r * H, H);
  }
  for (int gate = 0; gate < 4; ++gate) {
    const int64_t r = u.row[gate];
    os << "   gate " << kGateNames[gate] << ", row " << r << ":\n";
    os << "      acc_x = " << u.bias[gate] << " (bias) + " << u.sum_x[gate] << " = " << u.acc_x[gate]
       << ";  input_multiplier " << p.input_multiplier[r] << ", input_shift " << p.input_shift[r] << ": sat16 -> "
       << u.from_x[gate] << "\n";
    os << mbqm_steps(u.acc_x[gate], p.input_multiplier[r], p.input_shift[r], "         ");
    os << "      acc_h = " << u.acc_h[gate] << ";  recurrent_multiplier " << p.recurrent_multiplier[r]
       << ", recurrent_shift " << p.recurrent_shift[r] << ": sat16 -> " << u.from_h[gate] << "\n";
    os << mbqm_steps(u.acc_h[gate], p.recurrent_multiplier[r], p.recurrent_shift[r], "         ");
    const double a_real = u.a[gate] / 4096.0;
    const double exact = gate == 2 ? std::tanh(a_real) : 1.0 / (1.0 + std::exp(-a_real));
    os << "      a = sat16(" << u.from_x[gate] << " + " << u.from_h[gate] << ") = " << u.a[gate] << " (real "
       << fmt("%.5g", a_real) << ");  " << (gate == 2 ? "tanh" : "sigmoid") << "_table[" << u.a[gate]
       << "] = " << u.act[gate] << " (real " << fmt("%.5g", u.act[gate] / 32768.0) << "; "
       << (gate == 2 ? "tanh" : "sigmoid") << "(" << fmt("%.5g", a_real) << ") = " << fmt("%.5g", exact) << ")\n";
  }
  os << "\n3. The cell state (int16 on 2^-" << kf << ")\n";
  os << "   c_{t-1} = " << u.c_prev << " (real " << fmt("%.5g", std::ldexp(u.c_prev, -kf)) << ")"
     << (t == 0 ? ": the state starts at 0" : ": carried from step " + std::to_string(t - 1) + ", computed the same way") << "\n";
  os << "   f * c_{t-1} = " << u.act[1] << " * " << u.c_prev << " = " << static_cast<int32_t>(u.act[1]) * u.c_prev
     << ", rounding right shift by 15 = " << u.f_c << "\n";
  os << "   i * g = " << u.act[0] << " * " << u.act[2] << " = " << static_cast<int32_t>(u.act[0]) * u.act[2]
     << ", rounding right shift by 30 - k = " << 2 * kLstmActFracBits - kf << ": " << u.i_g << "\n";
  os << "   c_t = sat16(" << u.f_c << " + " << u.i_g << ") = " << u.c << " (real " << fmt("%.5g", std::ldexp(u.c, -kf))
     << ")\n\n";
  os << "4. The hidden output\n";
  os << "   c_t on Q3.12 (" << (kf <= kLstmGateFracBits ? "times 2^(12 - k), saturating" : "rounding right shift by k - 12")
     << "): " << u.c_gate << ";  tanh_table[" << u.c_gate << "] = " << u.tanh_c << " (real "
     << fmt("%.5g", u.tanh_c / 32768.0) << ")\n";
  os << "   o * tanh(c_t) = " << u.act[3] << " * " << u.tanh_c << " = " << u.hidden_product << " (Q0.30: real "
     << fmt("%.6g", std::ldexp(u.hidden_product, -30)) << ")\n";
  os << "   hidden_multiplier " << p.hidden_multiplier << ", hidden_shift " << p.hidden_shift << " ("
     << multiplier_str(p.hidden_multiplier, p.hidden_shift) << " = 2^-30 / s_h):\n";
  os << mbqm_steps(u.hidden_product, p.hidden_multiplier, p.hidden_shift, "      ");
  os << "   + output_offset " << p.output_offset << ", clamp to [" << p.quantized_activation_min << ", "
     << p.quantized_activation_max << "] -> h_t code " << e.computed << " (real "
     << fmt("%.6g", s_h * (e.computed - p.output_offset)) << ")\n\n";
  os << "5. " << verdict(e.computed, e.graph);
  os << "   (steps 0.." << t << " of unit " << j << " recomputed this way: " << agreeing_steps << " of " << t + 1
     << " equal the graph's codes)\n";
  if (agreeing_steps != t + 1) e.computed = e.graph + 1;  // an earlier step differed: report a mismatch
  e.text = os.str();
  return e;
}

Explained explain_any(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at,
                      int64_t terms) {
  QATLAB_CHECK(image.floats.dim() == 4 && image.floats.size(0) == 1,
               "explain takes one image (1, C, H, W), got " + shape_str(image.floats.shape()));
  const size_t i = find_op(graph, op_name);
  switch (graph.ops[i].kind) {
    case Int8OpKind::Add:
      return explain_add(graph, i, image, at);
    case Int8OpKind::Requantize:
      return explain_requantize(graph, i, image, at);
    case Int8OpKind::AvgPool2d:
    case Int8OpKind::GlobalAvgPool:
      return explain_avg_pool(graph, i, image, at);
    case Int8OpKind::Lstm:
      return explain_lstm(graph, i, image, at, terms);
    default: {
      const Walk w = walk(graph, op_name, image, at);
      return {explain_linear(graph, op_name, image, at, terms), w.code, w.graph_code};
    }
  }
}

}  // namespace

ExplainCheck explain_check(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at) {
  const Explained e = explain_any(graph, op_name, image, at, 8);
  return {e.computed, e.graph};
}

std::string explain_output(const Int8Graph& graph, const std::string& op_name, const ExplainImage& image, ExplainAt at,
                           int64_t terms) {
  return explain_any(graph, op_name, image, at, terms).text;
}

// ------------------------------------------------------------------------------- batch-norm folding

namespace {

// The folding of one output channel, in float32 as QatLayer::folded_weight / folded_bias compute it.
struct BnFold {
  int64_t per_channel = 0;
  float gamma = 0, beta = 0, mean = 0, var = 0, eps = 0, b = 0, sigma = 0, sf = 0, b_fold = 0;
  std::vector<float> w, w_fold;    // (per_channel)
  std::vector<int32_t> codes;      // quantize(w_fold, s_w, 0)
  std::vector<int8_t> lowered;     // convert's codes of the channel
  float s_in = 0, s_w = 0;
  double bias_exact = 0;           // b_fold / (s_in * s_w)
  int32_t bias = 0, lowered_bias = 0;
  int64_t weights_equal = 0;
};

BnFold fold_channel(const QatLayer& layer, const LoweredLayer& lowered, int64_t c) {
  QATLAB_CHECK(layer.has_bn(), "explain: this layer has no batch norm to fold");
  const int64_t OC = layer.out_channels();
  QATLAB_CHECK(c >= 0 && c < OC, "explain: channel " + std::to_string(c) + " is outside the layer's " +
                                     std::to_string(OC) + " output channels");
  QATLAB_CHECK(lowered.weight_shape == layer.weight.shape(),
               "explain: the integer layer's weights " + shape_str(lowered.weight_shape) + " are not the layer's " +
                   shape_str(layer.weight.shape()));
  BnFold f;
  f.per_channel = layer.weight.numel() / OC;
  f.gamma = layer.bn_gamma.data()[c], f.beta = layer.bn_beta.data()[c];
  f.mean = layer.bn_mean.data()[c], f.var = layer.bn_var.data()[c], f.eps = layer.bn_eps;
  f.b = layer.bias.defined() ? layer.bias.data()[c] : 0.0f;
  f.sigma = std::sqrt(f.var + f.eps);
  f.sf = f.gamma / f.sigma;
  f.b_fold = f.beta + (f.b - f.mean) * f.sf;
  const QParams& wq = lowered.weights;
  f.s_w = wq.scale[wq.per_channel() ? c : 0];
  f.s_in = lowered.input.scale[0];
  const std::vector<int8_t> all = lowered.weight_codes();
  for (int64_t k = 0; k < f.per_channel; ++k) {
    const float w = layer.weight.data()[c * f.per_channel + k];
    f.w.push_back(w);
    f.w_fold.push_back(w * f.sf);
    f.codes.push_back(quantize_weight_value(w * f.sf, 1.0f / f.s_w, wq));
    f.lowered.push_back(all[c * f.per_channel + k]);
    f.weights_equal += f.codes.back() == f.lowered.back();
  }
  f.bias_exact = static_cast<double>(f.b_fold) / bias_scale(f.s_in, f.s_w);
  f.bias = quantize_bias(f.b_fold, bias_scale(f.s_in, f.s_w));
  f.lowered_bias = lowered.bias.empty() ? 0 : lowered.bias[c];
  return f;
}

}  // namespace

BnFoldCheck bn_folding_check(const QatLayer& layer, const LoweredLayer& lowered, int64_t channel) {
  const BnFold f = fold_channel(layer, lowered, channel);
  return {f.per_channel, f.weights_equal, f.bias, f.lowered_bias};
}

std::string explain_bn_folding(const QatLayer& layer, const LoweredLayer& lowered, int64_t channel, int64_t terms) {
  const BnFold f = fold_channel(layer, lowered, channel);
  const bool conv = layer.is_conv();
  std::ostringstream os;
  os << "Batch-norm folding: this layer is " << layer.describe()
     << "; convert folded the batch norm into its weights and bias (quant/README.md, section 4).\n";
  os << "output channel " << channel << ", in float32 as the QAT layer computes it:\n";
  os << "   gamma = " << fmt("%.8g", f.gamma) << ", beta = " << fmt("%.8g", f.beta) << ", running mean mu = "
     << fmt("%.8g", f.mean) << ", running var = " << fmt("%.8g", f.var) << ", eps = " << fmt("%g", f.eps) << "\n";
  os << "   sigma = sqrt(running_var + eps) = sqrt(" << fmt("%.8g", f.var + f.eps) << ") = " << fmt("%.8g", f.sigma) << "\n";
  os << "   sf = gamma / sigma = " << fmt("%.8g", f.gamma) << " / " << fmt("%.8g", f.sigma) << " = " << fmt("%.8g", f.sf)
     << "\n";
  os << "   conv bias b = " << fmt("%.8g", f.b) << (layer.bias.defined() ? "" : " (the layer has none)") << "\n\n";
  const size_t shown = listed(f.w.size(), terms);
  os << "   folded weights W_fold = W * sf, on the weight grid (scale s_w = " << fmt("%.6g", f.s_w)
     << ", zero point 0, " << (lowered.weights.odd_codes ? "odd codes (mid-rise: the odd integer nearest W_fold / s_w) in ["
                                                        : "codes in [")
     << lowered.weights.quant_min << ", " << lowered.weights.quant_max
     << "]); " << (shown < f.w.size() ? "the first " + std::to_string(shown) + " of " : "all ") << f.w.size() << ":\n";
  os << (conv ? "      c ky kx" : "       in") << " | W           | W_fold = W * sf | W_fold / s_w | code | convert's\n";
  const int64_t KH = conv ? layer.weight.size(2) : 1, KW = conv ? layer.weight.size(3) : 1;
  for (size_t k = 0; k < shown; ++k) {
    char line[200];
    if (conv)
      std::snprintf(line, sizeof line, "   %4lld %2lld %2lld |", static_cast<long long>(k / (KH * KW)),
                    static_cast<long long>(k / KW % KH), static_cast<long long>(k % KW));
    else
      std::snprintf(line, sizeof line, "   %9lld |", static_cast<long long>(k));
    os << line;
    std::snprintf(line, sizeof line, " %-11s | %-15s | %-12s | %4d | %4d\n", fmt("%.6g", f.w[k]).c_str(),
                  fmt("%.6g", f.w_fold[k]).c_str(), fmt("%.4f", f.w_fold[k] / f.s_w).c_str(), f.codes[k],
                  static_cast<int>(f.lowered[k]));
    os << line;
  }
  os << "   weight codes of this channel equal to convert's: " << f.weights_equal << " of " << f.w.size() << "\n\n";
  os << "   folded bias b_fold = beta + (b - mu) * sf = " << fmt("%.8g", f.beta) << " + (" << fmt("%.8g", f.b) << " - "
     << fmt("%.8g", f.mean) << ") * " << fmt("%.8g", f.sf) << " = " << fmt("%.8g", f.b_fold) << "\n";
  os << "   int32 bias = round_half_even(b_fold / (s_in * s_w)) = round(" << fmt("%.8g", f.b_fold) << " / ("
     << fmt("%.6g", f.s_in) << " * " << fmt("%.6g", f.s_w) << ")) = round(" << fmt("%.4f", f.bias_exact) << ") = " << f.bias
     << "; convert's: " << f.lowered_bias << "\n";
  const bool same = f.weights_equal == static_cast<int64_t>(f.w.size()) && f.bias == f.lowered_bias;
  os << "   " << (same ? "the folding gives convert's integers exactly." : "DIFFERENT from convert (a bug: please report it).")
     << "\n";
  return os.str();
}

}  // namespace qatlab
