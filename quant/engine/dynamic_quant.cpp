// dynamic_quant.cpp: the dynamic matmul (quantize the input rows, int32 product, dequantize), the
// DynamicLinear and DynamicLstm layers, quantize_dynamic and the dynamic model file.
//
// Shape letters: M rows of an input matrix, N batch, T time steps, IN input features, OUT output
// features, H hidden size, G = 4H gate rows, L layers.
#include "quant/engine/dynamic_quant.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>

#include <Eigen/Core>

#include "core/atomic_file.h"
#include "core/format.h"
#include "core/h5io.h"
#include "nn/lstm_cell.h"
#include "nn/model_description.h"
#include "quant/engine/requantize.h"

#ifndef QATLAB_VERSION
#define QATLAB_VERSION "dev"
#endif

namespace qatlab {

namespace {

// Rows per chunk of a dynamic matmul. Fixed, not derived from the thread count; a row's result does not
// depend on the chunking anyway (the grid is the whole matrix's).
constexpr int64_t kChunkRows = 32;
// Below this many multiply-adds a dynamic matmul runs on the calling thread.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

QScheme input_scheme() {
  QScheme s;
  s.bits = 8;
  s.is_signed = false;
  s.symmetric = false;
  return s;
}

QScheme weight_scheme() {
  QScheme s;
  s.bits = 8;
  s.is_signed = true;
  s.symmetric = true;
  s.per_channel = true;
  s.axis = 0;
  s.narrow_range = true;
  return s;
}

using RowArray = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::string opt_shape(const Tensor& t) { return t.defined() ? shape_str(t.shape()) : "undefined"; }

// q = zero_point + clamp(nearbyint(x * inv_scale), lo, hi) for n values: quantize_value's formula
// without its NaN test, so that the loop vectorises. Callers have rejected NaN and infinity (the grid
// pass), and a finite x * inv_scale can only overflow to +-inf, which the clamp maps to the end codes
// exactly as quantize_value does. Arguments by value: the byte stores could alias anything reached
// through a pointer, which would reload the constants on every element.
void quantize_row(const float* x, int64_t n, float inv_scale, int32_t zero_point, float lo, float hi, uint8_t* q) {
  for (int64_t k = 0; k < n; ++k)
    q[k] =
        static_cast<uint8_t>(zero_point + static_cast<int32_t>(std::clamp(std::nearbyint(x[k] * inv_scale), lo, hi)));
}

}  // namespace

// --------------------------------------------------------------------------------------- weights

DynamicWeight DynamicWeight::quantize(const Tensor& w) {
  QATLAB_CHECK(w.defined() && w.dim() == 2 && w.numel() > 0,
               "DynamicWeight::quantize: weight must be a non-empty (rows, cols) matrix, got " + opt_shape(w));
  const int64_t rows = w.size(0), cols = w.size(1);
  const float* p = w.data();
  std::vector<float> lo(rows), hi(rows);  // (rows) each row's range
  for (int64_t r = 0; r < rows; ++r) {
    const auto [mn, mx] = std::minmax_element(p + r * cols, p + (r + 1) * cols);
    lo[r] = *mn, hi[r] = *mx;
    // minmax_element skips NaN when it is not first: look for it explicitly (choose_qparams rejects
    // the infinite bounds itself).
    for (int64_t k = 0; k < cols; ++k)
      QATLAB_CHECK(!std::isnan(p[r * cols + k]), "DynamicWeight::quantize: weight row " + std::to_string(r) +
                                                     " of " + shape_str(w.shape()) + " holds NaN");
  }
  const QScheme scheme = weight_scheme();
  const QParams qp = choose_qparams(scheme, lo, hi);
  std::vector<int8_t> codes(rows * cols);  // (rows, cols)
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / qp.scale[r];
    for (int64_t k = 0; k < cols; ++k)
      codes[r * cols + k] =
          static_cast<int8_t>(quantize_value(p[r * cols + k], inv, 0, scheme.quant_min(), scheme.quant_max()));
  }
  DynamicWeight d;
  d.packed = PackedDynamicWeights(codes.data(), rows, cols);
  d.scale = qp.scale;
  return d;
}

