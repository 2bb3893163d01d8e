// lstm.cpp: the LSTM layer: each layer one fused autograd op, forward over all steps and backward
// through time, on Eigen GEMMs over our row-major buffers.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H gate values, L layers.
// A sequence buffer (x, the output, the gates) is viewed as a matrix of N*T rows in the order of its
// tensor: row (n, t) is n*T + t when batch-first, t*N + n when time-major. The input projections and the
// weight gradients are single GEMMs over all N*T rows; a time step is N rows with a fixed stride.
#include "nn/lstm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "core/ops.h"
#include "nn/init.h"
#include "nn/lstm_cell.h"

namespace qatlab {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;
using MapMatrix = Eigen::Map<RowMatrix, Eigen::Unaligned, Stride>;
using ConstMapMatrix = Eigen::Map<const RowMatrix, Eigen::Unaligned, Stride>;

// Batch rows per block of the recurrence. Samples never interact, so blocks run the whole time loop
// independently (in parallel); the block size is fixed, not derived from the thread count, so results
// do not depend on it.
constexpr int64_t kRowBlock = 32;
// Rows (of N*T) or gate rows (of G) per chunk of the all-steps GEMMs; fixed for the same reason.
constexpr int64_t kGemmRows = 256;
constexpr int64_t kGateChunk = 128;
// Below this many multiply-adds a layer runs on one thread: forking a team costs more than it saves.
constexpr int64_t kParallelMacs = int64_t{1} << 20;

// Where the rows of a sequence buffer sit (see the top of the file).
struct SeqLayout {
  int64_t step_rows;   // rows between steps t and t+1 of one sample
  int64_t batch_rows;  // rows between samples n and n+1 at one step
  SeqLayout(int64_t T, int64_t N, bool batch_first)
      : step_rows(batch_first ? 1 : N), batch_rows(batch_first ? T : 1) {}
  int64_t row(int64_t t, int64_t n) const { return t * step_rows + n * batch_rows; }
};

// Rows n0 .. n0+count-1 of step t of a sequence buffer with `width` floats per row.
MapMatrix step_view(float* base, const SeqLayout& s, int64_t width, int64_t t, int64_t n0, int64_t count) {
  return MapMatrix(base + s.row(t, n0) * width, count, width, Stride(s.batch_rows * width));
}
ConstMapMatrix step_view(const float* base, const SeqLayout& s, int64_t width, int64_t t, int64_t n0,
                         int64_t count) {
  return ConstMapMatrix(base + s.row(t, n0) * width, count, width, Stride(s.batch_rows * width));
}
// A contiguous (rows, cols) block.
MapMatrix dense(float* p, int64_t rows, int64_t cols) { return MapMatrix(p, rows, cols, Stride(cols)); }
ConstMapMatrix dense(const float* p, int64_t rows, int64_t cols) {
  return ConstMapMatrix(p, rows, cols, Stride(cols));
}

// fn(begin, end) over [0, total) in chunks of `chunk`, spread over OpenMP threads when `parallel`.
template <class Fn>
void for_chunks(int64_t total, int64_t chunk, bool parallel, const Fn& fn) {
  const int64_t count = (total + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) if (parallel && count > 1)
  for (int64_t k = 0; k < count; ++k) fn(k * chunk, std::min(total, (k + 1) * chunk));
}

// The sizes of one layer run and how its loops are split.
struct LayerDims {
  int64_t N, T, IN, H, G;
  SeqLayout seq;
  bool parallel;
};

// What the forward keeps for the backward, shared by the two autograd nodes of a layer. The large
// buffers are left uninitialised (make_unique_for_overwrite): every element is written before it is
// read, and zeroing megabytes per batch shows up in profiles.
struct LstmTape {
  std::unique_ptr<float[]> gates;  // (N*T, G) in the sequence layout: the gate activations i, f, g, o
  std::vector<float> c;            // (T+1, N, H) time-major: c[0] = c0, c[t+1] = the cell state after step t
  std::vector<float> h0;           // (N, H): the initial h (zeros when none was given)
  // The gradient reaching c_last, handed from c_last's node to the output's node (see lstm_layer).
  std::vector<float> dc_last;  // (N, H) once used
  bool has_dc_last = false;
};

// Step t's gate pre-activations, second half: gates (R, G) already hold x_t W_ih^T + b_ih + b_hh from
// the all-steps GEMM; add h_{t-1} (R, H) W_hh^T.
void lstm_gate_preactivations(MapMatrix gates, const ConstMapMatrix& h_prev, const ConstMapMatrix& w_hh) {
  gates.noalias() += h_prev * w_hh.transpose();
}

// The forward over all steps. x (N*T, IN) and y (N*T, H) in the sequence layout; w_ih (G, IN),
// w_hh (G, H); bias (G) = b_ih + b_hh. tape.c[0] and tape.h0 hold the initial state on entry.
void forward_through_time(const LayerDims& d, const float* x, const float* w_ih, const float* w_hh,
                          const Eigen::RowVectorXf& bias, LstmTape& tape, float* y) {
  const int64_t N = d.N, T = d.T, IN = d.IN, H = d.H, G = d.G;
  const SeqLayout& seq = d.seq;
  float* gates = tape.gates.get();  // (N*T, G)
  float* cs = tape.c.data();        // (T+1, N, H)
  const float* h0 = tape.h0.data();  // (N, H)
  const ConstMapMatrix wih = dense(w_ih, G, IN), whh = dense(w_hh, G, H);

  // Input projections of every step at once, with both biases: gates = x W_ih^T + b_ih + b_hh.
  for_chunks(N * T, kGemmRows, d.parallel, [&](int64_t r0, int64_t r1) {
    MapMatrix g = dense(gates + r0 * G, r1 - r0, G);
    g.noalias() = dense(x + r0 * IN, r1 - r0, IN) * wih.transpose();
    g.rowwise() += bias;
  });

  // The recurrence, one block of samples at a time.
  for_chunks(N, kRowBlock, d.parallel, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    for (int64_t t = 0; t < T; ++t) {
      MapMatrix g = step_view(gates, seq, G, t, n0, rows);
      const ConstMapMatrix h_prev =
          t == 0 ? dense(h0 + n0 * H, rows, H) : step_view(static_cast<const float*>(y), seq, H, t - 1, n0, rows);
      lstm_gate_preactivations(g, h_prev, whh);
      lstm_cell_forward(g.data(), g.outerStride(), cs + (t * N + n0) * H, cs + ((t + 1) * N + n0) * H,
                        y + seq.row(t, n0) * H, seq.batch_rows * H, rows, H);
    }
  });
}

