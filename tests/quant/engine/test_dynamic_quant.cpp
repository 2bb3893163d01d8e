// test_dynamic_quant.cpp: dynamic quantization: the u8 x s8 -> int32 kernels (every fast path
// bit-identical to the reference over random shapes), weight and input grids, DynamicLinear and
// DynamicLstm against float layers (within a derived error bound) and against a float emulation of
// the same arithmetic, quantize_dynamic on the zoo's models, the model file, and errors.
//
// Shape letters: M rows, K reduction length, N batch (or weight rows for the kernels), T time steps,
// IN / OUT features, H hidden size, G = 4H gate rows, L layers.
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/h5io.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/linear.h"
#include "nn/lstm.h"
#include "nn/sequence_models.h"
#include "nn/zoo.h"
#include "quant/engine/dynamic_gemm.h"
#include "quant/engine/dynamic_quant.h"
#include "quant/engine/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {

void PrintTo(KernelPath path, std::ostream* os) { *os << kernel_path_name(path); }

namespace {

using test::random_codes;
using test::random_input;
using test::TempFile;
using test::same_bits;
using test::throws_with;
using test::uniform_int;

// The fast paths this CPU runs.
std::vector<KernelPath> fast_paths() {
  std::vector<KernelPath> paths{KernelPath::Portable};
  if (dynamic_gemm_path_supported(KernelPath::Avx2)) paths.push_back(KernelPath::Avx2);
  return paths;
}

std::vector<uint8_t> random_u8(Rng& rng, int64_t n) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = static_cast<uint8_t>(rng.below(256));
  return v;
}



// ------------------------------------------------------------------------------------- the kernels

TEST(DynamicGemm, FastPathsAreBitIdenticalToTheReferenceOverRandomShapes) {
  Rng rng(11);
  for (int trial = 0; trial < 60; ++trial) {
    // Odd K (a padded pair), N off the 16-column panels, M off the tile rows, and M = 0.
    const int64_t m = trial == 0 ? 0 : uniform_int(rng, 1, 23), k = uniform_int(rng, 1, 150),
                  n = uniform_int(rng, 1, 50);
    const std::vector<uint8_t> a = random_u8(rng, m * k);
    // The full int8 range, -128 included: the kernels stay exact with it.
    const std::vector<int8_t> w = random_codes(rng, n * k, -128, 127);
    std::vector<int32_t> expected(m * n);
    dynamic_gemm_reference(a.data(), m, k, w.data(), n, expected.data());
    const PackedDynamicWeights packed(w.data(), n, k);
    std::vector<int16_t> scratch(packed.scratch_elems());
    for (KernelPath path : fast_paths()) {
      std::vector<int32_t> serial(m * n, -7), threaded(m * n, -7);
      packed.run_serial(a.data(), m, serial.data(), path, scratch.data());
      packed.run(a.data(), m, threaded.data(), path);
      EXPECT_EQ(serial, expected) << kernel_path_name(path) << " M=" << m << " K=" << k << " N=" << n;
      EXPECT_EQ(threaded, expected) << kernel_path_name(path) << " M=" << m << " K=" << k << " N=" << n;
    }
    std::vector<int32_t> reference(m * n);
    packed.run(a.data(), m, reference.data(), KernelPath::Reference);
    EXPECT_EQ(reference, expected);
  }
}

// `bytes` bytes that end exactly where an inaccessible page begins: reading one byte past them faults.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) {
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    size_ = (bytes + page - 1) / page * page + page;
    void* mem = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<char*>(mem);
    ::mprotect(base_ + size_ - page, page, PROT_NONE);
    data_ = base_ + size_ - page - bytes;
  }
  ~GuardedBuffer() { ::munmap(base_, size_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;
  template <class T>
  T* as() const { return reinterpret_cast<T*>(data_); }

 private:
  char* base_ = nullptr;
  char* data_ = nullptr;
  size_t size_ = 0;
};

TEST(DynamicGemm, KernelsReadNothingPastTheirBuffers) {
  // The activation codes, the caller's scratch and the output each end at a guard page. (A version of
  // the portable kernel that GCC vectorised into loads from rows past the tile failed exactly here.)
  Rng rng(13);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t m = uniform_int(rng, 1, 23), k = uniform_int(rng, 1, 150), n = uniform_int(rng, 1, 50);
    const std::vector<int8_t> w = random_codes(rng, n * k, -127, 127);
    const PackedDynamicWeights packed(w.data(), n, k);
    const GuardedBuffer a(m * k), scratch(packed.scratch_elems() * sizeof(int16_t)), acc(m * n * sizeof(int32_t));
    for (int64_t i = 0; i < m * k; ++i) a.as<uint8_t>()[i] = static_cast<uint8_t>(rng.below(256));
    std::vector<int32_t> expected(m * n);
    dynamic_gemm_reference(a.as<uint8_t>(), m, k, w.data(), n, expected.data());
    for (KernelPath path : fast_paths()) {
      packed.run_serial(a.as<uint8_t>(), m, acc.as<int32_t>(), path, scratch.as<int16_t>());
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), acc.as<int32_t>())) << kernel_path_name(path);
    }
  }
}

