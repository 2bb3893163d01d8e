// loader.cpp: batch assembly (byte -> normalised float, optional crop and flip)
// and the prefetching worker thread.
#include "data/loader.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/ops.h"
#include "core/rng.h"

namespace qatlab {

namespace {

// Keeps the augmentation streams apart from the shuffle stream Rng::derive(seed, epoch).
constexpr uint64_t kAugmentSalt = 0x6A09E667F3BCC909ULL;

std::string join_floats(const std::vector<float>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return "[" + s + "]";
}

// One image without augmentation. src (C, H, W) bytes, dst (C, H, W) floats, scale/shift (C). A plain
// multiply-add over contiguous memory, which the compiler vectorises (a 256-entry table lookup would be
// exact too but cannot be vectorised, and is several times slower).
void convert_image(const uint8_t* src, float* dst, const float* scale, const float* shift, int64_t c, int64_t hw) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const float a = scale[ch], b = shift[ch];
    const uint8_t* s = src + ch * hw;
    float* d = dst + ch * hw;
    for (int64_t j = 0; j < hw; ++j) d[j] = static_cast<float>(s[j]) * a + b;
  }
}

// One image cropped from its zero-padded version and optionally mirrored: out(y, x) = src(y + oy, x' + ox)
// with x' = W - 1 - x when flipped, else x; pixels outside the source are byte value 0 (the padding).
// src (C, H, W) bytes, dst (C, H, W) floats, scale/shift (C); oy, ox in [-pad, pad].
void convert_augmented(const uint8_t* src, float* dst, const float* scale, const float* shift, int64_t c, int64_t h,
                       int64_t w, int64_t oy, int64_t ox, bool flip) {
  for (int64_t ch = 0; ch < c; ++ch) {
    const float a = scale[ch], b = shift[ch];
    const float zero = static_cast<float>(uint8_t{0}) * a + b;  // the padding, normalised like any pixel
    for (int64_t y = 0; y < h; ++y) {
      float* d = dst + (ch * h + y) * w;
      const int64_t sy = y + oy;
      if (sy < 0 || sy >= h) {
        std::fill(d, d + w, zero);
        continue;
      }
      const uint8_t* s = src + (ch * h + sy) * w;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t sx = (flip ? w - 1 - x : x) + ox;
        d[x] = (sx >= 0 && sx < w) ? static_cast<float>(s[sx]) * a + b : zero;
      }
    }
  }
}

// Cutout: zeroes the size x size square whose centre is (cy, cx) (rows cy - size/2 .. cy - size/2 + size - 1,
// likewise for columns), clipped at the image's edges, in every channel of the (C, H, W) image img.
void cut_square(float* img, int64_t c, int64_t h, int64_t w, int64_t cy, int64_t cx, int64_t size) {
  const int64_t y0 = std::max<int64_t>(0, cy - size / 2), y1 = std::min(h, cy - size / 2 + size);
  const int64_t x0 = std::max<int64_t>(0, cx - size / 2), x1 = std::min(w, cx - size / 2 + size);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = y0; y < y1; ++y) std::fill(img + (ch * h + y) * w + x0, img + (ch * h + y) * w + x1, 0.0f);
}

// True when no other handle can see t's values, so refilling it in place is invisible to everyone else.
// A batch buffer that nobody kept is reused: allocating a fresh (64, 1, 28, 28) float buffer per batch
// costs more (page faults on fresh memory) than converting the pixels.
bool is_exclusive(const Tensor& t) {
  return t.defined() && t.impl_ptr().use_count() == 1 && t.impl()->data.use_count() == 1 && !t.impl()->grad_fn &&
         !t.impl()->requires_grad;
}

}  // namespace

