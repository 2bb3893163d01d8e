// cmd_bench.cpp: `qatlab bench`: float vs integer model: batch-1 latency, batch-256 throughput, file
// sizes, and GEMM rates against this machine's measured peak.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <vector>

#include "apps/commands.h"
#include "apps/integer_eval.h"
#include "apps/qat_options.h"
#include "apps/train_loop.h"
#include "core/cpu_peak.h"
#include "quant/int8_graph.h"

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


}  // namespace

int cmd_bench(int argc, char** argv) {
  std::string float_path, int_path, kernel = "auto";
  int64_t batch = 256;
  double seconds = 2.0;
  int threads = 0;
  po::options_description desc("bench options");
  desc.add_options()("float", po::value(&float_path), "float (or QAT) checkpoint: the float model to compare with")
      ("int8", po::value(&int_path), "integer model file (from qatlab convert)")
      ("batch-size", po::value(&batch)->default_value(batch), "batch for the throughput figure")
      ("seconds", po::value(&seconds)->default_value(seconds), "time spent on each measurement")
      ("kernel", po::value(&kernel)->default_value(kernel), "integer kernels: auto | reference | portable | avx2 | avx512vnni")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  po::variables_map vm;
  if (!parse_command("bench", "--float CKPT --int8 MODEL [options]", desc, {}, argc, argv, vm)) return 0;
  require(!float_path.empty() && !int_path.empty(), "bench needs --float CHECKPOINT and --int8 MODEL");
  require_batch_size("batch-size", batch);
  require_finite_in("seconds", seconds, 0.001, 3600, "in 0.001..3600");
  const KernelPath path = kernel_option(kernel);
  const int nthreads = apply_threads(threads);

  const Checkpoint ckpt = load_checkpoint(float_path);
  const ModulePtr float_model = model_from_any_checkpoint(ckpt);
  float_model->eval();
  const Int8Graph graph = Int8Graph::load(int_path);
  require(graph.input_shape == Shape{ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width},
          "the two models take different inputs: " + shape_str(graph.input_shape) + " vs " +
              shape_str({ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width}));
  NoGradGuard no_grad;

  const Tensor one = random_images(1, graph.input_shape, 1), many = random_images(batch, graph.input_shape, 2);
  const double f1 = median_seconds([&] { float_model->forward(one); }, seconds / 2);
  const double i1 = median_seconds([&] { graph.run(one, path); }, seconds / 2);
  const double fb = median_seconds([&] { float_model->forward(many); }, seconds, 5);
  const double ib = median_seconds([&] { graph.run(many, path); }, seconds, 5);
  const double macs = graph.multiply_adds_per_image();

  // GEMM rates on one large product (batch 256 x 1024 -> 1024), float (Eigen) and int8 (our kernels).
  const int64_t gm = 256, gk = 1024, gn = 1024;
  Eigen::MatrixXf fa = Eigen::MatrixXf::Random(gm, gk), fw = Eigen::MatrixXf::Random(gk, gn), fc(gm, gn);
  const double fgemm = median_seconds([&] {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < nthreads; ++t) {
      const int64_t lo = gn * t / nthreads, hi = gn * (t + 1) / nthreads;
      fc.middleCols(lo, hi - lo).noalias() = fa * fw.middleCols(lo, hi - lo);
    }
  }, seconds / 2, 5);
  std::vector<int8_t> qa(gm * gk, 3), qw(gn * gk, -2), qc(gm * gn);
  FullyConnectedInt8Params fp;
  fp.output_multiplier.assign(gn, 1 << 30);
  fp.output_shift.assign(gn, -8);
  const PackedFullyConnectedInt8 packed(fp, qw.data(), {gn, gk}, nullptr);
  const double igemm = median_seconds([&] { packed.run(qa.data(), gm, qc.data(), path); }, seconds / 2, 5);
  const double gemm_ops = 2.0 * gm * gk * gn;
  const double peak_f = measure_peak_float_gflops(nthreads), peak_i = estimate_peak_int8_gops(peak_f);

  const auto fsize = fs::file_size(float_path), isize = fs::file_size(int_path);
  std::printf("bench: %s (%s) vs %s (integer, %s kernels), %d threads\n", float_path.c_str(), ckpt.model_name.c_str(),
              int_path.c_str(), kernel_path_name(path), nthreads);
  std::printf("  %-28s %14s %14s %10s\n", "", "float", "integer", "ratio");
  std::printf("  %-28s %11.1f us %11.1f us %9.2fx\n", "latency, batch 1 (median)", f1 * 1e6, i1 * 1e6, f1 / i1);
  std::printf("  %-28s %10.0f im/s %10.0f im/s %9.2fx\n", ("throughput, batch " + std::to_string(batch)).c_str(),
              batch / fb, batch / ib, fb / ib);
  std::printf("  %-28s %11.2f GOP/s %9.2f GOP/s\n", "model arithmetic rate", 2 * macs * batch / fb * 1e-9,
              2 * macs * batch / ib * 1e-9);
  std::printf("  %-28s %12llu B %12llu B %9.1f%%\n", "model file size", static_cast<unsigned long long>(fsize),
              static_cast<unsigned long long>(isize), 100.0 * isize / fsize);
  std::printf("  %-28s %12.1f GF %12.1f GO\n", "GEMM 256x1024x1024 rate/s", gemm_ops / fgemm * 1e-9, gemm_ops / igemm * 1e-9);
  std::printf("  %-28s %12.1f GF %12.1f GO\n", "peak rate/s (see below)", peak_f, peak_i);
  std::printf("  %-28s %13.0f%% %13.0f%%\n", "GEMM share of peak", peak_f > 0 ? 100 * gemm_ops / fgemm * 1e-9 / peak_f : 0.0,
              peak_i > 0 ? 100 * gemm_ops / igemm * 1e-9 / peak_i : 0.0);
  std::printf("  (%.0f multiply-adds per image; float peak measured with FMA chains; int peak = 2x it: vpmaddwd,\n"
              "   which the AVX2 kernels use, does 32 ops per instruction to the FMA's 16 at the same issue rate)\n",
              macs);
  return 0;
}

}  // namespace qatlab
