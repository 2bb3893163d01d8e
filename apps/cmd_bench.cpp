// cmd_bench.cpp: `qatlab bench`: float vs integer model: batch-1 latency, batch-256 throughput, file
// sizes, model and GEMM rates against this machine's measured peaks; `--train` hands over to bench_train.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <vector>

#include "apps/bench_train.h"
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"
#include "core/cpu_features.h"
#include "core/cpu_peak.h"
#include "core/gemm.h"
#include "quant/engine/int8_graph.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of one call, over repeated calls for about `seconds` (at least `min_reps`).
double median_seconds(const std::function<void()>& fn, double seconds, int min_reps = 20) {
  for (int i = 0; i < 3; ++i) fn();  // warm caches and allocator
  std::vector<double> times;
  const auto start = Clock::now();
  while (static_cast<int>(times.size()) < min_reps ||
         std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

Tensor random_images(int64_t n, const Shape& chw, uint64_t seed) {
  Tensor t = Tensor::empty({n, chw[0], chw[1], chw[2]});
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

// n random 8-bit images (N, C, H, W).
std::vector<uint8_t> random_pixels(int64_t n, const Shape& chw, uint64_t seed) {
  std::vector<uint8_t> p(static_cast<size_t>(n * shape_numel(chw)));
  Rng rng(seed);
  for (uint8_t& v : p) v = static_cast<uint8_t>(rng.below(256));
  return p;
}

// The int8 peak of a kernel path: the rate of the multiply-add instruction its inner loop issues.
PeakInstruction int8_peak_instruction(KernelPath path) {
  return path == KernelPath::Avx512Vnni ? PeakInstruction::DpbusdZmm : PeakInstruction::MaddwdAddYmm;
}

std::string share_str(double rate, const Peak& peak) {
  if (peak.gops <= 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * rate / peak.gops);
  return buf;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  std::string float_path, int_path, kernel = "auto", train_model, dataset = "cifar10";
  int64_t batch = 256;
  double seconds = 2.0;
  int threads = 0, steps = 10;
  bool no_layers = false;
  po::options_description desc("bench options");
  desc.add_options()("float", po::value(&float_path), "float (or QAT) checkpoint: the float model to compare with")
      ("int8", po::value(&int_path), "integer model file (from qatlab convert)")
      ("train", po::value(&train_model), "instead: training-step cost of this zoo model, float vs QAT, per layer")
      ("dataset", po::value(&dataset)->default_value(dataset), "with --train: the input shape of mnist | fashion-mnist | cifar10")
      ("steps", po::value(&steps)->default_value(steps), "with --train: timed steps per variant")
      ("no-layers", po::bool_switch(&no_layers), "with --train: skip the per-layer tables")
      ("batch-size", po::value(&batch)->default_value(batch), "batch for the throughput figure (--train: 128 unless given)")
      ("seconds", po::value(&seconds)->default_value(seconds), "time spent on each measurement")
      ("kernel", po::value(&kernel)->default_value(kernel), "integer kernels: auto | reference | portable | avx2 | avx512vnni")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  po::variables_map vm;
  if (!parse_command("bench", "--float CKPT --int8 MODEL [options] | --train MODEL [options]", desc, {}, argc, argv, vm))
    return 0;
  require_batch_size("batch-size", batch);
  require_finite_in("seconds", seconds, 0.001, 3600, "in 0.001..3600");
  if (!train_model.empty()) {
    require(float_path.empty() && int_path.empty(), "--train measures a zoo model: it takes no --float or --int8");
    require(steps >= 1 && steps <= 100000, "--steps must be in 1..100000");
    const std::vector<std::string> names = model_names();
    if (std::find(names.begin(), names.end(), train_model) == names.end()) {
      std::string known;
      for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
      throw UsageError("--train: unknown model '" + train_model + "' (known: " + known + ")");
    }
    BenchTrainOptions o;
    o.model = train_model;
    if (dataset == "cifar10")
      o.spec = ModelSpec{3, 32, 32, 10};
    else if (dataset == "mnist" || dataset == "fashion-mnist")
      o.spec = ModelSpec{1, 28, 28, 10};
    else
      throw UsageError("--dataset must be mnist, fashion-mnist or cifar10, got '" + dataset + "'");
    o.batch = vm["batch-size"].defaulted() ? 128 : batch;
    o.steps = steps;
    o.layers = !no_layers;
    o.threads = apply_threads(threads);
    run_bench_train(o);
    return 0;
  }
  require(!float_path.empty() && !int_path.empty(), "bench needs --float CHECKPOINT and --int8 MODEL, or --train MODEL");
  const KernelPath path = kernel_option(kernel);
  const int nthreads = apply_threads(threads);

  const Checkpoint ckpt = load_checkpoint(float_path);
  const ModulePtr float_model = model_from_any_checkpoint(ckpt, checkpoint_qconfig);
  float_model->eval();
  const Int8Graph graph = Int8Graph::load(int_path);
  require(graph.input_shape == Shape{ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width},
          "the two models take different inputs: " + shape_str(graph.input_shape) + " vs " +
              shape_str({ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width}));
  NoGradGuard no_grad;

  const Tensor one = random_images(1, graph.input_shape, 1), many = random_images(batch, graph.input_shape, 2);
  // An integer model with a pixel table reads raw bytes, as it does in `eval`; one without, the floats.
  const std::vector<uint8_t> pixels = random_pixels(batch, graph.input_shape, 3);
  const auto run_int = [&](const Tensor& x) {
    if (graph.has_pixel_table())
      graph.run_pixels(pixels.data(), x.size(0), path);
    else
      graph.run(x, path);
  };
  const double f1 = median_seconds([&] { float_model->forward(one); }, seconds / 2);
  const double i1 = median_seconds([&] { run_int(one); }, seconds / 2);
  const double fb = median_seconds([&] { float_model->forward(many); }, seconds, 5);
  const double ib = median_seconds([&] { run_int(many); }, seconds, 5);
  const double macs = graph.multiply_adds_per_image();

  // GEMM rates on one large product, float and int8, both on our kernels (core/gemm.h, the float path
  // linear layers and matmul run on; int8_gemm.h).
  const int64_t gm = 1024, gk = 1024, gn = 1024;
  std::vector<float> fa(gm * gk), fw(gk * gn), fc(gm * gn);
  for (size_t i = 0; i < fa.size(); ++i) fa[i] = static_cast<float>(i % 251) / 251.0f - 0.5f;
  for (size_t i = 0; i < fw.size(); ++i) fw[i] = static_cast<float>(i % 241) / 241.0f - 0.5f;
  const double fgemm = median_seconds(
      [&] { gemm(gm, gn, gk, {fa.data(), gk, 1}, {fw.data(), gn, 1}, fc.data(), gn, false); }, seconds / 2, 5);
  std::vector<int8_t> qa(gm * gk, 3), qw(gn * gk, -2), qc(gm * gn);
  FullyConnectedInt8Params fp;
  fp.output_multiplier.assign(gn, 1 << 30);
  fp.output_shift.assign(gn, -8);
  const PackedFullyConnectedInt8 packed(fp, qw.data(), {gn, gk}, nullptr);
  const double igemm = median_seconds([&] { packed.run(qa.data(), gm, qc.data(), path); }, seconds / 2, 5);
  const double gemm_ops = 2.0 * gm * gk * gn;
  const double model_f = 2 * macs * batch / fb * 1e-9, model_i = 2 * macs * batch / ib * 1e-9;
  const double fgemm_rate = gemm_ops / fgemm * 1e-9, igemm_rate = gemm_ops / igemm * 1e-9;
  const SettledPeak settled_f = settle_peak(widest_float_fma(), nthreads, std::max(model_f, fgemm_rate));
  const bool simd = path == KernelPath::Avx512Vnni || path == KernelPath::Avx2;
  const SettledPeak settled_i =
      simd ? settle_peak(int8_peak_instruction(path), nthreads, std::max(model_i, igemm_rate))
           : SettledPeak{Peak{0.0, "none (the " + std::string(kernel_path_name(path)) + " kernels are scalar)"}, true};
  // A peak that stayed below a measured rate was disturbed (a busy machine): no shares of it.
  const Peak peak_f = settled_f.settled ? settled_f.peak : Peak{0.0, settled_f.peak.instruction};
  const Peak peak_i = settled_i.settled ? settled_i.peak : Peak{0.0, settled_i.peak.instruction};

  const auto fsize = fs::file_size(float_path), isize = fs::file_size(int_path);
  std::printf("bench: %s (%s, %s float kernels) vs %s (integer, %s kernels), %d threads\n", float_path.c_str(),
              ckpt.model_name.c_str(), float_path_name(active_float_path()), int_path.c_str(), kernel_path_name(path),
              nthreads);
  std::printf("  %-30s %14s %14s %10s\n", "", "float", "integer", "ratio");
  std::printf("  %-30s %11.1f us %11.1f us %9.2fx\n", "latency, batch 1 (median)", f1 * 1e6, i1 * 1e6, f1 / i1);
  std::printf("  %-30s %10.0f im/s %10.0f im/s %9.2fx\n", ("throughput, batch " + std::to_string(batch)).c_str(),
              batch / fb, batch / ib, fb / ib);
  std::printf("  %-30s %8.1f GOP/s %8.1f GOP/s\n", "model arithmetic rate", model_f, model_i);
  std::printf("  %-30s %14s %14s\n", "model share of peak", share_str(model_f, peak_f).c_str(),
              share_str(model_i, peak_i).c_str());
  std::printf("  %-30s %12llu B %12llu B %9.1f%%\n", "model file size", static_cast<unsigned long long>(fsize),
              static_cast<unsigned long long>(isize), 100.0 * isize / fsize);
  std::printf("  %-30s %8.1f GOP/s %8.1f GOP/s\n", "GEMM 1024x1024x1024 rate", fgemm_rate, igemm_rate);
  std::printf("  %-30s %14s %14s\n", "GEMM share of peak", share_str(fgemm_rate, peak_f).c_str(),
              share_str(igemm_rate, peak_i).c_str());
  std::printf("  %-30s %8.1f GOP/s %8.1f GOP/s\n", "peak (measured, all threads)", settled_f.peak.gops,
              settled_i.peak.gops);
  if (!settled_f.settled || !settled_i.settled)
    std::printf("  (a peak measured below a rate of this run: the machine is busy; its shares are not shown)\n");
  std::printf("  (%.0f multiply-adds per image, 2 ops each; peaks: register-only chains of %s and of %s)\n", macs,
              peak_f.instruction.c_str(), peak_i.instruction.c_str());
  return 0;
}

}  // namespace qatlab
