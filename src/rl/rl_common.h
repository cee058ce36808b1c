// Per-token math shared by the RL losses (TRL semantics, hf-semantics §5): KL estimators, masked
// statistics (masked_mean / masked_var / masked_whiten) and entropy / log-prob of one row of logits.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

namespace llmtune::rl {

// Layout used by every rl/ function: a batch is B rows × T positions, row-major, as plain spans of
// B*T elements. Masks are 0/1 bytes (1 = the position counts). Inputs are float (what the model gives);
// all arithmetic is done in double and rounded once on output.

// Per-token KL estimators between the policy log-prob `logp` and the reference log-prob `ref`.
//   k1  ("kl" in classic TRL, "k1" in TRL ≥ 0.12):  logp − ref
//   abs ("abs"):                                   |logp − ref|
//   mse ("mse"):                                   ½(logp − ref)²
//   k3  ("k3", GRPO's KL):                         exp(ref − logp) − 1 − (ref − logp)   (≥ 0, low variance)
// Classic TRL's "full" (full-vocabulary KL) needs logits and is not provided here.
enum class KlEstimator { k1, abs, mse, k3 };

// "kl"/"k1", "abs", "mse", "k3"; anything else fails naming `field`.
KlEstimator kl_estimator_from_name(std::string_view name, std::string_view field = "kl_penalty");

double kl_estimate(KlEstimator est, double logp, double ref);
// d kl_estimate / d logp (abs uses sign(0) = 0, like torch.abs' subgradient).
double kl_estimate_grad(KlEstimator est, double logp, double ref);
// out[i] = kl_estimate(logp[i], ref[i]); out may alias nothing else.
void kl_per_token(KlEstimator est, std::span<const float> logp, std::span<const float> ref, std::span<float> out);

// Masked statistics over ALL elements of `x` whose mask is 1 (TRL's masked_mean with axis=None).
// Guard (TRL differs): with no masked-in element masked_mean returns 0 (TRL: 0/0 = NaN).
double masked_mean(std::span<const float> x, std::span<const uint8_t> mask);
// Per-row masked mean (axis = -1): out[b] = Σ_t m·x / Σ_t m, 0 for an all-masked row.
void masked_mean_rows(std::span<const float> x, std::span<const uint8_t> mask, int64_t rows, std::span<double> out);
// Unbiased masked variance: mean((x − mean)²)·n/(n−1), as TRL.
// Guards (TRL differs): n == 1 returns 0 (the biased variance of one element; TRL computes 0·1/0 = NaN),
// n == 0 returns 0 (TRL raises ValueError "The sum of the mask is zero").
double masked_var(std::span<const float> x, std::span<const uint8_t> mask, bool unbiased = true);
// out = (x − mean)·rsqrt(var + 1e-8) (+ mean when !shift_mean), applied to EVERY position (masked-out
// ones too, as TRL), with mean/var from the masked-in positions. Because of the guards above, a single
// masked-in element whitens to (x − x)·1e4 = 0 (+x when !shift_mean). Guard: an all-masked input gives
// out = 0 everywhere (TRL raises ValueError). `out` may alias `x`.
void masked_whiten(std::span<const float> x, std::span<const uint8_t> mask, std::span<float> out,
                   bool shift_mean = true);

// Entropy of softmax(logits) for one row: logsumexp(z) − Σ softmax(z)·z (TRL's entropy_from_logits).
double entropy_from_logits(std::span<const float> logits);
// log_softmax(logits)[token] (TRL's selective_log_softmax for one position).
double log_softmax_at(std::span<const float> logits, int64_t token);

// Number of masked-in elements.
int64_t mask_count(std::span<const uint8_t> mask);

}  // namespace llmtune::rl
