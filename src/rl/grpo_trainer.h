// GRPO (TRL GRPOTrainer, hf-semantics §5.4): per step, P prompts × num_generations sampled completions
// (KV-cache generation), rule/command rewards, group-normalised advantages, the clipped objective with
// optional β·k3 KL to the reference (the same weights with adapters off, or a frozen copy), loss_type
// aggregation via grpo_math; one optimizer step per generation batch (num_iterations = 1, so
// logp_old = logp.detach()). Logs reward mean/std (and per reward spec), KL, clip ratios, completion
// length, loss, lr. Checkpoints (save_steps) and bit-exact resume through rl/rl_checkpoint.h.
//
// Choices (and differences from TRL):
//  * The generation batch (prompts_per_step · num_generations completions) is ONE optimizer step, its
//    loss aggregated over the whole batch (GA = 1 in grpo_math). The CLI maps TRL's
//    per_device_train_batch_size · gradient_accumulation_steps completions onto it; for loss_type grpo,
//    dr_grpo and dapo that equals TRL's accumulated gradient, for bnpo TRL normalises per micro-batch.
//  * Prompts are drawn in a reshuffled order each pass over the data (no RepeatSampler); the sampling
//    seed of step s is seed·1000003 + s, so a resumed run draws the same completions.
//  * beta ≠ 0 needs a reference: `ref`, or LoRA adapters on the policy (the reference is the policy with
//    them off); a full / freeze run without `ref` fails instead of measuring the KL to itself.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "rl/grpo_math.h"
#include "rl/rewards.h"
#include "rl/rl_checkpoint.h"

namespace llmtune::rl {

struct PromptRow {
  std::string prompt, answer;
  std::vector<int32_t> ids;
  int64_t line = 0;
};

// {"prompt"} (+ optional "answer", a string or number) JSONL. A prompt that leaves no room for
// max_new_tokens (max_completion_length) within the model's context fails, naming the line.
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
  int64_t max_steps = 10;               // <= 0: ceil(num_train_epochs · prompts / prompts_per_step)
  double num_train_epochs = 1.0;
  double learning_rate = 1e-6;
  double weight_decay = 0.0, max_grad_norm = 1.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  std::string optim = "adamw_torch", lr_scheduler_type = "linear";
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  int64_t logging_steps = 1;
  uint64_t seed = 42;
  std::vector<int32_t> eos_ids;
  // Checkpoints (need output_dir and hooks.save_model) and resume (needs hooks.load_model_weights).
  double save_steps = 0;                    // 0 = none; < 1 a ratio of max_steps
  std::optional<int64_t> save_total_limit;
  std::string resume_from_checkpoint;       // "" | "true" | a checkpoint folder
  bool overwrite_output_dir = false;
};

struct GrpoHooks {
  std::function<void(const std::string& dir)> save_model;
  std::function<void(const std::string& dir)> load_model_weights;  // resume: what save_model wrote
  std::function<void(const nlohmann::json& entry)> on_log;
  // After every optimizer step (progress bars): the step's loss and mean reward.
  std::function<void(int64_t step, int64_t max_steps, double loss, double reward)> on_step;
  // Decodes completion tokens to text for the rewards.
  std::function<std::string(const std::vector<int32_t>&)> decode;
};

struct GrpoTrainResult {
  int64_t steps = 0;
  std::vector<double> reward_mean;  // per step (a resumed run includes the steps before the checkpoint)
  std::vector<nlohmann::json> log_history;
  double runtime_s = 0;
};

// The number of optimizer steps grpo_train will take for `num_prompts` prompts.
int64_t grpo_max_steps(const GrpoArgs& args, int64_t num_prompts);

// Trains the policy's trainable params. Writes output_dir/metrics.jsonl (when output_dir is set),
// checkpoint-N folders every save_steps and output_dir/trainer_state.json; the final model save is the
// caller's.
GrpoTrainResult grpo_train(Model& policy, Model* ref, const std::vector<PromptRow>& prompts,
                           const std::vector<RewardSpec>& rewards, const GrpoArgs& args, const GrpoHooks& hooks);

}  // namespace llmtune::rl
