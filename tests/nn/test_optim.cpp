// test_optim.cpp: SGD, Adam and AdamW against their recurrences written out by hand, state save and
// restore, option checks, and convergence on a quadratic.
#include "nn/optim.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace qatlab {
namespace {

Tensor param(const std::vector<float>& values) {
  Tensor t = Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
  t.set_requires_grad(true);
  return t;
}

void set_grad(Tensor& t, const std::vector<float>& g) {
  ASSERT_EQ(static_cast<int64_t>(g.size()), t.numel());
  float* d = t.mutable_grad();
  for (size_t i = 0; i < g.size(); ++i) d[i] = g[i];
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  const std::string msg = error_of(f);
  for (const std::string& part : parts)
    EXPECT_NE(msg.find(part), std::string::npos) << "message \"" << msg << "\" lacks \"" << part << "\"";
}

// The gradient the tests feed: that of sum(x^2 + k x), g = 2 x + k, so it changes from step to step.
const std::vector<double> kOffset = {0.3, -0.1, 0.2};
const std::vector<float> kStart = {1.0f, -2.0f, 0.5f};

std::vector<float> gradient_at(const std::vector<float>& x) {
  std::vector<float> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = 2.0f * x[i] + static_cast<float>(kOffset[i]);
  return g;
}

// Runs `steps` steps of opt on p, feeding gradient_at(p) each time.
void run(Optimizer& opt, Tensor& p, int steps) {
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    set_grad(p, gradient_at(p.to_vector()));
    opt.step();
  }
}

void expect_close(const Tensor& p, const std::vector<double>& expected, double tol = 1e-5) {
  const std::vector<float> got = p.to_vector();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], tol) << "element " << i;
}

std::vector<double> as_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// ----------------------------------------------------------------------------------------------- SGD

TEST(Sgd, OnePlainStepByHand) {
  Tensor p = param({1.0f, -2.0f});
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.1f});
  set_grad(p, {0.5f, -1.0f});
  opt.step();
  // p - lr g = (1 - 0.05, -2 + 0.1)
  expect_close(p, {0.95, -1.9}, 1e-7);
  EXPECT_EQ(opt.steps(), 1);
  EXPECT_EQ(opt.kind(), "sgd");
}

TEST(Sgd, PlainMatchesRecurrence) {
  Tensor p = param(kStart);
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.1f});
  run(opt, p, 4);
  std::vector<double> x = as_double(kStart);
  for (int t = 0; t < 4; ++t)
    for (size_t i = 0; i < x.size(); ++i) x[i] -= 0.1 * (2 * x[i] + kOffset[i]);
  expect_close(p, x);
}

TEST(Sgd, MomentumWithDampeningMatchesRecurrence) {
  // Dampening 0.5 makes the first step (buf = g, undamped) differ from the later ones.
  const double lr = 0.1, mu = 0.9, damp = 0.5;
  Tensor p = param(kStart);
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f});
  run(opt, p, 4);
  std::vector<double> x = as_double(kStart), buf(3, 0.0);
  for (int t = 0; t < 4; ++t)
    for (size_t i = 0; i < x.size(); ++i) {
      const double g = 2 * x[i] + kOffset[i];
      buf[i] = t == 0 ? g : mu * buf[i] + (1 - damp) * g;
      x[i] -= lr * buf[i];
    }
  expect_close(p, x);
}

TEST(Sgd, MomentumFirstTwoStepsByHand) {
  // Constant gradient 1, lr 0.1, momentum 0.9: buf = 1 then 1.9, p = 0 - 0.1 - 0.19.
  Tensor p = param({0.0f});
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  set_grad(p, {1.0f});
  opt.step();
  expect_close(p, {-0.1}, 1e-7);
  opt.step();  // the gradient buffer still holds 1
  expect_close(p, {-0.29}, 1e-6);
}

