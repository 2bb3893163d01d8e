// lr_schedule.cpp: the closed-form learning rate of each schedule at a given iteration.
#include "nn/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numbers>
#include <stdexcept>

namespace qatlab {

namespace {

enum class ScheduleKind { kConstant, kStep, kMultistep, kCosine };

const char* const kChoices = "constant, step, multistep or cosine";

ScheduleKind kind_of(const std::string& kind) {
  if (kind == "constant") return ScheduleKind::kConstant;
  if (kind == "step") return ScheduleKind::kStep;
  if (kind == "multistep") return ScheduleKind::kMultistep;
  if (kind == "cosine") return ScheduleKind::kCosine;
  throw std::invalid_argument("unknown lr schedule '" + kind + "' (expected " + kChoices + ")");
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument("lr schedule: " + message);
}

}  // namespace

void validate_schedule(const LrSchedule& s) {
  kind_of(s.kind);
  require(std::isfinite(s.base_lr) && s.base_lr > 0.0f, "base_lr must be > 0, got " + num(s.base_lr));
  require(std::isfinite(s.gamma) && s.gamma > 0.0f, "gamma must be > 0, got " + num(s.gamma));
  require(s.step_epochs > 0, "step_epochs must be > 0, got " + std::to_string(s.step_epochs));
  for (size_t i = 0; i < s.milestones.size(); ++i) {
    require(s.milestones[i] > 0, "milestones must be positive epochs, got " + std::to_string(s.milestones[i]));
    if (i > 0)
      require(s.milestones[i] > s.milestones[i - 1],
              "milestones must increase, got " + std::to_string(s.milestones[i - 1]) + " then " +
                  std::to_string(s.milestones[i]));
  }
  require(s.min_lr >= 0.0f && s.min_lr <= s.base_lr,
          "min_lr must be in [0, base_lr = " + num(s.base_lr) + "], got " + num(s.min_lr));
  require(s.warmup_epochs >= 0, "warmup_epochs must be >= 0, got " + std::to_string(s.warmup_epochs));
  require(s.warmup_start_factor > 0.0f && s.warmup_start_factor <= 1.0f,
          "warmup_start_factor must be in (0, 1], got " + num(s.warmup_start_factor));
}

std::vector<int64_t> parse_milestones(const std::string& csv) {
  std::vector<int64_t> out;
  if (csv.empty()) return out;
  size_t start = 0;
  while (true) {
    const size_t end = csv.find(',', start);
    const std::string item = csv.substr(start, end == std::string::npos ? std::string::npos : end - start);
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(!item.empty() && used == item.size(),
            "milestones must be comma-separated integers like \"30,60,80\", got \"" + csv + "\"");
    out.push_back(value);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

LrSchedule parse_schedule(const std::string& kind, float base_lr, const std::string& milestones_csv) {
  LrSchedule s;
  s.kind = kind;
  s.base_lr = base_lr;
  s.milestones = parse_milestones(milestones_csv);
  validate_schedule(s);
  return s;
}

float lr_at(const LrSchedule& s, int64_t iteration, int64_t iters_per_epoch, int64_t total_epochs) {
  validate_schedule(s);
  const ScheduleKind kind = kind_of(s.kind);
  require(iteration >= 0, "iteration must be >= 0, got " + std::to_string(iteration));
  require(iters_per_epoch > 0, "iters_per_epoch must be > 0, got " + std::to_string(iters_per_epoch));
  require(s.warmup_epochs <= total_epochs, "warmup_epochs (" + std::to_string(s.warmup_epochs) +
                                               ") exceeds total_epochs (" + std::to_string(total_epochs) + ")");
  if (kind == ScheduleKind::kCosine)
    require(total_epochs > s.warmup_epochs, "cosine needs total_epochs (" + std::to_string(total_epochs) +
                                                ") > warmup_epochs (" + std::to_string(s.warmup_epochs) + ")");

  // Double throughout: the rate is rounded to float once, at the end.
  const double base = s.base_lr;
  const int64_t warmup_iters = s.warmup_epochs * iters_per_epoch;
  if (iteration < warmup_iters) {
    const double f = s.warmup_start_factor;
    return static_cast<float>(base * (f + (1.0 - f) * static_cast<double>(iteration) / warmup_iters));
  }

  const int64_t j = iteration - warmup_iters;  // iterations into the main schedule
  const int64_t epoch = j / iters_per_epoch;
  switch (kind) {
    case ScheduleKind::kConstant:
      return s.base_lr;
    case ScheduleKind::kStep:
      return static_cast<float>(base * std::pow(static_cast<double>(s.gamma), static_cast<double>(epoch / s.step_epochs)));
    case ScheduleKind::kMultistep: {
      // upper_bound: a milestone m has taken effect once epoch >= m.
      const auto passed = std::upper_bound(s.milestones.begin(), s.milestones.end(), epoch) - s.milestones.begin();
      return static_cast<float>(base * std::pow(static_cast<double>(s.gamma), static_cast<double>(passed)));
    }
    case ScheduleKind::kCosine: {
      const int64_t main_iters = (total_epochs - s.warmup_epochs) * iters_per_epoch;
      const double t = static_cast<double>(std::min(j, main_iters)) / static_cast<double>(main_iters);
      const double lo = s.min_lr;
      return static_cast<float>(lo + (base - lo) * 0.5 * (1.0 + std::cos(std::numbers::pi * t)));
    }
  }
  return s.base_lr;  // unreachable: every kind is handled above
}

}  // namespace qatlab
