// ops_elementwise.cpp: elementwise autograd ops: broadcasting add/sub/mul/div and the unary maps.
//
// Shapes here are generic: `out` is the broadcast result of the operands' shapes, `i` an output
// element, `ia` / `ib` the elements of a / b that output element reads.
#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/format.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace qatlab {
namespace {


// -------------------------------------------------------------- how one operand maps onto the output

// Chosen once per op so that the inner loops are plain strided loops, not per-element index math.
enum class Layout {
  kSame,     // as many elements as the output: the same memory layout (shapes equal up to leading 1s)
  kScalar,   // one element, read by every output element
  kBlock,    // the output seen as (outer, n, inner) reads operand element j at (o, j, k): a bias (C)
             // on (N, C) has inner == 1, a (C, 1, 1) on (N, C, H, W) has inner == H*W
  kGeneral,  // anything else, e.g. (N, 1) with (1, C): per-dimension strides
};

struct OperandMap {
  Layout layout = Layout::kSame;
  int64_t outer = 1, n = 1, inner = 1;  // kBlock
  std::vector<int64_t> strides;         // one per output dimension, 0 where the operand is stretched
};

OperandMap map_operand(const Shape& x, const Shape& out) {
  OperandMap m;
  const size_t rank = out.size();
  const size_t lead = rank - x.size();  // missing leading dimensions count as 1
  auto xdim = [&](size_t d) { return d < lead ? int64_t{1} : x[d - lead]; };
  m.strides.assign(rank, 0);
  int64_t stride = 1;
  for (size_t d = rank; d-- > 0;) {
    m.strides[d] = xdim(d) == 1 ? 0 : stride;
    stride *= xdim(d);
  }

  const int64_t x_numel = shape_numel(x), out_numel = shape_numel(out);
  if (x_numel == out_numel) return m;  // nothing stretched: layouts coincide
  if (x_numel == 1) {
    m.layout = Layout::kScalar;
    return m;
  }
  // The operand's non-1 dimensions span [first, last]; it is a block if none inside is stretched.
  size_t first = rank, last = 0;
  for (size_t d = 0; d < rank; ++d) {
    if (xdim(d) != 1) {
      first = std::min(first, d);
      last = d;
    }
  }
  bool block = true;
  for (size_t d = first; d <= last; ++d) block = block && xdim(d) == out[d];
  if (!block) {
    m.layout = Layout::kGeneral;
    return m;
  }
  m.layout = Layout::kBlock;
  for (size_t d = 0; d < first; ++d) m.outer *= out[d];
  for (size_t d = first; d <= last; ++d) m.n *= out[d];
  for (size_t d = last + 1; d < rank; ++d) m.inner *= out[d];
  return m;
}

// Calls g(i, j) for every output element i of a block-mapped operand, j its element in the operand.
template <class G>
void for_each_block(const OperandMap& m, int64_t numel, G g) {
  if (m.inner == 1) {
    // (outer, n) rows, the operand is one row: the bias case.
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t o = 0; o < m.outer; ++o)
      for (int64_t j = 0; j < m.n; ++j) g(o * m.n + j, j);
  } else {
    const int64_t rows = m.outer * m.n;
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t j = r % m.n;
      for (int64_t k = 0; k < m.inner; ++k) g(r * m.inner + k, j);
    }
  }
}

// Calls f(i, ia, ib) for every output element i. The layout pair is dispatched once, here.
template <class F>
void for_each_broadcast(const OperandMap& ma, const OperandMap& mb, const Shape& out, int64_t numel, F f) {
  const Layout la = ma.layout, lb = mb.layout;
  if (la == Layout::kSame && lb == Layout::kSame) {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) f(i, i, i);
  } else if (la == Layout::kSame && lb == Layout::kScalar) {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) f(i, i, int64_t{0});
  } else if (la == Layout::kScalar && lb == Layout::kSame) {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) f(i, int64_t{0}, i);
  } else if (la == Layout::kSame && lb == Layout::kBlock) {
    for_each_block(mb, numel, [&](int64_t i, int64_t j) { f(i, i, j); });
  } else if (la == Layout::kBlock && lb == Layout::kSame) {
    for_each_block(ma, numel, [&](int64_t i, int64_t j) { f(i, j, i); });
  } else {
    // General: walk the output row by row (rows of its last dimension), decomposing the row index
    // into coordinates once per row.
    const int64_t rank = static_cast<int64_t>(out.size());
    const int64_t last = out[rank - 1];
    const int64_t rows = last > 0 ? numel / last : 0;
    const int64_t sa = ma.strides[rank - 1], sb = mb.strides[rank - 1];
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t rem = r, ia = 0, ib = 0;
      for (int64_t d = rank - 2; d >= 0; --d) {
        const int64_t c = rem % out[d];
        rem /= out[d];
        ia += c * ma.strides[d];
        ib += c * mb.strides[d];
      }
      for (int64_t k = 0; k < last; ++k) f(r * last + k, ia + k * sa, ib + k * sb);
    }
  }
}