DataLoader::DataLoader(const ImageDataset& dataset, LoaderOptions options)
    : dataset_(dataset), options_(std::move(options)) {
  const ImageDataset& ds = dataset_;
  const std::string who = "DataLoader(" + ds.name + "): ";
  if (ds.n < 1 || ds.c < 1 || ds.h < 1 || ds.w < 1) {
    throw std::invalid_argument(who + "dataset shape (" + std::to_string(ds.n) + ", " + std::to_string(ds.c) + ", " +
                                std::to_string(ds.h) + ", " + std::to_string(ds.w) +
                                ") must be non-empty in every dimension");
  }
  sample_numel_ = ds.c * ds.h * ds.w;
  if (static_cast<int64_t>(ds.pixels.size()) != ds.n * sample_numel_ || static_cast<int64_t>(ds.labels.size()) != ds.n) {
    throw std::invalid_argument(who + "dataset holds " + std::to_string(ds.pixels.size()) + " pixel bytes and " +
                                std::to_string(ds.labels.size()) + " labels, expected N*C*H*W = " +
                                std::to_string(ds.n * sample_numel_) + " and N = " + std::to_string(ds.n));
  }
  const LoaderOptions& o = options_;
  if (o.batch_size < 1) {
    throw std::invalid_argument(who + "batch_size is " + std::to_string(o.batch_size) + ", expected >= 1");
  }
  if (!o.mean.empty() && static_cast<int64_t>(o.mean.size()) != ds.c) {
    throw std::invalid_argument(who + "mean has " + std::to_string(o.mean.size()) + " values " +
                                join_floats(o.mean) + ", expected one per channel (" + std::to_string(ds.c) +
                                ") or none");
  }
  if (!o.std.empty() && static_cast<int64_t>(o.std.size()) != ds.c) {
    throw std::invalid_argument(who + "std has " + std::to_string(o.std.size()) + " values " + join_floats(o.std) +
                                ", expected one per channel (" + std::to_string(ds.c) + ") or none");
  }
  for (float s : o.std) {
    if (!(s > 0.0f) || !std::isfinite(s)) {
      throw std::invalid_argument(who + "std " + join_floats(o.std) + " must be finite and > 0 in every channel");
    }
  }
  if (o.keep_pixels && (o.crop_pad > 0 || o.hflip || o.cutout > 0)) {
    throw std::invalid_argument(who + "keep_pixels hands out the dataset's own bytes: it cannot go with augmentation "
                                      "(crop_pad " + std::to_string(o.crop_pad) + ", hflip " + (o.hflip ? "on" : "off") + ", cutout " + std::to_string(o.cutout) + ")");
  }
  if (o.cutout < 0) {
    throw std::invalid_argument(who + "cutout is " + std::to_string(o.cutout) + ", expected >= 0 (0 = off)");
  }
  if (o.crop_pad < 0) {
    throw std::invalid_argument(who + "crop_pad is " + std::to_string(o.crop_pad) + ", expected >= 0 (0 = off)");
  }

  num_batches_ = o.drop_last ? ds.n / o.batch_size : (ds.n + o.batch_size - 1) / o.batch_size;

  // (pixel / 255 - mean) / std, folded into one multiply-add per pixel.
  scale_.resize(static_cast<size_t>(ds.c));  // (C)
  shift_.resize(static_cast<size_t>(ds.c));  // (C)
  for (int64_t ch = 0; ch < ds.c; ++ch) {
    const float mean = o.mean.empty() ? 0.0f : o.mean[ch];
    const float stdev = o.std.empty() ? 1.0f : o.std[ch];
    scale_[ch] = 1.0f / (255.0f * stdev);
    shift_[ch] = -mean / stdev;
  }
  order_.resize(static_cast<size_t>(ds.n));
}

DataLoader::~DataLoader() { stop_worker(); }

void DataLoader::stop_worker() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  ready_.clear();
  stop_ = false;
  worker_done_ = false;
  worker_error_ = nullptr;
}

void DataLoader::start_epoch(int64_t epoch) {
  if (epoch < 0) throw std::invalid_argument("DataLoader::start_epoch: epoch is " + std::to_string(epoch) + ", expected >= 0");
  stop_worker();

  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (options_.shuffle) {
    // Fisher-Yates with this epoch's own stream, so the order never depends on earlier epochs.
    Rng rng = Rng::derive(options_.seed, static_cast<uint64_t>(epoch));
    for (int64_t i = static_cast<int64_t>(order_.size()) - 1; i > 0; --i) {
      std::swap(order_[i], order_[rng.below(static_cast<uint64_t>(i) + 1)]);
    }
  }
  augment_key_ = Rng::derive(options_.seed ^ kAugmentSalt, static_cast<uint64_t>(epoch)).next_u64();
  cursor_ = 0;
  epoch_started_ = true;
  if (options_.prefetch) worker_ = std::thread(&DataLoader::worker_loop, this);
}

