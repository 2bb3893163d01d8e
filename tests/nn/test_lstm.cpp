// test_lstm.cpp: the LSTM layer against a step-by-step reference built from existing ops, its
// backward through time against finite differences and against the reference's autograd, shape
// errors, and the lstm-rows model.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, L layers.
#include "nn/lstm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/ops.h"
#include "nn/sequence_models.h"
#include "nn/zoo.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using test::check_gradients;
using test::GradCheckOptions;
using test::random_tensor;
using test::throws_with;

constexpr int64_t kN = 2, kIn = 3, kH = 4;

struct Config {
  int64_t layers;
  bool batch_first;
  int64_t steps;
};

std::string name(const Config& c) {
  return "L=" + std::to_string(c.layers) + (c.batch_first ? " batch_first" : " time_major") +
         " T=" + std::to_string(c.steps);
}

const std::vector<Config>& all_configs() {
  static const std::vector<Config> configs{{1, true, 1},  {1, true, 4},  {1, false, 1}, {1, false, 4},
                                           {2, true, 1},  {2, true, 4},  {2, false, 1}, {2, false, 4}};
  return configs;
}

LstmOptions options_for(const Config& c, int64_t in = kIn, int64_t hidden = kH) {
  LstmOptions o;
  o.input_size = in;
  o.hidden_size = hidden;
  o.num_layers = c.layers;
  o.batch_first = c.batch_first;
  return o;
}

Shape seq_shape(const Config& c, int64_t n, int64_t features) {
  return c.batch_first ? Shape{n, c.steps, features} : Shape{c.steps, n, features};
}

// The textbook LSTM, one step at a time, from existing autograd ops: the layer must agree with it in
// values and gradients.
LstmOutput reference_lstm(const LSTM& m, const Tensor& x, const Tensor& h0, const Tensor& c0) {
  const bool bf = m.options.batch_first;
  const int64_t L = m.options.num_layers, H = m.options.hidden_size;
  const int64_t T = bf ? x.size(1) : x.size(0), N = bf ? x.size(0) : x.size(1);
  const int64_t time_dim = bf ? 1 : 0;
  std::vector<Tensor> hs, cs;  // per layer (1, N, H)
  Tensor seq = x;
  for (int64_t l = 0; l < L; ++l) {
    Tensor h = h0.defined() ? reshape(slice(h0, 0, l, l + 1), {N, H}) : Tensor::zeros({N, H});
    Tensor c = c0.defined() ? reshape(slice(c0, 0, l, l + 1), {N, H}) : Tensor::zeros({N, H});
    std::vector<Tensor> steps;
    const int64_t features = seq.size(2);
    for (int64_t t = 0; t < T; ++t) {
      const Tensor xt = reshape(slice(seq, time_dim, t, t + 1), {N, features});
      const Tensor a = add(linear(xt, m.weight_ih[l], m.bias_ih[l]), linear(h, m.weight_hh[l], m.bias_hh[l]));
      const Tensor i = sigmoid(slice(a, 1, 0, H));
      const Tensor f = sigmoid(slice(a, 1, H, 2 * H));
      const Tensor g = tanh(slice(a, 1, 2 * H, 3 * H));
      const Tensor o = sigmoid(slice(a, 1, 3 * H, 4 * H));
      c = add(mul(f, c), mul(i, g));
      h = mul(o, tanh(c));
      steps.push_back(bf ? reshape(h, {N, 1, H}) : reshape(h, {1, N, H}));
    }
    seq = concat(steps, time_dim);
    hs.push_back(reshape(h, {1, N, H}));
    cs.push_back(reshape(c, {1, N, H}));
  }
  return {seq, concat(hs, 0), concat(cs, 0)};
}

// All three results in one flat tensor, so that one gradient check covers them together.
Tensor packed(const LstmOutput& r) {
  return concat({reshape(r.output, {-1}), reshape(r.h_n, {-1}), reshape(r.c_n, {-1})}, 0);
}

// Puts in[first..] into the module's parameters in registration order (the checker's perturbed leaves).
void set_parameters(LSTM& m, const std::vector<Tensor>& in, size_t first) {
  size_t k = first;
  for (int64_t l = 0; l < m.options.num_layers; ++l) {
    m.weight_ih[l] = in[k++];
    m.weight_hh[l] = in[k++];
    if (m.options.bias) {
      m.bias_ih[l] = in[k++];
      m.bias_hh[l] = in[k++];
    }
  }
}

