// DPO (sigmoid / hinge / ipo) and reward-model pair losses with gradients w.r.t. the sequence log-probs /
// rewards; see dpo_math.h for the exact TRL formulas.
#include "rl/dpo_math.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace llmtune::rl {
namespace {

// log σ(x) without overflow: −softplus(−x).
double log_sigmoid(double x) { return -(std::max(-x, 0.0) + std::log1p(std::exp(-std::fabs(x)))); }
double sigmoid(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

}  // namespace

DpoLossType dpo_loss_type_from_name(std::string_view name) {
  if (name == "sigmoid") return DpoLossType::sigmoid;
  if (name == "hinge") return DpoLossType::hinge;
  if (name == "ipo") return DpoLossType::ipo;
  fail("loss_type: unknown DPO loss '", name, "': use sigmoid, hinge or ipo");
}

DpoResult dpo_loss(const DpoOptions& opt, const DpoBatch& in) {
  const size_t n = in.policy_chosen.size();
  LLMTUNE_CHECK(in.policy_rejected.size() == n && in.ref_chosen.size() == n && in.ref_rejected.size() == n,
                "dpo_loss: chosen/rejected/reference arrays must have the same length");
  LLMTUNE_CHECK(opt.beta > 0, "beta: must be > 0 for DPO (got ", opt.beta, ")");
  const bool ipo = opt.loss_type == DpoLossType::ipo;
  if (ipo)
    LLMTUNE_CHECK(in.chosen_len.size() == n && in.rejected_len.size() == n,
                  "dpo_loss: ipo needs chosen_len and rejected_len for every pair");
  DpoResult r;
  r.loss.resize(n);
  r.d_policy_chosen.resize(n);
  r.d_policy_rejected.resize(n);
  r.rewards_chosen.resize(n);
  r.rewards_rejected.resize(n);
  r.margins.resize(n);
  r.accuracies.resize(n);
  const double beta = opt.beta, eps = opt.label_smoothing;
  for (size_t i = 0; i < n; i++) {
    double sc = 1.0, sr = 1.0;  // d(averaged)/d(sum)
    if (ipo) {
      LLMTUNE_CHECK(in.chosen_len[i] > 0 && in.rejected_len[i] > 0, "DPO ipo: pair ", i,
                    " has an empty chosen or rejected completion; drop it from the dataset");
      sc = 1.0 / double(in.chosen_len[i]);
      sr = 1.0 / double(in.rejected_len[i]);
    }
    const double pc = in.policy_chosen[i] * sc, pr = in.policy_rejected[i] * sr;
    const double rc = in.ref_chosen[i] * sc, rr = in.ref_rejected[i] * sr;
    const double ref_logratio = opt.reference_free ? 0.0 : rc - rr;
    const double z = (pc - pr) - ref_logratio;
    double loss = 0, dz = 0;
    switch (opt.loss_type) {
      case DpoLossType::sigmoid:
        loss = -(1.0 - eps) * log_sigmoid(beta * z) - eps * log_sigmoid(-beta * z);
        dz = -(1.0 - eps) * beta * sigmoid(-beta * z) + eps * beta * sigmoid(beta * z);
        break;
      case DpoLossType::hinge:
        loss = std::max(0.0, 1.0 - beta * z);
        dz = 1.0 - beta * z > 0 ? -beta : 0.0;
        break;
      case DpoLossType::ipo: {
        const double d = z - 1.0 / (2.0 * beta);
        loss = d * d;
        dz = 2.0 * d;
        break;
      }
    }
    r.loss[i] = loss;
    r.mean_loss += loss;
    r.d_policy_chosen[i] = dz * sc / double(n);
    r.d_policy_rejected[i] = -dz * sr / double(n);
    r.rewards_chosen[i] = beta * (pc - rc);
    r.rewards_rejected[i] = beta * (pr - rr);
    r.margins[i] = r.rewards_chosen[i] - r.rewards_rejected[i];
    r.accuracies[i] = r.rewards_chosen[i] > r.rewards_rejected[i] ? 1.0 : 0.0;
  }
  if (n) r.mean_loss /= double(n);
  return r;
}

RewardPairResult reward_pair_loss(std::span<const float> chosen, std::span<const float> rejected,
                                  std::span<const float> margin, double center_coef) {
  const size_t n = chosen.size();
  LLMTUNE_CHECK(rejected.size() == n && (margin.empty() || margin.size() == n),
                "reward_pair_loss: chosen/rejected/margin must have the same length");
  RewardPairResult r;
  r.loss.resize(n);
  r.d_chosen.resize(n);
  r.d_rejected.resize(n);
  if (n == 0) return r;
  double center = 0;
  for (size_t i = 0; i < n; i++) {
    const double x = double(chosen[i]) - double(rejected[i]) - (margin.empty() ? 0.0 : double(margin[i]));
    r.loss[i] = -log_sigmoid(x);
    r.mean_loss += r.loss[i];
    const double dx = -sigmoid(-x) / double(n);
    const double s = double(chosen[i]) + double(rejected[i]);
    center += s * s;
    const double dc = center_coef * 2.0 * s / double(n);
    r.d_chosen[i] = dx + dc;
    r.d_rejected[i] = -dx + dc;
    r.accuracy += chosen[i] > rejected[i];
  }
  r.mean_loss = r.mean_loss / double(n) + center_coef * center / double(n);
  r.accuracy /= double(n);
  return r;
}

}  // namespace llmtune::rl
