// PPO (TRL PPOTrainer, hf-semantics §5.1 classic / §5.2 current): per step, a batch of prompts is rolled out
// with the KV-cache generate(), scored by rule/command rewards, the policy / reference log-probs and the
// VALUE HEAD's values are computed, ppo_math turns them into KL-penalised rewards, GAE advantages and
// returns, then num_ppo_epochs × mini-batches of the clipped policy + value loss train the policy (its
// trainable params) and the value head together, through one backward per micro-batch.
//
// Design choices (and differences from TRL) — docs/rl.md has the user-facing version:
//  * Default variant PpoVariant::current (TRL ≥ 0.12): fixed kl_coef 0.05, k1 or k3 estimator, score one
//    position after the last response token, value mask one longer than the policy mask, log-probs from
//    logits / temperature. PpoVariant::classic (TRL ≤ 0.11): adaptive KL controller on by default, score at
//    the last response token, raw (untempered) log-probs, ratio_threshold 10 zeroes a runaway mini-batch.
//  * Value head: TRL classic's AutoModelForCausalLMWithValueHead — a Linear(hidden → 1, with bias) on the
//    policy's final hidden state (after the final norm) at every position, SHARING the trunk with the
//    policy (current TRL uses a separate value model; sharing keeps one copy of the weights). The head
//    trains in full; with LoRA the value loss also reaches the trunk through the adapters (as a PEFT
//    value-head model in classic TRL does). Init: weight ~ N(0, v_head_init_std = 0.02), bias 0 (TRL's
//    "normal" strategy uses std 0.2; current TRL's value model head uses initializer_range 0.02). No
//    dropout on the head (current TRL disables dropout everywhere; classic has 0.1 summary dropout).
//    Saved as value_head.safetensors with TRL's state-dict keys v_head.summary.weight [1,E] and
//    v_head.summary.bias [1], beside the adapter / model.
//  * A response ends at (and includes) its first EOS, else after response_length tokens — TRL current with
//    stop_token="eos" (TRL's default stop_token=None keeps tokens after EOS). The response arrays are
//    B × response_length, so the current variant's "score at last+1 unless that is past the end" rule is
//    exactly TRL's.
//  * Old log-probs and values come from a training-path forward without dropout (classic TRL's
//    batched_forward_pass; current TRL takes them from the generation logits, which differ only by
//    rounding). Dropout (LoRA's too) is off in every pass, as current TRL's disable_dropout.
//  * Batch arithmetic as current TRL: batch_size (rollouts per step) = per_device_train_batch_size ·
//    gradient_accumulation_steps · num_mini_batches; each PPO epoch shuffles the batch into num_mini_batches
//    mini-batches of GA micro-batches; one optimizer step per mini-batch, micro-batch losses scaled by 1/GA
//    (accelerate's backward). The LR scheduler steps once per PPO step (rollout batch).
//  * The policy and the value head have separate optimizers of the same kind and learning rate (the value
//    head is not a Model parameter, so save_model / save_adapter never see it); gradient clipping, when
//    max_grad_norm > 0, uses the norm over both together (TRL's PPO loops do not clip by default).
//  * Guards: a non-finite loss or gradient norm fails naming the step, before any optimizer update of that
//    step's mini-batch, so no update and no checkpoint carries NaN; checkpoints are written atomically
//    (rl/rl_checkpoint.h) and resume bit-exactly.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/decoder.h"
#include "model/model.h"
#include "rl/grpo_trainer.h"  // PromptRow, load_prompt_rows
#include "rl/policy_logp.h"
#include "rl/ppo_math.h"
#include "rl/rewards.h"

