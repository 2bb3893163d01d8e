// bench_train.cpp: `qatlab bench --train MODEL`: what a training step costs, float and QAT, as images per
// second, as a share of the float peak the same run measures, and layer by layer.
#include "apps/bench_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <vector>

#include "core/cpu_features.h"
#include "core/cpu_peak.h"
#include "core/profiler.h"
#include "nn/residual.h"
#include "nn/train/train_loop.h"
#include "quant/qat/convert.h"
#include "quant/qat/fake_quantize.h"
#include "quant/qat/prepare.h"

namespace qatlab {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct RandomBatch {
  Tensor images;                // (N, C, H, W)
  std::vector<int32_t> labels;  // (N)
};

RandomBatch random_batch(int64_t n, const ModelSpec& spec, uint64_t seed) {
  Rng rng(seed);
  RandomBatch b;
  b.images = Tensor::empty({n, spec.channels, spec.height, spec.width});
  for (int64_t i = 0; i < b.images.numel(); ++i) b.images.data()[i] = rng.normal();
  for (int64_t i = 0; i < n; ++i) b.labels.push_back(static_cast<int32_t>(rng.below(spec.num_classes)));
  return b;
}

std::unique_ptr<Optimizer> sgd_for(const Module& model) {
  OptimizerConfig oc;
  oc.lr = 1e-3f;  // small: random labels must not make the measured steps diverge
  oc.momentum = 0.9f;
  oc.weight_decay = 5e-4f;
  return make_optimizer("sgd", param_refs(model, false), oc);
}

// One step: forward, loss, backward, update. Returns the seconds of the optimizer's update alone.
double train_step(Module& model, Optimizer& opt, const RandomBatch& b) {
  Tensor loss = cross_entropy(model.forward(b.images), b.labels);
  opt.zero_grad();
  loss.backward();
  const auto t0 = Clock::now();
  opt.step();
  profile_reset_mark();  // the update is no op's forward time
  return since(t0);
}

// The variants measured: the float model and its QAT versions. Each gets a model of its own, built with
// the same seed (prepare_qat rewrites the float model it is given).
struct Variant {
  std::string name;
  ModulePtr model;
};

std::vector<Variant> make_variants(const BenchTrainOptions& o) {
  auto fresh = [&] {
    Rng rng(1);
    return make_model(o.model, o.spec, rng);
  };
  std::vector<Variant> v;
  v.push_back({"float", fresh()});
  v.push_back({"QAT W8A8 min/max", prepare_qat(fresh(), QConfig::from_options(8, 8, true, "minmax", "ema", {}))});
  v.push_back({"QAT W4A4 LSQ", prepare_qat(fresh(), QConfig::from_options(4, 4, true, "minmax", "ema", {}, "lsq", "lsq"))});
  // A residual network also at W2A2 with its stream at 8 bits: what the requantize ops in front of the
  // convs that read the stream cost (quant/README.md section 5).
  const ModulePtr probe = fresh();
  bool residual = false;
  for (const auto& [name, m] : probe->named_modules(probe)) residual = residual || m->is<Residual>();
  if (residual)
    v.push_back({"QAT W2A2 LSQ, stream 8", prepare_qat(probe, QConfig::from_options(2, 2, true, "minmax", "ema",
                                                                                   {"residual-branches=:8",
                                                                                    "residual-sums=:8"},
                                                                                   "lsq", "lsq"))});
  return v;
}

// The same time summed by op over all layers: which kinds of work a step spends its time on.
void print_op_table(const std::vector<Profiler::Row>& rows, int steps, double total) {
  std::vector<std::string> order;
  std::map<std::string, std::pair<double, double>> ops;  // forward, backward seconds
  for (const Profiler::Row& r : rows) {
    if (!ops.count(r.op)) order.push_back(r.op);
    ops[r.op].first += r.forward_s;
    ops[r.op].second += r.backward_s;
  }
  std::stable_sort(order.begin(), order.end(), [&](const std::string& x, const std::string& y) {
    return ops[x].first + ops[x].second > ops[y].first + ops[y].second;
  });
  std::printf("  by op (ms per step; an op's \".part\" rows lie inside its backward):\n");
  std::printf("  %-30s %9s %10s %7s\n", "op", "forward", "backward", "share");
  for (const std::string& op : order) {
    const auto [f, b] = ops[op];
    if (f + b < 5e-4 * total) continue;
    std::printf("  %-30s %9.2f %10.2f %6.1f%%\n", op.c_str(), 1e3 * f / steps, 1e3 * b / steps, 100 * (f + b) / total);
  }
}

// The per-layer table of one variant: one row per module that ran ops, in execution order. A quantizer's
// time goes to its layer's "fake-quant" column; a conv's backward is split into input and weight gradient.
void print_layer_table(const Variant& v, const RandomBatch& b, int steps) {
  Profiler profiler;
  std::map<std::string, const Module*> modules;
  for (const auto& [name, m] : v.model->named_modules(v.model)) {
    if (name.empty()) continue;  // the root: its ops (none but the loss's) count as outside
    profiler.name_module(m.get(), name);
    modules[name] = m.get();
  }
  std::unique_ptr<Optimizer> opt = sgd_for(*v.model);
  double optimizer_s = 0;
  const auto t0 = Clock::now();
  {
    ProfilerSession session(profiler);
    for (int i = 0; i < steps; ++i) optimizer_s += train_step(*v.model, *opt, b);
  }
  const double total = since(t0);

  struct Line {
    double forward = 0, input_grad = 0, weight_grad = 0, other_backward = 0, fake_quant = 0;
    double sum() const { return forward + input_grad + weight_grad + other_backward + fake_quant; }
  };
  std::vector<std::string> order;
  std::map<std::string, Line> lines;
  for (const Profiler::Row& r : profiler.rows()) {
    std::string layer = r.scope.empty() ? "(loss)" : r.scope;
    bool quantizer = false;
    if (auto it = modules.find(r.scope); it != modules.end() && dynamic_cast<const Quantizer*>(it->second)) {
      quantizer = true;
      const size_t dot = r.scope.rfind('.');
      // A layer's own quantizers belong to the layer; the model's input quantizer is a row of its own.
      if (dot != std::string::npos) layer = r.scope.substr(0, dot);
    }
    if (!lines.count(layer)) order.push_back(layer);
    Line& l = lines[layer];
    const bool input_part = r.op.ends_with(".input_grad"), weight_part = r.op.ends_with(".weight_grad");
    if (quantizer) {
      l.fake_quant += r.forward_s + (input_part || weight_part ? 0.0 : r.backward_s);
    } else if (input_part) {
      l.input_grad += r.backward_s;
      l.other_backward -= r.backward_s;  // the part is inside its op's backward time
    } else if (weight_part) {
      l.weight_grad += r.backward_s;
      l.other_backward -= r.backward_s;
    } else {
      l.forward += r.forward_s;
      l.other_backward += r.backward_s;
    }
  }
  double counted = optimizer_s;
  for (const auto& [name, l] : lines) counted += l.sum();
  std::printf("\n  %s: where a step's time goes (ms per step, %d profiled steps; %.1f ms per profiled step)\n",
              v.name.c_str(), steps, 1e3 * total / steps);
  std::printf("  %-30s %9s %10s %11s %10s %10s %9s %7s\n", "layer", "forward", "input grad", "weight grad",
              "other bwd", "fake-quant", "total", "share");
  auto ms = [&](double s) { return 1e3 * s / steps; };
  double hidden = 0;
  for (const std::string& name : order) {
    const Line& l = lines[name];
    if (l.sum() < 5e-4 * total) hidden += l.sum();
    if (l.sum() < 5e-4 * total) continue;  // containers, and layers prepare_qat folded away
    std::printf("  %-30s %9.2f %10.2f %11.2f %10.2f %10.2f %9.2f %6.1f%%\n", name.c_str(), ms(l.forward),
                ms(l.input_grad), ms(l.weight_grad), ms(l.other_backward), ms(l.fake_quant), ms(l.sum()),
                100 * l.sum() / total);
  }
  std::printf("  %-30s %9s %10s %11s %10s %10s %9.2f %6.1f%%\n", "(optimizer update)", "", "", "", "", "",
              ms(optimizer_s), 100 * optimizer_s / total);
  print_op_table(profiler.rows(), steps, total);
  std::printf("  %-30s %9s %10s %11s %10s %10s %9.2f %6.1f%%\n", "(small rows, unattributed)", "", "", "",
              "", "", ms(total - counted + hidden), 100 * (total - counted + hidden) / total);
}

}  // namespace

