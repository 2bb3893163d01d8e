// test_loader.cpp: DataLoader batching, normalisation, per-epoch shuffling, augmentation, prefetching and
// option validation.
//
// Shape letters: N batch, C channels, H height, W width.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>
#include <set>
#include <thread>

#include "data/loader.h"
#include "tests/core/gradcheck.h"
#include "tests/data/data_test_util.h"

namespace qatlab {
namespace {

using testing::contains;
using testing::error_of;

// n images (C, H, W) whose first two bytes encode the image index (so a batch row can be traced back
// to its sample) and whose other bytes are random in 1..255 (so 0 can only come from crop padding).
ImageDataset make_dataset(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed = 1) {
  ImageDataset ds;
  ds.name = "synthetic";
  ds.n = n;
  ds.c = c;
  ds.h = h;
  ds.w = w;
  ds.num_classes = 10;
  ds.pixels = testing::random_bytes(static_cast<size_t>(n * c * h * w), seed, 1, 255);  // (N, C, H, W)
  for (int64_t i = 0; i < n; ++i) {
    ds.pixels[i * c * h * w] = static_cast<uint8_t>(1 + i % 255);
    ds.pixels[i * c * h * w + 1] = static_cast<uint8_t>(1 + i / 255);
    ds.labels.push_back(static_cast<int32_t>(i % 10));
  }
  return ds;
}

// The sample index of row i of a batch made without normalisation (value = byte / 255) or augmentation.
int64_t sample_of(const Batch& b, int64_t i) {
  const int64_t numel = b.images.numel() / b.images.size(0);
  const float* p = b.images.data() + i * numel;
  const auto byte = [](float v) { return static_cast<int64_t>(std::lround(v * 255.0f)); };
  return (byte(p[0]) - 1) + 255 * (byte(p[1]) - 1);
}

std::vector<Batch> whole_epoch(DataLoader& dl, int64_t epoch) {
  dl.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (dl.next(b)) out.push_back(b);
  return out;
}

std::vector<int64_t> epoch_order(DataLoader& dl, int64_t epoch) {
  std::vector<int64_t> order;
  for (const Batch& b : whole_epoch(dl, epoch))
    for (int64_t i = 0; i < b.images.size(0); ++i) order.push_back(sample_of(b, i));
  return order;
}

bool same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  if (a.size() != b.size()) return false;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].images.shape() != b[k].images.shape() || a[k].labels != b[k].labels || a[k].index != b[k].index) return false;
    if (std::memcmp(a[k].images.data(), b[k].images.data(), sizeof(float) * a[k].images.numel()) != 0) return false;
  }
  return true;
}

TEST(DataLoader, BatchShapesWithPartialLastBatchAndDropLast) {
  const ImageDataset ds = make_dataset(10, 2, 3, 4);
  for (bool prefetch : {false, true}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.prefetch = prefetch;
    DataLoader dl(ds, o);
    EXPECT_EQ(dl.num_batches(), 3);
    const std::vector<Batch> bs = whole_epoch(dl, 0);
    ASSERT_EQ(bs.size(), 3u);
    const int64_t sizes[3] = {4, 4, 2};
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(bs[k].images.shape(), (Shape{sizes[k], 2, 3, 4}));
      EXPECT_EQ(bs[k].labels.size(), static_cast<size_t>(sizes[k]));
      EXPECT_EQ(bs[k].index, k);
    }
    Batch b;
    EXPECT_FALSE(dl.next(b));  // still exhausted

    o.drop_last = true;
    DataLoader dropping(ds, o);
    EXPECT_EQ(dropping.num_batches(), 2);
    const std::vector<Batch> full = whole_epoch(dropping, 0);
    ASSERT_EQ(full.size(), 2u);
    for (const Batch& x : full) EXPECT_EQ(x.images.size(0), 4);
  }
  LoaderOptions big;
  big.batch_size = 64;
  DataLoader one(ds, big);
  EXPECT_EQ(one.num_batches(), 1);
  big.drop_last = true;
  DataLoader none(ds, big);
  EXPECT_EQ(none.num_batches(), 0);
  none.start_epoch(0);
  Batch b;
  EXPECT_FALSE(none.next(b));
}

