// LR schedules (linear, cosine, constant, constant_with_warmup) and their state file.
#include "train/scheduler.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/error.h"

namespace llmtune {

std::string valid_scheduler_names() { return "linear, cosine, constant, constant_with_warmup"; }

SchedulerKind parse_scheduler_name(const std::string& name) {
  if (name == "linear") return SchedulerKind::Linear;
  if (name == "cosine") return SchedulerKind::Cosine;
  if (name == "constant") return SchedulerKind::Constant;
  if (name == "constant_with_warmup") return SchedulerKind::ConstantWithWarmup;
  fail("unknown lr_scheduler_type '", name, "'; valid: ", valid_scheduler_names());
}

const char* scheduler_name(SchedulerKind kind) {
  switch (kind) {
    case SchedulerKind::Linear: return "linear";
    case SchedulerKind::Cosine: return "cosine";
    case SchedulerKind::Constant: return "constant";
    case SchedulerKind::ConstantWithWarmup: return "constant_with_warmup";
  }
  return "?";
}

int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t max_steps) {
  LLMTUNE_CHECK(warmup_steps >= 0, "warmup_steps must be >= 0 (got ", warmup_steps, ")");
  LLMTUNE_CHECK(warmup_ratio >= 0 && warmup_ratio <= 1, "warmup_ratio must be in [0, 1] (got ", warmup_ratio, ")");
  if (warmup_steps > 0) return warmup_steps;
  return int64_t(std::ceil(double(max_steps) * warmup_ratio));
}

double LrScheduler::multiplier(int64_t s) const {
  const int64_t w = warmup_steps, N = num_training_steps;
  if (kind == SchedulerKind::Constant) return 1.0;
  if (s < w) return double(s) / double(std::max<int64_t>(1, w));
  switch (kind) {
    case SchedulerKind::Linear:
      return std::max(0.0, double(N - s) / double(std::max<int64_t>(1, N - w)));
    case SchedulerKind::Cosine: {
      const double progress = double(s - w) / double(std::max<int64_t>(1, N - w));
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress)));
    }
    default:
      return 1.0;
  }
}

nlohmann::json LrScheduler::to_json() const {
  return {{"lr_scheduler_type", scheduler_name(kind)},
          {"base_lr", base_lr},
          {"warmup_steps", warmup_steps},
          {"num_training_steps", num_training_steps},
          {"step_count", step_count}};
}

void load_scheduler_state(LrScheduler& s, const nlohmann::json& j, const std::string& source_name) {
  if (!j.is_object() || !j.contains("step_count") || !j["step_count"].is_number_integer() ||
      j["step_count"].get<int64_t>() < 0)
    fail(source_name, ": field 'step_count' is missing or not a non-negative integer");
  s.step_count = j["step_count"].get<int64_t>();
}

}  // namespace llmtune
