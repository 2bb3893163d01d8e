// distill.h: knowledge distillation (Hinton et al. 2015): the loss that pulls a student's outputs toward a
// teacher's on the same images. QAT uses it with the float model as the teacher of its quantized copy:
// the float model's soft outputs carry more than the labels do (which wrong classes are close), and the
// low-bit papers use it to close the last points (LSQ, Esser et al. 2020, trains its distilled networks
// on the teacher's outputs alone, weight 1 and temperature 1).
//
// Shape letters: N rows (images), C classes.
#pragma once

#include "core/tensor.h"

namespace qatlab {

// T^2 * (1 / N) * sum over rows of KL(softmax(teacher / T) || softmax(student / T)), for (N, C) logits: 0
// when the student's softened outputs equal the teacher's, its gradient in the student's logits
// T * (softmax(s / T) - softmax(t / T)) / N. The teacher's logits take no gradient (they are targets). The
// T^2 keeps the gradient's size comparable across temperatures (Hinton et al.). Throws
// std::invalid_argument for shapes that differ or are not (N, C), and for T not finite and > 0.
Tensor distillation_loss(const Tensor& student_logits, const Tensor& teacher_logits, float temperature);

}  // namespace qatlab
