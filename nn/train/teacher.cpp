// teacher.cpp: loading and checking distillation teachers, and their ensemble (teacher.h).
#include "nn/train/teacher.h"

#include <filesystem>
#include <set>
#include <stdexcept>

#include "core/ops.h"
#include "nn/checkpoint.h"

namespace qatlab {

TeacherEnsemble::TeacherEnsemble(const std::vector<ModulePtr>& members) : Module("TeacherEnsemble") {
  if (members.size() < 2)
    throw std::invalid_argument("TeacherEnsemble: " + std::to_string(members.size()) +
                                " members, expected at least 2 (one teacher is used as it is)");
  for (const ModulePtr& m : members) {
    if (!m) throw std::invalid_argument("TeacherEnsemble: member " + std::to_string(members_) + " is null");
    register_module(std::to_string(members_++), m);
  }
}

Tensor TeacherEnsemble::forward(const Tensor& x) {
  // Summed in member order, then scaled once: the same rows give the same logits whatever else is in
  // the batch, as a single network's do.
  Tensor sum = (*children().front().second)(x);
  for (size_t k = 1; k < children().size(); ++k) {
    const Tensor y = (*children()[k].second)(x);
    if (y.shape() != sum.shape())
      throw std::invalid_argument("TeacherEnsemble: member " + std::to_string(k) + " gives " + shape_str(y.shape()) +
                                  ", member 0 " + shape_str(sum.shape()) + ": the members must give the same shape");
    sum = add(sum, y);
  }
  return scale(sum, 1.0f / static_cast<float>(members_));
}

std::string TeacherEnsemble::describe() const { return "members=" + std::to_string(members_) + ", mean of logits"; }

namespace {

ModulePtr load_one(const std::string& path, const DataBundle& data) {
  const Checkpoint t = load_checkpoint(path);
  if (t.model_kind != "float")
    throw std::invalid_argument("teacher " + path + " is a '" + t.model_kind + "' checkpoint; the teacher is a float one");
  const ModelSpec& s = t.spec;
  const ModelSpec& d = data.spec;
  if (s.channels != d.channels || s.height != d.height || s.width != d.width || s.num_classes != d.num_classes)
    throw std::invalid_argument("teacher " + path + " was built for " + std::to_string(s.channels) + "x" +
                                std::to_string(s.height) + "x" + std::to_string(s.width) + " images and " +
                                std::to_string(s.num_classes) + " classes; this run's data has " +
                                std::to_string(d.channels) + "x" + std::to_string(d.height) + "x" +
                                std::to_string(d.width) + " and " + std::to_string(d.num_classes));
  // The teacher sees the run's images as normalised for the student: they must be normalised as it learnt them.
  const DataRecord r = data_record(t);
  if (!r.mean.empty() && (r.mean != data.mean || r.std != data.std))
    throw std::invalid_argument("teacher " + path + " normalises its inputs with mean " + floats_text(r.mean) +
                                ", std " + floats_text(r.std) + "; this run with mean " + floats_text(data.mean) +
                                ", std " + floats_text(data.std) + " (give --mean / --std)");
  return model_from_checkpoint(t);
}

}  // namespace

ModulePtr load_teachers(const std::vector<std::string>& paths, const DataBundle& data) {
  if (paths.empty()) throw std::invalid_argument("load_teachers: no teacher checkpoint given");
  std::set<std::string> seen;
  for (const std::string& p : paths)
    if (!seen.insert(std::filesystem::weakly_canonical(p).string()).second)
      throw std::invalid_argument("teacher " + p + " is named twice (each teacher counts once in the average)");
  if (paths.size() == 1) return load_one(paths.front(), data);
  std::vector<ModulePtr> members;
  for (const std::string& p : paths) members.push_back(load_one(p, data));
  return std::make_shared<TeacherEnsemble>(members);
}

}  // namespace qatlab
