// Checkpoints and bit-exact resume for the RL trainers (DPO, GRPO, PPO), in the Trainer's checkpoint-N
// layout: the model/adapter (the trainer's save hook), optimizer.safetensors, scheduler.json,
// rng_state.json, an HF-style trainer_state.json and llmtune_state.json — each folder written atomically
// (write_dir_atomic), rotated by save_total_limit, and read back on resume_from_checkpoint.
//
// Use (one call at the start, one per step):
//   RlCheckpointer ck(options, parts, info);        // parts: trainer name, fingerprint, optimizer(s),
//                                                   // scheduler, named RNGs, save/load hooks (the save hook
//                                                   // writes every model file: adapter, value head …)
//   std::optional<RlState> resumed = ck.begin();   // fresh: checks/clears output_dir; resume: loads it all
//   ... restore the trainer's own counters from resumed->trainer, start at resumed->global_step + 1 ...
//   each step:  ck.maybe_save(state);               // saves when step % save_steps == 0 or step == max_steps
//   at the end: ck.write_final_state(state);        // output_dir/trainer_state.json
//
// Differences from the Trainer's checkpoints (train/trainer.h), deliberate:
//  * log_history entries keep their "type" field ("train" / "eval" / "summary" / …) so metrics.jsonl can
//    be rebuilt exactly; HF readers ignore the extra key.
//  * llmtune_state.json names the trainer ("dpo", "grpo", "ppo"): a checkpoint of another trainer (or of
//    `llmtune train`) is refused, as is one whose model fingerprint differs.
//  * The trainer's own counters (data cursor, logging accumulators, KL coefficient, …) travel as one
//    opaque JSON object (RlState::trainer); doubles round-trip exactly through JSON.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/scheduler.h"

