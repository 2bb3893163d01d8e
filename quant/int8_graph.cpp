// int8_graph.cpp: running, printing, saving and loading the integer graph.
#include "quant/int8_graph.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/h5io.h"

namespace qatlab {

namespace {

constexpr const char* kOpNames[] = {"quantize", "conv2d", "fully_connected", "max_pool2d", "avg_pool2d",
                                    "global_avg_pool", "flatten", "clamp", "add", "dequantize"};

Shape with_batch(int64_t n, const Shape& chw) {
  Shape s{n};
  s.insert(s.end(), chw.begin(), chw.end());
  return s;
}

}  // namespace

const char* int8_op_name(Int8OpKind kind) { return kOpNames[static_cast<int>(kind)]; }

Int8OpKind parse_int8_op(const std::string& name) {
  for (size_t i = 0; i < std::size(kOpNames); ++i)
    if (name == kOpNames[i]) return static_cast<Int8OpKind>(i);
  throw std::invalid_argument("unknown integer op '" + name + "'");
}

void Int8Graph::prepare() {
  // Shapes flow from the input: compute each slot's per-image shape to size the packed kernels.
  std::vector<Shape> shapes(num_slots);
  shapes[0] = input_shape;
  for (Int8Op& op : ops) {
    const Shape& in = op.inputs.empty() ? input_shape : shapes[op.inputs[0]];
    Shape out = in;
    switch (op.kind) {
      case Int8OpKind::Conv2d: {
        op.packed_conv = std::make_shared<PackedConvInt8>(op.layer.conv, op.layer.weight.data(), op.layer.weight_shape,
                                                          op.layer.bias.data(), in);
        const Shape o = conv2d_int8_output_shape(op.layer.conv, with_batch(1, in), op.layer.weight_shape);
        out = Shape(o.begin() + 1, o.end());
        break;
      }
      case Int8OpKind::FullyConnected:
        op.packed_fc = std::make_shared<PackedFullyConnectedInt8>(op.layer.fc, op.layer.weight.data(),
                                                                  op.layer.weight_shape, op.layer.bias.data());
        out = {op.layer.weight_shape[0]};
        break;
      case Int8OpKind::MaxPool2d:
      case Int8OpKind::AvgPool2d: {
        const Shape o = pool2d_int8_output_shape(with_batch(1, in), op.kernel, op.stride, op.pad);
        out = Shape(o.begin() + 1, o.end());
        break;
      }
      case Int8OpKind::GlobalAvgPool: out = {in.at(0)}; break;
      case Int8OpKind::Flatten: out = {shape_numel(in)}; break;
      default: break;
    }
    shapes[op.output] = out;
  }
}

const QParams& Int8Graph::output_grid() const {
  QATLAB_CHECK(!ops.empty() && ops.back().kind == Int8OpKind::Dequantize, "integer graph must end with dequantize");
  return ops.back().grid;
}

std::vector<int8_t> Int8Graph::run_codes(const Tensor& input, Shape* out_shape, KernelPath path) const {
  QATLAB_CHECK(input.dim() == 4 && Shape(input.shape().begin() + 1, input.shape().end()) == input_shape,
            "integer graph: input must be (N, " + shape_str(input_shape).substr(1) + ", got " + shape_str(input.shape()));
  const int64_t n = input.size(0);
  std::vector<std::vector<int8_t>> slots(num_slots);  // codes per slot
  std::vector<Shape> shapes(num_slots);
  for (const Int8Op& op : ops) {
    std::vector<int8_t>& out = slots[op.output];
    Shape& shape = shapes[op.output];
    const std::vector<int8_t>& in = op.inputs.empty() ? out : slots[op.inputs[0]];
    const Shape& in_shape = op.inputs.empty() ? input.shape() : shapes[op.inputs[0]];
    switch (op.kind) {
      case Int8OpKind::Quantize:
        shape = input.shape();
        out.resize(input.numel());
        quantize_float_to_int8(input.data(), out.data(), input.numel(), op.grid.scale[0], op.grid.zero_point[0],
                               op.grid.quant_min, op.grid.quant_max);
        break;
      case Int8OpKind::Conv2d:
        shape = conv2d_int8_output_shape(op.layer.conv, in_shape, op.layer.weight_shape);
        out.resize(shape_numel(shape));
        if (path == KernelPath::Reference || !op.packed_conv)
          conv2d_int8_reference(op.layer.conv, in.data(), in_shape, op.layer.weight.data(), op.layer.weight_shape,
                                op.layer.bias.data(), out.data());
        else
          op.packed_conv->run(in.data(), n, out.data(), path);
        break;
      case Int8OpKind::FullyConnected:
        shape = fully_connected_int8_output_shape(op.layer.fc, in_shape, op.layer.weight_shape);
        out.resize(shape_numel(shape));
        if (path == KernelPath::Reference || !op.packed_fc)
          fully_connected_int8_reference(op.layer.fc, in.data(), in_shape, op.layer.weight.data(), op.layer.weight_shape,
                                         op.layer.bias.data(), out.data());
        else
          op.packed_fc->run(in.data(), n, out.data(), path);
        break;
      case Int8OpKind::MaxPool2d:
        shape = pool2d_int8_output_shape(in_shape, op.kernel, op.stride, op.pad);
        out.resize(shape_numel(shape));
        max_pool2d_int8(in.data(), in_shape, op.kernel, op.stride, op.pad, out.data());
        break;
      case Int8OpKind::AvgPool2d:
        shape = pool2d_int8_output_shape(in_shape, op.kernel, op.stride, op.pad);
        out.resize(shape_numel(shape));
        avg_pool2d_int8(in.data(), in_shape, op.kernel, op.stride, op.pad, op.grid.zero_point[0], out.data());
        break;
      case Int8OpKind::GlobalAvgPool:
        shape = {in_shape[0], in_shape[1]};
        out.resize(shape_numel(shape));
        global_avg_pool_int8(in.data(), in_shape, out.data());
        break;
      case Int8OpKind::Flatten:
        shape = {in_shape[0], shape_numel(in_shape) / in_shape[0]};
        if (&out != &in) out = in;
        break;
      case Int8OpKind::Clamp:
        shape = in_shape;
        out.resize(in.size());
        for (size_t i = 0; i < in.size(); ++i)
          out[i] = static_cast<int8_t>(std::clamp<int32_t>(in[i], op.clamp_min, op.clamp_max));
        break;
      case Int8OpKind::Add: {
        const std::vector<int8_t>& other = slots[op.inputs[1]];
        QATLAB_CHECK(shapes[op.inputs[1]] == in_shape, "integer graph: add of " + shape_str(in_shape) + " and " +
                                                        shape_str(shapes[op.inputs[1]]));
        shape = in_shape;
        out.resize(in.size());
        add_int8_reference(op.add, in.data(), other.data(), out.data(), static_cast<int64_t>(out.size()));
        break;
      }
      case Int8OpKind::Dequantize:
        shape = in_shape;
        if (&out != &in) out = in;
        break;
    }
  }
  const int last = ops.back().output;
  if (out_shape) *out_shape = shapes[last];
  return std::move(slots[last]);
}

Tensor Int8Graph::run(const Tensor& input, KernelPath path) const {
  Shape shape;
  const std::vector<int8_t> codes = run_codes(input, &shape, path);
  return dequantize_codes(codes, shape, output_grid());
}

int64_t Int8Graph::parameter_bytes() const {
  int64_t bytes = 0;
  for (const Int8Op& op : ops)
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected)
      bytes += op.layer.weight.size() + 4 * op.layer.bias.size() + 8 * op.layer.bias.size();  // + multiplier, shift
  return bytes;
}