std::vector<Tensor> parameters_of(const LSTM& m) {
  std::vector<Tensor> p;
  for (int64_t l = 0; l < m.options.num_layers; ++l) {
    p.push_back(m.weight_ih[l]);
    p.push_back(m.weight_hh[l]);
    if (m.options.bias) {
      p.push_back(m.bias_ih[l]);
      p.push_back(m.bias_hh[l]);
    }
  }
  return p;
}

TEST(Lstm, ParametersHavePyTorchNamesShapesAndInit) {
  Rng rng(1);
  LstmOptions o;
  o.input_size = 5;
  o.hidden_size = 16;
  o.num_layers = 2;
  LSTM m(o, rng);
  const std::vector<std::pair<std::string, Shape>> expected{
      {"weight_ih_l0", {64, 5}}, {"weight_hh_l0", {64, 16}}, {"bias_ih_l0", {64}}, {"bias_hh_l0", {64}},
      {"weight_ih_l1", {64, 16}}, {"weight_hh_l1", {64, 16}}, {"bias_ih_l1", {64}}, {"bias_hh_l1", {64}}};
  const NamedTensors params = m.named_parameters();
  ASSERT_EQ(params.size(), expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    EXPECT_EQ(params[k].first, expected[k].first);
    EXPECT_EQ(params[k].second.shape(), expected[k].second) << params[k].first;
    float lo = 1.0f, hi = -1.0f;
    for (float v : params[k].second.to_vector()) lo = std::min(lo, v), hi = std::max(hi, v);
    EXPECT_GE(lo, -0.25f) << params[k].first;  // U(-1/sqrt(16), 1/sqrt(16))
    EXPECT_LE(hi, 0.25f) << params[k].first;
    EXPECT_GT(hi - lo, 0.2f) << params[k].first;  // actually spread over the range
  }
  EXPECT_EQ(m.type(), "LSTM");

  o.bias = false;
  LSTM nobias(o, rng);
  EXPECT_EQ(nobias.named_parameters().size(), 4u);
}

TEST(Lstm, ForwardMatchesStepByStepReference) {
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(name(c));
    Rng rng(7);
    LSTM m(options_for(c), rng);
    const Tensor x = random_tensor(seq_shape(c, kN, kIn), rng);
    const Tensor h0 = random_tensor({c.layers, kN, kH}, rng);
    const Tensor c0 = random_tensor({c.layers, kN, kH}, rng);
    for (bool with_state : {false, true}) {
      const Tensor h = with_state ? h0 : Tensor(), cc = with_state ? c0 : Tensor();
      const LstmOutput got = m.forward_seq(x, h, cc);
      const LstmOutput want = reference_lstm(m, x, h, cc);
      EXPECT_TENSOR_NEAR(got.output, want.output, 1e-5);
      EXPECT_TENSOR_NEAR(got.h_n, want.h_n, 1e-5);
      EXPECT_TENSOR_NEAR(got.c_n, want.c_n, 1e-5);
      EXPECT_TENSOR_NEAR(m.forward(x), m.forward_seq(x).output, 0.0);
    }
  }
}

TEST(Lstm, HiddenStateIsTheLastStepOfTheOutput) {
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(name(c));
    Rng rng(3);
    LSTM m(options_for(c), rng);
    const LstmOutput r = m.forward_seq(random_tensor(seq_shape(c, kN, kIn), rng));
    ASSERT_EQ(r.h_n.shape(), (Shape{c.layers, kN, kH}));
    ASSERT_EQ(r.c_n.shape(), (Shape{c.layers, kN, kH}));
    const Tensor last = reshape(slice(r.output, c.batch_first ? 1 : 0, c.steps - 1, c.steps), {1, kN, kH});
    EXPECT_TENSOR_NEAR(slice(r.h_n, 0, c.layers - 1, c.layers), last, 0.0);
  }
}

