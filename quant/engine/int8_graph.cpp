// int8_graph.cpp: running, printing, saving and loading the integer graph.
#include "quant/engine/int8_graph.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/format.h"
#include "core/h5io.h"
#include "quant/engine/packed_codes.h"

namespace qatlab {

namespace {

constexpr const char* kOpNames[] = {"quantize", "conv2d", "fully_connected", "max_pool2d", "avg_pool2d",
                                    "global_avg_pool", "flatten", "clamp", "add", "dequantize",
                                    "image_rows", "lstm", "last_step", "requantize"};

Shape with_batch(int64_t n, const Shape& chw) {
  Shape s{n};
  s.insert(s.end(), chw.begin(), chw.end());
  return s;
}

Shape without_batch(const Shape& s) { return Shape(s.begin() + 1, s.end()); }

// How many images a worker takes through the whole graph at a time (optimized paths): enough rows
// for the fully connected tiles (6 or 8), few enough that a group's activations and the kernels'
// scratch stay in the core's own cache (LeNet-5: ~100 KB for 16 images).
constexpr int64_t kGroupImages = 16;

// The shapes of one image (no batch) through the graph, checked op by op against each op's settings.
struct GraphShapes {
  std::vector<Shape> in, out;         // (ops) the first input's and the output's shape of each op
  std::vector<int64_t> slot_bytes;    // (slots) the largest output written to each slot, in bytes
};

GraphShapes graph_shapes(const Int8Graph& g) {
  QATLAB_CHECK(g.num_slots >= 1, "integer graph: num_slots " + std::to_string(g.num_slots) + " must be >= 1");
  GraphShapes gs;
  std::vector<Shape> slot(g.num_slots);
  slot[0] = g.input_shape;
  gs.slot_bytes.assign(g.num_slots, 0);
  for (const Int8Op& op : g.ops) {
    for (int s : op.inputs)
      QATLAB_CHECK(s >= 0 && s < g.num_slots, "integer graph: op '" + op.name + "' reads slot " + std::to_string(s) +
                                                  " of " + std::to_string(g.num_slots));
    QATLAB_CHECK(op.output >= 0 && op.output < g.num_slots,
                 "integer graph: op '" + op.name + "' writes slot " + std::to_string(op.output) + " of " +
                     std::to_string(g.num_slots));
    QATLAB_CHECK(op.kind == Int8OpKind::Quantize || !op.inputs.empty(),
                 "integer graph: op '" + op.name + "' (" + int8_op_name(op.kind) + ") reads no slot");
    const Shape in = op.inputs.empty() ? g.input_shape : slot[op.inputs[0]];
    Shape out = in;
    switch (op.kind) {
      case Int8OpKind::Conv2d:
        out = without_batch(conv2d_int8_output_shape(op.layer.conv, with_batch(1, in), op.layer.weight_shape));
        break;
      case Int8OpKind::FullyConnected:
        out = without_batch(fully_connected_int8_output_shape(op.layer.fc, with_batch(1, in), op.layer.weight_shape));
        break;
      case Int8OpKind::MaxPool2d:
      case Int8OpKind::AvgPool2d:
        out = without_batch(pool2d_int8_output_shape(with_batch(1, in), op.kernel, op.stride, op.pad));
        break;
      case Int8OpKind::GlobalAvgPool:
        QATLAB_CHECK(in.size() == 3, "integer graph: global_avg_pool input must be (N, C, H, W), got " +
                                         shape_str(with_batch(1, in)));
        out = {in[0]};
        break;
      case Int8OpKind::Flatten: out = {shape_numel(in)}; break;
      case Int8OpKind::ImageRows:
        QATLAB_CHECK(in.size() == 3, "integer graph: image_rows input must be (N, C, H, W), got " +
                                         shape_str(with_batch(1, in)));
        out = {in[1], in[0] * in[2]};
        break;
      case Int8OpKind::Lstm:
        out = without_batch(lstm_int8_output_shape(op.lstm, with_batch(1, in)));
        break;
      case Int8OpKind::LastStep:
        QATLAB_CHECK(in.size() == 2 && in[0] >= 1, "integer graph: last_step input must be (N, T, H) with T >= 1, got " +
                                                       shape_str(with_batch(1, in)));
        out = {in[1]};
        break;
      case Int8OpKind::Add:
        QATLAB_CHECK(op.inputs.size() == 2 && slot[op.inputs[1]] == in,
                     "integer graph: add of " + shape_str(with_batch(1, in)) + " and " +
                         (op.inputs.size() == 2 ? shape_str(with_batch(1, slot[op.inputs[1]])) : "nothing"));
        break;
      default: break;  // quantize, clamp, dequantize, requantize keep the shape
    }
    gs.in.push_back(in);
    gs.out.push_back(out);
    gs.slot_bytes[op.output] = std::max(gs.slot_bytes[op.output], shape_numel(out));
    slot[op.output] = std::move(out);
  }
  return gs;
}

}  // namespace

std::vector<std::pair<Shape, Shape>> Int8Graph::op_shapes() const {
  const GraphShapes gs = graph_shapes(*this);
  std::vector<std::pair<Shape, Shape>> shapes;
  for (size_t i = 0; i < gs.in.size(); ++i) shapes.emplace_back(gs.in[i], gs.out[i]);
  return shapes;
}

int64_t Int8Graph::output_width() const {
  const Shape out = op_shapes().back().second;
  return shape_numel(out);
}

double Int8Graph::multiply_adds_per_image() const {
  double macs = 0;
  const std::vector<std::pair<Shape, Shape>> shapes = op_shapes();
  for (size_t i = 0; i < ops.size(); ++i) {
    const Int8Op& op = ops[i];
    const Shape& in = shapes[i].first;
    const Shape& out = shapes[i].second;
    const Shape& w = op.layer.weight_shape;
    if (op.kind == Int8OpKind::Conv2d) {
      macs += static_cast<double>(out[0]) * out[1] * out[2] * w[1] * w[2] * w[3];
    } else if (op.kind == Int8OpKind::FullyConnected) {
      macs += static_cast<double>(w[0]) * w[1];
    } else if (op.kind == Int8OpKind::Lstm) {
      // Per step: 4H gate rows against the input (IN) and the previous hidden state (H).
      const int64_t steps = in[0], input = op.lstm.input_size, h = op.lstm.hidden_size;
      macs += static_cast<double>(steps) * 4 * h * (input + h);
    }
  }
  return macs;
}

namespace {

// Whether op i is a conv whose output only feeds op i + 1, a 2x2 max pool of stride 2 without
// padding: the packed conv can then compute both (PackedConvInt8's fuse_max_pool).
bool pool_fuses_into_conv(const Int8Graph& g, size_t i) {
  if (i + 1 >= g.ops.size()) return false;
  const Int8Op &conv = g.ops[i], &pool = g.ops[i + 1];
  if (conv.kind != Int8OpKind::Conv2d || pool.kind != Int8OpKind::MaxPool2d || pool.kernel != 2 || pool.stride != 2 ||
      pool.pad != 0 || pool.inputs.size() != 1 || pool.inputs[0] != conv.output || pool.output == conv.output ||
      g.ops.back().output == conv.output)
    return false;
  for (size_t j = 0; j < g.ops.size(); ++j)
    if (j != i + 1 && std::find(g.ops[j].inputs.begin(), g.ops[j].inputs.end(), conv.output) != g.ops[j].inputs.end())
      return false;
  return true;
}

// A group's input: floats x or raw pixels px (count, C, H, W); one of them is null.
struct GroupInput {
  const float* x = nullptr;
  const uint8_t* px = nullptr;
};

// Runs every op on a group of `count` images whose input is `input`. slots[s]
// holds the group's codes of slot s (count, ...), contiguous. The kernels run on the calling thread
// (the reference kernels may thread themselves); scratch: the packed kernels' (optimized paths).
void run_group(const Int8Graph& g, const GraphShapes& gs, GroupInput input, int64_t count, int8_t* const* slots,
               KernelPath path, uint8_t* scratch) {
  const bool reference = path == KernelPath::Reference;
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Int8Op& op = g.ops[i];
    int8_t* out = slots[op.output];
    const int8_t* in = op.inputs.empty() ? nullptr : slots[op.inputs[0]];
    const Shape in_shape = with_batch(count, gs.in[i]);
    const int64_t out_numel = count * shape_numel(gs.out[i]);
    switch (op.kind) {
      case Int8OpKind::Quantize:
        if (input.px) {
          // One table lookup per pixel: the codes the simulation computes from this byte (int8_graph.h).
          const int64_t C = gs.out[i][0], hw = shape_numel(gs.out[i]) / C;
          for (int64_t n = 0; n < count; ++n)
            for (int64_t c = 0; c < C; ++c) {
              const int8_t* table = op.pixel_codes.data() + c * 256;
              const uint8_t* src = input.px + (n * C + c) * hw;
              int8_t* dst = out + (n * C + c) * hw;
              for (int64_t k = 0; k < hw; ++k) dst[k] = table[src[k]];
            }
        } else {
          quantize_float_to_int8(input.x, out, out_numel, op.grid.scale[0], op.grid.zero_point[0], op.grid.quant_min,
                                 op.grid.quant_max);
        }
        break;
      case Int8OpKind::Conv2d: {
        // Packed weights that do not fit the graph (changed since prepare()) fall back to the reference.
        const bool packed = !reference && op.packed_conv && op.packed_conv->input_shape_chw() == gs.in[i];
        if (packed && op.packed_conv->fused_max_pool() && pool_fuses_into_conv(g, i)) {
          op.packed_conv->run_serial(in, count, slots[g.ops[i + 1].output], path, scratch);
          ++i;  // the pool is done
        } else if (packed && !op.packed_conv->fused_max_pool()) {
          op.packed_conv->run_serial(in, count, out, path, scratch);
        } else {
          run_lowered_reference(op.layer, in, in_shape, out);
        }
        break;
      }
      case Int8OpKind::FullyConnected:
        if (!reference && op.packed_fc)
          op.packed_fc->run_serial(in, count, out, path, scratch);
        else
          run_lowered_reference(op.layer, in, in_shape, out);
        break;
      case Int8OpKind::MaxPool2d:
        if (reference)
          max_pool2d_int8_reference(in, in_shape, op.kernel, op.stride, op.pad, out);
        else
          max_pool2d_int8(in, in_shape, op.kernel, op.stride, op.pad, out);
        break;
      case Int8OpKind::AvgPool2d:
        avg_pool2d_int8(in, in_shape, op.kernel, op.stride, op.pad, op.grid.zero_point[0], out);
        break;
      case Int8OpKind::GlobalAvgPool: global_avg_pool_int8(in, in_shape, out); break;
      case Int8OpKind::Clamp:
        for (int64_t k = 0; k < out_numel; ++k)
          out[k] = static_cast<int8_t>(std::clamp<int32_t>(in[k], op.clamp_min, op.clamp_max));
        break;
      case Int8OpKind::Add:
        add_int8(op.add, in, slots[op.inputs[1]], out, out_numel, path);
        break;
      case Int8OpKind::Requantize: requantize_int8(op.requant, in, out, out_numel); break;
      case Int8OpKind::ImageRows: {
        // (count, C, H, W) -> (count, H, C*W): row h of step h holds row h of channel 0, then of channel 1, ...
        const int64_t C = gs.in[i][0], H = gs.in[i][1], W = gs.in[i][2];
        for (int64_t n = 0; n < count; ++n)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t h = 0; h < H; ++h)
              std::memcpy(out + (n * H + h) * C * W + c * W, in + ((n * C + c) * H + h) * W, W);
        break;
      }
      case Int8OpKind::Lstm:
        if (!reference && op.packed_lstm)
          op.packed_lstm->run_serial(in, count, gs.in[i][0], out, path, scratch);
        else
          lstm_int8_reference(op.lstm, in, in_shape, out);
        break;
      case Int8OpKind::LastStep: {
        const int64_t T = gs.in[i][0], H = gs.in[i][1];
        for (int64_t n = 0; n < count; ++n) std::memcpy(out + n * H, in + (n * T + T - 1) * H, H);
        break;
      }
      case Int8OpKind::Flatten:
      case Int8OpKind::Dequantize:  // the codes leave the graph as they are; run() dequantizes them
        if (out != in) std::memcpy(out, in, out_numel);
        break;
    }
  }
}

}  // namespace