std::string Int8Graph::summary() const {
  std::ostringstream os;
  os << "integer graph: input " << shape_str(input_shape) << ", " << ops.size() << " ops, "
     << parameter_bytes() << " bytes of integer parameters\n";
  for (size_t i = 0; i < ops.size(); ++i) {
    const Int8Op& op = ops[i];
    os << "  " << i << ": " << int8_op_name(op.kind);
    if (!op.name.empty()) os << " [" << op.name << "]";
    if (op.kind == Int8OpKind::Quantize || op.kind == Int8OpKind::Dequantize)
      os << " scale " << op.grid.scale[0] << " zero_point " << op.grid.zero_point[0];
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) {
      const auto& l = op.layer;
      const auto& mult = l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier;
      const auto& shift = l.is_conv ? l.conv.output_shift : l.fc.output_shift;
      os << " weights " << shape_str(l.weight_shape) << " codes [" << l.weights.quant_min << ", " << l.weights.quant_max
         << "], in zp " << l.input.zero_point[0] << ", out scale " << l.output.scale[0] << " zp " << l.output.zero_point[0]
         << ", multiplier[0] " << mult[0] << " shift[0] " << shift[0] << ", clamp ["
         << (l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min) << ", "
         << (l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max) << "]";
    }
    if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d)
      os << " k " << op.kernel << " stride " << op.stride << " pad " << op.pad;
    os << "\n";
  }
  return os.str();
}

