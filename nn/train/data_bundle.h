// data_bundle.h: a dataset as training and evaluation take it: both splits' images, the normalisation
// and the augmentation the loader applies to them, the model input they fit, and what model files record
// of the data a model was trained on.
//
// Shape letters: C channels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "nn/checkpoint.h"
#include "nn/zoo.h"

namespace qatlab {

// What a model file records about the data it was trained on (checkpoint, integer model file).
struct DataRecord {
  std::string dataset;                    // the dataset as stored (see DataBundle::source); "" unknown
  std::vector<float> mean, std;           // (C); empty in files written before they were recorded
  std::vector<std::string> class_names;   // (classes); likewise
};

// A checkpoint's record of its data.
DataRecord data_record(const Checkpoint& ckpt);

struct DataBundle {
  ImageDataset train, test;        // train is empty when not asked for
  // The dataset as files record it: a built-in name, or "hdf5:", "folder:" or "idx:" and an absolute
  // path; train.name and test.name hold it too. `label` is its short form for run directory names.
  std::string source, label;
  std::vector<float> mean, std;    // (C) per-channel normalisation of pixel / 255
  std::string norm_origin;         // where mean / std came from, for messages ("the model's", ...)
  ModelSpec spec;                  // input shape and classes, for building models
  std::vector<std::string> class_names;  // (spec.num_classes)
  int64_t crop_pad = 0;            // training augmentation: random crop of the image padded by this
  bool hflip = false;              // and random left-right mirroring
  int64_t cutout = 0;              // and a random square of this side set to the mean (0 = off)
};

// The loader options for one split of `data`: its normalisation; shuffled, and augmented as the bundle
// says, when `train`; in order and as stored otherwise.
LoaderOptions loader_options(const DataBundle& data, int64_t batch_size, uint64_t seed, bool train);

// The per-channel normalisation of pixel / 255 a built-in dataset (mnist, fashion-mnist, cifar10) is
// trained with ((pixel / 255 - mean) / std). std::invalid_argument for any other name.
struct Normalisation {
  std::vector<float> mean, std;  // (C)
};
Normalisation dataset_normalisation(const std::string& dataset);

// A built-in dataset's images and classes. std::invalid_argument for any other name.
ModelSpec builtin_dataset_spec(const std::string& dataset);

// "0.1307" or "0.4914,0.4822,0.4465": values as --mean / --std take them (9 significant digits, which
// give the same float back).
std::string floats_text(const std::vector<float>& values);

}  // namespace qatlab
