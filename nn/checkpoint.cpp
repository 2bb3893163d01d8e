// checkpoint.cpp: writes and reads the HDF5 checkpoint layout described in checkpoint.h.
#include "nn/checkpoint.h"

#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "core/atomic_file.h"
#include "core/format.h"
#include "core/h5io.h"
#include "nn/model_description.h"

#ifndef QATLAB_VERSION
#define QATLAB_VERSION "dev"
#endif

namespace qatlab {

namespace {

std::string utc_now() {
  char buf[32];
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Every dataset below `group`, with names relative to it ("exp_avg/fc.weight"), recursing into groups.
void read_tensors(const H5File& f, const std::string& group, const std::string& prefix, NamedTensors& out) {
  for (const std::string& name : f.list(group)) {
    const std::string path = group + "/" + name;
    if (f.is_group(path))
      read_tensors(f, path, prefix + name + "/", out);
    else
      out.push_back({prefix + name, f.read_tensor(path)});
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  atomic_save_h5(path, [&](H5File& f) {
    f.set_attr("/", "format", kCheckpointFormat);
    f.set_attr("/", "format_version", kCheckpointVersion);
    f.set_attr("/", "qatlab_version", QATLAB_VERSION);
    f.set_attr("/", "created", utc_now());

    for (const auto& [name, t] : c.model_state) f.write_tensor("model/state/" + name, t);
    if (c.model_state.empty()) f.write_string("model/empty", "");
    f.set_attr("model", "name", c.model_name);
    f.set_attr("model", "kind", c.model_kind);
    f.set_attr("model", "channels", c.spec.channels);
    f.set_attr("model", "height", c.spec.height);
    f.set_attr("model", "width", c.spec.width);
    f.set_attr("model", "num_classes", c.spec.num_classes);
    if (!c.model_description.empty()) f.write_string("model/description", c.model_description);
    if (!c.qconfig.empty()) f.write_string("model/qconfig", c.qconfig);

    // Entries named "<kind>/<param>" go to optimizer/state/<kind>/<param>; plain names ("step") to
    // optimizer/scalars/, where they cannot collide with a group of the same name.
    for (const auto& [name, t] : c.optimizer_state)
      f.write_tensor((name.find('/') == std::string::npos ? "optimizer/scalars/" : "optimizer/state/") + name, t);
    if (c.optimizer_state.empty()) f.write_string("optimizer/empty", "");
    f.set_attr("optimizer", "kind", c.optimizer_kind);

    std::vector<int64_t> rng(4);
    std::memcpy(rng.data(), c.rng_state.data(), sizeof(uint64_t) * 4);
    f.write_ints<int64_t>("training/rng_state", {4}, rng);
    f.set_attr("training", "epoch", c.epoch);
    f.set_attr("training", "dataset", c.dataset);
    if (c.swa_count > 0) {
      for (const auto& [name, t] : c.swa_mean) f.write_tensor("training/swa/" + name, t);
      f.set_attr("training/swa", "count", c.swa_count);
      f.set_attr("training/swa", "model_is_average", static_cast<int64_t>(c.model_is_average));
    }
    if (!c.data_mean.empty()) {
      f.set_attr_floats("training", "data_mean", {static_cast<int64_t>(c.data_mean.size())}, c.data_mean);
      f.set_attr_floats("training", "data_std", {static_cast<int64_t>(c.data_std.size())}, c.data_std);
    }
    if (!c.class_names.empty()) f.set_attr("training", "class_names", join_lines(c.class_names));
    std::set<std::string> columns;
    for (const auto& row : c.history)
      for (const auto& [k, v] : row) columns.insert(k);
    for (const std::string& col : columns) {
      std::vector<double> values;
      for (const auto& row : c.history) {
        auto it = row.find(col);
        values.push_back(it == row.end() ? std::nan("") : it->second);
      }
      f.write_doubles("training/history/" + col, {static_cast<int64_t>(values.size())}, values);
    }

    f.write_string("config", c.config_ini);
    f.write_string("metadata/about", "free-form run metadata, as attributes of this group");
    for (const auto& [k, v] : c.metadata) f.set_attr("metadata", k, v);
  });
}

Checkpoint load_checkpoint(const std::string& path) {
  H5File f = H5File::open_read(path);
  const auto fail = [&](const std::string& what) { throw std::runtime_error(path + ": " + what); };
  if (!f.has_format(kCheckpointFormat))
    fail("not a qatlab checkpoint (no format attribute \"" + std::string(kCheckpointFormat) + "\")");
  const int64_t version = f.get_attr_int("/", "format_version");
  if (version > kCheckpointVersion)
    fail("checkpoint format version " + std::to_string(version) + " is newer than this qatlab reads (" +
         std::to_string(kCheckpointVersion) + "): upgrade qatlab");
  if (version < 1) fail("invalid checkpoint format version " + std::to_string(version));

  Checkpoint c;
  c.format_version = version;
  if (f.has_attr("/", "qatlab_version")) c.qatlab_version = f.get_attr_string("/", "qatlab_version");
  if (f.has_attr("/", "created")) c.created = f.get_attr_string("/", "created");
  c.model_name = f.get_attr_string("model", "name");
  c.model_kind = f.get_attr_string("model", "kind");
  c.spec.channels = f.get_attr_int("model", "channels");
  c.spec.height = f.get_attr_int("model", "height");
  c.spec.width = f.get_attr_int("model", "width");
  c.spec.num_classes = f.get_attr_int("model", "num_classes");
  // Checked before anything is sized by them: a damaged file must not ask for terabytes.
  try {
    validate_model_spec(c.spec);
  } catch (const std::invalid_argument& e) {
    fail(std::string("stored model input/classes out of range: ") + e.what());
  }
  c.model_name = printable(c.model_name);
  c.model_kind = printable(c.model_kind);
  if (f.exists("model/description")) c.model_description = f.read_string("model/description");
  if (f.exists("model/qconfig")) c.qconfig = f.read_string("model/qconfig");
  if (f.exists("model/state")) read_tensors(f, "model/state", "", c.model_state);
  c.optimizer_kind = f.get_attr_string("optimizer", "kind");
  if (f.exists("optimizer/state")) read_tensors(f, "optimizer/state", "", c.optimizer_state);
  if (f.exists("optimizer/scalars")) read_tensors(f, "optimizer/scalars", "", c.optimizer_state);

  Shape shape;
  const std::vector<int64_t> rng = f.read_ints<int64_t>("training/rng_state", &shape);
  if (rng.size() != 4) fail("training/rng_state must hold 4 words, found " + std::to_string(rng.size()));
  std::memcpy(c.rng_state.data(), rng.data(), sizeof(uint64_t) * 4);
  c.epoch = f.get_attr_int("training", "epoch");
  if (c.epoch < 0 || c.epoch > kMaxCheckpointEpochs)
    fail("stored epoch = " + std::to_string(c.epoch) + ", expected 0.." + std::to_string(kMaxCheckpointEpochs));
  c.dataset = printable(f.get_attr_string("training", "dataset"), 4096);
  if (f.exists("training/swa")) {
    c.swa_count = f.get_attr_int("training/swa", "count");
    if (c.swa_count < 1 || c.swa_count > c.epoch)
      fail("training/swa: count = " + std::to_string(c.swa_count) + ", expected 1.." + std::to_string(c.epoch) +
           " (the epochs done)");
    c.model_is_average = f.get_attr_int("training/swa", "model_is_average") != 0;
    read_tensors(f, "training/swa", "", c.swa_mean);
  }
  if (f.has_attr("training", "data_mean") || f.has_attr("training", "data_std")) {
    c.data_mean = f.get_attr_floats("training", "data_mean");
    c.data_std = f.get_attr_floats("training", "data_std");
    if (static_cast<int64_t>(c.data_mean.size()) != c.spec.channels ||
        static_cast<int64_t>(c.data_std.size()) != c.spec.channels)
      fail("training: data_mean and data_std hold " + std::to_string(c.data_mean.size()) + " and " +
           std::to_string(c.data_std.size()) + " values, expected one per channel (" + std::to_string(c.spec.channels) + ")");
    for (size_t i = 0; i < c.data_mean.size(); ++i)
      if (!std::isfinite(c.data_mean[i]) || !std::isfinite(c.data_std[i]) || !(c.data_std[i] > 0))
        fail("training: stored normalisation of channel " + std::to_string(i) + " is mean " + num_str(c.data_mean[i]) +
             ", std " + num_str(c.data_std[i]) + ", expected finite values and std > 0");
  }
  if (f.has_attr("training", "class_names")) {
    c.class_names = split_lines(f.get_attr_string("training", "class_names"));
    if (static_cast<int64_t>(c.class_names.size()) != c.spec.num_classes)
      fail("training: class_names names " + std::to_string(c.class_names.size()) + " classes, the model has " +
           std::to_string(c.spec.num_classes));
    for (std::string& n : c.class_names) n = printable(n, 200);
  }
  if (f.exists("training/history")) {
    for (const std::string& col : f.list("training/history")) {
      const std::vector<double> values = f.read_doubles("training/history/" + col);
      if (values.size() > static_cast<size_t>(kMaxCheckpointEpochs))
        fail("training/history/" + printable(col) + " holds " + std::to_string(values.size()) + " epochs, expected at most " +
             std::to_string(kMaxCheckpointEpochs));
      if (c.history.size() < values.size()) c.history.resize(values.size());
      for (size_t i = 0; i < values.size(); ++i)
        if (!std::isnan(values[i])) c.history[i][col] = values[i];
    }
  }
  c.config_ini = f.read_string("config");
  c.source = path;
  if (f.exists("metadata"))
    for (const char* key : {"command", "threads", "host"})
      if (f.has_attr("metadata", key)) c.metadata[key] = printable(f.get_attr_string("metadata", key), 4096);
  return c;
}

ModelDescription checkpoint_model_description(const Checkpoint& ckpt) {
  if (ckpt.model_description.empty()) return resolve_model(ckpt.model_name);  // written before descriptions
  return parse_model_description(ckpt.model_description, ckpt.source + " (its stored model description)");
}

ModulePtr build_checkpoint_model(const Checkpoint& ckpt, Rng& rng) {
  return build_model(checkpoint_model_description(ckpt), ckpt.spec, rng);
}

ModulePtr model_from_checkpoint(const Checkpoint& ckpt) {
  Rng unused(0);  // initial values are overwritten by the stored state
  ModulePtr model = build_checkpoint_model(ckpt, unused);
  std::map<std::string, Tensor> state(ckpt.model_state.begin(), ckpt.model_state.end());
  model->load_state_dict(state);
  return model;
}

}  // namespace qatlab