const char* int8_op_name(Int8OpKind kind) { return kOpNames[static_cast<int>(kind)]; }

Int8OpKind parse_int8_op(const std::string& name) {
  for (size_t i = 0; i < std::size(kOpNames); ++i)
    if (name == kOpNames[i]) return static_cast<Int8OpKind>(i);
  throw std::invalid_argument("unknown integer op '" + name + "'");
}

void Int8Graph::prepare() {
  // Shapes flow from the input: each op's per-image input shape sizes its packed kernel.
  const GraphShapes gs = graph_shapes(*this);
  for (size_t i = 0; i < ops.size(); ++i) {
    Int8Op& op = ops[i];
    // 2-4-bit weights are kept packed from here on (the int8 copy is released), and the kernels run
    // them packed.
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) pack_weights(op.layer);
    const LoweredLayer& l = op.layer;
    if (op.kind == Int8OpKind::Conv2d)
      op.packed_conv = std::make_shared<PackedConvInt8>(l.conv, l.weight_data(), l.weight_bits, l.weight_shape,
                                                        l.bias.data(), gs.in[i], pool_fuses_into_conv(*this, i));
    if (op.kind == Int8OpKind::FullyConnected)
      op.packed_fc = std::make_shared<PackedFullyConnectedInt8>(l.fc, l.weight_data(), l.weight_bits, l.weight_shape,
                                                                l.bias.data());
    if (op.kind == Int8OpKind::Lstm) op.packed_lstm = std::make_shared<PackedLstmInt8>(op.lstm);
  }
}

