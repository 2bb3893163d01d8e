// ops_shape.cpp: autograd ops that move values without arithmetic: reshape, flatten, slice, concat,
// transpose2d.
//
// Slicing and concatenation view a tensor as (outer, size, inner) around the chosen dimension:
// outer = product of the dimensions before it, inner = product of those after it.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/parallel.h"

namespace qatlab {
namespace {


// A dimension index, negative counting from the back, checked against the rank.
int64_t wrap_dim(const char* name, int64_t dim, const Shape& shape) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t d = dim < 0 ? dim + rank : dim;
  QATLAB_CHECK(d >= 0 && d < rank,
            std::string(name) + ": dim " + std::to_string(dim) + " out of range for shape " + shape_str(shape));
  return d;
}

int64_t product(const Shape& s, int64_t begin, int64_t end) {
  int64_t p = 1;
  for (int64_t d = begin; d < end; ++d) p *= s[d];
  return p;
}

// dst (C, R) = (or +=) transpose of src (R, C). Square tiles keep both sides in cache.
void transpose_into(const float* src, int64_t rows, int64_t cols, float* dst, bool accumulate) {
  constexpr int64_t kTile = 32;
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t t = 0; t < row_tiles; ++t) {
    const int64_t r0 = t * kTile, r1 = std::min(rows, r0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          float& d = dst[c * rows + r];
          d = accumulate ? d + src[r * cols + c] : src[r * cols + c];
        }
    }
  }
}

}  // namespace

Tensor reshape(const Tensor& x, const Shape& shape) {
  Shape resolved = shape;
  int64_t infer = -1;  // index of the -1 dimension, if any
  int64_t known = 1;   // product of the other dimensions
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      QATLAB_CHECK(infer < 0, "reshape: more than one -1 in " + shape_str(shape));
      infer = static_cast<int64_t>(d);
    } else {
      QATLAB_CHECK(shape[d] >= 0, "reshape: negative dimension in " + shape_str(shape));
      known *= shape[d];
    }
  }
  if (infer >= 0) {
    QATLAB_CHECK(known > 0 && x.numel() % known == 0,
              "reshape: cannot infer the -1 of " + shape_str(shape) + " for " + shape_str(x.shape()) + " (" +
                  std::to_string(x.numel()) + " elements)");
    resolved[infer] = x.numel() / known;
  }
  QATLAB_CHECK(shape_numel(resolved) == x.numel(), "reshape: " + shape_str(x.shape()) + " (" +
                                                    std::to_string(x.numel()) + " elements) into " +
                                                    shape_str(shape));

  // Storage is contiguous, so the new shape is a new handle on the same buffer.
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = resolved;
  impl->numel = x.numel();
  impl->data = x.impl()->data;
  Tensor out(std::move(impl));
  record_op(out, "reshape", {x}, [x](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();
    const float* g = grad_out.data();
    const int64_t n = grad_out.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) gx[i] += g[i];
  });
  return out;
}

