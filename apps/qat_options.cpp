// qat_options.cpp: quantization and ptq options, their stored form, and QConfigs from checkpoints.
#include "apps/qat_options.h"

#include <sstream>

#include "quant/workflow/checkpoint_model.h"

namespace qatlab {

void add_qconfig_options(po::options_description& desc, QatSettings& q) {
  desc.add_options()
      ("wbits", po::value(&q.wbits)->default_value(q.wbits), "weight bits (2..8)")
      ("abits", po::value(&q.abits)->default_value(q.abits), "activation bits (2..8)")
      ("per-channel", po::value(&q.per_channel)->default_value(q.per_channel)->implicit_value(true),
       "weights per output channel (true) or per tensor (false)")
      ("observer", po::value(&q.observer)->default_value(q.observer), "activation observer: minmax | ema | histogram | percentile")
      ("weight-observer", po::value(&q.weight_observer)->default_value(q.weight_observer), "weight observer: minmax | ema")
      ("wquant", po::value(&q.wquant)->default_value(q.wquant), "weight quantizer: observer | lsq (learned step size)")
      ("aquant", po::value(&q.aquant)->default_value(q.aquant),
       "activation quantizer: observer | lsq | lsq+ (learned step and offset) | pact (learned clip, after ReLU)")
      ("lsq-init", po::value(&q.lsq_init),
       "where lsq and lsq+ steps start, from the first batch: lsq (the paper's 2 mean|x| / sqrt(Qp); lsq's "
       "default) | minmax (the batch's min/max grid; lsq+'s default) | mse (the step of least squared error)")
      ("lsq-grad-scale", po::value(&q.lsq_grad_scale),
       "N in lsq and lsq+ steps' gradient scale 1 / sqrt(N Qp): channel (the values of the step's own channel; "
       "the default) | layer (the whole tensor's for per-channel steps too, as PyTorch's learnable fake "
       "quantizer: sqrt(channels) times slower)")
      ("lsq-step-bounds", po::value(&q.lsq_step_bounds),
       "k >= 1: keep every lsq weight step within [its channel's min/max step / k, 15/8 of its largest |w|], "
       "so that no channel's weights all clip to a vanishing step or all round to 0 (off unless given; "
       "quant/qat/learnable_quantizer.h)")
      ("weight-range", po::value(&q.weight_range),
       "weight codes: narrow (the default: [-7, 7] at 4 bits, [-1, 1] at 2) | full ([-8, 7] at 4 bits, [-2, 1] at 2: every "
       "code, as LSQ's low-bit weights) | mid-rise (2^b levels symmetric around 0 without 0, DoReFa's and PACT's: "
       "odd codes {-3, -1, 1, 3} at 2 bits on half a level's distance); full and mid-rise below 8 bits only, "
       "8-bit weights stay [-127, 127] for the int8 kernels")
      ("layer-bits", po::value(&q.layer_bits)->composing(),
       "per-layer bits NAME=W:A, by dotted module name, layer type, input, residual-branches (the values "
       "residual adds read; =:A only) or residual-sums (the adds' outputs; a conv reading one at fewer bits "
       "requantizes it first; =:A only) (repeatable), e.g. features.0=8:8")
      ("freeze-bn-after", po::value(&q.freeze_bn_after)->default_value(q.freeze_bn_after),
       "use running BN statistics from this epoch on (-1 = never)")
      ("freeze-observers-after", po::value(&q.freeze_observers_after)->default_value(q.freeze_observers_after),
       "stop updating quantization ranges from this epoch on (-1 = never)");
}

std::string qat_settings_ini(const QatSettings& q) {
  SettingsIni ini;
  ini.add("wbits", q.wbits);
  ini.add("abits", q.abits);
  ini.add("per-channel", q.per_channel);
  ini.add("observer", q.observer);
  ini.add("weight-observer", q.weight_observer);
  ini.add("wquant", q.wquant);
  ini.add("aquant", q.aquant);
  ini.add_if_given("lsq-init", q.lsq_init);
  ini.add_if_given("lsq-grad-scale", q.lsq_grad_scale);
  if (q.lsq_step_bounds != 0) ini.add("lsq-step-bounds", q.lsq_step_bounds);
  ini.add_if_given("weight-range", q.weight_range);
  ini.add_each("layer-bits", q.layer_bits);
  ini.add("freeze-bn-after", q.freeze_bn_after);
  ini.add("freeze-observers-after", q.freeze_observers_after);
  return ini.text();
}

QConfig qconfig_from(const QatSettings& q) {
  try {
    QConfig c = QConfig::from_options(q.wbits, q.abits, q.per_channel, q.weight_observer, q.observer, q.layer_bits,
                                      q.wquant, q.aquant, q.lsq_init);
    if (!q.weight_range.empty()) c.set_weight_range(parse_weight_range(q.weight_range, "--weight-range"));
    if (!q.lsq_grad_scale.empty()) c.set_lsq_grad_scale(parse_lsq_grad_scale(q.lsq_grad_scale, "--lsq-grad-scale"));
    if (q.lsq_step_bounds != 0) c.set_lsq_step_bounds(q.lsq_step_bounds);
    c.validate();
    return c;
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

QConfig qconfig_from_ini(const std::string& ini, const std::string& source) {
  QatSettings q;
  po::options_description desc;
  add_qconfig_options(desc, q);
  po::variables_map vm;
  try {
    std::istringstream in(ini);
    po::store(po::parse_config_file(in, desc, /*allow_unregistered=*/true), vm);
    po::notify(vm);
    return qconfig_from(q);
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ": " + stored_setting_error(e.what()));
  }
}

QConfig checkpoint_qconfig(const Checkpoint& ckpt) {
  if (!ckpt.qconfig.empty()) return stored_qconfig(ckpt);
  return qconfig_from_ini(ckpt.config_ini, ckpt.source);
}

void add_ptq_options(po::options_description& desc, PtqOptions& p) {
  desc.add_options()("checkpoint", po::value(&p.checkpoint), "the float checkpoint (also the first positional argument)")
      ("calib-batches", po::value(&p.calib_batches)->default_value(p.calib_batches), "training batches the observers see")
      ("batch-size", po::value(&p.batch_size)->default_value(p.batch_size), "images per calibration batch")
      ("seed", po::value(&p.seed)->default_value(p.seed), "seed of the calibration batches' order")
      ("out", po::value(&p.out), "output directory (default: beside the checkpoint, ptq-w<W>a<A>)")
      ("overwrite", po::bool_switch(&p.overwrite), "allow --out to name a directory that already holds a run")
      ("dynamic", "instead: dynamic quantization of Linear and LSTM layers (int8 weights, activation grids "
                  "computed per batch at run time); see qatlab ptq --dynamic --help")
      ("threads", po::value(&p.threads)->default_value(0), "worker threads (0 = all cores)");
}

std::string ptq_settings_ini(const PtqOptions& p, const QatSettings& q, const DataSettings& d) {
  SettingsIni ini;
  ini.add_if_given("checkpoint", p.checkpoint);
  ini.add("calib-batches", p.calib_batches);
  ini.add("batch-size", p.batch_size);
  ini.add("seed", p.seed);
  ini.add_if_given("out", p.out);
  ini.add("overwrite", p.overwrite);
  ini.add("threads", p.threads);  // (--dynamic never reaches a stored ptq run: it is another pipeline)
  return ini.text() + qat_settings_ini(q) + data_settings_ini(d);
}

}  // namespace qatlab
