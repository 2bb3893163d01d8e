// test_int8_gemm.cpp: every optimized int8 path (portable, AVX2, AVX-512 VNNI) must give outputs
// bit-identical to the reference kernels, over random conv / fully connected shapes, zero points,
// per-channel multipliers and batches, also with a fused 2x2 max pool and with caller scratch, with
// int8 weights and with 2-, 3- and 4-bit weights kept packed; plus kernel path selection and
// construction errors.
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel, G groups,
// IN / OUT features.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "quant/quant_test_util.h"

#include "core/rng.h"
#include "quant/engine/int8_gemm.h"
#include "quant/engine/int8_kernels.h"
#include "quant/engine/packed_codes.h"
#include "quant/engine/requantize.h"
#include "tests/core/gradcheck.h"

namespace qatlab {

// So that a failing parameterized case names its path.
void PrintTo(KernelPath path, std::ostream* os) { *os << kernel_path_name(path); }

namespace {

using test::throws_with;

using test::random_codes;
using test::uniform_int;

// Per-channel output stages of every kind: realistic small multipliers, multipliers > 1 (positive
// shifts, saturating left shifts), raw random pairs over the whole allowed range, and zero.
void random_output_stage(Rng& rng, int64_t channels, int64_t k, std::vector<int32_t>* mult, std::vector<int>* shift) {
  mult->resize(channels);
  shift->resize(channels);
  const double typical = 1.0 / (std::sqrt(static_cast<double>(k)) * 127.0 * 64.0);  // ~ 1 / |acc|
  for (int64_t c = 0; c < channels; ++c) {
    switch (rng.below(6)) {
      case 0:
        quantize_multiplier(std::exp2(rng.uniform(0.0f, 6.0f)), &(*mult)[c], &(*shift)[c]);  // >= 1
        break;
      case 1:
        (*mult)[c] = static_cast<int32_t>(rng.next_u64() >> 33);  // [0, 2^31)
        (*shift)[c] = uniform_int(rng, -31, 30);
        break;
      case 2:
        (*mult)[c] = 0;
        (*shift)[c] = 0;
        break;
      default:
        quantize_multiplier(typical * std::exp2(rng.uniform(-3.0f, 4.0f)), &(*mult)[c], &(*shift)[c]);
    }
  }
}

void random_activation_range(Rng& rng, int32_t output_offset, int32_t* lo, int32_t* hi) {
  switch (rng.below(4)) {
    case 0:  // fused ReLU: the output zero point is the floor
      *lo = output_offset, *hi = 127;
      break;
    case 1:
      *lo = uniform_int(rng, -128, 0), *hi = uniform_int(rng, *lo, 127);
      break;
    default:
      *lo = -128, *hi = 127;
  }
}

std::vector<int32_t> random_bias(Rng& rng, int64_t n) {
  std::vector<int32_t> b(n);
  const int32_t range = rng.below(4) == 0 ? (1 << 30) : (1 << 16);
  for (auto& x : b) x = uniform_int(rng, -range, range);
  return b;
}

// First index where two outputs differ, or -1.
int64_t first_difference(const std::vector<int8_t>& a, const std::vector<int8_t>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  return a.size() == b.size() ? -1 : static_cast<int64_t>(std::min(a.size(), b.size()));
}

struct ConvCase {
  ConvInt8Params p;
  Shape in, f;  // (N, C, H, W), (OC, C/G, KH, KW)
  std::vector<int8_t> x, w;
  std::vector<int32_t> bias;
  bool has_bias = true;
  std::string describe() const {
    std::ostringstream s;
    s << "input " << shape_str(in) << " filter " << shape_str(f) << " stride " << p.stride_h << "x" << p.stride_w
      << " pad " << p.pad_h << "x" << p.pad_w << " groups " << p.groups << " input_offset " << p.input_offset
      << " output_offset " << p.output_offset << " act [" << p.quantized_activation_min << ", "
      << p.quantized_activation_max << "] bias " << has_bias;
    return s.str();
  }
};

ConvCase random_conv_case(Rng& rng) {
  ConvCase c;
  const int64_t kind = rng.below(5);
  const int64_t groups = kind == 0 ? 2 : kind == 1 ? 3 : 1;
  int64_t cg = uniform_int(rng, 1, 7), ocg = uniform_int(rng, 1, 7);
  c.p.groups = groups;
  if (kind == 2) {  // depthwise, sometimes with a channel multiplier
    c.p.groups = uniform_int(rng, 1, 7);
    cg = 1;
    ocg = uniform_int(rng, 1, 2);
  }
  const int64_t kh = uniform_int(rng, 1, 7), kw = uniform_int(rng, 1, 7);
  c.p.stride_h = uniform_int(rng, 1, 2), c.p.stride_w = uniform_int(rng, 1, 2);
  c.p.pad_h = uniform_int(rng, 0, 2), c.p.pad_w = uniform_int(rng, 0, 2);
  const int64_t h = uniform_int(rng, std::max<int64_t>(1, kh - 2 * c.p.pad_h), kh + 9);
  const int64_t w = uniform_int(rng, std::max<int64_t>(1, kw - 2 * c.p.pad_w), kw + 9);
  const int64_t n = uniform_int(rng, 1, 5);
  c.in = {n, cg * c.p.groups, h, w};
  c.f = {ocg * c.p.groups, cg, kh, kw};
  const int32_t zp_in = uniform_int(rng, -128, 127);
  c.p.input_offset = -zp_in;
  c.p.output_offset = uniform_int(rng, -128, 127);
  random_activation_range(rng, c.p.output_offset, &c.p.quantized_activation_min, &c.p.quantized_activation_max);
  random_output_stage(rng, c.f[0], cg * kh * kw, &c.p.output_multiplier, &c.p.output_shift);
  c.x = random_codes(rng, shape_numel(c.in), -128, 127);
  c.w = random_codes(rng, shape_numel(c.f), -127, 127);
  c.has_bias = rng.below(5) != 0;
  c.bias = random_bias(rng, c.f[0]);
  return c;
}

// The case made a stride-1 conv with one group, few channels and rows up to 40 wide: the shapes
// where the AVX2 path may convolve directly (PackedConvInt8::direct_conv).
void make_direct_friendly(Rng& rng, ConvCase& c) {
  c.p.stride_h = c.p.stride_w = 1, c.p.groups = 1;
  c.in[1] = uniform_int(rng, 1, 4), c.in[3] = uniform_int(rng, std::max<int64_t>(1, c.f[3] - 2 * c.p.pad_w), 40);
  c.f = {uniform_int(rng, 1, 13), c.in[1], c.f[2], c.f[3]};
  c.x = random_codes(rng, shape_numel(c.in), -128, 127);
  c.w = random_codes(rng, shape_numel(c.f), -127, 127);
  c.bias = random_bias(rng, c.f[0]);
  random_output_stage(rng, c.f[0], c.f[1] * c.f[2] * c.f[3], &c.p.output_multiplier, &c.p.output_shift);
}

bool is_direct(const ConvCase& c) {
  return PackedConvInt8(c.p, c.w.data(), c.f, c.bias.data(), {c.in[1], c.in[2], c.in[3]}).direct_conv();
}

std::vector<int8_t> conv_reference(const ConvCase& c) {
  std::vector<int8_t> y(shape_numel(conv2d_int8_output_shape(c.p, c.in, c.f)));
  conv2d_int8_reference(c.p, c.x.data(), c.in, c.w.data(), c.f, c.has_bias ? c.bias.data() : nullptr, y.data());
  return y;
}

std::vector<int8_t> conv_packed(const ConvCase& c, KernelPath path) {
  const PackedConvInt8 packed(c.p, c.w.data(), c.f, c.has_bias ? c.bias.data() : nullptr, {c.in[1], c.in[2], c.in[3]});
  std::vector<int8_t> y(shape_numel(packed.output_shape(c.in[0])), 0x55);
  packed.run(c.x.data(), c.in[0], y.data(), path);
  return y;
}

// The reference conv, then the reference 2x2 stride-2 max pool.
std::vector<int8_t> conv_pool_reference(const ConvCase& c) {
  const Shape conv_shape = conv2d_int8_output_shape(c.p, c.in, c.f);
  const std::vector<int8_t> conv = conv_reference(c);
  std::vector<int8_t> y(shape_numel(pool2d_int8_output_shape(conv_shape, 2, 2, 0)));
  max_pool2d_int8_reference(conv.data(), conv_shape, 2, 2, 0, y.data());
  return y;
}

std::vector<int8_t> conv_pool_packed(const ConvCase& c, KernelPath path) {
  const PackedConvInt8 packed(c.p, c.w.data(), c.f, c.has_bias ? c.bias.data() : nullptr, {c.in[1], c.in[2], c.in[3]},
                              /*fuse_max_pool=*/true);
  std::vector<int8_t> y(shape_numel(packed.output_shape(c.in[0])), 0x55);
  packed.run(c.x.data(), c.in[0], y.data(), path);
  return y;
}

struct FcCase {
  FullyConnectedInt8Params p;
  int64_t n = 1, in = 1, out = 1;
  std::vector<int8_t> x, w;
  std::vector<int32_t> bias;
  bool has_bias = true;
  std::string describe() const {
    std::ostringstream s;
    s << "N " << n << " IN " << in << " OUT " << out << " input_offset " << p.input_offset << " output_offset "
      << p.output_offset << " act [" << p.quantized_activation_min << ", " << p.quantized_activation_max << "] bias "
      << has_bias;
    return s.str();
  }
};

FcCase random_fc_case(Rng& rng, int64_t n, int64_t in, int64_t out) {
  FcCase c;
  c.n = n, c.in = in, c.out = out;
  c.p.input_offset = -uniform_int(rng, -128, 127);
  c.p.output_offset = uniform_int(rng, -128, 127);
  random_activation_range(rng, c.p.output_offset, &c.p.quantized_activation_min, &c.p.quantized_activation_max);
  random_output_stage(rng, out, in, &c.p.output_multiplier, &c.p.output_shift);
  c.x = random_codes(rng, n * in, -128, 127);
  c.w = random_codes(rng, out * in, -127, 127);
  c.has_bias = rng.below(5) != 0;
  c.bias = random_bias(rng, out);
  return c;
}

std::vector<int8_t> fc_reference(const FcCase& c) {
  std::vector<int8_t> y(c.n * c.out);
  fully_connected_int8_reference(c.p, c.x.data(), {c.n, c.in}, c.w.data(), {c.out, c.in},
                                 c.has_bias ? c.bias.data() : nullptr, y.data());
  return y;
}

std::vector<int8_t> fc_packed(const FcCase& c, KernelPath path) {
  const PackedFullyConnectedInt8 packed(c.p, c.w.data(), {c.out, c.in}, c.has_bias ? c.bias.data() : nullptr);
  std::vector<int8_t> y(c.n * c.out, 0x55);
  packed.run(c.x.data(), c.n, y.data(), path);
  return y;
}

// ------------------------------------------------------------------------------------ path selection

TEST(KernelPathSelection, NamesParseAndBestIsSupported) {
  for (KernelPath p : {KernelPath::Reference, KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni}) {
    if (kernel_path_supported(p)) {
      EXPECT_EQ(parse_kernel_path(kernel_path_name(p)), p);
    } else {
      EXPECT_TRUE(throws_with([&] { parse_kernel_path(kernel_path_name(p)); },
                              {kernel_path_name(p), "not supported by this CPU"}));
    }
  }
  EXPECT_TRUE(kernel_path_supported(KernelPath::Reference));
  EXPECT_TRUE(kernel_path_supported(KernelPath::Portable));
  EXPECT_TRUE(kernel_path_supported(best_kernel_path()));
  EXPECT_EQ(parse_kernel_path("auto"), best_kernel_path());
  EXPECT_NE(best_kernel_path(), KernelPath::Reference);
  if (kernel_path_supported(KernelPath::Avx2)) {
    EXPECT_NE(best_kernel_path(), KernelPath::Portable);
  }
  EXPECT_TRUE(throws_with([] { parse_kernel_path("sse9"); }, {"unknown kernel path 'sse9'", "avx2"}));
}

TEST(KernelPathSelection, RunOnAnUnsupportedPathThrows) {
  if (kernel_path_supported(KernelPath::Avx512Vnni)) GTEST_SKIP() << "this CPU supports every path";
  FullyConnectedInt8Params p;
  p.output_multiplier = {1 << 30};
  p.output_shift = {0};
  const std::vector<int8_t> w = {1, 2};
  const PackedFullyConnectedInt8 fc(p, w.data(), {1, 2}, nullptr);
  std::vector<int8_t> x = {3, 4}, y(1);
  EXPECT_TRUE(throws_with([&] { fc.run(x.data(), 1, y.data(), KernelPath::Avx512Vnni); },
                          {"avx512vnni", "not supported"}));
}

// ------------------------------------------------------------------------- bit-exactness per path

class OptimizedPath : public ::testing::TestWithParam<KernelPath> {
 protected:
  void SetUp() override {
    if (!kernel_path_supported(GetParam()))
      GTEST_SKIP() << "this CPU cannot run the " << kernel_path_name(GetParam()) << " kernels";
  }
};

TEST_P(OptimizedPath, ConvMatchesReferenceOnRandomShapes) {
  Rng rng(100 + static_cast<int>(GetParam()));
  int direct = 0;  // cases the AVX2 path convolves directly
  for (int i = 0; i < 1000; ++i) {
    ConvCase c = random_conv_case(rng);
    if (i % 4 == 0) make_direct_friendly(rng, c);
    direct += is_direct(c);
    const std::vector<int8_t> expect = conv_reference(c);
    const std::vector<int8_t> got = conv_packed(c, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ": " << c.describe() << "\n  output " << at << ": got "
                      << int(got[at]) << ", reference " << int(expect[at]);
  }
  EXPECT_GT(direct, 100);
}

// The shapes of CIFAR ResNets and VGG-style nets, where the VNNI path convolves tap-major from channel-
// quad planes (quant/engine/kernels/gemm_kernel.h): 3x3 and 1x1 filters, stride 1 and 2, wide and narrow
// rows, many channels (several k-quads per tap) and the RGB stem (C = 3, padded to 4).
TEST_P(OptimizedPath, ConvMatchesReferenceOnResNetShapes) {
  Rng rng(120 + static_cast<int>(GetParam()));
  const int64_t channels[] = {3, 4, 16, 32, 64};
  for (int i = 0; i < 60; ++i) {
    ConvCase c = random_conv_case(rng);
    const int64_t cin = channels[rng.below(5)], size = uniform_int(rng, 5, 33), k = rng.below(3) == 0 ? 1 : 3;
    c.p.groups = 1;
    c.p.stride_h = c.p.stride_w = uniform_int(rng, 1, 2);
    c.p.pad_h = c.p.pad_w = k / 2;
    c.in = {uniform_int(rng, 1, 2), cin, size, uniform_int(rng, 5, 33)};
    c.f = {uniform_int(rng, 1, 40), cin, k, k};
    c.x = random_codes(rng, shape_numel(c.in), -128, 127);
    c.w = random_codes(rng, shape_numel(c.f), -127, 127);
    c.bias = random_bias(rng, c.f[0]);
    random_output_stage(rng, c.f[0], cin * k * k, &c.p.output_multiplier, &c.p.output_shift);
    const std::vector<int8_t> expect = conv_reference(c);
    const std::vector<int8_t> got = conv_packed(c, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ": " << c.describe() << "\n  output " << at << ": got "
                      << int(got[at]) << ", reference " << int(expect[at]);
  }
}

// The tap-major direct convolution on the shapes that stress its layout: any padding (0 shares no
// column between rows; 1 and 2 share the right padding with the next row's left), filters from 1x1
// to 5x5, and rows so short (W down to 1) that one chunk of 16 positions spans many output rows.
TEST_P(OptimizedPath, ConvMatchesReferenceOnAnyPaddingAndFilterSize) {
  Rng rng(170 + static_cast<int>(GetParam()));
  const int64_t channels[] = {3, 4, 8, 16};
  for (int i = 0; i < 300; ++i) {
    ConvCase c = random_conv_case(rng);
    const int64_t cin = channels[rng.below(4)], kh = uniform_int(rng, 1, 5), kw = uniform_int(rng, 1, 5);
    c.p.groups = 1;
    c.p.stride_h = c.p.stride_w = uniform_int(rng, 1, 2);
    c.p.pad_h = uniform_int(rng, 0, 2), c.p.pad_w = uniform_int(rng, 0, 2);
    const int64_t h = uniform_int(rng, std::max<int64_t>(1, kh - 2 * c.p.pad_h), 20);
    const int64_t w = uniform_int(rng, std::max<int64_t>(1, kw - 2 * c.p.pad_w), 20);
    c.in = {uniform_int(rng, 1, 2), cin, h, w};
    c.f = {uniform_int(rng, 1, 20), cin, kh, kw};
    c.x = random_codes(rng, shape_numel(c.in), -128, 127);
    c.w = random_codes(rng, shape_numel(c.f), -127, 127);
    c.bias = random_bias(rng, c.f[0]);
    random_output_stage(rng, c.f[0], cin * kh * kw, &c.p.output_multiplier, &c.p.output_shift);
    const std::vector<int8_t> expect = conv_reference(c);
    const std::vector<int8_t> got = conv_packed(c, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ": " << c.describe() << "\n  output " << at << ": got "
                      << int(got[at]) << ", reference " << int(expect[at]);
  }
}

// The fused max pool gives what the conv then the pool give, on every shape a 2x2 window fits
// (odd output sizes drop their last row or column, as the pool does).
TEST_P(OptimizedPath, ConvWithFusedMaxPoolMatchesConvThenPool) {
  Rng rng(150 + static_cast<int>(GetParam()));
  int tested = 0, direct = 0;
  for (int i = 0; i < 1500; ++i) {
    ConvCase c = random_conv_case(rng);
    if (i % 4 == 0) make_direct_friendly(rng, c);
    direct += is_direct(c);
    const Shape conv_shape = conv2d_int8_output_shape(c.p, c.in, c.f);
    if (conv_shape[2] < 2 || conv_shape[3] < 2) continue;
    ++tested;
    const std::vector<int8_t> expect = conv_pool_reference(c);
    const std::vector<int8_t> got = conv_pool_packed(c, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ": " << c.describe() << "\n  output " << at << ": got " << int(got[at])
                      << ", reference " << int(expect[at]);
  }
  EXPECT_GT(tested, 500);
  EXPECT_GT(direct, 100);
}

// run_serial works in whatever scratch it is given (here full of junk) and gives what run() gives.
TEST_P(OptimizedPath, RunSerialWithDirtyScratchMatchesRun) {
  Rng rng(160 + static_cast<int>(GetParam()));
  for (int i = 0; i < 100; ++i) {
    const ConvCase c = random_conv_case(rng);
    const Shape conv_shape = conv2d_int8_output_shape(c.p, c.in, c.f);
    for (bool pool : {false, true}) {
      if (pool && (conv_shape[2] < 2 || conv_shape[3] < 2)) continue;
      const PackedConvInt8 packed(c.p, c.w.data(), c.f, c.has_bias ? c.bias.data() : nullptr,
                                  {c.in[1], c.in[2], c.in[3]}, pool);
      std::vector<int8_t> expect(shape_numel(packed.output_shape(c.in[0]))), got(expect.size());
      packed.run(c.x.data(), c.in[0], expect.data(), GetParam());
      std::vector<int8_t> junk = random_codes(rng, packed.scratch_bytes() + 3, -128, 127);
      // An odd start: run_serial aligns for itself.
      packed.run_serial(c.x.data(), c.in[0], got.data(), GetParam(), reinterpret_cast<uint8_t*>(junk.data()) + 3);
      ASSERT_EQ(first_difference(got, expect), -1) << "case " << i << " pool " << pool << ": " << c.describe();
    }
  }
  for (int i = 0; i < 100; ++i) {
    const FcCase c = random_fc_case(rng, uniform_int(rng, 1, 19), uniform_int(rng, 1, 70), uniform_int(rng, 1, 40));
    const PackedFullyConnectedInt8 packed(c.p, c.w.data(), {c.out, c.in}, c.has_bias ? c.bias.data() : nullptr);
    std::vector<int8_t> got(c.n * c.out);
    std::vector<int8_t> junk = random_codes(rng, packed.scratch_bytes() + 1, -128, 127);
    packed.run_serial(c.x.data(), c.n, got.data(), GetParam(), reinterpret_cast<uint8_t*>(junk.data()) + 1);
    ASSERT_EQ(first_difference(got, fc_reference(c)), -1) << "case " << i << ": " << c.describe();
  }
}

TEST_P(OptimizedPath, FullyConnectedMatchesReferenceOnRandomShapes) {
  Rng rng(200 + static_cast<int>(GetParam()));
  for (int i = 0; i < 1000; ++i) {
    // Sizes around the 4 / 8 / 16 / 32 blocks and the row tiles (4, 6, 8).
    const int64_t n = uniform_int(rng, 1, 19), in = uniform_int(rng, 1, 70), out = uniform_int(rng, 1, 40);
    const FcCase c = random_fc_case(rng, n, in, out);
    const std::vector<int8_t> expect = fc_reference(c);
    const std::vector<int8_t> got = fc_packed(c, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ": " << c.describe() << "\n  output " << at << ": got "
                      << int(got[at]) << ", reference " << int(expect[at]);
  }
}

// The LeNet-5 shapes at a batch large enough to be spread over threads.
TEST_P(OptimizedPath, LeNetShapesWithThreadsMatchReference) {
  Rng rng(300);
  struct Layer {
    Shape in, f;
    int64_t pad;
  };
  for (const Layer& l : {Layer{{40, 1, 28, 28}, {6, 1, 5, 5}, 2}, Layer{{40, 6, 14, 14}, {16, 6, 5, 5}, 0}}) {
    ConvCase c = random_conv_case(rng);
    c.in = l.in, c.f = l.f;
    c.p.groups = 1, c.p.stride_h = c.p.stride_w = 1, c.p.pad_h = c.p.pad_w = l.pad;
    random_output_stage(rng, c.f[0], c.f[1] * 25, &c.p.output_multiplier, &c.p.output_shift);
    c.x = random_codes(rng, shape_numel(c.in), -128, 127);
    c.w = random_codes(rng, shape_numel(c.f), -127, 127);
    c.bias = random_bias(rng, c.f[0]);
    EXPECT_EQ(first_difference(conv_packed(c, GetParam()), conv_reference(c)), -1) << c.describe();
    EXPECT_EQ(first_difference(conv_pool_packed(c, GetParam()), conv_pool_reference(c)), -1) << c.describe();
  }
  for (auto [in, out] : {std::pair<int64_t, int64_t>{400, 120}, {120, 84}, {84, 10}}) {
    const FcCase c = random_fc_case(rng, 67, in, out);
    EXPECT_EQ(first_difference(fc_packed(c, GetParam()), fc_reference(c)), -1) << c.describe();
  }
}

// Extreme codes and the largest reduction: sums near the int32 limit, and past it with the bias
// (both the reference and the kernels then wrap the accumulator modulo 2^32).
TEST_P(OptimizedPath, ExtremeValuesAndAccumulatorWrapMatchReference) {
  Rng rng(400);
  for (int32_t zp : {-128, 127}) {
    for (int8_t code : {int8_t{-128}, int8_t{127}}) {
      FcCase c = random_fc_case(rng, 3, 65536, 3);
      c.p.input_offset = -zp;
      std::fill(c.x.begin(), c.x.end(), code);
      std::fill(c.w.begin(), c.w.end(), int8_t{127});
      std::fill(c.w.begin() + 65536, c.w.begin() + 2 * 65536, int8_t{-127});
      c.bias = {0, 1 << 30, -(1 << 30)};
      c.has_bias = true;
      for (int o = 0; o < 3; ++o) quantize_multiplier(std::ldexp(1.0, -25), &c.p.output_multiplier[o], &c.p.output_shift[o]);
      c.p.quantized_activation_min = -128, c.p.quantized_activation_max = 127;
      EXPECT_EQ(first_difference(fc_packed(c, GetParam()), fc_reference(c)), -1) << c.describe();
    }
  }
  // A conv of all-extreme codes with padding from the other extreme.
  ConvCase c = random_conv_case(rng);
  c.in = {2, 8, 9, 9}, c.f = {5, 8, 3, 3};
  c.p.groups = 1, c.p.stride_h = c.p.stride_w = 1, c.p.pad_h = c.p.pad_w = 2;
  c.p.input_offset = 128;  // zero point -128: the padding is code -128
  c.x.assign(shape_numel(c.in), 127);
  c.w.assign(shape_numel(c.f), -127);
  random_output_stage(rng, 5, 72, &c.p.output_multiplier, &c.p.output_shift);
  c.bias = random_bias(rng, 5);
  EXPECT_EQ(first_difference(conv_packed(c, GetParam()), conv_reference(c)), -1) << c.describe();
  EXPECT_EQ(first_difference(conv_pool_packed(c, GetParam()), conv_pool_reference(c)), -1) << c.describe();
  // Accumulators that wrap around: the fused pool must compare the wrapped values, which the
  // reference requantizes. Sums of both signs with biases at the edges of int32 wrap in some
  // positions of a window and not in others (a multiplier of 2^-24 keeps them apart as codes).
  c.x = random_codes(rng, shape_numel(c.in), -128, 127);
  c.w = random_codes(rng, shape_numel(c.f), -127, 127);
  c.bias = {INT32_MAX - 1000, INT32_MIN + 1000, INT32_MAX, INT32_MIN, 5};
  for (int o = 0; o < 5; ++o) quantize_multiplier(std::ldexp(1.0, -24), &c.p.output_multiplier[o], &c.p.output_shift[o]);
  c.p.quantized_activation_min = -128, c.p.quantized_activation_max = 127;
  EXPECT_EQ(first_difference(conv_pool_packed(c, GetParam()), conv_pool_reference(c)), -1) << c.describe();
}

TEST_P(OptimizedPath, BatchRowsAreIndependentOfEachOther) {
  Rng rng(500);
  ConvCase c = random_conv_case(rng);
  c.in[0] = 5;
  c.x = random_codes(rng, shape_numel(c.in), -128, 127);
  const PackedConvInt8 packed(c.p, c.w.data(), c.f, c.bias.data(), {c.in[1], c.in[2], c.in[3]});
  const int64_t in_size = shape_numel(c.in) / 5, out_size = shape_numel(packed.output_shape(1));
  std::vector<int8_t> all(5 * out_size), one(out_size);
  packed.run(c.x.data(), 5, all.data(), GetParam());
  for (int64_t n = 0; n < 5; ++n) {
    packed.run(c.x.data() + n * in_size, 1, one.data(), GetParam());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), all.begin() + n * out_size)) << "image " << n;
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, OptimizedPath,
                         ::testing::Values(KernelPath::Portable, KernelPath::Avx2, KernelPath::Avx512Vnni),
                         [](const ::testing::TestParamInfo<KernelPath>& info) {
                           return std::string(kernel_path_name(info.param));
                         });

// --------------------------------------------------------------------------- packed low-bit weights

// Replaces w by random codes of a `bits`-bit symmetric narrow grid ([-1, 1], [-3, 3], [-7, 7]) or, with
// full_range, the whole two's-complement range of its storage (the sign-extension edge cases -2 and
// -8); returns them packed and their storage bits in *storage.
std::vector<uint8_t> make_low_bit(Rng& rng, std::vector<int8_t>& w, int bits, bool full_range, int* storage) {
  const int32_t q = (1 << (bits - 1)) - 1;
  *storage = storage_bits(-q, q);
  const int32_t lo = full_range ? -(1 << (*storage - 1)) : -q, hi = full_range ? (1 << (*storage - 1)) - 1 : q;
  w = random_codes(rng, static_cast<int64_t>(w.size()), lo, hi);
  return pack_codes(w.data(), static_cast<int64_t>(w.size()), *storage);
}

std::vector<int8_t> conv_low_bit(const ConvCase& c, const std::vector<uint8_t>& packed, int storage, bool pool,
                                 KernelPath path) {
  const PackedConvInt8 kernel(c.p, packed.data(), storage, c.f, c.has_bias ? c.bias.data() : nullptr,
                              {c.in[1], c.in[2], c.in[3]}, pool);
  std::vector<int8_t> y(shape_numel(kernel.output_shape(c.in[0])), 0x55);
  kernel.run(c.x.data(), c.in[0], y.data(), path);
  return y;
}

std::vector<int8_t> fc_low_bit(const FcCase& c, const std::vector<uint8_t>& packed, int storage, KernelPath path) {
  const PackedFullyConnectedInt8 kernel(c.p, packed.data(), storage, {c.out, c.in},
                                        c.has_bias ? c.bias.data() : nullptr);
  std::vector<int8_t> y(c.n * c.out, 0x55);
  kernel.run(c.x.data(), c.n, y.data(), path);
  return y;
}

// Convolutions with 2-, 3- and 4-bit filters kept packed: every path equals the int8 reference on the
// unpacked codes, with and without the fused max pool, through the GEMM and the direct kernel.
TEST_P(OptimizedPath, LowBitConvMatchesReferenceOnRandomShapes) {
  Rng rng(700 + static_cast<int>(GetParam()));
  int direct = 0, pooled = 0;
  for (int i = 0; i < 800; ++i) {
    ConvCase c = random_conv_case(rng);
    if (i % 3 == 0) make_direct_friendly(rng, c);
    const int bits = 2 + i % 3;
    int storage = 0;
    const std::vector<uint8_t> packed = make_low_bit(rng, c.w, bits, i % 7 == 0, &storage);
    direct += is_direct(c);
    const Shape conv_shape = conv2d_int8_output_shape(c.p, c.in, c.f);
    const bool pool = i % 2 == 1 && conv_shape[2] >= 2 && conv_shape[3] >= 2;
    pooled += pool;
    const std::vector<int8_t> expect = pool ? conv_pool_reference(c) : conv_reference(c);
    const std::vector<int8_t> got = conv_low_bit(c, packed, storage, pool, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ", " << bits << "-bit filter, pool " << pool << ": " << c.describe()
                      << "\n  output " << at << ": got " << int(got[at]) << ", reference " << int(expect[at]);
  }
  EXPECT_GT(direct, 100);
  EXPECT_GT(pooled, 200);
}

// Fully connected layers with 2-, 3- and 4-bit weights run from 4-bit panels: every path equals the
// int8 reference, over sizes around the panels (16), half panels (8), k-quads (4) and row tiles.
TEST_P(OptimizedPath, LowBitFullyConnectedMatchesReferenceOnRandomShapes) {
  Rng rng(800 + static_cast<int>(GetParam()));
  for (int i = 0; i < 1000; ++i) {
    const int64_t n = uniform_int(rng, 1, 19), in = uniform_int(rng, 1, 70), out = uniform_int(rng, 1, 40);
    FcCase c = random_fc_case(rng, n, in, out);
    const int bits = 2 + i % 3;
    int storage = 0;
    const std::vector<uint8_t> packed = make_low_bit(rng, c.w, bits, i % 7 == 0, &storage);
    const std::vector<int8_t> expect = fc_reference(c);
    const std::vector<int8_t> got = fc_low_bit(c, packed, storage, GetParam());
    const int64_t at = first_difference(got, expect);
    ASSERT_EQ(at, -1) << "case " << i << ", " << bits << "-bit weights: " << c.describe() << "\n  output " << at
                      << ": got " << int(got[at]) << ", reference " << int(expect[at]);
  }
}

// run_serial with junk scratch (the unpacked filter and the unfolded panels live there) gives what
// the reference gives.
TEST_P(OptimizedPath, LowBitRunSerialWithDirtyScratchMatchesReference) {
  Rng rng(900 + static_cast<int>(GetParam()));
  for (int i = 0; i < 100; ++i) {
    ConvCase c = random_conv_case(rng);
    if (i % 3 == 0) make_direct_friendly(rng, c);
    int storage = 0;
    const std::vector<uint8_t> packed = make_low_bit(rng, c.w, 2 + i % 3, false, &storage);
    const PackedConvInt8 kernel(c.p, packed.data(), storage, c.f, c.has_bias ? c.bias.data() : nullptr,
                                {c.in[1], c.in[2], c.in[3]});
    std::vector<int8_t> got(shape_numel(kernel.output_shape(c.in[0])));
    std::vector<int8_t> junk = random_codes(rng, kernel.scratch_bytes() + 5, -128, 127);
    kernel.run_serial(c.x.data(), c.in[0], got.data(), GetParam(), reinterpret_cast<uint8_t*>(junk.data()) + 5);
    ASSERT_EQ(first_difference(got, conv_reference(c)), -1) << "case " << i << ": " << c.describe();
  }
  for (int i = 0; i < 100; ++i) {
    FcCase c = random_fc_case(rng, uniform_int(rng, 1, 19), uniform_int(rng, 1, 70), uniform_int(rng, 1, 40));
    int storage = 0;
    const std::vector<uint8_t> packed = make_low_bit(rng, c.w, 2 + i % 3, false, &storage);
    const PackedFullyConnectedInt8 kernel(c.p, packed.data(), storage, {c.out, c.in},
                                          c.has_bias ? c.bias.data() : nullptr);
    std::vector<int8_t> got(c.n * c.out);
    std::vector<int8_t> junk = random_codes(rng, kernel.scratch_bytes() + 1, -128, 127);
    kernel.run_serial(c.x.data(), c.n, got.data(), GetParam(), reinterpret_cast<uint8_t*>(junk.data()) + 1);
    ASSERT_EQ(first_difference(got, fc_reference(c)), -1) << "case " << i << ": " << c.describe();
  }
}

// LeNet-5's layers with 4- and 2-bit weights at batches large enough for threads (conv images per
// thread, fully connected blocks of rows), and a 1024 x 1024 layer at batch 1 and 7.
TEST_P(OptimizedPath, LowBitLeNetShapesWithThreadsMatchReference) {
  Rng rng(1000);
  struct Layer {
    Shape in, f;
    int64_t pad;
  };
  for (int bits : {4, 2}) {
    for (const Layer& l : {Layer{{16, 1, 28, 28}, {6, 1, 5, 5}, 2}, Layer{{16, 6, 14, 14}, {16, 6, 5, 5}, 0}}) {
      ConvCase c = random_conv_case(rng);
      c.in = l.in, c.f = l.f;
      c.p.groups = 1, c.p.stride_h = c.p.stride_w = 1, c.p.pad_h = c.p.pad_w = l.pad;
      random_output_stage(rng, c.f[0], c.f[1] * 25, &c.p.output_multiplier, &c.p.output_shift);
      c.x = random_codes(rng, shape_numel(c.in), -128, 127);
      c.w.resize(shape_numel(c.f));
      int storage = 0;
      const std::vector<uint8_t> packed = make_low_bit(rng, c.w, bits, false, &storage);
      c.bias = random_bias(rng, c.f[0]);
      EXPECT_EQ(first_difference(conv_low_bit(c, packed, storage, false, GetParam()), conv_reference(c)), -1)
          << bits << " bits: " << c.describe();
      EXPECT_EQ(first_difference(conv_low_bit(c, packed, storage, true, GetParam()), conv_pool_reference(c)), -1)
          << bits << " bits: " << c.describe();
    }
    for (auto [n, in, out] : {std::tuple<int64_t, int64_t, int64_t>{67, 400, 120}, {67, 120, 84}, {67, 84, 10},
                              {1, 1024, 1024}, {7, 1024, 1024}}) {
      FcCase c = random_fc_case(rng, n, in, out);
      int storage = 0;
      const std::vector<uint8_t> packed = make_low_bit(rng, c.w, bits, false, &storage);
      EXPECT_EQ(first_difference(fc_low_bit(c, packed, storage, GetParam()), fc_reference(c)), -1)
          << bits << " bits: " << c.describe();
    }
  }
}

// The largest reduction with the extreme 4-bit codes (-8 and 7) against extreme activations: every
// int16 pair sum of the AVX2 kernel at its largest (2 * 255 * 8), column sums near 2^27. The scale
// keeps the outputs inside the code range (+-64 codes), so a wrong sum cannot hide in saturation.
TEST_P(OptimizedPath, LowBitExtremeValuesMatchReference) {
  Rng rng(1100);
  for (int32_t zp : {-128, 127}) {
    for (int8_t code : {int8_t{-128}, int8_t{127}}) {
      FcCase c = random_fc_case(rng, 3, 65536, 3);
      c.p.input_offset = -zp;
      std::fill(c.x.begin(), c.x.end(), code);
      std::fill(c.w.begin(), c.w.end(), int8_t{7});
      std::fill(c.w.begin() + 65536, c.w.begin() + 2 * 65536, int8_t{-8});
      c.bias = {0, 1 << 24, -(1 << 24)};
      c.has_bias = true;
      for (int o = 0; o < 3; ++o)
        quantize_multiplier(std::ldexp(1.0, -21), &c.p.output_multiplier[o], &c.p.output_shift[o]);
      c.p.quantized_activation_min = -128, c.p.quantized_activation_max = 127, c.p.output_offset = 0;
      const std::vector<uint8_t> packed = pack_codes(c.w.data(), static_cast<int64_t>(c.w.size()), 4);
      const std::vector<int8_t> expect = fc_reference(c);
      EXPECT_EQ(first_difference(fc_low_bit(c, packed, 4, GetParam()), expect), -1) << c.describe();
      for (int8_t y : expect) EXPECT_TRUE(y > -128 && y < 127) << int(y) << ": saturated, " << c.describe();
    }
  }
}

// ------------------------------------------------------------------------------ construction, misc

TEST(PackedKernels, ReferencePathRunsTheReferenceKernels) {
  Rng rng(600);
  ConvCase c = random_conv_case(rng);
  EXPECT_EQ(first_difference(conv_packed(c, KernelPath::Reference), conv_reference(c)), -1);
  c.in = {2, 3, 9, 7}, c.f = {4, 3, 3, 3}, c.p.groups = 1, c.p.stride_h = c.p.stride_w = 1, c.p.pad_h = c.p.pad_w = 1;
  c.x = random_codes(rng, shape_numel(c.in), -128, 127);
  c.w = random_codes(rng, shape_numel(c.f), -127, 127);
  random_output_stage(rng, 4, 27, &c.p.output_multiplier, &c.p.output_shift);
  c.bias = random_bias(rng, 4);
  EXPECT_EQ(first_difference(conv_pool_packed(c, KernelPath::Reference), conv_pool_reference(c)), -1);
  const FcCase f = random_fc_case(rng, 3, 17, 9);
  EXPECT_EQ(first_difference(fc_packed(f, KernelPath::Reference), fc_reference(f)), -1);
}

TEST(PackedKernels, ConstructionChecksShapesAndLimits) {
  ConvInt8Params p;
  p.output_multiplier = {1 << 30, 1 << 30};
  p.output_shift = {0, 0};
  const std::vector<int8_t> w(2 * 3 * 3 * 3, 1);
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {4, 8, 8}); },
                          {"(2, 3, 3, 3)", "(1, 4, 8, 8)"}));
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {1, 3, 8, 8}); }, {"(C, H, W)"}));
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {3, 2, 2}); }, {"larger"}));
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {3, 3, 8}, true); },
                          {"fused 2x2 max pool", "1x6"}));
  EXPECT_EQ(PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {3, 9, 8}, true).output_shape(5), (Shape{5, 2, 3, 3}));
  p.output_shift = {0, 31};
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {3, 8, 8}); },
                          {"output_shift[1] = 31"}));
  p.output_shift = {0, 0};
  p.output_multiplier = {1 << 30};
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), {2, 3, 3, 3}, nullptr, {3, 8, 8}); },
                          {"expected 2 output multipliers"}));

  FullyConnectedInt8Params fp;
  fp.output_multiplier = {1 << 30};
  fp.output_shift = {0};
  const std::vector<int8_t> big(65537, 1);
  EXPECT_TRUE(throws_with([&] { PackedFullyConnectedInt8(fp, big.data(), {1, 65537}, nullptr); },
                          {"IN = 65537", "65536"}));
  fp.input_offset = 129;
  EXPECT_TRUE(throws_with([&] { PackedFullyConnectedInt8(fp, big.data(), {1, 4}, nullptr); }, {"input_offset 129"}));
}

