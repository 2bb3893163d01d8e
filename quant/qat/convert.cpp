// convert.cpp: emitting integer ops for the QAT model's modules, in execution order.
#include "quant/qat/convert.h"

#include <stdexcept>

#include "nn/activation.h"
#include "nn/sequence_models.h"
#include "quant/qat/lower.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qat_lstm.h"

namespace qatlab {

namespace {

// Walks modules, appending ops to the graph. `slot` is where the current activation lives and `grid`
// its quantization; every op writes a fresh slot, so the graph stays a plain list, easy to read.
class Emitter {
 public:
  explicit Emitter(Int8Graph& g) : g_(g) {}

  int slot = 0;
  QParams grid;

  int emit(Int8Op op, std::vector<int> inputs) {
    op.inputs = std::move(inputs);
    op.output = ++last_slot_;
    g_.ops.push_back(std::move(op));
    slot = last_slot_;
    return slot;
  }
  int slots() const { return last_slot_ + 1; }

  void sequence(const ModulePtr& seq, const std::string& prefix) {
    for (const auto& [name, child] : seq->children()) module(child, prefix + name);
  }

  void module(const ModulePtr& m, const std::string& full) {
    Int8Op op;
    op.name = full;
    if (m->is<Sequential>()) {
      sequence(m, full + ".");
      return;
    }
    if (const QatLayer* layer = m->as<QatLayer>()) {
      const QParams out = layer->output_quant().qparams();
      op.kind = layer->is_conv() ? Int8OpKind::Conv2d : Int8OpKind::FullyConnected;
      op.layer = lower_layer(*layer, grid, out);
      grid = out;
    } else if (const QatResidual* res = m->as<QatResidual>()) {
      residual(*res, full);
      return;
    } else if (m->is<RowLstmClassifier>()) {
      row_lstm(m, full);
      return;
    } else if (const QatLstm* lstm_layer = m->as<QatLstm>()) {
      lstm(*lstm_layer, full);
      return;
    } else if (const MaxPool2d* p = m->as<MaxPool2d>()) {
      op.kind = Int8OpKind::MaxPool2d;
      op.kernel = p->kernel, op.stride = p->stride, op.pad = p->padding;
    } else if (const QatAvgPool* p = m->as<QatAvgPool>()) {
      op.kind = p->kernel == 0 ? Int8OpKind::GlobalAvgPool : Int8OpKind::AvgPool2d;
      op.kernel = p->kernel, op.stride = p->stride, op.pad = p->padding;
      op.grid = grid;
    } else if (m->is<Flatten>()) {
      op.kind = Int8OpKind::Flatten;
    } else if (m->is<ReLU>()) {
      op.kind = Int8OpKind::Clamp;
      op.clamp_min = std::max(grid.quant_min, grid.zero_point[0]);
      op.clamp_max = grid.quant_max;
    } else if (m->is<Identity>() || m->is<Dropout>()) {
      return;  // nothing at inference
    } else {
      throw std::invalid_argument("convert: no integer form for " + m->type() + " '" + full + "'");
    }
    emit(std::move(op), {slot});
  }

  // RowLstmClassifier: image rows (codes rearranged, same grid), the LSTM, its last step, the head.
  void row_lstm(const ModulePtr& m, const std::string& full) {
    Int8Op rows;
    rows.kind = Int8OpKind::ImageRows;
    rows.name = full;
    emit(std::move(rows), {slot});
    module(m->child("lstm"), full + ".lstm");
    Int8Op last;
    last.kind = Int8OpKind::LastStep;
    last.name = full;
    emit(std::move(last), {slot});
    module(m->child("head"), full + ".head");
  }

  // One integer LSTM op per layer, each reading the previous one's codes (lowered with lower_lstm_layer).
  void lstm(const QatLstm& m, const std::string& full) {
    for (int64_t l = 0; l < m.num_layers(); ++l) {
      Int8Op op;
      op.kind = Int8OpKind::Lstm;
      op.name = m.num_layers() == 1 ? full : full + ".l" + std::to_string(l);
      op.lstm = lower_lstm_layer(m, l, grid);
      grid = op.lstm.hidden;
      emit(std::move(op), {slot});
    }
  }

  // Both branches read the block's input slot; an Add op combines their results on the sum's grid.
  void residual(const QatResidual& r, const std::string& full) {
    const int entry_slot = slot;
    const QParams entry_grid = grid;
    module(r.child("body"), full + ".body");
    const int body_slot = slot;
    const QParams body_grid = grid;
    slot = entry_slot, grid = entry_grid;
    module(r.child("shortcut"), full + ".shortcut");
    const int shortcut_slot = slot;
    const QParams shortcut_grid = grid;
    const QParams out = r.add_quant().qparams();
    Int8Op op;
    op.kind = Int8OpKind::Add;
    op.name = full;
    op.grid = out;
    op.add = lower_add(body_grid, shortcut_grid, out, r.relu_after);
    emit(std::move(op), {body_slot, shortcut_slot});
    grid = out;
  }

 private:
  Int8Graph& g_;
  int last_slot_ = 0;
};

}  // namespace

Int8Graph convert(const QatModel& model, const Shape& input_shape) {
  QATLAB_CHECK(input_shape.size() == 3, "convert: input shape must be (C, H, W), got " + shape_str(input_shape));
  Int8Graph g;
  g.input_shape = input_shape;
  Emitter e(g);
  e.grid = model.input_quant().qparams();
  Int8Op quantize;
  quantize.kind = Int8OpKind::Quantize;
  quantize.name = "input_quant";
  quantize.grid = e.grid;
  e.emit(quantize, {});
  e.module(model.child("body"), "body");
  Int8Op dequantize;
  dequantize.kind = Int8OpKind::Dequantize;
  dequantize.name = "output";
  dequantize.grid = e.grid;
  e.emit(dequantize, {e.slot});
  g.num_slots = e.slots();
  g.prepare();
  return g;
}

void set_pixel_table(Int8Graph& graph, const Tensor& pixel_values, const std::vector<float>& mean,
                     const std::vector<float>& std) {
  QATLAB_CHECK(!graph.ops.empty() && graph.ops.front().kind == Int8OpKind::Quantize && graph.input_shape.size() == 3,
               "set_pixel_table: the graph has no quantize entry for (C, H, W) images");
  const int64_t channels = graph.input_shape[0];
  QATLAB_CHECK(pixel_values.shape() == Shape({channels, 256}),
               "set_pixel_table: pixel values " + shape_str(pixel_values.shape()) + ", expected (" +
                   std::to_string(channels) + ", 256) for the graph's " + std::to_string(channels) + " channels");
  QATLAB_CHECK((mean.empty() || static_cast<int64_t>(mean.size()) == channels) &&
                   (std.empty() || static_cast<int64_t>(std.size()) == channels),
               "set_pixel_table: mean and std must hold one value per channel (" + std::to_string(channels) + ")");
  Int8Op& entry = graph.ops.front();
  entry.pixel_codes = quantize_tensor(pixel_values, entry.grid);  // (C, 256)
  entry.pixel_mean = mean;
  entry.pixel_std = std;
}

}  // namespace qatlab