TEST(DynamicGemm, LargeProductsSplitOverThreadsStayExact) {
  // 70 x 300 x 100 = 2.1M multiply-adds: above the threading threshold.
  Rng rng(12);
  const int64_t m = 70, k = 300, n = 100;
  const std::vector<uint8_t> a = random_u8(rng, m * k);
  const std::vector<int8_t> w = random_codes(rng, n * k, -127, 127);
  std::vector<int32_t> expected(m * n);
  dynamic_gemm_reference(a.data(), m, k, w.data(), n, expected.data());
  const PackedDynamicWeights packed(w.data(), n, k);
  for (KernelPath path : fast_paths()) {
    std::vector<int32_t> got(m * n);
    packed.run(a.data(), m, got.data(), path);
    EXPECT_EQ(got, expected) << kernel_path_name(path);
  }
}

TEST(DynamicGemm, ExtremeCodesAtTheLargestKFitInt32) {
  // K = 65536 codes of 255 against -128 and 127: sums of -2,139,095,040 and 2,122,383,360.
  const int64_t k = kDynamicGemmMaxK;
  const std::vector<uint8_t> a(k, 255);
  std::vector<int8_t> w(2 * k, -128);
  std::fill(w.begin() + k, w.end(), int8_t{127});
  const PackedDynamicWeights packed(w.data(), 2, k);
  std::vector<int16_t> scratch(packed.scratch_elems());
  for (KernelPath path : {KernelPath::Reference, KernelPath::Portable, best_dynamic_gemm_path()}) {
    std::vector<int32_t> acc(2);
    packed.run_serial(a.data(), 1, acc.data(), path, scratch.data());
    EXPECT_EQ(acc[0], int64_t{255} * -128 * k) << kernel_path_name(path);
    EXPECT_EQ(acc[1], int64_t{255} * 127 * k) << kernel_path_name(path);
  }
  EXPECT_EQ(packed.row_sums()[0], -128 * k);
}

TEST(DynamicGemm, PathsAndShapesAreChecked) {
  EXPECT_TRUE(dynamic_gemm_path_supported(KernelPath::Reference));
  EXPECT_TRUE(dynamic_gemm_path_supported(KernelPath::Portable));
  EXPECT_FALSE(dynamic_gemm_path_supported(KernelPath::Avx512Vnni));
  EXPECT_EQ(dynamic_gemm_path_supported(KernelPath::Avx2), kernel_path_supported(KernelPath::Avx2));
  const std::vector<int8_t> w(6, 1);
  const PackedDynamicWeights packed(w.data(), 2, 3);
  std::vector<int32_t> acc(2);
  const uint8_t a[3] = {1, 2, 3};
  EXPECT_TRUE(throws_with([&] { packed.run(a, 1, acc.data(), KernelPath::Avx512Vnni); }, {"avx512vnni", "avx2"}));
  const std::vector<int8_t> wide(kDynamicGemmMaxK + 1, 0);
  EXPECT_TRUE(throws_with([&] { PackedDynamicWeights(wide.data(), 1, kDynamicGemmMaxK + 1); }, {"65537", "65536"}));
  EXPECT_TRUE(throws_with([&] { PackedDynamicWeights(w.data(), 0, 3); }, {"(0, 3)"}));
}

// ------------------------------------------------------------------------------------------ grids

TEST(DynamicWeight, SymmetricPerRowCodesAndScales) {
  Tensor w = Tensor::from_vector({3, 4}, {0.5f, -1.27f, 0.0f, 1.0f,    // max |w| 1.27: scale 0.01
                                          0.0f, 0.0f, 0.0f, 0.0f,      // all zero: kMinScale, codes 0
                                          2.54f, 0.01f, -0.02f, 0.0f});  // scale 0.02
  const DynamicWeight d = DynamicWeight::quantize(w);
  ASSERT_EQ(d.shape(), (Shape{3, 4}));
  EXPECT_FLOAT_EQ(d.scale[0], 0.01f);
  EXPECT_FLOAT_EQ(d.scale[1], static_cast<float>(kMinScale));
  EXPECT_FLOAT_EQ(d.scale[2], 0.02f);
  const std::vector<int8_t> expected{50, -127, 0, 100, 0, 0, 0, 0, 127, 0, -1, 0};  // 0.01 / 0.02 = 0.5 -> 0
  EXPECT_EQ(d.packed.codes(), expected);
  EXPECT_EQ(d.packed.row_sums(), (std::vector<int32_t>{23, 0, 126}));
  // Every weight lies within half a step of what the int8 layer applies.
  const Tensor back = d.dequantized();
  for (int64_t i = 0; i < w.numel(); ++i)
    EXPECT_LE(std::abs(back.data()[i] - w.data()[i]), 0.5f * d.scale[i / 4] + 1e-7f) << i;
  EXPECT_EQ(d.bytes(), 12 + 3 * 4);
  const DynamicWeight again = DynamicWeight::from_codes(d.packed.codes(), d.shape(), d.scale);
  EXPECT_TRUE(same_bits(again.dequantized(), back));
}