DynamicWeight DynamicWeight::from_codes(const std::vector<int8_t>& codes, const Shape& shape,
                                        const std::vector<float>& scale) {
  QATLAB_CHECK(shape.size() == 2 && shape[0] >= 1 && shape[1] >= 1,
               "DynamicWeight: codes must be a non-empty (rows, cols) matrix, got " + shape_str(shape));
  QATLAB_CHECK(static_cast<int64_t>(codes.size()) == shape_numel(shape),
               "DynamicWeight: " + std::to_string(codes.size()) + " codes do not fill " + shape_str(shape));
  QATLAB_CHECK(static_cast<int64_t>(scale.size()) == shape[0],
               "DynamicWeight: " + std::to_string(scale.size()) + " scales for " + std::to_string(shape[0]) +
                   " rows, expected one per row");
  for (size_t r = 0; r < scale.size(); ++r)
    QATLAB_CHECK(std::isfinite(scale[r]) && scale[r] > 0.0f,
                 "DynamicWeight: scale of row " + std::to_string(r) + " is " + std::to_string(scale[r]) +
                     ", expected finite and > 0");
  DynamicWeight d;
  d.packed = PackedDynamicWeights(codes.data(), shape[0], shape[1]);
  d.scale = scale;
  return d;
}

Tensor DynamicWeight::dequantized() const {
  const int64_t rows = packed.rows(), cols = packed.cols();
  Tensor t = Tensor::empty({rows, cols});  // (rows, cols)
  const int8_t* q = packed.codes().data();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) t.data()[r * cols + k] = scale[r] * static_cast<float>(q[r * cols + k]);
  return t;
}

// ------------------------------------------------------------------------------ the dynamic matmul

ScaleZeroPoint dynamic_input_grid(const float* x, int64_t rows, int64_t cols, int64_t stride, const std::string& who) {
  if (rows == 0 || cols == 0) return choose_scale_zero_point(input_scheme(), 0.0f, 0.0f);
  // Eigen's vectorised reductions (a plain loop with std::min / std::max stays scalar: the compiler may
  // not reorder a float min reduction). PropagateNaN makes any NaN the result, so one test below
  // catches NaN and infinity alike.
  const Eigen::Map<const RowArray, Eigen::Unaligned, Eigen::OuterStride<>> m(x, rows, cols,
                                                                            Eigen::OuterStride<>(stride));
  const float mn = m.minCoeff<Eigen::PropagateNaN>(), mx = m.maxCoeff<Eigen::PropagateNaN>();
  QATLAB_CHECK(std::isfinite(mn) && std::isfinite(mx),
               who + ": input holds NaN or infinite values; dynamic quantization needs a finite range");
  return choose_scale_zero_point(input_scheme(), std::min(mn, 0.0f), std::max(mx, 0.0f));
}

