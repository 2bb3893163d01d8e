// test_qat_lstm.cpp: the QAT LSTM: in float mode it is the float LSTM (values and, by gradient check, its
// backward); prepare_qat turns a RowLstmClassifier into a QAT LSTM and a head on its hidden grid, with
// per-layer bit overrides; the integer graph convert emits equals the exact-mode simulation bit for bit
// (W8A8, W4A4, two layers, per-tensor weights; reference and optimized kernels; after save/load), and the
// plain simulation stays close to it; the cell range, checkpoints and errors.
//
// Shape letters: N batch, T time steps, IN input features, H hidden size, G = 4H, L layers.
#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/optim.h"
#include "nn/sequence_models.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qat_lstm.h"

namespace qatlab {
namespace {

using test::random_input;
using test::simulation_codes;
using test::train_a_little;

using test::throws_with;


QConfig bits(int w, int a, bool per_channel = true, const std::vector<std::string>& layer_bits = {}) {
  return QConfig::from_options(w, a, per_channel, "minmax", "ema", layer_bits);
}

// A QAT LSTM over a float LSTM with observer quantizers (weights per gate row, 8 bits).
std::shared_ptr<QatLstm> qat_lstm_of(const LSTM& lstm) {
  const int64_t L = lstm.options.num_layers, G = 4 * lstm.options.hidden_size;
  std::vector<std::shared_ptr<Quantizer>> wih, whh, hidden;
  const QScheme weights{8, true, true, true, 0, true}, activations{8, true, false, false, 0, false};
  for (int64_t l = 0; l < L; ++l) {
    wih.push_back(std::make_shared<FakeQuantize>(weights, ObserverKind::MinMax, G));
    whh.push_back(std::make_shared<FakeQuantize>(weights, ObserverKind::MinMax, G));
    hidden.push_back(std::make_shared<FakeQuantize>(activations, ObserverKind::Ema));
  }
  return QatLstm::from_lstm(lstm, wih, whh, hidden);
}

LstmOptions lstm_options(int64_t in, int64_t hidden, int64_t layers) {
  LstmOptions o;
  o.input_size = in;
  o.hidden_size = hidden;
  o.num_layers = layers;
  return o;
}



// ---------------------------------------------------------------------------------- float mode

TEST(QatLstm, FloatModeIsTheFloatLstm) {
  Rng rng(1);
  LSTM lstm(lstm_options(5, 6, 2), rng);
  auto q = qat_lstm_of(lstm);
  set_fake_quant_enabled(*q, false);
  EXPECT_FALSE(q->quantizing());
  const Tensor x = random_input({3, 4, 5}, rng);
  NoGradGuard no_grad;
  EXPECT_TENSOR_NEAR(q->forward(x), lstm.forward(x), 2e-6);
  // Training mode watched the cell state of both layers on the way.
  EXPECT_TRUE(q->has_cell_range());
  EXPECT_GT(q->cell_absmax(0), 0.05f);
  EXPECT_GT(q->cell_absmax(1), 0.05f);
  // The tensors are the float LSTM's own.
  EXPECT_TRUE(q->weight_ih[1].same(lstm.weight_ih[1]));
  EXPECT_TRUE(q->bias_hh[0].same(lstm.bias_hh[0]));
}

TEST(QatLstm, GradientCheckInFloatMode) {
  Rng rng(2);
  LSTM lstm(lstm_options(3, 2, 2), rng);
  auto q = qat_lstm_of(lstm);
  set_fake_quant_enabled(*q, false);
  q->eval();
  const Tensor x = random_input({2, 3, 3}, rng);
  std::vector<Tensor> inputs{x};
  for (int64_t l = 0; l < 2; ++l)
    for (const Tensor* t : {&lstm.weight_ih[l], &lstm.weight_hh[l], &lstm.bias_ih[l], &lstm.bias_hh[l]})
      inputs.push_back(*t);
  EXPECT_GRADS_OK(
      [&](const std::vector<Tensor>& in) {
        for (int64_t l = 0; l < 2; ++l) {
          q->weight_ih[l] = in[1 + 4 * l];
          q->weight_hh[l] = in[2 + 4 * l];
          q->bias_ih[l] = in[3 + 4 * l];
          q->bias_hh[l] = in[4 + 4 * l];
        }
        return q->forward(in[0]);
      },
      inputs);
}

// Quantized, the backward is the float one at the quantized values (straight through the roundings): at
// 8 bits it points where the float gradient points.
TEST(QatLstm, QuantizedGradientFollowsTheFloatGradient) {
  Rng rng(12);
  LSTM lstm(lstm_options(4, 5, 2), rng);
  auto q = qat_lstm_of(lstm);
  auto input_quant = std::make_shared<FakeQuantize>(QScheme{8, true, false, false, 0, false});
  q->input_quant = input_quant;
  const Tensor x = random_input({4, 6, 4}, rng);
  {
    NoGradGuard no_grad;
    q->train();
    input_quant->train();
    q->forward((*input_quant)(x));  // ranges
    q->eval();
    input_quant->eval();
  }
  const Tensor xq = (*input_quant)(x);
  const Tensor r = random_input({4, 6, 5}, rng);
  const auto gradients = [&] {
    for (const Tensor& p : q->parameters()) p.zero_grad();
    sum(mul(q->forward(xq), r)).backward();
    std::vector<float> g;
    for (const Tensor& p : q->parameters()) {
      const std::vector<float> v = p.grad().to_vector();
      g.insert(g.end(), v.begin(), v.end());
    }
    return g;
  };
  const std::vector<float> quantized = gradients();
  set_fake_quant_enabled(*q, false);
  const std::vector<float> exact_float = gradients();
  double dot = 0, nq = 0, nf = 0;
  for (size_t i = 0; i < quantized.size(); ++i)
    dot += double(quantized[i]) * exact_float[i], nq += double(quantized[i]) * quantized[i],
        nf += double(exact_float[i]) * exact_float[i];
  EXPECT_GT(nf, 1e-6);
  EXPECT_GT(dot / std::sqrt(nq * nf), 0.98) << "cosine of the two gradients";
  EXPECT_NE(quantized, exact_float);
}

// The hidden observer sees the whole sequence: its range covers the late steps' larger values.
TEST(QatLstm, HiddenObserverCoversTheWholeSequence) {
  Rng rng(13);
  LSTM lstm(lstm_options(3, 8, 1), rng);
  for (Tensor* t : {&lstm.bias_ih[0], &lstm.bias_hh[0]})  // a state that grows over the steps
    for (int64_t r = 0; r < t->numel(); ++r) t->data()[r] = r >= 8 && r < 16 ? 2.0f : 0.5f;
  auto q = qat_lstm_of(lstm);
  set_fake_quant_enabled(*q, false);
  const Tensor x = random_input({4, 12, 3}, rng, 0.3f);
  NoGradGuard no_grad;
  const Tensor h = q->forward(x);  // training mode: observes
  float late = 0.0f, first = 0.0f;
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t j = 0; j < 8; ++j) {
      first = std::max(first, std::abs(h.data()[(n * 12) * 8 + j]));
      late = std::max(late, std::abs(h.data()[(n * 12 + 11) * 8 + j]));
    }
  ASSERT_GT(late, 1.5f * first) << "the test needs a state that grows";
  const QParams qp = q->hidden_quant(0).qparams();
  const float hi = qp.scale[0] * static_cast<float>(qp.quant_max - qp.zero_point[0]);
  const float lo = qp.scale[0] * static_cast<float>(qp.quant_min - qp.zero_point[0]);
  EXPECT_GE(std::max(hi, -lo), late * 0.999f);
}

// ------------------------------------------------------------------------------------ prepare_qat

TEST(QatLstm, PrepareTurnsRowLstmIntoQatLstmAndHeadOnItsHiddenGrid) {
  Rng rng(3);
  const ModulePtr float_model = std::make_shared<RowLstmClassifier>(1, 5, 4, 6, 3, rng);
  const Tensor w_ih = static_cast<const LSTM&>(*float_model->child("lstm")).weight_ih[0];
  auto model = prepare_qat(float_model, bits(8, 8, true, {"lstm=4:6"}));
  const ModulePtr lstm_m = model->submodule("body.lstm");
  ASSERT_EQ(lstm_m->type(), "QatLstm");
  ASSERT_EQ(model->submodule("body.head")->type(), "QatLinear");
  const auto& lstm = static_cast<const QatLstm&>(*lstm_m);
  const auto& head = static_cast<const QatLayer&>(*model->submodule("body.head"));
  EXPECT_TRUE(lstm.weight_ih[0].same(w_ih));
  EXPECT_EQ(lstm.input_quant.get(), &model->input_quant());  // image rows are the input's codes
  EXPECT_EQ(head.input_quant, lstm.hidden_quant_ptr(0));
  EXPECT_EQ(lstm.weight_ih_quant(0).scheme().bits, 4);
  EXPECT_EQ(lstm.weight_hh_quant(0).scheme().bits, 4);
  EXPECT_EQ(lstm.hidden_quant(0).scheme().bits, 6);
  EXPECT_TRUE(lstm.weight_ih_quant(0).scheme().per_channel);
  EXPECT_EQ(head.weight_quant().scheme().bits, 8);
  EXPECT_EQ(model->input_quant().scheme().bits, 8);
  // By type too; names in the state dict are the float model's.
  auto by_type = prepare_qat(std::make_shared<RowLstmClassifier>(1, 5, 4, 6, 3, rng), bits(8, 8, true, {"LSTM=5:"}));
  EXPECT_EQ(static_cast<const QatLstm&>(*by_type->submodule("body.lstm")).weight_hh_quant(0).scheme().bits, 5);
  bool found = false;
  for (const auto& [name, t] : model->state_dict()) found = found || name == "body.lstm.weight_hh_l0";
  EXPECT_TRUE(found);
}

// ------------------------------------------------------------------------- convert, bit for bit

struct Case {
  const char* name;
  int64_t layers;
  QConfig qconfig;
};

class QatLstmConvert : public ::testing::TestWithParam<Case> {};

// RowLstmClassifier (C = 2 channels of 5 x 4, hidden 6, 3 classes), its LSTM given `layers` layers.
std::shared_ptr<QatModel> small_row_lstm(int64_t layers, const QConfig& qc, Rng& rng) {
  auto m = std::make_shared<RowLstmClassifier>(2, 5, 4, 6, 3, rng);
  if (layers != 1) m->set_submodule("lstm", std::make_shared<LSTM>(lstm_options(8, 6, layers), rng));
  return prepare_qat(m, qc);
}

TEST_P(QatLstmConvert, IntegerGraphEqualsExactSimulationBitForBit) {
  const Case& c = GetParam();
  Rng rng(42);
  const Shape in_shape{6, 2, 5, 4};
  auto model = small_row_lstm(c.layers, c.qconfig, rng);
  train_a_little(model, in_shape, 3, rng, 4, 0.05f);
  const Int8Graph graph = convert(*model, {2, 5, 4});
  int lstm_ops = 0;
  for (const Int8Op& op : graph.ops) lstm_ops += op.kind == Int8OpKind::Lstm;
  EXPECT_EQ(lstm_ops, c.layers);
  EXPECT_EQ(graph.ops[1].kind, Int8OpKind::ImageRows);
  const std::string path =
      (std::filesystem::temp_directory_path() / (std::string("qatlab_qat_lstm_") + c.name + ".h5")).string();
  graph.save(path);
  const Int8Graph loaded = Int8Graph::load(path);
  std::filesystem::remove(path);
  EXPECT_EQ(loaded.summary(), graph.summary());

  int64_t differing = 0, total = 0, worst = 0;
  for (int trial = 0; trial < 3; ++trial) {
    const Tensor x = random_input(in_shape, rng);
    const std::vector<int8_t> exact = simulation_codes(model, x, graph.output_grid(), true);
    Shape shape;
    EXPECT_EQ(graph.run_codes(x, &shape, KernelPath::Reference), exact) << c.name << " reference kernels";
    EXPECT_EQ(shape, (Shape{6, 3}));
    EXPECT_EQ(graph.run_codes(x, &shape, best_kernel_path()), exact) << c.name << " optimized kernels";
    EXPECT_EQ(loaded.run_codes(x, &shape, best_kernel_path()), exact) << c.name << " after save/load";
    EXPECT_EQ(loaded.run_codes(x, &shape, KernelPath::Reference), exact) << c.name << " after save/load, reference";
    const std::vector<int8_t> sim = simulation_codes(model, x, graph.output_grid(), false);
    for (size_t i = 0; i < sim.size(); ++i) {
      differing += sim[i] != exact[i], ++total;
      worst = std::max<int64_t>(worst, std::abs(sim[i] - exact[i]));
    }
  }
  // The plain simulation differs only by float rounding in the matmuls, the gates' requantization and the
  // hidden requantization: most logits agree exactly, the rest by a code or two (measured: 1 to 4 of 54
  // differ, by 1).
  EXPECT_LE(differing, total / 6) << c.name << ": " << differing << " of " << total;
  EXPECT_LE(worst, 2) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    RandomRowLstms, QatLstmConvert,
    ::testing::Values(Case{"w8a8", 1, bits(8, 8)}, Case{"w4a4", 1, bits(4, 4)}, Case{"w8a8_two_layers", 2, bits(8, 8)},
                      Case{"w4a4_two_layers", 2, bits(4, 4)}, Case{"w6a7_per_tensor", 1, bits(6, 7, false)},
                      Case{"w3a4_full_range", 1, [] {
                             QConfig q = bits(3, 4);
                             q.set_weight_range(WeightRange::Full);  // weight codes [-4, 3]
                             return q;
                           }()}),
    [](const auto& info) { return std::string(info.param.name); });

// ----------------------------------------------------------------------- the cell range and state

TEST(QatLstm, CellRangeComesFromTrainingAndTravelsInTheCheckpoint) {
  Rng rng(4);
  const Shape in_shape{5, 2, 5, 4};
  auto model = small_row_lstm(1, bits(8, 8), rng);
  auto& lstm = static_cast<QatLstm&>(*model->submodule("body.lstm"));
  EXPECT_FALSE(lstm.has_cell_range());
  {
    // Evaluating a quantized LSTM before any training batch: no cell grid yet.
    LSTM f(lstm_options(3, 4, 1), rng);
    auto q = qat_lstm_of(f);
    q->eval();
    try {
      NoGradGuard no_grad;
      q->forward(random_input({2, 3, 3}, rng));
      ADD_FAILURE() << "evaluating before any range was observed should fail";
    } catch (const std::logic_error& e) {
      EXPECT_NE(std::string(e.what()).find("no cell-state range"), std::string::npos) << e.what();
    }
  }
  train_a_little(model, in_shape, 3, rng, 2, 0.05f);
  ASSERT_TRUE(lstm.has_cell_range());
  const float absmax = lstm.cell_absmax(0);
  EXPECT_GT(absmax, 0.01f);
  EXPECT_LT(absmax, std::ldexp(1.0f, 15 - lstm.cell_frac_bits(0)));
  EXPECT_GE(absmax, std::ldexp(1.0f, 14 - lstm.cell_frac_bits(0)));  // the finest grid that covers it

  // With the observers off, training leaves the range where it is.
  set_observers_enabled(*model, false);
  EXPECT_FALSE(lstm.cell_observer_enabled());
  train_a_little(model, in_shape, 3, rng, 2, 0.05f);
  EXPECT_EQ(lstm.cell_absmax(0), absmax);
  set_observers_enabled(*model, true);

  // A model rebuilt from the state dict computes the same codes.
  Rng other(99);
  auto copy = small_row_lstm(1, bits(8, 8), other);
  copy->load_state_dict(test::as_map(model->state_dict()));
  copy->eval();
  const Tensor x = random_input(in_shape, rng);
  const Int8Graph graph = convert(*model, {2, 5, 4});
  const QParams& grid = graph.output_grid();
  EXPECT_EQ(simulation_codes(copy, x, grid, true), simulation_codes(model, x, grid, true));
  EXPECT_EQ(simulation_codes(copy, x, grid, false), simulation_codes(model, x, grid, false));
}

// Post-training calibration: observers watch the float model (fake-quant off), then quantization goes on.
TEST(QatLstm, CalibratesWithFakeQuantOffThenQuantizes) {
  Rng rng(6);
  const Shape in_shape{5, 2, 5, 4};
  auto model = small_row_lstm(1, bits(8, 8), rng);
  auto& lstm = static_cast<QatLstm&>(*model->submodule("body.lstm"));
  set_fake_quant_enabled(*model, false);
  model->train();
  const Tensor x = random_input(in_shape, rng);
  Tensor float_out;
  {
    NoGradGuard no_grad;
    float_out = model->forward(x);
  }
  EXPECT_TRUE(lstm.has_cell_range());
  set_fake_quant_enabled(*model, true);
  set_observers_enabled(*model, false);
  model->eval();
  NoGradGuard no_grad;
  const Tensor quant_out = model->forward(x);
  EXPECT_TRUE(lstm.quantizing());
  // Close to the float model, but not equal: it quantizes now.
  EXPECT_TENSOR_NEAR(quant_out, float_out, 0.03);
  bool any_different = false;
  for (int64_t i = 0; i < quant_out.numel(); ++i) any_different |= quant_out.data()[i] != float_out.data()[i];
  EXPECT_TRUE(any_different);
}

// ----------------------------------------------------------------------------------------- errors

TEST(QatLstm, BadShapesAndSettingsGiveOneLineErrors) {
  Rng rng(7);
  LSTM lstm(lstm_options(5, 4, 2), rng);
  auto q = qat_lstm_of(lstm);
  EXPECT_TRUE(throws_with([&] { q->forward(random_input({2, 3, 4}, rng)); }, {"QatLstm", "(N, T, 5)", "(2, 3, 4)"}));
  EXPECT_TRUE(throws_with([&] { q->forward(random_input({2, 5}, rng)); }, {"QatLstm", "(2, 5)"}));
  const auto fq = [] { return std::make_shared<FakeQuantize>(QScheme{8, true, false, false, 0, false}); };
  EXPECT_TRUE(throws_with([&] { QatLstm::from_lstm(lstm, {fq()}, {fq(), fq()}, {fq(), fq()}); },
                          {"QatLstm", "expected 2 quantizers", "got 1, 2 and 2"}));
  LstmOptions time_major = lstm_options(5, 4, 1);
  time_major.batch_first = false;
  LSTM tm(time_major, rng);
  EXPECT_TRUE(throws_with([&] { QatLstm::from_lstm(tm, {fq()}, {fq()}, {fq()}); }, {"QatLstm", "batch-first"}));
  // Exact mode needs the grid of the LSTM's input, which prepare_qat sets.
  q->eval();
  EXPECT_TRUE(throws_with([&] { q->set_exact(true), q->forward(random_input({2, 3, 5}, rng)); },
                          {"exact mode", "no input quantizer"}));
}

}  // namespace
}  // namespace qatlab