void DataLoader::make_batch(int64_t index, Batch& out) const {
  if (!epoch_started_) throw std::logic_error("DataLoader: call start_epoch(epoch) before asking for batches");
  if (index < 0 || index >= num_batches_) {
    throw std::out_of_range("DataLoader::make_batch: batch " + std::to_string(index) + " of an epoch of " +
                            std::to_string(num_batches_) + " batches");
  }
  const ImageDataset& ds = dataset_;
  const int64_t begin = index * options_.batch_size;
  const int64_t count = std::min(options_.batch_size, ds.n - begin);
  const Shape shape = {count, ds.c, ds.h, ds.w};
  if (!is_exclusive(out.images) || out.images.shape() != shape) out.images = Tensor::empty(shape);  // (N, C, H, W)
  out.labels.resize(static_cast<size_t>(count));          // (N)
  out.pixels.resize(options_.keep_pixels ? static_cast<size_t>(count * sample_numel_) : 0);  // (N, C, H, W)
  out.index = index;

  out.origins.resize(static_cast<size_t>(count));        // (N)
  const bool augment = options_.crop_pad > 0 || options_.hflip || options_.cutout > 0;
  const int64_t pad = options_.crop_pad;
  float* dst = out.images.data();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t pos = begin + i;  // position in the epoch's order
    const int64_t sample = order_[pos];
    out.labels[i] = ds.labels[sample];
    out.origins[i] = SampleOrigin{sample};
    const uint8_t* src = ds.pixels.data() + sample * sample_numel_;
    float* d = dst + i * sample_numel_;
    if (options_.keep_pixels) std::copy(src, src + sample_numel_, out.pixels.begin() + i * sample_numel_);
    if (!augment) {
      convert_image(src, d, scale_.data(), shift_.data(), ds.c, ds.h * ds.w);
      continue;
    }
    // The sample's own stream: independent of which thread builds the batch and of batch boundaries.
    Rng rng = Rng::derive(augment_key_, static_cast<uint64_t>(pos));
    int64_t oy = 0, ox = 0;
    if (pad > 0) {
      oy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
      ox = static_cast<int64_t>(rng.below(static_cast<uint64_t>(2 * pad + 1))) - pad;
    }
    const bool flip = options_.hflip && rng.below(2) == 1;
    convert_augmented(src, d, scale_.data(), shift_.data(), ds.c, ds.h, ds.w, oy, ox, flip);
    out.origins[i] = SampleOrigin{sample, static_cast<int32_t>(oy), static_cast<int32_t>(ox), flip, options_.cutout > 0};
    if (options_.cutout > 0) {  // drawn after crop and flip, so runs without cutout keep their streams
      const int64_t cy = static_cast<int64_t>(rng.below(static_cast<uint64_t>(ds.h)));
      const int64_t cx = static_cast<int64_t>(rng.below(static_cast<uint64_t>(ds.w)));
      cut_square(d, ds.c, ds.h, ds.w, cy, cx, options_.cutout);
    }
  }
}