ScaleZeroPoint dynamic_matmul(const float* x, int64_t m, int64_t x_stride, const DynamicWeight& w, const float* bias,
                              float* y, int64_t y_stride, bool accumulate, KernelPath path, DynamicScratch& s,
                              const std::string& who, const std::function<void(int64_t, int64_t)>& after_rows) {
  const int64_t K = w.packed.cols(), OUT = w.packed.rows();
  const ScaleZeroPoint grid = dynamic_input_grid(x, m, K, x_stride, who);
  if (m == 0) return grid;
  const QScheme scheme = input_scheme();
  const int32_t qmin = scheme.quant_min(), qmax = scheme.quant_max();
  const float inv_scale = 1.0f / grid.scale;
  const float lo = static_cast<float>(qmin - grid.zero_point), hi = static_cast<float>(qmax - grid.zero_point);

  // Per output column: the dequantization scale and the input zero point's share of the sum.
  s.col_scale.resize(OUT);
  s.col_zero.resize(OUT);
  for (int64_t o = 0; o < OUT; ++o) {
    s.col_scale[o] = grid.scale * w.scale[o];
    s.col_zero[o] = grid.zero_point * w.packed.row_sums()[o];  // |.| <= 255 * 127 * K < 2^31
  }

  const int64_t chunks = (m + kChunkRows - 1) / kChunkRows;
  const int threads = chunks >= 2 && m * K * OUT >= kParallelMacs
                          ? static_cast<int>(std::min<int64_t>(omp_get_max_threads(), chunks))
                          : 1;
  const int64_t widen = w.packed.scratch_elems();
  s.codes.resize(std::max<size_t>(s.codes.size(), threads * kChunkRows * K));
  s.acc.resize(std::max<size_t>(s.acc.size(), threads * kChunkRows * OUT));
  s.widened.resize(std::max<size_t>(s.widened.size(), threads * widen));

  const auto run_chunk = [&](int64_t c, int thread) {
    const int64_t r0 = c * kChunkRows, rows = std::min(kChunkRows, m - r0);
    uint8_t* q = s.codes.data() + thread * kChunkRows * K;    // (rows, K)
    int32_t* acc = s.acc.data() + thread * kChunkRows * OUT;  // (rows, OUT)
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(x + (r0 + r) * x_stride, K, inv_scale, grid.zero_point, lo, hi, q + r * K);
    w.packed.run_serial(q, rows, acc, path, s.widened.data() + thread * widen);
    const float* cs = s.col_scale.data();
    const int32_t* cz = s.col_zero.data();
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + (r0 + r) * y_stride;
      const int32_t* ar = acc + r * OUT;
      for (int64_t o = 0; o < OUT; ++o) {
        float v = static_cast<float>(ar[o] - cz[o]) * cs[o];
        if (bias) v += bias[o];
        yr[o] = accumulate ? yr[o] + v : v;
      }
    }
    if (after_rows) after_rows(r0, r0 + rows);
  };
  if (threads == 1) {
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c, 0);
  } else {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c = 0; c < chunks; ++c) run_chunk(c, omp_get_thread_num());
  }
  return grid;
}

// ---------------------------------------------------------------------------------------- layers

void DynamicModule::set_kernel_path(KernelPath path) {
  QATLAB_CHECK(dynamic_gemm_path_supported(path),
               type() + ": kernel path " + kernel_path_name(path) + " cannot run the dynamic int8 matmul here (best: " +
                   kernel_path_name(best_dynamic_gemm_path()) + ")");
  path_ = path;
}

void DynamicModule::check_inference(const Tensor& x) const {
  QATLAB_CHECK(!(grad_enabled() && x.defined() && x.requires_grad()),
               type() + " is inference-only (int8 weights, no backward) but its input requires a gradient: "
                        "run it under NoGradGuard");
}

DynamicLinear::DynamicLinear(const Linear& linear)
    : DynamicModule("DynamicLinear"),
      in_features(linear.in_features),
      out_features(linear.out_features),
      weight(DynamicWeight::quantize(linear.weight)) {
  if (linear.bias.defined()) {
    bias = linear.bias.detach().clone();  // (OUT)
    register_buffer("bias", &bias);
  }
  set_training(false);
}

Tensor DynamicLinear::forward(const Tensor& x) {
  check_inference(x);
  QATLAB_CHECK(x.defined() && x.dim() == 2 && x.size(1) == in_features,
               "DynamicLinear: input must be (N, " + std::to_string(in_features) + "), got " + opt_shape(x));
  const int64_t n = x.size(0);
  Tensor y = Tensor::empty({n, out_features});  // (N, OUT)
  dynamic_matmul(x.data(), n, in_features, weight, bias.defined() ? bias.data() : nullptr, y.data(), out_features,
                 false, path_, scratch_, "DynamicLinear");
  return y;
}

std::string DynamicLinear::describe() const {
  return "in=" + std::to_string(in_features) + ", out=" + std::to_string(out_features) +
         ", bias=" + (bias.defined() ? "true" : "false") + ", int8 weights per row, " + kernel_path_name(path_);
}