TEST(DataLoader, NormalisesPerChannel) {
  const ImageDataset ds = make_dataset(5, 2, 3, 3);
  LoaderOptions o;
  o.batch_size = 5;
  o.shuffle = false;
  o.mean = {0.5f, 0.25f};
  o.std = {0.5f, 2.0f};
  DataLoader dl(ds, o);
  const std::vector<Batch> bs = whole_epoch(dl, 0);
  ASSERT_EQ(bs.size(), 1u);
  const float* v = bs[0].images.data();
  for (int64_t i = 0; i < ds.n * 18; ++i) {
    const int64_t ch = (i / 9) % 2;
    const float expected = (ds.pixels[i] / 255.0f - o.mean[ch]) / o.std[ch];
    ASSERT_NEAR(v[i], expected, 1e-6f) << i;
  }
  EXPECT_NEAR(v[2], (ds.pixels[2] / 255.0f - 0.5f) / 0.5f, 1e-6f);
  for (int64_t i = 0; i < ds.n; ++i) EXPECT_EQ(bs[0].labels[i], ds.labels[i]);
}

// normalised_pixel_values gives, bit for bit, the floats the loader makes of each byte value in each
// channel (whatever the compiler made of the multiply-add): images of the MNIST and CIFAR-10 sizes hold
// every value somewhere, and each of their floats is looked up in the table.
TEST(DataLoader, PixelValuesAreTheFloatsItMakesOfEachByte) {
  for (const auto& [c, side] : {std::pair<int64_t, int64_t>{1, 28}, {3, 32}}) {
    const ImageDataset ds = make_dataset(4, c, side, side, 5);
    LoaderOptions o;
    o.batch_size = 3;
    o.shuffle = false;
    o.keep_pixels = true;
    o.mean = c == 1 ? std::vector<float>{0.1307f} : std::vector<float>{0.4914f, 0.4822f, 0.4465f};
    o.std = c == 1 ? std::vector<float>{0.3081f} : std::vector<float>{0.2470f, 0.2435f, 0.2616f};
    const Tensor table = normalised_pixel_values(c, o.mean, o.std);
    ASSERT_EQ(table.shape(), (Shape{c, 256}));
    DataLoader dl(ds, o);
    int64_t checked = 0;
    for (const Batch& b : whole_epoch(dl, 0)) {
      ASSERT_EQ(static_cast<int64_t>(b.pixels.size()), b.images.numel());
      const int64_t hw = side * side;
      for (int64_t k = 0; k < b.images.numel(); ++k) {
        const int64_t ch = k / hw % c;
        ASSERT_EQ(b.pixels[k], ds.pixels[(b.index * 3) * c * hw + k]) << k;  // the dataset's own bytes
        ASSERT_EQ(b.images.data()[k], table.data()[ch * 256 + b.pixels[k]]) << "channel " << ch << " byte " << int{b.pixels[k]};
        ++checked;
      }
    }
    EXPECT_EQ(checked, 4 * c * side * side);
    // The table is no identity of the bytes: pixel 0 of channel 0 is -mean / std.
    EXPECT_FLOAT_EQ(table.data()[0], -o.mean[0] / o.std[0]);
  }
  // Without keep_pixels a batch carries no bytes; with augmentation keep_pixels is refused.
  const ImageDataset ds = make_dataset(2, 1, 4, 4);
  LoaderOptions o;
  o.batch_size = 2;
  DataLoader dl(ds, o);
  EXPECT_TRUE(whole_epoch(dl, 0)[0].pixels.empty());
  o.keep_pixels = true;
  o.hflip = true;
  EXPECT_THROW(DataLoader(ds, o), std::invalid_argument);
  EXPECT_THROW(normalised_pixel_values(2, {0.5f}, {0.5f}), std::invalid_argument);
}

