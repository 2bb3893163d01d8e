// onnx_export.cpp: Int8Graph -> ONNX ModelProto, op by op (quant/onnx/README.md says why each op is
// written the way it is).
//
// Shape letters: N batch, C channels, H x W image, OC output channels, K outputs of the graph.
#include "quant/onnx/onnx_export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "core/atomic_file.h"
#include "quant/engine/requantize.h"
#include "quant/onnx/onnx_builder.h"

namespace qatlab {

namespace {

// Average pools are a depthwise QLinearConv whose scale is (1 + delta) / count (see avg_pool below);
// delta = 1 / (512 * count) must stay far above float's relative precision, hence the bound.
constexpr int64_t kMaxPoolCount = 4096;

// A slot's tensor in the ONNX graph: its name and the grid of its codes.
struct SlotTensor {
  std::string name;
  float scale = 1.0f;
  int32_t zero_point = 0;
  bool written = false;
};

std::string op_label(size_t i, const Int8Op& op) {
  return "op " + std::to_string(i) + " '" + op.name + "' (" + int8_op_name(op.kind) + ")";
}

class Exporter {
 public:
  Exporter(const Int8Graph& graph, onnx::GraphProto* g, bool u8) : graph_(graph), b_(g), g_(g), u8_(u8) {}

  void run(OnnxExportSummary* summary) {
    const auto shapes = graph_.op_shapes();
    slots_.assign(static_cast<size_t>(graph_.num_slots), SlotTensor{});
    for (size_t i = 0; i < graph_.ops.size(); ++i) {
      const Int8Op& op = graph_.ops[i];
      i_ = i;
      const Shape& in = shapes[i].first;
      const Shape& out = shapes[i].second;
      switch (op.kind) {
        case Int8OpKind::Quantize: quantize(op, summary); break;
        case Int8OpKind::Conv2d: conv(op); break;
        case Int8OpKind::FullyConnected: fully_connected(op); break;
        case Int8OpKind::MaxPool2d: max_pool(op); break;
        case Int8OpKind::AvgPool2d: avg_pool(op, in, false); break;
        case Int8OpKind::GlobalAvgPool: avg_pool(op, in, true); break;
        case Int8OpKind::Flatten: flatten(op); break;
        case Int8OpKind::Clamp: {
          const SlotTensor& x = input(op, 0);
          set_output(op, clip(x.name, op.clamp_min, op.clamp_max, op.name, true), x.scale, x.zero_point);
          break;
        }
        case Int8OpKind::Add: add(op); break;
        case Int8OpKind::Requantize: requantize(op, in); break;
        case Int8OpKind::Dequantize: dequantize(op, out); break;
        case Int8OpKind::Lstm:
        case Int8OpKind::ImageRows:
        case Int8OpKind::LastStep:
          throw std::invalid_argument(
              op_label(i, op) +
              ": ONNX has no integer LSTM, and ONNX Runtime's DynamicQuantizeLSTM computes its gates in float "
              "from float activations, which is not this graph's arithmetic (quant/README.md, section 9): "
              "models with an LSTM cannot be exported");
      }
    }
    if (summary) summary->op_types = b_.op_types();
  }

 private:
  const SlotTensor& input(const Int8Op& op, size_t k) const {
    const SlotTensor& s = slots_.at(static_cast<size_t>(op.inputs.at(k)));
    if (!s.written) throw std::invalid_argument(op_label(i_, op) + ": reads a slot no earlier op wrote");
    return s;
  }
  void set_output(const Int8Op& op, const std::string& name, float scale, int32_t zero_point) {
    slots_.at(static_cast<size_t>(op.output)) = SlotTensor{name, scale, zero_point, true};
  }

  // Clip on the codes to [lo, hi] when that is narrower than int8 (a fused ReLU, a grid below 8 bits):
  // ONNX's quantized ops saturate to the type's range only. `always` for a standalone ReLU.
  std::string clip(const std::string& x, int32_t lo, int32_t hi, const std::string& node_name, bool always = false) {
    if (!always && lo <= -128 && hi >= 127) return x;
    const std::string y = b_.name("clip");
    b_.node("Clip", node_name + "/clip", {x, b_.act_scalar("clip_min", lo, u8_), b_.act_scalar("clip_max", hi, u8_)}, y);
    return y;
  }

