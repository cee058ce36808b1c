// The --reward / --reward_weights options shared by the RL commands (ppo, grpo):
// their declaration and their translation into rl::RewardSpec (rl/rewards.h).
#pragma once
#include <vector>

#include "cli/options.h"
#include "rl/rewards.h"

namespace llmtune::cli {

// --reward (required string list: "a,b", a JSON list ["a","b"] when a spec holds a comma, or the flag repeated —
// repeated list flags append) and --reward_weights (one number per reward, default 1 each).
void add_reward_options(CommandSpec& s);
// Parses every spec (a reward model folder is loaded here, before the policy) and applies the weights.
// Fails on an empty list, a weight count that differs from the reward count, or a weight that is not a number.
std::vector<rl::RewardSpec> reward_specs_from_options(const ResolvedOptions& o);

}  // namespace llmtune::cli
