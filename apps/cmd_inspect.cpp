// cmd_inspect.cpp: `qatlab inspect MODEL`: per layer, what quantization does (bits, schemes, scales and
// zero points, the integer multipliers and shifts convert emits, ranges, SQNR against the float model on a
// few test batches); --dot writes the graph with its fake-quant nodes, --hist plots a layer's weights or
// activations with the quantization grid over them, --explain works out one output of one layer in integer
// arithmetic, step by step. An integer model file is described op by op.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/data_setup.h"
#include "apps/qat_options.h"
#include "apps/svg_plot.h"
#include "apps/train_loop.h"
#include "core/atomic_file.h"
#include "nn/checkpoint.h"
#include "quant/convert.h"
#include "quant/explain.h"
#include "quant/inspect.h"
#include "quant/int8_graph.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// --explain: the integer graph (loaded, or converted from the QAT checkpoint) works out one output of
// one layer for one test image, every intermediate integer shown.
int explain_one_output(const std::string& path, DataSettings d, bool dataset_defaulted, const std::string& layer,
                       const std::string& at_text, int64_t image_index) {
  ExplainAt at;
  if (!at_text.empty()) {
    std::vector<int64_t> v;
    std::istringstream in(at_text);
    std::string part;
    while (std::getline(in, part, ',')) {
      size_t used = 0;
      try {
        v.push_back(std::stoll(part, &used));
      } catch (const std::exception&) {
        used = std::string::npos;
      }
      require(used == part.size(), "--at must be CHANNEL or CHANNEL,Y,X (whole numbers), got '" + at_text + "'");
    }
    require(v.size() == 1 || v.size() == 3, "--at must be CHANNEL or CHANNEL,Y,X, got '" + at_text + "'");
    at.channel = v[0];
    if (v.size() == 3) at.y = v[1], at.x = v[2];
  }
  Int8Graph graph;
  std::string dataset;
  if (Int8Graph::is_int8_graph_file(path)) {
    graph = Int8Graph::load(path);
  } else {
    const Checkpoint ckpt = load_checkpoint(path);
    require(ckpt.model_kind == "qat", path + " is a '" + ckpt.model_kind + "' checkpoint: --explain needs a QAT "
                                            "checkpoint or an integer model file");
    const auto model = std::static_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt));
    model->eval();
    graph = convert(*model, {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width});
    dataset = ckpt.dataset;
  }
  const std::vector<std::string> layers = explainable_ops(graph);
  require(std::find(layers.begin(), layers.end(), layer) != layers.end(),
          "--explain: no conv or linear layer '" + layer + "'; layers: " + joined(layers));
  if (dataset_defaulted && !dataset.empty()) d.dataset = dataset;
  const DataBundle data = load_data(d, /*with_train=*/false);
  require(image_index >= 0 && image_index < data.test.n,
          "--image must be in 0.." + std::to_string(data.test.n - 1) + ", got " + std::to_string(image_index));
  DataLoader loader(data.test, loader_options(data, 1, 0, false));
  loader.start_epoch(0);
  Batch batch;
  for (int64_t i = 0; i <= image_index; ++i) loader.next(batch);
  std::string text;
  try {
    text = explain_output(graph, layer, batch.images, at);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--explain: ") + e.what());
  }
  std::printf("%s, %s test image %lld (label %d)\n\n%s", path.c_str(), d.dataset.c_str(),
              static_cast<long long>(image_index), batch.labels.empty() ? -1 : batch.labels[0], text.c_str());
  return 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  std::string path, dot, hist, out, explain, at_text;
  DataSettings d;
  int64_t batches = 4, batch_size = 64, channel = -1, image_index = 0;
  int bins = 100, threads = 0;
  bool activations = false, overwrite = false;
  po::options_description desc("inspect options");
  desc.add_options()("model", po::value(&path), "QAT (or PTQ) checkpoint, or integer model file (also the first positional argument)")
      ("batches", po::value(&batches)->default_value(batches), "test batches the SQNR and the activation ranges are measured on")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per batch")
      ("dot", po::value(&dot), "write the graph with its fake-quant nodes to this Graphviz file (render: dot -Tsvg FILE -o graph.svg)")
      ("hist", po::value(&hist), "plot this layer's weight histogram with its quantization grid (a name from the report)")
      ("activations", po::bool_switch(&activations), "--hist: the layer's output values (float model, on the batches) instead of its weights")
      ("channel", po::value(&channel), "--hist weights: this output channel (default: the one with the largest scale)")
      ("bins", po::value(&bins)->default_value(bins), "--hist: histogram bins")
      ("out", po::value(&out), "--hist: the SVG file to write")
      ("explain", po::value(&explain), "work out one output value of this conv / linear layer step by step: codes, "
                                        "int32 accumulator, multiplier and shift, output code (integer arithmetic)")
      ("at", po::value(&at_text), "--explain: which output, CHANNEL or CHANNEL,Y,X (default: channel 0, middle pixel)")
      ("image", po::value(&image_index)->default_value(image_index), "--explain: which test image")
      ("overwrite", po::bool_switch(&overwrite), "allow --dot / --out to replace an existing file")
      ("threads", po::value(&threads)->default_value(0), "worker threads (0 = all cores)");
  add_data_options(desc, d);
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command("inspect", "MODEL [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the model to inspect: qatlab inspect CHECKPOINT");
  require(batches >= 1 && batches <= 100000, "--batches must be in 1..100000, got " + std::to_string(batches));
  require_batch_size("batch-size", batch_size);
  require(bins >= 2 && bins <= 10000, "--bins must be in 2..10000, got " + std::to_string(bins));
  require_threads("threads", threads);
  require(hist.empty() == out.empty(), hist.empty() ? "--out names the --hist plot: add --hist LAYER"
                                                    : "--hist needs --out FILE.svg (where to write the plot)");
  require(!hist.empty() || (!activations && !vm.count("channel")), "--activations and --channel go with --hist LAYER");
  require(!activations || !vm.count("channel"), "--channel picks a weight channel; activations have one grid per layer");
  require(!vm.count("channel") || channel >= 0, "--channel must be >= 0, got " + std::to_string(channel));
  require(dot.empty() || out.empty() || fs::absolute(dot) != fs::absolute(out), "--dot and --out name the same file");
  guard_output("--dot", dot, overwrite);
  guard_output("--out", out, overwrite);
  apply_threads(threads);
  require(explain.empty() || (dot.empty() && hist.empty()), "--explain goes alone (without --dot or --hist)");
  require(!explain.empty() || (at_text.empty() && vm["image"].defaulted()), "--at and --image go with --explain LAYER");
  if (!explain.empty()) return explain_one_output(path, d, vm["dataset"].defaulted(), explain, at_text, image_index);

  if (Int8Graph::is_int8_graph_file(path)) {
    require(dot.empty() && hist.empty(),
            "--dot and --hist need the QAT checkpoint: " + path + " is an integer model file (no float weights left)");
    const Int8Graph graph = Int8Graph::load(path);
    std::printf("%s\n%s", path.c_str(), describe_int8_graph(graph).c_str());
    return 0;
  }

  const Checkpoint ckpt = load_checkpoint(path);
  require(ckpt.model_kind == "qat", path + " is a '" + ckpt.model_kind +
                                        "' checkpoint: inspect shows what quantization does to a model, so make a "
                                        "quantized one first (`qatlab qat --from " + path + "` or `qatlab ptq " + path + "`)");
  const auto model = std::static_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt));
  GridHistogram g;  // the --hist data; weights need no data set, so they are checked before any work
  if (!hist.empty()) {
    const std::vector<std::string> names = inspectable_layers(*model);
    require(std::find(names.begin(), names.end(), hist) != names.end(),
            "--hist: no layer '" + hist + "'; layers: " + joined(names));
    // With the name valid, what weight_histogram can still refuse (a row without weights, a channel out
    // of range) is a mistake in how the command was called.
    if (!activations) {
      try {
        g = weight_histogram(*model, hist, vm.count("channel") ? channel : -1, bins);
      } catch (const std::invalid_argument& e) {
        throw UsageError(std::string("--hist: ") + e.what());
      }
    }
  }

  if (vm["dataset"].defaulted() && !ckpt.dataset.empty()) d.dataset = ckpt.dataset;
  DataBundle data = load_data(d, /*with_train=*/false);
  require(data.spec.channels == ckpt.spec.channels && data.spec.height == ckpt.spec.height &&
              data.spec.width == ckpt.spec.width,
          "the model was built for " + shape_str({ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width}) + " images; " +
              d.dataset + " has " + shape_str({data.spec.channels, data.spec.height, data.spec.width}));
  std::vector<Tensor> inputs;  // each (N, C, H, W); holding the handles keeps the loader from reusing them
  {
    DataLoader loader(data.test, loader_options(data, batch_size, 0, false));
    loader.start_epoch(0);
    Batch batch;
    while (static_cast<int64_t>(inputs.size()) < batches && loader.next(batch)) inputs.push_back(batch.images);
  }

  const ModelReport report = inspect_model(model, inputs);
  std::printf("%s (%s %s, epoch %lld) on the first %lld %s test images\n\n%s", path.c_str(), ckpt.model_kind.c_str(),
              ckpt.model_name.c_str(), static_cast<long long>(ckpt.epoch), static_cast<long long>(report.images),
              d.dataset.c_str(), format_report(report).c_str());

  if (!dot.empty()) {
    atomic_write_text(dot, model_to_dot(*model));
    std::printf("\ngraph with its fake-quant nodes: %s (render: dot -Tsvg %s -o graph.svg)\n", dot.c_str(), dot.c_str());
  }
  if (!hist.empty()) {
    if (activations) g = activation_histogram(model, hist, inputs, bins);
    Histogram h;
    h.title = g.title;
    h.x_label = g.x_label;
    h.y_label = "count";
    h.edges = g.edges;
    h.counts = g.counts;
    h.grid = g.levels;
    h.clip = std::make_pair(g.clip_min, g.clip_max);
    atomic_write_text(out, render_histogram(h));
    std::printf("\nhistogram: %s -> %s\n", g.title.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace qatlab