TEST(Sgd, NesterovMatchesRecurrence) {
  const double lr = 0.05, mu = 0.8;
  Tensor p = param(kStart);
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.05f, .momentum = 0.8f, .nesterov = true});
  run(opt, p, 4);
  std::vector<double> x = as_double(kStart), buf(3, 0.0);
  for (int t = 0; t < 4; ++t)
    for (size_t i = 0; i < x.size(); ++i) {
      const double g = 2 * x[i] + kOffset[i];
      buf[i] = t == 0 ? g : mu * buf[i] + g;
      x[i] -= lr * (g + mu * buf[i]);
    }
  expect_close(p, x);
}

TEST(Sgd, WeightDecayAddsToGradientAndRespectsExemption) {
  const double lr = 0.1, mu = 0.9, wd = 0.1;
  Tensor w = param(kStart);
  Tensor b = param(kStart);
  SGD opt({{"w", w}, {"b", b, /*decay=*/false}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.1f});
  for (int t = 0; t < 3; ++t) {
    opt.zero_grad();
    set_grad(w, gradient_at(w.to_vector()));
    set_grad(b, gradient_at(b.to_vector()));
    opt.step();
  }
  std::vector<double> xw = as_double(kStart), xb = as_double(kStart), bw(3), bb(3);
  for (int t = 0; t < 3; ++t)
    for (size_t i = 0; i < 3; ++i) {
      const double gw = 2 * xw[i] + kOffset[i] + wd * xw[i];
      const double gb = 2 * xb[i] + kOffset[i];  // exempt: no decay term
      bw[i] = t == 0 ? gw : mu * bw[i] + gw;
      bb[i] = t == 0 ? gb : mu * bb[i] + gb;
      xw[i] -= lr * bw[i];
      xb[i] -= lr * bb[i];
    }
  expect_close(w, xw);
  expect_close(b, xb);
  EXPECT_GT(std::abs(w.to_vector()[1] - b.to_vector()[1]), 1e-3);  // the decay made a difference
}

// ---------------------------------------------------------------------------------------- Adam(W)

TEST(Adam, FirstStepMovesByLrTimesSign) {
  // After one step m_hat = g and v_hat = g^2, so p moves by lr * g / (|g| + eps) ~= lr * sign(g).
  Tensor p = param({1.0f, -2.0f, 0.5f});
  Adam opt({{"p", p}}, AdamOptions{.lr = 0.01f});
  set_grad(p, {0.5f, -0.25f, 2.0f});
  opt.step();
  expect_close(p, {0.99, -1.99, 0.49}, 1e-6);
  EXPECT_EQ(opt.kind(), "adam");
}

// Adam's recurrence in double; wd is L2 (added to g) unless decoupled, where p shrinks first.
std::vector<double> adam_reference(int steps, double lr, double b1, double b2, double eps, double wd, bool decoupled) {
  std::vector<double> x = as_double(kStart), m(3, 0.0), v(3, 0.0);
  for (int t = 1; t <= steps; ++t)
    for (size_t i = 0; i < x.size(); ++i) {
      double g = 2 * x[i] + kOffset[i];
      if (decoupled)
        x[i] *= 1 - lr * wd;
      else
        g += wd * x[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, t)) + eps;
      x[i] -= lr * m_hat / denom;
    }
  return x;
}

TEST(Adam, MatchesRecurrence) {
  Tensor p = param(kStart);
  Adam opt({{"p", p}}, AdamOptions{.lr = 0.1f, .beta1 = 0.8f, .beta2 = 0.95f, .eps = 1e-3f});
  run(opt, p, 5);
  expect_close(p, adam_reference(5, 0.1, 0.8, 0.95, 1e-3, 0.0, false));
}

TEST(Adam, L2WeightDecayMatchesRecurrence) {
  Tensor p = param(kStart);
  Adam opt({{"p", p}}, AdamOptions{.lr = 0.1f, .weight_decay = 0.5f});
  run(opt, p, 5);
  expect_close(p, adam_reference(5, 0.1, 0.9, 0.999, 1e-8, 0.5, false));
  // L2 and decoupled decay differ: the check above would not pass for the other one.
  const std::vector<double> decoupled = adam_reference(5, 0.1, 0.9, 0.999, 1e-8, 0.5, true);
  EXPECT_GT(std::abs(p.to_vector()[0] - decoupled[0]), 1e-3);
}