// Where the backward writes; null for what is not wanted. Every gradient is ADDED into.
struct LayerGrads {
  float* x = nullptr;                         // (N*T, IN), sequence layout
  float* h0 = nullptr;                        // (N, H)
  float* c0 = nullptr;                        // (N, H)
  float* w_ih = nullptr;                      // (G, IN)
  float* w_hh = nullptr;                      // (G, H)
  float* b_ih = nullptr, *b_hh = nullptr;     // (G)
};

// The backward through time. dy (N*T, H): the output's gradient, sequence layout. dc_last (N, H) or null:
// the gradient reaching the last cell state. x, y: the forward's input and output.
void backward_through_time(const LayerDims& d, const float* dy, const float* dc_last, const float* x,
                           const float* w_ih, const float* w_hh, const float* y, const LstmTape& tape,
                           const LayerGrads& grads) {
  const int64_t N = d.N, T = d.T, IN = d.IN, H = d.H, G = d.G, NT = N * T;
  const SeqLayout& seq = d.seq;
  const float* gates = tape.gates.get();  // (N*T, G)
  const float* cs = tape.c.data();        // (T+1, N, H)
  const ConstMapMatrix whh = dense(w_hh, G, H);

  // Buffers for the whole pass, allocated once.
  auto dgates = std::make_unique_for_overwrite<float[]>(NT * G);  // (N*T, G), sequence layout
  std::vector<float> dh(static_cast<size_t>(N * H));              // (N, H): gradient reaching h_t
  std::vector<float> dh_carry(static_cast<size_t>(N * H), 0.0f);  // (N, H): from step t+1 through W_hh
  std::vector<float> dc(static_cast<size_t>(N * H), 0.0f);        // (N, H): gradient reaching c_t
  if (dc_last) std::copy(dc_last, dc_last + N * H, dc.begin());

  // Steps T-1 .. 0, one block of samples at a time.
  for_chunks(N, kRowBlock, d.parallel, [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    MapMatrix dh_blk = dense(dh.data() + n0 * H, rows, H);
    MapMatrix carry_blk = dense(dh_carry.data() + n0 * H, rows, H);
    for (int64_t t = T - 1; t >= 0; --t) {
      dh_blk = step_view(dy, seq, H, t, n0, rows) + carry_blk;
      MapMatrix dg = step_view(dgates.get(), seq, G, t, n0, rows);
      lstm_cell_backward(gates + seq.row(t, n0) * G, seq.batch_rows * G, cs + (t * N + n0) * H,
                         cs + ((t + 1) * N + n0) * H, dh_blk.data(), dc.data() + n0 * H, dg.data(), dg.outerStride(),
                         rows, H);
      if (t > 0 || grads.h0) carry_blk.noalias() = dg * whh;  // gradient reaching h_{t-1}
    }
  });
  if (grads.h0) dense(grads.h0, N, H) += dense(static_cast<const float*>(dh_carry.data()), N, H);
  if (grads.c0) dense(grads.c0, N, H) += dense(static_cast<const float*>(dc.data()), N, H);

  // Everything else is one GEMM over all steps.
  const ConstMapMatrix dg_all = dense(static_cast<const float*>(dgates.get()), NT, G);
  if (grads.x) {
    for_chunks(NT, kGemmRows, d.parallel, [&](int64_t r0, int64_t r1) {
      dense(grads.x + r0 * IN, r1 - r0, IN).noalias() += dg_all.middleRows(r0, r1 - r0) * dense(w_ih, G, IN);
    });
  }
  if (grads.w_ih) {
    const ConstMapMatrix xs = dense(x, NT, IN);
    for_chunks(G, kGateChunk, d.parallel, [&](int64_t g0, int64_t g1) {
      dense(grads.w_ih + g0 * IN, g1 - g0, IN).noalias() += dg_all.middleCols(g0, g1 - g0).transpose() * xs;
    });
  }
  if (grads.w_hh) {
    // h_{t-1} for every row of the sequence layout, so that dW_hh is one GEMM.
    auto h_prev = std::make_unique_for_overwrite<float[]>(NT * H);  // (N*T, H)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < N; ++n)
        std::memcpy(h_prev.get() + seq.row(t, n) * H, t == 0 ? tape.h0.data() + n * H : y + seq.row(t - 1, n) * H,
                    sizeof(float) * H);
    const ConstMapMatrix hp = dense(static_cast<const float*>(h_prev.get()), NT, H);
    for_chunks(G, kGateChunk, d.parallel, [&](int64_t g0, int64_t g1) {
      dense(grads.w_hh + g0 * H, g1 - g0, H).noalias() += dg_all.middleCols(g0, g1 - g0).transpose() * hp;
    });
  }
  if (grads.b_ih || grads.b_hh) {
    // Both biases get the column sums of dgates, summed row by row (rows are contiguous).
    Eigen::RowVectorXf db = Eigen::RowVectorXf::Zero(G);  // (G)
    for (int64_t r = 0; r < NT; ++r) db += dg_all.row(r);
    if (grads.b_ih) Eigen::Map<Eigen::RowVectorXf>(grads.b_ih, G) += db;
    if (grads.b_hh) Eigen::Map<Eigen::RowVectorXf>(grads.b_hh, G) += db;
  }
}

