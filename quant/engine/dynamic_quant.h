// dynamic_quant.h: dynamic quantization of Linear and LSTM layers (as PyTorch's quantize_dynamic):
// int8 weights, float activations quantized at run time on a grid taken from each input matrix's own
// range, int32 products, float everything else; and the dynamic model file.
//
// Shape letters: M rows of an input matrix, N batch, T time steps, IN input features, OUT output
// features, H hidden size, G = 4H gate rows, L layers.
//
// One dynamic matmul y = x W^T + b, x (M, IN), W (OUT, IN), computes (see quant/README.md):
//   weights, once:    s_w[o] = max_k |W[o, k]| / 127,  q_w = clamp(nearbyint(W * (1 / s_w[o])), -127, 127)
//                     (symmetric, narrow range, zero point 0; an all-zero row gets kMinScale)
//   input, per call:  [lo, hi] = [min(min x, 0), max(max x, 0)] over the whole matrix, then the 8-bit
//                     unsigned affine grid of choose_scale_zero_point: s_x = (hi - lo) / 255, zero point
//                     z_x in [0, 255]; q_x = clamp(z_x + nearbyint(x * (1 / s_x)), 0, 255)
//   product:          acc[m, o] = sum_k q_x[m, k] q_w[o, k]                 (int32, exact, dynamic_gemm.h)
//   output:           y[m, o] = (float)(acc[m, o] - z_x sum_k q_w[o, k]) * (s_x s_w[o]) + b[o]
// The subtraction is exact in int32: it equals sum_k (q_x - z_x) q_w, at most 255 * 127 * IN < 2^31.
// Rows of the output never depend on how the rows are split over threads; they do depend on the other
// rows of the same input matrix, through the shared grid (as in PyTorch).
//
// The layers are for inference only: their forward records no autograd history, and throws when
// asked for a gradient (grad mode on and an input that requires one).
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/module.h"
#include "nn/zoo.h"
#include "quant/engine/dynamic_gemm.h"
#include "quant/engine/qscheme.h"

namespace qatlab {

// An int8 weight matrix with one scale per row, ready for the dynamic matmul.
struct DynamicWeight {
  PackedDynamicWeights packed;  // codes (rows, cols) in [-127, 127], packed for the fast kernels
  std::vector<float> scale;     // (rows): real = scale[r] * code

  // Quantizes a float matrix (rows, cols) symmetrically per row (formula at the top of the file).
  // Throws std::invalid_argument for a non-2-D tensor or a NaN / infinite weight.
  static DynamicWeight quantize(const Tensor& w);
  // From stored codes (rows * cols, row-major) and scales (rows, each finite and > 0); throws
  // std::invalid_argument naming the mismatch otherwise.
  static DynamicWeight from_codes(const std::vector<int8_t>& codes, const Shape& shape,
                                  const std::vector<float>& scale);

  Shape shape() const { return {packed.rows(), packed.cols()}; }
  // scale[r] * code as a float tensor (rows, cols): the weights the int8 layer effectively applies.
  Tensor dequantized() const;
  int64_t bytes() const { return packed.rows() * packed.cols() + 4 * packed.rows(); }  // int8 codes + float scales
};

// Buffers of the dynamic matmul, grown to the largest shape seen and then reused: a forward pass
// allocates nothing once a batch shape has been seen.
struct DynamicScratch {
  std::vector<uint8_t> codes;     // (threads, chunk rows, IN) quantized input rows
  std::vector<int32_t> acc;       // (threads, chunk rows, OUT) accumulators
  std::vector<int16_t> widened;   // (threads, PackedDynamicWeights::scratch_elems())
  std::vector<float> col_scale;   // (OUT): s_x * s_w[o]
  std::vector<int32_t> col_zero;  // (OUT): z_x * sum_k q_w[o, k]
};

// The 8-bit unsigned affine grid (choose_scale_zero_point, bits 8, unsigned, affine) of `rows` rows of
// `cols` floats, `stride` floats apart, from their min and max widened to contain 0. An all-zero or
// empty matrix gets scale kMinScale and zero point 0. Throws std::invalid_argument "<who>: input holds
// NaN or infinite values ..." when any value is not finite.
ScaleZeroPoint dynamic_input_grid(const float* x, int64_t rows, int64_t cols, int64_t stride, const std::string& who);

// y = x W^T + bias as above, for m rows of x (w.shape()[1] floats each, x_stride apart) into m rows of y
// (w.shape()[0] floats each, y_stride apart); with `accumulate` the result is added to y. bias: OUT
// floats or null. Rows go in fixed chunks of 32, spread over OpenMP threads when the product is large
// (about 2^20 multiply-adds); after_rows(r0, r1), if given, runs on each chunk right after its rows of y
// are final, on the same thread (the LSTM runs its cell there). Returns the input's grid.
ScaleZeroPoint dynamic_matmul(const float* x, int64_t m, int64_t x_stride, const DynamicWeight& w, const float* bias,
                              float* y, int64_t y_stride, bool accumulate, KernelPath path, DynamicScratch& scratch,
                              const std::string& who,
                              const std::function<void(int64_t r0, int64_t r1)>& after_rows = nullptr);

// What the dynamic layers share: their int8 matrices by name and the kernel path they run.
class DynamicModule : public Module {
 public:
  using Module::Module;
  // This layer's int8 matrices by name ("weight"; "weight_ih_l0", "weight_hh_l0", ...), in a fixed
  // order: what the model file stores. The pointers stay valid for the module's life.
  virtual std::vector<std::pair<std::string, DynamicWeight*>> dynamic_weights() = 0;
  // Throws std::invalid_argument if the dynamic GEMM cannot run `path` on this CPU.
  void set_kernel_path(KernelPath path);
  KernelPath kernel_path() const { return path_; }