  void quantize(const Int8Op& op, OnnxExportSummary* summary) {
    const int64_t c = graph_.input_shape[0];
    const float s = op.grid.scale.at(0);
    const int32_t z = op.grid.zero_point.at(0);
    std::string codes;
    if (!op.pixel_codes.empty()) {
      // Raw pixels through the table: Gather of the (C * 256) codes at c * 256 + pixel, exactly the lookup
      // of Int8Graph::run_pixel_codes.
      value_info(g_->add_input(), "pixels", onnx::TensorProto::UINT8, graph_.input_shape);
      if (summary) summary->input_name = "pixels";
      std::string index = b_.name("pixel_index");
      set_int(b_.node("Cast", op.name + "/cast", {"pixels"}, index), "to", onnx::TensorProto::INT32);
      if (c > 1) {
        std::vector<int32_t> offsets(static_cast<size_t>(c));
        for (int64_t k = 0; k < c; ++k) offsets[static_cast<size_t>(k)] = static_cast<int32_t>(k * 256);
        const std::string shifted = b_.name("table_index");
        b_.node("Add", op.name + "/channel_offset", {index, b_.int32_tensor("channel_offset", {1, c, 1, 1}, offsets)},
                shifted);
        index = shifted;
      }
      codes = b_.name("input_codes");
      b_.node("Gather", op.name + "/pixel_table",
              {b_.act_tensor("pixel_table", {c * 256}, op.pixel_codes, u8_), index}, codes);
    } else {
      // Normalised floats: QuantizeLinear (x / scale, ties to even, saturating) on the entry grid.
      value_info(g_->add_input(), "input", onnx::TensorProto::FLOAT, graph_.input_shape);
      if (summary) summary->input_name = "input";
      codes = b_.name("input_codes");
      b_.node("QuantizeLinear", op.name, {"input", b_.float_scalar("scale", s), b_.act_scalar("zero_point", z, u8_)},
              codes);
      codes = clip(codes, op.grid.quant_min, op.grid.quant_max, op.name);
    }
    set_output(op, codes, s, z);
  }

  // A conv or (as a 1x1 conv on (N, IN, 1, 1)) a fully connected layer: QLinearConv with the int32 bias,
  // per-channel weight scales chosen so that ONNX Runtime's float output scale is the float nearest our
  // fixed-point multiplier, then a Clip for a fused activation or a grid below 8 bits.
  std::string qlinear_conv(const Int8Op& op, const SlotTensor& x, const std::vector<int64_t>& w_dims,
                           const ConvInt8Params* conv, const std::vector<int32_t>& multipliers,
                           const std::vector<int>& shifts, int32_t act_min, int32_t act_max) {
    const LoweredLayer& l = op.layer;
    const int64_t oc = w_dims[0];
    const float sx = x.scale, sy = l.output.scale.at(0);
    std::vector<float> w_scale(static_cast<size_t>(oc));
    for (int64_t k = 0; k < oc; ++k) {
      const double m = std::ldexp(static_cast<double>(multipliers[static_cast<size_t>(k)]),
                                  shifts[static_cast<size_t>(k)] - 31);
      w_scale[static_cast<size_t>(k)] = onnx_weight_scale_for(m, sx, sy);
    }
    const std::vector<int8_t> codes = l.weight_codes();
    const std::string y = b_.name("conv_out");
    onnx::NodeProto* n = b_.node(
        "QLinearConv", op.name,
        {x.name, b_.float_scalar("x_scale", sx), b_.act_scalar("x_zero_point", -input_offset(op), u8_),
         b_.int8_tensor("weight", w_dims, codes), b_.float_tensor("w_scale", {oc}, w_scale),
         b_.int8_tensor("w_zero_point", {oc}, std::vector<int8_t>(static_cast<size_t>(oc), 0)),
         b_.float_scalar("y_scale", sy), b_.act_scalar("y_zero_point", output_offset(op), u8_),
         b_.int32_tensor("bias", {oc}, l.bias)},
        y);
    set_ints(n, "kernel_shape", {w_dims[2], w_dims[3]});
    if (conv) {
      set_ints(n, "strides", {conv->stride_h, conv->stride_w});
      set_ints(n, "pads", {conv->pad_h, conv->pad_w, conv->pad_h, conv->pad_w});
      set_int(n, "group", conv->groups);
    }
    return clip(y, act_min, act_max, op.name);
  }
  static int32_t input_offset(const Int8Op& op) {
    return op.layer.is_conv ? op.layer.conv.input_offset : op.layer.fc.input_offset;
  }
  static int32_t output_offset(const Int8Op& op) {
    return op.layer.is_conv ? op.layer.conv.output_offset : op.layer.fc.output_offset;
  }