TEST(DataLoader, WithoutShuffleKeepsDatasetOrder) {
  const ImageDataset ds = make_dataset(9, 1, 2, 2);
  LoaderOptions o;
  o.batch_size = 4;
  o.shuffle = false;
  DataLoader dl(ds, o);
  EXPECT_EQ(epoch_order(dl, 3), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

TEST(DataLoader, ShuffleIsAFunctionOfSeedAndEpochOnly) {
  const ImageDataset ds = make_dataset(300, 1, 2, 2);
  LoaderOptions o;
  o.batch_size = 7;
  o.seed = 42;
  DataLoader a(ds, o), b(ds, o);
  const std::vector<int64_t> a0 = epoch_order(a, 0), a1 = epoch_order(a, 1), a2 = epoch_order(a, 2);
  // A run resumed at epoch 2 shuffles exactly as the uninterrupted one.
  EXPECT_EQ(epoch_order(b, 2), a2);
  EXPECT_EQ(epoch_order(b, 0), a0);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a1, a2);
  std::vector<int64_t> identity(300);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(a0, identity);
  // Every sample exactly once per epoch, with its own label.
  for (const auto& order : {a0, a1, a2}) {
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity);
  }
  for (const Batch& batch : whole_epoch(a, 5))
    for (int64_t i = 0; i < batch.images.size(0); ++i) EXPECT_EQ(batch.labels[i], sample_of(batch, i) % 10);

  o.seed = 43;
  DataLoader c(ds, o);
  EXPECT_NE(epoch_order(c, 0), a0);
}

TEST(DataLoader, PrefetchGivesIdenticalBatches) {
  const ImageDataset ds = make_dataset(50, 3, 6, 5);
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 7;
  o.mean = {0.1f, 0.2f, 0.3f};
  o.std = {0.9f, 0.8f, 0.7f};
  o.crop_pad = 2;
  o.hflip = true;
  o.prefetch = false;
  DataLoader sync(ds, o);
  o.prefetch = true;
  DataLoader async(ds, o);
  for (int64_t e : {0, 1, 4}) EXPECT_TRUE(same_batches(whole_epoch(sync, e), whole_epoch(async, e))) << "epoch " << e;
  // make_batch called directly agrees too.
  sync.start_epoch(1);
  const std::vector<Batch> ref = whole_epoch(async, 1);
  Batch b;
  sync.make_batch(3, b);
  EXPECT_TRUE(same_batches({b}, {ref[3]}));
}

// Finds (oy, ox, flip) with out(y, x) = src(y + oy, x' + ox) (x' mirrored when flipped; 0 outside), for a
// one-channel image; returns false when none of the candidates matches.
bool explain_augmented(const float* out, const uint8_t* src, int64_t h, int64_t w, int64_t pad, bool allow_flip,
                       int64_t& oy_found, int64_t& ox_found, bool& flip_found) {
  for (int flip = 0; flip <= (allow_flip ? 1 : 0); ++flip)
    for (int64_t oy = -pad; oy <= pad; ++oy)
      for (int64_t ox = -pad; ox <= pad; ++ox) {
        bool ok = true;
        for (int64_t y = 0; y < h && ok; ++y)
          for (int64_t x = 0; x < w && ok; ++x) {
            const int64_t sy = y + oy, sx = (flip ? w - 1 - x : x) + ox;
            const uint8_t byte = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? src[sy * w + sx] : 0;
            ok = std::fabs(out[y * w + x] - byte / 255.0f) < 1e-6f;
          }
        if (ok) {
          oy_found = oy;
          ox_found = ox;
          flip_found = flip;
          return true;
        }
      }
  return false;
}

