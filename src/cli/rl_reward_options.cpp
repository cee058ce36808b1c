// --reward / --reward_weights → rl::RewardSpec for the RL commands.
#include "cli/rl_reward_options.h"

#include <cmath>
#include <string>

#include "core/error.h"

namespace llmtune::cli {

void add_reward_options(CommandSpec& s) {
  s.add_string_list("reward", std::nullopt,
                    "reward specs, summed: keyword:WORD | regex:PATTERN | length:MIN:MAX | gsm8k | command:SHELL "
                    "(JSONL {prompt,response} on stdin, one float per line) | model:DIR (a reward model folder or "
                    "SEQ_CLS adapter); several: a,b or a JSON list [\"a\",\"b\"] (needed when a spec has a comma)")
      .required = true;
  s.add_string_list("reward_weights", std::nullopt, "one weight per reward (default 1 each)");
}

std::vector<rl::RewardSpec> reward_specs_from_options(const ResolvedOptions& o) {
  const std::vector<std::string>& given = o.get_string_list("reward");
  if (given.empty())
    fail("option 'reward' is empty: give at least one reward, e.g. --reward keyword:cat (or regex:RE, "
         "length:MIN:MAX, gsm8k, command:CMD, model:DIR)");
  std::vector<rl::RewardSpec> specs;
  for (const std::string& g : given) specs.push_back(rl::parse_reward_spec(g));
  if (o.has("reward_weights")) {
    const std::vector<std::string>& w = o.get_string_list("reward_weights");
    if (w.size() != specs.size())
      fail("option 'reward_weights' has ", w.size(), " values for ", specs.size(),
           " rewards: give one weight per --reward");
    for (size_t i = 0; i < w.size(); i++) {
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(w[i], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != w[i].size() || !std::isfinite(v)) fail("option 'reward_weights': '", w[i], "' is not a number");
      specs[i].weight = v;
    }
  }
  return specs;
}

}  // namespace llmtune::cli
