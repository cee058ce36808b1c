// DPO (TRL DPOTrainer, hf-semantics §5.3): preference data loading, reference log-probs computed ONCE
// and cached (the same weights with adapters off under LoRA, or a separate frozen model), and a small
// training loop reusing the Trainer's optimizer / LR schedule / clipping, logging TRL's reward metrics.
//
// Choices (and differences from TRL):
//  * prompt ids = encode(prompt, add_special_tokens); completion ids = encode(completion, false) ⊕ EOS
//    (EOS appended when absent), encoded SEPARATELY and concatenated (TRL tokenises prompt+completion and
//    splits at len(prompt ids); a BPE merge across the junction may differ).
//  * Truncation keeps the start to max_length (TRL's keep_start); pairs whose prompt alone reaches
//    max_length are dropped (as TRL), counted in the dataset.
//  * The reference log-probs are always precomputed before the first step (TRL's precompute_ref_log_probs):
//    no dropout is used in either pass (TRL disables dropout for DPO), so this equals computing them per step.
//  * loss = mean over the pairs of a micro-batch, averaged over gradient_accumulation_steps micro-batches.
//  * Evaluation reports TRL's eval_rewards/* plus eval_policy_accuracy = mean(logπθ(chosen) > logπθ(rejected))
//    (the raw preference of the model, meaningful before training when the implicit rewards are all 0).
//  * Checkpoints (save_steps; also at the last step, as HF) and resume_from_checkpoint go through
//    rl/rl_checkpoint.h: weights/adapter, optimizer, scheduler, RNGs, data cursor and logging accumulators,
//    so a resumed run continues bit for bit. The reference log-probs are recomputed on resume (they depend
//    only on the reference weights, which never change); the evaluation before training is not repeated.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "model/model.h"
#include "rl/dpo_math.h"
#include "rl/policy_logp.h"

namespace llmtune::rl {

struct PreferencePair {
  ScoredSeq chosen, rejected;  // prompt ⊕ completion (⊕ EOS)
  int64_t line = 0;            // 1-based JSONL line
};

struct PreferencePairs {
  std::vector<PreferencePair> pairs;
  int64_t num_truncated = 0, num_dropped = 0;
};

// {"prompt","chosen","rejected"} JSONL (prompt may be absent/empty only if add_special_tokens gives a BOS).
PreferencePairs parse_preference_pairs(std::string_view content, std::string_view name, const EncodeFn& encode,
                                       const TokenIds& ids, int64_t max_length, bool add_special_tokens = true);
PreferencePairs load_preference_pairs(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                                      int64_t max_length, bool add_special_tokens = true);

struct RefLogps {
  std::vector<float> chosen, rejected;  // Σ completion log-probs per pair
};

// Sequence log-prob sums of every pair under `m` as it is (no dropout), `batch_pairs` pairs per forward.
RefLogps sequence_logps(Model& m, const std::vector<PreferencePair>& pairs, int64_t batch_pairs);
// The reference: `ref` when given (full / freeze fine-tuning keeps a frozen copy), else `policy` with its
// adapters switched off (restored afterwards).
RefLogps reference_logps(Model& policy, Model* ref, const std::vector<PreferencePair>& pairs, int64_t batch_pairs);

struct DpoArgs {
  std::string output_dir;
  DpoOptions loss;  // loss_type, beta, label_smoothing
  double num_train_epochs = 1.0;
  int64_t max_steps = -1;
  int64_t per_device_train_batch_size = 8;  // pairs per micro-batch
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 1e-6;  // TRL DPOConfig default
  double weight_decay = 0.0, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  std::string optim = "adamw_torch";
  double max_grad_norm = 1.0;
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  int64_t logging_steps = 10;
  int64_t eval_steps = 0;  // 0: evaluate only before and after training
  double save_steps = 0;  // 0: no checkpoints; >= 1 every N steps (and the last); (0, 1) a ratio of max_steps
  std::optional<int64_t> save_total_limit;
  std::string resume_from_checkpoint;  // "" | "true" (latest checkpoint-N in output_dir) | a checkpoint folder
  bool overwrite_output_dir = false;   // a fresh run clears a previous run's checkpoints / metrics
  uint64_t seed = 42;
};

struct DpoEval {
  double loss = 0, accuracy = 0, margin = 0, reward_chosen = 0, reward_rejected = 0, policy_accuracy = 0;
  nlohmann::json to_json(int64_t step) const;  // {"type":"eval","step","eval_loss","eval_rewards/accuracies",...}
};

struct DpoHooks {
  std::function<void(const std::string& dir)> save_model;  // adapter or full weights into a folder
  std::function<void(const std::string& dir)> load_model_weights;  // resume: what save_model wrote, back
  std::function<void(const nlohmann::json& entry)> on_log;  // every metrics.jsonl entry
  std::function<void(int64_t step, int64_t max_steps, double loss)> on_step;
};

// Evaluates the policy on `pairs` against cached reference log-probs.
DpoEval dpo_evaluate(Model& policy, const std::vector<PreferencePair>& pairs, const RefLogps& ref,
                     const DpoOptions& opt, int64_t batch_pairs);

struct DpoTrainResult {
  int64_t steps = 0;
  double train_loss = 0;  // mean step loss
  double runtime_s = 0;
  std::vector<nlohmann::json> log_history;
};

// Trains `policy` (its trainable params) with DPO. eval_pairs may be empty. Reference log-probs for both
// sets are computed up front via reference_logps(policy, ref, ...). Writes output_dir/metrics.jsonl
// (one JSON object a line), checkpoint-N folders and output_dir/trainer_state.json; the final save is the
// caller's. Resuming a run without `ref` needs LoRA adapters (the reference is the base with them off).
DpoTrainResult dpo_train(Model& policy, Model* ref, const std::vector<PreferencePair>& train_pairs,
                    const std::vector<PreferencePair>& eval_pairs, const DpoArgs& args, const DpoHooks& hooks);

}  // namespace llmtune::rl
