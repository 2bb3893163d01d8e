// integer_eval.h: test-set accuracy of an integer graph and, given its QAT model, how the two agree; the
// integer graph's input pipeline from raw pixels (its pixel table, from the dataset's normalisation); the
// output codes as CSV.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/train/data_bundle.h"
#include "nn/train/evaluate.h"
#include "quant/engine/int8_graph.h"

namespace qatlab {

struct Agreement {
  int64_t elements = 0, differing = 0, max_lsb = 0, images = 0, same_top1 = 0;
  int64_t exact_identical_images = 0;  // images whose output codes equal the exact-mode simulation's
};

// The integer graph's output codes of every test image with its label, for comparing another
// implementation with ours (`qatlab eval MODEL.int8.h5 --dump FILE`).
struct IntegerOutputs {
  int64_t classes = 0;
  std::vector<int8_t> codes;     // (N, classes), dataset order
  std::vector<int32_t> labels;   // (N)
  std::vector<int32_t> predictions;  // (N): the top-1 class, ties to the lowest class index
};

// The predicted class of one row of output codes: the largest code; when several classes share it, the
// lowest class index among them (std::max_element keeps the first).
int32_t argmax_row(const int8_t* row, int64_t n);

// Runs the integer graph over the loader (r: accuracy, count, predictions, seconds of integer compute):
// a graph with a pixel table on the batches' raw bytes (the loader must keep them: integer_loader_options),
// one without on their normalised floats;
// with `sim` (in evaluation mode), also the QAT model in float simulation and in exact mode (its conv and
// linear layers on the kernels of `path` too), comparing output codes (a). With `outputs`, keeps every output code and label.
void run_integer(const Int8Graph& graph, KernelPath path, DataLoader& loader, Module* sim, EvalResult& r, Agreement& a,
                 IntegerOutputs* outputs = nullptr);

// Gives a graph converted from a checkpoint of `dataset` its pixel table: the dataset's normalisation as the
// loader computes it, then the input grid (set_pixel_table, quant/qat/convert.h). False, leaving the graph as it
// was, when qatlab knows no dataset of that name.
bool set_dataset_pixel_table(Int8Graph& graph, const std::string& dataset);

// The same for a graph converted from `ckpt`: the normalisation the checkpoint records (any dataset),
// else its dataset's constants as above; also takes the checkpoint's dataset and class names. False
// when neither gives a normalisation.
bool set_checkpoint_pixel_table(Int8Graph& graph, const Checkpoint& ckpt);

// What an integer model file records of its data: dataset, the pixel table's normalisation, class names.
DataRecord data_record(const Int8Graph& graph);

// The loader options for running `graph` on the test split: loader_options(data, batch_size, 0, false),
// keeping the raw pixels when the graph reads them.
LoaderOptions integer_loader_options(const Int8Graph& graph, const DataBundle& data, int64_t batch_size);

// "" for a graph with a pixel table; otherwise the one line saying that its input codes come from the
// loader's normalised floats (a file written before format version 3, or converted from a checkpoint of
// no dataset qatlab knows), as integer evaluation did before the table existed.
std::string input_pipeline_note(const Int8Graph& graph, const std::string& path);

// The dump as CSV text: a header `image,label,predicted,code_0,...,code_<K-1>` then one row per image
// (output codes as signed integers; real logit = scale * (code - zero_point) with the grid given).
// Lines starting with '#' before the header carry the format name and the output grid.
std::string outputs_csv(const IntegerOutputs& outputs, const QParams& grid);

}  // namespace qatlab