TEST(DynamicWeight, BadInputIsRejected) {
  EXPECT_TRUE(throws_with([] { DynamicWeight::quantize(Tensor::zeros({4})); }, {"(4)", "(rows, cols)"}));
  Tensor nan_w = Tensor::zeros({2, 2});
  nan_w.data()[3] = std::nanf("");
  EXPECT_TRUE(throws_with([&] { DynamicWeight::quantize(nan_w); }, {"row 1", "NaN"}));
  EXPECT_TRUE(throws_with([] { DynamicWeight::from_codes({1, 2, 3}, {2, 2}, {1.0f, 1.0f}); }, {"3 codes", "(2, 2)"}));
  EXPECT_TRUE(throws_with([] { DynamicWeight::from_codes({1, 2, 3, 4}, {2, 2}, {1.0f}); }, {"1 scales", "2 rows"}));
  EXPECT_TRUE(throws_with([] { DynamicWeight::from_codes({1, 2, 3, 4}, {2, 2}, {1.0f, 0.0f}); }, {"row 1", "> 0"}));
}

TEST(DynamicInputGrid, RangeContainsZeroAndBadValuesAreRejected) {
  // Rows of 3 values, 4 apart (the 4th of each row is not read).
  const std::vector<float> x{0.5f, 2.0f, 1.0f, -100.0f, 1.5f, 0.25f, 2.55f, 100.0f};
  ScaleZeroPoint g = dynamic_input_grid(x.data(), 2, 3, 4, "test");
  EXPECT_FLOAT_EQ(g.scale, 2.55f / 255.0f);  // [0, 2.55]: 0 is the lower bound
  EXPECT_EQ(g.zero_point, 0);
  const std::vector<float> neg{-1.0f, 0.0f, 1.55f};
  g = dynamic_input_grid(neg.data(), 1, 3, 3, "test");
  EXPECT_FLOAT_EQ(g.scale, 2.55f / 255.0f);
  EXPECT_EQ(g.zero_point, 100);  // -(-1.0 / 0.01)
  const std::vector<float> zeros(5, 0.0f);
  g = dynamic_input_grid(zeros.data(), 1, 5, 5, "test");
  EXPECT_FLOAT_EQ(g.scale, static_cast<float>(kMinScale));
  EXPECT_EQ(g.zero_point, 0);
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    const std::vector<float> v{1.0f, bad, 2.0f};
    EXPECT_TRUE(throws_with([&] { dynamic_input_grid(v.data(), 1, 3, 3, "DynamicLinear"); },
                            {"DynamicLinear", "NaN or infinite"}));
  }
}

// ---------------------------------------------------------------------------------- DynamicLinear

// The largest |y_dyn - y_float| the quantization can cause in output (n, o), per the formula in
// dynamic_quant.h: with x~ = x + dx, |dx| <= s_x / 2 (rounding, or clamping at most half a step past
// the nudged range) and w~ = w + dw, |dw| <= s_w / 2 (no clipping: the range is max |w|),
//   |x~ . w~ - x . w| <= sum_k |dx| |w_k| + |x_k| |dw| + |dx| |dw|
//                     <= s_x / 2 sum |w_k| + s_w / 2 sum |x_k| + K s_x s_w / 4,
// plus float rounding of both computations (a relative 1e-5 of sum |x_k w_k| + |b| covers it).
double linear_error_bound(const float* x, const float* w, int64_t k, float s_x, float s_w, float bias) {
  double sw = 0, sx = 0, sxw = 0;
  for (int64_t i = 0; i < k; ++i) {
    sw += std::abs(w[i]);
    sx += std::abs(x[i]);
    sxw += std::abs(x[i] * w[i]);
  }
  return 0.5 * s_x * sw + 0.5 * s_w * sx + 0.25 * k * s_x * s_w + 1e-5 * (sxw + std::abs(bias)) + 1e-6;
}

TEST(DynamicLinear, OutputsStayWithinTheQuantizationBoundOfFloat) {
  Rng rng(21);
  const int64_t N = 9, IN = 70, OUT = 37;
  Linear fl(IN, OUT, true, rng);
  DynamicLinear dl(fl);
  Tensor x = random_input({N, IN}, rng);
  x.data()[5] = 4.0f;  // one outlier widens the grid, as real activations do
  NoGradGuard no_grad;
  const Tensor yf = fl.forward(x), yd = dl.forward(x);
  ASSERT_EQ(yd.shape(), (Shape{N, OUT}));
  const ScaleZeroPoint g = dynamic_input_grid(x.data(), N, IN, IN, "test");
  double err = 0, mag = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OUT; ++o) {
      const double d = std::abs(yd.data()[n * OUT + o] - yf.data()[n * OUT + o]);
      EXPECT_LE(d, linear_error_bound(x.data() + n * IN, fl.weight.data() + o * IN, IN, g.scale, dl.weight.scale[o],
                                      fl.bias.data()[o]))
          << "n=" << n << " o=" << o;
      err += d;
      mag += std::abs(yf.data()[n * OUT + o]);
    }
  // On average much better than the worst case: errors of random sign partly cancel.
  EXPECT_LT(err / mag, 0.02) << "mean relative error " << err / mag;
  EXPECT_GT(err, 0.0);  // it is quantized: some outputs differ
}