namespace llmtune::rl {

// ---- value head ----

// The two parameters live in a parameter-only Model (no config, no blocks) so that make_optimizer,
// save_optimizer_state and the gradient-norm helpers serve them unchanged. params.params[0] = weight,
// [1] = bias, both trainable with gradient buffers.
struct ValueHead {
  Model params;
  Param& weight() { return params.params[0]; }
  Param& bias() { return params.params[1]; }
  const Param& weight() const { return params.params[0]; }
  const Param& bias() const { return params.params[1]; }
  int64_t hidden() const { return weight().value.shape[1]; }
};

inline constexpr const char* kValueHeadWeight = "v_head.summary.weight";
inline constexpr const char* kValueHeadBias = "v_head.summary.bias";
inline constexpr const char* kValueHeadFile = "value_head.safetensors";

// weight ~ N(0, init_std) (Rng(seed)), bias 0.
ValueHead make_value_head(int64_t hidden, float init_std, uint64_t seed);
// values[i] = bias + Σ_e weight[e]·h[i·E + e] for the N rows of h [N, E] (double accumulation).
std::vector<float> value_head_forward(const ValueHead& vh, const float* h, int64_t N);
// From ∂L/∂values [N]: ACCUMULATES the weight/bias gradients and, when d_h is non-null, d_h[i·E+e] +=
// dvalues[i]·weight[e] (rows with dvalues 0 are skipped).
void value_head_backward(ValueHead& vh, const float* h, int64_t N, std::span<const float> dvalues, float* d_h);
// value_head.safetensors with TRL's keys (F32); load checks names and shapes, naming the file.
void save_value_head(const ValueHead& vh, const std::string& path);
ValueHead load_value_head(const std::string& path, int64_t hidden);

// ---- pieces of a step, exposed for tests ----

// Reference log-probs of pb (as forward_token_logps, no dropout): `ref` when given (full / freeze keep a
// frozen copy), else `policy` with its adapters switched off (restored afterwards, also on error).
std::vector<float> reference_token_logps(Model& policy, Model* ref, Workspace& ws, const PackedBatch& pb,
                                         float temperature);

// One forward of `pb` through the policy and the value head: per-position log-probs and values
// ([pb.B·pb.T], full layout). Leaves the activations in ws for ppo_backward.
struct PolicyValueOut {
  std::vector<float> logp, values;
};
PolicyValueOut policy_value_forward(Model& policy, const ValueHead& vh, Workspace& ws, const PackedBatch& pb,
                                    float temperature);
// After policy_value_forward on the same batch: accumulates into the policy's trainable params and the
// value head the gradient of a loss with ∂L/∂logp = dlogp and ∂L/∂values = dvalues (full layout), through
// one decoder_backward (backward_token_weights_and_hidden).
void ppo_backward(Model& policy, ValueHead& vh, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                  std::span<const float> dvalues, float temperature);

// ---- the trainer ----

struct PpoArgs {
  std::string output_dir;  // metrics.jsonl and checkpoint-N folders ("" = none)
  PpoVariant variant = PpoVariant::current;
  // Rollouts.
  int64_t per_device_train_batch_size = 8;  // rows per micro-batch
  int64_t gradient_accumulation_steps = 1;  // micro-batches per mini-batch (per optimizer step)
  int64_t num_mini_batches = 1;             // batch_size = the product of these three
  int64_t local_rollout_forward_batch_size = 64;  // rows per generation / rollout forward chunk
  int64_t response_length = 53;             // max new tokens
  float temperature = 0.7f, top_p = 1.0f;
  int top_k = 0;
  std::vector<int32_t> eos_ids;
  std::optional<double> missing_eos_penalty;  // subtracted from the score of responses without EOS
  ScoreOptions score;                        // use_score_scaling / use_score_norm / score_clip
  // PPO.
  int64_t num_ppo_epochs = 4;
  KlEstimator kl_estimator = KlEstimator::k1;
  bool adaptive_kl = false;  // classic TRL's AdaptiveKLController (init_kl_coef, target, horizon)
  double kl_coef = 0.05;     // fixed coefficient (adaptive_kl = false)
  double init_kl_coef = 0.2, target = 6.0, horizon = 10000.0;
  double gamma = 1.0, lam = 0.95;
  bool whiten_rewards = false;
  PpoLossOptions loss;        // cliprange, cliprange_value, vf_coef, ratio_threshold (classic)
  // Optimisation (Trainer options).
  double num_train_epochs = 1.0;  // total episodes = epochs · prompts (when max_steps <= 0)
  int64_t max_steps = -1;         // PPO steps (rollout batches); > 0 overrides num_train_epochs
  double learning_rate = 3e-6;    // TRL ≥ 0.12 PPOConfig default
  double weight_decay = 0.0, adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  std::string optim = "adamw_torch";
  double max_grad_norm = 0.0;  // 0 = no clipping (TRL's PPO loops do not clip)
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  bool gradient_checkpointing = false;
  int64_t logging_steps = 1;
  // Checkpoints and resume through rl/rl_checkpoint.h (need output_dir and hooks.save_model; resume needs
  // hooks.load_model_weights). save_steps: 0 = none, >= 1 every N steps, (0, 1) a ratio of max_steps; the
  // last step is saved too (HF).
  double save_steps = 0;
  std::optional<int64_t> save_total_limit;
  std::string resume_from_checkpoint;  // "" | "true" (latest in output_dir) | a checkpoint folder
  bool overwrite_output_dir = false;   // a fresh run clears a previous run's checkpoints and metrics
  uint64_t seed = 42;

  int64_t batch_size() const { return per_device_train_batch_size * gradient_accumulation_steps * num_mini_batches; }
};

struct PpoHooks {
  std::function<void(const std::string& dir)> save_model;  // adapter or full weights into a folder
  std::function<void(const std::string& dir)> load_model_weights;  // resume: back what save_model wrote
  std::function<void(const nlohmann::json& entry)> on_log;  // every metrics.jsonl entry
  std::function<void(int64_t step, int64_t max_steps, const nlohmann::json& stats)> on_step;
  // Response tokens → text for the rewards (required).
  std::function<std::string(const std::vector<int32_t>&)> decode;
};

struct PpoTrainResult {
  int64_t steps = 0;
  std::vector<double> reward_mean;  // raw score mean per step (before penalty / scaling)
  std::vector<double> kl;           // objective/kl per step
  double final_kl_coef = 0;
  double runtime_s = 0;
  std::vector<nlohmann::json> log_history;
};

// PPO steps of a run: max_steps when > 0, else ceil(floor(num_train_epochs · num_prompts) / batch_size)
// (TRL: num_total_batches = ceil(total_episodes / batch_size)).
int64_t ppo_max_steps(const PpoArgs& args, int64_t num_prompts);

// PPO steps over `prompts` (cycled in a reshuffled order). Trains policy's trainable params and `vh`.
// Writes output_dir/metrics.jsonl and, through RlCheckpointer (trainer "ppo"), checkpoint-N folders:
// weights via hooks.save_model, value_head.safetensors, optimizer.safetensors (policy) and
// value_head_optimizer.safetensors, scheduler.json, rng_state.json (prompt order + mini-batch
// permutation streams), trainer_state.json, and llmtune_state.json whose trainer_state holds the KL
// controller value, RunningMoments, the prompt cursor/order and the per-step reward/KL lists. Generation
// seeds depend only on (seed, step), so a resumed run is bit-identical to an uninterrupted one.
// output_dir/trainer_state.json is written at the end; the final model save is the caller's.
PpoTrainResult ppo_train(Model& policy, Model* ref, ValueHead& vh, const std::vector<PromptRow>& prompts,
                         const std::vector<RewardSpec>& rewards, const PpoArgs& args, const PpoHooks& hooks);

}  // namespace llmtune::rl
