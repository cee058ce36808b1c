// PPO math (classic TRL ≤ 0.11 and current TRL ≥ 0.12): masks, rewards, GAE, clipped losses + gradients,
// KL controllers and score preprocessing. Semantics and guards are documented in ppo_math.h.
#include "rl/ppo_math.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace llmtune::rl {
namespace {

void check_size(size_t got, int64_t want, const char* what) {
  LLMTUNE_CHECK(got == size_t(want), what, ": expected ", want, " elements, got ", got);
}

// Index of the last masked-in position of a row, −1 if none.
int64_t last_masked_in(std::span<const uint8_t> row) {
  for (int64_t t = int64_t(row.size()) - 1; t >= 0; t--)
    if (row[t]) return t;
  return -1;
}

// torch.maximum's backward: ties split the gradient in half.
std::pair<double, double> max_grad_split(double a, double b) {
  if (a > b) return {1.0, 0.0};
  if (b > a) return {0.0, 1.0};
  return {0.5, 0.5};
}

}  // namespace

PpoMasks classic_ppo_masks(std::span<const uint8_t> attention_mask, std::span<const int64_t> query_len,
                           std::span<const int64_t> response_len, int64_t B, int64_t L) {
  check_size(attention_mask.size(), B * L, "classic_ppo_masks attention_mask");
  check_size(query_len.size(), B, "classic_ppo_masks query_len");
  check_size(response_len.size(), B, "classic_ppo_masks response_len");
  LLMTUNE_CHECK(L >= 2, "classic_ppo_masks: sequences need at least 2 positions");
  const int64_t T = L - 1;
  PpoMasks m;
  m.policy.assign(B * T, 0);
  for (int64_t b = 0; b < B; b++) {
    const uint8_t* am = attention_mask.data() + b * L;
    int64_t start = query_len[b] - 1;  // logprobs start at the second query token
    if (am[0] == 0) {                  // left padding: offset by the first attended position
      int64_t first = 0;
      while (first < L && am[first] == 0) first++;
      start += first;
    }
    const int64_t end = start + response_len[b];
    for (int64_t t = std::max<int64_t>(start, 0); t < std::min(end, T); t++) m.policy[b * T + t] = am[t + 1] != 0;
  }
  m.value = m.policy;
  return m;
}

std::vector<int64_t> response_last_index(std::span<const int32_t> responses, int32_t pad_token_id, int64_t B,
                                         int64_t T) {
  check_size(responses.size(), B * T, "response_last_index responses");
  std::vector<int64_t> out(B);
  for (int64_t b = 0; b < B; b++) {
    int64_t first_pad = T;
    for (int64_t t = 0; t < T; t++)
      if (responses[b * T + t] == pad_token_id) {
        first_pad = t;
        break;
      }
    out[b] = first_pad - 1;
  }
  return out;
}

PpoMasks current_ppo_masks(std::span<const int64_t> seq_len, int64_t B, int64_t T) {
  check_size(seq_len.size(), B, "current_ppo_masks seq_len");
  PpoMasks m;
  m.policy.assign(B * T, 0);
  m.value.assign(B * T, 0);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      m.policy[b * T + t] = t <= seq_len[b];
      m.value[b * T + t] = t <= seq_len[b] + 1;
    }
  return m;
}

PpoRewards ppo_rewards(PpoVariant variant, KlEstimator est, double kl_coef, std::span<const float> logp,
                       std::span<const float> ref_logp, std::span<const float> scores, const PpoMasks& masks,
                       int64_t B, int64_t T) {
  check_size(logp.size(), B * T, "ppo_rewards logp");
  check_size(ref_logp.size(), B * T, "ppo_rewards ref_logp");
  check_size(scores.size(), B, "ppo_rewards scores");
  check_size(masks.policy.size(), B * T, "ppo_rewards mask");
  PpoRewards r;
  r.rewards.assign(B * T, 0.f);
  r.non_score.assign(B * T, 0.f);
  r.kl.assign(B * T, 0.f);
  for (int64_t b = 0; b < B; b++) {
    std::vector<double> row(T, 0.0);
    for (int64_t t = 0; t < T; t++) {
      const int64_t i = b * T + t;
      if (!masks.policy[i]) continue;
      const double kl = kl_estimate(est, logp[i], ref_logp[i]);
      r.kl[i] = static_cast<float>(kl);
      row[t] = -kl_coef * kl;
      r.non_score[i] = static_cast<float>(row[t]);
    }
    const int64_t last = last_masked_in(std::span(masks.policy).subspan(b * T, T));
    int64_t at = -1;
    if (variant == PpoVariant::classic) at = last;
    else at = last + 1 < T ? last + 1 : last;
    if (at >= 0) row[at] += scores[b];
    for (int64_t t = 0; t < T; t++) r.rewards[b * T + t] = static_cast<float>(row[t]);
  }
  return r;
}