TEST(DynamicLinear, EqualsTheFloatEmulationOfItsIntegerArithmetic) {
  // y = (x~ w~^T) + b with x~ = s_x (q_x - z_x), w~ = s_w q_w, in double: the layer's result may differ
  // only by the float rounding of its dequantization.
  Rng rng(22);
  const int64_t N = 6, IN = 33, OUT = 20;
  Linear fl(IN, OUT, true, rng);
  DynamicLinear dl(fl);
  const Tensor x = random_input({N, IN}, rng, 3.0f);
  NoGradGuard no_grad;
  const Tensor yd = dl.forward(x);
  const ScaleZeroPoint g = dynamic_input_grid(x.data(), N, IN, IN, "test");
  const Tensor wq = dl.weight.dequantized();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OUT; ++o) {
      double y = fl.bias.data()[o];
      for (int64_t k = 0; k < IN; ++k) {
        const int32_t q = quantize_value(x.data()[n * IN + k], 1.0f / g.scale, g.zero_point, 0, 255);
        y += static_cast<double>(g.scale) * (q - g.zero_point) * wq.data()[o * IN + k];
      }
      EXPECT_NEAR(yd.data()[n * OUT + o], y, 1e-5 * (1 + std::abs(y))) << n << " " << o;
    }
}

TEST(DynamicLinear, EveryKernelPathAndThreadCountGivesTheSameBits) {
  Rng rng(23);
  // 100 x 200 x 60 = 1.2M multiply-adds: threaded by chunks of 32 rows when threads are available.
  Linear fl(200, 60, true, rng);
  DynamicLinear dl(fl);
  const Tensor x = random_input({100, 200}, rng);
  NoGradGuard no_grad;
  dl.set_kernel_path(KernelPath::Reference);
  const Tensor expected = dl.forward(x);
  const int saved_threads = omp_get_max_threads();
  for (KernelPath path : fast_paths())
    for (int threads : {1, 2}) {
      omp_set_num_threads(threads);
      dl.set_kernel_path(path);
      EXPECT_TRUE(same_bits(dl.forward(x), expected)) << kernel_path_name(path) << ", " << threads << " threads";
    }
  omp_set_num_threads(saved_threads);
  EXPECT_TRUE(throws_with([&] { dl.set_kernel_path(KernelPath::Avx512Vnni); }, {"DynamicLinear", "avx512vnni"}));
}

TEST(DynamicLinear, ZeroAndConstantBatchesWork) {
  Rng rng(24);
  Linear fl(16, 5, true, rng);
  DynamicLinear dl(fl);
  NoGradGuard no_grad;
  // All zeros: every code is the zero point, the integer sum cancels exactly, the output is the bias.
  const Tensor y0 = dl.forward(Tensor::zeros({3, 16}));
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t o = 0; o < 5; ++o) EXPECT_EQ(y0.data()[n * 5 + o], fl.bias.data()[o]);
  // A constant batch, positive or negative: the constant is an end of its grid, exactly representable.
  for (float c : {0.7f, -2.5f}) {
    const Tensor x = Tensor::full({4, 16}, c);
    const Tensor yd = dl.forward(x), yf = fl.forward(x);
    const ScaleZeroPoint g = dynamic_input_grid(x.data(), 4, 16, 16, "test");
    for (int64_t o = 0; o < 5; ++o)
      EXPECT_LE(
          std::abs(yd.data()[o] - yf.data()[o]),
          linear_error_bound(x.data(), fl.weight.data() + o * 16, 16, g.scale, dl.weight.scale[o], fl.bias.data()[o]))
          << "c=" << c << " o=" << o;
  }
  // An empty batch gives an empty output.
  EXPECT_EQ(dl.forward(Tensor::zeros({0, 16})).shape(), (Shape{0, 5}));
}

TEST(DynamicLinear, WeightsAreAboutFourTimesSmallerAndBadInputIsRejected) {
  Rng rng(25);
  Linear fl(256, 128, false, rng);
  auto dl = std::make_shared<DynamicLinear>(fl);
  EXPECT_FALSE(dl->bias.defined());
  {
    NoGradGuard no_grad;
    const Tensor y = dl->forward(Tensor::zeros({2, 256}));  // no bias: exactly zero
    for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.data()[i], 0.0f) << i;
  }
  const DynamicWeightBytes b = dynamic_weight_bytes(dl);
  EXPECT_EQ(b.weights, 256 * 128);
  EXPECT_EQ(b.int8_bytes, 256 * 128 + 128 * 4);
  EXPECT_GT(static_cast<double>(b.float_bytes()) / b.int8_bytes, 3.9);
  EXPECT_TRUE(throws_with([&] { dl->forward(Tensor::zeros({2, 255})); }, {"DynamicLinear", "(N, 256)", "(2, 255)"}));
  EXPECT_TRUE(throws_with([&] { dl->forward(Tensor::zeros({2, 256, 1})); }, {"(2, 256, 1)"}));
  Tensor x = Tensor::zeros({2, 256});
  x.data()[7] = INFINITY;
  EXPECT_TRUE(throws_with([&] { NoGradGuard g; dl->forward(x); }, {"NaN or infinite"}));
}