const QParams& Int8Graph::output_grid() const {
  QATLAB_CHECK(!ops.empty() && ops.back().kind == Int8OpKind::Dequantize, "integer graph must end with dequantize");
  return ops.back().grid;
}

std::vector<int8_t> Int8Graph::run_codes(const Tensor& input, Shape* out_shape, KernelPath path) const {
  QATLAB_CHECK(input.dim() == 4 && without_batch(input.shape()) == input_shape,
               "integer graph: input must be (N, " + shape_str(input_shape).substr(1) + ", got " +
                   shape_str(input.shape()));
  // A NaN input fails here, naming its place in the whole batch, rather than inside a worker.
  const int64_t nan_at = find_first_nan(input.data(), input.numel());
  QATLAB_CHECK(nan_at < 0, "integer graph: input element " + std::to_string(nan_at) + " is NaN");
  return run_input(input.data(), nullptr, input.size(0), out_shape, path);
}

bool Int8Graph::has_pixel_table() const {
  return !ops.empty() && ops.front().kind == Int8OpKind::Quantize && !ops.front().pixel_codes.empty();
}

std::vector<int8_t> Int8Graph::run_pixel_codes(const uint8_t* pixels, int64_t n, Shape* out_shape,
                                               KernelPath path) const {
  QATLAB_CHECK(has_pixel_table(), "integer graph: no pixel table to read raw pixels with (convert the QAT "
                                  "checkpoint again, or give normalised floats)");
  QATLAB_CHECK(n >= 0 && (pixels || n == 0), "integer graph: " + std::to_string(n) + " images of raw pixels");
  const int64_t C = input_shape.at(0);
  QATLAB_CHECK(static_cast<int64_t>(ops.front().pixel_codes.size()) == C * 256,
               "integer graph: pixel table of " + std::to_string(ops.front().pixel_codes.size()) + " codes for " +
                   std::to_string(C) + " channels, expected (C, 256)");
  return run_input(nullptr, pixels, n, out_shape, path);
}

Tensor Int8Graph::run_pixels(const uint8_t* pixels, int64_t n, KernelPath path) const {
  Shape shape;
  const std::vector<int8_t> codes = run_pixel_codes(pixels, n, &shape, path);
  return dequantize_codes(codes, shape, output_grid());
}