TEST(Lstm, ZeroInitialStateEqualsPassingZeros) {
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(name(c));
    Rng rng(5);
    LSTM m(options_for(c), rng);
    const Tensor x = random_tensor(seq_shape(c, kN, kIn), rng);
    const Tensor zeros = Tensor::zeros({c.layers, kN, kH});
    const LstmOutput a = m.forward_seq(x), b = m.forward_seq(x, zeros, zeros);
    EXPECT_TENSOR_NEAR(a.output, b.output, 0.0);
    EXPECT_TENSOR_NEAR(a.h_n, b.h_n, 0.0);
    EXPECT_TENSOR_NEAR(a.c_n, b.c_n, 0.0);
  }
}

TEST(Lstm, GradientsMatchFiniteDifferences) {
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(name(c));
    Rng rng(11);
    LSTM m(options_for(c), rng);
    std::vector<Tensor> inputs{random_tensor(seq_shape(c, kN, kIn), rng), random_tensor({c.layers, kN, kH}, rng),
                               random_tensor({c.layers, kN, kH}, rng)};
    for (const Tensor& p : parameters_of(m)) inputs.push_back(p);
    EXPECT_GRADS_OK(
        [&](const std::vector<Tensor>& in) {
          set_parameters(m, in, 3);
          return packed(m.forward_seq(in[0], in[1], in[2]));
        },
        inputs);
  }
}

TEST(Lstm, GradientsMatchReferenceAutograd) {
  // Analytic against analytic: much tighter than finite differences, and on a wider layer.
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(name(c));
    Rng rng(13);
    LSTM m(options_for(c, 5, 8), rng);
    const Tensor x = random_tensor(seq_shape(c, 3, 5), rng);
    const Tensor h0 = random_tensor({c.layers, 3, 8}, rng), c0 = random_tensor({c.layers, 3, 8}, rng);
    std::vector<Tensor> base{x, h0, c0};
    for (const Tensor& p : parameters_of(m)) base.push_back(p);

    auto grads_of = [&](bool fused) {
      std::vector<Tensor> leaves;
      for (const Tensor& t : base) leaves.push_back(t.clone().set_requires_grad(true));
      set_parameters(m, leaves, 3);
      const LstmOutput r = fused ? m.forward_seq(leaves[0], leaves[1], leaves[2])
                                 : reference_lstm(m, leaves[0], leaves[1], leaves[2]);
      Tensor out = packed(r);
      Rng seed_rng(99);
      out.backward(random_tensor(out.shape(), seed_rng));
      std::vector<Tensor> g;
      for (const Tensor& t : leaves) g.push_back(t.grad());
      return g;
    };
    const std::vector<Tensor> fused = grads_of(true), ref = grads_of(false);
    for (size_t k = 0; k < fused.size(); ++k) {
      SCOPED_TRACE("input " + std::to_string(k));
      ASSERT_TRUE(fused[k].defined());
      EXPECT_TENSOR_NEAR(fused[k], ref[k], 2e-5);
    }
  }
}

TEST(Lstm, CellStateAloneCarriesGradient) {
  // A loss on c_n only: the output's own gradient is zero and everything flows in through c_last.
  const Config c{2, true, 4};
  Rng rng(17);
  LSTM m(options_for(c), rng);
  std::vector<Tensor> inputs{random_tensor(seq_shape(c, kN, kIn), rng)};
  for (const Tensor& p : parameters_of(m)) inputs.push_back(p);
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) {
        set_parameters(m, in, 1);
        return m.forward_seq(in[0]).c_n;
      },
      inputs);
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) {
        set_parameters(m, in, 1);
        return m.forward_seq(in[0]).h_n;
      },
      inputs);
}

TEST(Lstm, WithoutBiasMatchesReferenceAndGradients) {
  const Config c{1, false, 3};
  Rng rng(19);
  LstmOptions o = options_for(c);
  o.bias = false;
  LSTM m(o, rng);
  const Tensor x = random_tensor(seq_shape(c, kN, kIn), rng);
  EXPECT_TENSOR_NEAR(m.forward_seq(x).output, reference_lstm(m, x, {}, {}).output, 1e-5);
  std::vector<Tensor> inputs{x};
  for (const Tensor& p : parameters_of(m)) inputs.push_back(p);
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) {
        set_parameters(m, in, 1);
        return m.forward_seq(in[0]).output;
      },
      inputs);
}

