// data_bundle.cpp: loader options for a bundle, the built-in datasets' constants, data records.
#include "nn/train/data_bundle.h"

#include <cstdio>
#include <stdexcept>

#include "core/format.h"

namespace qatlab {

DataRecord data_record(const Checkpoint& ckpt) { return {ckpt.dataset, ckpt.data_mean, ckpt.data_std, ckpt.class_names}; }

LoaderOptions loader_options(const DataBundle& data, int64_t batch_size, uint64_t seed, bool train) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = train;
  o.seed = seed;
  o.mean = data.mean;
  o.std = data.std;
  if (train) {
    o.crop_pad = data.crop_pad;
    o.hflip = data.hflip;
    o.cutout = data.cutout;
  }
  return o;
}

Normalisation dataset_normalisation(const std::string& dataset) {
  if (dataset == "mnist") return {{0.1307f}, {0.3081f}};
  if (dataset == "fashion-mnist") return {{0.2860f}, {0.3530f}};
  if (dataset == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  throw std::invalid_argument("unknown dataset '" + printable(dataset, 60) + "' (known: mnist, fashion-mnist, cifar10)");
}

ModelSpec builtin_dataset_spec(const std::string& dataset) {
  if (dataset == "mnist" || dataset == "fashion-mnist") return {1, 28, 28, 10};
  if (dataset == "cifar10") return {3, 32, 32, 10};
  throw std::invalid_argument("unknown dataset '" + printable(dataset, 60) + "' (known: mnist, fashion-mnist, cifar10)");
}

std::string floats_text(const std::vector<float>& values) {
  std::string s;
  char buf[32];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(values[i]));
    if (i) s += ',';
    s += buf;
  }
  return s;
}

}  // namespace qatlab
