// integer_eval.cpp: running an integer graph over a test set, optionally against its QAT simulation.
#include "quant/workflow/integer_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "data/loader.h"
#include "quant/engine/lowered_layer.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"

namespace qatlab {

int32_t argmax_row(const int8_t* row, int64_t n) { return static_cast<int32_t>(std::max_element(row, row + n) - row); }

void run_integer(const Int8Graph& graph, KernelPath path, DataLoader& loader, Module* sim, EvalResult& r, Agreement& a,
                 IntegerOutputs* outputs) {
  NoGradGuard no_grad;
  int64_t correct = 0;
  loader.start_epoch(0);
  Batch batch;
  const QParams& grid = graph.output_grid();
  double seconds_int = 0.0;
  const bool pixels = graph.has_pixel_table();
  while (loader.next(batch)) {
    Shape shape;
    const auto ti = std::chrono::steady_clock::now();
    // A graph with a pixel table reads the raw bytes: integer from the image on (int8_graph.h).
    if (pixels && static_cast<int64_t>(batch.pixels.size()) != batch.images.numel())
      throw std::logic_error("run_integer: the graph reads raw pixels; make the loader keep them (keep_pixels)");
    const std::vector<int8_t> codes = pixels ? graph.run_pixel_codes(batch.pixels.data(), batch.images.size(0), &shape, path)
                                             : graph.run_codes(batch.images, &shape, path);
    seconds_int += std::chrono::duration<double>(std::chrono::steady_clock::now() - ti).count();
    if (shape.empty() || shape[0] != static_cast<int64_t>(batch.labels.size()))
      throw std::runtime_error("integer graph: output " + shape_str(shape) + " for a batch of " +
                               std::to_string(batch.labels.size()) + " images");
    const int64_t n = shape[0], classes = shape_numel(shape) / std::max<int64_t>(n, 1);
    if (outputs) {
      outputs->classes = classes;
      outputs->codes.insert(outputs->codes.end(), codes.begin(), codes.end());
      outputs->labels.insert(outputs->labels.end(), batch.labels.begin(), batch.labels.begin() + n);
    }
    std::vector<int8_t> sim_codes, exact_codes;
    if (sim) {
      sim_codes = quantize_tensor(sim->forward(batch.images), grid);
      set_exact_mode(*sim, true, path);
      exact_codes = quantize_tensor(sim->forward(batch.images), grid);
      set_exact_mode(*sim, false);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int32_t pred = argmax_row(codes.data() + i * classes, classes);
      r.predictions.push_back(pred);
      if (outputs) outputs->predictions.push_back(pred);
      correct += pred == batch.labels[i];
      if (!sim) continue;
      a.images++;
      a.same_top1 += pred == argmax_row(sim_codes.data() + i * classes, classes);
      a.exact_identical_images += std::equal(codes.begin() + i * classes, codes.begin() + (i + 1) * classes,
                                             exact_codes.begin() + i * classes);
      for (int64_t j = i * classes; j < (i + 1) * classes; ++j) {
        const int64_t d = std::abs(static_cast<int>(codes[j]) - static_cast<int>(sim_codes[j]));
        a.elements++;
        a.differing += d != 0;
        a.max_lsb = std::max(a.max_lsb, d);
      }
    }
    r.count += n;
  }
  r.accuracy = r.count ? static_cast<double>(correct) / r.count : 0.0;
  r.seconds = seconds_int;
}

bool set_dataset_pixel_table(Int8Graph& graph, const std::string& dataset) {
  graph.dataset = dataset;  // `eval` takes it when no --dataset is given
  Normalisation norm;
  try {
    norm = dataset_normalisation(dataset);
  } catch (const std::invalid_argument&) {  // not a built-in dataset
    return false;
  }
  set_pixel_table(graph, normalised_pixel_values(graph.input_shape.at(0), norm.mean, norm.std), norm.mean, norm.std);
  return true;
}

bool set_checkpoint_pixel_table(Int8Graph& graph, const Checkpoint& ckpt) {
  graph.class_names = ckpt.class_names;
  if (ckpt.data_mean.empty()) return set_dataset_pixel_table(graph, ckpt.dataset);
  graph.dataset = ckpt.dataset;
  set_pixel_table(graph, normalised_pixel_values(graph.input_shape.at(0), ckpt.data_mean, ckpt.data_std), ckpt.data_mean,
                  ckpt.data_std);
  return true;
}

DataRecord data_record(const Int8Graph& graph) {
  DataRecord r;
  r.dataset = graph.dataset;
  r.class_names = graph.class_names;
  for (const Int8Op& op : graph.ops) {
    if (op.kind != Int8OpKind::Quantize || op.pixel_mean.empty()) continue;
    r.mean = op.pixel_mean;
    r.std = op.pixel_std;
    break;
  }
  return r;
}

LoaderOptions integer_loader_options(const Int8Graph& graph, const DataBundle& data, int64_t batch_size) {
  LoaderOptions o = loader_options(data, batch_size, 0, false);
  o.keep_pixels = graph.has_pixel_table();
  return o;
}

std::string input_pipeline_note(const Int8Graph& graph, const std::string& path) {
  if (graph.has_pixel_table()) return "";
  return "note: " + path + " has no pixel table (files before format version 3 have none): its input codes "
         "come from the loader's normalised floats, as before; convert the QAT checkpoint again for the integer "
         "input pipeline";
}

std::string outputs_csv(const IntegerOutputs& o, const QParams& grid) {
  std::string s = "# qatlab-int8-outputs 1\n";
  char buf[128];
  std::snprintf(buf, sizeof buf, "# output grid: scale %.9g zero_point %d (logit = scale * (code - zero_point))\n",
                static_cast<double>(grid.scale.at(0)), grid.zero_point.at(0));
  s += buf;
  s += "image,label,predicted";
  for (int64_t k = 0; k < o.classes; ++k) {
    std::snprintf(buf, sizeof buf, ",code_%lld", static_cast<long long>(k));
    s += buf;
  }
  s += '\n';
  for (size_t i = 0; i < o.labels.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%zu,%d,%d", i, o.labels[i], o.predictions[i]);
    s += buf;
    for (int64_t k = 0; k < o.classes; ++k) {
      std::snprintf(buf, sizeof buf, ",%d", static_cast<int>(o.codes[i * o.classes + k]));
      s += buf;
    }
    s += '\n';
  }
  return s;
}

}  // namespace qatlab
