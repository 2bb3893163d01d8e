// qat_lstm.cpp: the QAT LSTM's forward (per-step fused op with its backward, the hidden quantizer between
// steps), its exact mode, and its lowering to the integer LSTM.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate rows, L layers,
// R rows of a block of the batch.
#include "quant/qat/qat_lstm.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "core/ops.h"
#include "nn/lstm_cell.h"
#include "quant/engine/lowered_layer.h"
#include "quant/engine/requantize.h"
#include "quant/qat/bias.h"
#include "quant/qat/prepare_rules.h"
#include "quant/qat/walk.h"

namespace qatlab {

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMatrix = Eigen::Map<RowMatrix>;
using ConstMapMatrix = Eigen::Map<const RowMatrix>;

// Batch rows per block of a step; fixed (not derived from the thread count) so results do not depend on it.
constexpr int64_t kRowBlock = 32;
// Gate rows per chunk of the weight-gradient GEMM; fixed for the same reason.
constexpr int64_t kGateChunk = 128;
// Below this many multiply-adds per step a step runs on one thread.
constexpr int64_t kParallelMacs = int64_t{1} << 18;

// fn(begin, end) over [0, total) in chunks of `chunk`, spread over OpenMP threads when `parallel`.
template <class Fn>
void for_chunks(int64_t total, int64_t chunk, bool parallel, const Fn& fn) {
  const int64_t count = (total + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (parallel && count > 1)
  for (int64_t k = 0; k < count; ++k) fn(k * chunk, std::min(total, (k + 1) * chunk));
}

// How a step computes: the float LSTM, or the quantized one with the cell grid 2^-cell_frac_bits.
struct StepSettings {
  bool quantize = false;
  int cell_frac_bits = 0;
};

// What a step keeps for its backward.
struct StepTape {
  std::unique_ptr<float[]> act;  // (N, G): the gate activations i, f, g, o (on the 2^-15 grid when quantizing)
  std::vector<float> c_zero;     // (N, H) zeros: c_{-1}, at t = 0 only
};

// The quantized pointwise part of rows [n0, n1) of a step. act (N, G) holds h_{t-1} W_hh^T on entry and
// the activations on return; gx (N, T, G); c_prev, c, h (N, H). Returns the largest |c_t| before
// saturation. gate_codes: scratch of G.
float quantized_cell_rows(const float* gx, int64_t t, int64_t T, int64_t n0, int64_t n1, int64_t H, int k,
                          float* act, const float* c_prev, float* c, float* h, int16_t* gate_codes) {
  const int64_t G = 4 * H;
  const float gate_scale = std::ldexp(1.0f, kLstmGateFracBits);  // 1 / (gate grid step)
  const float act_step = std::ldexp(1.0f, -kLstmActFracBits);
  const float cell_scale = std::ldexp(1.0f, k), cell_step = std::ldexp(1.0f, -k);
  const float hidden_step = std::ldexp(1.0f, -2 * kLstmActFracBits);
  const int16_t* sig = lstm_sigmoid_table();
  const int16_t* tnh = lstm_tanh_table();
  float largest = 0.0f;
  for (int64_t n = n0; n < n1; ++n) {
    float* a = act + n * G;                   // (G)
    const float* x_part = gx + (n * T + t) * G;  // (G)
    // Each half onto Q3.12 with quantize_value's rounding (ties to even, saturating), then the int16 add.
    for (int64_t r = 0; r < G; ++r) {
      const auto from_input = static_cast<int16_t>(quantize_value(x_part[r], gate_scale, 0, INT16_MIN, INT16_MAX));
      const auto from_hidden = static_cast<int16_t>(quantize_value(a[r], gate_scale, 0, INT16_MIN, INT16_MAX));
      gate_codes[r] = lstm_gate_sum(from_input, from_hidden);
    }
    for (int64_t j = 0; j < H; ++j) {
      const int16_t i = sig[gate_codes[j] + 32768], f = sig[gate_codes[H + j] + 32768],
                    g = tnh[gate_codes[2 * H + j] + 32768], o = sig[gate_codes[3 * H + j] + 32768];
      // c_{t-1} is on the cell grid already (this forward's k), so this is exact.
      const auto cp = static_cast<int16_t>(quantize_value(c_prev[n * H + j], cell_scale, 0, INT16_MIN, INT16_MAX));
      const int32_t c_wide = lstm_cell_update(f, cp, i, g, k);
      const int16_t cs = saturate_int16(c_wide);
      largest = std::max(largest, std::abs(static_cast<float>(c_wide)) * cell_step);
      const int32_t oh = lstm_hidden_product(o, tnh[lstm_cell_to_gate_grid(cs, k) + 32768]);
      a[j] = i * act_step, a[H + j] = f * act_step, a[2 * H + j] = g * act_step, a[3 * H + j] = o * act_step;
      c[n * H + j] = cs * cell_step;
      h[n * H + j] = static_cast<float>(oh) * hidden_step;
    }
  }
  return largest;
}

// One LSTM step as an autograd op.
//   gx (N, T, G): x W_ih^T + b of every step; this step reads row (n, t).
//   h_prev (N, H): the (quantized) h_{t-1}, or undefined at t = 0 (zeros).
//   w_hh (G, H): the (quantized) recurrent weights.
//   state_prev (2, N, H): the previous step's output, or undefined at t = 0 (c_{-1} = 0).
// Returns the state (2, N, H): [0] h_t = o * tanh(c_t) before the hidden quantizer, [1] c_t. Folds the
// largest |c_t| into *cell_absmax.
// Backward: lstm_cell_backward on the activations and cell states the forward produced (straight through
// the roundings and saturations when quantizing), then dgates into gx's row, dgates W_hh into h_prev,
// dgates^T h_prev into w_hh and the gradient reaching c_{t-1} into state_prev[1].
Tensor lstm_step(const Tensor& gx, int64_t t, const Tensor& h_prev, const Tensor& w_hh, const Tensor& state_prev,
                 const StepSettings& s, float* cell_absmax) {
  const int64_t N = gx.size(0), T = gx.size(1), G = gx.size(2), H = G / 4;
  Tensor state = Tensor::empty({2, N, H});
  auto tape = std::make_shared<StepTape>();
  tape->act = std::make_unique_for_overwrite<float[]>(N * G);
  if (!state_prev.defined()) tape->c_zero.assign(static_cast<size_t>(N * H), 0.0f);
  const float* c_prev = state_prev.defined() ? state_prev.data() + N * H : tape->c_zero.data();  // (N, H)
  float* h = state.data();
  float* c = state.data() + N * H;
  float* act = tape->act.get();
  const float* x_part = gx.data();
  const bool parallel = N * G * H >= kParallelMacs;
  const int64_t blocks = (N + kRowBlock - 1) / kRowBlock;
  std::vector<float> block_largest(static_cast<size_t>(blocks), 0.0f);  // (blocks)
  for_chunks(N, kRowBlock, parallel, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    MapMatrix a(act + n0 * G, rows, G);
    if (h_prev.defined())
      a.noalias() = ConstMapMatrix(h_prev.data() + n0 * H, rows, H) * ConstMapMatrix(w_hh.data(), G, H).transpose();
    else
      a.setZero();
    float largest = 0.0f;
    if (s.quantize) {
      std::vector<int16_t> gate_codes(static_cast<size_t>(G));  // (G), once per block
      largest = quantized_cell_rows(x_part, t, T, n0, n1, H, s.cell_frac_bits, act, c_prev, c, h, gate_codes.data());
    } else {
      for (int64_t n = n0; n < n1; ++n)
        a.row(n - n0) += Eigen::Map<const Eigen::RowVectorXf>(x_part + (n * T + t) * G, G);
      lstm_cell_forward(a.data(), G, c_prev + n0 * H, c + n0 * H, h + n0 * H, H, rows, H);
      largest = Eigen::Map<const Eigen::ArrayXf>(c + n0 * H, rows * H).abs().maxCoeff();
    }
    block_largest[n0 / kRowBlock] = largest;
  });
  for (float v : block_largest) *cell_absmax = std::max(*cell_absmax, v);

  // The state's values are captured as a buffer, not as a Tensor: the state owns this node.
  std::shared_ptr<float[]> state_values = state.impl()->data;
  record_op(state, "qat_lstm_step", {gx, h_prev, w_hh, state_prev},
            [gx, t, h_prev, w_hh, state_prev, tape, state_values, N, T, G, H, parallel](const Tensor& grad_out) {
              const float* d_state = grad_out.data();                                // (2, N, H)
              std::vector<float> dc(d_state + N * H, d_state + 2 * N * H);           // (N, H): reaching c_t
              auto dgates = std::make_unique_for_overwrite<float[]>(N * G);          // (N, G)
              const float* c_prev = state_prev.defined() ? state_prev.data() + N * H : tape->c_zero.data();
              const float* c = state_values.get() + N * H;
              for_chunks(N, kRowBlock, parallel, [&](int64_t n0, int64_t n1) {
                lstm_cell_backward(tape->act.get() + n0 * G, G, c_prev + n0 * H, c + n0 * H, d_state + n0 * H,
                                   dc.data() + n0 * H, dgates.get() + n0 * G, G, n1 - n0, H);
              });
              const ConstMapMatrix dg(dgates.get(), N, G);
              if (gx.requires_grad()) {
                float* g = gx.mutable_grad();  // (N, T, G)
                for (int64_t n = 0; n < N; ++n)
                  Eigen::Map<Eigen::RowVectorXf>(g + (n * T + t) * G, G) += dg.row(n);
              }
              if (h_prev.defined() && h_prev.requires_grad()) {
                float* g = h_prev.mutable_grad();  // (N, H)
                const ConstMapMatrix whh(w_hh.data(), G, H);
                for_chunks(N, kRowBlock, parallel, [&](int64_t n0, int64_t n1) {
                  MapMatrix(g + n0 * H, n1 - n0, H).noalias() += dg.middleRows(n0, n1 - n0) * whh;
                });
              }
              if (h_prev.defined() && w_hh.requires_grad()) {
                float* g = w_hh.mutable_grad();  // (G, H)
                const ConstMapMatrix hp(h_prev.data(), N, H);
                for_chunks(G, kGateChunk, parallel, [&](int64_t g0, int64_t g1) {
                  MapMatrix(g + g0 * H, g1 - g0, H).noalias() += dg.middleCols(g0, g1 - g0).transpose() * hp;
                });
              }
              if (state_prev.defined() && state_prev.requires_grad()) {
                float* g = state_prev.mutable_grad() + N * H;  // the c half of (2, N, H)
                for (int64_t i = 0; i < N * H; ++i) g[i] += dc[i];
              }
            });
  return state;
}

std::string layer_name(const char* what, int64_t layer) { return what + std::string("_l") + std::to_string(layer); }

void check_activation_grid(const QParams& qp, const std::string& what) {
  qp.validate();
  QATLAB_CHECK(!qp.per_channel(), "integer LSTM: " + what + " must be quantized per tensor");
  QATLAB_CHECK(qp.quant_min >= -128 && qp.quant_max <= 127,
               "integer LSTM: " + what + " codes [" + std::to_string(qp.quant_min) + ", " +
                   std::to_string(qp.quant_max) + "] do not fit int8 (use a signed scheme)");
}

void check_weight_grid(const QParams& qp, int64_t rows, const std::string& what) {
  qp.validate();
  QATLAB_CHECK(is_int8_weight_range(qp.quant_min, qp.quant_max),
               "integer LSTM: " + what + " must be signed symmetric within [-127, 127], got codes [" +
                   std::to_string(qp.quant_min) + ", " + std::to_string(qp.quant_max) + "]");
  QATLAB_CHECK(!qp.per_channel() || (qp.axis == 0 && static_cast<int64_t>(qp.scale.size()) == rows),
               "integer LSTM: " + what + " per channel must have " + std::to_string(rows) +
                   " scales along axis 0 (one per gate row), got " + std::to_string(qp.scale.size()) + " along axis " +
                   std::to_string(qp.axis));
  for (int32_t z : qp.zero_point) QATLAB_CHECK(z == 0, "integer LSTM: " + what + " zero points must be 0 (symmetric)");
}

// Weight codes per gate row, with the fake-quant's rounding.
std::vector<int8_t> weight_codes(const Tensor& w, const QParams& qp) {
  const int64_t rows = w.size(0), cols = w.size(1);
  std::vector<int8_t> q(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / qp.scale[qp.per_channel() ? r : 0];
    for (int64_t k = 0; k < cols; ++k)
      q[r * cols + k] = static_cast<int8_t>(quantize_weight_value(w.data()[r * cols + k], inv, qp));
  }
  return q;
}

}  // namespace

