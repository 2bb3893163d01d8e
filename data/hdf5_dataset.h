// hdf5_dataset.h: an image classification dataset in one HDF5 file (h5py writes it in a few lines).
//
// Shape letters: N images, C channels, H height, W width.
//
// Layout (the test split as the training split, under /test):
//   /train/images   uint8 (N, H, W) (one channel) or (N, C, H, W); (N, H, W, C) when the dataset has
//                   the string attribute layout = "NHWC" (what most image tools give)
//   /train/labels   integer (N): uint8, int16, int32 or int64, each in [0, classes)
//   /               optional attributes: class_names, one fixed-length string holding the names
//                   separated by newlines ("cat\ndog"); num_classes, an integer
// The class count is the number of class_names, else num_classes, else 1 + the largest label of
// both splits. Both splits must have the same image shape. Strings must be fixed-length (h5io.h).
// A data file is not made by qatlab and has no checksum header: it is opened as it is.
#pragma once

#include <string>

#include "data/dataset.h"

namespace qatlab {

// Loads one split; `name` goes into the result. Throws std::runtime_error "FILE: ..." naming the
// missing or mis-shaped dataset, the label out of range, the counts that disagree.
ImageDataset load_hdf5_dataset(const std::string& path, Split split, const std::string& name);

// True when the file at `path` starts with the HDF5 signature or qatlab's sealed-file header.
bool looks_like_hdf5(const std::string& path);

}  // namespace qatlab
