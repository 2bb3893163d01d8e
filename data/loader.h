// loader.h: turns an in-memory ImageDataset into shuffled, normalised, optionally augmented float batches,
// prepared ahead on a background thread.
//
// Shape letters: N batch, C channels, H height, W width.
//
// Determinism: epoch e's order comes from Rng::derive(seed, e) alone, and each sample's augmentation from
// an Rng derived from (seed, e, the sample's position in that order). So a run resumed at epoch e sees
// exactly the batches an uninterrupted run would, and prefetching on or off gives identical batches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"

namespace qatlab {

struct LoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;  // drop a final batch smaller than batch_size
  uint64_t seed = 0;
  // Per channel (size C, or empty for 0 and 1): value = (pixel / 255 - mean) / std, computed as
  // pixel * scale + shift with scale = 1 / (255 std), shift = -mean / std (equal up to float rounding).
  std::vector<float> mean, std;
  bool prefetch = true;          // prepare batches on a background thread
  int64_t crop_pad = 0;          // random crop of the image zero-padded by this many pixels; 0 = off
  bool hflip = false;            // mirror left-right with probability 1/2
  // Cutout (DeVries & Taylor 2017): a cutout x cutout square centred on a uniformly drawn pixel (clipped
  // at the image's edges) is set to 0 after normalisation, i.e. to the mean; 0 = off.
  int64_t cutout = 0;
  // Also hand out each batch's raw bytes (Batch::pixels), for the integer graph's pixel table. Only
  // without augmentation: the bytes are the dataset's own.
  bool keep_pixels = false;
};

// Where a batch row came from: the dataset sample and the augmentation drawn for it (the crop's offset into
// the zero-padded image, in [-crop_pad, crop_pad], and the flip; whether cutout then cut a square, whose
// place is not recorded). Enough to make the row again (DataLoader::make_variants) unless `cutout`, and to
// key what a fixed network computes from it (a teacher's outputs computed ahead of training).
struct SampleOrigin {
  int64_t sample = 0;
  int32_t oy = 0, ox = 0;
  bool flip = false;
  bool cutout = false;
};

struct Batch {
  Tensor images;                // (N, C, H, W) float32, normalised
  std::vector<int32_t> labels;  // (N)
  std::vector<uint8_t> pixels;  // (N, C, H, W) the raw bytes of images, when LoaderOptions::keep_pixels
  std::vector<SampleOrigin> origins;  // (N)
  int64_t index = 0;            // position of this batch in its epoch
};

// What the loader makes of every byte value: (C, 256) floats, row c holding channel c's values of pixels
// 0..255, computed by the very code that converts images (the same multiply-add, contracted to an FMA or
// not as the compiler built that code). The integer graph's pixel table is made from it (quant/qat/convert.h).
// Throws std::invalid_argument on mean / std the loader would refuse.
Tensor normalised_pixel_values(int64_t channels, const std::vector<float>& mean, const std::vector<float>& std);

class DataLoader {
 public:
  // Keeps a reference to `dataset`, which must outlive the loader. Throws std::invalid_argument on bad
  // options or an inconsistent dataset.
  DataLoader(const ImageDataset& dataset, LoaderOptions options);
  DataLoader(ImageDataset&&, LoaderOptions) = delete;  // a temporary would dangle
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const { return num_batches_; }
  const LoaderOptions& options() const { return options_; }

  // Starts epoch `epoch` (>= 0) from its first batch, stopping any unfinished one.
  void start_epoch(int64_t epoch);
  // The next batch of the current epoch into `out`; false once the epoch is exhausted. Keep a copy of
  // out.images (a shallow handle) to hold on to a batch: a buffer nobody else holds is recycled.
  bool next(Batch& out);

  // Fills `out` with batch `index` of the current epoch, on the calling thread. next() uses it; it is
  // public so that the conversion can be timed and tested on its own. Like next(), it refills
  // out.images in place when no other handle shares it, and allocates a new tensor otherwise.
  void make_batch(int64_t index, Batch& out) const;

  // A batch of the given rows, each made as make_batch makes a sample with that crop and flip (bit for bit
  // the same floats), labels and origins filled, index 0; no epoch needed. Throws std::invalid_argument for
  // a sample outside the dataset, an offset beyond crop_pad, a flip without hflip, or an origin with cutout.
  void make_variants(std::span<const SampleOrigin> origins, Batch& out) const;

 private:
  void stop_worker();
  void worker_loop();

  const ImageDataset& dataset_;
  LoaderOptions options_;
  int64_t num_batches_ = 0;
  int64_t sample_numel_ = 0;     // C * H * W
  std::vector<float> scale_, shift_;  // (C): value = pixel * scale + shift = (pixel / 255 - mean) / std
  std::vector<int64_t> order_;   // (dataset N): sample indices in this epoch's order
  uint64_t augment_key_ = 0;     // this epoch's key for per-sample augmentation streams
  bool epoch_started_ = false;
  int64_t cursor_ = 0;           // next batch index (without prefetch)

  // Prefetching: the worker produces batches 0.. of the epoch into ready_, at most kQueueDepth ahead.
  static constexpr size_t kQueueDepth = 2;
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;  // signalled on every change of the fields below
  std::deque<Batch> ready_;
  std::vector<Tensor> spare_;   // image buffers handed back by next(), for the worker to refill
  bool stop_ = false;           // asks the worker to quit
  bool worker_done_ = false;    // the worker produced the whole epoch (or failed)
  std::exception_ptr worker_error_;
};

}  // namespace qatlab
