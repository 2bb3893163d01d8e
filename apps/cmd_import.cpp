// cmd_import.cpp: `qatlab import model.onnx -o checkpoint.h5`: a float ONNX model as a float checkpoint that
// carries its network description, for qat, ptq, sweep, convert, inspect and eval like any other.
#include <cstdio>
#include <filesystem>
#include <stdexcept>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/data_setup.h"
#include "nn/checkpoint.h"
#include "quant/onnx/onnx_import.h"

namespace qatlab {

namespace fs = std::filesystem;

namespace {

// The built-in dataset a model's images fit, for a command line without --dataset.
std::string default_dataset(const ModelSpec& spec, const std::string& path) {
  for (const char* name : {"mnist", "cifar10"}) {
    const ModelSpec d = builtin_dataset_spec(name);
    if (d.channels == spec.channels && d.height == spec.height && d.width == spec.width) return name;
  }
  throw UsageError(path + " takes " + std::to_string(spec.channels) + "x" + std::to_string(spec.height) + "x" +
                   std::to_string(spec.width) + " images, which no built-in dataset has: name its data with --dataset");
}

}  // namespace

int cmd_import(int argc, char** argv) {
  std::string path, out, name;
  bool overwrite = false, show = false;
  DataSettings data;
  po::options_description desc("import options");
  desc.add_options()("model", po::value(&path), "the ONNX model (float operators; also the first positional argument)")
      ("output,o", po::value(&out), "the checkpoint to write")
      ("overwrite", po::bool_switch(&overwrite), "allow --output to replace an existing file")
      ("name", po::value(&name), "the network's name (default: the ONNX file's name without .onnx)")
      ("dataset", po::value(&data.dataset),
       "the data the model takes, recorded for the commands that follow: mnist | fashion-mnist | cifar10 or a "
       "dataset from files, as train takes it (default: mnist for 1x28x28 inputs, cifar10 for 3x32x32)")
      ("mean", po::value(&data.mean), "the normalisation the model was trained with: mean of pixel / 255, one value "
       "or one per channel (default: the built-in dataset's, else the training split's when a command loads it)")
      ("std", po::value(&data.std), "and its standard deviation (with --mean)")
      ("show", po::bool_switch(&show), "print the network description written into the checkpoint");
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command("import", "MODEL.onnx -o CHECKPOINT.h5 [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the ONNX model: qatlab import MODEL.onnx -o CHECKPOINT.h5");
  require(!out.empty(), "name the checkpoint to write: -o CHECKPOINT.h5");
  std::error_code ec;
  require(!fs::equivalent(out, path, ec), "--output " + out + " is the model being imported");
  guard_output("--output", out, overwrite);
  require_output_directory(out);

  const OnnxImport imported = import_onnx_file(path, name.empty() ? fs::path(path).stem().string() : name);
  const ModelSpec& spec = imported.spec;
  if (vm["dataset"].empty()) data.dataset = default_dataset(spec, path);
  if (resolve_dataset(data.dataset).kind == DatasetKind::Builtin) {
    const ModelSpec d = builtin_dataset_spec(data.dataset);
    require(d.channels == spec.channels && d.height == spec.height && d.width == spec.width,
            path + " takes " + shape_str({spec.channels, spec.height, spec.width}) + " images; " + data.dataset +
                " has " + shape_str({d.channels, d.height, d.width}));
  }
  const DataRecord record = data_record_for(data, spec.channels);

  Checkpoint c;
  c.model_name = imported.description.name;
  c.model_description = imported.description.text;
  c.model_kind = "float";
  c.spec = spec;
  c.model_state = imported.state;
  c.optimizer_kind = "none";
  c.dataset = record.dataset;
  c.data_mean = record.mean;
  c.data_std = record.std;
  c.config_ini = settings_ini(vm, desc);
  std::string command = "qatlab";
  for (int i = 0; i < argc; ++i) command += std::string(" ") + argv[i];
  c.metadata["command"] = command;
  c.metadata["imported_from"] = fs::absolute(path, ec).string();
  save_checkpoint(out, c);

  std::string types;
  for (const auto& t : imported.op_types) types += (types.empty() ? "" : ", ") + t;
  int64_t parameters = 0;
  for (const auto& [n, t] : imported.state) parameters += t.numel();
  std::printf("%s -> %s: %lld ONNX nodes (%s)\n", path.c_str(), out.c_str(), static_cast<long long>(imported.nodes),
              types.c_str());
  std::printf("network %s: input %s, %lld classes, %lld parameters and buffers; data %s%s\n", c.model_name.c_str(),
              shape_str({spec.channels, spec.height, spec.width}).c_str(), static_cast<long long>(spec.num_classes),
              static_cast<long long>(parameters), c.dataset.c_str(),
              record.mean.empty()
                  ? " (normalisation: the training split's, when a command loads it)"
                  : (", normalisation mean " + floats_text(record.mean) + ", std " + floats_text(record.std)).c_str());
  if (show) std::printf("\n%s", imported.description.text.c_str());
  return 0;
}

}  // namespace qatlab