// -------------------------------------------------------------------------------------------- files

namespace {

void write_grid(H5File& f, const std::string& path, const QParams& qp) {
  f.write_floats(path + "/scale", {static_cast<int64_t>(qp.scale.size())}, qp.scale);
  f.write_ints<int32_t>(path + "/zero_point", {static_cast<int64_t>(qp.zero_point.size())}, qp.zero_point);
  f.set_attr(path, "axis", static_cast<int64_t>(qp.axis));
  f.set_attr(path, "quant_min", static_cast<int64_t>(qp.quant_min));
  f.set_attr(path, "quant_max", static_cast<int64_t>(qp.quant_max));
}

QParams read_grid(const H5File& f, const std::string& path) {
  QParams qp;
  qp.scale = f.read_floats(path + "/scale");
  qp.zero_point = f.read_ints<int32_t>(path + "/zero_point");
  qp.axis = static_cast<int>(f.get_attr_int(path, "axis"));
  qp.quant_min = static_cast<int32_t>(f.get_attr_int(path, "quant_min"));
  qp.quant_max = static_cast<int32_t>(f.get_attr_int(path, "quant_max"));
  qp.validate();
  return qp;
}

// The fields of AddInt8Params, stored as attributes of an add op, in this order.
constexpr const char* kAddFields[] = {"left_shift", "input1_offset", "input2_offset", "output_offset",
                                      "input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                                      "output_multiplier", "output_shift", "quantized_activation_min",
                                      "quantized_activation_max"};

std::vector<int> to_int(const std::vector<int32_t>& v) { return std::vector<int>(v.begin(), v.end()); }

}  // namespace

