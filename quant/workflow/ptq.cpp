// ptq.cpp: calibration, the QAT checkpoint and integer model files, and their test accuracies.
#include "quant/workflow/ptq.h"

#include <filesystem>
#include <stdexcept>

#include "quant/engine/kernels/kernel_path.h"
#include "quant/qat/convert.h"
#include "quant/qat/prepare.h"
#include "quant/qat/qconfig_data.h"
#include "quant/workflow/integer_eval.h"

namespace qatlab {

namespace fs = std::filesystem;

PtqResult run_ptq(const Checkpoint& base, const DataBundle& data, const PtqSettings& settings,
                  const std::string& out_dir, const std::string& config_ini, std::FILE* log) {
  const QConfig& qconfig = settings.qconfig;
  if (base.model_kind != "float")
    throw std::invalid_argument(base.source + " is a '" + base.model_kind + "' checkpoint; ptq takes a float one");
  if (qconfig.weight.method != QuantizerMethod::Observer || qconfig.activation.method != QuantizerMethod::Observer)
    throw std::invalid_argument("ptq calibrates observers; learned quantizers need training (quantization-aware training)");

  // Calibration (calibrate_observers): observers watch float activations, nothing is learned.
  PtqResult r;
  r.model = prepare_qat(model_from_checkpoint(base), qconfig);
  DataLoader calib(data.train, loader_options(data, settings.batch_size, settings.seed, true));
  calib.start_epoch(0);
  Batch batch;
  int64_t taken = 0;
  r.calibrated_images = calibrate_observers(*r.model, [&](Tensor& x) {
    if (taken == settings.calib_batches || !calib.next(batch)) return false;
    ++taken;
    x = batch.images;
    return true;
  });

  DataLoader test(data.test, loader_options(data, 256, 0, false));
  r.simulation = evaluate(*r.model, test);
  fs::create_directories(out_dir);
  Checkpoint c;
  c.model_name = base.model_name;
  c.model_description = base.model_description;
  c.qconfig = qconfig_to_data(qconfig);
  c.model_kind = "qat";
  c.spec = base.spec;
  for (auto& [name, t] : r.model->state_dict()) c.model_state.push_back({name, t});
  c.optimizer_kind = "none";
  c.dataset = data.source;
  c.data_mean = data.mean;
  c.data_std = data.std;
  c.class_names = data.class_names;
  c.config_ini = config_ini;
  c.history.push_back({{"epoch", 0.0}, {"test_acc", r.simulation.accuracy}, {"test_loss", r.simulation.loss}});
  save_checkpoint(out_dir + "/checkpoint.h5", c);
  Int8Graph graph = convert(*r.model, {base.spec.channels, base.spec.height, base.spec.width});
  set_checkpoint_pixel_table(graph, c);  // the input pipeline from raw pixels, as `convert` writes it
  graph.save(out_dir + "/model.int8.h5");

  Agreement unused;
  DataLoader integer_test(data.test, integer_loader_options(graph, data, 256));
  run_integer(graph, best_kernel_path(), integer_test, nullptr, r.integer, unused);
  if (log) {
    std::fprintf(log, "ptq %s: calibrated on %lld images; %s", base.model_name.c_str(),
                 static_cast<long long>(r.calibrated_images), qconfig.describe().c_str());
    std::fprintf(log, "simulation accuracy %.2f %%, integer graph accuracy %.2f %% (%lld test images)\n",
                 100 * r.simulation.accuracy, 100 * r.integer.accuracy, static_cast<long long>(r.integer.count));
    std::fprintf(log, "wrote %s/checkpoint.h5 and %s/model.int8.h5\n", out_dir.c_str(), out_dir.c_str());
    std::fflush(log);
  }
  return r;
}

}  // namespace qatlab
