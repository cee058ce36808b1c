// GRPO advantages, per-token clipped loss with optional k3 KL, aggregation variants and the gradient w.r.t.
// per-token log-probs; see grpo_math.h for the exact TRL formulas and guards.
#include "rl/grpo_math.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace llmtune::rl {
namespace {

// Unbiased std of x[0..n), 0 when n ≤ 1.
double unbiased_std(const float* x, int64_t n) {
  if (n <= 1) return 0.0;
  double mean = 0;
  for (int64_t i = 0; i < n; i++) mean += x[i];
  mean /= double(n);
  double ss = 0;
  for (int64_t i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
  return std::sqrt(ss / double(n - 1));
}

}  // namespace

ScaleRewards scale_rewards_from_name(std::string_view name) {
  if (name == "group" || name == "true") return ScaleRewards::group;
  if (name == "batch") return ScaleRewards::batch;
  if (name == "none" || name == "false") return ScaleRewards::none;
  fail("scale_rewards: unknown value '", name, "': use group, batch or none");
}

GrpoLossType grpo_loss_type_from_name(std::string_view name) {
  if (name == "grpo") return GrpoLossType::grpo;
  if (name == "bnpo") return GrpoLossType::bnpo;
  if (name == "dr_grpo") return GrpoLossType::dr_grpo;
  if (name == "dapo") return GrpoLossType::dapo;
  fail("loss_type: unknown GRPO loss '", name, "': use grpo, bnpo, dr_grpo or dapo");
}

GrpoAdvantages grpo_advantages(std::span<const float> rewards, int64_t G, ScaleRewards scale) {
  const int64_t N = int64_t(rewards.size());
  LLMTUNE_CHECK(G >= 1, "num_generations: must be ≥ 1 (got ", G, ")");
  LLMTUNE_CHECK(N % G == 0, "GRPO: ", N, " completions are not a multiple of num_generations = ", G,
                "; make the generation batch divisible by num_generations");
  GrpoAdvantages out;
  out.advantages.resize(N);
  out.std.resize(N);
  const double batch_std = unbiased_std(rewards.data(), N);
  for (int64_t g = 0; g < N / G; g++) {
    const float* r = rewards.data() + g * G;
    double mean = 0;
    for (int64_t i = 0; i < G; i++) mean += r[i];
    mean /= double(G);
    const double sd = scale == ScaleRewards::batch ? batch_std : unbiased_std(r, G);
    for (int64_t i = 0; i < G; i++) {
      double a = double(r[i]) - mean;
      if (scale != ScaleRewards::none) a /= sd + 1e-4;
      out.advantages[g * G + i] = static_cast<float>(a);
      out.std[g * G + i] = static_cast<float>(sd);
    }
  }
  return out;
}

GrpoLossStats grpo_loss(const GrpoLossOptions& opt, std::span<const float> logp, std::span<const float> logp_old,
                        std::span<const float> ref_logp, std::span<const float> advantages,
                        std::span<const uint8_t> mask, int64_t B, int64_t T, std::span<float> d_logp,
                        double grad_scale) {
  const size_t n = size_t(B * T);
  LLMTUNE_CHECK(logp.size() == n && mask.size() == n && advantages.size() == size_t(B),
                "grpo_loss: expected B*T log-probs and mask entries and B advantages");
  LLMTUNE_CHECK(logp_old.empty() || logp_old.size() == n, "grpo_loss: logp_old size mismatch");
  LLMTUNE_CHECK(opt.beta == 0.0 || ref_logp.size() == n, "grpo_loss: beta != 0 needs ref_logp (B*T)");
  LLMTUNE_CHECK(d_logp.empty() || d_logp.size() == n, "grpo_loss: d_logp size mismatch");
  LLMTUNE_CHECK(opt.gradient_accumulation_steps >= 1, "gradient_accumulation_steps: must be ≥ 1");
  const double lo = 1.0 - opt.epsilon_low, hi = 1.0 + opt.epsilon_high;
  const double ga_steps = double(opt.gradient_accumulation_steps);
  const int64_t total_tokens = mask_count(mask);

  // weight[b] multiplies every masked-in token of row b in the aggregated loss.
  std::vector<double> weight(B);
  for (int64_t b = 0; b < B; b++) {
    switch (opt.loss_type) {
      case GrpoLossType::grpo: {
        const int64_t nb = mask_count(mask.subspan(b * T, T));
        weight[b] = 1.0 / (double(std::max<int64_t>(nb, 1)) * double(B) * ga_steps);
        break;
      }
      case GrpoLossType::bnpo: weight[b] = 1.0 / (double(std::max<int64_t>(total_tokens, 1)) * ga_steps); break;
      case GrpoLossType::dr_grpo: {
        const int64_t L = opt.max_completion_length > 0 ? opt.max_completion_length : T;
        weight[b] = 1.0 / (double(B) * double(L) * ga_steps);
        break;
      }
      case GrpoLossType::dapo: {
        const double norm = opt.dapo_normalizer > 0 ? opt.dapo_normalizer : double(std::max<int64_t>(total_tokens, 1));
        weight[b] = 1.0 / norm;
        break;
      }
    }
  }

  GrpoLossStats s;
  double kl_sum = 0, low = 0, high = 0, region = 0;
  for (int64_t b = 0; b < B; b++) {
    const double A = advantages[b];
    for (int64_t t = 0; t < T; t++) {
      const size_t i = size_t(b * T + t);
      if (!mask[i]) continue;
      const double lp = logp[i];
      const double raw = logp_old.empty() ? 1.0 : std::exp(lp - double(logp_old[i]));
      const double c2 = std::clamp(raw, lo, hi);
      const double c1 = opt.delta ? std::min(raw, *opt.delta) : raw;
      const double l1 = c1 * A, l2 = c2 * A;
      double l = -std::min(l1, l2);
      // torch.minimum's backward splits ties ½/½; clamp passes gradient on its closed interval.
      const double g1 = l1 < l2 ? 1.0 : (l1 == l2 ? 0.5 : 0.0), g2 = 1.0 - g1;
      const double dc1 = (opt.delta && raw > *opt.delta) ? 0.0 : raw;  // d c1 / d logp
      const double dc2 = (raw >= lo && raw <= hi) ? raw : 0.0;          // d c2 / d logp
      double dl = -(g1 * dc1 * A + g2 * dc2 * A);
      if (opt.beta != 0.0) {
        const double logr = double(ref_logp[i]) - lp;
        const double kl = std::exp(logr) - logr - 1.0;
        l += opt.beta * kl;
        dl += opt.beta * (1.0 - std::exp(logr));
        kl_sum += kl;
      }
      s.loss += weight[b] * l;
      if (!d_logp.empty()) d_logp[i] += static_cast<float>(grad_scale * weight[b] * dl);
      const bool is_low = raw < lo && A < 0, is_high = raw > hi && A > 0;
      low += is_low;
      high += is_high;
      region += is_low || is_high;
    }
  }
  const double inv_n = total_tokens ? 1.0 / double(total_tokens) : 0.0;
  s.mean_kl = kl_sum * inv_n;
  s.low_clip = low * inv_n;
  s.high_clip = high * inv_n;
  s.region_clip = region * inv_n;
  return s;
}

}  // namespace llmtune::rl