DynamicLstm::DynamicLstm(const LSTM& lstm) : DynamicModule("DynamicLSTM"), options(lstm.options) {
  const int64_t L = options.num_layers;
  weight_ih.reserve(L);
  weight_hh.reserve(L);
  bias_ih.resize(L);
  bias_hh.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    weight_ih.push_back(DynamicWeight::quantize(lstm.weight_ih[l]));
    weight_hh.push_back(DynamicWeight::quantize(lstm.weight_hh[l]));
    if (options.bias) {
      const std::string suffix = "_l" + std::to_string(l);
      bias_ih[l] = lstm.bias_ih[l].detach().clone();  // (4H)
      bias_hh[l] = lstm.bias_hh[l].detach().clone();  // (4H)
      register_buffer("bias_ih" + suffix, &bias_ih[l]);
      register_buffer("bias_hh" + suffix, &bias_hh[l]);
    }
  }
  set_training(false);
}

std::vector<std::pair<std::string, DynamicWeight*>> DynamicLstm::dynamic_weights() {
  std::vector<std::pair<std::string, DynamicWeight*>> out;
  for (int64_t l = 0; l < options.num_layers; ++l) {
    out.push_back({"weight_ih_l" + std::to_string(l), &weight_ih[l]});
    out.push_back({"weight_hh_l" + std::to_string(l), &weight_hh[l]});
  }
  return out;
}

std::string DynamicLstm::describe() const {
  return "in=" + std::to_string(options.input_size) + ", hidden=" + std::to_string(options.hidden_size) +
         ", layers=" + std::to_string(options.num_layers) +
         ", batch_first=" + (options.batch_first ? "true" : "false") + ", bias=" + (options.bias ? "true" : "false") +
         ", int8 weights per gate row, " + kernel_path_name(path_);
}