void DataLoader::make_variants(std::span<const SampleOrigin> origins, Batch& out) const {
  const ImageDataset& ds = dataset_;
  const int64_t count = static_cast<int64_t>(origins.size()), pad = options_.crop_pad;
  for (int64_t i = 0; i < count; ++i) {
    const SampleOrigin& o = origins[static_cast<size_t>(i)];
    const std::string row = "DataLoader::make_variants: row " + std::to_string(i) + ": ";
    if (o.sample < 0 || o.sample >= ds.n)
      throw std::invalid_argument(row + "sample " + std::to_string(o.sample) + " outside the dataset's " +
                                  std::to_string(ds.n));
    if (std::abs(o.oy) > pad || std::abs(o.ox) > pad)
      throw std::invalid_argument(row + "crop offset (" + std::to_string(o.oy) + ", " + std::to_string(o.ox) +
                                  ") beyond crop_pad " + std::to_string(pad));
    if (o.flip && !options_.hflip) throw std::invalid_argument(row + "a flip, but the loader does not flip");
    if (o.cutout) throw std::invalid_argument(row + "cutout's square is not recorded: the row cannot be made again");
  }
  const Shape shape = {count, ds.c, ds.h, ds.w};
  if (!is_exclusive(out.images) || out.images.shape() != shape) out.images = Tensor::empty(shape);  // (N, C, H, W)
  out.labels.resize(static_cast<size_t>(count));
  out.pixels.clear();
  out.origins.assign(origins.begin(), origins.end());
  out.index = 0;
  const bool augment = options_.crop_pad > 0 || options_.hflip || options_.cutout > 0;
  for (int64_t i = 0; i < count; ++i) {
    const SampleOrigin& o = origins[static_cast<size_t>(i)];
    out.labels[i] = ds.labels[o.sample];
    const uint8_t* src = ds.pixels.data() + o.sample * sample_numel_;
    float* d = out.images.data() + i * sample_numel_;
    // As make_batch: the plain conversion without augmentation, else the crop-and-flip one.
    if (augment)
      convert_augmented(src, d, scale_.data(), shift_.data(), ds.c, ds.h, ds.w, o.oy, o.ox, o.flip);
    else
      convert_image(src, d, scale_.data(), shift_.data(), ds.c, ds.h * ds.w);
  }
}

void DataLoader::worker_loop() {
  try {
    for (int64_t b = 0; b < num_batches_; ++b) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || ready_.size() < kQueueDepth; });
        if (stop_) return;
      }
      Batch batch;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!spare_.empty()) {
          batch.images = std::move(spare_.back());
          spare_.pop_back();
        }
      }
      make_batch(b, batch);  // outside the lock: the consumer can take earlier batches meanwhile
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.push_back(std::move(batch));
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    worker_error_ = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    worker_done_ = true;
  }
  cv_.notify_all();
}

bool DataLoader::next(Batch& out) {
  if (!epoch_started_) throw std::logic_error("DataLoader: call start_epoch(epoch) before next()");
  if (!options_.prefetch) {
    if (cursor_ >= num_batches_) return false;
    make_batch(cursor_++, out);
    return true;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || worker_done_; });
  if (!ready_.empty()) {
    // The batch `out` held before goes back to the worker unless someone still holds its images.
    if (is_exclusive(out.images) && spare_.size() <= kQueueDepth) spare_.push_back(std::move(out.images));
    out = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    cv_.notify_all();  // room in the queue: wake the worker
    return true;
  }
  if (worker_error_) std::rethrow_exception(worker_error_);
  return false;
}

Tensor normalised_pixel_values(int64_t channels, const std::vector<float>& mean, const std::vector<float>& std) {
  // One image (C, 1, 256) holding every byte value once per channel, converted by make_batch like any
  // test image: the floats are those a test image's pixels become, whatever the compiler made of the
  // multiply-add.
  ImageDataset ramp;
  ramp.name = "pixel values";
  ramp.n = 1, ramp.c = channels, ramp.h = 1, ramp.w = 256, ramp.num_classes = 1;
  ramp.pixels.resize(static_cast<size_t>(channels * 256));  // (1, C, 1, 256)
  for (int64_t i = 0; i < channels * 256; ++i) ramp.pixels[i] = static_cast<uint8_t>(i % 256);
  ramp.labels = {0};
  LoaderOptions o;
  o.batch_size = 1;
  o.shuffle = false;
  o.prefetch = false;
  o.mean = mean;
  o.std = std;
  DataLoader loader(ramp, o);
  loader.start_epoch(0);
  Batch batch;
  loader.make_batch(0, batch);
  return reshape(batch.images, {channels, 256});  // (C, 256)
}

}  // namespace qatlab
