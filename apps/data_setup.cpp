// data_setup.cpp: dataset names to files, normalisation constants, subset limits.
#include "apps/data_setup.h"

#include <filesystem>

#include "data/mnist_fetch.h"

namespace qatlab {

void add_data_options(po::options_description& desc, DataSettings& s) {
  desc.add_options()
      ("dataset", po::value(&s.dataset)->default_value(s.dataset), "mnist | fashion-mnist | cifar10")
      ("data-dir", po::value(&s.data_dir), "directory holding the dataset files (default: $QATLAB_DATA_DIR, else ~/.cache/qatlab; MNIST is fetched there when absent)")
      ("train-limit", po::value(&s.train_limit)->default_value(0), "use only the first N training images (0 = all)")
      ("test-limit", po::value(&s.test_limit)->default_value(0), "use only the first N test images (0 = all)");
}

namespace {

void truncate(ImageDataset& d, int64_t limit) {
  if (limit <= 0 || limit >= d.n) return;
  d.n = limit;
  d.pixels.resize(limit * d.c * d.h * d.w);
  d.labels.resize(limit);
}

std::string mnist_dir(const std::string& explicit_dir) {
  // An explicit directory that already holds the files is used as it is; otherwise MNIST lives (and is
  // fetched into) <dir>/mnist.
  if (!explicit_dir.empty() && has_idx_dataset_files(explicit_dir)) return explicit_dir;
  return ensure_mnist(explicit_dir.empty() ? default_data_dir() : explicit_dir);
}

}  // namespace

Normalisation dataset_normalisation(const std::string& dataset) {
  if (dataset == "mnist") return {{0.1307f}, {0.3081f}};
  if (dataset == "fashion-mnist") return {{0.2860f}, {0.3530f}};
  if (dataset == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  throw UsageError("unknown dataset '" + dataset + "' (known: mnist, fashion-mnist, cifar10)");
}

DataBundle load_data(const DataSettings& s, bool with_train) {
  require(s.train_limit >= 0 && s.test_limit >= 0, "--train-limit and --test-limit must be >= 0");
  DataBundle b;
  if (s.dataset == "mnist" || s.dataset == "fashion-mnist") {
    const bool fashion = s.dataset == "fashion-mnist";
    const std::string dir = fashion ? find_fashion_mnist(s.data_dir) : mnist_dir(s.data_dir);
    if (with_train) b.train = load_idx_dataset(dir, Split::Train, s.dataset);
    b.test = load_idx_dataset(dir, Split::Test, s.dataset);
  } else if (s.dataset == "cifar10") {
    const std::string dir = find_cifar10(s.data_dir);
    if (with_train) b.train = load_cifar10(dir, Split::Train);
    b.test = load_cifar10(dir, Split::Test);
    b.augment = true;
  } else {
    throw UsageError("unknown dataset '" + s.dataset + "' (known: mnist, fashion-mnist, cifar10)");
  }
  const Normalisation norm = dataset_normalisation(s.dataset);
  b.mean = norm.mean;
  b.std = norm.std;
  truncate(b.train, s.train_limit);
  truncate(b.test, s.test_limit);
  b.spec = ModelSpec{b.test.c, b.test.h, b.test.w, 10};
  return b;
}

LoaderOptions loader_options(const DataBundle& data, int64_t batch_size, uint64_t seed, bool train) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = train;
  o.seed = seed;
  o.mean = data.mean;
  o.std = data.std;
  if (train && data.augment) {
    o.crop_pad = 4;
    o.hflip = true;
  }
  return o;
}

}  // namespace qatlab