LstmOutput DynamicLstm::forward_seq(const Tensor& x, const Tensor& h0, const Tensor& c0) {
  check_inference(x);
  check_inference(h0);
  check_inference(c0);
  const int64_t L = options.num_layers, H = options.hidden_size, G = 4 * H;
  const bool bf = options.batch_first;
  QATLAB_CHECK(x.defined() && x.dim() == 3 && x.size(2) == options.input_size,
               std::string("DynamicLSTM: input must be ") + (bf ? "(N, T, " : "(T, N, ") +
                   std::to_string(options.input_size) + "), got " + opt_shape(x));
  const int64_t T = bf ? x.size(1) : x.size(0), N = bf ? x.size(0) : x.size(1);
  QATLAB_CHECK(T >= 1 && N >= 1, "DynamicLSTM: input " + shape_str(x.shape()) + " has no time step or no sample");
  const Shape state_shape{L, N, H};
  QATLAB_CHECK(!h0.defined() || h0.shape() == state_shape,
               "DynamicLSTM: h0 must be (L, N, H) = " + shape_str(state_shape) + ", got " + opt_shape(h0));
  QATLAB_CHECK(!c0.defined() || c0.shape() == state_shape,
               "DynamicLSTM: c0 must be (L, N, H) = " + shape_str(state_shape) + ", got " + opt_shape(c0));

  // Row (n, t) of a sequence buffer is n*T + t batch-first, t*N + n time-major (as in nn/lstm.cpp).
  const int64_t step_rows = bf ? 1 : N, batch_rows = bf ? T : 1;
  const int64_t NT = N * T;
  gates_.resize(NT * G);  // (N*T, G), sequence layout
  c_.resize(2 * N * H);   // (2, N, H): c_{t-1} and c_t, swapped every step
  bias_sum_.resize(G);    // (G)
  LstmOutput out;
  out.h_n = Tensor::empty(state_shape);  // (L, N, H)
  out.c_n = Tensor::empty(state_shape);  // (L, N, H)

  Tensor seq = x;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t in = seq.size(2);
    Tensor y = Tensor::empty(bf ? Shape{N, T, H} : Shape{T, N, H});
    const float* bias = nullptr;
    if (options.bias) {
      for (int64_t g = 0; g < G; ++g) bias_sum_[g] = bias_ih[l].data()[g] + bias_hh[l].data()[g];
      bias = bias_sum_.data();
    }
    // Input projections of every step at once, both biases included: gates = x W_ih^T + b_ih + b_hh.
    dynamic_matmul(seq.data(), NT, in, weight_ih[l], bias, gates_.data(), G, false, path_, scratch_, "DynamicLSTM");

    float* c_prev = c_.data();         // (N, H)
    float* c_next = c_.data() + N * H;  // (N, H)
    if (c0.defined())
      std::memcpy(c_prev, c0.data() + l * N * H, sizeof(float) * N * H);
    else
      std::fill(c_prev, c_next, 0.0f);
    const float* h_prev = h0.defined() ? h0.data() + l * N * H : nullptr;  // null: zeros
    int64_t h_prev_stride = H;
    const int64_t gate_stride = batch_rows * G, h_stride = batch_rows * H;
    // The cell of the current step on rows [r0, r1). One std::function per layer, pointing at `step`,
    // which each step re-aims: no closure is built (or allocated) per step.
    struct Step {
      float* g;  // N rows of G, gate_stride apart
      float* y;  // N rows of H, h_stride apart
      float* c_prev;
      float* c_next;
    } step{};
    const std::function<void(int64_t, int64_t)> cell = [&step, gate_stride, h_stride, H](int64_t r0, int64_t r1) {
      lstm_cell_forward(step.g + r0 * gate_stride, gate_stride, step.c_prev + r0 * H, step.c_next + r0 * H,
                        step.y + r0 * h_stride, h_stride, r1 - r0, H);
    };
    for (int64_t t = 0; t < T; ++t) {
      step = Step{gates_.data() + t * step_rows * G, y.data() + t * step_rows * H, c_prev, c_next};
      if (h_prev) {
        // gates_t += h_{t-1} W_hh^T on h_{t-1}'s own grid, then the cell, chunk by chunk.
        dynamic_matmul(h_prev, N, h_prev_stride, weight_hh[l], nullptr, step.g, gate_stride, true, path_, scratch_,
                       "DynamicLSTM", cell);
      } else {
        cell(0, N);  // h_{t-1} = 0 contributes nothing
      }
      h_prev = step.y;
      h_prev_stride = h_stride;
      std::swap(c_prev, c_next);
    }
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(out.h_n.data() + (l * N + n) * H, h_prev + n * h_prev_stride, sizeof(float) * H);
    std::memcpy(out.c_n.data() + l * N * H, c_prev, sizeof(float) * N * H);
    seq = y;
  }
  out.output = seq;
  return out;
}

// --------------------------------------------------------------------------------------- passes

DynamicModule* as_dynamic(Module& m) {
  return m.as<DynamicModule>();
}

namespace {

// The dynamic form of a Linear or LSTM, or null for any other module.
ModulePtr dynamic_form(const Module& m) {
  if (const Linear* linear = m.as<Linear>()) return std::make_shared<DynamicLinear>(*linear);
  if (const LSTM* lstm = m.as<LSTM>()) return std::make_shared<DynamicLstm>(*lstm);
  return nullptr;
}

}  // namespace

ModulePtr quantize_dynamic(const ModulePtr& model) {
  QATLAB_CHECK(model != nullptr, "quantize_dynamic: null model");
  if (ModulePtr root = dynamic_form(*model)) return root;
  // Names first, replacements after: the walk must not see a tree that changes under it. A replaced
  // Linear or LSTM has no children, so no name below one is ever visited.
  std::vector<std::pair<std::string, ModulePtr>> targets;
  for (const auto& [name, m] : model->named_modules(model))
    if (!name.empty() && (m->is<Linear>() || m->is<LSTM>())) targets.push_back({name, m});
  for (const auto& [name, m] : targets) model->set_submodule(name, dynamic_form(*m));
  model->eval();
  return model;
}

void set_dynamic_kernel_path(Module& model, KernelPath path) {
  if (DynamicModule* d = as_dynamic(model)) d->set_kernel_path(path);
  for (const auto& [name, child] : model.children()) set_dynamic_kernel_path(*child, path);
}

