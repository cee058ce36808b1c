// The setup `llmtune dpo`, `grpo` and `ppo` share: the train plan and the checks no RL command passes, the
// policy model + tokenizer, what trains (LoRA, or the freeze policy + a frozen reference copy) and the hooks
// that save / reload the trained weights. Each command calls these in its own order (its errors come first).
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/progress.h"
#include "cli/train_options.h"
#include "model/model.h"
#include "peft/lora_config.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

// Sets --num_threads and resolves the train plan; fails, naming `command`, for --task_type SEQ_CLS and
// k-bit loading (no RL command supports them).
TrainPlan resolve_rl_plan(const ResolvedOptions& o, const std::string& command);

// Fails when output_dir holds another run (rl::check_rl_output_dir): call it before anything loads.
void check_rl_output_dir(const TrainPlan& plan);

// "llmtune <command> — resolved configuration:" and the options as JSON, flushed (loading takes a while).
void print_rl_config(const ResolvedOptions& o, const std::string& command);

// output_dir, created, with run_config.json (the resolved options) in it.
void write_rl_run_config(const ResolvedOptions& o, const std::string& out_dir);

// The optimizer, clipping and schedule fields that DpoArgs, GrpoArgs and PpoArgs share, from the
// resolved TrainingArguments.
template <class Args>
void copy_optimizer_arguments(Args& a, const TrainingArguments& t) {
  a.learning_rate = t.learning_rate;
  a.weight_decay = t.weight_decay;
  a.adam_beta1 = t.adam_beta1;
  a.adam_beta2 = t.adam_beta2;
  a.adam_epsilon = t.adam_epsilon;
  a.optim = t.optim;
  a.max_grad_norm = t.max_grad_norm;
  a.lr_scheduler_type = t.lr_scheduler_type;
  a.warmup_ratio = t.warmup_ratio;
  a.warmup_steps = t.warmup_steps;
}

struct RlPolicy {
  std::string model_dir;
  bool lora = false;              // method lora: adapters train, the reference is the same weights with them off
  Model model;                    // the policy that trains
  Tokenizer tokenizer;
  LoraConfig lora_config;         // what apply_lora attached (lora only)
  std::unique_ptr<Model> ref;     // frozen reference copy (freeze / full, when a reference is wanted), else null
};

// Loads plan.model_dir's weights and tokenizer (nothing trains yet).
RlPolicy load_rl_policy(const TrainPlan& plan);

// What trains and what the reference is: LoRA (reference = adapters off), or the freeze policy plus, when
// `with_reference`, a frozen copy of the model. Prints one line each, calling the reference `reference_name`.
// The policy must not move afterwards (the hooks below hold references to it).
void attach_trainable(RlPolicy& p, const TrainPlan& plan, bool with_reference, const std::string& reference_name);

// The adapter (lora) or the model folder with the tokenizer files into `dir`.
void save_rl_policy(const RlPolicy& p, const std::string& dir);

// hooks.save_model / hooks.load_model_weights (checkpoints and resume) of any RL trainer's hooks.
template <class Hooks>
void set_rl_save_hooks(Hooks& hooks, RlPolicy& p) {
  hooks.save_model = [&p](const std::string& dir) { save_rl_policy(p, dir); };
  hooks.load_model_weights = [&p](const std::string& dir) { load_trained_weights(p.model, p.lora, dir); };
}

// One log line (through the progress bar when there is one), then report.html brought up to date; a
// failing report is a warning, not a failed run.
void log_line_and_update_report(Progress* progress, const std::string& line, const std::string& out_dir);

}  // namespace llmtune::cli