void run_bench_train(const BenchTrainOptions& o) {
  std::vector<Variant> variants = make_variants(o);
  const RandomBatch b = random_batch(o.batch, o.spec, 7);

  std::vector<double> step_s;
  for (Variant& v : variants) {
    v.model->train();
    std::unique_ptr<Optimizer> opt = sgd_for(*v.model);
    for (int i = 0; i < 3; ++i) train_step(*v.model, *opt, b);  // observers see data, caches warm
    std::vector<double> t;
    for (int i = 0; i < o.steps; ++i) {
      const auto t0 = Clock::now();
      train_step(*v.model, *opt, b);
      t.push_back(since(t0));
    }
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    step_s.push_back(t[t.size() / 2]);
  }
  // Multiply-adds per image of a forward pass, counted by the integer graph of the first QAT variant.
  const double macs = convert(static_cast<const QatModel&>(*variants[1].model),
                              {o.spec.channels, o.spec.height, o.spec.width})
                          .multiply_adds_per_image();
  // A training step does three products of a forward's size: the forward, the input and the weight gradient.
  const double flops_per_image = 3 * 2 * macs;
  const double fastest = o.batch / *std::min_element(step_s.begin(), step_s.end()) * flops_per_image * 1e-9;
  const SettledPeak settled = settle_peak(widest_float_fma(), o.threads, fastest);
  const Peak peak = settled.settled ? settled.peak : Peak{0.0, settled.peak.instruction};

  std::printf("bench --train: %s, input %s, batch %lld, %d threads, %s float kernels, median of %d steps after 3\n",
              o.model.c_str(), shape_str({o.spec.channels, o.spec.height, o.spec.width}).c_str(),
              static_cast<long long>(o.batch), o.threads, float_path_name(active_float_path()), o.steps);
  std::printf("  float peak %.1f GFLOP/s (%s on %d threads); %.1f MFLOP per training image (3 x 2 x %.2f M MACs)\n",
              settled.peak.gops, peak.instruction.c_str(), o.threads, flops_per_image * 1e-6, macs * 1e-6);
  if (!settled.settled)
    std::printf("  (the peak measured below a step's rate: the machine is busy; shares are not shown)\n");
  std::printf("  %-22s %12s %12s %14s %10s\n", "variant", "step ms", "images/s", "share of peak", "vs float");
  for (size_t i = 0; i < variants.size(); ++i) {
    const double ips = o.batch / step_s[i];
    char share[32] = "n/a";
    if (peak.gops > 0) std::snprintf(share, sizeof share, "%.1f%%", 100 * flops_per_image * ips * 1e-9 / peak.gops);
    std::printf("  %-22s %12.1f %12.1f %14s %9.2fx\n", variants[i].name.c_str(), 1e3 * step_s[i], ips, share,
                step_s[0] / step_s[i]);
  }
  if (!o.layers) return;
  for (const Variant& v : variants) print_layer_table(v, b, std::max(2, o.steps / 2));
}

}  // namespace qatlab