Tensor flatten(const Tensor& x, int64_t start_dim) {
  const int64_t d0 = wrap_dim("flatten", start_dim, x.shape());
  Shape shape(x.shape().begin(), x.shape().begin() + d0);
  shape.push_back(product(x.shape(), d0, x.dim()));
  return reshape(x, shape);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  const int64_t d = wrap_dim("slice", dim, x.shape());
  const int64_t size = x.shape()[d];
  QATLAB_CHECK(0 <= start && start <= end && end <= size,
            "slice: [" + std::to_string(start) + ", " + std::to_string(end) + ") along dim " + std::to_string(dim) +
                " of " + shape_str(x.shape()) + ", expected 0 <= start <= end <= " + std::to_string(size));
  const int64_t outer = product(x.shape(), 0, d);
  const int64_t inner = product(x.shape(), d + 1, x.dim());
  const int64_t len = end - start;
  Shape out_shape = x.shape();
  out_shape[d] = len;
  Tensor out = Tensor::empty(out_shape);  // (outer, len, inner)
  {
    const float* px = x.data();  // (outer, size, inner)
    float* po = out.data();
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(po + o * len * inner, px + (o * size + start) * inner, sizeof(float) * len * inner);
  }
  record_op(out, "slice", {x}, [x, outer, inner, size, start, len](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();  // (outer, size, inner)
    const float* g = grad_out.data();  // (outer, len, inner)
#pragma omp parallel for schedule(static) if (outer * len * inner >= kParallelMin)
    for (int64_t o = 0; o < outer; ++o) {
      float* dst = gx + (o * size + start) * inner;
      const float* src = g + o * len * inner;
      for (int64_t k = 0; k < len * inner; ++k) dst[k] += src[k];
    }
  });
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  QATLAB_CHECK(!xs.empty(), "concat: no tensors given");
  const Shape& first = xs[0].shape();
  QATLAB_CHECK(!first.empty(), "concat: cannot concatenate tensors of shape ()");
  const int64_t d = wrap_dim("concat", dim, first);
  Shape out_shape = first;
  out_shape[d] = 0;
  std::vector<int64_t> sizes(xs.size());  // each input's extent along d
  for (size_t t = 0; t < xs.size(); ++t) {
    const Shape& s = xs[t].shape();
    bool match = s.size() == first.size();
    for (size_t k = 0; match && k < s.size(); ++k) match = static_cast<int64_t>(k) == d || s[k] == first[k];
    QATLAB_CHECK(match, "concat: tensor " + std::to_string(t) + " has shape " + shape_str(s) + ", tensor 0 has " +
                         shape_str(first) + "; all dimensions but dim " + std::to_string(dim) + " must match");
    sizes[t] = s[d];
    out_shape[d] += s[d];
  }
  const int64_t outer = product(first, 0, d);
  const int64_t inner = product(first, d + 1, static_cast<int64_t>(first.size()));
  const int64_t total = out_shape[d];
  Tensor out = Tensor::empty(out_shape);  // (outer, total, inner)
  {
    float* po = out.data();
    int64_t offset = 0;  // where tensor t starts along d
    for (size_t t = 0; t < xs.size(); ++t) {
      const float* px = xs[t].data();  // (outer, sizes[t], inner)
      for (int64_t o = 0; o < outer; ++o)
        std::memcpy(po + (o * total + offset) * inner, px + o * sizes[t] * inner, sizeof(float) * sizes[t] * inner);
      offset += sizes[t];
    }
  }
  record_op(out, "concat", xs, [xs, sizes, outer, inner, total](const Tensor& grad_out) {
    const float* g = grad_out.data();  // (outer, total, inner)
    int64_t offset = 0;
    for (size_t t = 0; t < xs.size(); ++t) {
      if (xs[t].requires_grad()) {
        Tensor input = xs[t];
        float* gx = input.mutable_grad();  // (outer, sizes[t], inner)
        const int64_t len = sizes[t] * inner;
        for (int64_t o = 0; o < outer; ++o) {
          const float* src = g + (o * total + offset) * inner;
          float* dst = gx + o * len;
          for (int64_t k = 0; k < len; ++k) dst[k] += src[k];
        }
      }
      offset += sizes[t];
    }
  });
  return out;
}

Tensor transpose2d(const Tensor& x) {
  QATLAB_CHECK(x.dim() == 2, "transpose2d: expected a 2-d tensor, got " + shape_str(x.shape()));
  const int64_t m = x.size(0), n = x.size(1);
  Tensor out = Tensor::empty({n, m});
  transpose_into(x.data(), m, n, out.data(), /*accumulate=*/false);
  record_op(out, "transpose2d", {x}, [x, m, n](const Tensor& grad_out) {
    Tensor input = x;
    // grad_out (N, M) transposed back onto x's (M, N)
    transpose_into(grad_out.data(), n, m, input.mutable_grad(), /*accumulate=*/true);
  });
  return out;
}

}  // namespace qatlab