TEST(AdamW, DecoupledDecayMatchesRecurrenceAndRespectsExemption) {
  Tensor w = param(kStart);
  Tensor b = param(kStart);
  AdamW opt({{"w", w}, {"b", b, /*decay=*/false}}, AdamWOptions{.lr = 0.1f, .weight_decay = 0.5f});
  for (int t = 0; t < 5; ++t) {
    opt.zero_grad();
    set_grad(w, gradient_at(w.to_vector()));
    set_grad(b, gradient_at(b.to_vector()));
    opt.step();
  }
  expect_close(w, adam_reference(5, 0.1, 0.9, 0.999, 1e-8, 0.5, true));
  expect_close(b, adam_reference(5, 0.1, 0.9, 0.999, 1e-8, 0.0, true));
  EXPECT_EQ(opt.kind(), "adamw");
}

TEST(AdamW, DefaultWeightDecayIsOneHundredth) {
  EXPECT_EQ(AdamWOptions{}.weight_decay, 0.01f);
  EXPECT_EQ(AdamOptions{}.weight_decay, 0.0f);
}

// ------------------------------------------------------------------------------ common behaviour

TEST(Optimizer, SkipsParamsWithoutGradientAndCountsUpdatesPerParam) {
  // b gets its first gradient at the third step: SGD must start its buffer undamped then, and Adam
  // must bias-correct with b's own count (1), so b moves by ~lr.
  Tensor a1 = param({1.0f}), b1 = param({1.0f});
  Tensor a2 = param({1.0f}), b2 = param({1.0f});
  SGD sgd({{"a", a1}, {"b", b1}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f, .dampening = 0.5f});
  Adam adam({{"a", a2}, {"b", b2}}, AdamOptions{.lr = 0.01f});
  for (int t = 0; t < 2; ++t) {
    set_grad(a1, {1.0f});
    set_grad(a2, {1.0f});
    sgd.step();
    adam.step();
  }
  EXPECT_FALSE(b1.has_grad());
  EXPECT_EQ(b1.to_vector()[0], 1.0f);
  EXPECT_EQ(b2.to_vector()[0], 1.0f);
  set_grad(b1, {2.0f});
  set_grad(b2, {2.0f});
  sgd.step();
  adam.step();
  expect_close(b1, {1.0 - 0.1 * 2.0}, 1e-6);
  expect_close(b2, {1.0 - 0.01}, 1e-6);

  std::map<std::string, float> counts;
  for (const auto& [name, t] : adam.state())
    if (name == "step" || name.rfind("step/", 0) == 0) counts[name] = t.item();
  EXPECT_EQ(counts["step"], 3.0f);
  EXPECT_EQ(counts["step/a"], 3.0f);
  EXPECT_EQ(counts["step/b"], 1.0f);
}

TEST(Optimizer, ZeroGradKeepsBuffers) {
  Tensor p = param({1.0f, 2.0f});
  Tensor q = param({3.0f});
  SGD opt({{"p", p}, {"q", q}}, SgdOptions{.lr = 0.1f});
  set_grad(p, {5.0f, -6.0f});
  const float* before = p.mutable_grad();
  opt.zero_grad();
  ASSERT_TRUE(p.has_grad());
  EXPECT_EQ(p.mutable_grad(), before);
  EXPECT_EQ(p.grad().to_vector(), (std::vector<float>{0.0f, 0.0f}));
  EXPECT_FALSE(q.has_grad());  // none is created
}

TEST(Optimizer, SetLrTakesEffect) {
  Tensor p = param({1.0f});
  SGD opt({{"p", p}}, SgdOptions{.lr = 0.1f});
  EXPECT_FLOAT_EQ(opt.lr(), 0.1f);
  opt.set_lr(0.5f);
  EXPECT_FLOAT_EQ(opt.lr(), 0.5f);
  set_grad(p, {1.0f});
  opt.step();
  expect_close(p, {0.5}, 1e-7);
  opt.set_lr(0.0f);  // a schedule may end at 0
  opt.step();
  expect_close(p, {0.5}, 1e-7);
  expect_error([&] { opt.set_lr(-1.0f); }, {"learning rate", "-1"});
  expect_error([&] { opt.set_lr(NAN); }, {"learning rate", "nan"});
}

