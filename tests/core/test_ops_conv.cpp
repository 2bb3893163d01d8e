// test_ops_conv.cpp: conv2d against a direct nested-loop convolution (strides, padding, groups,
// depthwise, with and without bias), with its gradients, and conv_out_size. Convolutions run
// on the shifted-tap kernels, tested on every float path this CPU has (forward and all three gradients
// against loops in double, on shapes that reach every tile edge, and the gradient checker).
//
// Shape letters: N batch, C input channels, H x W input, OC output channels, KH x KW kernel,
// OH x OW output, G groups.
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/cpu_features.h"
#include "core/ops.h"
#include "tests/core/gradcheck.h"

namespace qatlab {
namespace {

using In = const std::vector<Tensor>&;
using test::random_tensor;
using test::throws_with;

// The definition of a grouped convolution, one output element at a time. x (N, C, H, W),
// w (OC, C/G, KH, KW), b (OC) or undefined -> (N, OC, OH, OW). Padding reads zeros.
Tensor ref_conv2d(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OC = w.size(0), CG = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t OCG = OC / p.groups;
  const int64_t OH = (H + 2 * p.pad_h - KH) / p.stride_h + 1;
  const int64_t OW = (W + 2 * p.pad_w - KW) / p.stride_w + 1;
  Tensor y = Tensor::empty({N, OC, OH, OW});
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc) {
      const int64_t g = oc / OCG;
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          double s = b.defined() ? b.data()[oc] : 0.0;
          for (int64_t cg = 0; cg < CG; ++cg) {
            const int64_t c = g * CG + cg;
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh;
                const int64_t iw = ow * p.stride_w - p.pad_w + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += static_cast<double>(x.data()[((n * C + c) * H + ih) * W + iw]) *
                     w.data()[((oc * CG + cg) * KH + kh) * KW + kw];
              }
          }
          y.data()[((n * OC + oc) * OH + oh) * OW + ow] = static_cast<float>(s);
        }
    }
  return y;
}

// The gradients of ref_conv2d's output seeded with gy, by the same loops: {dx, dw, db}.
std::vector<Tensor> ref_conv2d_grads(const Tensor& x, const Tensor& w, const Tensor& gy, const Conv2dParams& p) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OC = w.size(0), CG = w.size(1), KH = w.size(2), KW = w.size(3);
  const int64_t OCG = OC / p.groups, OH = gy.size(2), OW = gy.size(3);
  std::vector<double> dx(x.numel(), 0.0), dw(w.numel(), 0.0), db(OC, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t oc = 0; oc < OC; ++oc)
      for (int64_t oh = 0; oh < OH; ++oh)
        for (int64_t ow = 0; ow < OW; ++ow) {
          const double g = gy.data()[((n * OC + oc) * OH + oh) * OW + ow];
          db[oc] += g;
          for (int64_t cg = 0; cg < CG; ++cg)
            for (int64_t kh = 0; kh < KH; ++kh)
              for (int64_t kw = 0; kw < KW; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_h + kh, iw = ow * p.stride_w - p.pad_w + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                const int64_t xi = ((n * C + oc / OCG * CG + cg) * H + ih) * W + iw;
                const int64_t wi = ((oc * CG + cg) * KH + kh) * KW + kw;
                dx[xi] += g * w.data()[wi];
                dw[wi] += g * x.data()[xi];
              }
        }
  const auto to_tensor = [](const std::vector<double>& v, const Shape& shape) {
    Tensor t = Tensor::empty(shape);
    for (size_t i = 0; i < v.size(); ++i) t.data()[i] = static_cast<float>(v[i]);
    return t;
  };
  return {to_tensor(dx, x.shape()), to_tensor(dw, w.shape()), to_tensor(db, {OC})};
}

// Runs the float ops on `path` while in scope.
class FloatPathScope {
 public:
  explicit FloatPathScope(FloatPath path) : saved_(active_float_path()) { set_float_path(path); }
  ~FloatPathScope() { set_float_path(saved_); }