DynamicWeightBytes dynamic_weight_bytes(const ModulePtr& model) {
  DynamicWeightBytes b;
  for (const auto& [name, m] : model->named_modules(model))
    if (DynamicModule* d = as_dynamic(*m))
      for (const auto& [wname, w] : d->dynamic_weights()) {
        b.weights += w->packed.rows() * w->packed.cols();
        b.int8_bytes += w->bytes();
      }
  return b;
}

// ------------------------------------------------------------------------------------ model file

void save_dynamic_model(const std::string& path, const DynamicModelFile& file) {
  QATLAB_CHECK(file.model != nullptr, "save_dynamic_model: no model to save to " + path);
  atomic_save_h5(path, [&](H5File& f) {
    f.set_attr("/", "format", kDynamicModelFormat);
    f.set_attr("/", "format_version", kDynamicModelVersion);
    f.set_attr("/", "qatlab_version", QATLAB_VERSION);
    const NamedTensors state = file.model->state_dict();
    for (const auto& [name, t] : state) f.write_tensor("model/state/" + name, t);
    if (state.empty()) f.write_string("model/empty", "");
    f.set_attr("model", "name", file.model_name);
    f.set_attr("model", "channels", file.spec.channels);
    f.set_attr("model", "height", file.spec.height);
    f.set_attr("model", "width", file.spec.width);
    f.set_attr("model", "num_classes", file.spec.num_classes);
    f.set_attr("model", "dataset", file.dataset);
    if (!file.model_description.empty()) f.write_string("model/description", file.model_description);
    if (!file.data_mean.empty()) {
      f.set_attr_floats("model", "data_mean", {static_cast<int64_t>(file.data_mean.size())}, file.data_mean);
      f.set_attr_floats("model", "data_std", {static_cast<int64_t>(file.data_std.size())}, file.data_std);
    }
    if (!file.class_names.empty()) {
      f.set_attr("model", "class_names", join_lines(file.class_names));
    }
    int64_t index = 0;
    for (const auto& [name, m] : file.model->named_modules(file.model)) {
      DynamicModule* d = as_dynamic(*m);
      if (!d) continue;
      // Zero-padded indices keep the layers in order when h5py or h5dump list them alphabetically.
      std::string idx = std::to_string(index++);
      idx.insert(0, idx.size() < 3 ? 3 - idx.size() : 0, '0');
      const std::string g = "dynamic/" + idx;
      for (const auto& [wname, w] : d->dynamic_weights()) {
        f.write_ints<int8_t>(g + "/" + wname, w->shape(), w->packed.codes());
        f.write_floats(g + "/" + wname + "_scale", {w->packed.rows()}, w->scale);
      }
      f.set_attr(g, "module", name);
      f.set_attr(g, "kind", d->type());
    }
  });
}

bool is_dynamic_model_file(const std::string& path) {
  try {
    const H5File f = H5File::open_read(path);
    return f.has_attr("/", "format") && f.get_attr_string("/", "format") == kDynamicModelFormat;
  } catch (const std::exception&) {
    return false;
  }
}

