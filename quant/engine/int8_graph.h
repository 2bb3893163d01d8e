// int8_graph.h: the integer-only inference graph that convert produces: a list of integer ops with
// their parameters. Floats appear only at the exit (Dequantize), and at the entry (Quantize) for a graph
// given floats; a graph with a pixel table (convert from a dataset's normalisation) reads raw 8-bit pixels
// and is integer from the image on. Between, everything computes on int8 codes, int32 accumulators and
// fixed-point multipliers.
//
// Tensors live in numbered slots. Each op reads its input slots and writes one output slot, in list
// order; the Quantize entry reads no slot (it takes the float input). convert writes op i to slot i + 1,
// so slot 0 stays unused (quant/README.md, section 7, "Slots").
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "quant/engine/int8_gemm.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/int_lstm.h"
#include "quant/engine/lowered_layer.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

class H5File;

inline constexpr const char* kInt8GraphFormat = "qatlab-int8-graph";
// 3: the Quantize op may carry a pixel table; 2: small arrays and grids as attributes; 2 still read (1
// files hold variable-length strings, which core/h5io refuses: they are made again with convert).
inline constexpr int64_t kInt8GraphVersion = 3;

// ImageRows: (N, C, H, W) -> (N, H, C*W) codes (an image read row by row, same grid); Lstm: (N, T, IN) ->
// (N, T, H) codes (int_lstm.h); LastStep: (N, T, H) -> (N, H), the last step's codes; Requantize: the same
// values on another grid (fewer bits: a residual stream read by a conv at A bits).
enum class Int8OpKind {
  Quantize, Conv2d, FullyConnected, MaxPool2d, AvgPool2d, GlobalAvgPool, Flatten, Clamp, Add, Dequantize,
  ImageRows, Lstm, LastStep, Requantize
};
const char* int8_op_name(Int8OpKind kind);
Int8OpKind parse_int8_op(const std::string& name);

struct Int8Op {
  Int8OpKind kind = Int8OpKind::Flatten;
  std::string name;             // the QAT module it came from ("body.features.0")
  std::vector<int> inputs;      // slots read
  int output = 0;               // slot written
  // Quantize (float -> codes) / Dequantize (codes -> float): the grid of the codes.
  QParams grid;
  // Quantize, when the graph reads raw 8-bit pixels: the pixel table (C, 256), pixel_codes[c * 256 + p]
  // the input code of byte value p in channel c, made at convert by the simulation's own arithmetic
  // (loader normalisation, then the input quantizer on `grid`), so the lookup gives its codes bit for bit.
  // Empty: the input is floats, quantized on `grid`. pixel_mean / pixel_std (C): the normalisation
  // (pixel / 255 - mean) / std the table was made from, kept for people reading the file; unused at run time.
  std::vector<int8_t> pixel_codes;
  std::vector<float> pixel_mean, pixel_std;
  // Conv2d / FullyConnected: the lowered layer (params, weights: int8, or 2-4-bit packed once
  // prepared or loaded, int32 bias, grids).
  LoweredLayer layer;
  // MaxPool2d / AvgPool2d: the window; the codes keep their grid (AvgPool pads with its zero point).
  int64_t kernel = 0, stride = 0, pad = 0;
  // Clamp: a standalone ReLU on the codes.
  int32_t clamp_min = -128, clamp_max = 127;
  // Add: a residual sum of inputs[0] and inputs[1], rescaled to `grid` (see int8_kernels.h).
  AddInt8Params add;
  // Requantize: inputs[0]'s codes rescaled to `grid` (requantize_int8, int8_kernels.h).
  RequantizeInt8Params requant;
  // Lstm: one integer LSTM layer (int8 weights, int32 biases, multipliers, the cell grid; see int_lstm.h).
  LstmInt8Params lstm;

  // Built once by Int8Graph::prepare(): packed weights for the optimized kernels. A conv whose output
  // goes only to the next op, a 2x2 max pool of stride 2, is packed with that pool fused
  // (packed_conv->fused_max_pool()): the optimized paths run the two ops as one.
  std::shared_ptr<PackedConvInt8> packed_conv;
  std::shared_ptr<PackedFullyConnectedInt8> packed_fc;
  std::shared_ptr<PackedLstmInt8> packed_lstm;
};

