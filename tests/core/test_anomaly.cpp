// test_anomaly.cpp: with anomaly detection on, the first op whose output, or whose backward's gradient,
// holds a NaN or an infinity throws AnomalyError naming the op (and its module, with a profiler naming
// the modules); off, the same values pass unchecked; and the guard restores what was before it.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "core/anomaly.h"
#include "core/ops.h"
#include "core/profiler.h"

namespace qatlab {
namespace {

Tensor leaf(std::vector<float> values) {
  Tensor t = Tensor::from_vector({static_cast<int64_t>(values.size())}, values);
  t.set_requires_grad(true);
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const AnomalyError& e) {
    return e.what();
  }
  return "";
}

TEST(Anomaly, ForwardNamesTheOpWhoseOutputIsNotFinite) {
  const Tensor x = leaf({1.0f, -2.0f, 4.0f});
  AnomalyDetection on;
  const Tensor y = exp(x);  // finite
  const std::string what = error_of([&] { (void)log(mul(x, y)); });
  EXPECT_NE(what.find("op 'log'"), std::string::npos) << what;
  EXPECT_NE(what.find("gave NaN in its output (element 1 of (3); 1 of its 3 values not finite)"), std::string::npos) << what;
}

TEST(Anomaly, BackwardNamesTheOpWhoseGradientIsNotFinite) {
  // sqrt(0) is 0, finite; its gradient 1 / (2 sqrt(0)) is infinite.
  const Tensor x = leaf({0.0f, 1.0f});
  AnomalyDetection on;
  Tensor loss = sum(sqrt(x));
  const std::string what = error_of([&] { loss.backward(); });
  EXPECT_NE(what.find("the backward of op 'sqrt' gave infinity in the gradient of its input 1 of 1 (element 0 of (2);"),
            std::string::npos)
      << what;
  EXPECT_NE(what.find("values not finite) from a finite output gradient"), std::string::npos) << what;
}

TEST(Anomaly, NamesTheModuleWhenAProfilerNamesIt) {
  static const int module = 0;
  Profiler names;
  names.name_module(&module, "net.head");
  const Tensor x = leaf({-1.0f});
  AnomalyDetection on;
  ProfilerSession session(names);
  ProfileScope scope(&module);
  const std::string what = error_of([&] { (void)log(x); });
  EXPECT_NE(what.find("op 'log' in net.head gave NaN"), std::string::npos) << what;
}

TEST(Anomaly, OffTheSameValuesPassAndTheGuardRestoresTheState) {
  EXPECT_FALSE(anomaly_detection());
  {
    AnomalyDetection outer;
    {
      AnomalyDetection inner;
      EXPECT_TRUE(anomaly_detection());
    }
    EXPECT_TRUE(anomaly_detection());  // the inner guard restores on, not off
  }
  EXPECT_FALSE(anomaly_detection());
  const Tensor x = leaf({0.0f, -1.0f});
  const Tensor y = log(x);  // -inf and NaN: unchecked
  EXPECT_TRUE(std::isinf(y.data()[0]));
  EXPECT_TRUE(std::isnan(y.data()[1]));
  Tensor loss = sum(sqrt(leaf({0.0f})));
  EXPECT_NO_THROW(loss.backward());
}

TEST(Anomaly, ChecksOpsWithoutGradientsToo) {
  // An op recorded while nothing needs a gradient (evaluation) is checked as well.
  const Tensor x = Tensor::from_vector({1}, {-1.0f});
  AnomalyDetection on;
  EXPECT_NE(error_of([&] { (void)log(x); }).find("op 'log'"), std::string::npos);
}

}  // namespace
}  // namespace qatlab
