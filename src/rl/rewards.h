// Rule rewards for GRPO / PPO rollouts (length bound, keyword, regex, GSM8K "####" exact answer) and an
// external command that reads JSONL {"prompt","response"} on stdin and writes one float per line.
//
// Spec strings (--reward, repeatable; the rewards of several specs are summed, TRL's reward_funcs):
//   keyword:WORD            1 if the response contains WORD, else 0
//   regex:PATTERN           1 if std::regex_search(response, PATTERN) matches (ECMAScript), else 0
//   length:MIN:MAX          1 if MIN <= response characters <= MAX, else 0
//   gsm8k                   1 if the number after the response's last "####" equals the row's "answer"
//                           (its own "####" part when present), commas stripped, else 0
//   command:SHELL COMMAND   runs the command once per batch through /bin/sh
//   model:DIR               a reward model (`llmtune train --task reward` output: a seq-cls model folder or
//                           a SEQ_CLS LoRA adapter folder naming its base), loaded once when the spec is
//                           parsed; scores prompt ⊕ response (rl/reward_model.h)
// Errors (clear, naming the spec / line): a command that exits non-zero or is killed, prints fewer/more
// lines than responses, a non-number or a NaN/inf; an invalid regex; gsm8k without "answer" fields; a
// reward model that is not one, or whose output is not finite; any spec giving a non-finite reward.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace llmtune::rl {

struct RewardInput {
  std::string prompt, response, answer;  // answer: the dataset's "answer" field ("" if absent)
};

enum class RewardKind { keyword, regex, length, gsm8k, command, model };

struct RewardModel;  // rl/reward_model.h

struct RewardSpec {
  RewardKind kind = RewardKind::keyword;
  std::string text;          // keyword / regex pattern / command line / reward model folder
  int64_t min_len = 0, max_len = 0;
  std::string source;        // the spec as given (for error messages)
  double weight = 1.0;       // TRL reward_weights: the total is Σ weight·reward
  std::shared_ptr<RewardModel> model;  // kind model: loaded once, shared by copies of the spec
};

RewardSpec parse_reward_spec(const std::string& spec);

// Each spec's rewards (unweighted), one vector per spec, each one value per input. Fails, naming the
// spec, on a non-finite value.
std::vector<std::vector<float>> compute_reward_terms(const std::vector<RewardSpec>& specs,
                                                     const std::vector<RewardInput>& inputs);
// One reward per input: Σ_spec weight·reward (TRL sums its reward_funcs). Fails on a non-finite result.
std::vector<float> compute_rewards(const std::vector<RewardSpec>& specs, const std::vector<RewardInput>& inputs);

// The number after the last "####" (commas and spaces stripped); "" if none.
std::string gsm8k_final_answer(const std::string& text);

}  // namespace llmtune::rl
