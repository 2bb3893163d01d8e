// cmd_inspect.cpp: `qatlab inspect MODEL`: per layer, what quantization does (bits, schemes, scales and
// zero points, the integer multipliers and shifts convert emits, ranges, SQNR against the float model on a
// few test batches); --dot writes the graph with its fake-quant nodes, --hist plots a layer's weights or
// activations with the quantization grid over them, --explain works out one output of one layer in integer
// arithmetic, step by step; --sqnr-vs-bits plots, for a float checkpoint, each layer's SQNR after PTQ at
// 8 to 2 bits. An integer model file is described op by op, and --dot draws its integer graph; a teacher
// cache file (qatlab teacher-cache) by what it was made for.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/data_setup.h"
#include "apps/qat_options.h"
#include "apps/train_options.h"
#include "core/atomic_file.h"
#include "core/format.h"
#include "core/h5io.h"
#include "core/svg_plot.h"
#include "nn/checkpoint.h"
#include "nn/train/teacher_cache.h"
#include "quant/engine/int8_graph.h"
#include "quant/qat/convert.h"
#include "quant/teach/explain.h"
#include "quant/teach/inspect.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::string floats_str(const std::vector<float>& v) {
  std::string s;
  for (const float x : v) s += (s.empty() ? "" : ", ") + num_str(x);
  return "(" + s + ")";
}

// A teacher cache file (qatlab teacher-cache): what it was made for, from its header.
std::string describe_teacher_cache(const H5File& f) {
  const auto [key, shape] = TeacherCache::read_header(f);
  const int64_t side = 2 * key.crop_pad + 1;
  std::ostringstream os;
  os << "teacher cache: the outputs of " << key.teachers.size() << " teacher network"
     << (key.teachers.size() == 1 ? "" : "s (averaged)") << " for every crop and flip of every training image\n";
  for (size_t t = 0; t < key.teachers.size(); ++t)
    os << "  teacher " << t + 1 << "      SHA-256 " << key.teachers[t] << "\n";
  os << "  dataset        " << key.dataset << ": " << key.samples << " training images, " << key.classes << " classes\n"
     << "  variants       " << teacher_cache_variants(key.crop_pad, key.hflip) << " an image: "
     << (key.crop_pad > 0 ? std::to_string(side * side) + " crops of the " + std::to_string(key.crop_pad) +
                                "-pixel padded image"
                          : std::string("no crops"))
     << (key.hflip ? " x 2 flips" : ", no flips") << "\n"
     << "  normalisation  mean " << floats_str(key.mean) << ", std " << floats_str(key.std) << "\n"
     << "  float kernels  " << key.kernels << " (a run on other kernels refuses the file)\n"
     << "  logits         " << shape_str(shape) << " float32, " << fixed(static_cast<double>(shape_numel(shape)) * 4 / 1e6, 1)
     << " MB\n";
  return os.str();
}

// --explain: the integer graph (loaded, or converted from the QAT checkpoint) works out one output of
// one layer for one test image, every intermediate integer shown.
int explain_one_output(const std::string& path, DataSettings d, bool dataset_defaulted, const std::string& layer,
                       const std::string& at_text, int64_t image_index, int64_t terms) {
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
  std::shared_ptr<QatModel> model;  // a checkpoint's, for the batch-norm folding
  if (Int8Graph::is_int8_graph_file(path)) {
    graph = Int8Graph::load(path);
  } else {
    const Checkpoint ckpt = load_checkpoint(path);
    require(ckpt.model_kind == "qat", path + " is a '" + ckpt.model_kind + "' checkpoint: --explain needs a QAT "
                                            "checkpoint or an integer model file");
    model = std::static_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt, checkpoint_qconfig));
    model->eval();
    graph = convert(*model, {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width});
    set_checkpoint_pixel_table(graph, ckpt);  // as `convert` writes it
  }
  const std::vector<std::string> layers = explainable_ops(graph);
  require(std::find(layers.begin(), layers.end(), layer) != layers.end(),
          "--explain: no conv, linear, add, average pooling or lstm layer '" + layer + "'; layers: " + joined(layers));
  const DataRecord record = data_record(graph);
  use_model_dataset(d, dataset_defaulted, record);
  const DataBundle data = load_data(d, /*with_train=*/false, &record);
  require(image_index >= 0 && image_index < data.test.n,
          "--image must be in 0.." + std::to_string(data.test.n - 1) + ", got " + std::to_string(image_index));
  DataLoader loader(data.test, integer_loader_options(graph, data, 1));
  loader.start_epoch(0);
  Batch batch;
  for (int64_t i = 0; i <= image_index; ++i) loader.next(batch);
  std::string text;
  try {
    text = explain_output(graph, layer, ExplainImage(batch.images, batch.pixels.empty() ? nullptr : batch.pixels.data()),
                          at, terms);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--explain: ") + e.what());
  }
  std::printf("%s, %s test image %lld (label %d)\n\n%s", path.c_str(), data.source.c_str(),
              static_cast<long long>(image_index), batch.labels.empty() ? -1 : batch.labels[0], text.c_str());
  // A conv / linear layer with batch norm: how its integers came from the float BN parameters.
  for (const Int8Op& op : graph.ops) {
    if (op.name != layer || (op.kind != Int8OpKind::Conv2d && op.kind != Int8OpKind::FullyConnected)) continue;
    const auto* qat = model ? dynamic_cast<const QatLayer*>(model->submodule(layer).get()) : nullptr;
    if (!model)
      std::printf("\n(an integer model file keeps no float parameters: explain the QAT checkpoint to see how a batch norm, "
                  "if the layer had one, was folded into these integers)\n");
    else if (qat && qat->has_bn())
      std::printf("\n%s", explain_bn_folding(*qat, op.layer, at.channel, terms).c_str());
  }
  return 0;
}