class Int8Graph {
 public:
  Shape input_shape;  // (C, H, W) of one input image
  std::vector<Int8Op> ops;
  int num_slots = 1;
  int64_t file_version = 0;  // the format version of the file load() read (0: not loaded from a file)
  // The data set the model was trained on ("mnist", "fashion-mnist", "cifar10", or "hdf5:", "folder:",
  // "idx:" and an absolute path), which `eval` runs on unless told otherwise; empty when unknown (files
  // written before it was recorded). Stored as the root attribute "dataset" when set. The normalisation
  // it was trained with is the pixel table's (the Quantize op's pixel_mean / pixel_std).
  std::string dataset;
  // Its class names, one per output (root attribute "class_names", the names separated by newlines, when
  // set; load() checks the count against output_width()). Empty when unknown.
  std::vector<std::string> class_names;

  // Packs the weights of every conv / linear op for the optimized kernels; weights of 2 to 4 bits are
  // from then on held packed only (pack_weights), and run packed. Call after building or loading.
  void prepare();

  // input (N, C, H, W) float -> the output codes (N, ...) and their grid. path Reference runs the plain
  // reference kernels everywhere, op by op over the whole batch; other paths the packed kernels,
  // taking groups of up to 16 images through all the ops, one group per thread at a time (up to
  // omp_get_max_threads() threads). A NaN input throws std::invalid_argument naming its index.
  std::vector<int8_t> run_codes(const Tensor& input, Shape* out_shape, KernelPath path) const;
  // The same, dequantized at the exit.
  Tensor run(const Tensor& input, KernelPath path) const;
  // Whether the Quantize entry holds a pixel table (then run_pixel_codes / run_pixels apply).
  bool has_pixel_table() const;
  // Raw 8-bit images (N, C, H, W), n of them, through the pixel table and the integer ops: integer from
  // the image on. Throws std::invalid_argument when the graph has no pixel table. Otherwise as run_codes.
  std::vector<int8_t> run_pixel_codes(const uint8_t* pixels, int64_t n, Shape* out_shape, KernelPath path) const;
  Tensor run_pixels(const uint8_t* pixels, int64_t n, KernelPath path) const;
  const QParams& output_grid() const;

  // The shape (without N) of each op's first input and of its output, in op order, followed through the
  // slots (a residual graph is not a chain). Throws std::invalid_argument for an inconsistent graph.
  std::vector<std::pair<Shape, Shape>> op_shapes() const;
  // Multiply-adds per image of the conv, fully connected and LSTM ops (shapes from op_shapes()).
  double multiply_adds_per_image() const;

  // Bytes of integer parameters (weights, biases, multipliers, shifts).
  int64_t parameter_bytes() const;
  std::string summary() const;

  // Checks what load() needs before any op may run: slots bounded and each read after an earlier op
  // wrote it (the list is a DAG in execution order), shapes agreeing op to op, one score per class at
  // the exit, grids int8, multipliers in [2^30, 2^31) (or 0) with shifts in [-31, 30], offsets and
  // activation ranges in int8, biases small enough that no int32 accumulator can overflow, a pixel table
  // of shape (C, 256) whose codes lie in the input grid's [quant_min, quant_max]. Throws
  // std::invalid_argument naming the op and the value.
  void validate() const;
  // The number of output values per image at the exit: for a classifier, its class count, which
  // `eval` checks against the dataset's.
  int64_t output_width() const;

  // HDF5 file, readable with h5py (see quant/README.md for the layout). Saving is atomic. load()
  // validates the graph and throws std::runtime_error "<path>: ..." when it is not valid.
  void save(const std::string& path) const;
  static Int8Graph load(const std::string& path);
  // The same from a file already open (errors name f.path()): a command that opened a file to see its
  // format reads it without opening (and checksumming) it again.
  static Int8Graph load(const H5File& f);
  // True when `path` is an HDF5 file carrying this format (cheap check for `qatlab eval`).
  static bool is_int8_graph_file(const std::string& path);

 private:
  // run_codes / run_pixel_codes after their checks: n images of floats x or raw pixels px (one is null).
  std::vector<int8_t> run_input(const float* x, const uint8_t* px, int64_t n, Shape* out_shape, KernelPath path) const;
};

}  // namespace qatlab