// gx += contributions c (out shape) summed back onto the operand's shape. Deterministic: every
// operand element is summed by one thread in a fixed order.
void reduce_into(const float* c, const OperandMap& m, const Shape& x_shape, const Shape& out, int64_t numel,
                 float* gx) {
  switch (m.layout) {
    case Layout::kSame: {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
      for (int64_t i = 0; i < numel; ++i) gx[i] += c[i];
      break;
    }
    case Layout::kScalar:
      gx[0] += static_cast<float>(sum_in_chunks(c, numel));
      break;
    case Layout::kBlock: {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
      for (int64_t j = 0; j < m.n; ++j) {
        double s = 0.0;
        for (int64_t o = 0; o < m.outer; ++o) {
          const float* row = c + (o * m.n + j) * m.inner;
          for (int64_t k = 0; k < m.inner; ++k) s += row[k];
        }
        gx[j] += static_cast<float>(s);
      }
      break;
    }
    case Layout::kGeneral: {
      // Serial: output elements land on operand elements in no simple pattern.
      std::vector<double> acc(static_cast<size_t>(shape_numel(x_shape)), 0.0);
      const int64_t rank = static_cast<int64_t>(out.size());
      const int64_t last = out[rank - 1];
      const int64_t rows = last > 0 ? numel / last : 0;
      const int64_t s_last = m.strides[rank - 1];
      for (int64_t r = 0; r < rows; ++r) {
        int64_t rem = r, ix = 0;
        for (int64_t d = rank - 2; d >= 0; --d) {
          ix += (rem % out[d]) * m.strides[d];
          rem /= out[d];
        }
        for (int64_t k = 0; k < last; ++k) acc[ix + k * s_last] += c[r * last + k];
      }
      for (size_t e = 0; e < acc.size(); ++e) gx[e] += static_cast<float>(acc[e]);
      break;
    }
  }
}

Shape broadcast_named(const char* name, const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t d = 0; d < rank; ++d) {
    // Align at the trailing dimension; a missing leading dimension counts as 1.
    const int64_t da = d + a.size() >= rank ? a[d + a.size() - rank] : 1;
    const int64_t db = d + b.size() >= rank ? b[d + b.size() - rank] : 1;
    QATLAB_CHECK(da == db || da == 1 || db == 1,
              std::string(name) + ": shapes " + shape_str(a) + " and " + shape_str(b) + " do not broadcast (" +
                  std::to_string(da) + " vs " + std::to_string(db) + " at dimension " +
                  std::to_string(static_cast<int64_t>(d) - static_cast<int64_t>(rank)) + ")");
    out[d] = da == 1 ? db : da;
  }
  return out;
}