// ------------------------------------------------------------------------------------ state

std::set<std::string> names_of(const OptimizerState& state) {
  std::set<std::string> names;
  for (const auto& [name, t] : state) names.insert(name);
  return names;
}

TEST(OptimizerState, NamesShapesAndValues) {
  Tensor w = param({1.0f, 2.0f, 3.0f, 4.0f});
  Tensor b = param({0.5f});
  SGD plain({{"w", w}, {"b", b}}, SgdOptions{.lr = 0.1f});
  EXPECT_EQ(names_of(plain.state()), (std::set<std::string>{"step"}));

  SGD momentum({{"fc.w", w}, {"fc.b", b}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  EXPECT_EQ(names_of(momentum.state()),
            (std::set<std::string>{"step", "step/fc.w", "step/fc.b", "momentum_buffer/fc.w", "momentum_buffer/fc.b"}));

  Adam adam({{"fc.w", w}, {"fc.b", b}}, AdamOptions{.lr = 0.1f});
  set_grad(w, {1.0f, 1.0f, 1.0f, 1.0f});
  set_grad(b, {2.0f});
  adam.step();
  adam.step();
  const OptimizerState state = adam.state();
  EXPECT_EQ(names_of(state), (std::set<std::string>{"step", "step/fc.w", "step/fc.b", "exp_avg/fc.w", "exp_avg/fc.b",
                                                    "exp_avg_sq/fc.w", "exp_avg_sq/fc.b"}));
  const std::map<std::string, Tensor> by_name(state.begin(), state.end());
  EXPECT_EQ(by_name.at("step").item(), 2.0f);
  EXPECT_EQ(by_name.at("step/fc.w").item(), 2.0f);
  EXPECT_EQ(by_name.at("exp_avg/fc.w").shape(), (Shape{4}));
  EXPECT_EQ(by_name.at("exp_avg_sq/fc.b").shape(), (Shape{1}));
  EXPECT_NEAR(by_name.at("exp_avg/fc.w").to_vector()[0], 0.9 * 0.1 + 0.1, 1e-6);  // m after two steps of g = 1
  // (1 - b2) * 4, twice; float 0.999f is 0.999 + 1.3e-8, so 1 - b2 is off by 1.3e-5 relative.
  EXPECT_NEAR(by_name.at("exp_avg_sq/fc.b").item(), 0.999 * 0.004 + 0.004, 2e-7);
}

// Saves after 3 steps, lets the original go on for 3 more, then restores the saved state into a fresh
// optimizer on copies of the saved parameters: its next 3 steps must match the original bit for bit.
template <class MakeOpt>
void check_resume(MakeOpt make) {
  Tensor w = param({1.0f, -2.0f, 0.5f});
  Tensor b = param({0.25f, 0.1f, -0.3f});
  std::unique_ptr<Optimizer> original = make(std::vector<ParamRef>{{"w", w}, {"b", b, false}});
  auto feed = [](Tensor& w, Tensor& b) {
    set_grad(w, gradient_at(w.to_vector()));
    set_grad(b, gradient_at(b.to_vector()));
  };
  for (int t = 0; t < 3; ++t) {
    feed(w, b);
    original->step();
  }
  const OptimizerState saved = original->state();
  Tensor w2 = w.clone(), b2 = b.clone();
  w2.set_requires_grad(true);
  b2.set_requires_grad(true);
  for (int t = 0; t < 3; ++t) {
    feed(w, b);
    original->step();
  }

  std::unique_ptr<Optimizer> resumed = make(std::vector<ParamRef>{{"w", w2}, {"b", b2, false}});
  resumed->load_state(saved);
  EXPECT_EQ(resumed->steps(), 3);
  for (int t = 0; t < 3; ++t) {
    feed(w2, b2);
    resumed->step();
  }
  EXPECT_EQ(w2.to_vector(), w.to_vector());
  EXPECT_EQ(b2.to_vector(), b.to_vector());
  EXPECT_EQ(resumed->steps(), original->steps());
}

TEST(OptimizerState, ResumeIsBitExact) {
  check_resume([](std::vector<ParamRef> p) {
    return std::make_unique<SGD>(std::move(p), SgdOptions{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f});
  });
  check_resume([](std::vector<ParamRef> p) {
    return std::make_unique<SGD>(std::move(p), SgdOptions{.lr = 0.1f, .momentum = 0.9f, .nesterov = true});
  });
  check_resume([](std::vector<ParamRef> p) { return std::make_unique<SGD>(std::move(p), SgdOptions{.lr = 0.1f}); });
  check_resume([](std::vector<ParamRef> p) {
    return std::make_unique<Adam>(std::move(p), AdamOptions{.lr = 0.05f, .weight_decay = 0.1f});
  });
  check_resume([](std::vector<ParamRef> p) { return std::make_unique<AdamW>(std::move(p), AdamWOptions{.lr = 0.05f}); });
}

TEST(OptimizerState, BadStateIsRejectedAndChangesNothing) {
  Tensor w = param({1.0f, 2.0f, 3.0f});
  Adam opt({{"w", w}}, AdamOptions{.lr = 0.1f});
  set_grad(w, {1.0f, 1.0f, 1.0f});
  opt.step();
  const OptimizerState good = opt.state();

  auto without = [&](const std::string& drop) {
    OptimizerState s;
    for (const auto& e : good)
      if (e.first != drop) s.push_back(e);
    return s;
  };
  auto replaced = [&](const std::string& name, const Tensor& t) {
    OptimizerState s = good;
    for (auto& e : s)
      if (e.first == name) e.second = t;
    return s;
  };

  Adam fresh({{"w", param({0.0f, 0.0f, 0.0f})}}, AdamOptions{.lr = 0.1f});
  expect_error([&] { fresh.load_state(without("exp_avg_sq/w")); }, {"missing entry 'exp_avg_sq/w'", "(3)"});
  expect_error([&] { fresh.load_state(without("step")); }, {"missing entry 'step'"});
  expect_error([&] { fresh.load_state(without("step/w")); }, {"missing entry 'step/w'"});
  expect_error([&] { fresh.load_state(replaced("exp_avg/w", Tensor::zeros({3, 1}))); },
               {"'exp_avg/w'", "(3, 1)", "expected (3)"});
  expect_error([&] { fresh.load_state(replaced("step", Tensor::full({1}, 2.5f))); }, {"'step'", "2.5"});
  expect_error([&] { fresh.load_state(replaced("step/w", Tensor::full({1}, -1.0f))); }, {"'step/w'", "-1"});
  OptimizerState extra = good;
  extra.emplace_back("momentum_buffer/w", Tensor::zeros({3}));
  expect_error([&] { fresh.load_state(extra); }, {"unexpected entry 'momentum_buffer/w'"});
  OptimizerState twice = good;
  twice.push_back(good.back());
  expect_error([&] { fresh.load_state(twice); }, {"appears twice"});

  // A momentum-SGD checkpoint is not an Adam one.
  SGD sgd({{"w", param({0.0f, 0.0f, 0.0f})}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  expect_error([&] { fresh.load_state(sgd.state()); }, {"missing entry"});

  // None of the failures touched the fresh optimizer.
  EXPECT_EQ(fresh.steps(), 0);
  for (const auto& [name, t] : fresh.state())
    for (float v : t.to_vector()) EXPECT_EQ(v, 0.0f) << name;

  fresh.load_state(good);
  EXPECT_EQ(fresh.steps(), 1);
}

TEST(OptimizerState, StateIsASnapshot) {
  Tensor w = param({1.0f});
  SGD opt({{"w", w}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
  set_grad(w, {1.0f});
  opt.step();
  const OptimizerState s = opt.state();
  opt.step();
  const std::map<std::string, Tensor> by_name(s.begin(), s.end());
  EXPECT_EQ(by_name.at("momentum_buffer/w").item(), 1.0f);
  EXPECT_EQ(by_name.at("step").item(), 1.0f);
}

// ------------------------------------------------------------------------------------ options

TEST(OptimizerOptions, InvalidValuesAreRejectedWithTheValue) {
  auto params = [] { return std::vector<ParamRef>{{"p", param({1.0f})}}; };
  expect_error([&] { SGD(params(), SgdOptions{}); }, {"SGD", "lr must be > 0, got 0"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = -0.1f}); }, {"got -0.1"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .momentum = 1.0f}); },
               {"momentum must be in [0, 1), got 1"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .momentum = -0.5f}); }, {"momentum", "-0.5"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .weight_decay = -1.0f}); },
               {"weight_decay must be >= 0, got -1"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .dampening = 2.0f}); }, {"dampening", "2"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .nesterov = true}); }, {"nesterov", "momentum 0"});
  expect_error([&] { SGD(params(), SgdOptions{.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f, .nesterov = true}); },
               {"nesterov", "dampening 0.1"});
  expect_error([&] { Adam(params(), AdamOptions{.lr = 0.1f, .beta1 = 1.0f}); }, {"Adam", "beta1 must be in [0, 1), got 1"});
  expect_error([&] { Adam(params(), AdamOptions{.lr = 0.1f, .beta2 = -0.1f}); }, {"beta2", "-0.1"});
  expect_error([&] { Adam(params(), AdamOptions{.lr = 0.1f, .eps = 0.0f}); }, {"eps must be > 0, got 0"});
  expect_error([&] { Adam(params(), AdamOptions{.lr = NAN}); }, {"lr", "nan"});
  expect_error([&] { AdamW(params(), AdamWOptions{.lr = 0.1f, .weight_decay = -0.01f}); },
               {"AdamW", "weight_decay", "-0.01"});
}