namespace llmtune::rl {

// The TrainingArguments that govern checkpoints.
struct RlCheckpointOptions {
  std::string output_dir;                    // "" = no checkpoints and no resume
  double save_steps = 0;                     // 0 = no checkpoints; >= 1 every N steps; (0, 1) a ratio of max_steps
  std::optional<int64_t> save_total_limit;   // keep only the newest N checkpoint-* folders
  std::string resume_from_checkpoint;        // "" / "false" | "true" (latest in output_dir) | a checkpoint folder
  bool overwrite_output_dir = false;         // a fresh run clears a previous run's checkpoints and metrics
};

// The trainer's live objects a checkpoint captures (all pointers stay owned by the trainer).
struct RlCheckpointParts {
  std::string trainer;      // "dpo" | "grpo" | "ppo"
  std::string fingerprint;  // model_fingerprint(policy) plus any lines of the trainer's own (value head …)
  Optimizer* optimizer = nullptr;  // → optimizer.safetensors
  // More optimizers (PPO's value head: {"value_head", &opt_v} → value_head_optimizer.safetensors).
  std::vector<std::pair<std::string, Optimizer*>> extra_optimizers;
  LrScheduler* scheduler = nullptr;
  std::vector<std::pair<std::string, Rng*>> rngs;  // named streams; every name must be in a resumed checkpoint
  std::function<void(const std::string& dir)> save_model;          // adapter / weights into a folder
  std::function<void(const std::string& dir)> load_model_weights;  // back into the live model (resume only)
};

// Fields of trainer_state.json that describe the plan.
struct RlRunInfo {
  int64_t max_steps = 0;
  int64_t logging_steps = 0;
  int64_t eval_steps = 0;
  int64_t train_batch_size = 0;
  double num_train_epochs = 0;
};

// Where the run is; what a resume gives back.
struct RlState {
  int64_t global_step = 0;
  double epoch = 0;
  std::vector<nlohmann::json> log_history;             // the metrics.jsonl entries so far (with "type")
  nlohmann::json trainer = nlohmann::json::object();   // the trainer's own counters, opaque here
};

// The fields every RL trainer fills the same way. Args is DpoArgs / GrpoArgs / PpoArgs (same field
// names: output_dir, save_steps, save_total_limit, resume_from_checkpoint, overwrite_output_dir,
// logging_steps, num_train_epochs); the trainer then adds what is its own (RNG streams, extra
// optimizers, fingerprint lines, wrapped save/load hooks, eval_steps).
template <class Args>
RlCheckpointOptions rl_checkpoint_options(const Args& args) {
  RlCheckpointOptions co;
  co.output_dir = args.output_dir;
  co.save_steps = args.save_steps;
  co.save_total_limit = args.save_total_limit;
  co.resume_from_checkpoint = args.resume_from_checkpoint;
  co.overwrite_output_dir = args.overwrite_output_dir;
  return co;
}

// trainer, fingerprint = model_fingerprint(policy), the policy optimizer, the scheduler and the hooks.
RlCheckpointParts rl_checkpoint_parts(std::string trainer, const Model& policy, Optimizer& optimizer,
                                      LrScheduler& scheduler, std::function<void(const std::string&)> save_model,
                                      std::function<void(const std::string&)> load_model_weights);

// max_steps, logging_steps (at least 1), train_batch_size and num_train_epochs; eval_steps stays 0.
template <class Args>
RlRunInfo rl_run_info(const Args& args, int64_t max_steps, int64_t train_batch_size) {
  RlRunInfo info;
  info.max_steps = max_steps;
  info.logging_steps = std::max<int64_t>(args.logging_steps, 1);
  info.train_batch_size = train_batch_size;
  info.num_train_epochs = args.num_train_epochs;
  return info;
}

// Refuses (before anything is loaded) an output_dir that holds another run — checkpoint-N folders,
// metrics.jsonl or trainer_state.json — unless overwrite_output_dir or resume_from_checkpoint is set.
// begin() checks again; commands call this early so a mistake fails before the model loads.
void check_rl_output_dir(const RlCheckpointOptions& opt);

// The checkpoint `resume_from_checkpoint` designates ("" when not resuming): "true" → the newest
// checkpoint-N in output_dir (fails when there is none), a folder → itself.
std::string resolve_resume_checkpoint(const RlCheckpointOptions& opt);

struct RlCheckpointer {
  // Fails when save_steps / save_total_limit are invalid. Checkpoints are written only when output_dir
  // is set, save_steps > 0 and parts.save_model is given.
  RlCheckpointer(RlCheckpointOptions options, RlCheckpointParts parts, RlRunInfo info);

  // Fresh run: check_rl_output_dir, then (overwrite_output_dir) removes the previous run's checkpoints,
  // metrics.jsonl and trainer_state.json; returns nullopt. Resume: validates the checkpoint (trainer,
  // fingerprint, files, step ≤ max_steps), loads the weights (load_model_weights), optimizer, scheduler
  // step and RNG states, and returns its state. Every file is read and checked before the first one is
  // loaded, so a wrong or incomplete checkpoint fails without touching the model.
  std::optional<RlState> begin();

  bool enabled() const { return save_every_ > 0; }
  int64_t save_steps() const { return save_every_; }
  // step % save_steps == 0 or the last step (HF saves a final checkpoint with the steps strategy).
  bool due(int64_t step) const;
  // Writes output_dir/checkpoint-<global_step> atomically and rotates. A failure leaves the earlier
  // checkpoints as they were and no partial checkpoint-N folder.
  void save(const RlState& state);
  void maybe_save(const RlState& state) {
    if (due(state.global_step)) save(state);
  }
  // output_dir/trainer_state.json after training (no-op without output_dir).
  void write_final_state(const RlState& state) const;
  // The HF trainer_state.json object for `state`.
  nlohmann::json trainer_state_json(const RlState& state, bool final_step) const;

  RlCheckpointOptions options;
  RlCheckpointParts parts;
  RlRunInfo info;

 private:
  int64_t save_every_ = 0;
};

}  // namespace llmtune::rl