TEST(DynamicLinear, IsInferenceOnly) {
  Rng rng(26);
  Linear fl(4, 3, true, rng);
  DynamicLinear dl(fl);
  Tensor x = random_input({2, 4}, rng);
  x.set_requires_grad(true);
  EXPECT_TRUE(throws_with([&] { dl.forward(x); }, {"DynamicLinear", "inference-only", "NoGradGuard"}));
  {
    NoGradGuard no_grad;
    const Tensor y = dl.forward(x);
    EXPECT_FALSE(y.requires_grad());
  }
  // No gradient asked for: grad mode on, input without one.
  const Tensor y = dl.forward(x.detach());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
}

// ------------------------------------------------------------------------------------ DynamicLstm

double sigmoid(double v) { return 1.0 / (1.0 + std::exp(-v)); }

// Values on the grid of their whole matrix, as the layer quantizes them: s (q - z).
std::vector<double> fake_quant_matrix(const std::vector<float>& v) {
  const ScaleZeroPoint g = dynamic_input_grid(v.data(), 1, static_cast<int64_t>(v.size()), 0, "test");
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = static_cast<double>(g.scale) * (quantize_value(v[i], 1.0f / g.scale, g.zero_point, 0, 255) - g.zero_point);
  return out;
}

// The dynamic LSTM's arithmetic written out in double, step by step: x of all steps on one grid,
// h_{t-1} on its own grid each step, the dequantized int8 weights, the float cell. Returns the last
// layer's output in x's layout.
Tensor emulate_dynamic_lstm(DynamicLstm& m, const Tensor& x, const Tensor& h0, const Tensor& c0) {
  const bool bf = m.options.batch_first;
  const int64_t L = m.options.num_layers, H = m.options.hidden_size, G = 4 * H;
  const int64_t T = bf ? x.size(1) : x.size(0), N = bf ? x.size(0) : x.size(1);
  const auto row = [&](int64_t n, int64_t t) { return bf ? n * T + t : t * N + n; };
  std::vector<float> seq(x.data(), x.data() + x.numel());
  int64_t in = x.size(2);
  for (int64_t l = 0; l < L; ++l) {
    const std::vector<double> xq = fake_quant_matrix(seq);
    const Tensor wih = m.weight_ih[l].dequantized(), whh = m.weight_hh[l].dequantized();  // (G, in), (G, H)
    std::vector<float> h(N * H, 0.0f);
    std::vector<double> c(N * H, 0.0);
    if (h0.defined()) std::copy(h0.data() + l * N * H, h0.data() + (l + 1) * N * H, h.begin());
    if (c0.defined()) std::copy(c0.data() + l * N * H, c0.data() + (l + 1) * N * H, c.begin());
    std::vector<float> out(N * T * H);
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> hq = fake_quant_matrix(h);
      for (int64_t n = 0; n < N; ++n) {
        std::vector<double> a(G);
        for (int64_t g = 0; g < G; ++g) {
          double s = m.options.bias ? static_cast<double>(m.bias_ih[l].data()[g]) + m.bias_hh[l].data()[g] : 0.0;
          for (int64_t k = 0; k < in; ++k) s += xq[row(n, t) * in + k] * wih.data()[g * in + k];
          for (int64_t k = 0; k < H; ++k) s += hq[n * H + k] * whh.data()[g * H + k];
          a[g] = s;
        }
        for (int64_t j = 0; j < H; ++j) {
          const double i = sigmoid(a[j]), f = sigmoid(a[H + j]), gg = std::tanh(a[2 * H + j]),
                       o = sigmoid(a[3 * H + j]);
          c[n * H + j] = f * c[n * H + j] + i * gg;
          out[row(n, t) * H + j] = static_cast<float>(o * std::tanh(c[n * H + j]));
        }
      }
      for (int64_t n = 0; n < N; ++n)
        std::copy(out.begin() + row(n, t) * H, out.begin() + (row(n, t) + 1) * H, h.begin() + n * H);
    }
    seq = out;
    in = H;
  }
  return Tensor::from_vector(bf ? Shape{N, T, H} : Shape{T, N, H}, seq);
}

