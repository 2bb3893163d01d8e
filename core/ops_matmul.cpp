// ops_matmul.cpp: the matrix product of two 2-d tensors, on our GEMM (gemm.h).
//
// Shape letters: A (M, K), B (K, N), C = A B (M, N), all row-major.
#include <string>

#include "core/gemm.h"
#include "core/ops.h"

namespace qatlab {

Tensor matmul(const Tensor& a, const Tensor& b) {
  QATLAB_CHECK(a.dim() == 2 && b.dim() == 2,
            "matmul: expected 2-d tensors, got " + shape_str(a.shape()) + " x " + shape_str(b.shape()));
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  QATLAB_CHECK(b.size(0) == k, "matmul: " + shape_str(a.shape()) + " x " + shape_str(b.shape()) +
                                ": inner dimensions " + std::to_string(k) + " and " + std::to_string(b.size(0)) +
                                " differ");
  Tensor out = Tensor::empty({m, n});
  gemm(m, n, k, {a.data(), k, 1}, {b.data(), n, 1}, out.data(), n, false);

  record_op(out, "matmul", {a, b}, [a, b, m, k, n](const Tensor& grad_out) {
    const float* dc = grad_out.data();  // (M, N)
    if (a.requires_grad()) gemm(m, k, n, {dc, n, 1}, {b.data(), 1, n}, a.mutable_grad(), k, true);  // dA = dC B^T
    if (b.requires_grad()) gemm(k, n, m, {a.data(), 1, k}, {dc, n, 1}, b.mutable_grad(), n, true);  // dB = A^T dC
  });
  return out;
}

}  // namespace qatlab