  void conv(const Int8Op& op) {
    const LoweredLayer& l = op.layer;
    const SlotTensor& x = input(op, 0);
    const std::string y = qlinear_conv(op, x, l.weight_shape, &l.conv, l.conv.output_multiplier, l.conv.output_shift,
                                       l.conv.quantized_activation_min, l.conv.quantized_activation_max);
    set_output(op, y, l.output.scale.at(0), l.conv.output_offset);
  }

  void fully_connected(const Int8Op& op) {
    const LoweredLayer& l = op.layer;
    const SlotTensor& x = input(op, 0);
    const int64_t out = l.weight_shape[0], features = l.weight_shape[1];
    const std::string x4 = b_.name("fc_in");
    b_.node("Reshape", op.name + "/to_nchw", {x.name, b_.int64_tensor("shape", {-1, features, 1, 1})}, x4);
    const std::string y4 = qlinear_conv(op, SlotTensor{x4, x.scale, x.zero_point, true}, {out, features, 1, 1}, nullptr,
                                        l.fc.output_multiplier, l.fc.output_shift, l.fc.quantized_activation_min,
                                        l.fc.quantized_activation_max);
    const std::string y = b_.name("fc_out");
    b_.node("Reshape", op.name + "/to_nc", {y4, b_.int64_tensor("shape", {-1, out})}, y);
    set_output(op, y, l.output.scale.at(0), l.fc.output_offset);
  }

  void max_pool(const Int8Op& op) {
    const SlotTensor& x = input(op, 0);
    const std::string y = b_.name("max_pool");
    onnx::NodeProto* n = b_.node("MaxPool", op.name, {x.name}, y);
    set_ints(n, "kernel_shape", {op.kernel, op.kernel});
    set_ints(n, "strides", {op.stride, op.stride});
    set_ints(n, "pads", {op.pad, op.pad, op.pad, op.pad});
    set_output(op, y, x.scale, x.zero_point);
  }

  // Our average is of the codes, padding counting as the zero point, rounded to nearest with ties away
  // from zero (int8_kernels.h). Written as: Pad with the zero point's code, then a depthwise QLinearConv
  // of weights 1 on the raw codes (zero points 0), whose int32 sum is exact, with the output scale
  // (1 + delta) / count: ONNX Runtime rounds ties to even, and the factor 1 + delta moves every tie away
  // from zero while moving no other value across a rounding boundary (quant/onnx/README.md).
  void avg_pool(const Int8Op& op, const Shape& in, bool global) {
    const SlotTensor& x = input(op, 0);
    const int64_t c = in[0];
    const int64_t kh = global ? in[1] : op.kernel, kw = global ? in[2] : op.kernel;
    const int64_t stride = global ? 1 : op.stride, pad = global ? 0 : op.pad;
    const int64_t count = kh * kw;
    if (count > kMaxPoolCount)
      throw std::invalid_argument(op_label(i_, op) + ": a pooling window of " + std::to_string(count) +
                                  " values; the ONNX form of our rounding is exact up to " +
                                  std::to_string(kMaxPoolCount));
    std::string padded = x.name;
    if (pad > 0) {
      padded = b_.name("avg_pool_padded");
      b_.node("Pad", op.name + "/pad",
              {x.name, b_.int64_tensor("pads", {0, 0, pad, pad, 0, 0, pad, pad}),
               b_.act_scalar("pad_value", op.grid.zero_point.at(0), u8_)},
              padded);
    }
    const double delta = 1.0 / (512.0 * static_cast<double>(count));
    const float w_scale = onnx_weight_scale_for((1.0 + delta) / static_cast<double>(count), x.scale, x.scale);
    const std::string y = b_.name(global ? "global_avg_pool" : "avg_pool");
    onnx::NodeProto* n = b_.node(
        "QLinearConv", op.name,
        {padded, b_.float_scalar("x_scale", x.scale), b_.act_scalar("x_zero_point", 0, u8_),
         b_.int8_tensor("ones", {c, 1, kh, kw}, std::vector<int8_t>(static_cast<size_t>(c * count), 1)),
         b_.float_tensor("w_scale", {c}, std::vector<float>(static_cast<size_t>(c), w_scale)),
         b_.int8_tensor("w_zero_point", {c}, std::vector<int8_t>(static_cast<size_t>(c), 0)),
         b_.float_scalar("y_scale", x.scale), b_.act_scalar("y_zero_point", 0, u8_)},
        y);
    set_ints(n, "kernel_shape", {kh, kw});
    set_ints(n, "strides", {stride, stride});
    set_int(n, "group", c);
    std::string out = y;
    if (global) {  // (N, C, 1, 1) -> (N, C), as our global pool gives
      out = b_.name("global_avg_pool_nc");
      b_.node("Flatten", op.name + "/flatten", {y}, out);
    }
    set_output(op, out, x.scale, x.zero_point);
  }

