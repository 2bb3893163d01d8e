// ptq_dynamic.cpp: `qatlab ptq --dynamic FLOAT_CHECKPOINT`: quantize a float model's Linear and LSTM
// layers dynamically, save the dynamic model, and report against the float model what PyTorch's dynamic
// quantization tutorial reports: model size, accuracy, latency, and the mean absolute output difference.
//
// Shape letters: N batch, C classes.
#include "apps/ptq_dynamic.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/data_setup.h"
#include "apps/train_options.h"
#include "core/ops.h"
#include "nn/checkpoint.h"
#include "nn/train/evaluate.h"
#include "quant/engine/dynamic_quant.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

// "1,64" -> {1, 64}; every entry >= 1.
std::vector<int64_t> parse_batch_sizes(const std::string& text) {
  std::vector<int64_t> sizes;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == item.size() && !item.empty() && v >= 1 && v <= kMaxBatchSize,
            "--batch-size takes batch sizes in 1.." + std::to_string(kMaxBatchSize) +
                " separated by commas (e.g. 1,64), got '" + text + "'");
    sizes.push_back(v);
  }
  require(!sizes.empty(), "--batch-size takes batch sizes >= 1 separated by commas (e.g. 1,64), got '" + text + "'");
  return sizes;
}

// Median seconds per call of fa and of fb, timed alternately (fa, fb, fa, fb, ...) so that a change in
// the machine's load hits both alike, for about `seconds` in all and at least `min_reps` calls each.
std::pair<double, double> median_seconds_pair(const std::function<void()>& fa, const std::function<void()>& fb,
                                              double seconds, int min_reps) {
  for (int i = 0; i < 2; ++i) fa(), fb();  // warm caches and the layers' scratch buffers
  std::vector<double> ta, tb;
  const auto start = Clock::now();
  while (static_cast<int>(ta.size()) < min_reps ||
         std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    auto t0 = Clock::now();
    fa();
    ta.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    t0 = Clock::now();
    fb();
    tb.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  const auto median = [](std::vector<double>& v) {
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    return v[v.size() / 2];
  };
  return {median(ta), median(tb)};
}

// Both models over the test set, batch by batch on the same images.
struct Comparison {
  EvalResult f, d;               // accuracy and loss of the float and the dynamic model
  double abs_diff_sum = 0.0;     // sum over all outputs of |y_dyn - y_float|
  double abs_float_sum = 0.0;    // sum over all outputs of |y_float|
  double max_abs_diff = 0.0;
  int64_t outputs = 0;
  int64_t same_top1 = 0;
};

int32_t top1(const float* row, int64_t classes) {
  return static_cast<int32_t>(std::max_element(row, row + classes) - row);
}

Comparison compare_models(Module& float_model, Module& dyn_model, DataLoader& loader) {
  NoGradGuard no_grad;
  Comparison c;
  double loss_f = 0.0, loss_d = 0.0;
  int64_t correct_f = 0, correct_d = 0;
  loader.start_epoch(0);
  Batch batch;
  while (loader.next(batch)) {
    auto t0 = Clock::now();
    const Tensor yf = float_model.forward(batch.images);  // (N, C)
    c.f.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    const Tensor yd = dyn_model.forward(batch.images);  // (N, C)
    c.d.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t n = yf.size(0), classes = yf.size(1);
    loss_f += cross_entropy(yf, batch.labels).item() * n;
    loss_d += cross_entropy(yd, batch.labels).item() * n;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t pf = top1(yf.data() + i * classes, classes), pd = top1(yd.data() + i * classes, classes);
      correct_f += pf == batch.labels[i];
      correct_d += pd == batch.labels[i];
      c.same_top1 += pf == pd;
    }
    for (int64_t i = 0; i < n * classes; ++i) {
      const double diff = std::abs(static_cast<double>(yd.data()[i]) - yf.data()[i]);
      c.abs_diff_sum += diff;
      c.abs_float_sum += std::abs(yf.data()[i]);
      c.max_abs_diff = std::max(c.max_abs_diff, diff);
    }
    c.outputs += n * classes;
    c.f.count += n;
  }
  c.d.count = c.f.count;
  if (c.f.count) {
    c.f.loss = loss_f / c.f.count, c.d.loss = loss_d / c.d.count;
    c.f.accuracy = static_cast<double>(correct_f) / c.f.count;
    c.d.accuracy = static_cast<double>(correct_d) / c.d.count;
  }
  return c;
}