std::string opt_shape(const Tensor& t) { return t.defined() ? shape_str(t.shape()) : "undefined"; }

// The gradient buffer of an input that wants one, else null. mutable_grad() allocates on first use, so
// this runs before any parallel loop.
float* grad_of(const Tensor& t) { return t.defined() && t.requires_grad() ? t.mutable_grad() : nullptr; }

}  // namespace

LstmLayerOutput lstm_layer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                           const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh, bool batch_first) {
  const char* layout = batch_first ? "(N, T, IN)" : "(T, N, IN)";
  QATLAB_CHECK(x.defined() && x.dim() == 3,
               std::string("lstm_layer: input must be ") + layout + ", got " + opt_shape(x));
  QATLAB_CHECK(w_ih.defined() && w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0,
               "lstm_layer: weight_ih must be (4H, IN), got " + opt_shape(w_ih));
  const int64_t T = batch_first ? x.size(1) : x.size(0);
  const int64_t N = batch_first ? x.size(0) : x.size(1);
  const int64_t IN = x.size(2), G = w_ih.size(0), H = G / 4;
  QATLAB_CHECK(T >= 1 && N >= 1, "lstm_layer: input " + shape_str(x.shape()) + " has no time step or no sample");
  QATLAB_CHECK(w_ih.size(1) == IN, "lstm_layer: weight_ih " + shape_str(w_ih.shape()) + " does not fit input " +
                                       shape_str(x.shape()) + ": expected (4H, " + std::to_string(IN) + ")");
  const Shape state_shape{N, H};
  QATLAB_CHECK(w_hh.defined() && w_hh.shape() == (Shape{G, H}),
               "lstm_layer: weight_hh must be " + shape_str({G, H}) + ", got " + opt_shape(w_hh));
  QATLAB_CHECK(b_ih.defined() == b_hh.defined(), "lstm_layer: give both biases or neither, got bias_ih " +
                                                     opt_shape(b_ih) + " and bias_hh " + opt_shape(b_hh));
  QATLAB_CHECK(!b_ih.defined() || (b_ih.shape() == Shape{G} && b_hh.shape() == Shape{G}),
               "lstm_layer: biases must be (" + std::to_string(G) + "), got " + opt_shape(b_ih) + " and " +
                   opt_shape(b_hh));
  QATLAB_CHECK(!h0.defined() || h0.shape() == state_shape,
               "lstm_layer: h0 must be " + shape_str(state_shape) + ", got " + opt_shape(h0));
  QATLAB_CHECK(!c0.defined() || c0.shape() == state_shape,
               "lstm_layer: c0 must be " + shape_str(state_shape) + ", got " + opt_shape(c0));

  const LayerDims dims{N, T, IN, H, G, SeqLayout(T, N, batch_first), N * T * G * (IN + H) >= kParallelMacs};
  auto tape = std::make_shared<LstmTape>();
  tape->gates = std::make_unique_for_overwrite<float[]>(N * T * G);
  tape->c.assign(static_cast<size_t>((T + 1) * N * H), 0.0f);
  tape->h0.assign(static_cast<size_t>(N * H), 0.0f);
  if (h0.defined()) std::memcpy(tape->h0.data(), h0.data(), sizeof(float) * N * H);
  if (c0.defined()) std::memcpy(tape->c.data(), c0.data(), sizeof(float) * N * H);
  Eigen::RowVectorXf bias = Eigen::RowVectorXf::Zero(G);  // (G): b_ih + b_hh
  if (b_ih.defined())
    bias = Eigen::Map<const Eigen::RowVectorXf>(b_ih.data(), G) + Eigen::Map<const Eigen::RowVectorXf>(b_hh.data(), G);

  Tensor y = Tensor::empty(batch_first ? Shape{N, T, H} : Shape{T, N, H});
  forward_through_time(dims, x.data(), w_ih.data(), w_hh.data(), bias, *tape, y.data());
  Tensor c_last = Tensor::empty(state_shape);  // (N, H)
  std::memcpy(c_last.data(), tape->c.data() + T * N * H, sizeof(float) * N * H);

  // The output's node runs the whole backward through time. It captures the output's values as a
  // buffer, not as a Tensor: the output owns the node.
  std::shared_ptr<float[]> y_values = y.impl()->data;
  record_op(y, "lstm_layer", {x, h0, c0, w_ih, w_hh, b_ih, b_hh},
            [x, h0, c0, w_ih, w_hh, b_ih, b_hh, tape, y_values, dims](const Tensor& grad_out) {
              LayerGrads grads;
              grads.x = grad_of(x);
              grads.h0 = grad_of(h0);
              grads.c0 = grad_of(c0);
              grads.w_ih = grad_of(w_ih);
              grads.w_hh = grad_of(w_hh);
              grads.b_ih = grad_of(b_ih);
              grads.b_hh = grad_of(b_hh);
              backward_through_time(dims, grad_out.data(), tape->has_dc_last ? tape->dc_last.data() : nullptr,
                                    x.data(), w_ih.data(), w_hh.data(), y_values.get(), *tape, grads);
              // Spent: a later backward through the same graph starts without it.
              std::fill(tape->dc_last.begin(), tape->dc_last.end(), 0.0f);
              tape->has_dc_last = false;
            });

  // c_last's gradient must join the same pass through time as the output's. Recording c_last as a
  // function of the output makes the engine run c_last's node first (it sits downstream of the
  // output); that node only hands its gradient to the tape and makes sure the output's node runs.
  record_op(c_last, "lstm_layer_c_last", {y}, [tape, y, N, H](const Tensor& grad_out) {
    if (tape->dc_last.empty()) tape->dc_last.assign(static_cast<size_t>(N * H), 0.0f);
    const float* g = grad_out.data();
    for (int64_t i = 0; i < N * H; ++i) tape->dc_last[i] += g[i];
    tape->has_dc_last = true;
    y.mutable_grad();  // allocates a zero gradient if the output itself was not used
  });
  return {y, c_last};
}