 protected:
  // Throws when grad mode is on and x requires a gradient: these layers have no backward.
  void check_inference(const Tensor& x) const;

  KernelPath path_ = best_dynamic_gemm_path();
  DynamicScratch scratch_;
};

// The dynamic form of Linear: y = x W^T + b with W in int8. x (N, IN) -> (N, OUT).
class DynamicLinear : public DynamicModule {
 public:
  explicit DynamicLinear(const Linear& linear);  // quantizes the weight, copies the bias
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  std::vector<std::pair<std::string, DynamicWeight*>> dynamic_weights() override { return {{"weight", &weight}}; }

  const int64_t in_features, out_features;
  DynamicWeight weight;  // (OUT, IN)
  Tensor bias;           // (OUT) float, a buffer named "bias"; undefined when the layer has none
};

// The dynamic form of LSTM (same options and sequence layouts, see nn/lstm.h). Per layer, the input
// projections of all steps are one dynamic matmul (x_t of every step on one grid); each step then adds
// h_{t-1} W_hh^T as a dynamic matmul on h_{t-1}'s own grid, and runs the float cell of nn/lstm_cell.h.
class DynamicLstm : public DynamicModule {
 public:
  explicit DynamicLstm(const LSTM& lstm);  // quantizes the weights, copies the biases

  // h0, c0: (L, N, H), or undefined for a zero initial state.
  LstmOutput forward_seq(const Tensor& x, const Tensor& h0 = {}, const Tensor& c0 = {});
  Tensor forward(const Tensor& x) override { return forward_seq(x).output; }
  std::string describe() const override;
  std::vector<std::pair<std::string, DynamicWeight*>> dynamic_weights() override;

  const LstmOptions options;
  std::vector<DynamicWeight> weight_ih, weight_hh;  // per layer: (4H, IN or H), (4H, H)
  // Per layer (4H) float, buffers named bias_ih_l{l}, bias_hh_l{l}; undefined when options.bias is off.
  std::vector<Tensor> bias_ih, bias_hh;

 private:
  std::vector<float> gates_, c_, bias_sum_;  // (N*T, G) gate values, (2, N, H) cell states, (G)
};

// The module as a dynamic layer (DynamicLinear or DynamicLSTM), or null for any other type.
DynamicModule* as_dynamic(Module& m);

// Replaces every Linear and LSTM of `model`'s tree by its dynamic form, in place (through
// set_submodule), puts the model in eval mode and returns it; a model that is itself a Linear or an
// LSTM is returned as a new dynamic module. The float layers are left untouched but no longer part of
// the tree: keep a second model for float results.
ModulePtr quantize_dynamic(const ModulePtr& model);

// Sets the kernel path of every dynamic layer of the tree (throws if the CPU cannot run it).
void set_dynamic_kernel_path(Module& model, KernelPath path);

// The quantized weights of a model's dynamic layers: how many, and their bytes as int8 codes + float
// scales versus as float32.
struct DynamicWeightBytes {
  int64_t weights = 0;     // quantized weight values
  int64_t int8_bytes = 0;  // codes + scales
  int64_t float_bytes() const { return 4 * weights; }
};
DynamicWeightBytes dynamic_weight_bytes(const ModulePtr& model);

// ------------------------------------------------------------------------------- the model file
//
// HDF5, format "qatlab-dynamic-model", version 1, written atomically (temp file + rename):
//   /                      attrs: format, format_version, qatlab_version
//   /model                 attrs: name (the description's name), channels, height, width, num_classes, dataset,
//                          and when known data_mean, data_std (float32 (C)) and class_names (newline-separated)
//   /model/description     string: the network's description (nn/model_description.h); files without
//                          it name a built-in model
//   /model/state/<name>    float32: every entry of the dynamic model's state dict (the float layers'
//                          parameters and buffers, the dynamic layers' biases)
//   /dynamic/000, 001 ...  one group per dynamic layer, attrs: module (dotted name), kind (its type);
//     <matrix>             int8 (rows, cols): the codes of each of its matrices (weight, weight_ih_l0, ...)
//     <matrix>_scale       float32 (rows): their per-row scales
// Strings are fixed-length UTF-8 (h5io.h); a file with variable-length strings, as every dynamic model
// written before was, is refused with a line saying it must be made again.
// Loading rebuilds the model from its description and the spec, applies quantize_dynamic and fills it
// from the file.

inline constexpr const char* kDynamicModelFormat = "qatlab-dynamic-model";
inline constexpr int64_t kDynamicModelVersion = 1;

struct DynamicModelFile {
  std::string model_name;  // the description's name
  std::string model_description;  // its text (empty: model_name is a built-in model)
  ModelSpec spec;
  std::string dataset;     // what the float model was trained on
  ModulePtr model;         // a quantize_dynamic'd model of that name and spec
  std::vector<float> data_mean, data_std;  // (C): its normalisation; empty when not recorded
  std::vector<std::string> class_names;    // (num_classes); likewise
};

void save_dynamic_model(const std::string& path, const DynamicModelFile& file);
// Throws std::runtime_error "<path>: ..." (one line) for a missing, foreign, newer or inconsistent file.
DynamicModelFile load_dynamic_model(const std::string& path);
// True when `path` is an HDF5 file whose format attribute is kDynamicModelFormat (never throws).
bool is_dynamic_model_file(const std::string& path);

}  // namespace qatlab