 private:
  FloatPath saved_;
};

// The float paths this CPU runs; the others are reported as skipped.
std::vector<FloatPath> float_paths() {
  std::vector<FloatPath> paths;
  for (FloatPath p : {FloatPath::Portable, FloatPath::Avx2, FloatPath::Avx512}) {
    if (float_path_supported(p))
      paths.push_back(p);
    else
      std::cout << "[  SKIPPED ] float path " << float_path_name(p) << ": not supported by this CPU\n";
  }
  return paths;
}

struct ConvCase {
  std::string name;
  Shape x, w;
  bool bias;
  Conv2dParams p;
};

std::vector<ConvCase> conv_cases() {
  Conv2dParams s1;  // stride 1, no padding
  Conv2dParams s2p1;
  s2p1.stride_h = s2p1.stride_w = 2;
  s2p1.pad_h = s2p1.pad_w = 1;
  Conv2dParams g2;
  g2.groups = 2;
  g2.pad_h = g2.pad_w = 1;
  Conv2dParams dw;  // depthwise: groups == C == OC
  dw.groups = 4;
  dw.pad_h = dw.pad_w = 1;
  dw.stride_h = dw.stride_w = 2;
  Conv2dParams rect;  // unequal strides and padding per axis
  rect.stride_h = 2;
  rect.pad_w = 1;
  Conv2dParams pw;  // 1x1 pointwise
  return {
      {"stride1_bias", {2, 3, 6, 5}, {4, 3, 3, 3}, true, s1},
      {"stride1_nobias", {2, 3, 6, 5}, {4, 3, 3, 3}, false, s1},
      {"stride2_pad1_bias", {2, 3, 7, 6}, {5, 3, 3, 3}, true, s2p1},
      {"stride2_pad1_nobias", {1, 2, 5, 5}, {3, 2, 3, 3}, false, s2p1},
      {"groups2_bias", {2, 4, 5, 5}, {6, 2, 3, 3}, true, g2},
      {"groups2_nobias", {1, 4, 4, 4}, {4, 2, 3, 3}, false, g2},
      {"depthwise_bias", {2, 4, 6, 6}, {4, 1, 3, 3}, true, dw},
      {"depthwise_nobias", {1, 4, 5, 5}, {4, 1, 3, 3}, false, dw},
      {"rect_kernel_stride", {1, 2, 7, 5}, {3, 2, 3, 2}, true, rect},
      {"pointwise", {2, 3, 4, 4}, {5, 3, 1, 1}, true, pw},
  };
}

TEST(ConvOutSizeOp, Formula) {
  EXPECT_EQ(conv_out_size(28, 3, 1, 0), 26);
  EXPECT_EQ(conv_out_size(28, 3, 1, 1), 28);
  EXPECT_EQ(conv_out_size(28, 3, 2, 1), 14);
  EXPECT_EQ(conv_out_size(7, 3, 2, 1), 4);
  EXPECT_EQ(conv_out_size(5, 5, 1, 0), 1);
  EXPECT_EQ(conv_out_size(32, 2, 2, 0), 16);
}

TEST(Conv2dOp, ForwardMatchesLoops) {
  Rng rng(1);
  for (const ConvCase& cc : conv_cases()) {
    SCOPED_TRACE(cc.name);
    Tensor x = random_tensor(cc.x, rng);
    Tensor w = random_tensor(cc.w, rng);
    Tensor b = cc.bias ? random_tensor({cc.w[0]}, rng) : Tensor();
    EXPECT_TENSOR_NEAR(conv2d(x, w, b, cc.p), ref_conv2d(x, w, b, cc.p), 1e-5);
  }
}