  // Codes on one grid -> another: a depthwise 1x1 QLinearConv of weights 1 with the two zero points and
  // the weight scale whose float product with the grids' scales is nearest our multiplier (as conv's),
  // then the clamp. A (N, F) value (what a fully connected layer reads) goes through it as (N, F, 1, 1).
  void requantize(const Int8Op& op, const Shape& in) {
    if (in.size() != 3 && in.size() != 1)
      throw std::invalid_argument(op_label(i_, op) + ": requantizes a value of shape " + shape_str(in) +
                                  "; the ONNX form is written for (C, H, W) and (F) values");
    SlotTensor x = input(op, 0);
    const bool flat = in.size() == 1;
    if (flat) {
      const std::string x4 = b_.name("requantize_in");
      b_.node("Reshape", op.name + "/to_nchw", {x.name, b_.int64_tensor("shape", {-1, in[0], 1, 1})}, x4);
      x.name = x4;
    }
    const RequantizeInt8Params& p = op.requant;
    const int64_t c = in[0];
    const float so = op.grid.scale.at(0);
    const float w_scale = onnx_weight_scale_for(dequantize_multiplier(p.multiplier, p.shift), x.scale, so);
    const std::string y = b_.name("requantize");
    onnx::NodeProto* n = b_.node(
        "QLinearConv", op.name,
        {x.name, b_.float_scalar("x_scale", x.scale), b_.act_scalar("x_zero_point", -p.input_offset, u8_),
         b_.int8_tensor("ones", {c, 1, 1, 1}, std::vector<int8_t>(static_cast<size_t>(c), 1)),
         b_.float_tensor("w_scale", {c}, std::vector<float>(static_cast<size_t>(c), w_scale)),
         b_.int8_tensor("w_zero_point", {c}, std::vector<int8_t>(static_cast<size_t>(c), 0)),
         b_.float_scalar("y_scale", so), b_.act_scalar("y_zero_point", p.output_offset, u8_)},
        y);
    set_ints(n, "kernel_shape", {1, 1});
    set_int(n, "group", c);
    std::string out = clip(y, p.quantized_activation_min, p.quantized_activation_max, op.name);
    if (flat) {
      const std::string y2 = b_.name("requantize_out");
      b_.node("Reshape", op.name + "/to_nc", {out, b_.int64_tensor("shape", {-1, c})}, y2);
      out = y2;
    }
    set_output(op, out, so, p.output_offset);
  }

  void flatten(const Int8Op& op) {
    const SlotTensor& x = input(op, 0);
    const std::string y = b_.name("flatten");
    b_.node("Flatten", op.name, {x.name}, y);  // axis 1: (N, C, H, W) -> (N, C*H*W) in C order, as ours
    set_output(op, y, x.scale, x.zero_point);
  }

