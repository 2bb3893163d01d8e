// test_explain.cpp: the step-by-step walk-through of one integer output arrives at the very code the
// integer graph computes, for every conv / fully connected layer of LeNet-5, at 8 and at 4 bits,
// including positions whose window reaches into the padding.
#include <gtest/gtest.h>

#include "core/ops.h"
#include "nn/zoo.h"
#include "quant/convert.h"
#include "quant/explain.h"
#include "quant/prepare.h"

namespace qatlab {
namespace {

Tensor random_images(int64_t n, Rng& rng) {
  Tensor t = Tensor::empty({n, 1, 28, 28});
  for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = rng.normal();
  return t;
}

// LeNet-5 with observers that have seen a few batches, converted.
Int8Graph lenet_graph(int bits, Rng& rng) {
  const QConfig q = QConfig::from_options(bits, bits, true, "minmax", "minmax", {});
  auto model = prepare_qat(make_model("lenet5", ModelSpec{}, rng), q);
  model->train();
  {
    NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(random_images(8, rng));
  }
  model->eval();
  return convert(*model, {1, 28, 28});
}

TEST(Explain, WalkThroughEqualsTheGraphEverywhere) {
  for (int bits : {8, 4}) {
    Rng rng(11 + bits);
    const Int8Graph graph = lenet_graph(bits, rng);
    const Tensor image = random_images(1, rng);
    const std::vector<std::string> layers = explainable_ops(graph);
    ASSERT_EQ(layers.size(), 5u);  // 2 convs, 3 fully connected
    int checked = 0;
    for (const std::string& layer : layers)
      for (int64_t c : {0, 5})
        for (int64_t yx : {0, -1}) {
          const ExplainCheck e = explain_check(graph, layer, image, {c, yx, yx});
          EXPECT_EQ(e.computed, e.graph) << layer << " channel " << c << " at " << yx << ", W" << bits;
          ++checked;
        }
    EXPECT_EQ(checked, 20);
  }
}

TEST(Explain, TextShowsEveryStepAndAgrees) {
  Rng rng(5);
  const Int8Graph graph = lenet_graph(8, rng);
  const std::string name = explainable_ops(graph)[1];
  const std::string text = explain_output(graph, name, random_images(1, rng), {2, -1, -1});
  for (const char* part : {"1. Grids", "input_offset", "2. Accumulate in int32", "accumulator acc",
                           "output_multiplier", "rounded once", "clamp to", "the same."})
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
}

TEST(Explain, BadLayerOrPositionNamesWhatIsValid) {
  Rng rng(6);
  const Int8Graph graph = lenet_graph(8, rng);
  const Tensor image = random_images(1, rng);
  try {
    explain_output(graph, "features.99", image, {});
    FAIL() << "an unknown layer was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(explainable_ops(graph)[0]), std::string::npos) << e.what();
  }
  EXPECT_THROW(explain_output(graph, explainable_ops(graph)[0], image, {1000, 0, 0}), std::invalid_argument);
  EXPECT_THROW(explain_output(graph, explainable_ops(graph)[0], random_images(2, rng), {}), std::invalid_argument);
}

}  // namespace
}  // namespace qatlab
