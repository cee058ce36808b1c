// The prompt order of the on-policy RL trainers (GRPO, PPO): every pass over the prompts draws a fresh
// Fisher–Yates shuffle from its own Rng; the order and the position in it travel in checkpoints.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"

namespace llmtune::rl {

struct PromptSampler {
  // num_prompts >= 1. `seed` seeds the shuffle stream (the checkpoint's "order" RNG).
  PromptSampler(size_t num_prompts, uint64_t seed);

  // Index of the next prompt. The first call, and the first call after each full pass, reshuffles.
  size_t next();

  // Writes "<prefix>cursor" and "<prefix>order" into the trainer's checkpoint state (GRPO: prefix "",
  // PPO: "prompt_"); the key names are part of the checkpoint format, so existing checkpoints resume.
  void to_json(nlohmann::json& trainer_state, std::string_view prefix) const;
  // Reads them back; a missing or mistyped key throws nlohmann::json::exception, which the trainer turns
  // into its "trainer_state is incomplete" message. The prompt count is checked by check_prompt_count.
  void from_json(const nlohmann::json& trainer_state, std::string_view prefix);
  // After from_json: fails when the restored order was made for another number of prompts.
  void check_prompt_count(std::string_view trainer) const;

  size_t num_prompts = 0;
  Rng rng;                     // register it with the checkpoint (its state is part of the resume)
  std::vector<int64_t> order;  // the current pass; empty before the first next()
  size_t cursor = 0;           // position in `order` of the next prompt
};

}  // namespace llmtune::rl
