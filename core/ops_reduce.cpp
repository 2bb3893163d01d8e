// ops_reduce.cpp: sum and mean, over the whole tensor or along one dimension.
//
// A reduction along dim views x as (outer, n, inner): outer = product of the dimensions before dim,
// n = its size, inner = product of those after. The result is (outer, inner), laid out with dim
// removed (or kept as 1 with keepdim).
//
// Sums accumulate in double, each output by one thread in a fixed order, so results do not depend on
// the thread count.
#include <algorithm>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/parallel.h"

namespace qatlab {
namespace {



// sum(x) * factor, as a tensor of shape ().
Tensor reduce_all(const char* name, const Tensor& x, double factor) {
  Tensor out = Tensor::scalar(static_cast<float>(sum_in_chunks(x.data(), x.numel()) * factor));
  const float f = static_cast<float>(factor);
  record_op(out, name, {x}, [x, f](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();
    const float g = grad_out.data()[0] * f;
    const int64_t n = input.numel();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) gx[i] += g;
  });
  return out;
}

// sum(x, dim), or mean(x, dim) when average.
Tensor reduce_dim(const char* name, const Tensor& x, int64_t dim, bool keepdim, bool average) {
  const Shape& shape = x.shape();
  const int64_t rank = x.dim();
  const int64_t d = dim < 0 ? dim + rank : dim;
  QATLAB_CHECK(d >= 0 && d < rank,
            std::string(name) + ": dim " + std::to_string(dim) + " out of range for shape " + shape_str(shape));
  int64_t outer = 1, inner = 1;
  for (int64_t k = 0; k < d; ++k) outer *= shape[k];
  for (int64_t k = d + 1; k < rank; ++k) inner *= shape[k];
  const int64_t n = shape[d];
  QATLAB_CHECK(!average || n > 0, std::string(name) + ": mean over dim " + std::to_string(dim) +
                                   " of size 0 in shape " + shape_str(shape));
  const double factor = average ? 1.0 / static_cast<double>(n) : 1.0;

  Shape out_shape = shape;
  if (keepdim) {
    out_shape[d] = 1;
  } else {
    out_shape.erase(out_shape.begin() + d);
  }
  Tensor out = Tensor::empty(out_shape);  // (outer, inner)
  {
    const float* px = x.data();  // (outer, n, inner)
    float* po = out.data();
    const int64_t outputs = outer * inner;
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelMin)
    for (int64_t r = 0; r < outputs; ++r) {
      const int64_t o = r / inner, k = r % inner;
      const float* src = px + o * n * inner + k;
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += src[j * inner];
      po[r] = static_cast<float>(s * factor);
    }
  }
  const float f = static_cast<float>(factor);
  record_op(out, name, {x}, [x, outer, n, inner, f](const Tensor& grad_out) {
    Tensor input = x;
    float* gx = input.mutable_grad();  // (outer, n, inner)
    const float* g = grad_out.data();  // (outer, inner)
#pragma omp parallel for schedule(static) if (outer * n * inner >= kParallelMin)
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t j = 0; j < n; ++j) {
        float* dst = gx + (o * n + j) * inner;
        const float* src = g + o * inner;
        for (int64_t k = 0; k < inner; ++k) dst[k] += src[k] * f;
      }
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) { return reduce_all("sum", x, 1.0); }

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim("sum", x, dim, keepdim, false); }

Tensor mean(const Tensor& x) {
  QATLAB_CHECK(x.numel() > 0, "mean: empty tensor of shape " + shape_str(x.shape()));
  return reduce_all("mean", x, 1.0 / static_cast<double>(x.numel()));
}

Tensor mean(const Tensor& x, int64_t dim, bool keepdim) { return reduce_dim("mean", x, dim, keepdim, true); }

}  // namespace qatlab