void Int8Graph::save(const std::string& path) const {
  atomic_save_h5(path, [&](H5File& f) {
    f.set_attr("/", "format", kInt8GraphFormat);
    f.set_attr("/", "format_version", kInt8GraphVersion);
    f.set_attr("/", "num_slots", static_cast<int64_t>(num_slots));
    f.write_ints<int64_t>("input_shape", {static_cast<int64_t>(input_shape.size())}, input_shape);
    for (size_t i = 0; i < ops.size(); ++i) {
      const Int8Op& op = ops[i];
      // Zero-padded indices keep the ops in order when h5py or h5dump list them alphabetically.
      std::string idx = std::to_string(i);
      idx.insert(0, idx.size() < 3 ? 3 - idx.size() : 0, '0');
      const std::string g = "ops/" + idx;
      std::vector<int32_t> inputs(op.inputs.begin(), op.inputs.end());
      f.write_ints<int32_t>(g + "/inputs", {static_cast<int64_t>(inputs.size())}, inputs);
      f.set_attr(g, "kind", int8_op_name(op.kind));
      f.set_attr(g, "name", op.name);
      f.set_attr(g, "output", static_cast<int64_t>(op.output));
      switch (op.kind) {
        case Int8OpKind::Quantize:
        case Int8OpKind::Dequantize:
        case Int8OpKind::AvgPool2d:
          write_grid(f, g + "/grid", op.grid);
          break;
        case Int8OpKind::Conv2d:
        case Int8OpKind::FullyConnected: {
          const LoweredLayer& l = op.layer;
          f.write_ints<int8_t>(g + "/weight", l.weight_shape, l.weight);
          f.write_ints<int32_t>(g + "/bias", {static_cast<int64_t>(l.bias.size())}, l.bias);
          const auto& mult = l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier;
          const auto& shift = l.is_conv ? l.conv.output_shift : l.fc.output_shift;
          f.write_ints<int32_t>(g + "/output_multiplier", {static_cast<int64_t>(mult.size())}, mult);
          f.write_ints<int32_t>(g + "/output_shift", {static_cast<int64_t>(shift.size())},
                                std::vector<int32_t>(shift.begin(), shift.end()));
          write_grid(f, g + "/input_grid", l.input);
          write_grid(f, g + "/weight_grid", l.weights);
          write_grid(f, g + "/output_grid", l.output);
          f.set_attr(g, "input_offset", static_cast<int64_t>(l.is_conv ? l.conv.input_offset : l.fc.input_offset));
          f.set_attr(g, "output_offset", static_cast<int64_t>(l.is_conv ? l.conv.output_offset : l.fc.output_offset));
          f.set_attr(g, "quantized_activation_min",
                     static_cast<int64_t>(l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min));
          f.set_attr(g, "quantized_activation_max",
                     static_cast<int64_t>(l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max));
          if (l.is_conv) {
            f.set_attr(g, "stride_h", l.conv.stride_h);
            f.set_attr(g, "stride_w", l.conv.stride_w);
            f.set_attr(g, "pad_h", l.conv.pad_h);
            f.set_attr(g, "pad_w", l.conv.pad_w);
            f.set_attr(g, "groups", l.conv.groups);
          }
          break;
        }
        case Int8OpKind::Clamp:
          f.set_attr(g, "clamp_min", static_cast<int64_t>(op.clamp_min));
          f.set_attr(g, "clamp_max", static_cast<int64_t>(op.clamp_max));
          break;
        case Int8OpKind::Add: {
          write_grid(f, g + "/grid", op.grid);
          const AddInt8Params& a = op.add;
          const std::vector<int32_t> values{a.left_shift, a.input1_offset, a.input2_offset, a.output_offset,
                                            a.input1_multiplier, a.input1_shift, a.input2_multiplier, a.input2_shift,
                                            a.output_multiplier, a.output_shift, a.quantized_activation_min,
                                            a.quantized_activation_max};
          for (size_t k = 0; k < values.size(); ++k) f.set_attr(g, kAddFields[k], static_cast<int64_t>(values[k]));
          break;
        }
        default: break;
      }
      if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d) {
        f.set_attr(g, "kernel", op.kernel);
        f.set_attr(g, "stride", op.stride);
        f.set_attr(g, "pad", op.pad);
      }
    }
  });
}

bool Int8Graph::is_int8_graph_file(const std::string& path) {
  try {
    const H5File f = H5File::open_read(path);
    return f.has_attr("/", "format") && f.get_attr_string("/", "format") == kInt8GraphFormat;
  } catch (const std::exception&) {
    return false;
  }
}