TEST(DataLoader, RandomCropIsACropOfTheZeroPaddedImage) {
  const ImageDataset ds = make_dataset(200, 1, 6, 6, 3);
  LoaderOptions o;
  o.batch_size = 32;
  o.shuffle = false;
  o.crop_pad = 2;
  DataLoader dl(ds, o);
  std::set<std::pair<int64_t, int64_t>> offsets;
  int64_t zeros = 0;
  for (const Batch& b : whole_epoch(dl, 0)) {
    for (int64_t i = 0; i < b.images.size(0); ++i) {
      const int64_t sample = b.index * o.batch_size + i;  // no shuffle
      const float* out = b.images.data() + i * 36;
      int64_t oy, ox;
      bool flip;
      ASSERT_TRUE(explain_augmented(out, ds.pixels.data() + sample * 36, 6, 6, 2, false, oy, ox, flip)) << sample;
      offsets.insert({oy, ox});
      for (int64_t j = 0; j < 36; ++j) zeros += out[j] == 0.0f;
    }
  }
  EXPECT_GE(offsets.size(), 20u);  // 25 possible offsets over 200 samples: nearly all must occur
  EXPECT_GT(zeros, 0);
}

TEST(DataLoader, FlipMirrorsAboutHalfTheImages) {
  const ImageDataset ds = make_dataset(200, 1, 4, 5, 4);
  LoaderOptions o;
  o.batch_size = 50;
  o.shuffle = false;
  o.hflip = true;
  DataLoader dl(ds, o);
  int64_t flipped = 0;
  for (const Batch& b : whole_epoch(dl, 0)) {
    for (int64_t i = 0; i < b.images.size(0); ++i) {
      const int64_t sample = b.index * o.batch_size + i;
      int64_t oy, ox;
      bool flip;
      ASSERT_TRUE(explain_augmented(b.images.data() + i * 20, ds.pixels.data() + sample * 20, 4, 5, 0, true, oy, ox, flip));
      flipped += flip;
    }
  }
  EXPECT_GT(flipped, 60);
  EXPECT_LT(flipped, 140);
}

TEST(DataLoader, AugmentationIsDeterministicPerSeedAndEpoch) {
  const ImageDataset ds = make_dataset(40, 3, 8, 8);
  LoaderOptions o;
  o.batch_size = 16;
  o.crop_pad = 3;
  o.hflip = true;
  o.seed = 11;
  DataLoader a(ds, o), b(ds, o);
  EXPECT_TRUE(same_batches(whole_epoch(a, 2), whole_epoch(b, 2)));
  // Without shuffling, a different epoch still augments differently.
  o.shuffle = false;
  DataLoader c(ds, o);
  EXPECT_FALSE(same_batches(whole_epoch(c, 0), whole_epoch(c, 1)));
  // The batch size does not change a sample's augmentation: it depends on the position, not the batch.
  o.batch_size = 40;
  DataLoader d(ds, o);
  const std::vector<Batch> one = whole_epoch(d, 0), several = whole_epoch(c, 0);
  for (const Batch& part : several)
    EXPECT_EQ(0, std::memcmp(part.images.data(), one[0].images.data() + part.index * 16 * 192,
                             sizeof(float) * part.images.numel()));
}