TEST(PackedKernels, LowBitReferencePathAndWeightBytes) {
  Rng rng(1200);
  ConvCase c = random_conv_case(rng);
  int storage = 0;
  const std::vector<uint8_t> packed = make_low_bit(rng, c.w, 3, false, &storage);
  EXPECT_EQ(first_difference(conv_low_bit(c, packed, storage, false, KernelPath::Reference), conv_reference(c)), -1);
  const PackedConvInt8 conv(c.p, packed.data(), storage, c.f, nullptr, {c.in[1], c.in[2], c.in[3]});
  EXPECT_EQ(conv.weight_bits(), 4);
  EXPECT_EQ(conv.weight_bytes(), packed_bytes(shape_numel(c.f), 4));  // the filter is kept as given
  EXPECT_GT(PackedConvInt8(c.p, c.w.data(), c.f, nullptr, {c.in[1], c.in[2], c.in[3]}).weight_bytes(),
            2 * shape_numel(c.f));

  FcCase f = random_fc_case(rng, 3, 64, 32);
  EXPECT_EQ(PackedFullyConnectedInt8(f.p, f.w.data(), {32, 64}, nullptr).weight_bytes(), 32 * 64);
  for (int bits : {4, 2}) {
    const std::vector<uint8_t> w = make_low_bit(rng, f.w, bits, false, &storage);
    const PackedFullyConnectedInt8 fc(f.p, w.data(), storage, {32, 64}, nullptr);
    EXPECT_EQ(fc.weight_bits(), storage);
    EXPECT_EQ(fc.weight_bytes(), 32 * 64 / 2) << bits << " bits: 4-bit panels";  // 2-bit codes too
    EXPECT_EQ(first_difference(fc_low_bit(f, w, storage, KernelPath::Reference), fc_reference(f)), -1);
  }
}

TEST(PackedKernels, LowBitConstructionChecksWidths) {
  ConvInt8Params p;
  p.output_multiplier = {1 << 30, 1 << 30};
  p.output_shift = {0, 0};
  const std::vector<uint8_t> w(27, 0x11);
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), 3, {2, 3, 3, 3}, nullptr, {3, 8, 8}); },
                          {"PackedConvInt8", "3 bits"}));
  EXPECT_TRUE(throws_with([&] { PackedConvInt8(p, w.data(), 4, {2, 3, 3, 3}, nullptr, {4, 8, 8}); },
                          {"(2, 3, 3, 3)", "(1, 4, 8, 8)"}));
  FullyConnectedInt8Params fp;
  fp.output_multiplier = {1 << 30};
  fp.output_shift = {0};
  EXPECT_TRUE(throws_with([&] { PackedFullyConnectedInt8(fp, w.data(), 1, {1, 8}, nullptr); },
                          {"PackedFullyConnectedInt8", "1 bits"}));
  EXPECT_TRUE(throws_with([&] { PackedFullyConnectedInt8(fp, w.data(), 4, {2, 8}, nullptr); },
                          {"expected 2 output multipliers"}));
}

}  // namespace
}  // namespace qatlab
