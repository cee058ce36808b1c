// PPO math over plain arrays (hf-semantics §5.1 classic TRL ≤ 0.11, §5.2 current TRL ≥ 0.12): response masks,
// KL-penalised rewards, GAE, clipped policy/value losses with their gradients, KL controllers, score scaling.
//
// DEFAULT VARIANT: PpoVariant::current (TRL ≥ 0.12 semantics). It is what today's TRL documentation, configs
// (kl_coef, kl_estimator, fixed KL coefficient) and trained checkpoints correspond to, and it avoids a classic
// quirk: with whiten_rewards the classic trainer leaves nonzero whitened rewards on masked-out positions, which
// then leak into the response's advantages through GAE (reproduced here on purpose for the classic variant).
// PpoVariant::classic reproduces TRL ≤ 0.11 (value head, adaptive KL, score AT the last response token) for
// old scripts. The variants differ only in mask handling and where the score lands (§9 item 13).
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "rl/rl_common.h"

namespace llmtune::rl {

enum class PpoVariant { current, classic };

// policy: positions whose log-prob / advantage count (pg loss, whitening, KL).
// value:  positions whose value counts (vf loss). Classic: same as policy. Current: policy plus ONE extra
//         position after the last real token (where the score is added, §5.2 items 4-5).
struct PpoMasks {
  std::vector<uint8_t> policy, value;
};

// Classic TRL mask over the shifted sequence (length L−1 per row, `logprobs[t] = logp(input[t+1])`):
// start = query_len−1 (+ number of left pads when attention_mask[b][0] == 0), end = start + response_len,
// mask = attention_mask[b][t+1] for start ≤ t < end, else 0. attention_mask is B×L (0/1).
PpoMasks classic_ppo_masks(std::span<const uint8_t> attention_mask, std::span<const int64_t> query_len,
                           std::span<const int64_t> response_len, int64_t B, int64_t L);

// Current TRL: seq_len[b] = index of the first pad token in the (post-processed) response − 1, or T−1 when
// there is none; −1 for an empty response. Response tokens are B×T.
std::vector<int64_t> response_last_index(std::span<const int32_t> responses, int32_t pad_token_id, int64_t B,
                                         int64_t T);
// policy = (t ≤ seq_len), value = (t ≤ seq_len + 1), each B×T.
PpoMasks current_ppo_masks(std::span<const int64_t> seq_len, int64_t B, int64_t T);

struct PpoRewards {
  std::vector<float> rewards;    // B×T: −β·kl (+ score at one position)
  std::vector<float> non_score;  // B×T: −β·kl
  std::vector<float> kl;         // B×T: the KL estimate; 0 outside the policy mask
};

// r_t = −kl_coef·kl_t on the policy mask (0 elsewhere: current TRL fills padding log-probs with the same
// INVALID_LOGPROB on both sides, classic multiplies rewards by the mask in GAE), plus the score at:
//   classic: the last masked-in position (an all-masked row gets no score; TRL raises IndexError there);
//   current: last + 1 if that is < T, else last (one position after the last real token; an empty response,
//            last = −1, gets its score at position 0 as TRL does).
PpoRewards ppo_rewards(PpoVariant variant, KlEstimator est, double kl_coef, std::span<const float> logp,
                       std::span<const float> ref_logp, std::span<const float> scores, const PpoMasks& masks,
                       int64_t B, int64_t T);

struct PpoAdvantages {
  std::vector<float> values;      // B×T values used by the loss as "old values" (masked: 0 outside value mask)
  std::vector<float> advantages;  // B×T whitened advantages (current: 0 outside the policy mask)
  std::vector<float> returns;     // B×T  A + V (before whitening)
};

// GAE backwards over all T positions, V beyond the end = 0:
//   δ_t = r_t + γ·V_{t+1} − V_t,  A_t = δ_t + γλ·A_{t+1},  returns = A + V,  A ← masked_whiten(A, policy mask).
// classic: V and r multiplied by the mask first; whiten_rewards whitens r over the mask without re-centering
//          and WITHOUT zeroing masked-out positions (TRL ≤ 0.11 behaviour).
// current: V zeroed outside the value mask; r used as given; whiten_rewards whitens over the value mask and
//          zeroes outside it; whitened advantages are zeroed outside the policy mask.
PpoAdvantages ppo_advantages(PpoVariant variant, std::span<const float> values, std::span<const float> rewards,
                             const PpoMasks& masks, double gamma, double lam, bool whiten_rewards, int64_t B,
                             int64_t T);

struct PpoLossOptions {
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
  // Classic only: when masked_mean(ratio) > ratio_threshold the losses (and gradients) are zeroed.
  // nullopt = disabled (current TRL has no such check). Classic default 10.0.
  std::optional<double> ratio_threshold;
};

struct PpoLossStats {
  double loss = 0, pg_loss = 0, vf_loss = 0;
  double pg_clipfrac = 0;    // masked_mean(pg_losses2 > pg_losses) over the policy mask
  double vf_clipfrac = 0;    // masked_mean(vf_losses2 > vf_losses1) over the value mask
  double approx_kl = 0;      // classic: 0.5·masked_mean((logp − old)²) over the policy mask
  double approx_kl_all = 0;  // current: 0.5·mean over ALL B·T positions, masked-out differences taken as 0
  double policy_kl = 0;      // masked_mean(old − logp)
  double mean_ratio = 0;     // masked_mean(ratio)
  bool ratio_threshold_hit = false;
};

// Mini-batch PPO loss (same formulas in both variants; they differ only in the masks passed):
//   ratio   = exp(logp_new − logp_old)
//   pg_loss = masked_mean_policy( max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε)) )
//   Vc      = clip(V_new, V_old − ε_v, V_old + ε_v)
//   vf_loss = 0.5·masked_mean_value( max((V_new − R)², (Vc − R)²) )
//   loss    = pg_loss + vf_coef·vf_loss
// Gradients of grad_scale·loss are ACCUMULATED (+=) into d_logp_new / d_values_new (empty span = not needed),
// with torch's tie rules (max splits ties ½/½, clamp passes gradient on its closed interval), so they equal
// autograd's exactly. An empty mask gives a zero loss term and zero gradient (TRL: NaN).
PpoLossStats ppo_loss(const PpoLossOptions& opt, std::span<const float> logp_new, std::span<const float> logp_old,
                      std::span<const float> advantages, std::span<const float> values_new,
                      std::span<const float> values_old, std::span<const float> returns, const PpoMasks& masks,
                      std::span<float> d_logp_new, std::span<float> d_values_new, double grad_scale = 1.0);

// mean over rows of Σ_t mask·kl_t — classic TRL's objective/kl, the input of the adaptive controller.
double mean_sequence_kl(std::span<const float> kl, std::span<const uint8_t> mask, int64_t B, int64_t T);

// KL coefficient controller. adaptive (Ziegler et al. 2019, classic TRL):
//   e = clip(current/target − 1, −0.2, 0.2);  value ← value·(1 + e·n_steps/horizon)
// fixed: update does nothing (current TRL always uses a fixed kl_coef).
struct KlController {
  bool adaptive = false;
  double value = 0.05;
  double target = 6.0;
  double horizon = 10000.0;
};
KlController adaptive_kl_controller(double init_kl_coef, double target, double horizon);
KlController fixed_kl_controller(double kl_coef);
void kl_controller_update(KlController& ctl, double current_kl, int64_t n_steps);

// TRL's RunningMoments (parallel mean/variance merge, Chan et al.); state starts at mean 0, var 1, std 1,
// count 1e-24 as in TRL. TRL keeps float32 state; we keep double.
struct RunningMoments {
  double mean = 0.0, std = 1.0, var = 1.0, count = 1e-24;
};
// Merges the batch; returns the batch's (mean, unbiased std). Fails for an empty batch and for a first
// batch of one score (TRL divides 0 by 0 there and carries NaN forever).
std::pair<double, double> running_moments_update(RunningMoments& rm, std::span<const float> xs);

// Classic PPO score preprocessing, in place, in TRL's order:
//   use_score_scaling: update `running` with the batch, then scores /= (running.std + eps_f32), or with
//                      use_score_norm: scores = (scores − running.mean)/(running.std + eps_f32);
//   score_clip:        clamp to [−clip, clip].
// (use_score_norm without use_score_scaling does nothing, as in TRL.)
struct ScoreOptions {
  bool use_score_scaling = false;
  bool use_score_norm = false;
  std::optional<double> score_clip;
};
void process_scores(const ScoreOptions& opt, RunningMoments& running, std::span<float> scores);

}  // namespace llmtune::rl
