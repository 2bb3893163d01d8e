// gemm.h: the float matrix product on the shifted-tap forward kernel (core/kernels/conv_taps.h), which
// is a GEMM when there is one tap: the output channels are C's rows, the input channels the inner
// dimension, the positions C's columns. Linear layers, matmul and `qatlab bench` run on it.
#pragma once

#include <cstdint>

namespace qatlab {

// A strided view of a matrix: element (i, j) at data[i * row_stride + j * col_stride]. A row-major
// (R, C) buffer is {p, C, 1}; its transpose {p, 1, C}.
struct MatrixView {
  const float* data;
  int64_t row_stride, col_stride;
};

// c (M, N), row-major with row stride ldc, = a (M, K) * b (K, N), or += with `accumulate`. Blocks of
// C spread over the threads; every element's sum runs over K in order on one thread, so the result
// does not depend on the thread count.
void gemm(int64_t m, int64_t n, int64_t k, MatrixView a, MatrixView b, float* c, int64_t ldc, bool accumulate);

}  // namespace qatlab
