// ops_linear.cpp: the fully connected map y = x w^T + b and its gradients, on our GEMM (gemm.h).
//
// Shape letters: N batch, IN input features, OUT output features.
#include <Eigen/Core>

#include "core/gemm.h"
#include "core/ops.h"

namespace qatlab {

namespace {
using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapMatrix = Eigen::Map<RowMatrix>;
using ConstMapMatrix = Eigen::Map<const RowMatrix>;
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  QATLAB_CHECK(x.dim() == 2, "linear: input must be (N, IN), got " + shape_str(x.shape()));
  QATLAB_CHECK(w.dim() == 2 && w.size(1) == x.size(1),
            "linear: weight " + shape_str(w.shape()) + " does not fit input " + shape_str(x.shape()));
  const int64_t n = x.size(0), in = x.size(1), out = w.size(0);
  QATLAB_CHECK(!b.defined() || b.shape() == Shape{out},
            "linear: bias must be (" + std::to_string(out) + "), got " + (b.defined() ? shape_str(b.shape()) : ""));

  Tensor y = Tensor::empty({n, out});  // (N, OUT)
  MapMatrix ym(y.data(), n, out);
  gemm(n, out, in, {x.data(), in, 1}, {w.data(), 1, in}, y.data(), out, false);  // x w^T
  if (b.defined()) ym.rowwise() += Eigen::Map<const Eigen::RowVectorXf>(b.data(), out);

  record_op(y, "linear", {x, w, b}, [x, w, b, n, in, out](const Tensor& gy) mutable {
    ConstMapMatrix dy(gy.data(), n, out);
    if (x.requires_grad()) gemm(n, in, out, {gy.data(), out, 1}, {w.data(), in, 1}, x.mutable_grad(), in, true);  // dy w
    if (w.requires_grad())
      gemm(out, in, n, {gy.data(), 1, out}, {x.data(), in, 1}, w.mutable_grad(), in, true);  // dy^T x
    if (b.defined() && b.requires_grad())
      Eigen::Map<Eigen::RowVectorXf>(b.mutable_grad(), out) += dy.colwise().sum();
  });
  return y;
}

}  // namespace qatlab