// ------------------------------------------------------------------------------------------ LSTM

LSTM::LSTM(const LstmOptions& o, Rng& rng) : Module("LSTM"), options(o) {
  QATLAB_CHECK(o.input_size > 0 && o.hidden_size > 0,
               "LSTM: input_size and hidden_size must be positive, got " + std::to_string(o.input_size) + " and " +
                   std::to_string(o.hidden_size));
  QATLAB_CHECK(o.num_layers >= 1, "LSTM: num_layers must be >= 1, got " + std::to_string(o.num_layers));
  const int64_t L = o.num_layers, H = o.hidden_size, G = 4 * H;
  weight_ih.resize(L);
  weight_hh.resize(L);
  bias_ih.resize(L);
  bias_hh.resize(L);
  const float bound = 1.0f / std::sqrt(static_cast<float>(H));
  for (int64_t l = 0; l < L; ++l) {
    const std::string suffix = "_l" + std::to_string(l);
    weight_ih[l] = Tensor::empty({G, l == 0 ? o.input_size : H});  // (4H, IN or H)
    init_uniform(weight_ih[l], bound, rng);
    register_parameter("weight_ih" + suffix, &weight_ih[l]);
    weight_hh[l] = Tensor::empty({G, H});  // (4H, H)
    init_uniform(weight_hh[l], bound, rng);
    register_parameter("weight_hh" + suffix, &weight_hh[l]);
    if (o.bias) {
      bias_ih[l] = Tensor::empty({G});  // (4H)
      init_uniform(bias_ih[l], bound, rng);
      register_parameter("bias_ih" + suffix, &bias_ih[l]);
      bias_hh[l] = Tensor::empty({G});  // (4H)
      init_uniform(bias_hh[l], bound, rng);
      register_parameter("bias_hh" + suffix, &bias_hh[l]);
    }
  }
}