PpoAdvantages ppo_advantages(PpoVariant variant, std::span<const float> values, std::span<const float> rewards,
                             const PpoMasks& masks, double gamma, double lam, bool whiten_rewards, int64_t B,
                             int64_t T) {
  check_size(values.size(), B * T, "ppo_advantages values");
  check_size(rewards.size(), B * T, "ppo_advantages rewards");
  check_size(masks.policy.size(), B * T, "ppo_advantages policy mask");
  check_size(masks.value.size(), B * T, "ppo_advantages value mask");
  const bool classic = variant == PpoVariant::classic;
  const std::vector<uint8_t>& vmask = classic ? masks.policy : masks.value;
  PpoAdvantages out;
  out.values.resize(B * T);
  std::vector<float> r(B * T);
  for (int64_t i = 0; i < B * T; i++) {
    out.values[i] = vmask[i] ? values[i] : 0.f;
    r[i] = classic ? (masks.policy[i] ? rewards[i] : 0.f) : rewards[i];
  }
  if (whiten_rewards) {
    masked_whiten(r, vmask, r, /*shift_mean=*/false);
    if (!classic)
      for (int64_t i = 0; i < B * T; i++)
        if (!vmask[i]) r[i] = 0.f;
  }
  std::vector<float> adv(B * T);
  out.returns.resize(B * T);
  for (int64_t b = 0; b < B; b++) {
    double lastgaelam = 0;
    for (int64_t t = T - 1; t >= 0; t--) {
      const int64_t i = b * T + t;
      const double next_v = t < T - 1 ? double(out.values[i + 1]) : 0.0;
      const double delta = double(r[i]) + gamma * next_v - double(out.values[i]);
      lastgaelam = delta + gamma * lam * lastgaelam;
      adv[i] = static_cast<float>(lastgaelam);
      out.returns[i] = static_cast<float>(lastgaelam + double(out.values[i]));
    }
  }
  out.advantages.resize(B * T);
  masked_whiten(adv, masks.policy, out.advantages, /*shift_mean=*/true);
  if (!classic)
    for (int64_t i = 0; i < B * T; i++)
      if (!masks.policy[i]) out.advantages[i] = 0.f;
  return out;
}

PpoLossStats ppo_loss(const PpoLossOptions& opt, std::span<const float> logp_new, std::span<const float> logp_old,
                      std::span<const float> advantages, std::span<const float> values_new,
                      std::span<const float> values_old, std::span<const float> returns, const PpoMasks& masks,
                      std::span<float> d_logp_new, std::span<float> d_values_new, double grad_scale) {
  const size_t n = logp_new.size();
  LLMTUNE_CHECK(logp_old.size() == n && advantages.size() == n && values_new.size() == n &&
                    values_old.size() == n && returns.size() == n && masks.policy.size() == n &&
                    masks.value.size() == n,
                "ppo_loss: all arrays must have the same size");
  LLMTUNE_CHECK(d_logp_new.empty() || d_logp_new.size() == n, "ppo_loss: d_logp_new size mismatch");
  LLMTUNE_CHECK(d_values_new.empty() || d_values_new.size() == n, "ppo_loss: d_values_new size mismatch");
  const double lo = 1.0 - opt.cliprange, hi = 1.0 + opt.cliprange;
  const int64_t np = mask_count(masks.policy), nv = mask_count(masks.value);
  const double inv_np = np ? 1.0 / double(np) : 0.0, inv_nv = nv ? 1.0 / double(nv) : 0.0;

  PpoLossStats s;
  std::vector<double> g_logp(n, 0.0), g_v(n, 0.0);  // gradients of pg_loss / vf_loss, before scaling
  double pg_sum = 0, vf_sum = 0, pg_clip = 0, vf_clip = 0, kl2 = 0, pkl = 0, ratio_sum = 0;
  for (size_t i = 0; i < n; i++) {
    if (masks.policy[i]) {
      const double diff = double(logp_new[i]) - double(logp_old[i]);
      const double ratio = std::exp(diff), A = advantages[i];
      const double clipped = std::clamp(ratio, lo, hi);
      const double a = -A * ratio, b = -A * clipped;
      pg_sum += std::max(a, b);
      pg_clip += b > a;
      kl2 += diff * diff;
      pkl -= diff;
      ratio_sum += ratio;
      const auto [ga, gb] = max_grad_split(a, b);
      const double inside = (ratio >= lo && ratio <= hi) ? 1.0 : 0.0;
      g_logp[i] = (ga * (-A * ratio) + gb * (-A * ratio * inside)) * inv_np;
    }
    if (masks.value[i]) {
      const double v = values_new[i], vold = values_old[i], R = returns[i];
      const double vlo = vold - opt.cliprange_value, vhi = vold + opt.cliprange_value;
      const double vc = std::clamp(v, vlo, vhi);
      const double a = (v - R) * (v - R), b = (vc - R) * (vc - R);
      vf_sum += std::max(a, b);
      vf_clip += b > a;
      const auto [ga, gb] = max_grad_split(a, b);
      const double inside = (v >= vlo && v <= vhi) ? 1.0 : 0.0;
      g_v[i] = 0.5 * (ga * 2.0 * (v - R) + gb * 2.0 * (vc - R) * inside) * inv_nv;
    }
  }
  s.pg_loss = pg_sum * inv_np;
  s.vf_loss = 0.5 * vf_sum * inv_nv;
  s.pg_clipfrac = pg_clip * inv_np;
  s.vf_clipfrac = vf_clip * inv_nv;
  s.approx_kl = 0.5 * kl2 * inv_np;
  s.approx_kl_all = n ? 0.5 * kl2 / double(n) : 0.0;
  s.policy_kl = pkl * inv_np;
  s.mean_ratio = ratio_sum * inv_np;
  double scale = grad_scale;
  if (opt.ratio_threshold && s.mean_ratio > *opt.ratio_threshold) {
    s.ratio_threshold_hit = true;
    s.pg_loss = s.vf_loss = 0.0;
    scale = 0.0;
  }
  s.loss = s.pg_loss + opt.vf_coef * s.vf_loss;
  if (scale != 0.0) {
    if (!d_logp_new.empty())
      for (size_t i = 0; i < n; i++) d_logp_new[i] += static_cast<float>(scale * g_logp[i]);
    if (!d_values_new.empty())
      for (size_t i = 0; i < n; i++) d_values_new[i] += static_cast<float>(scale * opt.vf_coef * g_v[i]);
  }
  return s;
}

