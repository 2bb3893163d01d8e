// make_seeds.cpp: writes the small valid files the harnesses start from (apps/scripts/fuzz.sh runs it):
//   OUT/data/                 a synthetic MNIST-format set (four raw IDX files) to train the seed models on
//   OUT/corpus/fuzz_idx/      IDX files: images and labels, raw and gzipped, and 1-D / 4-D arrays
//   OUT/corpus/fuzz_cifar/    CIFAR-10 test batches of 1 and 3 records
//   OUT/corpus/fuzz_ini/      INI files as `qatlab train --config` reads them
//   OUT/corpus/fuzz_image/    PNG and JPEG files, gray and RGB
// The HDF5 seeds (checkpoint, integer and dynamic models) come from the qatlab command itself.
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image_codec.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace qatlab;

namespace {

// A deterministic byte stream (a 32-bit LCG), enough for seed pixels.
struct Bytes {
  uint32_t state;
  uint8_t next() {
    state = state * 1664525u + 1013904223u;
    return static_cast<uint8_t>(state >> 24);
  }
};

// n images (N, 28, 28): class k is a bright square at a place of its own on noise, so a model learns it.
void write_mnist_split(const std::string& dir, const std::string& prefix, int64_t n, Bytes& rng) {
  constexpr int64_t kSide = 28;
  IdxArray images{{n, kSide, kSide}, std::vector<uint8_t>(static_cast<size_t>(n * kSide * kSide))};  // (N, H, W)
  IdxArray labels{{n}, std::vector<uint8_t>(static_cast<size_t>(n))};                                // (N)
  for (int64_t i = 0; i < n; ++i) {
    const int k = static_cast<int>(i % 10);
    labels.data[i] = static_cast<uint8_t>(k);
    uint8_t* img = images.data.data() + i * kSide * kSide;
    for (int64_t p = 0; p < kSide * kSide; ++p) img[p] = rng.next() / 4;
    const int64_t y0 = 3 + 12 * (k / 5), x0 = 2 + 5 * (k % 5);
    for (int64_t y = y0; y < y0 + 6; ++y)
      for (int64_t x = x0; x < x0 + 4; ++x) img[y * kSide + x] = 255;
  }
  write_idx(dir + "/" + prefix + "-images-idx3-ubyte", images, /*gzip=*/false);
  write_idx(dir + "/" + prefix + "-labels-idx1-ubyte", labels, /*gzip=*/false);
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR\n");
    return 2;
  }
  const std::string out = argv[1];
  const std::string data = out + "/data", idx = out + "/corpus/fuzz_idx", cifar = out + "/corpus/fuzz_cifar",
                    ini = out + "/corpus/fuzz_ini", image = out + "/corpus/fuzz_image";
  for (const std::string& d : {data, idx, cifar, ini, image}) fs::create_directories(d);
  Bytes rng{12345};

  write_mnist_split(data, "train", 256, rng);
  write_mnist_split(data, "t10k", 64, rng);

  // IDX: small arrays of every rank, raw and gzipped (the zlib path).
  IdxArray labels{{6}, {0, 1, 2, 3, 4, 9}};
  IdxArray images{{2, 3, 4}, std::vector<uint8_t>(24)};
  IdxArray four{{1, 2, 2, 3}, std::vector<uint8_t>(12)};
  IdxArray square{{2, 2}, {1, 2, 3, 4}};
  for (uint8_t& b : images.data) b = rng.next();
  for (uint8_t& b : four.data) b = rng.next();
  write_idx(idx + "/labels-idx1-ubyte", labels, false);
  write_idx(idx + "/labels-idx1-ubyte.gz", labels, true);
  write_idx(idx + "/images-idx3-ubyte", images, false);
  write_idx(idx + "/images-idx3-ubyte.gz", images, true);
  write_idx(idx + "/array-idx4-ubyte", four, false);
  write_idx(idx + "/array-idx2-ubyte.gz", square, true);

  // CIFAR-10: one record, and three.
  for (const int64_t n : {int64_t{1}, int64_t{3}}) {
    std::vector<uint8_t> pixels(static_cast<size_t>(n * 3 * 32 * 32));  // (N, 3, 32, 32)
    std::vector<int32_t> labs;
    for (uint8_t& b : pixels) b = rng.next();
    for (int64_t i = 0; i < n; ++i) labs.push_back(static_cast<int32_t>((i * 7) % 10));
    write_cifar10_batch(cifar + "/test_batch_" + std::to_string(n) + ".bin", pixels, labs);
  }

  // Images: small PNG and JPEG files, gray and RGB.
  for (const int64_t c : {int64_t{1}, int64_t{3}}) {
    Image img{c, 5, 7, std::vector<uint8_t>(static_cast<size_t>(c * 5 * 7))};
    for (uint8_t& b : img.pixels) b = rng.next();
    write_png(image + "/c" + std::to_string(c) + ".png", img);
    write_jpeg(image + "/c" + std::to_string(c) + ".jpg", img);
  }

  // INI: what settings_ini writes into a checkpoint, and a --config a user would write.
  write_text(ini + "/train.ini",
             "model = mlp\nepochs = 1\nbatch-size = 32\nlr = 0.01\nseed = 7\ndataset = mnist\ntrain-limit = 64\n");
  write_text(ini + "/qat.ini",
             "model = lenet5\nepochs = 2\nwbits = 4\nabits = 8\nwquant = lsq\naquant = pact\n"
             "layer-bits = fc1=8:8\nlayer-bits = conv1=2:4\nfreeze-bn-after = 1\n# a comment\n\n");
  write_text(ini + "/options.ini", "threads = 2\nschedule = cosine\nweight-decay = 1e-4\noptimizer = sgd\nmomentum = 0.9\nnesterov = true\n"
             "label-smoothing = 0.1\nclip-grad-norm = 5\nwarmup-epochs = 1\nper-channel = true\n");
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
