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
// Errors (clear, naming the spec / line): a command that exits non-zero, prints fewer/more lines than
// responses, a non-number or a NaN/inf; an invalid regex; gsm8k without "answer" fields.
#pragma once
#include <string>
#include <vector>

namespace llmtune::rl {

struct RewardInput {
  std::string prompt, response, answer;  // answer: the dataset's "answer" field ("" if absent)
};

enum class RewardKind { keyword, regex, length, gsm8k, command };

struct RewardSpec {
  RewardKind kind = RewardKind::keyword;
  std::string text;          // keyword / regex pattern / command line
  int64_t min_len = 0, max_len = 0;
  std::string source;        // the spec as given (for error messages)
};

RewardSpec parse_reward_spec(const std::string& spec);

// One reward per input, summed over the specs. Fails on a non-finite result.
std::vector<float> compute_rewards(const std::vector<RewardSpec>& specs, const std::vector<RewardInput>& inputs);

// The number after the last "####" (commas and spaces stripped); "" if none.
std::string gsm8k_final_answer(const std::string& text);

}  // namespace llmtune::rl