std::vector<int8_t> Int8Graph::run_input(const float* x, const uint8_t* px, int64_t n, Shape* out_shape,
                                         KernelPath path) const {
  QATLAB_CHECK(!ops.empty(), "integer graph: no ops to run");
  const GraphShapes gs = graph_shapes(*this);
  const int64_t in_numel = shape_numel(input_shape), out_numel = shape_numel(gs.out.back());

  // The optimized paths take groups of images through the whole graph, one group per worker at a
  // time: the layers of a small network are too small to share between threads one by one (each
  // op's parallel region would cost more than it saves, and the ops between them would run alone).
  // The reference path runs the whole batch as one group, its kernels threading themselves.
  const int max_threads = path == KernelPath::Reference ? 1 : std::max(omp_get_max_threads(), 1);
  const int64_t group = path == KernelPath::Reference
                            ? std::max<int64_t>(n, 1)
                            : std::clamp<int64_t>((n + max_threads - 1) / max_threads, 1, kGroupImages);
  const int64_t groups = (n + group - 1) / group;
  const int threads = static_cast<int>(std::clamp<int64_t>(groups, 1, max_threads));

  // Each worker's memory: the group's codes of every slot, then the packed kernels' scratch (its
  // contents do not matter: see run_serial), allocated once here, not per group.
  std::vector<int64_t> slot_offset(num_slots + 1, 0);
  for (int s = 0; s < num_slots; ++s) slot_offset[s + 1] = slot_offset[s] + (group * gs.slot_bytes[s] + 63) / 64 * 64;
  int64_t scratch_bytes = 0;
  for (const Int8Op& op : ops) {
    if (op.packed_conv) scratch_bytes = std::max(scratch_bytes, op.packed_conv->scratch_bytes());
    if (op.packed_fc) scratch_bytes = std::max(scratch_bytes, op.packed_fc->scratch_bytes());
    if (op.packed_lstm) scratch_bytes = std::max(scratch_bytes, op.packed_lstm->scratch_bytes());
  }
  const int64_t per_worker = slot_offset[num_slots] + scratch_bytes;
  const std::unique_ptr<int8_t[]> memory(new int8_t[threads * per_worker + 1]);

  std::vector<int8_t> codes(n * out_numel);  // (N, ...) the last op's output
  const int last = ops.back().output;
  std::exception_ptr error;  // the failure of the first failing group
  int64_t error_group = groups;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int8_t* mine = memory.get() + omp_get_thread_num() * per_worker;
    std::vector<int8_t*> slots(num_slots);
    for (int s = 0; s < num_slots; ++s) slots[s] = mine + slot_offset[s];
    uint8_t* scratch = reinterpret_cast<uint8_t*>(mine + slot_offset[num_slots]);
#pragma omp for schedule(dynamic, 1)
    for (int64_t gi = 0; gi < groups; ++gi) {
      const int64_t first = gi * group, count = std::min(group, n - first);
      try {
        const GroupInput in{x ? x + first * in_numel : nullptr, px ? px + first * in_numel : nullptr};
        run_group(*this, gs, in, count, slots.data(), path, scratch);
        std::memcpy(codes.data() + first * out_numel, slots[last], count * out_numel);
      } catch (...) {
#pragma omp critical(qatlab_int8_graph_error)
        {
          if (gi < error_group) {
            error = std::current_exception();
            error_group = gi;
          }
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (out_shape) *out_shape = with_batch(n, gs.out.back());
  return codes;
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
      bytes += op.layer.weight_bytes() + 4 * op.layer.bias.size() + 8 * op.layer.bias.size();  // + multiplier, shift
    else if (op.kind == Int8OpKind::Lstm)  // weights, bias, two multipliers and shifts per gate row, the rest
      bytes += op.lstm.weight_ih.size() + op.lstm.weight_hh.size() + 4 * op.lstm.bias.size() +
               16 * op.lstm.bias.size() + 16;
  return bytes;
}

std::string Int8Graph::summary() const {
  std::ostringstream os;
  os << "integer graph: input " << shape_str(input_shape) << ", " << ops.size() << " ops, "
     << parameter_bytes() << " bytes of integer parameters"
     << (dataset.empty() ? "" : ", trained on " + dataset) << "\n";
  for (size_t i = 0; i < ops.size(); ++i) {
    const Int8Op& op = ops[i];
    os << "  " << i << ": " << int8_op_name(op.kind);
    if (!op.name.empty()) os << " [" << op.name << "]";
    if (op.kind == Int8OpKind::Quantize || op.kind == Int8OpKind::Dequantize)
      os << " scale " << op.grid.scale[0] << " zero_point " << op.grid.zero_point[0];
    if (op.kind == Int8OpKind::Quantize && !op.pixel_codes.empty()) {
      os << ", from raw pixels by a table (C, 256):";
      for (size_t c = 0; c < op.pixel_codes.size() / 256; ++c) {
        os << (c ? ";" : "") << " channel " << c << " pixel 0 -> " << int{op.pixel_codes[c * 256]} << ", 255 -> "
           << int{op.pixel_codes[c * 256 + 255]};
      }
    }
    if (op.kind == Int8OpKind::Conv2d || op.kind == Int8OpKind::FullyConnected) {
      const auto& l = op.layer;
      const auto& mult = l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier;
      const auto& shift = l.is_conv ? l.conv.output_shift : l.fc.output_shift;
      os << " weights " << shape_str(l.weight_shape) << (l.weights.odd_codes ? " odd" : "") << " codes ["
         << l.weights.quant_min << ", " << l.weights.quant_max
         << "]" << (l.weight_bits < 8 ? " packed " + std::to_string(l.weight_bits) + "-bit" : "") << ", in zp "
         << l.input.zero_point[0] << ", out scale " << l.output.scale[0] << " zp " << l.output.zero_point[0]
         << ", multiplier[0] " << mult[0] << " shift[0] " << shift[0] << ", clamp ["
         << (l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min) << ", "
         << (l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max) << "]";
    }
    if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d)
      os << " k " << op.kernel << " stride " << op.stride << " pad " << op.pad;
    if (op.kind == Int8OpKind::Lstm) {
      const LstmInt8Params& p = op.lstm;
      os << " in " << p.input_size << " hidden " << p.hidden_size << ", weight codes [" << p.weights_ih.quant_min << ", "
         << p.weights_ih.quant_max << "], in zp " << -p.input_offset << ", hidden scale " << p.hidden.scale[0] << " zp "
         << p.output_offset << ", gates Q3.12, cell 2^-" << p.cell_frac_bits << ", input multiplier[0] "
         << p.input_multiplier[0] << " shift[0] " << p.input_shift[0] << ", recurrent multiplier[0] "
         << p.recurrent_multiplier[0] << " shift[0] " << p.recurrent_shift[0] << ", hidden multiplier "
         << p.hidden_multiplier << " shift " << p.hidden_shift;
    }
    os << "\n";
  }
  return os.str();
}

// -------------------------------------------------------------------------------------------- files
//
// Layout version 2 (written): one group per op; the weights are its only datasets, every other value is
// an attribute of the group. Version 1 (still read) gave each small array its own dataset and each grid
// its own group, at ~100 bytes of HDF5 structure per object or more: ~40 KB in a LeNet-5 file, more
// than its 4-bit parameters (version 2: ~11 KB). quant/README.md section 7 describes both.

namespace {

// Where a grid lives: v1 in a group of the op (scale, zero_point datasets, attrs axis, quant_min,
// quant_max); v2 in attributes of the op named with a prefix ("input.scale", ...; none for an op's
// only grid).
struct GridName {
  const char* v1_group;
  const char* v2_prefix;
};
constexpr GridName kOpGrid{"grid", ""};
constexpr GridName kInputGrid{"input_grid", "input."};
constexpr GridName kWeightGrid{"weight_grid", "weight."};
constexpr GridName kOutputGrid{"output_grid", "output."};
constexpr GridName kLstmInputGrid{"input_grid", "input."};
constexpr GridName kLstmWeightIhGrid{"weight_ih_grid", "weight_ih."};
constexpr GridName kLstmWeightHhGrid{"weight_hh_grid", "weight_hh."};
constexpr GridName kLstmHiddenGrid{"hidden_grid", "hidden."};

std::vector<int32_t> to_int32(const std::vector<int>& v) { return std::vector<int32_t>(v.begin(), v.end()); }
std::vector<int> to_int(const std::vector<int32_t>& v) { return std::vector<int>(v.begin(), v.end()); }

// Writes one op (version 2 layout).
class OpWriter {
 public:
  OpWriter(H5File& f, std::string group) : f_(f), g_(std::move(group)) {}

  void ints(const char* field, const std::vector<int32_t>& v) {
    f_.set_attr_ints<int32_t>(g_, field, {static_cast<int64_t>(v.size())}, v);
  }
  // Every integer setting of an op fits int32 (the integer graph computes in int32): stored as such,
  // 4 bytes less than int64 per attribute.
  void scalar(const std::string& field, int64_t v) {
    if (v < INT32_MIN || v > INT32_MAX)
      throw std::runtime_error(f_.path() + ": " + g_ + ": attribute '" + field + "' = " + std::to_string(v) +
                               " does not fit int32");
    f_.set_attr_ints<int32_t>(g_, field, {}, {static_cast<int32_t>(v)});
  }
  void text(const char* field, const std::string& v) { f_.set_attr_fixed(g_, field, v); }
  // A per-tensor grid's scale and zero point are scalars, a per-channel grid's arrays (C).
  void grid(const GridName& name, const QParams& qp) {
    const std::string pre = name.v2_prefix;
    const Shape shape = qp.per_channel() ? Shape{static_cast<int64_t>(qp.scale.size())} : Shape{};
    f_.set_attr_floats(g_, pre + "scale", shape, qp.scale);
    f_.set_attr_ints<int32_t>(g_, pre + "zero_point", shape, qp.zero_point);
    scalar(pre + "axis", qp.axis);
    scalar(pre + "quant_min", qp.quant_min);
    scalar(pre + "quant_max", qp.quant_max);
    if (qp.odd_codes) scalar(pre + "odd_codes", 1);  // a mid-rise weight grid; absent: 0
  }
  H5File& file() { return f_; }
  const std::string& group() const { return g_; }

 private:
  H5File& f_;
  std::string g_;
};

// Reads one op of either layout version; errors name the file and the op ("m.h5: ops/003: ...").
class OpReader {
 public:
  OpReader(const H5File& f, std::string group, int64_t version) : f_(f), g_(std::move(group)), v1_(version < 2) {}

  // A small int32 array: v1 a dataset of the op, v2 an attribute.
  std::vector<int32_t> ints(const char* field) const {
    return v1_ ? f_.read_ints<int32_t>(g_ + "/" + field) : f_.get_attr_ints<int32_t>(g_, field);
  }
  int64_t scalar(const std::string& field) const { return f_.get_attr_int(g_, field); }
  int32_t scalar32(const std::string& field) const {
    const int64_t v = scalar(field);
    if (v < INT32_MIN || v > INT32_MAX) fail("attribute '" + field + "' = " + std::to_string(v) + " does not fit int32");
    return static_cast<int32_t>(v);
  }
  std::string text(const char* field) const { return f_.get_attr_string(g_, field); }
  QParams grid(const GridName& name) const {
    QParams qp;
    if (v1_) {
      const std::string p = g_ + "/" + name.v1_group;
      qp.scale = f_.read_floats(p + "/scale");
      qp.zero_point = f_.read_ints<int32_t>(p + "/zero_point");
      qp.axis = static_cast<int>(f_.get_attr_int(p, "axis"));
      qp.quant_min = static_cast<int32_t>(f_.get_attr_int(p, "quant_min"));
      qp.quant_max = static_cast<int32_t>(f_.get_attr_int(p, "quant_max"));
    } else {
      const std::string pre = name.v2_prefix;
      qp.scale = f_.get_attr_floats(g_, pre + "scale");
      qp.zero_point = f_.get_attr_ints<int32_t>(g_, pre + "zero_point");
      qp.axis = static_cast<int>(scalar(pre + "axis"));
      qp.quant_min = scalar32(pre + "quant_min");
      qp.quant_max = scalar32(pre + "quant_max");
      if (f_.has_attr(g_, pre + "odd_codes")) {
        const int64_t odd = scalar(pre + "odd_codes");
        if (odd != 0 && odd != 1) fail(pre + "odd_codes must be 0 or 1, got " + std::to_string(odd));
        qp.odd_codes = odd == 1;
      }
    }
    try {
      qp.validate();
    } catch (const std::invalid_argument& e) {
      fail(std::string(name.v1_group) + ": " + e.what());
    }
    return qp;
  }
  bool v1() const { return v1_; }
  const H5File& file() const { return f_; }
  const std::string& group() const { return g_; }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(f_.path() + ": " + g_ + ": " + what);
  }

 private:
  const H5File& f_;
  std::string g_;
  bool v1_;
};

// Weights of 2 to 4 bits are stored packed (packed_codes.h): the codes of a symmetric narrow grid
// with quant_max <= 7 take 4 bits (two's complement, two per byte, low nibble first), with
// quant_max <= 1 two bits (four per byte). Dataset "weight_packed" (uint8) with attrs "weight_bits"
// and "weight_shape" (v1: a dataset); 8-bit weights stay an int8 dataset "weight". Loading keeps them
// packed.
//
// A mid-rise grid's odd codes q are stored halved, (q - 1) / 2, with attr "weight_halved" = 1: the codes
// {-3, -1, 1, 3} of 2 bits become [-2, 1] and take 2 bits, the odd codes of [-15, 15] (4 bits) [-8, 7] and
// 4 bits. Loading doubles them back (2 c + 1) and packs them as any other codes.
void write_weights(OpWriter& w, const LoweredLayer& l) {
  LoweredLayer packed;  // a layer not prepared yet holds int8 codes: packed here for the file
  const LoweredLayer* src = &l;
  const bool halved = l.weights.odd_codes;
  if (halved || (l.weight_bits == 8 && storage_bits(l.weights.quant_min, l.weights.quant_max) < 8)) {
    packed.weights = l.weights, packed.weight_shape = l.weight_shape, packed.weight = l.weight_codes();
    if (halved) {
      for (int8_t& q : packed.weight) q = static_cast<int8_t>((q - 1) / 2);  // q odd: exact
      packed.weights.quant_min = (l.weights.quant_min - 1) / 2;
      packed.weights.quant_max = (l.weights.quant_max - 1) / 2;
    }
    pack_weights(packed);
    src = &packed;
  }
  H5File& f = w.file();
  const std::string& g = w.group();
  if (halved) w.scalar("weight_halved", 1);
  if (src->weight_bits == 8) {
    f.write_ints<int8_t>(g + "/weight", src->weight_shape, src->weight);
    return;
  }
  f.write_ints<uint8_t>(g + "/weight_packed", {static_cast<int64_t>(src->weight_packed.size())}, src->weight_packed);
  f.set_attr_ints<int64_t>(g, "weight_shape", {static_cast<int64_t>(src->weight_shape.size())}, src->weight_shape);
  w.scalar("weight_bits", src->weight_bits);
}

// Returns whether the codes were stored halved (write_weights); they are doubled back here.
bool read_weights(const OpReader& r, LoweredLayer& l) {
  const H5File& f = r.file();
  const std::string& p = r.group();
  if (f.exists(p + "/weight")) {
    l.weight = f.read_ints<int8_t>(p + "/weight", &l.weight_shape);
  } else {
    const int64_t bits = r.scalar("weight_bits");
    if (bits != 2 && bits != 4) r.fail("weight_bits must be 2 or 4, got " + std::to_string(bits));
    l.weight_shape = r.v1() ? f.read_ints<int64_t>(p + "/weight_shape") : f.get_attr_ints<int64_t>(p, "weight_shape");
    int64_t n = 1;
    for (int64_t d : l.weight_shape) {
      if (d < 1 || d > 65536) r.fail("weight_shape " + shape_str(l.weight_shape) + ": dimensions must be in 1..65536");
      n *= d;
      if (n > (int64_t{1} << 28)) r.fail("weight_shape " + shape_str(l.weight_shape) + " holds more than 2^28 codes");
    }
    l.weight_packed = f.read_ints<uint8_t>(p + "/weight_packed");
    l.weight_bits = static_cast<int>(bits);
    if (static_cast<int64_t>(l.weight_packed.size()) != packed_bytes(n, l.weight_bits))
      r.fail("packed weights hold " + std::to_string(l.weight_packed.size()) + " bytes for " + std::to_string(n) +
             " codes of " + std::to_string(bits) + " bits");
  }
  if (!f.has_attr(p, "weight_halved")) return false;
  const int64_t halved = r.scalar("weight_halved");
  if (halved != 1) r.fail("weight_halved must be 1 where present, got " + std::to_string(halved));
  std::vector<int8_t> codes = l.weight_codes();
  for (int8_t& c : codes) {
    if (c < -64 || c > 63) r.fail("halved weight code " + std::to_string(c) + " outside [-64, 63]");
    c = static_cast<int8_t>(2 * c + 1);
  }
  l.weight = std::move(codes);
  l.weight_packed.clear();
  l.weight_bits = 8;
  return true;
}

// The fields of AddInt8Params, stored as attributes of an add op, in this order.
constexpr const char* kAddFields[] = {"left_shift", "input1_offset", "input2_offset", "output_offset",
                                      "input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                                      "output_multiplier", "output_shift", "quantized_activation_min",
                                      "quantized_activation_max"};

// The fields of RequantizeInt8Params, stored as attributes of a requantize op, in this order.
constexpr const char* kRequantizeFields[] = {"input_offset", "output_offset", "multiplier", "shift",
                                             "quantized_activation_min", "quantized_activation_max"};

// LSTM weights whose codes all fit 2 or 4 bits are stored packed as conv / fc weights are (packed_codes.h):
// dataset "<name>_packed" (uint8) and attr "<name>_bits"; others an int8 dataset "<name>" (4H, K). The width
// is the narrowest holding every code (storage_bits of their range), so packing never changes a code; the
// shape comes from input_size / hidden_size. Loading unpacks them to int8 (the LSTM kernels run int8), and
// files with int8 datasets (written before packing existed) load as they did.
void write_lstm_weights(OpWriter& w, const std::string& name, const std::vector<int8_t>& codes, int64_t G, int64_t K) {
  const auto [lo, hi] = std::minmax_element(codes.begin(), codes.end());
  const int bits = codes.empty() ? 8 : storage_bits(*lo, *hi);
  if (bits == 8) {
    w.file().write_ints<int8_t>(w.group() + "/" + name, {G, K}, codes);
    return;
  }
  const std::vector<uint8_t> packed = pack_codes(codes.data(), static_cast<int64_t>(codes.size()), bits);
  w.file().write_ints<uint8_t>(w.group() + "/" + name + "_packed", {static_cast<int64_t>(packed.size())}, packed);
  w.scalar(name + "_bits", bits);
}

std::vector<int8_t> read_lstm_weights(const OpReader& r, const std::string& name, int64_t G, int64_t K) {
  const H5File& f = r.file();
  const std::string base = r.group() + "/" + name;
  if (f.exists(base)) return f.read_ints<int8_t>(base);
  const int64_t bits = r.scalar(name + "_bits");
  if (bits != 2 && bits != 4) r.fail(name + "_bits must be 2 or 4, got " + std::to_string(bits));
  if (G < 4 || G > 4 * 65536 || K < 1 || K > 65536)
    r.fail(name + ": packed weights of shape (" + std::to_string(G) + ", " + std::to_string(K) +
           "), expected 4 <= 4H <= 262144 and 1 <= K <= 65536");
  const std::vector<uint8_t> packed = f.read_ints<uint8_t>(base + "_packed");
  if (static_cast<int64_t>(packed.size()) != packed_bytes(G * K, static_cast<int>(bits)))
    r.fail(name + "_packed holds " + std::to_string(packed.size()) + " bytes for " + std::to_string(G * K) +
           " codes of " + std::to_string(bits) + " bits, expected " +
           std::to_string(packed_bytes(G * K, static_cast<int>(bits))));
  std::vector<int8_t> codes(G * K);  // (4H, K)
  unpack_codes(packed.data(), G * K, static_cast<int>(bits), codes.data());
  return codes;
}

// An lstm op: datasets weight_ih (int8, (4H, IN)), weight_hh (int8, (4H, H)), or their packed forms (above);
// int32 arrays (4H) bias,
// input_multiplier, input_shift, recurrent_multiplier, recurrent_shift; grids input, weight_ih,
// weight_hh, hidden; the scalars below.
constexpr const char* kLstmFields[] = {"input_size", "hidden_size", "input_offset", "hidden_offset", "output_offset",
                                       "quantized_activation_min", "quantized_activation_max", "cell_frac_bits",
                                       "hidden_multiplier", "hidden_shift"};

void write_lstm(OpWriter& w, const LstmInt8Params& p) {
  const int64_t G = 4 * p.hidden_size;
  write_lstm_weights(w, "weight_ih", p.weight_ih, G, p.input_size);
  write_lstm_weights(w, "weight_hh", p.weight_hh, G, p.hidden_size);
  w.ints("bias", p.bias);
  w.ints("input_multiplier", p.input_multiplier);
  w.ints("input_shift", to_int32(p.input_shift));
  w.ints("recurrent_multiplier", p.recurrent_multiplier);
  w.ints("recurrent_shift", to_int32(p.recurrent_shift));
  w.grid(kLstmInputGrid, p.input);
  w.grid(kLstmWeightIhGrid, p.weights_ih);
  w.grid(kLstmWeightHhGrid, p.weights_hh);
  w.grid(kLstmHiddenGrid, p.hidden);
  const std::vector<int64_t> values{p.input_size, p.hidden_size, p.input_offset, p.hidden_offset, p.output_offset,
                                    p.quantized_activation_min, p.quantized_activation_max, p.cell_frac_bits,
                                    p.hidden_multiplier, p.hidden_shift};
  for (size_t k = 0; k < values.size(); ++k) w.scalar(kLstmFields[k], values[k]);
}

LstmInt8Params read_lstm(const OpReader& r) {
  LstmInt8Params l;
  l.input_size = r.scalar("input_size"), l.hidden_size = r.scalar("hidden_size");
  l.input_offset = r.scalar32("input_offset");
  l.hidden_offset = r.scalar32("hidden_offset");
  l.output_offset = r.scalar32("output_offset");
  l.quantized_activation_min = r.scalar32("quantized_activation_min");
  l.quantized_activation_max = r.scalar32("quantized_activation_max");
  l.cell_frac_bits = static_cast<int>(r.scalar("cell_frac_bits"));
  l.hidden_multiplier = r.scalar32("hidden_multiplier");
  l.hidden_shift = static_cast<int>(r.scalar("hidden_shift"));
  l.weight_ih = read_lstm_weights(r, "weight_ih", 4 * l.hidden_size, l.input_size);
  l.weight_hh = read_lstm_weights(r, "weight_hh", 4 * l.hidden_size, l.hidden_size);
  l.bias = r.ints("bias");
  l.input_multiplier = r.ints("input_multiplier");
  l.input_shift = to_int(r.ints("input_shift"));
  l.recurrent_multiplier = r.ints("recurrent_multiplier");
  l.recurrent_shift = to_int(r.ints("recurrent_shift"));
  l.input = r.grid(kLstmInputGrid);
  l.weights_ih = r.grid(kLstmWeightIhGrid);
  l.weights_hh = r.grid(kLstmWeightHhGrid);
  l.hidden = r.grid(kLstmHiddenGrid);
  try {
    l.validate();
  } catch (const std::invalid_argument& e) {
    r.fail(e.what());
  }
  return l;
}

// The Quantize op's pixel table (version 3): dataset "pixel_codes", int8 (C, 256), and the normalisation
// it was made from as float attributes "pixel_mean", "pixel_std" (C). A graph without a table writes none.
void write_pixel_table(OpWriter& w, const Int8Op& op) {
  if (op.pixel_codes.empty()) return;
  const int64_t channels = static_cast<int64_t>(op.pixel_codes.size()) / 256;
  if (channels * 256 != static_cast<int64_t>(op.pixel_codes.size()))
    throw std::invalid_argument("integer graph: a pixel table of " + std::to_string(op.pixel_codes.size()) +
                                " codes is no (C, 256) table");
  w.file().write_ints<int8_t>(w.group() + "/pixel_codes", {channels, 256}, op.pixel_codes);
  if (!op.pixel_mean.empty())
    w.file().set_attr_floats(w.group(), "pixel_mean", {static_cast<int64_t>(op.pixel_mean.size())}, op.pixel_mean);
  if (!op.pixel_std.empty())
    w.file().set_attr_floats(w.group(), "pixel_std", {static_cast<int64_t>(op.pixel_std.size())}, op.pixel_std);
}

// Reads the table if the op has one; its shape must be (C, 256) for the input's C. Its codes are checked
// against the grid by validate().
void read_pixel_table(const OpReader& r, Int8Op& op, const Shape& input_shape) {
  const H5File& f = r.file();
  const std::string base = r.group() + "/pixel_codes";
  if (!f.exists(base)) return;
  const int64_t channels = input_shape.empty() ? 0 : input_shape[0];
  const Shape shape = f.dataset_shape(base);
  if (shape != Shape{channels, 256})
    r.fail("pixel_codes of shape " + shape_str(shape) + ", expected (" + std::to_string(channels) +
           ", 256): one code per byte value for each of the input's " + std::to_string(channels) + " channels");
  op.pixel_codes = f.read_ints<int8_t>(base);
  for (const char* name : {"pixel_mean", "pixel_std"}) {
    if (!f.has_attr(r.group(), name)) continue;
    std::vector<float> v = f.get_attr_floats(r.group(), name);
    if (static_cast<int64_t>(v.size()) != channels)
      r.fail(std::string(name) + " holds " + std::to_string(v.size()) + " values, expected one per channel (" +
             std::to_string(channels) + ")");
    (std::string(name) == "pixel_mean" ? op.pixel_mean : op.pixel_std) = std::move(v);
  }
}

}  // namespace

void Int8Graph::save(const std::string& path) const {
  atomic_save_h5(path, [&](H5File& f) {
    f.set_attr_fixed("/", "format", kInt8GraphFormat);
    f.set_attr("/", "format_version", kInt8GraphVersion);
    f.set_attr("/", "num_slots", static_cast<int64_t>(num_slots));
    f.set_attr_ints<int64_t>("/", "input_shape", {static_cast<int64_t>(input_shape.size())}, input_shape);
    if (!dataset.empty()) f.set_attr_fixed("/", "dataset", dataset);
    if (!class_names.empty()) {
      f.set_attr_fixed("/", "class_names", join_lines(class_names));
    }
    for (size_t i = 0; i < ops.size(); ++i) {
      const Int8Op& op = ops[i];
      // Zero-padded indices keep the ops in order when h5py or h5dump list them alphabetically.
      std::string idx = std::to_string(i);
      idx.insert(0, idx.size() < 3 ? 3 - idx.size() : 0, '0');
      const std::string g = "ops/" + idx;
      f.create_group(g);
      OpWriter w(f, g);
      w.text("kind", int8_op_name(op.kind));
      w.text("name", op.name);
      w.scalar("output", op.output);
      w.ints("inputs", to_int32(op.inputs));
      switch (op.kind) {
        case Int8OpKind::Quantize:
          w.grid(kOpGrid, op.grid);
          write_pixel_table(w, op);
          break;
        case Int8OpKind::Dequantize:
        case Int8OpKind::AvgPool2d:
        case Int8OpKind::GlobalAvgPool:
          w.grid(kOpGrid, op.grid);
          break;
        case Int8OpKind::Conv2d:
        case Int8OpKind::FullyConnected: {
          const LoweredLayer& l = op.layer;
          write_weights(w, l);
          w.ints("bias", l.bias);
          w.ints("output_multiplier", l.is_conv ? l.conv.output_multiplier : l.fc.output_multiplier);
          w.ints("output_shift", to_int32(l.is_conv ? l.conv.output_shift : l.fc.output_shift));
          w.grid(kInputGrid, l.input);
          w.grid(kWeightGrid, l.weights);
          w.grid(kOutputGrid, l.output);
          w.scalar("input_offset", l.is_conv ? l.conv.input_offset : l.fc.input_offset);
          w.scalar("output_offset", l.is_conv ? l.conv.output_offset : l.fc.output_offset);
          w.scalar("quantized_activation_min", l.is_conv ? l.conv.quantized_activation_min : l.fc.quantized_activation_min);
          w.scalar("quantized_activation_max", l.is_conv ? l.conv.quantized_activation_max : l.fc.quantized_activation_max);
          if (l.is_conv) {
            w.scalar("stride_h", l.conv.stride_h);
            w.scalar("stride_w", l.conv.stride_w);
            w.scalar("pad_h", l.conv.pad_h);
            w.scalar("pad_w", l.conv.pad_w);
            w.scalar("groups", l.conv.groups);
          }
          break;
        }
        case Int8OpKind::Clamp:
          w.scalar("clamp_min", op.clamp_min);
          w.scalar("clamp_max", op.clamp_max);
          break;
        case Int8OpKind::Add: {
          w.grid(kOpGrid, op.grid);
          const AddInt8Params& a = op.add;
          const std::vector<int32_t> values{a.left_shift, a.input1_offset, a.input2_offset, a.output_offset,
                                            a.input1_multiplier, a.input1_shift, a.input2_multiplier, a.input2_shift,
                                            a.output_multiplier, a.output_shift, a.quantized_activation_min,
                                            a.quantized_activation_max};
          for (size_t k = 0; k < values.size(); ++k) w.scalar(kAddFields[k], values[k]);
          break;
        }
        case Int8OpKind::Requantize: {
          w.grid(kOpGrid, op.grid);
          const RequantizeInt8Params& q = op.requant;
          const std::vector<int32_t> values{q.input_offset, q.output_offset, q.multiplier, q.shift,
                                            q.quantized_activation_min, q.quantized_activation_max};
          for (size_t k = 0; k < values.size(); ++k) w.scalar(kRequantizeFields[k], values[k]);
          break;
        }
        case Int8OpKind::Lstm:
          write_lstm(w, op.lstm);
          break;
        default: break;
      }
      if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d) {
        w.scalar("kernel", op.kernel);
        w.scalar("stride", op.stride);
        w.scalar("pad", op.pad);
      }
    }
  });
}

