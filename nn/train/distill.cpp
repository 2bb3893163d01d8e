// distill.cpp: the distillation loss (distill.h), from the autograd ops: its backward is theirs.
#include "nn/train/distill.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "core/format.h"
#include "core/ops.h"

namespace qatlab {

Tensor distillation_loss(const Tensor& student_logits, const Tensor& teacher_logits, float temperature) {
  if (!(std::isfinite(temperature) && temperature > 0.0f))
    throw std::invalid_argument("distillation: temperature " + num_str(temperature) + ", expected a finite value > 0");
  if (student_logits.dim() != 2 || student_logits.shape() != teacher_logits.shape())
    throw std::invalid_argument("distillation: student logits " + shape_str(student_logits.shape()) +
                                " and teacher logits " + shape_str(teacher_logits.shape()) +
                                ", expected the same (N, C) shape");
  const float inv_t = 1.0f / temperature;
  Tensor log_p, p;  // the teacher's softened distribution (N, C): targets, no gradient
  {
    NoGradGuard no_grad;
    log_p = log_softmax(scale(teacher_logits, inv_t));
    p = exp(log_p);
  }
  const Tensor log_q = log_softmax(scale(student_logits, inv_t));  // (N, C)
  const float rows = static_cast<float>(student_logits.size(0));
  return scale(sum(mul(p, sub(log_p, log_q))), temperature * temperature / rows);
}

}  // namespace qatlab
