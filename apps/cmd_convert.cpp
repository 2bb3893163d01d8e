// cmd_convert.cpp: `qatlab convert QAT_CHECKPOINT`: the integer-only model file.
#include <cstdio>
#include <filesystem>

#include "apps/cli.h"
#include "apps/commands.h"
#include "apps/qat_options.h"
#include "quant/qat/convert.h"
#include "quant/workflow/checkpoint_model.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {

namespace fs = std::filesystem;

int cmd_convert(int argc, char** argv) {
  std::string path, out;
  bool show = false, overwrite = false;
  po::options_description desc("convert options");
  desc.add_options()("checkpoint", po::value(&path), "the QAT checkpoint (also the first positional argument)")
      ("output,o", po::value(&out), "integer model file to write (default: model.int8.h5 beside the checkpoint)")
      ("overwrite", po::bool_switch(&overwrite), "allow --output to replace an existing file")
      ("show", po::bool_switch(&show), "print every integer op with its parameters");
  po::positional_options_description positional;
  positional.add("checkpoint", 1);
  po::variables_map vm;
  if (!parse_command("convert", "QAT_CHECKPOINT [options]", desc, positional, argc, argv, vm)) return 0;
  require(!path.empty(), "name the QAT checkpoint: qatlab convert CHECKPOINT");
  std::error_code ec;
  require(out.empty() || !fs::equivalent(out, path, ec), "--output " + out + " is the checkpoint being converted");
  guard_output("--output", out, overwrite);

  const Checkpoint ckpt = load_checkpoint(path);
  require(ckpt.model_kind == "qat", path + " is a '" + ckpt.model_kind +
                                        "' checkpoint: convert takes a QAT one (make it with `qatlab qat --from " + path + "`)");
  const ModulePtr model = model_from_any_checkpoint(ckpt, checkpoint_qconfig);
  Int8Graph graph = convert(static_cast<const QatModel&>(*model), {ckpt.spec.channels, ckpt.spec.height, ckpt.spec.width});
  // The input pipeline from raw pixels: the loader's normalisation of the checkpoint's dataset, each byte
  // value put through the loader's own arithmetic and the input quantizer (quant/README.md, section 7).
  const std::string pipeline =
      set_checkpoint_pixel_table(graph, ckpt)
          ? "input: raw 8-bit pixels -> input codes by a 256-entry table per channel (" + ckpt.dataset +
                " normalisation, then the input grid)"
          : "input: normalised floats (" + path + " names no dataset qatlab knows, '" + ckpt.dataset +
                "', so no pixel table)";
  if (out.empty()) out = (fs::path(path).parent_path() / "model.int8.h5").string();
  graph.save(out);

  const auto ckpt_bytes = fs::file_size(path), int_bytes = fs::file_size(out);
  if (show) std::printf("%s", graph.summary().c_str());
  std::printf("%s -> %s: %zu integer ops, %lld bytes of integer parameters\n", path.c_str(), out.c_str(), graph.ops.size(),
              static_cast<long long>(graph.parameter_bytes()));
  std::printf("%s\n", pipeline.c_str());
  std::printf("file sizes: checkpoint %llu bytes, integer model %llu bytes (%.1f %%)\n",
              static_cast<unsigned long long>(ckpt_bytes), static_cast<unsigned long long>(int_bytes),
              100.0 * static_cast<double>(int_bytes) / static_cast<double>(ckpt_bytes));
  return 0;
}

}  // namespace qatlab
