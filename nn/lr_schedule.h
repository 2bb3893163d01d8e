// lr_schedule.h: learning-rate schedules as pure functions of the iteration, so a resumed run gets the
// same learning rate as an uninterrupted one without saving any schedule state.
//
// A schedule is an optional linear warm-up followed by a main schedule whose epoch count starts after
// the warm-up:
//   warm-up (iteration i < W = warmup_epochs * iters_per_epoch, per iteration):
//     lr = base_lr * (warmup_start_factor + (1 - warmup_start_factor) * i / W)
//   main, with j = i - W and e = j / iters_per_epoch (whole epochs after the warm-up):
//     constant   lr = base_lr
//     step       lr = base_lr * gamma^(e / step_epochs)                    (PyTorch StepLR, per epoch)
//     multistep  lr = base_lr * gamma^(number of milestones <= e)          (PyTorch MultiStepLR, per epoch)
//     cosine     lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * j / J)) / 2, per iteration, with
//                J = (total_epochs - warmup_epochs) * iters_per_epoch; lr stays min_lr after J
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qatlab {

struct LrSchedule {
  std::string kind = "constant";  // constant | step | multistep | cosine
  float base_lr = 0.0f;           // required (validation rejects 0)
  int64_t step_epochs = 30;       // step: epochs between decays
  float gamma = 0.1f;             // step, multistep: factor per decay
  std::vector<int64_t> milestones;  // multistep: epochs (after warm-up) at which to decay, increasing
  float min_lr = 0.0f;            // cosine: the final learning rate
  int64_t warmup_epochs = 0;
  float warmup_start_factor = 0.1f;  // warm-up starts at this fraction of base_lr
};

// Throws std::invalid_argument naming the field, its value and what was expected: unknown kind (the
// message lists the choices), base_lr <= 0, gamma <= 0, step_epochs <= 0, milestones not positive or not
// strictly increasing, min_lr outside [0, base_lr], warmup_epochs < 0, warmup_start_factor outside (0, 1].
void validate_schedule(const LrSchedule& schedule);

// "30,60,80" -> {30, 60, 80}; "" -> {}. Throws on anything but comma-separated integers.
std::vector<int64_t> parse_milestones(const std::string& csv);

// A validated schedule of the named kind with the given base rate and milestones (as "30,60,80"); the
// other fields keep their defaults. Callers that change fields afterwards call validate_schedule again.
LrSchedule parse_schedule(const std::string& kind, float base_lr, const std::string& milestones_csv = "");

// The learning rate for 0-based `iteration` (counted over the whole run, warm-up included). Throws if
// the schedule is invalid, iteration < 0, iters_per_epoch <= 0, warmup_epochs > total_epochs, or for
// cosine, total_epochs <= warmup_epochs (nothing left to anneal over).
float lr_at(const LrSchedule& schedule, int64_t iteration, int64_t iters_per_epoch, int64_t total_epochs);

}  // namespace qatlab