TEST(Conv2dOp, ForwardMatchesLoopsOnALargerBatch) {
  // Enough images to spread over threads.
  Rng rng(2);
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor x = random_tensor({16, 8, 12, 12}, rng);
  Tensor w = random_tensor({16, 8, 3, 3}, rng);
  Tensor b = random_tensor({16}, rng);
  EXPECT_TENSOR_NEAR(conv2d(x, w, b, p), ref_conv2d(x, w, b, p), 1e-4);
}

TEST(Conv2dOp, Gradients) {
  Rng rng(3);
  for (const ConvCase& cc : conv_cases()) {
    SCOPED_TRACE(cc.name);
    Tensor x = random_tensor(cc.x, rng);
    Tensor w = random_tensor(cc.w, rng);
    const Conv2dParams p = cc.p;
    if (cc.bias) {
      Tensor b = random_tensor({cc.w[0]}, rng);
      EXPECT_GRADS_OK([p](In in) { return conv2d(in[0], in[1], in[2], p); }, {x, w, b});
    } else {
      EXPECT_GRADS_OK([p](In in) { return conv2d(in[0], in[1], Tensor(), p); }, {x, w});
    }
  }
}

// Gradients accumulate: an input that already holds a gradient (here from a second use of x) gets the
// conv's added to it, on every path (the transposed one assigns into fresh buffers only).
TEST(Conv2dOp, InputGradientAddsToAnExistingOne) {
  Rng rng(4);
  for (const ConvCase& cc : conv_cases()) {
    SCOPED_TRACE(cc.name);
    const Tensor x0 = random_tensor(cc.x, rng), w = random_tensor(cc.w, rng);
    const Tensor seed = random_tensor(conv2d(x0, w, Tensor(), cc.p).shape(), rng);
    // Reference: the conv's input gradient alone, plus the gradient of sum(x * x) = 2 x.
    Tensor xa = x0.clone().set_requires_grad(true);
    conv2d(xa, w, Tensor(), cc.p).backward(seed);
    Tensor xb = x0.clone().set_requires_grad(true);
    Tensor both = add(sum(mul(conv2d(xb, w, Tensor(), cc.p), seed)), sum(mul(xb, xb)));
    both.backward();
    const std::vector<float> ga = xa.grad().to_vector(), gb = xb.grad().to_vector(), xv = x0.to_vector();
    for (size_t i = 0; i < ga.size(); ++i) EXPECT_NEAR(gb[i], ga[i] + 2 * xv[i], 1e-4) << i;
  }
}

