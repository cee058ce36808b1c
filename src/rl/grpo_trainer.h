// GRPO (TRL GRPOTrainer, hf-semantics §5.4): per step, P prompts × num_generations sampled completions
// (KV-cache generation), rule/command rewards, group-normalised advantages, the clipped objective with
// optional β·k3 KL to the reference (the same weights with adapters off, or a frozen copy), loss_type
// aggregation via grpo_math; one optimizer step per generation batch (num_iterations = 1, so
// logp_old = logp.detach()). Logs reward mean/std, KL, clip ratios, completion length, loss, lr.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "rl/grpo_math.h"
#include "rl/rewards.h"

namespace llmtune::rl {

struct PromptRow {
  std::string prompt, answer;
  std::vector<int32_t> ids;
  int64_t line = 0;
};

// {"prompt"} (+ optional "answer") JSONL. A prompt that leaves no room for max_new_tokens within the
// model's context fails, naming the line.
std::vector<PromptRow> load_prompt_rows(const std::string& path, const EncodeFn& encode, int64_t context,
                                        int64_t max_new_tokens);
std::vector<PromptRow> parse_prompt_rows(std::string_view content, std::string_view name, const EncodeFn& encode,
                                         int64_t context, int64_t max_new_tokens);

struct GrpoArgs {
  std::string output_dir;
  GrpoLossOptions loss;                 // loss_type, epsilon, beta
  ScaleRewards scale_rewards = ScaleRewards::group;
  int64_t num_generations = 8;
  int64_t prompts_per_step = 2;         // generation batch = prompts_per_step · num_generations completions
  int64_t max_new_tokens = 16;          // max_completion_length
  float temperature = 1.0f, top_p = 1.0f;
  int top_k = 0;
  int64_t max_steps = 10;
  double learning_rate = 1e-6;
  double weight_decay = 0.0, max_grad_norm = 1.0;
  std::string optim = "adamw_torch", lr_scheduler_type = "linear";
  int64_t warmup_steps = 0;
  int64_t logging_steps = 1;
  uint64_t seed = 42;
  std::vector<int32_t> eos_ids;
};

struct GrpoHooks {
  std::function<void(const std::string& dir)> save_model;
  std::function<void(const nlohmann::json& entry)> on_log;
  // Decodes completion tokens to text for the rewards.
  std::function<std::string(const std::vector<int32_t>&)> decode;
};

struct GrpoTrainResult {
  std::vector<double> reward_mean;  // per step
  std::vector<nlohmann::json> log_history;
  double runtime_s = 0;
};

GrpoTrainResult grpo_train(Model& policy, Model* ref, const std::vector<PromptRow>& prompts,
                           const std::vector<RewardSpec>& rewards, const GrpoArgs& args, const GrpoHooks& hooks);

}  // namespace llmtune::rl
