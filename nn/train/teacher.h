// teacher.h: the teachers of knowledge distillation (distill.h): float checkpoints loaded and checked
// against the run's data, and several of them taken as one teacher, the average of their logits.
//
// Why several: an ensemble of independently trained networks is more accurate than any of them, and a
// student distilled from it can learn some of that gain while keeping one network's size (Hinton et al.
// 2015, section 2; "born-again" students of ensembles, Furlanello et al. 2018). Averaging logits is the
// geometric mean of the members' softened outputs, renormalised, at every temperature.
//
// Shape letters: N rows (images), C classes.
#pragma once

#include <string>
#include <vector>

#include "nn/module.h"
#include "nn/train/data_bundle.h"

namespace qatlab {

// A teacher made of several networks: forward(x) = (1 / K) * sum over members of member(x), K >= 2, each
// member's output (N, C) with the same shape. Members are children "0", "1", ... (state dicts and
// printouts see them); a module whose training mode is set sets theirs.
class TeacherEnsemble : public Module {
 public:
  // Throws std::invalid_argument for fewer than two members or a null one.
  explicit TeacherEnsemble(const std::vector<ModulePtr>& members);
  Tensor forward(const Tensor& x) override;
  std::string describe() const override;
  int64_t members() const { return members_; }

 private:
  int64_t members_ = 0;
};

// The teacher of a run on `data` from float checkpoints: one checkpoint's network, or the
// TeacherEnsemble of several (in the order given). Each must be a float model built for the data's image
// shape and classes that normalises its inputs as the data does (the teacher sees the student's
// normalised images). Throws std::invalid_argument naming the file and the difference (also for an empty
// list and a file named twice), and what load_checkpoint throws for a file that cannot be read.
ModulePtr load_teachers(const std::vector<std::string>& paths, const DataBundle& data);

}  // namespace qatlab