TEST(OptimizerOptions, BadParameterListsAreRejected) {
  Tensor p = param({1.0f});
  expect_error([&] { SGD({}, SgdOptions{.lr = 0.1f}); }, {"empty parameter list"});
  expect_error([&] { SGD({{"p", p}, {"p", param({2.0f})}}, SgdOptions{.lr = 0.1f}); }, {"'p'", "twice"});
  expect_error([&] { SGD({{"p", p}, {"q", p}}, SgdOptions{.lr = 0.1f}); }, {"'q'", "same tensor"});
  expect_error([&] { SGD({{"p", Tensor()}}, SgdOptions{.lr = 0.1f}); }, {"'p'", "undefined"});
}

TEST(MakeOptimizer, BuildsEachKindFromTheConfig) {
  OptimizerConfig c;
  c.lr = 0.05f;
  c.momentum = 0.8f;
  c.nesterov = true;
  c.weight_decay = 1e-4f;
  c.beta1 = 0.85f;
  auto sgd = make_optimizer("sgd", {{"p", param({1.0f})}}, c);
  ASSERT_EQ(sgd->kind(), "sgd");
  const SgdOptions& so = dynamic_cast<SGD&>(*sgd).options();
  EXPECT_EQ(so.lr, 0.05f);
  EXPECT_EQ(so.momentum, 0.8f);
  EXPECT_TRUE(so.nesterov);
  EXPECT_EQ(so.dampening, 0.0f);
  EXPECT_EQ(so.weight_decay, 1e-4f);

  auto adam = make_optimizer("adam", {{"p", param({1.0f})}}, c);
  ASSERT_EQ(adam->kind(), "adam");
  EXPECT_EQ(dynamic_cast<Adam&>(*adam).options().beta1, 0.85f);
  auto adamw = make_optimizer("adamw", {{"p", param({1.0f})}}, c);
  ASSERT_EQ(adamw->kind(), "adamw");
  EXPECT_EQ(dynamic_cast<Adam&>(*adamw).options().weight_decay, 1e-4f);
  EXPECT_EQ(adamw->lr(), 0.05f);

  EXPECT_EQ(error_of([&] { make_optimizer("rmsprop", {{"p", param({1.0f})}}, c); }),
            "unknown optimizer 'rmsprop' (expected sgd, adam or adamw)");
}

