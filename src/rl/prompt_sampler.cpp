// PromptSampler: per-pass reshuffled prompt order with a resumable cursor (shared by GRPO and PPO).
#include "rl/prompt_sampler.h"

#include <numeric>
#include <string>
#include <utility>

#include "core/error.h"

namespace llmtune::rl {

PromptSampler::PromptSampler(size_t n, uint64_t seed) : num_prompts(n), rng(seed) {
  LLMTUNE_CHECK(n >= 1, "PromptSampler: no prompts to sample from");
}

size_t PromptSampler::next() {
  if (cursor >= order.size()) {
    order.resize(num_prompts);
    std::iota(order.begin(), order.end(), 0);
    for (size_t i = order.size() - 1; i > 0; i--) std::swap(order[i], order[size_t(rng.below(i + 1))]);
    cursor = 0;
  }
  return size_t(order[cursor++]);
}

void PromptSampler::to_json(nlohmann::json& trainer_state, std::string_view prefix) const {
  const std::string p(prefix);
  trainer_state[p + "cursor"] = cursor;
  trainer_state[p + "order"] = order;
}

void PromptSampler::from_json(const nlohmann::json& trainer_state, std::string_view prefix) {
  const std::string p(prefix);
  cursor = trainer_state.at(p + "cursor").get<size_t>();
  order = trainer_state.at(p + "order").get<std::vector<int64_t>>();
}

void PromptSampler::check_prompt_count(std::string_view trainer) const {
  if (!order.empty() && order.size() != num_prompts)
    fail("cannot resume ", trainer, ": the checkpoint was made with ", order.size(), " prompts, this run has ",
         num_prompts, " (use the same --train_file)");
}

}  // namespace llmtune::rl