// The first `n` test images as one batch (fewer if the test set is smaller).
Tensor first_images(const DataBundle& data, int64_t n) {
  DataLoader loader(data.test, loader_options(data, n, 0, false));
  loader.start_epoch(0);
  Batch batch;
  loader.next(batch);
  return batch.images.clone();
}

std::string bytes_str(uintmax_t b) {
  std::string digits = std::to_string(b), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out + " B";
}

}  // namespace

int cmd_ptq_dynamic(int argc, char** argv) {
  DataSettings d;
  std::string path, out, batches_text = "1,64", kernel = "auto";
  int64_t eval_batch = 256;
  double seconds = 2.0;
  int threads = 0;
  bool overwrite = false, dynamic = false;
  po::options_description desc("ptq --dynamic options");
  desc.add_options()("checkpoint", po::value(&path), "the float checkpoint (also the first positional argument)")
      ("dynamic", po::bool_switch(&dynamic), "dynamic quantization (int8 weights, activations per batch)")
      ("out", po::value(&out), "output directory (default: beside the checkpoint, ptq-dynamic)")
      ("overwrite", po::bool_switch(&overwrite), "allow --out to name a directory that already holds a dynamic model")
      ("batch-size", po::value(&batches_text)->default_value(batches_text), "latency batch sizes, comma-separated")
      ("eval-batch-size", po::value(&eval_batch)->default_value(eval_batch), "images per batch of the test-set pass")
      ("seconds", po::value(&seconds)->default_value(seconds), "time spent on each latency measurement")
      ("kernel", po::value(&kernel)->default_value(kernel), "int8 matmul kernels: auto | reference | portable | avx2")
      ("threads", po::value(&threads)->default_value(0), "worker threads for both models (0 = all cores)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("ptq", "--dynamic FLOAT_CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the float checkpoint: qatlab ptq --dynamic CHECKPOINT");
  const std::vector<int64_t> batch_sizes = parse_batch_sizes(batches_text);
  require_batch_size("eval-batch-size", eval_batch);
  require_finite_in("seconds", seconds, 0.001, 3600, "in 0.001..3600");
  require_threads("threads", threads);
  KernelPath path_kind = best_dynamic_gemm_path();
  if (kernel != "auto") {
    try {
      path_kind = parse_kernel_path(kernel);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("--kernel: ") + e.what());
    }
    require(dynamic_gemm_path_supported(path_kind),
            "--kernel " + kernel + " cannot run the dynamic int8 matmul (use auto, reference, portable or avx2)");
  }
  const int nthreads = apply_threads(threads);

  const Checkpoint base = load_checkpoint(path);
  require(base.model_kind == "float",
          path + " is a '" + base.model_kind + "' checkpoint; ptq --dynamic takes a float one");
  const DataRecord record = data_record(base);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  const DataBundle data = load_data(d, /*with_train=*/false, &record);
  check_data_fits(data, path, base.spec, record.class_names, /*allow_mismatch=*/false);
  if (out.empty()) out = (fs::path(path).parent_path() / "ptq-dynamic").string();
  out = choose_out_dir(out, overwrite, "");  // refuses a directory holding a training run
  const std::string dyn_path = out + "/model.dynamic.h5", float_path = out + "/model.float.h5";
  require(overwrite || !fs::exists(dyn_path),
          "--out " + out + " already holds a dynamic model: pass --overwrite to replace it, or another --out");

  const ModulePtr float_model = model_from_checkpoint(base);
  float_model->eval();
  const ModulePtr dyn_model = quantize_dynamic(model_from_checkpoint(base));
  set_dynamic_kernel_path(*dyn_model, path_kind);
  std::string layers;
  for (const auto& [name, m] : dyn_model->named_modules(dyn_model))
    if (as_dynamic(*m))
      layers += (layers.empty() ? "" : ", ") + (name.empty() ? "(model)" : name) + " (" + m->type() + ")";
  require(!layers.empty(), "model " + base.model_name + " has no Linear or LSTM layer to quantize dynamically");

  // The dynamic model, and the float model alone (no optimizer state) for a like-for-like file size.
  fs::create_directories(out);
  save_dynamic_model(dyn_path, {base.model_name, base.model_description, base.spec, base.dataset, dyn_model,
                                base.data_mean, base.data_std, base.class_names});
  Checkpoint float_only;
  float_only.model_name = base.model_name;
  float_only.model_description = base.model_description;
  float_only.model_kind = "float";
  float_only.spec = base.spec;
  for (const auto& [name, t] : float_model->state_dict()) float_only.model_state.push_back({name, t});
  float_only.optimizer_kind = "none";
  float_only.epoch = base.epoch;
  float_only.dataset = base.dataset;
  float_only.data_mean = base.data_mean;
  float_only.data_std = base.data_std;
  float_only.class_names = base.class_names;
  float_only.config_ini = base.config_ini;
  float_only.history = base.history;
  save_checkpoint(float_path, float_only);

  DataLoader test(data.test, loader_options(data, eval_batch, 0, false));
  const Comparison cmp = compare_models(*float_model, *dyn_model, test);

  struct Latency {
    int64_t batch;
    double f, d;
  };
  std::vector<Latency> latencies;
  {
    NoGradGuard no_grad;
    for (int64_t b : batch_sizes) {
      const Tensor x = first_images(data, b);
      const auto [tf, td] = median_seconds_pair([&] { float_model->forward(x); }, [&] { dyn_model->forward(x); },
                                                seconds, b == 1 ? 20 : 5);
      latencies.push_back({x.size(0), tf, td});
    }
  }

  const DynamicWeightBytes wb = dynamic_weight_bytes(dyn_model);
  const uintmax_t float_size = fs::file_size(float_path), dyn_size = fs::file_size(dyn_path);
  const uintmax_t ckpt_size = fs::file_size(path);
  std::printf(
      "ptq --dynamic %s: int8 weights (symmetric per output row), activations quantized per batch at run time\n",
      base.model_name.c_str());
  std::printf("  quantized layers: %s\n", layers.c_str());
  std::printf("  %s kernels, %d thread%s for both models; %s test set, %lld images in batches of %lld\n\n",
              kernel_path_name(path_kind), nthreads, nthreads == 1 ? "" : "s", data.test.name.c_str(),
              static_cast<long long>(cmp.f.count), static_cast<long long>(eval_batch));
  std::printf("  %-34s %16s %16s %10s\n", "", "float", "dynamic int8", "float/dyn");
  std::printf("  %-34s %16s %16s %9.2fx\n", "weight bytes of quantized layers", bytes_str(wb.float_bytes()).c_str(),
              bytes_str(wb.int8_bytes).c_str(),
              static_cast<double>(wb.float_bytes()) / std::max<int64_t>(wb.int8_bytes, 1));
  std::printf("  %-34s %16s %16s %9.2fx\n", "model file size", bytes_str(float_size).c_str(),
              bytes_str(dyn_size).c_str(), static_cast<double>(float_size) / std::max<uintmax_t>(dyn_size, 1));
  std::printf("  %-34s %14.2f %% %14.2f %% %+8.2f points\n", "test accuracy", 100.0 * cmp.f.accuracy,
              100.0 * cmp.d.accuracy, 100.0 * (cmp.d.accuracy - cmp.f.accuracy));
  std::printf("  %-34s %16.4f %16.4f\n", "test loss", cmp.f.loss, cmp.d.loss);
  for (const Latency& l : latencies)
    std::printf("  %-34s %13.1f us %13.1f us %9.2fx\n",
                ("latency, batch " + std::to_string(l.batch) + " (median)").c_str(), l.f * 1e6, l.d * 1e6, l.f / l.d);
  const double mean_diff = cmp.abs_diff_sum / std::max<int64_t>(cmp.outputs, 1);
  const double mean_float = cmp.abs_float_sum / std::max<int64_t>(cmp.outputs, 1);
  std::printf(
      "\n  output difference: mean |y_dyn - y_float| = %.5f, %.3f %% of mean |y_float| = %.4f (max %.4f over %lld "
      "outputs)\n",
      mean_diff, mean_float > 0 ? 100.0 * mean_diff / mean_float : 0.0, mean_float, cmp.max_abs_diff,
      static_cast<long long>(cmp.outputs));
  std::printf("  top-1 prediction identical on %.2f %% of test images\n",
              100.0 * cmp.same_top1 / std::max<int64_t>(cmp.f.count, 1));
  std::printf("  (file sizes: %s holds the float model alone; %s, with training state, is %s)\n",
              float_path.c_str(), path.c_str(), bytes_str(ckpt_size).c_str());
  std::printf("wrote %s and %s\n", dyn_path.c_str(), float_path.c_str());
  return 0;
}

}  // namespace qatlab