TEST(Lstm, LargeBatchIsSplitIntoBlocksIndependentlyOfThreads) {
  // 70 samples span three row blocks, and the layer is large enough to run in parallel.
  const Config c{1, true, 5};
  Rng rng(23);
  LSTM m(options_for(c, 24, 32), rng);
  const Tensor x = random_tensor(seq_shape(c, 70, 24), rng);
  EXPECT_TENSOR_NEAR(m.forward_seq(x).output, reference_lstm(m, x, {}, {}).output, 1e-5);

  auto run = [&](int threads) {
    const int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor xl = x.clone().set_requires_grad(true);
    for (Tensor* p : {&m.weight_ih[0], &m.weight_hh[0], &m.bias_ih[0]}) p->zero_grad();
    Tensor out = m.forward_seq(xl).output;
    Rng seed_rng(5);
    out.backward(random_tensor(out.shape(), seed_rng));
    omp_set_num_threads(before);
    return std::vector<Tensor>{out.detach(), xl.grad().clone(), m.weight_ih[0].grad().clone(),
                               m.weight_hh[0].grad().clone(), m.bias_ih[0].grad().clone()};
  };
  m.weight_ih[0].set_requires_grad(true);
  m.weight_hh[0].set_requires_grad(true);
  m.bias_ih[0].set_requires_grad(true);
  m.bias_hh[0].set_requires_grad(true);
  // Two threads first, so that they meet gradient buffers that do not exist yet.
  const std::vector<Tensor> two = run(2), one = run(1);
  for (size_t k = 0; k < one.size(); ++k) EXPECT_TENSOR_NEAR(one[k], two[k], 0.0) << "result " << k;
}

TEST(Lstm, BadShapesAndOptionsThrowNamingThem) {
  Rng rng(29);
  LSTM m(options_for({2, true, 4}), rng);
  EXPECT_TRUE(throws_with([&] { m.forward_seq(Tensor::zeros({2, 4})); }, {"(N, T, 3)", "(2, 4)"}));
  EXPECT_TRUE(throws_with([&] { m.forward_seq(Tensor::zeros({2, 4, 5})); }, {"(N, T, 3)", "(2, 4, 5)"}));
  EXPECT_TRUE(throws_with([&] { m.forward_seq(Tensor::zeros({2, 0, 3})); }, {"no time step", "(2, 0, 3)"}));
  const Tensor x = Tensor::zeros({2, 4, 3});
  EXPECT_TRUE(throws_with([&] { m.forward_seq(x, Tensor::zeros({1, 2, 4})); }, {"h0", "(2, 2, 4)", "(1, 2, 4)"}));
  EXPECT_TRUE(throws_with([&] { m.forward_seq(x, {}, Tensor::zeros({2, 3, 4})); }, {"c0", "(2, 2, 4)", "(2, 3, 4)"}));

  LSTM tm(options_for({1, false, 4}), rng);
  EXPECT_TRUE(throws_with([&] { tm.forward_seq(Tensor::zeros({4, 2, 7})); }, {"(T, N, 3)", "(4, 2, 7)"}));

  LstmOptions bad = options_for({1, true, 1});
  bad.num_layers = 0;
  EXPECT_TRUE(throws_with([&] { LSTM l(bad, rng); }, {"num_layers", "0"}));
  bad = options_for({1, true, 1}, 3, 0);
  EXPECT_TRUE(throws_with([&] { LSTM l(bad, rng); }, {"hidden_size", "0"}));

  // The layer op itself.
  const Tensor w_ih = Tensor::zeros({16, 3}), w_hh = Tensor::zeros({16, 4}), b = Tensor::zeros({16});
  EXPECT_TRUE(throws_with([&] { lstm_layer(x, {}, {}, Tensor::zeros({16, 5}), w_hh, b, b, true); },
                          {"weight_ih", "(16, 5)", "(2, 4, 3)"}));
  EXPECT_TRUE(throws_with([&] { lstm_layer(x, {}, {}, w_ih, Tensor::zeros({16, 3}), b, b, true); },
                          {"weight_hh", "(16, 4)", "(16, 3)"}));
  EXPECT_TRUE(throws_with([&] { lstm_layer(x, {}, {}, w_ih, w_hh, b, {}, true); }, {"both biases"}));
  EXPECT_TRUE(throws_with([&] { lstm_layer(x, {}, {}, w_ih, w_hh, Tensor::zeros({12}), Tensor::zeros({12}), true); },
                          {"(16)", "(12)"}));
  EXPECT_TRUE(throws_with([&] { lstm_layer(x, Tensor::zeros({4, 2}), {}, w_ih, w_hh, b, b, true); },
                          {"h0", "(2, 4)", "(4, 2)"}));
}