LstmOutput LSTM::forward_seq(const Tensor& x, const Tensor& h0, const Tensor& c0) {
  const int64_t L = options.num_layers, H = options.hidden_size;
  const bool bf = options.batch_first;
  QATLAB_CHECK(x.defined() && x.dim() == 3 && x.size(2) == options.input_size,
               std::string("LSTM: input must be ") + (bf ? "(N, T, " : "(T, N, ") +
                   std::to_string(options.input_size) + "), got " + opt_shape(x));
  const int64_t T = bf ? x.size(1) : x.size(0), N = bf ? x.size(0) : x.size(1);
  QATLAB_CHECK(T >= 1 && N >= 1, "LSTM: input " + shape_str(x.shape()) + " has no time step or no sample");
  const Shape state_shape{L, N, H};
  QATLAB_CHECK(!h0.defined() || h0.shape() == state_shape,
               "LSTM: h0 must be (L, N, H) = " + shape_str(state_shape) + ", got " + opt_shape(h0));
  QATLAB_CHECK(!c0.defined() || c0.shape() == state_shape,
               "LSTM: c0 must be (L, N, H) = " + shape_str(state_shape) + ", got " + opt_shape(c0));

  // Layer l's slice of a (L, N, H) state, as (N, H).
  auto layer_state = [&](const Tensor& s, int64_t l) {
    return s.defined() ? reshape(L == 1 ? s : slice(s, 0, l, l + 1), {N, H}) : Tensor();
  };
  std::vector<Tensor> h_last, c_last;  // L tensors of (1, N, H)
  Tensor seq = x;
  for (int64_t l = 0; l < L; ++l) {
    LstmLayerOutput r = lstm_layer(seq, layer_state(h0, l), layer_state(c0, l), weight_ih[l], weight_hh[l],
                                   bias_ih[l], bias_hh[l], bf);
    seq = r.output;
    h_last.push_back(reshape(slice(seq, bf ? 1 : 0, T - 1, T), {1, N, H}));
    c_last.push_back(reshape(r.c_last, {1, N, H}));
  }
  LstmOutput out;
  out.output = seq;
  out.h_n = L == 1 ? h_last[0] : concat(h_last, 0);
  out.c_n = L == 1 ? c_last[0] : concat(c_last, 0);
  return out;
}

std::string LSTM::describe() const {
  return "in=" + std::to_string(options.input_size) + ", hidden=" + std::to_string(options.hidden_size) +
         ", layers=" + std::to_string(options.num_layers) + ", batch_first=" + (options.batch_first ? "true" : "false") +
         ", bias=" + (options.bias ? "true" : "false");
}

}  // namespace qatlab
