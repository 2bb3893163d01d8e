// test_gemm.cpp: the float GEMM (core/gemm.h) against loops in double, on every float path this CPU
// has: shapes around the tile and panel edges, transposed views, accumulation, an empty inner
// dimension, and a product large enough to spread over threads.
#include <iostream>
#include <vector>

#include <gtest/gtest.h>

#include "core/cpu_features.h"
#include "core/gemm.h"
#include "core/rng.h"

namespace qatlab {
namespace {

struct Case {
  int64_t m, n, k;
  bool a_transposed, b_transposed, accumulate;
};

// c (+)= a b with a and b given as views of row-major buffers (transposed or not), in double.
std::vector<float> reference(const Case& t, const std::vector<float>& a, const std::vector<float>& b,
                             std::vector<float> c) {
  for (int64_t i = 0; i < t.m; ++i)
    for (int64_t j = 0; j < t.n; ++j) {
      double s = t.accumulate ? c[i * t.n + j] : 0.0;
      for (int64_t p = 0; p < t.k; ++p) {
        const float av = t.a_transposed ? a[p * t.m + i] : a[i * t.k + p];
        const float bv = t.b_transposed ? b[j * t.k + p] : b[p * t.n + j];
        s += static_cast<double>(av) * bv;
      }
      c[i * t.n + j] = static_cast<float>(s);
    }
  return c;
}

TEST(Gemm, MatchesLoopsOnEveryFloatPath) {
  std::vector<Case> cases;
  for (int64_t m : {1, 3, 4, 7, 8, 9, 17})
    for (int64_t n : {1, 15, 16, 47, 48, 49, 100})
      cases.push_back({m, n, 5 + m % 4, m % 2 == 1, n % 2 == 0, (m + n) % 3 == 0});
  cases.push_back({5, 6, 0, false, false, false});  // empty inner dimension: zeros
  cases.push_back({5, 6, 0, false, true, true});    // ... or c unchanged
  cases.push_back({150, 200, 160, false, true, true});  // over the threshold for threads
  const FloatPath saved = active_float_path();
  for (FloatPath path : {FloatPath::Portable, FloatPath::Avx2, FloatPath::Avx512}) {
    if (!float_path_supported(path)) {
      std::cout << "[  SKIPPED ] float path " << float_path_name(path) << ": not supported by this CPU\n";
      continue;
    }
    set_float_path(path);
    Rng rng(11);
    for (const Case& t : cases) {
      SCOPED_TRACE(std::string(float_path_name(path)) + " " + std::to_string(t.m) + "x" + std::to_string(t.n) + "x" +
                   std::to_string(t.k));
      std::vector<float> a(t.m * t.k), b(t.k * t.n), c(t.m * t.n);
      for (float& v : a) v = rng.uniform(-1.0f, 1.0f);
      for (float& v : b) v = rng.uniform(-1.0f, 1.0f);
      for (float& v : c) v = rng.uniform(-1.0f, 1.0f);
      const std::vector<float> expected = reference(t, a, b, c);
      const MatrixView av = t.a_transposed ? MatrixView{a.data(), 1, t.m} : MatrixView{a.data(), t.k, 1};
      const MatrixView bv = t.b_transposed ? MatrixView{b.data(), 1, t.k} : MatrixView{b.data(), t.n, 1};
      gemm(t.m, t.n, t.k, av, bv, c.data(), t.n, t.accumulate);
      for (size_t i = 0; i < c.size(); ++i) ASSERT_NEAR(c[i], expected[i], 1e-4) << "element " << i;
    }
  }
  set_float_path(saved);
}

}  // namespace
}  // namespace qatlab
