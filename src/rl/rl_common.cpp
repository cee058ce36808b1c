// Per-token RL math shared by PPO and GRPO: KL estimators, masked statistics, entropy of a logit row.
// Everything accumulates in double; see rl_common.h for the TRL semantics and the documented guards.
#include "rl/rl_common.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace llmtune::rl {

KlEstimator kl_estimator_from_name(std::string_view name, std::string_view field) {
  if (name == "kl" || name == "k1") return KlEstimator::k1;
  if (name == "abs") return KlEstimator::abs;
  if (name == "mse") return KlEstimator::mse;
  if (name == "k3") return KlEstimator::k3;
  fail(field, ": unknown KL estimator '", name, "': use one of kl (= k1), abs, mse, k3");
}

double kl_estimate(KlEstimator est, double logp, double ref) {
  const double d = logp - ref;
  switch (est) {
    case KlEstimator::k1: return d;
    case KlEstimator::abs: return std::fabs(d);
    case KlEstimator::mse: return 0.5 * d * d;
    case KlEstimator::k3: return std::exp(-d) - 1.0 + d;  // logr = ref − logp = −d
  }
  return 0;
}

double kl_estimate_grad(KlEstimator est, double logp, double ref) {
  const double d = logp - ref;
  switch (est) {
    case KlEstimator::k1: return 1.0;
    case KlEstimator::abs: return d > 0 ? 1.0 : (d < 0 ? -1.0 : 0.0);
    case KlEstimator::mse: return d;
    case KlEstimator::k3: return 1.0 - std::exp(-d);
  }
  return 0;
}

void kl_per_token(KlEstimator est, std::span<const float> logp, std::span<const float> ref, std::span<float> out) {
  LLMTUNE_CHECK(logp.size() == ref.size() && out.size() == logp.size(), "kl_per_token: size mismatch");
  for (size_t i = 0; i < logp.size(); i++) out[i] = static_cast<float>(kl_estimate(est, logp[i], ref[i]));
}

int64_t mask_count(std::span<const uint8_t> mask) {
  int64_t n = 0;
  for (uint8_t m : mask) n += m != 0;
  return n;
}

double masked_mean(std::span<const float> x, std::span<const uint8_t> mask) {
  LLMTUNE_CHECK(x.size() == mask.size(), "masked_mean: size mismatch");
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < x.size(); i++)
    if (mask[i]) sum += x[i], n++;
  return n ? sum / static_cast<double>(n) : 0.0;
}

void masked_mean_rows(std::span<const float> x, std::span<const uint8_t> mask, int64_t rows, std::span<double> out) {
  LLMTUNE_CHECK(x.size() == mask.size() && rows > 0 && x.size() % rows == 0 && out.size() == size_t(rows),
                "masked_mean_rows: size mismatch");
  const size_t T = x.size() / rows;
  for (int64_t b = 0; b < rows; b++)
    out[b] = masked_mean(x.subspan(b * T, T), mask.subspan(b * T, T));
}

double masked_var(std::span<const float> x, std::span<const uint8_t> mask, bool unbiased) {
  const double mean = masked_mean(x, mask);
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < x.size(); i++)
    if (mask[i]) {
      const double c = x[i] - mean;
      sum += c * c;
      n++;
    }
  if (n == 0) return 0.0;
  double var = sum / static_cast<double>(n);
  if (unbiased && n > 1) var *= static_cast<double>(n) / static_cast<double>(n - 1);
  return var;
}

void masked_whiten(std::span<const float> x, std::span<const uint8_t> mask, std::span<float> out, bool shift_mean) {
  LLMTUNE_CHECK(out.size() == x.size(), "masked_whiten: size mismatch");
  if (mask_count(mask) == 0) {
    std::fill(out.begin(), out.end(), 0.0f);
    return;
  }
  const double mean = masked_mean(x, mask), var = masked_var(x, mask);
  const double inv_std = 1.0 / std::sqrt(var + 1e-8);
  for (size_t i = 0; i < x.size(); i++) {
    double w = (x[i] - mean) * inv_std;
    if (!shift_mean) w += mean;
    out[i] = static_cast<float>(w);
  }
}

double entropy_from_logits(std::span<const float> logits) {
  LLMTUNE_CHECK(!logits.empty(), "entropy_from_logits: empty row");
  double mx = logits[0];
  for (float z : logits) mx = std::max(mx, double(z));
  double sum = 0, weighted = 0;
  for (float z : logits) {
    const double e = std::exp(z - mx);
    sum += e;
    weighted += e * z;
  }
  return mx + std::log(sum) - weighted / sum;
}

double log_softmax_at(std::span<const float> logits, int64_t token) {
  LLMTUNE_CHECK(token >= 0 && size_t(token) < logits.size(), "log_softmax_at: token ", token, " out of range");
  double mx = logits[0];
  for (float z : logits) mx = std::max(mx, double(z));
  double sum = 0;
  for (float z : logits) sum += std::exp(z - mx);
  return logits[token] - mx - std::log(sum);
}

}  // namespace llmtune::rl
