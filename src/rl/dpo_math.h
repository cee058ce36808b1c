// Preference losses over per-pair sequence log-probs (hf-semantics §5.3 DPO, §5.5 reward modelling):
// sigmoid (+label smoothing) / hinge / ipo DPO and the Bradley-Terry reward-model loss, with gradients.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace llmtune::rl {

enum class DpoLossType { sigmoid, hinge, ipo };
DpoLossType dpo_loss_type_from_name(std::string_view name);  // "sigmoid" | "hinge" | "ipo"

struct DpoOptions {
  DpoLossType loss_type = DpoLossType::sigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // sigmoid only (cDPO): −(1−ε)logσ(βz) − ε·logσ(−βz)
  bool reference_free = false;   // reference log-ratio taken as 0 in z (the reward metrics still use it)
};

// Per-pair inputs are SUMS of completion-token log-probs (prompt excluded) and completion lengths
// (number of completion tokens; only used by ipo, which averages policy AND reference log-probs per token,
// as TRL's concatenated_forward does: Δ/|completion|).
struct DpoBatch {
  std::span<const float> policy_chosen, policy_rejected, ref_chosen, ref_rejected;
  std::span<const int64_t> chosen_len, rejected_len;  // may be empty unless loss_type == ipo
};

struct DpoResult {
  std::vector<double> loss;              // per pair
  double mean_loss = 0;                  // the trainer's loss = mean over pairs
  // d mean_loss / d policy_chosen[i] and / d policy_rejected[i] — w.r.t. the SUMS (ipo: chained via 1/len).
  std::vector<double> d_policy_chosen, d_policy_rejected;
  // Metrics (per pair; ipo: from the per-token averages, as TRL logs them):
  std::vector<double> rewards_chosen;    // β·(π_c − ref_c)
  std::vector<double> rewards_rejected;  // β·(π_r − ref_r)
  std::vector<double> margins;           // rewards_chosen − rewards_rejected
  std::vector<double> accuracies;        // 1 if rewards_chosen > rewards_rejected else 0
};

//   z = (π_c − π_r) − (ref_c − ref_r)
//   sigmoid: −(1−ε)·logσ(βz) − ε·logσ(−βz);  hinge: relu(1 − βz) (gradient 0 at the kink, as torch);
//   ipo: (z − 1/(2β))² on per-token averages.
// A pair with zero completion length under ipo fails (TRL would divide 0 by 0).
DpoResult dpo_loss(const DpoOptions& opt, const DpoBatch& batch);

struct RewardPairResult {
  std::vector<double> loss;  // per pair: −logσ(r_c − r_r − margin)
  double mean_loss = 0;      // mean of the above + center_coef·mean((r_c + r_r)²)
  std::vector<double> d_chosen, d_rejected;  // d mean_loss / d r_c[i], d r_r[i]
  double accuracy = 0;       // mean(r_c > r_r)
};
// Reward-model (Bradley-Terry) loss, TRL RewardTrainer. `margin` may be empty (no margin);
// center_coef = 0 disables the centering term.
RewardPairResult reward_pair_loss(std::span<const float> chosen, std::span<const float> rejected,
                                  std::span<const float> margin, double center_coef = 0.0);

}  // namespace llmtune::rl