// ---------------------------------------------------------------------------------- convergence

// f(x) = sum a_i (x_i - c_i)^2 / 2, minimum at c.
const std::vector<float> kCurv = {1.0f, 4.0f, 0.5f, 2.0f};
const std::vector<float> kMin = {1.0f, -2.0f, 3.0f, 0.5f};

float minimise(Optimizer& opt, Tensor& x, int steps) {
  for (int s = 0; s < steps; ++s) {
    opt.zero_grad();
    const std::vector<float> v = x.to_vector();
    std::vector<float> g(v.size());
    for (size_t i = 0; i < v.size(); ++i) g[i] = kCurv[i] * (v[i] - kMin[i]);
    set_grad(x, g);
    opt.step();
  }
  float worst = 0.0f;
  const std::vector<float> v = x.to_vector();
  for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::abs(v[i] - kMin[i]));
  return worst;
}

TEST(Convergence, EachOptimizerMinimisesAQuadratic) {
  {
    Tensor x = param({0.0f, 0.0f, 0.0f, 0.0f});
    SGD opt({{"x", x}}, SgdOptions{.lr = 0.1f, .momentum = 0.9f});
    EXPECT_LT(minimise(opt, x, 300), 1e-3f);
  }
  {
    Tensor x = param({0.0f, 0.0f, 0.0f, 0.0f});
    SGD opt({{"x", x}}, SgdOptions{.lr = 0.1f, .momentum = 0.5f, .nesterov = true});
    EXPECT_LT(minimise(opt, x, 300), 1e-3f);
  }
  {
    Tensor x = param({0.0f, 0.0f, 0.0f, 0.0f});
    Adam opt({{"x", x}}, AdamOptions{.lr = 0.05f});
    EXPECT_LT(minimise(opt, x, 1000), 1e-2f);
  }
  {
    Tensor x = param({0.0f, 0.0f, 0.0f, 0.0f});
    AdamW opt({{"x", x}}, AdamWOptions{.lr = 0.05f, .weight_decay = 0.0f});
    EXPECT_LT(minimise(opt, x, 1000), 1e-2f);
  }
}