// Every row records where it came from, and make_variants makes it again from that alone, bit for bit:
// with crop and flip, and without augmentation. Rows with cutout say so and cannot be made again.
TEST(DataLoader, OriginsMakeEveryRowAgain) {
  using test::throws_with;
  const ImageDataset ds = make_dataset(50, 3, 8, 8, 2);
  for (const bool augment : {true, false}) {
    LoaderOptions o;
    o.batch_size = 16;
    o.seed = 4;
    o.crop_pad = augment ? 3 : 0;
    o.hflip = augment;
    DataLoader dl(ds, o);
    std::set<int64_t> samples;
    int64_t flips = 0;
    for (const Batch& b : whole_epoch(dl, 1)) {
      ASSERT_EQ(b.origins.size(), b.labels.size());
      Batch again;
      dl.make_variants(b.origins, again);
      ASSERT_EQ(again.images.shape(), b.images.shape());
      EXPECT_EQ(0, std::memcmp(again.images.data(), b.images.data(), sizeof(float) * b.images.numel())) << augment;
      EXPECT_EQ(again.labels, b.labels);
      for (const SampleOrigin& g : b.origins) {
        samples.insert(g.sample);
        flips += g.flip;
        EXPECT_FALSE(g.cutout);
        EXPECT_LE(std::abs(g.oy), o.crop_pad);
        EXPECT_LE(std::abs(g.ox), o.crop_pad);
      }
    }
    EXPECT_EQ(samples.size(), 50u);  // each sample once in the epoch
    EXPECT_EQ(flips > 0, augment);
  }
  LoaderOptions o;
  o.batch_size = 10;
  o.crop_pad = 1;
  o.cutout = 2;
  DataLoader dl(ds, o);
  const std::vector<Batch> epoch = whole_epoch(dl, 0);
  EXPECT_TRUE(epoch[0].origins[0].cutout);
  Batch out;
  EXPECT_TRUE(throws_with([&] { dl.make_variants(epoch[0].origins, out); }, {"row 0", "cutout"}));
  for (const SampleOrigin bad : {SampleOrigin{50}, SampleOrigin{-1}, SampleOrigin{0, 2, 0}, SampleOrigin{0, 0, 0, true}}) {
    const std::vector<SampleOrigin> one{bad};
    EXPECT_TRUE(throws_with([&] { dl.make_variants(one, out); }, {"make_variants: row 0"}));
  }
}

TEST(DataLoader, CutoutZeroesOneSquareAndKeepsTheCropAndFlipStreams) {
  const ImageDataset ds = make_dataset(120, 2, 9, 9, 5);
  LoaderOptions o;
  o.batch_size = 40;
  o.seed = 5;
  o.mean = {0.0f, 0.0f};
  o.std = {1.0f, 1.0f};
  o.crop_pad = 2;
  o.hflip = true;
  DataLoader plain(ds, o);
  o.cutout = 4;
  DataLoader cut(ds, o);
  const std::vector<Batch> a = whole_epoch(plain, 3), b = whole_epoch(cut, 3);
  ASSERT_EQ(a.size(), b.size());
  std::set<std::pair<int64_t, int64_t>> corners;
  for (size_t k = 0; k < a.size(); ++k) {
    ASSERT_EQ(a[k].labels, b[k].labels);  // same order
    for (int64_t i = 0; i < a[k].images.size(0); ++i) {
      const float* pa = a[k].images.data() + i * 162;
      const float* pb = b[k].images.data() + i * 162;
      // Every pixel equals the uncut image's (the crop and flip draws are unchanged), except a square of
      // at most 4x4, clipped at the edges, that is 0 in both channels.
      int64_t y0 = 9, y1 = -1, x0 = 9, x1 = -1;
      for (int64_t ch = 0; ch < 2; ++ch)
        for (int64_t y = 0; y < 9; ++y)
          for (int64_t x = 0; x < 9; ++x) {
            const int64_t j = (ch * 9 + y) * 9 + x;
            if (pb[j] == pa[j]) continue;
            EXPECT_EQ(pb[j], 0.0f);
            y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
          }
      if (y1 < 0) continue;  // the square fell on pixels that were 0 already
      EXPECT_LE(y1 - y0, 3);
      EXPECT_LE(x1 - x0, 3);
      corners.insert({y0, x0});
    }
  }
  EXPECT_GE(corners.size(), 30u);  // the square moves around
}