// Stride-1 shapes for the shifted-tap kernels: output channels around every tile height (1..10 reach
// the 8-, 4- and 2-high tiles and their edges), (channel, tap) pair counts that leave every remainder
// of the 6-wide weight-gradient tile, position counts that end on each forward tile edge, kernels 1x1
// to 5x5 with all the paddings it takes, groups, depthwise, and a batch large enough that the weight
// gradient sweeps over several blocks of positions and images split over threads; strides 2 and 3
// (also unequal), and a padding wider than the kernel.
std::vector<ConvCase> tap_cases() {
  const auto params = [](int64_t ph, int64_t pw, int64_t groups) {
    Conv2dParams p;
    p.pad_h = ph, p.pad_w = pw, p.groups = groups;
    return p;
  };
  std::vector<ConvCase> cases;
  for (int64_t oc = 1; oc <= 10; ++oc)
    cases.push_back({"oc" + std::to_string(oc), {2, 3, 7, 9}, {oc, 3, 3, 3}, oc % 2 == 1, params(1, 1, 1)});
  for (int64_t c = 1; c <= 6; ++c)
    cases.push_back({"c" + std::to_string(c) + "_valid", {1, c, 6, 5}, {5, c, 3, 3}, true, params(0, 0, 1)});
  for (int64_t w = 1; w <= 20; w += 3)
    cases.push_back({"w" + std::to_string(w), {2, 2, 4, w}, {9, 2, 3, 1}, false, params(1, 0, 1)});
  cases.push_back({"k5_pad2", {2, 1, 12, 12}, {6, 1, 5, 5}, true, params(2, 2, 1)});
  cases.push_back({"k5_pad1", {1, 2, 9, 8}, {3, 2, 5, 5}, true, params(1, 1, 1)});
  cases.push_back({"k5_pad4", {1, 2, 4, 3}, {3, 2, 5, 5}, false, params(4, 4, 1)});
  cases.push_back({"pointwise", {3, 5, 6, 7}, {7, 5, 1, 1}, true, params(0, 0, 1)});
  cases.push_back({"groups3", {2, 6, 6, 6}, {9, 2, 3, 3}, true, params(1, 1, 3)});
  cases.push_back({"depthwise", {2, 5, 7, 7}, {5, 1, 3, 3}, false, params(1, 1, 5)});
  cases.push_back({"many_sweeps", {8, 24, 16, 16}, {20, 24, 3, 3}, true, params(1, 1, 1)});
  // Strides: phases of the padded input, and the input gradient phase by phase.
  const auto strided = [&](int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t groups) {
    Conv2dParams p = params(ph, pw, groups);
    p.stride_h = sh, p.stride_w = sw;
    return p;
  };
  cases.push_back({"s2_k3_pad1", {2, 3, 9, 8}, {10, 3, 3, 3}, true, strided(2, 2, 1, 1, 1)});
  cases.push_back({"s2_pointwise", {2, 4, 7, 6}, {6, 4, 1, 1}, false, strided(2, 2, 0, 0, 1)});
  cases.push_back({"s3_k5_pad2", {1, 2, 11, 10}, {5, 2, 5, 5}, true, strided(3, 3, 2, 2, 1)});
  cases.push_back({"s2x1_rect", {2, 2, 8, 7}, {4, 2, 3, 2}, true, strided(2, 1, 1, 0, 1)});
  cases.push_back({"s2_depthwise", {2, 4, 8, 8}, {4, 1, 3, 3}, false, strided(2, 2, 1, 1, 4)});
  // More depthwise convolutions (MobileNet-style description files use them): kernel sizes, padding
  // (none, wider than the kernel reaches), strides, a rectangular kernel and a bias.
  cases.push_back({"dw_k5_pad2_bias", {3, 6, 9, 10}, {6, 1, 5, 5}, true, params(2, 2, 6)});
  cases.push_back({"dw_k3_valid", {2, 3, 6, 7}, {3, 1, 3, 3}, true, params(0, 0, 3)});
  cases.push_back({"dw_k1", {2, 3, 4, 5}, {3, 1, 1, 1}, true, params(0, 0, 3)});
  cases.push_back({"dw_rect_s2x1", {2, 4, 9, 7}, {4, 1, 3, 2}, true, strided(2, 1, 1, 0, 4)});
  cases.push_back({"dw_pad_beyond", {1, 2, 3, 4}, {2, 1, 2, 2}, false, strided(3, 3, 2, 2, 2)});
  cases.push_back({"s2_many_sweeps", {8, 16, 20, 20}, {24, 16, 3, 3}, true, strided(2, 2, 1, 1, 1)});
  // Padding wider than the kernel reaches: no transposed form, the input gradient goes phase by phase.
  cases.push_back({"pad_beyond_kernel", {2, 2, 4, 5}, {3, 2, 1, 1}, true, params(1, 2, 1)});
  return cases;
}

