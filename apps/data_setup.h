// data_setup.h: the --dataset / --data-dir options and loading a dataset's splits for a command.
#pragma once

#include <string>
#include <vector>

#include "apps/cli.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "nn/zoo.h"

namespace qatlab {

struct DataSettings {
  std::string dataset = "mnist";  // mnist | fashion-mnist | cifar10
  std::string data_dir;           // "" = the default cache directory (MNIST is fetched into it)
  int64_t train_limit = 0;        // use only the first N training images (0 = all)
  int64_t test_limit = 0;         // likewise for the test split
};

void add_data_options(po::options_description& desc, DataSettings& s);

struct DataBundle {
  ImageDataset train, test;        // train is empty when not asked for
  std::vector<float> mean, std;    // per-channel normalisation of pixel / 255
  ModelSpec spec;                  // input shape and classes, for building models
  bool augment = false;            // random crop + flip are standard for this dataset (CIFAR-10)
};

// The per-channel normalisation of pixel / 255 a dataset is trained with ((pixel / 255 - mean) / std).
// UsageError for an unknown name.
struct Normalisation {
  std::vector<float> mean, std;  // (C)
};
Normalisation dataset_normalisation(const std::string& dataset);

// Loads the test split, and the training split when `with_train`. Throws with a hint when the files
// are missing; for MNIST, fetches them first when absent.
DataBundle load_data(const DataSettings& s, bool with_train);

LoaderOptions loader_options(const DataBundle& data, int64_t batch_size, uint64_t seed, bool train);

}  // namespace qatlab
