// cmd_export.cpp: `qatlab export MODEL.int8.h5 -o model.onnx`: the integer model as an ONNX model.
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "apps/cli.h"
#include "apps/commands.h"
#include "quant/int8_graph.h"
#include "quant/onnx/onnx_export.h"

namespace qatlab {

namespace fs = std::filesystem;

int cmd_export(int argc, char** argv) {
  std::string path, out, activations = "uint8";
  bool overwrite = false;
  po::options_description desc("export options");
  desc.add_options()("model", po::value(&path), "the integer model file, model.int8.h5 (also the first positional argument)")
      ("output,o", po::value(&out), "the ONNX file to write")
      ("overwrite", po::bool_switch(&overwrite), "allow --output to replace an existing file")
      ("activations", po::value(&activations)->default_value(activations),
       "uint8 (code + 128, ONNX Runtime's fast form on x86) or int8 (the codes as they are)");
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command("export", "MODEL.int8.h5 -o FILE.onnx [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the integer model: qatlab export MODEL.int8.h5 -o FILE.onnx");
  require(!out.empty(), "name the ONNX file to write: -o FILE.onnx");
  require(activations == "uint8" || activations == "int8", "--activations must be uint8 or int8, got " + activations);
  std::error_code ec;
  require(!fs::equivalent(out, path, ec), "--output " + out + " is the model being exported");
  guard_output("--output", out, overwrite);
  const fs::path dir = fs::path(out).parent_path();
  if (!dir.empty() && !fs::is_directory(dir, ec))
    throw std::runtime_error(out + ": cannot write: directory '" + dir.string() + "' does not exist");

  Int8Graph graph;
  try {
    graph = Int8Graph::load(path);
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    if (msg.find("not a qatlab integer model") == std::string::npos) throw;
    throw std::runtime_error(msg + ": export takes the integer model file that `qatlab convert` writes");
  }
  OnnxExportSummary summary;
  try {
    summary = save_onnx(graph, out, OnnxExportOptions{activations == "uint8"});
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": cannot export: " + e.what());
  }
  std::string types;
  for (const auto& t : summary.op_types) types += (types.empty() ? "" : ", ") + t;
  std::printf("%s -> %s: %lld ONNX nodes (%s), %lld bytes\n", path.c_str(), out.c_str(),
              static_cast<long long>(summary.nodes), types.c_str(), static_cast<long long>(summary.bytes));
  std::printf("input '%s' (%s, N x %lld x %lld x %lld); outputs 'codes' (int8) and 'logits' (float)\n",
              summary.input_name.c_str(), summary.input_name == "pixels" ? "uint8 raw pixels" : "float, normalised",
              static_cast<long long>(graph.input_shape[0]), static_cast<long long>(graph.input_shape[1]),
              static_cast<long long>(graph.input_shape[2]));
  return 0;
}

}  // namespace qatlab
