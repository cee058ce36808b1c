// Learning-rate schedules of transformers' optimization.py (hf-semantics §4.3, §4.4): a multiplier
// λ(s) on the base lr, s = scheduler steps taken; the k-th optimizer step (1-based) uses lr·λ(k−1).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace llmtune {

enum class SchedulerKind { Linear, Cosine, Constant, ConstantWithWarmup };

// "linear", "cosine", "constant", "constant_with_warmup"; anything else fails listing them.
SchedulerKind parse_scheduler_name(const std::string& name);
const char* scheduler_name(SchedulerKind kind);
std::string valid_scheduler_names();

// v4 rule: warmup_steps if > 0, else ceil(max_steps · warmup_ratio). Fails on negative values or a
// ratio > 1.
int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t max_steps);

struct LrScheduler {
  SchedulerKind kind = SchedulerKind::Linear;
  double base_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t num_training_steps = 0;  // N = max_steps
  int64_t step_count = 0;          // scheduler.step() calls so far (LambdaLR last_epoch)

  // λ(s) as in §4.4 (constant ignores warmup).
  double multiplier(int64_t s) const;
  double lr_at(int64_t s) const { return base_lr * multiplier(s); }
  // The lr the next optimizer step uses.
  double current_lr() const { return lr_at(step_count); }
  void step() { ++step_count; }

  // scheduler.json: {"lr_scheduler_type", "base_lr", "warmup_steps", "num_training_steps", "step_count"}.
  nlohmann::json to_json() const;
};

// Restores only step_count from scheduler.json (the schedule itself comes from the current
// arguments, as HF's LambdaLR state holds no lambda); fails clearly on a malformed file.
void load_scheduler_state(LrScheduler& s, const nlohmann::json& j, const std::string& source_name);

}  // namespace llmtune