bool Int8Graph::is_int8_graph_file(const std::string& path) { return H5File::is_of_format(path, kInt8GraphFormat); }

Int8Graph Int8Graph::load(const std::string& path) { return load(H5File::open_read(path)); }

Int8Graph Int8Graph::load(const H5File& f) {
  const std::string& path = f.path();
  const auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  if (!f.has_format(kInt8GraphFormat))
    fail("not a qatlab integer model (no format attribute \"" + std::string(kInt8GraphFormat) + "\")");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version > kInt8GraphVersion)
    fail("integer model format version " + std::to_string(version) + " is newer than this qatlab reads (" +
         std::to_string(kInt8GraphVersion) + "): upgrade qatlab");
  if (version < 1) fail("integer model format version " + std::to_string(version) + " is not valid (expected 1 to " +
                        std::to_string(kInt8GraphVersion) + ")");
  Int8Graph g;
  const int64_t slots = f.get_attr_int("/", "num_slots");
  if (slots < 1 || slots > 4096) fail("num_slots = " + std::to_string(slots) + " stored in the file, expected 1..4096");
  g.num_slots = static_cast<int>(slots);
  g.file_version = version;
  g.input_shape = version < 2 ? f.read_ints<int64_t>("input_shape") : f.get_attr_ints<int64_t>("/", "input_shape");
  if (f.has_attr("/", "dataset")) g.dataset = printable(f.get_attr_string("/", "dataset"), 4096);
  // Ops run in the numeric order of their names (the listing is alphabetical: "1000" before "101").
  std::vector<std::string> names = f.list("ops");
  if (names.size() > 4096) fail(std::to_string(names.size()) + " ops stored in the file, expected at most 4096");
  std::stable_sort(names.begin(), names.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  for (const std::string& idx : names) {
    const OpReader r(f, "ops/" + idx, version);
    const std::string& p = r.group();
    Int8Op op;
    try {
      op.kind = parse_int8_op(printable(r.text("kind")));
    } catch (const std::invalid_argument& e) {
      r.fail(e.what());
    }
    op.name = printable(r.text("name"), 200);  // only ever printed
    const int64_t output = r.scalar("output");
    if (output < 0 || output >= g.num_slots)
      fail(p + ": output slot " + std::to_string(output) + " out of range 0.." + std::to_string(g.num_slots - 1));
    op.output = static_cast<int>(output);
    op.inputs = to_int(r.ints("inputs"));
    for (int s : op.inputs)
      if (s < 0 || s >= g.num_slots) fail(p + ": input slot " + std::to_string(s) + " out of range");
    switch (op.kind) {
      case Int8OpKind::Quantize:
        op.grid = r.grid(kOpGrid);
        read_pixel_table(r, op, g.input_shape);
        break;
      case Int8OpKind::Dequantize:
      case Int8OpKind::AvgPool2d:
      case Int8OpKind::GlobalAvgPool:
        op.grid = r.grid(kOpGrid);
        break;
      case Int8OpKind::Conv2d:
      case Int8OpKind::FullyConnected: {
        LoweredLayer& l = op.layer;
        l.is_conv = op.kind == Int8OpKind::Conv2d;
        const bool halved = read_weights(r, l);
        l.bias = r.ints("bias");
        const std::vector<int32_t> mult = r.ints("output_multiplier");
        const std::vector<int> shift = to_int(r.ints("output_shift"));
        l.input = r.grid(kInputGrid);
        l.weights = r.grid(kWeightGrid);
        l.output = r.grid(kOutputGrid);
        if (halved != l.weights.odd_codes)
          fail(p + (halved ? ": weights stored halved on a grid without odd codes"
                           : ": a grid of odd codes (mid-rise) with weights not stored halved"));
        if (l.weight_shape.empty() || static_cast<int64_t>(l.bias.size()) != l.weight_shape[0] ||
            mult.size() != l.bias.size() || shift.size() != l.bias.size())
          fail(p + ": weight, bias, multiplier and shift sizes disagree");
        const int32_t in_off = r.scalar32("input_offset");
        const int32_t out_off = r.scalar32("output_offset");
        const int32_t act_min = r.scalar32("quantized_activation_min");
        const int32_t act_max = r.scalar32("quantized_activation_max");
        if (l.is_conv) {
          l.conv = ConvInt8Params{r.scalar("stride_h"), r.scalar("stride_w"), r.scalar("pad_h"), r.scalar("pad_w"),
                                  r.scalar("groups"), in_off, out_off, act_min, act_max, mult, shift};
        } else {
          l.fc = FullyConnectedInt8Params{in_off, out_off, act_min, act_max, mult, shift};
        }
        break;
      }
      case Int8OpKind::Clamp:
        op.clamp_min = r.scalar32("clamp_min");
        op.clamp_max = r.scalar32("clamp_max");
        break;
      case Int8OpKind::Add: {
        op.grid = r.grid(kOpGrid);
        if (op.inputs.size() != 2) fail(p + ": add needs two inputs");
        AddInt8Params& a = op.add;
        a.left_shift = r.scalar32("left_shift");
        a.input1_offset = r.scalar32("input1_offset"), a.input2_offset = r.scalar32("input2_offset");
        a.output_offset = r.scalar32("output_offset");
        a.input1_multiplier = r.scalar32("input1_multiplier"), a.input1_shift = r.scalar32("input1_shift");
        a.input2_multiplier = r.scalar32("input2_multiplier"), a.input2_shift = r.scalar32("input2_shift");
        a.output_multiplier = r.scalar32("output_multiplier"), a.output_shift = r.scalar32("output_shift");
        a.quantized_activation_min = r.scalar32("quantized_activation_min");
        a.quantized_activation_max = r.scalar32("quantized_activation_max");
        break;
      }
      case Int8OpKind::Requantize: {
        op.grid = r.grid(kOpGrid);
        RequantizeInt8Params& q = op.requant;
        q.input_offset = r.scalar32("input_offset"), q.output_offset = r.scalar32("output_offset");
        q.multiplier = r.scalar32("multiplier"), q.shift = r.scalar32("shift");
        q.quantized_activation_min = r.scalar32("quantized_activation_min");
        q.quantized_activation_max = r.scalar32("quantized_activation_max");
        break;
      }
      case Int8OpKind::Lstm:
        op.lstm = read_lstm(r);
        break;
      default: break;
    }
    if (op.kind == Int8OpKind::MaxPool2d || op.kind == Int8OpKind::AvgPool2d) {
      op.kernel = r.scalar("kernel");
      op.stride = r.scalar("stride");
      op.pad = r.scalar("pad");
    }
    g.ops.push_back(std::move(op));
  }
  try {
    g.validate();
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  if (f.has_attr("/", "class_names")) {
    const std::string text = f.get_attr_string("/", "class_names");
    for (const std::string& name : split_lines(text)) g.class_names.push_back(printable(name, 200));
    if (static_cast<int64_t>(g.class_names.size()) != g.output_width())
      fail("class_names names " + std::to_string(g.class_names.size()) + " classes, the model gives " +
           std::to_string(g.output_width()) + " scores per image");
  }
  g.prepare();
  return g;
}

}  // namespace qatlab