Int8Graph Int8Graph::load(const std::string& path) {
  const H5File f = H5File::open_read(path);
  const auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  if (!f.has_attr("/", "format") || f.get_attr_string("/", "format") != kInt8GraphFormat)
    fail("not a qatlab integer model (no format attribute \"" + std::string(kInt8GraphFormat) + "\")");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version > kInt8GraphVersion)
    fail("integer model format version " + std::to_string(version) + " is newer than this qatlab reads (" +
         std::to_string(kInt8GraphVersion) + "): upgrade qatlab");
  Int8Graph g;
  g.num_slots = static_cast<int>(f.get_attr_int("/", "num_slots"));
  g.input_shape = f.read_ints<int64_t>("input_shape");
  for (const std::string& idx : f.list("ops")) {
    const std::string p = "ops/" + idx;
    Int8Op op;
    op.kind = parse_int8_op(f.get_attr_string(p, "kind"));
    op.name = f.get_attr_string(p, "name");
    op.output = static_cast<int>(f.get_attr_int(p, "output"));
    op.inputs = to_int(f.read_ints<int32_t>(p + "/inputs"));
    for (int s : op.inputs)
      if (s < 0 || s >= g.num_slots) fail(p + ": input slot " + std::to_string(s) + " out of range");
    if (op.output < 0 || op.output >= g.num_slots) fail(p + ": output slot out of range");
    switch (op.kind) {
      case Int8OpKind::Quantize:
      case Int8OpKind::Dequantize:
      case Int8OpKind::AvgPool2d:
        op.grid = read_grid(f, p + "/grid");
        break;
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected: {
        LoweredLayer& l = op.layer;
        l.is_conv = op.kind == Int8OpKind::Conv2d;
        l.weight = f.read_ints<int8_t>(p + "/weight", &l.weight_shape);
        l.bias = f.read_ints<int32_t>(p + "/bias");
        const std::vector<int32_t> mult = f.read_ints<int32_t>(p + "/output_multiplier");
        const std::vector<int> shift = to_int(f.read_ints<int32_t>(p + "/output_shift"));
        l.input = read_grid(f, p + "/input_grid");
        l.weights = read_grid(f, p + "/weight_grid");
        l.output = read_grid(f, p + "/output_grid");
        if (l.weight_shape.empty() || static_cast<int64_t>(l.bias.size()) != l.weight_shape[0] ||
            mult.size() != l.bias.size() || shift.size() != l.bias.size())
          fail(p + ": weight, bias, multiplier and shift sizes disagree");
        const auto in_off = static_cast<int32_t>(f.get_attr_int(p, "input_offset"));
        const auto out_off = static_cast<int32_t>(f.get_attr_int(p, "output_offset"));
        const auto act_min = static_cast<int32_t>(f.get_attr_int(p, "quantized_activation_min"));
        const auto act_max = static_cast<int32_t>(f.get_attr_int(p, "quantized_activation_max"));
        if (l.is_conv) {
          l.conv = ConvInt8Params{f.get_attr_int(p, "stride_h"), f.get_attr_int(p, "stride_w"), f.get_attr_int(p, "pad_h"),
                                  f.get_attr_int(p, "pad_w"), f.get_attr_int(p, "groups"), in_off, out_off, act_min, act_max,
                                  mult, shift};
        } else {
          l.fc = FullyConnectedInt8Params{in_off, out_off, act_min, act_max, mult, shift};
        }
        break;
      }
      case Int8OpKind::Clamp:
        op.clamp_min = static_cast<int32_t>(f.get_attr_int(p, "clamp_min"));
        op.clamp_max = static_cast<int32_t>(f.get_attr_int(p, "clamp_max"));
        break;
      case Int8OpKind::Add: {
        op.grid = read_grid(f, p + "/grid");
        if (op.inputs.size() != 2) fail(p + ": add needs two inputs");
        const auto get = [&](const char* field) { return static_cast<int32_t>(f.get_attr_int(p, field)); };
        AddInt8Params& a = op.add;
        a.left_shift = get("left_shift");
        a.input1_offset = get("input1_offset"), a.input2_offset = get("input2_offset");
        a.output_offset = get("output_offset");
        a.input1_multiplier = get("input1_multiplier"), a.input1_shift = get("input1_shift");
        a.input2_multiplier = get("input2_multiplier"), a.input2_shift = get("input2_shift");
        a.output_multiplier = get("output_multiplier"), a.output_shift = get("output_shift");
        a.quantized_activation_min = get("quantized_activation_min");
        a.quantized_activation_max = get("quantized_activation_max");
        break;
      }
      default: break;
    }
    if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d) {
      op.kernel = f.get_attr_int(p, "kernel");
      op.stride = f.get_attr_int(p, "stride");
      op.pad = f.get_attr_int(p, "pad");
    }
    g.ops.push_back(std::move(op));
  }
  if (g.ops.empty() || g.ops.front().kind != Int8OpKind::Quantize || g.ops.back().kind != Int8OpKind::Dequantize)
    fail("an integer model must start with quantize and end with dequantize");
  g.prepare();
  return g;
}

}  // namespace qatlab