// --sqnr-vs-bits: PTQ of the float checkpoint at each bit width, each layer's SQNR printed and plotted.
int sqnr_vs_bits(const Checkpoint& ckpt, const std::string& path, DataSettings d, bool dataset_defaulted,
                 int64_t batches, int64_t batch_size, const std::string& svg) {
  const DataRecord record = data_record(ckpt);
  use_model_dataset(d, dataset_defaulted, record);
  const DataBundle data = load_data(d, /*with_train=*/true, &record);
  check_data_fits(data, path, ckpt.spec, record.class_names, /*allow_mismatch=*/true);
  // Calibration on the first training batches, measurement on the first test batches (both unshuffled).
  const auto first_batches = [&](const ImageDataset& set) {
    std::vector<Tensor> out;  // each (N, C, H, W)
    DataLoader loader(set, loader_options(data, batch_size, 0, false));
    loader.start_epoch(0);
    Batch batch;
    while (static_cast<int64_t>(out.size()) < batches && loader.next(batch)) out.push_back(batch.images.clone());
    return out;
  };
  const std::vector<Tensor> calib = first_batches(data.train), test = first_batches(data.test);
  const SqnrByBits s = ptq_sqnr_by_bits([&] { return model_from_checkpoint(ckpt); }, {8, 6, 4, 3, 2}, calib, test);
  int64_t images = 0, calib_images = 0;
  for (const Tensor& x : test) images += x.size(0);
  for (const Tensor& x : calib) calib_images += x.size(0);
  std::printf("%s (float %s): SQNR in dB of each layer's output after post-training quantization at W = A bits\n"
              "(per-channel weights, min/max observers calibrated on %lld training images; measured on the first "
              "%lld %s test images; the model input stays at 8 bits, as prepare_qat keeps it)\n\n%s",
              path.c_str(), ckpt.model_name.c_str(), static_cast<long long>(calib_images),
              static_cast<long long>(images), data.source.c_str(), format_sqnr_by_bits(s).c_str());
  LineChart chart;
  chart.title = ckpt.model_name + ": SQNR per layer after PTQ at W = A bits";
  chart.x_label = "bits (weights and activations)";
  chart.y_label = "SQNR (dB)";
  for (const int b : s.bits) chart.x_ticks.push_back(b);
  int64_t left_out = 0;
  for (size_t l = 0; l < s.layers.size(); ++l) {
    PlotSeries series;
    series.label = s.layers[l];
    for (size_t b = 0; b < s.bits.size(); ++b) {
      if (!std::isfinite(s.sqnr_db[l][b])) {
        ++left_out;  // exact (no noise) or nothing measured: no point to draw
        continue;
      }
      series.x.push_back(s.bits[b]);
      series.y.push_back(s.sqnr_db[l][b]);
    }
    if (!series.x.empty()) chart.series.push_back(series);
  }
  require(!chart.series.empty(), "--sqnr-vs-bits: no layer has a finite SQNR to plot");
  atomic_write_text(svg, render_line_chart(chart));
  std::printf("\nplot: %s (%zu layers%s)\n", svg.c_str(), chart.series.size(),
              left_out ? (", " + std::to_string(left_out) + " points without a finite SQNR left out").c_str() : "");
  return 0;
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  std::string path, dot, hist, out, explain, at_text, sqnr_svg;
  DataSettings d;
  int64_t batches = 4, batch_size = 64, channel = -1, image_index = 0, terms = 8;
  int bins = 100, threads = 0;
  bool activations = false, overwrite = false;
  po::options_description desc("inspect options");
  desc.add_options()("model", po::value(&path), "QAT (or PTQ) checkpoint, integer model file or teacher cache (also the first positional argument)")
      ("batches", po::value(&batches)->default_value(batches), "test batches the SQNR and the activation ranges are measured on")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "images per batch")
      ("dot", po::value(&dot), "write the graph with its fake-quant nodes (an integer model file: its ops and slots) to this "
                              "Graphviz file (render: dot -Tsvg FILE -o graph.svg)")
      ("hist", po::value(&hist), "plot this layer's weight histogram with its quantization grid (a name from the report)")
      ("activations", po::bool_switch(&activations), "--hist: the layer's output values (float model, on the batches) instead of its weights")
      ("channel", po::value(&channel), "--hist weights: this output channel (default: the one with the largest scale)")
      ("bins", po::value(&bins)->default_value(bins), "--hist: histogram bins")
      ("out", po::value(&out), "--hist: the SVG file to write")
      ("explain", po::value(&explain), "work out one output value of this conv / linear layer step by step: codes, "
                                        "int32 accumulator, multiplier and shift, output code (integer arithmetic), and "
                                        "its batch-norm folding; also a residual add, a requantize op (NAME.input_requant), an "
                                        "average pooling or an lstm layer")
      ("at", po::value(&at_text), "--explain: which output, CHANNEL or CHANNEL,Y,X (default: channel 0, middle pixel; "
                                  "lstm: UNIT,STEP,0, default the last step)")
      ("image", po::value(&image_index)->default_value(image_index), "--explain: which test image")
      ("terms", po::value(&terms)->default_value(terms), "--explain: how many terms of each sum (and folded weights) "
                                                          "to list; 0 lists them all")
      ("sqnr-vs-bits", po::value(&sqnr_svg), "a float checkpoint: quantize it post-training at 8, 6, 4, 3 and 2 bits "
                                              "and plot each layer's SQNR against the bit width to this SVG file")
      ("overwrite", po::bool_switch(&overwrite), "allow --dot / --out / --sqnr-vs-bits to replace an existing file")
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
  guard_output("--sqnr-vs-bits", sqnr_svg, overwrite);
  require(sqnr_svg.empty() || (dot.empty() && hist.empty() && explain.empty()),
          "--sqnr-vs-bits goes alone (without --dot, --hist or --explain)");
  apply_threads(threads);
  require(explain.empty() || (dot.empty() && hist.empty()), "--explain goes alone (without --dot or --hist)");
  require(!explain.empty() || (at_text.empty() && vm["image"].defaulted() && vm["terms"].defaulted()),
          "--at, --image and --terms go with --explain LAYER");
  require(terms >= 0, "--terms must be >= 0 (0 lists every term), got " + std::to_string(terms));
  if (!explain.empty()) return explain_one_output(path, d, vm["dataset"].defaulted(), explain, at_text, image_index, terms);

  // The file is opened (and checksummed) once to see its kind; a teacher cache is hundreds of MB. What does
  // not open is left to load_checkpoint below, whose error says what is wrong.
  H5File file;
  try {
    file = H5File::open_read(path);
  } catch (const std::exception&) {
  }
  if (file.is_open() && file.has_format(kInt8GraphFormat)) {
    require(sqnr_svg.empty(), "--sqnr-vs-bits needs the float checkpoint: " + path + " is an integer model file");
    require(hist.empty(), "--hist needs the QAT checkpoint: " + path + " is an integer model file (no float weights left)");
    const Int8Graph graph = Int8Graph::load(file);
    std::printf("%s\n%s", path.c_str(), describe_int8_graph(graph).c_str());
    if (!dot.empty()) {
      atomic_write_text(dot, int8_graph_to_dot(graph));
      std::printf("\ninteger graph with its slots: %s (render: dot -Tsvg %s -o graph.svg)\n", dot.c_str(), dot.c_str());
    }
    return 0;
  }

  if (file.is_open() && file.has_format(kTeacherCacheFormat)) {
    require(sqnr_svg.empty() && hist.empty() && dot.empty(),
            path + " is a teacher cache (qatlab teacher-cache): --sqnr-vs-bits, --hist and --dot need a model");
    std::printf("%s\n%s", path.c_str(), describe_teacher_cache(file).c_str());
    return 0;
  }
  file.close();

  const Checkpoint ckpt = load_checkpoint(path);
  if (!sqnr_svg.empty()) {
    require(ckpt.model_kind == "float", "--sqnr-vs-bits quantizes a float model: " + path + " is a '" +
                                            ckpt.model_kind + "' checkpoint (give the float checkpoint it came from)");
    return sqnr_vs_bits(ckpt, path, d, vm["dataset"].defaulted(), batches, batch_size, sqnr_svg);
  }
  require(ckpt.model_kind == "qat", path + " is a '" + ckpt.model_kind +
                                        "' checkpoint: inspect shows what quantization does to a model, so make a "
                                        "quantized one first (`qatlab qat --from " + path + "` or `qatlab ptq " + path +
                                        "`), or plot PTQ's SQNR per layer against the bit width (--sqnr-vs-bits FILE.svg)");
  const auto model = std::static_pointer_cast<QatModel>(model_from_any_checkpoint(ckpt, checkpoint_qconfig));
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

  const DataRecord record = data_record(ckpt);
  use_model_dataset(d, vm["dataset"].defaulted(), record);
  DataBundle data = load_data(d, /*with_train=*/false, &record);
  check_data_fits(data, path, ckpt.spec, record.class_names, /*allow_mismatch=*/true);
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
              data.source.c_str(), format_report(report).c_str());

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
