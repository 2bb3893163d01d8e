// data_test_util.h: scratch directories, environment overrides and small dataset writers for the data tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/idx.h"

namespace qatlab::testing {

// A fresh directory under the system temp dir, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qatlab-data-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("cannot create a temporary directory");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string subdir(const std::string& name) const {
    std::filesystem::create_directories(file(name));
    return file(name);
  }

 private:
  std::string path_;
};

// Sets (or, with nullopt, unsets) an environment variable for the lifetime of the guard.
class EnvGuard {
 public:
  EnvGuard(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The message of the std::exception `f` throws; a test failure (and "") when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

inline std::vector<uint8_t> random_bytes(size_t n, uint64_t seed, int lo = 0, int hi = 255) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(lo + rng.below(static_cast<uint64_t>(hi - lo + 1)));
  return v;
}

// One split of an MNIST-format dataset in `dir`: prefix "train" or "t10k", images (n, h, w), labels (n).
struct TinySplit {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;
};
inline TinySplit write_tiny_split(const std::string& dir, const std::string& prefix, int64_t n, int64_t h, int64_t w,
                                  bool gzip_images, bool gzip_labels, uint64_t seed) {
  TinySplit s;
  s.pixels = random_bytes(static_cast<size_t>(n * h * w), seed);
  s.labels = random_bytes(static_cast<size_t>(n), seed + 1, 0, 9);
  write_idx(dir + "/" + prefix + "-images-idx3-ubyte" + (gzip_images ? ".gz" : ""), {{n, h, w}, s.pixels}, gzip_images);
  write_idx(dir + "/" + prefix + "-labels-idx1-ubyte" + (gzip_labels ? ".gz" : ""), {{n}, s.labels}, gzip_labels);
  return s;
}

}  // namespace qatlab::testing
