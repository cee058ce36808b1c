// GRPO math over plain arrays (hf-semantics §5.4, current TRL): group-normalised advantages, the per-token
// clipped objective with ε_low/ε_high and optional β·k3 KL, the four loss aggregations, and d loss / d logp.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "rl/rl_common.h"

namespace llmtune::rl {

enum class ScaleRewards { group, batch, none };
// "group" | "batch" | "none"; older TRL booleans "true" (= group) and "false" (= none) are accepted too.
ScaleRewards scale_rewards_from_name(std::string_view name);

struct GrpoAdvantages {
  std::vector<float> advantages;  // one per completion
  std::vector<float> std;         // the std used (group or batch), per completion, for logging
};

// rewards: N = num_groups·G completions, consecutive groups of G (TRL repeats each prompt G times in a row).
//   A_i = r_i − mean_group(r);  group/batch: A_i /= (std + 1e-4) with the unbiased std of the group / of the
//   whole batch;  none: no division.
// Guards (as current TRL): G == 1 gives std 0 per group; a batch of one completion gives batch std 0.
// A zero-variance group therefore gets advantage (r − mean)/1e-4 = 0.
GrpoAdvantages grpo_advantages(std::span<const float> rewards, int64_t num_generations, ScaleRewards scale);

enum class GrpoLossType { grpo, bnpo, dr_grpo, dapo };
GrpoLossType grpo_loss_type_from_name(std::string_view name);  // "grpo" | "bnpo" | "dr_grpo" | "dapo"

struct GrpoLossOptions {
  GrpoLossType loss_type = GrpoLossType::dapo;  // TRL ≥ 0.22 default
  double epsilon_low = 0.2;
  double epsilon_high = 0.2;
  double beta = 0.0;                  // > 0 adds β·k3 KL per token (needs ref_logp)
  std::optional<double> delta;        // two-sided clipping: coef_1 = min(coef_1, delta) (TRL `delta`)
  int64_t max_completion_length = 0;  // dr_grpo denominator (0 = use T)
  int64_t gradient_accumulation_steps = 1;  // grpo / bnpo / dr_grpo divide by it
  // dapo denominator: completion tokens of the WHOLE accumulated batch across processes / num_processes
  // (TRL's num_items_in_batch / num_processes). ≤ 0 = this micro-batch's token count (single micro-batch).
  double dapo_normalizer = 0.0;
};

struct GrpoLossStats {
  double loss = 0;
  double mean_kl = 0;             // masked mean of k3 (0 when beta == 0)
  double low_clip = 0;            // masked mean of (coef_1 < 1−ε_low and A < 0)
  double high_clip = 0;           // masked mean of (coef_1 > 1+ε_high and A > 0)
  double region_clip = 0;         // either of the above
};

// Per token (B rows × T positions, advantages one per row):
//   coef_1 = exp(logp − logp_old)  (logp_old empty = logp.detach(), i.e. num_iterations == 1: ratio 1)
//   coef_2 = clamp(coef_1, 1−ε_low, 1+ε_high);  coef_1 = min(coef_1, delta) if delta
//   l_t = −min(coef_1·A, coef_2·A) + β·(exp(ref − logp) − (ref − logp) − 1)
// Aggregation with mask m:
//   grpo:    mean_b( Σ_t l·m / max(Σ_t m, 1) ) / GA
//   bnpo:    Σ l·m / max(Σ m, 1) / GA
//   dr_grpo: Σ l·m / (B·max_completion_length) / GA
//   dapo:    Σ l·m / dapo_normalizer
// d (grad_scale·loss) / d logp is ACCUMULATED into d_logp (empty = not needed), with torch's tie rules.
GrpoLossStats grpo_loss(const GrpoLossOptions& opt, std::span<const float> logp, std::span<const float> logp_old,
                        std::span<const float> ref_logp, std::span<const float> advantages,
                        std::span<const uint8_t> mask, int64_t B, int64_t T, std::span<float> d_logp,
                        double grad_scale = 1.0);

}  // namespace llmtune::rl