// A broadcasting binary op. f(x, y) is the forward value; da(g, x, y) / db(g, x, y) are the gradient
// contributions to a and b of one output element whose gradient is g.
template <class F, class DA, class DB>
Tensor binary_op(const char* name, const Tensor& a, const Tensor& b, F f, DA da, DB db) {
  const Shape out_shape = broadcast_named(name, a.shape(), b.shape());
  const OperandMap ma = map_operand(a.shape(), out_shape);
  const OperandMap mb = map_operand(b.shape(), out_shape);
  Tensor out = Tensor::empty(out_shape);
  const int64_t numel = out.numel();
  {
    const float* pa = a.data();
    const float* pb = b.data();
    float* po = out.data();
    for_each_broadcast(ma, mb, out_shape, numel, [&](int64_t i, int64_t ia, int64_t ib) { po[i] = f(pa[ia], pb[ib]); });
  }

  record_op(out, name, {a, b}, [a, b, ma, mb, out_shape, da, db](const Tensor& grad_out) {
    const float* g = grad_out.data();
    const float* pa = a.data();
    const float* pb = b.data();
    const int64_t numel = grad_out.numel();
    // Gradient of one operand: straight into its buffer when it has the output's layout, else through
    // a contribution buffer (out shape) summed back onto its shape.
    auto accumulate = [&](Tensor x, const OperandMap& mx, auto d) {
      if (mx.layout == Layout::kSame) {
        bool fresh = false;
        float* gx = x.grad_for_write(&fresh);
        if (fresh)
          for_each_broadcast(ma, mb, out_shape, numel,
                             [&](int64_t i, int64_t ia, int64_t ib) { gx[i] = d(g[i], pa[ia], pb[ib]); });
        else
          for_each_broadcast(ma, mb, out_shape, numel,
                             [&](int64_t i, int64_t ia, int64_t ib) { gx[i] += d(g[i], pa[ia], pb[ib]); });
      } else {
        float* gx = x.mutable_grad();
        std::vector<float> contrib(static_cast<size_t>(numel));  // out shape
        float* c = contrib.data();
        for_each_broadcast(ma, mb, out_shape, numel,
                           [&](int64_t i, int64_t ia, int64_t ib) { c[i] = d(g[i], pa[ia], pb[ib]); });
        reduce_into(c, mx, x.shape(), out_shape, numel, gx);
      }
    };
    if (a.requires_grad()) accumulate(a, ma, da);
    if (b.requires_grad()) accumulate(b, mb, db);
  });
  return out;
}

// An elementwise map. f(x) is the forward value; d(g, x, y) the input's gradient contribution given
// the output gradient g, the input x and the output y.
template <class F, class D>
Tensor unary_op(const char* name, const Tensor& x, F f, D d) {
  Tensor y = Tensor::empty(x.shape());
  const int64_t numel = x.numel();
  {
    const float* px = x.data();
    float* py = y.data();
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) py[i] = f(px[i]);
  }
  // The closure keeps y's values, not y itself: y owns the closure, and a handle would be a cycle.
  std::shared_ptr<float[]> y_values = y.impl()->data;
  record_op(y, name, {x}, [x, y_values, d](const Tensor& grad_out) {
    bool fresh = false;
    float* gx = x.grad_for_write(&fresh);
    const float* g = grad_out.data();
    const float* px = x.data();
    const float* py = y_values.get();
    const int64_t numel = grad_out.numel();
    if (fresh) {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
      for (int64_t i = 0; i < numel; ++i) gx[i] = d(g[i], px[i], py[i]);
    } else {
#pragma omp parallel for schedule(static) if (numel >= kParallelMin)
      for (int64_t i = 0; i < numel; ++i) gx[i] += d(g[i], px[i], py[i]);
    }
  });
  return y;
}

}  // namespace

// ------------------------------------------------------------------------------------------ binary

Shape broadcast_shapes(const Shape& a, const Shape& b) { return broadcast_named("broadcast_shapes", a, b); }

Tensor add(const Tensor& a, const Tensor& b) {
  return binary_op(
      "add", a, b, [](float x, float y) { return x + y; }, [](float g, float, float) { return g; },
      [](float g, float, float) { return g; });
}