// ------------------------------------------------------------------------------------------ QatLstm

QatLstm::QatLstm(const LstmOptions& o) : QatNode("QatLstm"), options(o) {}

std::shared_ptr<QatLstm> QatLstm::from_lstm(const LSTM& lstm, std::vector<std::shared_ptr<Quantizer>> weight_ih_quant,
                                            std::vector<std::shared_ptr<Quantizer>> weight_hh_quant,
                                            std::vector<std::shared_ptr<Quantizer>> hidden_quant) {
  const LstmOptions& o = lstm.options;
  const int64_t L = o.num_layers;
  QATLAB_CHECK(o.batch_first, "QatLstm: the LSTM must be batch-first (N, T, F); time-major LSTMs are not quantized");
  const auto count_ok = [L](const std::vector<std::shared_ptr<Quantizer>>& v) {
    if (static_cast<int64_t>(v.size()) != L) return false;
    for (const auto& q : v)
      if (!q) return false;
    return true;
  };
  QATLAB_CHECK(count_ok(weight_ih_quant) && count_ok(weight_hh_quant) && count_ok(hidden_quant),
               "QatLstm: expected " + std::to_string(L) + " quantizers of each kind (one per layer), got " +
                   std::to_string(weight_ih_quant.size()) + ", " + std::to_string(weight_hh_quant.size()) + " and " +
                   std::to_string(hidden_quant.size()) + " (or a null one)");
  std::shared_ptr<QatLstm> m(new QatLstm(o));
  m->weight_ih.resize(L);
  m->weight_hh.resize(L);
  m->bias_ih.resize(L);
  m->bias_hh.resize(L);
  // Shallow handles: training the QAT LSTM trains the float LSTM's tensors, nothing is copied. The vectors
  // are sized before any pointer into them is registered.
  for (int64_t l = 0; l < L; ++l) {
    m->weight_ih[l] = lstm.weight_ih[l];
    m->weight_hh[l] = lstm.weight_hh[l];
    m->bias_ih[l] = lstm.bias_ih[l];
    m->bias_hh[l] = lstm.bias_hh[l];
    m->register_parameter(layer_name("weight_ih", l), &m->weight_ih[l]);
    m->register_parameter(layer_name("weight_hh", l), &m->weight_hh[l]);
    if (o.bias) {
      m->register_parameter(layer_name("bias_ih", l), &m->bias_ih[l]);
      m->register_parameter(layer_name("bias_hh", l), &m->bias_hh[l]);
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    m->register_module(layer_name("weight_ih_quant", l), std::move(weight_ih_quant[l]));
    m->register_module(layer_name("weight_hh_quant", l), std::move(weight_hh_quant[l]));
    m->register_module(layer_name("hidden_quant", l), std::move(hidden_quant[l]));
  }
  m->cell_absmax_ = Tensor::zeros({L});
  m->cell_batches_ = Tensor::zeros({1});
  m->cell_observer_enabled_ = Tensor::ones({1});
  m->register_buffer("cell_absmax", &m->cell_absmax_);
  m->register_buffer("cell_batches", &m->cell_batches_);
  m->register_buffer("cell_observer_enabled", &m->cell_observer_enabled_);
  return m;
}

Quantizer& QatLstm::weight_ih_quant(int64_t l) const {
  return static_cast<Quantizer&>(*child(layer_name("weight_ih_quant", l)));
}
Quantizer& QatLstm::weight_hh_quant(int64_t l) const {
  return static_cast<Quantizer&>(*child(layer_name("weight_hh_quant", l)));
}
Quantizer& QatLstm::hidden_quant(int64_t l) const {
  return static_cast<Quantizer&>(*child(layer_name("hidden_quant", l)));
}
std::shared_ptr<Quantizer> QatLstm::hidden_quant_ptr(int64_t l) const {
  return std::static_pointer_cast<Quantizer>(child(layer_name("hidden_quant", l)));
}

bool QatLstm::quantizing() const {
  for (int64_t l = 0; l < num_layers(); ++l)
    if (!weight_ih_quant(l).quantizing() || !weight_hh_quant(l).quantizing() || !hidden_quant(l).quantizing())
      return false;
  return true;
}

void QatLstm::enable_cell_observer(bool on) { cell_observer_enabled_.data()[0] = on ? 1.0f : 0.0f; }
bool QatLstm::cell_observer_enabled() const { return cell_observer_enabled_.data()[0] != 0.0f; }
bool QatLstm::has_cell_range() const { return cell_batches_.data()[0] > 0.0f; }

float QatLstm::cell_absmax(int64_t l) const {
  QATLAB_CHECK(l >= 0 && l < num_layers(),
               "QatLstm: layer " + std::to_string(l) + " of " + std::to_string(num_layers()));
  return cell_absmax_.data()[l];
}

int QatLstm::cell_frac_bits(int64_t l) const {
  if (!has_cell_range())
    throw std::logic_error(
        "QatLstm has no cell-state range yet: run training batches with its observer on, or load a checkpoint");
  const float v = cell_absmax(l);
  QATLAB_CHECK(std::isfinite(v) && v >= 0.0f, "QatLstm: cell_absmax[" + std::to_string(l) + "] = " +
                                                  std::to_string(v) + ", expected a finite value >= 0");
  return lstm_cell_frac_bits(v);
}

Tensor QatLstm::combined_bias(int64_t l) const {
  NoGradGuard no_grad;
  if (!bias_ih[l].defined()) return Tensor::zeros({4 * hidden_size()});
  return add(bias_ih[l], bias_hh[l]);
}

std::string QatLstm::describe() const {
  std::string s = "in=" + std::to_string(input_size()) + ", hidden=" + std::to_string(hidden_size()) +
                  ", layers=" + std::to_string(num_layers());
  if (has_cell_range()) {
    s += ", cell 2^-" + std::to_string(cell_frac_bits(0)) + " (|c| <= " + std::to_string(cell_absmax(0)) + ")";
  } else {
    s += ", cell range unset";
  }
  if (!cell_observer_enabled()) s += ", cell observer off";
  if (exact_) s += ", exact";
  return s;
}

Tensor QatLstm::forward(const Tensor& x) {
  const int64_t L = num_layers();
  QATLAB_CHECK(x.defined() && x.dim() == 3 && x.size(2) == input_size() && x.size(0) >= 1 && x.size(1) >= 1,
               "QatLstm: input must be (N, T, " + std::to_string(input_size()) + ") with N, T >= 1, got " +
                   (x.defined() ? shape_str(x.shape()) : std::string("undefined")));
  if (exact_ && !training()) return forward_exact(x);
  const bool quantize = quantizing();
  const bool observe = training() && cell_observer_enabled();
  std::vector<float> largest(static_cast<size_t>(L), 0.0f);  // (L)
  const auto fold = [&] {
    for (int64_t l = 0; l < L; ++l) cell_absmax_.data()[l] = std::max(cell_absmax_.data()[l], largest[l]);
    cell_batches_.data()[0] += 1.0f;
    std::fill(largest.begin(), largest.end(), 0.0f);
  };
  if (quantize && !has_cell_range()) {
    // The first quantized training batch: one float pass (raw weights) to see the cell range the grid
    // must cover, and to show each hidden quantizer a whole float sequence first (an observer's first
    // range, a learned quantizer's initialisation), as a layer's output quantizer sees its first batch.
    if (!observe) cell_frac_bits(0);  // throws the "no range yet" error
    NoGradGuard no_grad;
    Tensor seq = x;
    for (int64_t l = 0; l < L; ++l) {
      seq = run_layer(l, seq, false, false, &largest[l]);
      hidden_quant(l)(seq);
    }
    fold();
  }
  Tensor seq = x;
  for (int64_t l = 0; l < L; ++l) seq = run_layer(l, seq, quantize, true, &largest[l]);
  if (observe) fold();
  return seq;
}

Tensor QatLstm::run_layer(int64_t l, const Tensor& x, bool quantize, bool call_quantizers, float* cell_absmax) {
  const int64_t N = x.size(0), T = x.size(1), IN = x.size(2), H = hidden_size(), G = 4 * H;
  const Tensor w_ih = call_quantizers ? weight_ih_quant(l)(weight_ih[l]) : weight_ih[l];  // (G, IN)
  const Tensor w_hh = call_quantizers ? weight_hh_quant(l)(weight_hh[l]) : weight_hh[l];  // (G, H)
  Tensor bias;                                                                            // (G) or undefined
  if (bias_ih[l].defined()) {
    bias = add(bias_ih[l], bias_hh[l]);
    const Quantizer* in_q = l == 0 ? input_quant.get() : &hidden_quant(l - 1);
    if (quantize && in_q && in_q->quantizing())
      bias = fake_quantize_bias(bias, in_q->qparams(), weight_ih_quant(l).qparams(), "lstm_bias_round");
  }
  const Tensor gx = reshape(linear(reshape(x, {N * T, IN}), w_ih, bias), {N, T, G});  // all steps at once
  const StepSettings settings{quantize, quantize ? cell_frac_bits(l) : 0};

  // An observing hidden quantizer watches the whole sequence once per batch, after the last step, like
  // any activation's observer watches its batch: observing step by step would average the ranges of the
  // steps (the early ones small) and clip the later ones. Meanwhile the steps quantize on its current grid.
  FakeQuantize* observer = nullptr;
  if (call_quantizers && training())
    if (FakeQuantize* fq = hidden_quant(l).as<FakeQuantize>(); fq && fq->observer_enabled()) observer = fq;
  struct ObserverPause {  // switched back on however the loop ends
    FakeQuantize* fq;
    explicit ObserverPause(FakeQuantize* q) : fq(q) { if (fq) fq->enable_observer(false); }
    ~ObserverPause() { if (fq) fq->enable_observer(true); }
  } pause(observer);

  Tensor state, h;                                        // (2, N, H), (N, H)
  std::vector<Tensor> steps(static_cast<size_t>(T));      // T of (N, 1, H)
  std::vector<Tensor> unquantized(observer ? T : 0);      // T of (N, 1, H): h_t before the quantizer
  for (int64_t t = 0; t < T; ++t) {
    state = lstm_step(gx, t, h, w_hh, state, settings, cell_absmax);
    h = reshape(slice(state, 0, 0, 1), {N, H});
    if (observer) unquantized[t] = reshape(h.detach(), {N, 1, H});
    if (call_quantizers) h = hidden_quant(l)(h);
    steps[t] = reshape(h, {N, 1, H});
  }
  if (observer) {
    NoGradGuard no_grad;
    observer->enable_observer(true);
    (*observer)(T == 1 ? unquantized[0] : concat(unquantized, 1));
  }
  return T == 1 ? steps[0] : concat(steps, 1);
}

Tensor QatLstm::forward_exact(const Tensor& x) {
  QATLAB_CHECK(input_quant != nullptr, "exact mode: QatLstm has no input quantizer (was it built by prepare_qat?)");
  QParams grid = input_quant->qparams();
  std::vector<int8_t> codes = quantize_tensor(x, grid);  // (N, T, IN)
  Shape shape = x.shape();
  for (int64_t l = 0; l < num_layers(); ++l) {
    const LstmInt8Params p = lower_lstm_layer(*this, l, grid);
    const Shape out_shape = lstm_int8_output_shape(p, shape);
    std::vector<int8_t> out(static_cast<size_t>(shape_numel(out_shape)));  // (N, T, H)
    lstm_int8_reference(p, codes.data(), shape, out.data());
    codes = std::move(out);
    shape = out_shape;
    grid = p.hidden;
  }
  return dequantize_codes(codes, shape, grid);
}

// ------------------------------------------------------------------------------------------ lowering

LstmInt8Params lower_lstm_layer(const QatLstm& m, int64_t l, const QParams& input) {
  QATLAB_CHECK(l >= 0 && l < m.num_layers(),
               "lower_lstm_layer: layer " + std::to_string(l) + " of " + std::to_string(m.num_layers()));
  const int64_t H = m.hidden_size(), G = 4 * H, IN = l == 0 ? m.input_size() : H;
  check_activation_grid(input, "the input of layer " + std::to_string(l));
  LstmInt8Params p;
  p.input_size = IN;
  p.hidden_size = H;
  p.input = input;
  p.hidden = m.hidden_quant(l).qparams();
  check_activation_grid(p.hidden, "the hidden state of layer " + std::to_string(l));
  p.weights_ih = m.weight_ih_quant(l).qparams();
  p.weights_hh = m.weight_hh_quant(l).qparams();
  check_weight_grid(p.weights_ih, G, "weight_ih of layer " + std::to_string(l));
  check_weight_grid(p.weights_hh, G, "weight_hh of layer " + std::to_string(l));

  p.weight_ih = weight_codes(m.weight_ih[l], p.weights_ih);
  p.weight_hh = weight_codes(m.weight_hh[l], p.weights_hh);
  const Tensor b = m.combined_bias(l);  // (G)
  const double s_x = input.scale[0], s_h = p.hidden.scale[0];
  const double gate_scale = std::ldexp(1.0, kLstmGateFracBits);
  p.bias.resize(G);
  p.input_multiplier.resize(G);
  p.input_shift.resize(G);
  p.recurrent_multiplier.resize(G);
  p.recurrent_shift.resize(G);
  for (int64_t r = 0; r < G; ++r) {
    const double acc_x = s_x * p.weights_ih.scale[p.weights_ih.per_channel() ? r : 0];
    const double acc_h = s_h * p.weights_hh.scale[p.weights_hh.per_channel() ? r : 0];
    // The bias lives on the input side's accumulator grid (bias.h).
    p.bias[r] = quantize_bias(b.data()[r], acc_x);
    quantize_multiplier(acc_x * gate_scale, &p.input_multiplier[r], &p.input_shift[r]);
    quantize_multiplier(acc_h * gate_scale, &p.recurrent_multiplier[r], &p.recurrent_shift[r]);
  }
  p.input_offset = -input.zero_point[0];
  p.output_offset = p.hidden.zero_point[0];
  p.hidden_offset = -p.output_offset;
  p.quantized_activation_min = p.hidden.quant_min;
  p.quantized_activation_max = p.hidden.quant_max;
  p.cell_frac_bits = m.cell_frac_bits(l);
  quantize_multiplier(std::ldexp(1.0, -2 * kLstmActFracBits) / s_h, &p.hidden_multiplier, &p.hidden_shift);
  p.validate();
  return p;
}

// ------------------------------------------------- the walks (walk.h) and prepare_qat's rule (prepare_rules.h)

void QatLstm::lower(Lowering& walk, const std::string& name) const {
  for (int64_t l = 0; l < num_layers(); ++l) {
    Int8Op op;
    op.kind = Int8OpKind::Lstm;
    op.name = num_layers() == 1 ? name : name + ".l" + std::to_string(l);
    op.lstm = lower_lstm_layer(*this, l, walk.at.grid);
    const QParams hidden = op.lstm.hidden;
    walk.emit(std::move(op), hidden);
  }
}

void QatLstm::describe_node(Description& walk, const std::string& name) const { Description::refuse(*this, name); }

namespace {

// The LSTM reads the current grid (layer 0's input); each layer gets weight quantizers per gate row
// (settings of the name or of type "LSTM") and a hidden-state quantizer, and the last layer's hidden
// grid is where the sequence leaves.
PrepareStep qat_lstm(Preparer& p, const ModulePtr& m, const std::vector<ModulePtr>&, const std::string& name) {
  const LSTM& f = *m->as<LSTM>();
  const int64_t L = f.options.num_layers, G = 4 * f.options.hidden_size;
  std::vector<std::shared_ptr<Quantizer>> wih, whh, hidden;
  for (int64_t l = 0; l < L; ++l) {
    wih.push_back(Preparer::make_quantizer(p.weight_for(name, "LSTM"), G));
    whh.push_back(Preparer::make_quantizer(p.weight_for(name, "LSTM"), G));
    hidden.push_back(Preparer::make_quantizer(p.activation_for(name, "LSTM"), 1));
  }
  auto q = QatLstm::from_lstm(f, wih, whh, hidden);
  q->input_quant = p.grid;
  p.grid = q->hidden_quant_ptr(L - 1);
  return {q};
}

}  // namespace

void add_qat_lstm_rules(PrepareRules& rules) { rules.add<LSTM>(qat_lstm); }

}  // namespace qatlab