double mean_sequence_kl(std::span<const float> kl, std::span<const uint8_t> mask, int64_t B, int64_t T) {
  check_size(kl.size(), B * T, "mean_sequence_kl kl");
  check_size(mask.size(), B * T, "mean_sequence_kl mask");
  double total = 0;
  for (int64_t i = 0; i < B * T; i++)
    if (mask[i]) total += kl[i];
  return B ? total / double(B) : 0.0;
}

KlController adaptive_kl_controller(double init_kl_coef, double target, double horizon) {
  LLMTUNE_CHECK(target > 0, "adaptive KL controller: target must be > 0 (got ", target, ")");
  LLMTUNE_CHECK(horizon > 0, "adaptive KL controller: horizon must be > 0 (got ", horizon, ")");
  return KlController{true, init_kl_coef, target, horizon};
}

KlController fixed_kl_controller(double kl_coef) { return KlController{false, kl_coef, 0.0, 0.0}; }

void kl_controller_update(KlController& ctl, double current_kl, int64_t n_steps) {
  if (!ctl.adaptive) return;
  const double e = std::clamp(current_kl / ctl.target - 1.0, -0.2, 0.2);
  ctl.value *= 1.0 + e * double(n_steps) / ctl.horizon;
}

std::pair<double, double> running_moments_update(RunningMoments& rm, std::span<const float> xs) {
  LLMTUNE_CHECK(!xs.empty(), "use_score_scaling: empty batch of scores");
  const double n = double(xs.size());
  double mean = 0;
  for (float x : xs) mean += x;
  mean /= n;
  double var = 0;  // biased, as torch.var_mean(unbiased=False)
  for (float x : xs) var += (x - mean) * (x - mean);
  var /= n;
  const double delta = mean - rm.mean;
  const double tot = rm.count + n;
  LLMTUNE_CHECK(tot > 1.0, "use_score_scaling needs at least 2 scores in the first batch (batch_size ≥ 2): "
                           "with one score the running std is 0/0");
  const double new_sum = var * n;
  const double old_sum = rm.var * rm.count + delta * delta * rm.count * n / tot;
  rm.mean += delta * n / tot;
  const double new_var = (old_sum + new_sum) / tot;
  rm.std = std::sqrt(new_var * tot / (tot - 1.0));
  rm.var = new_var;
  rm.count = tot;
  const double batch_std = xs.size() > 1 ? std::sqrt(var * n / (n - 1.0)) : 0.0;
  return {mean, batch_std};
}

void process_scores(const ScoreOptions& opt, RunningMoments& running, std::span<float> scores) {
  if (opt.use_score_scaling) {
    running_moments_update(running, scores);
    const double factor = running.std + double(std::numeric_limits<float>::epsilon());
    for (float& s : scores)
      s = static_cast<float>(opt.use_score_norm ? (s - running.mean) / factor : s / factor);
  }
  if (opt.score_clip) {
    const double c = *opt.score_clip;
    for (float& s : scores) s = static_cast<float>(std::clamp(double(s), -c, c));
  }
}

}  // namespace llmtune::rl