Tensor add_relu(const Tensor& a, const Tensor& b) {
  QATLAB_CHECK(a.defined() && b.defined() && a.shape() == b.shape(),
               "add_relu: operands must have one shape, got " + (a.defined() ? shape_str(a.shape()) : "undefined") +
                   " and " + (b.defined() ? shape_str(b.shape()) : "undefined"));
  Tensor y = Tensor::empty(a.shape());
  const int64_t numel = y.numel();
  {
    const float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    float* __restrict py = y.data();
#pragma omp parallel for simd schedule(static) if (numel >= kParallelMin)
    for (int64_t i = 0; i < numel; ++i) {
      const float v = pa[i] + pb[i];
      py[i] = v > 0.0f ? v : 0.0f;  // relu's expression: y > 0 exactly where the sum is
    }
  }
  // The closure keeps y's values, not y itself (a cycle); y > 0 is the mask of both operands' gradient.
  std::shared_ptr<float[]> y_values = y.impl()->data;
  record_op(y, "add_relu", {a, b}, [a, b, y_values](const Tensor& grad_out) {
    const float* __restrict g = grad_out.data();
    const float* __restrict py = y_values.get();
    const int64_t numel = grad_out.numel();
    for (const Tensor& x : {a, b}) {
      if (!x.requires_grad()) continue;
      bool fresh = false;
      float* __restrict gx = x.grad_for_write(&fresh);
      if (fresh) {
#pragma omp parallel for simd schedule(static) if (numel >= kParallelMin)
        for (int64_t i = 0; i < numel; ++i) {
          const float gi = g[i];  // loaded unconditionally: a load under the condition keeps the loop scalar
          gx[i] = py[i] > 0.0f ? gi : 0.0f;
        }
      } else {
#pragma omp parallel for simd schedule(static) if (numel >= kParallelMin)
        for (int64_t i = 0; i < numel; ++i) {
          const float gi = g[i];
          gx[i] += py[i] > 0.0f ? gi : 0.0f;
        }
      }
    }
  });
  return y;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  return binary_op(
      "sub", a, b, [](float x, float y) { return x - y; }, [](float g, float, float) { return g; },
      [](float g, float, float) { return -g; });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  return binary_op(
      "mul", a, b, [](float x, float y) { return x * y; }, [](float g, float, float y) { return g * y; },
      [](float g, float x, float) { return g * x; });
}

Tensor div(const Tensor& a, const Tensor& b) {
  return binary_op(
      "div", a, b, [](float x, float y) { return x / y; }, [](float g, float, float y) { return g / y; },
      [](float g, float x, float y) { return -g * x / (y * y); });
}

// ------------------------------------------------------------------------------------------- unary

Tensor scale(const Tensor& x, float s) {
  return unary_op(
      "scale", x, [s](float v) { return v * s; }, [s](float g, float, float) { return g * s; });
}

Tensor add_scalar(const Tensor& x, float s) {
  return unary_op(
      "add_scalar", x, [s](float v) { return v + s; }, [](float g, float, float) { return g; });
}

Tensor neg(const Tensor& x) {
  return unary_op(
      "neg", x, [](float v) { return -v; }, [](float g, float, float) { return -g; });
}

Tensor relu(const Tensor& x) {
  return unary_op(
      "relu", x, [](float v) { return v > 0.0f ? v : 0.0f; },
      [](float g, float v, float) { return v > 0.0f ? g : 0.0f; });
}

Tensor clamp(const Tensor& x, float lo, float hi) {
  QATLAB_CHECK(lo <= hi, "clamp: lo " + num_str(lo) + " is above hi " + num_str(hi));
  // At the bounds themselves the gradient is 0: a value sitting on a bound is treated as clipped.
  return unary_op(
      "clamp", x, [lo, hi](float v) { return std::min(std::max(v, lo), hi); },
      [lo, hi](float g, float v, float) { return v > lo && v < hi ? g : 0.0f; });
}

Tensor relu6(const Tensor& x) { return clamp(x, 0.0f, 6.0f); }

Tensor sigmoid(const Tensor& x) {
  return unary_op(
      "sigmoid", x,
      [](float v) {
        // Split by sign so exp never overflows: both branches take exp of a non-positive number.
        if (v >= 0.0f) return 1.0f / (1.0f + std::exp(-v));
        const float e = std::exp(v);
        return e / (1.0f + e);
      },
      [](float g, float, float y) { return g * y * (1.0f - y); });
}

Tensor tanh(const Tensor& x) {
  return unary_op(
      "tanh", x, [](float v) { return std::tanh(v); }, [](float g, float, float y) { return g * (1.0f - y * y); });
}

Tensor square(const Tensor& x) {
  return unary_op(
      "square", x, [](float v) { return v * v; }, [](float g, float v, float) { return 2.0f * g * v; });
}

Tensor sqrt(const Tensor& x) {
  return unary_op(
      "sqrt", x, [](float v) { return std::sqrt(v); }, [](float g, float, float y) { return 0.5f * g / y; });
}

Tensor exp(const Tensor& x) {
  return unary_op(
      "exp", x, [](float v) { return std::exp(v); }, [](float g, float, float y) { return g * y; });
}

Tensor log(const Tensor& x) {
  return unary_op(
      "log", x, [](float v) { return std::log(v); }, [](float g, float v, float) { return g / v; });
}

}  // namespace qatlab
