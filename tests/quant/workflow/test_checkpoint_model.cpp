// test_checkpoint_model.cpp: the float network under a QAT checkpoint (what `qat --from QAT.h5` quantizes
// again at other bits) holds the weights and batch-norm statistics QAT left, not the float model's.
#include "quant/workflow/checkpoint_model.h"

#include <gtest/gtest.h>

#include <cmath>

#include "quant/quant_test_util.h"

namespace qatlab {
namespace {

using test::random_input;
using test::train_a_little;

Tensor eval_forward(Module& model, const Tensor& x) {
  NoGradGuard no_grad;
  model.eval();
  return model.forward(x);
}

float max_abs_difference(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float worst = 0.0f;
  for (int64_t i = 0; i < a.numel(); ++i) worst = std::max(worst, std::abs(a.data()[i] - b.data()[i]));
  return worst;
}

TEST(CheckpointModel, TheFloatModelUnderAQatCheckpointHoldsWhatQatTrained) {
  Checkpoint ckpt;
  ckpt.model_name = "lenet5";  // convs with batch norm
  ckpt.model_kind = "qat";
  ckpt.spec = ModelSpec{1, 28, 28, 10};
  // Observer quantizers: set_fake_quant_enabled turns them off, so the QAT model can compute in float.
  const QConfig qconfig = QConfig::from_options(4, 4, true, "minmax", "ema", {});
  Rng rng(5);
  const ModulePtr start = build_checkpoint_model(ckpt, rng);
  const std::shared_ptr<QatModel> qat = prepare_qat(start, qconfig);
  // Steps that move the weights, the batch-norm statistics and the learned steps away from the start.
  train_a_little(qat, {8, 1, 28, 28}, 10, rng, 3, 0.05f);
  ckpt.model_state = qat->state_dict();
  const Tensor x = random_input({4, 1, 28, 28}, rng);

  // What the QAT model computes with its quantizers off: its float network (batch norm folded on the
  // running statistics), which the float model under the checkpoint computes unfolded.
  set_fake_quant_enabled(*qat, false);
  const Tensor qat_float = eval_forward(*qat, x);
  const ModulePtr under = float_model_under_qat_checkpoint(ckpt, qconfig);
  const Tensor got = eval_forward(*under, x);
  float scale = 0.0f;
  for (int64_t i = 0; i < qat_float.numel(); ++i) scale = std::max(scale, std::abs(qat_float.data()[i]));
  EXPECT_LT(max_abs_difference(got, qat_float), 1e-3f * scale);

  // Not a freshly built network: another seed's weights give other outputs.
  Rng other(6);
  const ModulePtr fresh = build_checkpoint_model(ckpt, other);
  EXPECT_GT(max_abs_difference(eval_forward(*fresh, x), got), 0.1f * scale);

  // A state that is not this model's is refused by name, as for any load.
  Checkpoint wrong = ckpt;
  wrong.model_state.pop_back();
  EXPECT_THROW(float_model_under_qat_checkpoint(wrong, qconfig), std::exception);
}

}  // namespace
}  // namespace qatlab