TEST(Conv2dOp, TapKernelsMatchLoopsOnEveryFloatPath) {
  for (FloatPath path : float_paths()) {
    FloatPathScope scope(path);
    Rng rng(5);
    for (const ConvCase& cc : tap_cases()) {
      SCOPED_TRACE(std::string(float_path_name(path)) + " " + cc.name);
      const Tensor x0 = random_tensor(cc.x, rng), w0 = random_tensor(cc.w, rng);
      const Tensor b0 = cc.bias ? random_tensor({cc.w[0]}, rng) : Tensor();
      Tensor x = x0.clone().set_requires_grad(true), w = w0.clone().set_requires_grad(true);
      Tensor b = cc.bias ? b0.clone().set_requires_grad(true) : Tensor();
      Tensor y = conv2d(x, w, b, cc.p);
      EXPECT_TENSOR_NEAR(y, ref_conv2d(x0, w0, b0, cc.p), 1e-4);
      const Tensor gy = random_tensor(y.shape(), rng);
      y.backward(gy);
      const std::vector<Tensor> ref = ref_conv2d_grads(x0, w0, gy, cc.p);
      EXPECT_TENSOR_NEAR(x.grad(), ref[0], 1e-4);
      EXPECT_TENSOR_NEAR(w.grad(), ref[1], 1e-3);
      if (cc.bias) {
        EXPECT_TENSOR_NEAR(b.grad(), ref[2], 1e-3);
      }
    }
  }
}

TEST(Conv2dOp, TapKernelGradientsCheckOnEveryFloatPath) {
  for (FloatPath path : float_paths()) {
    FloatPathScope scope(path);
    Rng rng(6);
    for (const ConvCase& cc : tap_cases()) {
      if (cc.name.find("many_sweeps") != std::string::npos || (cc.name.rfind("oc", 0) == 0 && cc.name != "oc9"))
        continue;  // the loops cover them
      SCOPED_TRACE(std::string(float_path_name(path)) + " " + cc.name);
      const Tensor x = random_tensor(cc.x, rng), w = random_tensor(cc.w, rng);
      const Conv2dParams p = cc.p;
      if (cc.bias)
        EXPECT_GRADS_OK([p](In in) { return conv2d(in[0], in[1], in[2], p); }, {x, w, random_tensor({cc.w[0]}, rng)});
      else
        EXPECT_GRADS_OK([p](In in) { return conv2d(in[0], in[1], Tensor(), p); }, {x, w});
    }
  }
}

TEST(Conv2dOp, FloatPathsRefuseWhatTheCpuLacks) {
  for (FloatPath p : {FloatPath::Portable, FloatPath::Avx2, FloatPath::Avx512}) {
    if (float_path_supported(p)) continue;
    EXPECT_TRUE(throws_with([&] { set_float_path(p); }, {"float path", float_path_name(p), "not supported"}));
  }
  EXPECT_TRUE(float_path_supported(FloatPath::Portable));
  EXPECT_TRUE(float_path_supported(best_float_path()));
}

TEST(Conv2dOp, RejectsMismatchedShapes) {
  Tensor x = Tensor::zeros({1, 3, 5, 5});
  Conv2dParams p;
  EXPECT_TRUE(throws_with([&] { conv2d(x, Tensor::zeros({4, 2, 3, 3}), Tensor(), p); }, {"conv2d", "(4, 2, 3, 3)", "(1, 3, 5, 5)"}));
  EXPECT_TRUE(throws_with([&] { conv2d(x, Tensor::zeros({4, 3, 3, 3}), Tensor::zeros({3}), p); }, {"conv2d", "(3)"}));
  EXPECT_TRUE(throws_with([&] { conv2d(Tensor::zeros({3, 5, 5}), Tensor::zeros({4, 3, 3, 3}), Tensor(), p); },
                          {"conv2d", "(3, 5, 5)"}));
  EXPECT_TRUE(throws_with([&] { conv2d(x, Tensor::zeros({4, 3, 7, 7}), Tensor(), p); }, {"conv2d", "(4, 3, 7, 7)"}));
  Conv2dParams g2;
  g2.groups = 2;
  EXPECT_TRUE(throws_with([&] { conv2d(x, Tensor::zeros({4, 1, 3, 3}), Tensor(), g2); }, {"conv2d", "groups 2"}));
}

}  // namespace
}  // namespace qatlab