TEST(DynamicLstm, EqualsTheStepByStepEmulationInBothLayoutsWithInitialState) {
  for (bool bf : {true, false}) {
    Rng rng(31);
    LstmOptions o;
    o.input_size = 7;
    o.hidden_size = 12;
    o.num_layers = 2;
    o.batch_first = bf;
    o.bias = bf;  // the time-major case also runs without biases
    LSTM fl(o, rng);
    DynamicLstm dl(fl);
    const int64_t N = 5, T = 6;
    const Tensor x = random_input(bf ? Shape{N, T, 7} : Shape{T, N, 7}, rng);
    const Tensor h0 = random_input({2, N, 12}, rng, 0.5f), c0 = random_input({2, N, 12}, rng, 0.5f);
    NoGradGuard no_grad;
    const LstmOutput out = dl.forward_seq(x, h0, c0);
    const Tensor expected = emulate_dynamic_lstm(dl, x, h0, c0);
    // Float vs double rounding only; a code flip at a rounding boundary would move an output by about
    // a hundredth, far above this.
    EXPECT_TENSOR_NEAR(out.output, expected, 2e-5) << (bf ? "batch-first" : "time-major");
    // h_n is the last step of each layer's output; for the last layer, that of `output`.
    ASSERT_EQ(out.h_n.shape(), (Shape{2, N, 12}));
    ASSERT_EQ(out.c_n.shape(), (Shape{2, N, 12}));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < 12; ++j) {
        const int64_t last = bf ? (n * T + T - 1) * 12 + j : ((T - 1) * N + n) * 12 + j;
        EXPECT_EQ(out.h_n.data()[(N + n) * 12 + j], out.output.data()[last]);
      }
    // Without an initial state: the emulation's zero h_{t-1} at t = 0 contributes nothing.
    EXPECT_TENSOR_NEAR(dl.forward(x), emulate_dynamic_lstm(dl, x, {}, {}), 2e-5);
  }
}

TEST(DynamicLstm, OneStepStaysWithinTheQuantizationBoundOfFloat) {
  // One step from a zero state: h = o tanh(i g), and the error of each gate pre-activation a is at
  // most delta(a), the linear bound above (on x's grid and the row's weight scale). Since the
  // sigmoid's slope is at most 1/4, tanh's at most 1, and i, g, o, tanh lie in [-1, 1],
  //   |dh| <= |do| + |d(i g)| <= delta(a_o) / 4 + delta(a_i) / 4 + delta(a_g).
  Rng rng(32);
  LstmOptions o;
  o.input_size = 40;
  o.hidden_size = 24;
  LSTM fl(o, rng);
  DynamicLstm dl(fl);
  const int64_t N = 6, IN = 40, H = 24;
  const Tensor x = random_input({N, 1, IN}, rng);
  NoGradGuard no_grad;
  const Tensor yf = fl.forward(x), yd = dl.forward(x);
  const ScaleZeroPoint g = dynamic_input_grid(x.data(), N, IN, IN, "test");
  const float* w = fl.weight_ih[0].data();
  const auto delta = [&](int64_t n, int64_t gate_row) {
    const float b = fl.bias_ih[0].data()[gate_row] + fl.bias_hh[0].data()[gate_row];
    return linear_error_bound(x.data() + n * IN, w + gate_row * IN, IN, g.scale, dl.weight_ih[0].scale[gate_row], b);
  };
  double err = 0, mag = 0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < H; ++j) {
      const double bound = delta(n, 3 * H + j) / 4 + delta(n, j) / 4 + delta(n, 2 * H + j) + 1e-6;
      const double d = std::abs(yd.data()[n * H + j] - yf.data()[n * H + j]);
      EXPECT_LE(d, bound) << "n=" << n << " j=" << j;
      err += d;
      mag += std::abs(yf.data()[n * H + j]);
    }
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err / mag, 0.02);
}

TEST(DynamicLstm, ManyStepsStayCloseToFloat) {
  // Over 10 steps the errors of x and h feed back through the cell; the cell's gates damp them (the
  // forget gate is below 1), so the relative error stays of the order of one step's. Measured: about
  // 0.5 %; 3 % leaves room while still catching a wrong grid or scale (tens of percent).
  Rng rng(33);
  LstmOptions o;
  o.input_size = 20;
  o.hidden_size = 32;
  o.num_layers = 2;
  LSTM fl(o, rng);
  DynamicLstm dl(fl);
  const Tensor x = random_input({8, 10, 20}, rng);
  NoGradGuard no_grad;
  const Tensor yf = fl.forward(x), yd = dl.forward(x);
  double err = 0, mag = 0, worst = 0;
  for (int64_t i = 0; i < yf.numel(); ++i) {
    const double d = std::abs(yd.data()[i] - yf.data()[i]);
    err += d;
    worst = std::max(worst, d);
    mag += std::abs(yf.data()[i]);
  }
  EXPECT_LT(err / mag, 0.03);
  EXPECT_LT(worst, 0.05);
}

