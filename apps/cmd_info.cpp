// cmd_info.cpp: `qatlab info CHECKPOINT`: model, parameter count, metadata and training history.
#include <cstdio>
#include <sstream>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "core/atomic_file.h"
#include "nn/checkpoint.h"
#include "nn/train/train_loop.h"
#include "quant/engine/int8_graph.h"
#include "quant/workflow/checkpoint_model.h"

namespace qatlab {

int cmd_info(int argc, char** argv) {
  std::string path, curve;
  bool show_params = false, overwrite = false;
  po::options_description desc("info options");
  desc.add_options()("checkpoint", po::value(&path), "the checkpoint or integer model file (also the first positional argument)")
      ("params", po::bool_switch(&show_params), "list every parameter and buffer with its shape")
      ("curve", po::value(&curve), "also write the training curve (accuracy per epoch, from the checkpoint's history) to this SVG file")
      ("overwrite", po::bool_switch(&overwrite), "allow --curve to replace an existing file");
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("info", "CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the checkpoint: qatlab info CHECKPOINT");
  guard_output("--curve", curve, overwrite);

  if (Int8Graph::is_int8_graph_file(path)) {
    require(curve.empty(), "--curve needs a checkpoint: " + path + " is an integer model file (no training history)");
    const Int8Graph graph = Int8Graph::load(path);
    std::printf("%s\n  format         %s version %lld\n%s", path.c_str(), kInt8GraphFormat,
                static_cast<long long>(graph.file_version), graph.summary().c_str());
    return 0;
  }
  const Checkpoint c = load_checkpoint(path);
  const ModulePtr model = model_from_any_checkpoint(c, checkpoint_qconfig);
  std::printf("%s\n", path.c_str());
  std::printf("  format         %s version %lld (written by qatlab %s, %s)\n", kCheckpointFormat,
              static_cast<long long>(c.format_version), c.qatlab_version.c_str(), c.created.c_str());
  std::printf("  model          %s (%s), input %lldx%lldx%lld, %lld classes\n", c.model_name.c_str(),
              c.model_kind.c_str(), static_cast<long long>(c.spec.channels), static_cast<long long>(c.spec.height),
              static_cast<long long>(c.spec.width), static_cast<long long>(c.spec.num_classes));
  std::printf("  parameters     %lld\n", static_cast<long long>(model->parameter_count()));
  std::printf("  dataset        %s\n", c.dataset.c_str());
  // Files written before these were recorded have neither.
  if (!c.data_mean.empty())
    std::printf("  normalisation  mean %s, std %s (of pixel / 255, per channel)\n", floats_text(c.data_mean).c_str(),
                floats_text(c.data_std).c_str());
  if (!c.class_names.empty()) {
    std::string names;
    for (size_t i = 0; i < c.class_names.size(); ++i) names += (i ? ", " : "") + c.class_names[i];
    std::printf("  classes        %s\n", printable(names, 300).c_str());
  }
  std::printf("  epochs done    %lld\n", static_cast<long long>(c.epoch));
  std::printf("  optimizer      %s\n", c.optimizer_kind.c_str());
  if (c.swa_count > 0)
    std::printf(c.model_is_average ? "  weights        the mean of %lld epochs' weights (SWA)\n"
                                   : "  weights        the last step's; the mean of %lld epochs' so far beside them (SWA)\n",
                static_cast<long long>(c.swa_count));
  for (const auto& [k, v] : c.metadata) std::printf("  %-14s %s\n", k.c_str(), v.c_str());
  if (c.model_kind == "qat") std::printf("\nquantization:\n%s", checkpoint_qconfig(c).describe().c_str());
  std::printf("\nmodule tree:\n%s", model->summary(c.model_name, 1).c_str());
  if (show_params) {
    std::printf("\nstate:\n");
    for (const auto& [name, t] : c.model_state) std::printf("  %-36s %s\n", name.c_str(), shape_str(t.shape()).c_str());
  }
  // A run with weight averaging adds the average's test accuracy (swa_acc) from its first averaged epoch.
  const bool averaged = c.swa_count > 0;
  std::printf("\nhistory:\n  %5s %10s %10s %10s %10s %10s %10s%s\n", "epoch", "lr", "train_loss", "train_acc",
              "test_loss", "test_acc", "img/s", averaged ? "    swa_acc" : "");
  for (const auto& row : c.history) {
    const auto get = [&](const char* k) { auto it = row.find(k); return it == row.end() ? 0.0 : it->second; };
    std::printf("  %5.0f %10.5f %10.4f %9.2f%% %10.4f %9.2f%% %10.0f", get("epoch"), get("lr"), get("train_loss"),
                100 * get("train_acc"), get("test_loss"), 100 * get("test_acc"), get("train_img_per_s"));
    if (averaged && row.count("swa_test_acc")) std::printf(" %9.2f%%", 100 * get("swa_test_acc"));
    std::printf("\n");
  }
  std::printf("\nconfig:\n");
  {
    std::istringstream lines(c.config_ini);  // stored text: control bytes escaped, line by line
    for (std::string line; std::getline(lines, line);) std::printf("%s\n", printable(line, 4096).c_str());
  }
  if (!curve.empty()) {
    require(!c.history.empty(), path + " has no training history to plot");
    atomic_write_text(curve, curve_svg(c.history, c.model_name + " (" + c.model_kind + ") on " + c.dataset));
    std::printf("\ncurve: %s\n", curve.c_str());
  }
  return 0;
}

}  // namespace qatlab