  // ONNX Runtime's QLinearAdd (com.microsoft) rescales both inputs and rounds once, in float; ours is
  // TFLite's three fixed-point roundings. Both are the rounded real sum up to about 1e-6 of a step.
  void add(const Int8Op& op) {
    const SlotTensor& a = input(op, 0);
    const SlotTensor& b = input(op, 1);
    const AddInt8Params& p = op.add;
    const float so = op.grid.scale.at(0);
    const std::string y = b_.name("add");
    b_.node("QLinearAdd", op.name,
            {a.name, b_.float_scalar("a_scale", a.scale), b_.act_scalar("a_zero_point", -p.input1_offset, u8_), b.name,
             b_.float_scalar("b_scale", b.scale), b_.act_scalar("b_zero_point", -p.input2_offset, u8_),
             b_.float_scalar("c_scale", so), b_.act_scalar("c_zero_point", p.output_offset, u8_)},
            y, kMicrosoftDomain);
    set_output(op, clip(y, p.quantized_activation_min, p.quantized_activation_max, op.name), so, p.output_offset);
  }

  void dequantize(const Int8Op& op, const Shape& out) {
    const SlotTensor& x = input(op, 0);
    if (u8_) {  // uint8 code + 128 -> the int8 code, in int32 (no op subtracts on 8 bits)
      const std::string wide = b_.name("codes_int32"), moved = b_.name("codes_moved");
      set_int(b_.node("Cast", op.name + "/widen", {x.name}, wide), "to", onnx::TensorProto::INT32);
      b_.node("Sub", op.name + "/to_signed", {wide, b_.int32_tensor("offset", {}, {128})}, moved);
      set_int(b_.node("Cast", op.name + "/codes", {moved}, "codes"), "to", onnx::TensorProto::INT8);
    } else {
      b_.node("Identity", op.name + "/codes", {x.name}, "codes");
    }
    b_.node("DequantizeLinear", op.name,
            {x.name, b_.float_scalar("scale", op.grid.scale.at(0)),
             b_.act_scalar("zero_point", op.grid.zero_point.at(0), u8_)},
            "logits");
    value_info(g_->add_output(), "codes", onnx::TensorProto::INT8, out);
    value_info(g_->add_output(), "logits", onnx::TensorProto::FLOAT, out);
    set_output(op, "logits", op.grid.scale.at(0), op.grid.zero_point.at(0));
  }

  const Int8Graph& graph_;
  OnnxGraphBuilder b_;
  onnx::GraphProto* g_;
  std::vector<SlotTensor> slots_;
  size_t i_ = 0;
  bool u8_ = false;  // activations as uint8, code + 128 (OnnxExportOptions)
};

}  // namespace

float onnx_weight_scale_for(double multiplier, float x_scale, float y_scale) {
  const float target = static_cast<float>(multiplier);
  const float start = static_cast<float>(multiplier * static_cast<double>(y_scale) / static_cast<double>(x_scale));
  float best = start;
  double best_error = std::numeric_limits<double>::infinity();
  // Walk outwards from the nearest float, one ulp at a time in both directions.
  float up = start, down = start;
  for (int k = 0; k < 64; ++k) {
    for (float w : {up, down}) {
      const float got = (x_scale * w) / y_scale;  // float32 arithmetic, as ONNX Runtime forms the scale
      if (got == target) return w;
      const double error = std::fabs(static_cast<double>(got) - multiplier);
      if (error < best_error) best_error = error, best = w;
    }
    up = std::nextafter(up, std::numeric_limits<float>::infinity());
    down = std::nextafter(down, 0.0f);
  }
  return best;
}

std::string onnx_model_bytes(const Int8Graph& graph, const OnnxExportOptions& options, OnnxExportSummary* summary) {
  graph.validate();
  onnx::ModelProto model = onnx_model_header(
      "qatlab integer graph (" + std::string(kInt8GraphFormat) + ") in ONNX quantized-operator form", true);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("qatlab_int8");

  OnnxExportSummary local;
  Exporter(graph, g, options.uint8_activations).run(&local);
  local.nodes = g->node_size();
  const std::string bytes = checked_model_bytes(model);
  local.bytes = static_cast<int64_t>(bytes.size());
  if (summary) *summary = local;
  return bytes;
}

OnnxExportSummary save_onnx(const Int8Graph& graph, const std::string& path, const OnnxExportOptions& options) {
  OnnxExportSummary summary;
  const std::string bytes = onnx_model_bytes(graph, options, &summary);
  atomic_write_text(path, bytes);
  return summary;
}

}  // namespace qatlab
