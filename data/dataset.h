// dataset.h: image classification datasets held in memory as raw bytes, and their file readers
// (MNIST / Fashion-MNIST IDX files, CIFAR-10 binary batches).
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
};

enum class Split { Train, Test };

const char* split_name(Split split);  // "train" / "test"

// Loads one split of an MNIST-format dataset (MNIST, Fashion-MNIST) from `dir`, which holds
// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each
// raw or gzipped with a `.gz` suffix (the raw file is taken when both exist). Images may be any (N, H, W)
// size and become one channel; labels must be (N) and below 10. `name` is used in messages and stored in
// the result. Throws std::runtime_error naming the directory or file at fault.
ImageDataset load_idx_dataset(const std::string& dir, Split split, const std::string& name);

// The path of `dir`/`file_name` or of its `.gz` twin, whichever exists (raw first); "" if neither.
std::string find_idx_file(const std::string& dir, const std::string& file_name);

// True when `dir` holds all four MNIST-format files (raw or gzipped).
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