// --------------------------------------------------------------------------------------- lstm-rows

TEST(RowLstm, ZooModelHasLstmAndHead) {
  Rng rng(31);
  const ModulePtr model = make_model("lstm-rows", ModelSpec{}, rng);
  EXPECT_EQ(model->type(), "RowLstmClassifier");
  const NamedTensors params = model->named_parameters();
  ASSERT_EQ(params.size(), 6u);
  EXPECT_EQ(params[0].first, "lstm.weight_ih_l0");
  EXPECT_EQ(params[0].second.shape(), (Shape{512, 28}));
  EXPECT_EQ(params[1].second.shape(), (Shape{512, 128}));
  EXPECT_EQ(params[4].first, "head.weight");
  EXPECT_EQ(params[4].second.shape(), (Shape{10, 128}));
  const Tensor logits = model->forward(random_tensor({3, 1, 28, 28}, rng));
  EXPECT_EQ(logits.shape(), (Shape{3, 10}));
  EXPECT_TRUE(throws_with([&] { model->forward(Tensor::zeros({3, 1, 27, 28})); }, {"(N, 1, 28, 28)", "(3, 1, 27, 28)"}));
}

TEST(RowLstm, ReadsRowsOfAllChannelsAndClassifiesTheLastStep) {
  // 3 channels of 5x4: 5 steps of 12 features; compare with rows laid out by hand.
  Rng rng(37);
  RowLstmClassifier model(3, 5, 4, 6, 7, rng);
  const Tensor x = random_tensor({2, 3, 5, 4}, rng);
  Tensor rows = Tensor::empty({2, 5, 12});
  const float* px = x.data();
  float* pr = rows.data();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 5; ++h)
        for (int64_t w = 0; w < 4; ++w) pr[(n * 5 + h) * 12 + c * 4 + w] = px[((n * 3 + c) * 5 + h) * 4 + w];
  EXPECT_TENSOR_NEAR(image_rows(x), rows, 0.0);

  const Tensor seq = model.child("lstm")->forward(rows);  // (2, 5, 6)
  const Tensor want = model.child("head")->forward(reshape(slice(seq, 1, 4, 5), {2, 6}));
  EXPECT_TENSOR_NEAR(model.forward(x), want, 0.0);
}

TEST(RowLstm, TrainsOnATinyProblem) {
  // The class is which half of the image is bright; a few plain SGD steps must lower the loss.
  Rng rng(41);
  RowLstmClassifier model(1, 6, 6, 8, 2, rng);
  Tensor x = Tensor::zeros({8, 1, 6, 6});
  std::vector<int32_t> labels(8);
  for (int64_t n = 0; n < 8; ++n) {
    labels[n] = static_cast<int32_t>(n % 2);
    for (int64_t h = 0; h < 6; ++h)
      for (int64_t w = 0; w < 6; ++w) x.data()[(n * 6 + h) * 6 + w] = ((h < 3) == (n % 2 == 0)) ? 1.0f : 0.0f;
  }
  for (Tensor p : model.parameters()) p.set_requires_grad(true);
  const float first = cross_entropy(model.forward(x), labels).item();
  for (int step = 0; step < 60; ++step) {
    for (Tensor p : model.parameters()) p.zero_grad();
    cross_entropy(model.forward(x), labels).backward();
    NoGradGuard no_grad;
    for (Tensor p : model.parameters()) {
      float* v = p.data();
      const float* g = p.grad().data();
      for (int64_t i = 0; i < p.numel(); ++i) v[i] -= 0.5f * g[i];
    }
  }
  const float last = cross_entropy(model.forward(x), labels).item();
  EXPECT_LT(last, 0.5f * first) << "loss " << first << " -> " << last;
}

}  // namespace
}  // namespace qatlab