DynamicModelFile load_dynamic_model(const std::string& path) {
  const H5File f = H5File::open_read(path);
  const auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  if (!f.has_attr("/", "format") || f.get_attr_string("/", "format") != kDynamicModelFormat)
    fail("not a qatlab dynamic model (no format attribute \"" + std::string(kDynamicModelFormat) + "\")");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version > kDynamicModelVersion)
    fail("dynamic model format version " + std::to_string(version) + " is newer than this qatlab reads (" +
         std::to_string(kDynamicModelVersion) + "): upgrade qatlab");
  if (version < 1) fail("invalid dynamic model format version " + std::to_string(version));

  DynamicModelFile file;
  file.model_name = printable(f.get_attr_string("model", "name"));
  file.spec.channels = f.get_attr_int("model", "channels");
  file.spec.height = f.get_attr_int("model", "height");
  file.spec.width = f.get_attr_int("model", "width");
  file.spec.num_classes = f.get_attr_int("model", "num_classes");
  file.dataset = printable(f.get_attr_string("model", "dataset"), 4096);
  if (f.has_attr("model", "data_mean") || f.has_attr("model", "data_std")) {
    file.data_mean = f.get_attr_floats("model", "data_mean");
    file.data_std = f.get_attr_floats("model", "data_std");
    if (static_cast<int64_t>(file.data_mean.size()) != file.spec.channels || file.data_std.size() != file.data_mean.size())
      fail("model: data_mean and data_std hold " + std::to_string(file.data_mean.size()) + " and " +
           std::to_string(file.data_std.size()) + " values, expected one per channel");
    for (size_t i = 0; i < file.data_mean.size(); ++i)
      if (!std::isfinite(file.data_mean[i]) || !std::isfinite(file.data_std[i]) || !(file.data_std[i] > 0))
        fail("model: stored normalisation of channel " + std::to_string(i) + " is not finite with std > 0");
  }
  if (f.has_attr("model", "class_names")) {
    const std::string text = f.get_attr_string("model", "class_names");
    for (const std::string& name : split_lines(text)) file.class_names.push_back(printable(name, 200));
    if (static_cast<int64_t>(file.class_names.size()) != file.spec.num_classes)
      fail("model: class_names names " + std::to_string(file.class_names.size()) + " classes, the model has " +
           std::to_string(file.spec.num_classes));
  }
  try {
    Rng unused(0);  // the initial values are replaced by the file's
    if (f.exists("model/description")) file.model_description = f.read_string("model/description");
    const ModelDescription description =
        file.model_description.empty()
            ? resolve_model(file.model_name)
            : parse_model_description(file.model_description, path + " (its stored model description)");
    file.model = quantize_dynamic(build_model(description, file.spec, unused));
  } catch (const std::invalid_argument& e) {
    fail(std::string("cannot rebuild the model: ") + e.what());
  }

  // The int8 matrices, layer by layer; every dynamic layer of the rebuilt model must be in the file.
  std::map<std::string, DynamicModule*> layers;
  for (const auto& [name, m] : file.model->named_modules(file.model))
    if (DynamicModule* d = as_dynamic(*m)) layers[name] = d;
  std::set<std::string> loaded;
  if (f.exists("dynamic")) {
    for (const std::string& idx : f.list("dynamic")) {
      const std::string g = "dynamic/" + idx;
      const std::string module = printable(f.get_attr_string(g, "module")), kind = printable(f.get_attr_string(g, "kind"));
      auto it = layers.find(module);
      if (it == layers.end()) fail(g + ": the model " + file.model_name + " has no dynamic layer '" + module + "'");
      if (it->second->type() != kind)
        fail(g + ": layer '" + module + "' is a " + kind + " in the file but a " + it->second->type() +
             " in the model");
      if (!loaded.insert(module).second) fail(g + ": layer '" + module + "' is stored twice");
      for (const auto& [wname, w] : it->second->dynamic_weights()) {
        Shape shape;
        const std::vector<int8_t> codes = f.read_ints<int8_t>(g + "/" + wname, &shape);
        if (shape != w->shape())
          fail(g + "/" + wname + ": codes are " + shape_str(shape) + ", layer '" + module + "' expects " +
               shape_str(w->shape()));
        const std::vector<float> scale = f.read_floats(g + "/" + wname + "_scale");
        try {
          *w = DynamicWeight::from_codes(codes, shape, scale);
        } catch (const std::invalid_argument& e) {
          fail(g + "/" + wname + ": " + e.what());
        }
      }
    }
  }
  for (const auto& [name, d] : layers)
    if (!loaded.count(name)) fail("dynamic layer '" + name + "' of model " + file.model_name + " is missing");

  std::map<std::string, Tensor> state;
  if (f.exists("model/state"))
    for (const std::string& name : f.list("model/state")) state[name] = f.read_tensor("model/state/" + name);
  try {
    file.model->load_state_dict(state);
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
  file.model->eval();
  return file;
}

}  // namespace qatlab
