// convert.cpp: the QAT model lowered by the one walk (walk.h), each module emitting its own integer ops.
#include "quant/qat/convert.h"

#include "quant/qat/walk.h"

namespace qatlab {

Int8Graph convert(const QatModel& model, const Shape& input_shape) {
  QATLAB_CHECK(input_shape.size() == 3, "convert: input shape must be (C, H, W), got " + shape_str(input_shape));
  Int8Graph g;
  g.input_shape = input_shape;
  Lowering walk(g);
  walk.walk(model, "");
  g.num_slots = walk.slots();
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
