// teacher_cache.h: a distillation teacher's outputs (teacher.h) for every training row the loader can
// make, computed once ahead of training and read back instead of running the teacher on each batch.
//
// Why: a distilled QAT cell runs the teacher forward on every batch of every epoch, a quarter of its
// step with one teacher network and over a third with an ensemble of two (ResNet-20 on CIFAR-10). With
// crop-and-flip augmentation an image has only (2p + 1)^2 * 2 versions (162 for p = 4): the teacher's
// outputs for all of them cost the teacher's share of 162 epochs once (about 35 epochs of a distilled
// ResNet-20 cell), and every distilled epoch on that data and teacher after it saves that share. It pays
// once more than 162 epochs are distilled from one teacher (the CIFAR-10 study runs about 500). The rows
// read back are the teacher's own outputs
// bit for bit: a network's logits in evaluation mode do not depend on the batch an image comes in (tested
// in tests/nn/test_cifar_models.cpp), and the training loop checks the first batch of every run against the
// live teacher (train_loop.h). Rows with cutout (their square is not recorded) are computed live.
//
// File (HDF5, format "qatlab-teacher-cache", version 1): dataset "logits" float32 (N, V, K): sample n's
// variant v = ((oy + p) * (2p + 1) + (ox + p)) * F + flip (F = 2 with flips, else 1; V = (2p + 1)^2 * F) as
// the teacher sees it after normalisation; attrs of "/": format, format_version and the key's fields
// (teachers, dataset, samples, classes, crop_pad, hflip, mean, std, kernels).
//
// Shape letters: N training images, V variants of one, K classes.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "data/loader.h"
#include "nn/module.h"
#include "nn/train/data_bundle.h"

namespace qatlab {

class H5File;

// The value of a cache file's "format" attribute.
inline constexpr const char* kTeacherCacheFormat = "qatlab-teacher-cache";

// What a cache was computed for; load() refuses a file made for anything else, naming the field.
struct TeacherCacheKey {
  std::vector<std::string> teachers;  // each teacher checkpoint's SHA-256, in the order given
  std::string dataset;                // DataBundle::source
  int64_t samples = 0;                // training images
  int64_t classes = 0;
  int64_t crop_pad = 0;
  bool hflip = false;
  std::vector<float> mean, std;       // (C) the normalisation the teacher's inputs had
  std::string kernels;                // the float kernels' path that computed it (core/cpu_features.h)
};

// The key of teachers `paths` on `data`'s training split, with the float kernels active now. Throws what
// reading a file throws.
TeacherCacheKey teacher_cache_key(const std::vector<std::string>& paths, const DataBundle& data);

class TeacherCache {
 public:
  // Runs `teacher` (in evaluation mode, without gradients) on every variant of every image of the
  // loader's dataset, `batch` rows at a time, and writes the file atomically. The loader must augment as
  // `key` says, without cutout (std::invalid_argument otherwise). The work is kept in parts as it goes
  // (a twentieth of the images each, in `path`.parts/, removed at the end), so that a build stopped part way
  // goes on, when run again, from the parts it finished (those made for the same key). One line of progress
  // to `log` (may be null) per part.
  static void build(Module& teacher, const DataLoader& loader, const TeacherCacheKey& key, const std::string& path,
                    int64_t batch, std::FILE* log);
  // Reads a file written by build. Throws std::runtime_error "<path>: ..." for a file that is not one, is
  // damaged, or was made for another key (naming the field, e.g. "made for crop_pad 4, this run has 2").
  static TeacherCache load(const std::string& path, const TeacherCacheKey& expected);
  // Whether `path` is a readable cache made for `key` (reading only its header): a command that makes
  // caches on demand skips the work when it is.
  static bool up_to_date(const std::string& path, const TeacherCacheKey& key);
  // The key a cache file was made for and the shape of its logits (N, V, K), reading only its header.
  // Throws std::runtime_error "<path>: ..." for a file that is not a cache of this version or is damaged.
  static std::pair<TeacherCacheKey, Shape> read_header(const std::string& path);
  static std::pair<TeacherCacheKey, Shape> read_header(const H5File& f);  // a file already open

  const TeacherCacheKey& key() const { return key_; }
  int64_t variants() const { return variants_; }
  // The teacher's rows (N, K) for these origins, or nothing when one of them cannot be looked up (cutout).
  // Throws std::invalid_argument for an origin outside what the cache covers.
  std::optional<Tensor> rows(std::span<const SampleOrigin> origins) const;

 private:
  TeacherCache() = default;
  TeacherCacheKey key_;
  int64_t variants_ = 0;
  std::vector<float> logits_;  // (N, V, K)
};

// The variant index of an origin for a loader that crops with `crop_pad` and flips with `hflip`, and the
// number of variants of an image, V.
int64_t teacher_cache_variant(const SampleOrigin& origin, int64_t crop_pad, bool hflip);
int64_t teacher_cache_variants(int64_t crop_pad, bool hflip);

}  // namespace qatlab
