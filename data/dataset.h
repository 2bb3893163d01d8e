// dataset.h: image classification datasets held in memory as raw bytes, and their file readers
// (IDX files as MNIST / Fashion-MNIST ship them, CIFAR-10 binary batches). The other file formats have
// their own readers: hdf5_dataset.h (one HDF5 file) and image_folder.h (PNG / JPEG files, a folder per
// class). Every reader checks shapes and labels and throws one line naming the file at fault.
//
// Shape letters: N images, C channels, H height, W width.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qatlab {

struct ImageDataset {
  std::string name;  // "mnist", "fashion-mnist", "cifar10", ...
  int64_t n = 0, c = 0, h = 0, w = 0;
  int num_classes = 0;
  std::vector<uint8_t> pixels;  // (N, C, H, W), 0..255
  std::vector<int32_t> labels;  // (N), in [0, num_classes)
  std::vector<std::string> class_names;  // (num_classes): from the files, else "0", "1", ...
};

// "0", "1", ..., the names of classes the files do not name.
std::vector<std::string> numbered_class_names(int num_classes);

// Per-channel mean and standard deviation (population) of pixel / 255 over every image of `d`, in that
// order: sums of integer pixel values, exact in 64 bits, so the result does not depend on threads or
// summation order. Throws std::invalid_argument for an empty dataset.
void channel_mean_std(const ImageDataset& d, std::vector<float>& mean, std::vector<float>& std);

enum class Split { Train, Test };

const char* split_name(Split split);  // "train" / "test"

// Loads one split of an IDX dataset (MNIST, Fashion-MNIST, or any other) from `dir`, which holds
// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each
// raw or gzipped with a `.gz` suffix (the raw file is taken when both exist); the images may instead be
// named ...-images-idx4-ubyte. Images are (N, H, W), one channel, or (N, C, H, W), whatever the name
// says; labels (N), each below `num_classes`, or with num_classes = 0 below the class count
// idx_class_count gives. `name` is used in messages and stored in the result. Throws
// std::runtime_error naming the directory or file at fault.
ImageDataset load_idx_dataset(const std::string& dir, Split split, const std::string& name, int num_classes = 10);

// The class count of an IDX dataset that does not state it: 1 + the largest label of both splits.
int idx_class_count(const std::string& dir, const std::string& name);

// The path of `dir`/`file_name` or of its `.gz` twin, whichever exists (raw first); "" if neither.
std::string find_idx_file(const std::string& dir, const std::string& file_name);

// True when `dir` holds all four files of an IDX dataset (raw or gzipped, images idx3 or idx4).
bool has_idx_dataset_files(const std::string& dir);

// Loads one split of CIFAR-10 in its official binary layout: data_batch_1.bin .. data_batch_5.bin (train)
// or test_batch.bin (test), in `dir` or in `dir`/cifar-10-batches-bin. Each 3073-byte record is one
// label byte (0..9) then 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32x32 row-major), which is
// already our (C, H, W) layout. Result: c = 3, h = w = 32, num_classes = 10.
ImageDataset load_cifar10(const std::string& dir, Split split);

// The directory that holds the CIFAR-10 batch files: `dir` itself or `dir`/cifar-10-batches-bin;
// "" when neither holds all six.
std::string find_cifar10_batches(const std::string& dir);

// Writes one CIFAR-10 batch file. pixels (N, 3, 32, 32), labels (N), each label in 0..9.
void write_cifar10_batch(const std::string& path, const std::vector<uint8_t>& pixels,
                         const std::vector<int32_t>& labels);

}  // namespace qatlab