// ------------------------------------------------------------------------------------ large tensors

TEST(LargeTensors, ThreadedUpdateEqualsSmallPieces) {
  // 4 * 20000 elements: the whole tensor takes the threaded path, each 20000-element piece the
  // single-threaded one. Updates are elementwise, so the results must agree exactly.
  const int64_t piece = 20000;
  std::vector<float> init(4 * piece), grad(4 * piece);
  for (int64_t i = 0; i < 4 * piece; ++i) {
    init[i] = std::sin(0.001f * i);
    grad[i] = std::cos(0.003f * i);
  }
  for (const std::string kind : {"sgd", "adam", "adamw"}) {
    Tensor whole = param(init);
    std::vector<Tensor> parts;
    std::vector<ParamRef> part_refs;
    for (int k = 0; k < 4; ++k) {
      parts.push_back(param(std::vector<float>(init.begin() + k * piece, init.begin() + (k + 1) * piece)));
      part_refs.push_back({"part" + std::to_string(k), parts.back()});
    }
    OptimizerConfig c;
    c.weight_decay = 0.01f;
    auto a = make_optimizer(kind, {{"whole", whole}}, c);
    auto b = make_optimizer(kind, part_refs, c);
    set_grad(whole, grad);
    for (int k = 0; k < 4; ++k)
      set_grad(parts[k], std::vector<float>(grad.begin() + k * piece, grad.begin() + (k + 1) * piece));
    for (int s = 0; s < 3; ++s) {
      a->step();
      b->step();
    }
    const std::vector<float> w = whole.to_vector();
    for (int k = 0; k < 4; ++k)
      EXPECT_TRUE(std::equal(w.begin() + k * piece, w.begin() + (k + 1) * piece, parts[k].to_vector().begin()))
          << kind << " piece " << k;
    EXPECT_NE(w[12345], init[12345]) << kind;
  }
}

}  // namespace
}  // namespace qatlab