TEST(DataLoader, RestartingOrDestroyingMidEpochStopsCleanly) {
  const ImageDataset ds = make_dataset(100, 1, 4, 4);
  LoaderOptions o;
  o.batch_size = 3;
  for (int rep = 0; rep < 30; ++rep) {
    DataLoader dl(ds, o);
    dl.start_epoch(0);
    Batch b;
    ASSERT_TRUE(dl.next(b));
    // The worker is now blocked on a full queue or still working: restart mid-epoch.
    dl.start_epoch(1);
    ASSERT_TRUE(dl.next(b));
    EXPECT_EQ(b.index, 0);
    if (rep % 3 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    // Leaving the scope destroys the loader mid-epoch.
  }
  {
    DataLoader untouched(ds, o);  // destroyed without ever starting
  }
  {
    DataLoader started(ds, o);
    started.start_epoch(0);  // destroyed before any next()
  }
  // After a restart the epoch is complete and correct.
  DataLoader dl(ds, o);
  o.prefetch = false;
  DataLoader ref(ds, o);
  dl.start_epoch(2);
  Batch b;
  dl.next(b);
  dl.next(b);
  EXPECT_TRUE(same_batches(whole_epoch(dl, 2), whole_epoch(ref, 2)));
}

TEST(DataLoader, NextBeforeStartEpochThrows) {
  const ImageDataset ds = make_dataset(4, 1, 2, 2);
  DataLoader dl(ds, LoaderOptions{});
  Batch b;
  EXPECT_THROW(dl.next(b), std::logic_error);
  dl.start_epoch(0);
  EXPECT_THROW(dl.make_batch(1, b), std::out_of_range);
  EXPECT_THROW(dl.start_epoch(-1), std::invalid_argument);
}

TEST(DataLoader, RejectsBadOptions) {
  const ImageDataset ds = make_dataset(4, 3, 2, 2);
  auto make = [&](LoaderOptions o) { return error_of([&] { DataLoader dl(ds, o); }); };
  LoaderOptions o;
  o.batch_size = 0;
  EXPECT_TRUE(contains(make(o), "batch_size is 0, expected >= 1"));
  o = {};
  o.mean = {0.5f};
  EXPECT_TRUE(contains(make(o), "mean has 1 values"));
  EXPECT_TRUE(contains(make(o), "one per channel (3)"));
  o = {};
  o.std = {1.0f, 1.0f};
  EXPECT_TRUE(contains(make(o), "std has 2 values"));
  o = {};
  o.std = {1.0f, 0.0f, 1.0f};
  EXPECT_TRUE(contains(make(o), "must be finite and > 0"));
  o.std = {1.0f, -2.0f, 1.0f};
  EXPECT_TRUE(contains(make(o), "must be finite and > 0"));
  o = {};
  o.crop_pad = -1;
  EXPECT_TRUE(contains(make(o), "crop_pad is -1"));
  o.crop_pad = 0;
  o.cutout = -2;
  EXPECT_TRUE(contains(make(o), "cutout is -2"));

  ImageDataset broken = ds;
  broken.labels.pop_back();
  EXPECT_TRUE(contains(error_of([&] { DataLoader dl(broken, LoaderOptions{}); }), "3 labels"));
  ImageDataset empty;
  EXPECT_TRUE(contains(error_of([&] { DataLoader dl(empty, LoaderOptions{}); }), "non-empty"));
}

#if !defined(NDEBUG) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kTimingIsMeaningful = false;  // unoptimised or instrumented code says nothing about speed
#else
constexpr bool kTimingIsMeaningful = true;
#endif

TEST(DataLoader, ConvertsAnMnistBatchQuickly) {
  if (!kTimingIsMeaningful) GTEST_SKIP() << "timing is checked in optimised, uninstrumented builds only";
  const ImageDataset ds = make_dataset(256, 1, 28, 28);
  LoaderOptions o;
  o.prefetch = false;
  o.mean = {0.1307f};
  o.std = {0.3081f};
  DataLoader dl(ds, o);
  dl.start_epoch(0);
  Batch b;
  double best = 1e9;
  for (int rep = 0; rep < 50; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    dl.make_batch(rep % 4, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  // The target is well under 0.1 ms; the bound is loose so a busy or instrumented build does not flake.
  EXPECT_LT(best, 1e-3) << best * 1e3 << " ms";
  RecordProperty("best_batch_us", static_cast<int>(best * 1e6));
}

}  // namespace
}  // namespace qatlab
