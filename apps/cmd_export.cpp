// cmd_export.cpp: `qatlab export MODEL.int8.h5 -o model.onnx`: the integer model as an ONNX model (or a
// float checkpoint as a float one).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "nn/checkpoint.h"
#include "quant/engine/int8_graph.h"
#include "quant/onnx/onnx_export.h"
#include "quant/onnx/onnx_float_export.h"
#include "quant/workflow/checkpoint_model.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

// Whether path is a readable checkpoint of a float model (not QAT). Other files fall through to the
// integer model's loader, whose error names what is wrong with them.
bool is_float_checkpoint(const std::string& path) {
  Checkpoint ckpt;
  try {
    ckpt = load_checkpoint(path);
  } catch (const std::exception&) {
    return false;
  }
  if (ckpt.model_kind != "float")
    throw std::runtime_error(path + ": a '" + ckpt.model_kind + "' checkpoint: export takes its integer model (`qatlab "
                             "convert " + path + "`, then export model.int8.h5) or a float checkpoint");
  return true;
}

}  // namespace

int cmd_export(int argc, char** argv) {
  std::string path, out, activations = "uint8";
  bool overwrite = false;
  po::options_description desc("export options");
  desc.add_options()("model", po::value(&path), "the integer model file (model.int8.h5) or a float checkpoint (also the first positional argument)")
      ("output,o", po::value(&out), "the ONNX file to write")
      ("overwrite", po::bool_switch(&overwrite), "allow --output to replace an existing file")
      ("activations", po::value(&activations)->default_value(activations),
       "uint8 (code + 128, ONNX Runtime's fast form on x86) or int8 (the codes as they are)");
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command("export", "MODEL.int8.h5|FLOAT_CKPT.h5 -o FILE.onnx [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the integer model: qatlab export MODEL.int8.h5 -o FILE.onnx");
  require(!out.empty(), "name the ONNX file to write: -o FILE.onnx");
  require(activations == "uint8" || activations == "int8", "--activations must be uint8 or int8, got " + activations);
  std::error_code ec;
  require(!fs::equivalent(out, path, ec), "--output " + out + " is the model being exported");
  guard_output("--output", out, overwrite);
  require_output_directory(out);

  OnnxExportSummary summary;
  Shape chw;
  if (!Int8Graph::is_int8_graph_file(path) && is_float_checkpoint(path)) {
    // A float checkpoint: float operators (onnx_float_export.h).
    const Checkpoint ckpt = load_checkpoint(path);
    const ModulePtr model = model_from_any_checkpoint(ckpt, checkpoint_qconfig);
    chw = {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width};
    try {
      summary = save_float_onnx(*model, chw, out);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(path + ": cannot export: " + e.what());
    }
  } else {
    Int8Graph graph;
    try {
      graph = Int8Graph::load(path);
    } catch (const std::runtime_error& e) {
      const std::string msg = e.what();
      if (msg.find("not a qatlab integer model") == std::string::npos) throw;
      throw std::runtime_error(msg + ": export takes an integer model file (`qatlab convert` writes it from a QAT "
                                     "checkpoint) or a float checkpoint");
    }
    chw = graph.input_shape;
    try {
      summary = save_onnx(graph, out, OnnxExportOptions{activations == "uint8"});
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(path + ": cannot export: " + e.what());
    }
  }
  std::string types;
  for (const auto& t : summary.op_types) types += (types.empty() ? "" : ", ") + t;
  std::printf("%s -> %s: %lld ONNX nodes (%s), %lld bytes\n", path.c_str(), out.c_str(),
              static_cast<long long>(summary.nodes), types.c_str(), static_cast<long long>(summary.bytes));
  std::printf("input '%s' (%s, N x %lld x %lld x %lld); %s\n", summary.input_name.c_str(),
              summary.input_name == "pixels" ? "uint8 raw pixels" : "float, normalised", static_cast<long long>(chw[0]),
              static_cast<long long>(chw[1]), static_cast<long long>(chw[2]),
              summary.op_types.end() != std::find(summary.op_types.begin(), summary.op_types.end(), "DequantizeLinear")
                  ? "outputs 'codes' (int8) and 'logits' (float)"
                  : "output 'logits' (float)");
  return 0;
}

}  // namespace qatlab