TEST(DynamicLstm, ZeroAndConstantInputsWork) {
  Rng rng(34);
  LstmOptions o;
  o.input_size = 5;
  o.hidden_size = 8;
  LSTM fl(o, rng);
  DynamicLstm dl(fl);
  NoGradGuard no_grad;
  // All zeros from a zero state: the input's codes all sit at the zero point and cancel exactly, so the
  // first step's pre-activations are exactly the biases, as in the float layer; the later steps see
  // the quantized h_{t-1} and stay close.
  const Tensor x0 = Tensor::zeros({3, 4, 5});
  const Tensor y0 = dl.forward(x0), yf0 = fl.forward(x0);  // (3, 4, 8)
  for (int64_t n = 0; n < 3; ++n)
    for (int64_t j = 0; j < 8; ++j) EXPECT_EQ(y0.data()[n * 4 * 8 + j], yf0.data()[n * 4 * 8 + j]) << n << " " << j;
  EXPECT_TENSOR_NEAR(y0, yf0, 0.01);
  // A constant input: the constant is an end of its grid, exactly representable.
  const Tensor xc = Tensor::full({3, 4, 5}, -1.5f);
  EXPECT_TENSOR_NEAR(dl.forward(xc), fl.forward(xc), 0.02);
}

TEST(DynamicLstm, ShapeErrorsAreRejected) {
  Rng rng(35);
  LstmOptions o;
  o.input_size = 5;
  o.hidden_size = 8;
  o.num_layers = 2;
  LSTM fl(o, rng);
  DynamicLstm dl(fl);
  NoGradGuard no_grad;
  EXPECT_TRUE(throws_with([&] { dl.forward(Tensor::zeros({3, 4, 6})); }, {"DynamicLSTM", "(N, T, 5)", "(3, 4, 6)"}));
  EXPECT_TRUE(throws_with([&] { dl.forward(Tensor::zeros({3, 5})); }, {"(3, 5)"}));
  EXPECT_TRUE(throws_with([&] { dl.forward(Tensor::zeros({3, 0, 5})); }, {"no time step"}));
  EXPECT_TRUE(throws_with([&] { dl.forward_seq(Tensor::zeros({3, 4, 5}), Tensor::zeros({1, 3, 8})); },
                          {"h0", "(2, 3, 8)", "(1, 3, 8)"}));
  EXPECT_TRUE(throws_with([&] { dl.forward_seq(Tensor::zeros({3, 4, 5}), {}, Tensor::zeros({2, 3, 7})); },
                          {"c0", "(2, 3, 7)"}));
  Tensor x = Tensor::zeros({3, 4, 5});
  x.data()[2] = std::nanf("");
  EXPECT_TRUE(throws_with([&] { dl.forward(x); }, {"DynamicLSTM", "NaN or infinite"}));
}

TEST(DynamicLstm, GradientRequestIsRejected) {
  Rng rng(36);
  LstmOptions o;
  o.input_size = 3;
  o.hidden_size = 4;
  LSTM fl(o, rng);
  DynamicLstm dl(fl);
  Tensor x = Tensor::zeros({2, 3, 3});
  x.set_requires_grad(true);
  EXPECT_TRUE(throws_with([&] { dl.forward(x); }, {"DynamicLSTM", "inference-only"}));
}

// ------------------------------------------------------------------------------ quantize_dynamic

struct ZooCase {
  const char* name;
  std::vector<const char*> dynamic_layers;  // dotted names that must become dynamic
  double min_weight_ratio;                  // float bytes / (int8 + scales) of the quantized layers
};

TEST(QuantizeDynamic, ReplacesLinearAndLstmInZooModelsAndStaysCloseToFloat) {
  const ModelSpec spec{1, 28, 28, 10};
  // Ratios 4 W / (W + 4 R) for W weights in R rows. lstm-rows: 81,152 in 1,034 rows: 3.80.
  const std::vector<ZooCase> cases{
      {"lstm-rows", {"lstm", "head"}, 3.79},
      {"mlp", {"fc1", "fc2"}, 3.97},  // 203,264 weights in 266 rows: 3.979
      {"lenet5", {"classifier.0", "classifier.2", "classifier.4"}, 3.85},
  };
  for (const ZooCase& c : cases) {
    Rng r1(41), r2(41);
    const ModulePtr fm = make_model(c.name, spec, r1);
    fm->eval();
    const ModulePtr dm = quantize_dynamic(make_model(c.name, spec, r2));
    EXPECT_FALSE(dm->training());
    for (const char* layer : c.dynamic_layers) {
      const std::string type = dm->submodule(layer)->type();
      EXPECT_TRUE(type == "DynamicLinear" || type == "DynamicLSTM") << c.name << " " << layer << " is " << type;
    }
    for (const auto& [name, m] : dm->named_modules(dm))
      EXPECT_TRUE(m->type() != "Linear" && m->type() != "LSTM") << c.name << ": " << name << " was not replaced";
    const DynamicWeightBytes b = dynamic_weight_bytes(dm);
    EXPECT_GT(static_cast<double>(b.float_bytes()) / b.int8_bytes, c.min_weight_ratio) << c.name;

    Rng data(42);
    const Tensor x = random_input({8, 1, 28, 28}, data);
    NoGradGuard no_grad;
    const Tensor yf = fm->forward(x), yd = dm->forward(x);
    ASSERT_EQ(yd.shape(), (Shape{8, 10})) << c.name;
    double err = 0, mag = 0;
    for (int64_t i = 0; i < yf.numel(); ++i) {
      err += std::abs(yd.data()[i] - yf.data()[i]);
      mag += std::abs(yf.data()[i]);
    }
    // Two or three dynamic matmuls in a row, each within about 1 % (see the layer tests).
    EXPECT_LT(err / mag, 0.05) << c.name;
    EXPECT_GT(err, 0.0) << c.name;
  }
}

