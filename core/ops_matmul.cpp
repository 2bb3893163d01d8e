// ops_matmul.cpp: the matrix product of two 2-d tensors, on Eigen's GEMM.
//
// Shape letters: A (M, K), B (K, N), C = A B (M, N). Our buffers are row-major, so they are mapped as
// row-major Eigen matrices without copying.
#include <string>

#include <Eigen/Core>

#include "core/ops.h"

namespace qatlab {
namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using MutMap = Eigen::Map<RowMajor>;

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  QATLAB_CHECK(a.dim() == 2 && b.dim() == 2,
            "matmul: expected 2-d tensors, got " + shape_str(a.shape()) + " x " + shape_str(b.shape()));
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  QATLAB_CHECK(b.size(0) == k, "matmul: " + shape_str(a.shape()) + " x " + shape_str(b.shape()) +
                                ": inner dimensions " + std::to_string(k) + " and " + std::to_string(b.size(0)) +
                                " differ");
  Tensor out = Tensor::empty({m, n});
  MutMap(out.data(), m, n).noalias() = ConstMap(a.data(), m, k) * ConstMap(b.data(), k, n);

  record_op(out, "matmul", {a, b}, [a, b, m, k, n](const Tensor& grad_out) {
    ConstMap dc(grad_out.data(), m, n);  // (M, N)
    if (a.requires_grad()) {
      Tensor ta = a;
      MutMap(ta.mutable_grad(), m, k).noalias() += dc * ConstMap(b.data(), k, n).transpose();  // dA = dC B^T
    }
    if (b.requires_grad()) {
      Tensor tb = b;
      MutMap(tb.mutable_grad(), k, n).noalias() += ConstMap(a.data(), m, k).transpose() * dc;  // dB = A^T dC
    }
  });
  return out;
}

}  // namespace qatlab
