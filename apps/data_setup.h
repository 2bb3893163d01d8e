// data_setup.h: the --dataset, --mean / --std and --augment options, and loading a dataset's splits
// for a command into a DataBundle (nn/train/data_bundle.h): a built-in dataset by name or a dataset from
// files (HDF5, image folder, IDX).
#pragma once

#include <string>
#include <vector>

#include "apps/cli.h"
#include "nn/checkpoint.h"
#include "nn/train/data_bundle.h"
#include "nn/zoo.h"

namespace qatlab {

struct DataSettings {
  // A built-in name (mnist | fashion-mnist | cifar10), a path (an .h5 file, an image folder or a folder
  // of IDX files, told apart by content), or a path with its kind: hdf5:FILE, folder:DIR, idx:DIR.
  std::string dataset = "mnist";
  std::string data_dir;     // "" = the default cache directory (MNIST is fetched into it)
  int64_t train_limit = 0;  // use only the first N training images (0 = all)
  int64_t test_limit = 0;   // likewise for the test split
  std::string mean, std;    // "" = the model's, else the data's; one value, or one per channel
  std::string augment;      // "" = the dataset's default (pad-crop:4,flip for cifar10, none otherwise)
};

void add_data_options(po::options_description& desc, DataSettings& s);
// The settings as the INI lines settings_ini writes for add_data_options (in that order).
std::string data_settings_ini(const DataSettings& s);

enum class DatasetKind { Builtin, Hdf5, Folder, Idx };
struct DatasetRef {
  DatasetKind kind = DatasetKind::Builtin;
  std::string name;  // Builtin: the name
  std::string path;  // the others: the absolute path
};
// What a --dataset value names. UsageError, listing the valid forms, for a value that names nothing.
DatasetRef resolve_dataset(const std::string& value);

// Loads the test split, and the training split when `with_train`. The normalisation is --mean / --std
// when given, else the model's (`model`, when it records one), else a built-in dataset's constants, else
// the per-channel mean and standard deviation of the whole training split (computed in integers,
// before --train-limit; channel_mean_std). Throws with a hint when the files are missing; for MNIST,
// fetches them first when absent; std::runtime_error when the files are bad or the images and classes
// are beyond what a model may be built for.
DataBundle load_data(const DataSettings& s, bool with_train, const DataRecord* model = nullptr);

// The record of a model whose data this qatlab has not seen (an imported model with `channels` input
// channels): the dataset as checkpoints store it (a built-in name, or "hdf5:", "folder:" or "idx:" and an
// absolute path), and the normalisation of --mean / --std when given, else a built-in dataset's constants,
// else none (commands then take the training split's statistics, as for any dataset from files).
DataRecord data_record_for(const DataSettings& s, int64_t channels);

// A command that loads a model file: its dataset becomes --dataset unless given (`dataset_defaulted`).
void use_model_dataset(DataSettings& s, bool dataset_defaulted, const DataRecord& model);

// Refuses, with one line (UsageError), a dataset whose images do not have the model's input shape,
// or whose classes differ from the model's (count, or names when both are known) unless
// `allow_mismatch`; even then, labels the model has no score for are refused.
void check_data_fits(const DataBundle& data, const std::string& model_path, const ModelSpec& model_spec,
                     const std::vector<std::string>& model_classes, bool allow_mismatch);

}  // namespace qatlab