TEST(QuantizeDynamic, KernelPathsAgreeOnAWholeModelAndARootLayerIsReplaced) {
  const ModelSpec spec{1, 28, 28, 10};
  Rng r(43);
  const ModulePtr dm = quantize_dynamic(make_model("lstm-rows", spec, r));
  Rng data(44);
  const Tensor x = random_input({3, 1, 28, 28}, data);
  NoGradGuard no_grad;
  set_dynamic_kernel_path(*dm, KernelPath::Reference);
  const Tensor expected = dm->forward(x);
  for (KernelPath path : fast_paths()) {
    set_dynamic_kernel_path(*dm, path);
    EXPECT_TRUE(same_bits(dm->forward(x), expected)) << kernel_path_name(path);
  }
  // A bare Linear is returned as a new DynamicLinear.
  auto lin = std::make_shared<Linear>(3, 2, true, r);
  EXPECT_EQ(quantize_dynamic(lin)->type(), "DynamicLinear");
  EXPECT_EQ(lin->type(), "Linear");
}

// ---------------------------------------------------------------------------------- the model file

TEST(DynamicModelFile, RoundTripGivesTheSameBits) {
  const ModelSpec spec{1, 28, 28, 10};
  for (const char* name : {"lstm-rows", "lenet5"}) {
    Rng r(51);
    DynamicModelFile file{name, "", spec, "mnist", quantize_dynamic(make_model(name, spec, r)), {}, {}, {}};
    const TempFile tmp(std::string(name) + ".h5");
    save_dynamic_model(tmp.path(), file);
    EXPECT_TRUE(is_dynamic_model_file(tmp.path()));
    const DynamicModelFile back = load_dynamic_model(tmp.path());
    EXPECT_EQ(back.model_name, name);
    EXPECT_EQ(back.dataset, "mnist");
    EXPECT_EQ(back.spec.height, 28);
    Rng data(52);
    const Tensor x = random_input({4, 1, 28, 28}, data);
    NoGradGuard no_grad;
    EXPECT_TRUE(same_bits(back.model->forward(x), file.model->forward(x))) << name;
    // The int8 codes and scales came back, not a re-quantization of something else.
    const auto a = as_dynamic(*file.model->submodule(std::string(name) == "lenet5" ? "classifier.0" : "lstm"));
    const auto b = as_dynamic(*back.model->submodule(std::string(name) == "lenet5" ? "classifier.0" : "lstm"));
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->dynamic_weights()[0].second->packed.codes(), b->dynamic_weights()[0].second->packed.codes());
    EXPECT_EQ(a->dynamic_weights()[0].second->scale, b->dynamic_weights()[0].second->scale);
  }
}

TEST(DynamicModelFile, ForeignNewerAndIncompleteFilesAreOneLineErrors) {
  const TempFile missing("missing.h5");
  EXPECT_FALSE(is_dynamic_model_file(missing.path()));
  EXPECT_THROW(load_dynamic_model(missing.path()), std::runtime_error);

  const TempFile foreign("foreign.h5");
  {
    H5File f = H5File::create(foreign.path());
    f.set_attr("/", "format", "qatlab-checkpoint");
    f.close();
  }
  EXPECT_FALSE(is_dynamic_model_file(foreign.path()));
  const auto message = [](const std::string& path) {
    try {
      load_dynamic_model(path);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(foreign.path()).find("not a qatlab dynamic model"), std::string::npos) << message(foreign.path());

  const TempFile newer("newer.h5");
  {
    H5File f = H5File::create(newer.path());
    f.set_attr("/", "format", kDynamicModelFormat);
    f.set_attr("/", "format_version", int64_t{2});
    f.close();
  }
  EXPECT_NE(message(newer.path()).find("version 2 is newer"), std::string::npos) << message(newer.path());

  // A file whose model lacks a dynamic layer: saved from an mlp whose fc2 stayed float.
  const ModelSpec spec{1, 28, 28, 10};
  Rng r(53);
  const ModulePtr m = make_model("mlp", spec, r);
  m->set_submodule("fc1", quantize_dynamic(m->submodule("fc1")));
  const TempFile partial("partial.h5");
  save_dynamic_model(partial.path(), {"mlp", "", spec, "mnist", m, {}, {}, {}});
  const std::string msg = message(partial.path());
  EXPECT_NE(msg.find("'fc2'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

}  // namespace
}  // namespace qatlab
