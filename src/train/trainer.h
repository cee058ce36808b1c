// The training loop of transformers' Trainer for causal-LM fine-tuning on CPU: gradient
// accumulation, clipping, optimizer + LR schedule, logging (metrics.jsonl + log_history), evaluation,
// checkpoints (atomic, rotated) and bit-exact resume. The model is saved/loaded through callbacks so
// the trainer works for full, partial (frozen) and LoRA fine-tuning alike: it trains whatever Params
// are marked trainable.
//
// Deliberate differences from Hugging Face (hf-semantics §4), all in one place:
//  * Loss normalisation: a window's gradient is that of the TOKEN MEAN over the window, dividing by the
//    number of predicted (shifted) tokens; HF divides by count(labels != -100) on unshifted labels (one
//    more per sequence). Logged losses are therefore the true mean CE of the window.
//  * A window with no predicted token contributes no gradient (HF would produce NaN); the optimizer and
//    scheduler still step. Its loss, like any non-finite loss, is replaced by the mean of the steps
//    since the last log (HF's logging_nan_inf_filter).
//  * eval_strategy: "no" | "steps" ("epoch" is not supported yet). When an eval set is given and
//    eval_steps is set explicitly, evaluation runs every eval_steps even if eval_strategy is "no"
//    (HF would ignore the eval set). eval_steps unset → logging_steps. "steps" without an eval set fails.
//    As in HF there is no extra evaluation after the last step unless it is a multiple of eval_steps;
//    call evaluate() for one.
//  * grad_norm is computed and logged even when max_grad_norm <= 0 turns clipping off (HF logs none).
//  * eval_loss is HF's sample-weighted mean of per-batch token means (§4.13), with batches that have no
//    predicted token skipped; "perplexity" = exp(eval_loss) is added to the eval entry (as run_clm does).
//  * Checkpoints hold HF-compatible model files (via save_model) and trainer_state.json, but our own
//    optimizer.safetensors / scheduler.json / rng_state.json instead of torch pickles, plus
//    llmtune_state.json (model fingerprint, loss accumulators). No training_args.bin.
//  * Resume continues the logging accumulators (loss since last log, total loss), so a resumed run logs
//    exactly what an uninterrupted one does; HF restarts the "since last log" average at the resume step.
//    The learning-rate schedule comes from the current arguments with the checkpoint's step count (as HF).
//    metrics.jsonl is rewritten from the checkpoint's log_history, dropping lines of the interrupted run
//    that came after the checkpoint.
//  * train_loss = Σ step losses / global_step over the WHOLE run (resumes included); train_runtime and
//    the per-second rates cover this process's part only (HF divides a full-run sample count by it).
//  * num_input_tokens_seen counts non-padding input tokens (HF leaves it 0 unless asked).
//  * overwrite_output_dir removes the checkpoint-N folders, metrics.jsonl and trainer_state.json of the
//    previous run (HF only stops complaining), so rotation and resume never see stale checkpoints.
//  * The final output_dir/trainer_state.json (with the summary entry) is written by train() itself.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/collator.h"
#include "data/loader.h"
#include "model/decoder.h"
#include "model/model.h"
#include "train/checkpoint_files.h"
#include "train/optimizer.h"
#include "train/scheduler.h"

namespace llmtune {

// HF TrainingArguments names and defaults (hf-semantics §4.1). max_seq_length / packing are data
// options (DataLoader), not here.
struct TrainingArguments {
  std::string output_dir;
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  int64_t per_device_train_batch_size = 8;  // must equal the train DataLoader's batch_size
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double sgd_momentum = 0.0;  // optim "sgd" only (llmtune extra; HF passes none → 0)
  double max_grad_norm = 1.0;  // <= 0: no clipping (grad_norm is still logged)
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;  // > 0 wins over warmup_ratio
  double logging_steps = 500;  // < 1: ratio of max_steps → ceil(max_steps·ratio)
  bool logging_first_step = false;
  std::string eval_strategy = "no";   // "no" | "steps" (see the top of this file)
  std::optional<double> eval_steps;   // unset → logging_steps; < 1 is a ratio
  double save_steps = 500;            // < 1 is a ratio
  std::optional<int64_t> save_total_limit;  // unset: keep every checkpoint
  uint64_t seed = 42;                 // seeds the Trainer's dropout RNG (seed ^ const; shuffling uses the DataLoader's seed)
  std::string optim = "adamw_torch";
  bool gradient_checkpointing = false;  // keep block inputs only; recompute each block in backward
  std::string resume_from_checkpoint;  // "" (or "false") | "true" (latest in output_dir) | a checkpoint folder
  bool overwrite_output_dir = false;
};

// logging/save/eval intervals: values >= 1 are step counts (truncated), values in (0, 1) are ratios
// of max_steps → ceil(max_steps·value). Fails (naming `what`) on values <= 0.
int64_t resolve_interval(double value, int64_t max_steps, const char* what);

// Micro-batch `index` of an epoch whose row order is `order` (= loader.epoch_order(epoch)): the same
// batch as loader.get(epoch, index) without recomputing the permutation for every batch.
Batch batch_in_order(const DataLoader& loader, const std::vector<int64_t>& order, int64_t index);

// ---- one optimizer step on one accumulation window (the Trainer's inner loop; tests call it) ----

struct WindowLoss {
  double loss_sum = 0.0;          // Σ per-token CE over the window
  int64_t tokens = 0;             // predicted (shifted) tokens in the window: the divisor
  int64_t input_tokens = 0;       // non-padding input tokens (throughput, num_input_tokens_seen)
  int64_t samples = 0;            // Σ Batch::num_samples
  double flos = 0.0;              // 6 · non-embedding params · input_ids.numel() (HF floating_point_ops)
  double loss() const;            // loss_sum / tokens (NaN when tokens == 0)
};

// Runs forward + loss + backward for every micro-batch of the window, ACCUMULATING into the trainable
// params' gradients the gradient of the window's token mean (grad_scale = 1 / window tokens). With no
// predicted token in the window nothing is run. dropout_rng non-null = training mode (LoRA dropout).
WindowLoss accumulate_window_gradients(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng);

// A pluggable window loss (TrainerHooks::window_loss): the same contract as
// accumulate_window_gradients — run forward + loss + backward over the window, ACCUMULATING the gradient
// of the window's mean loss, and return the sum and divisor (`tokens` = whatever the mean is over: tokens
// for the LM loss, rows or pairs for a classifier / reward model). dropout_rng non-null = training mode.
using WindowLossFn = std::function<WindowLoss(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng)>;

struct StepResult {
  WindowLoss window;
  double grad_norm = 0.0;  // pre-clip
  double learning_rate = 0.0;
};

// Zeroes the gradients, accumulates the window's, clips to max_grad_norm, applies one optimizer
// step with learning rate `lr`, and zeroes the gradients again. An empty window_loss = the LM loss
// (accumulate_window_gradients).
StepResult train_step_on_window(Model& m, Workspace& ws, std::span<const Batch> window, Optimizer& opt, double lr,
                                double max_grad_norm, Rng* dropout_rng, const WindowLossFn& window_loss = {});

struct EvalLoss {
  double loss = 0.0;  // sample-weighted mean of per-batch token means (NaN if no batch had a token)
  int64_t batches = 0, samples = 0;
};
// Evaluation loss over every batch of `loader` (epoch 0, in order), without dropout.
EvalLoss evaluate_loss(Model& m, Workspace& ws, const DataLoader& loader);

// ---- the Trainer ----

struct StepMetrics {
  double loss = 0.0;               // this step's window loss (token mean)
  double grad_norm = 0.0;          // pre-clip
  double learning_rate = 0.0;      // lr of the step just taken
  double epoch = 0.0;              // state.epoch after the step
  double tokens_per_second = 0.0;  // non-padding input tokens of this step / its wall time
  double elapsed_seconds = 0.0;    // since train() started
};

struct TrainerHooks {
  // Writes the model (adapter or full weights) into a checkpoint folder. Required.
  std::function<void(const std::string& dir)> save_model;
  // Loads what save_model wrote back into the model. Required only to resume.
  std::function<void(const std::string& dir)> load_model_weights;
  // Every log / eval / summary entry (the metrics.jsonl object, with its "type").
  std::function<void(const nlohmann::json& entry)> on_log;
  // After every optimizer step (progress bars).
  std::function<void(int64_t step, int64_t max_steps, const StepMetrics& metrics)> on_step;
  // Identifies the model (config + trainable names/shapes); a checkpoint with another fingerprint is
  // refused on resume. Empty → model_fingerprint(model).
  std::string model_fingerprint;
  // The training loss of one accumulation window (see WindowLossFn). Empty → the causal-LM loss.
  WindowLossFn window_loss;
  // The evaluation metrics over the eval loader (epoch 0, in order, no dropout): an object that must
  // hold "eval_loss" and may add more ("eval_accuracy", ...); the Trainer adds runtime/epoch/step.
  // Empty → evaluate_loss (eval_loss + perplexity).
  std::function<nlohmann::json(Model& m, Workspace& ws, const DataLoader& loader)> eval_metrics;
};

// Architecture fields of the config plus every trainable parameter's name and shape, one per line.
std::string model_fingerprint(const Model& m);


struct TrainerState {
  int64_t global_step = 0;
  double epoch = 0.0;
  std::vector<nlohmann::json> log_history;  // HF entries (no "type" field)
  double total_loss_sum = 0.0;              // Σ step losses over the whole run (train_loss)
  double loss_since_last_log = 0.0;         // Σ step losses since the last train log
  int64_t last_logged_step = 0;
  int64_t num_input_tokens_seen = 0;
  double total_flos = 0.0;
};

// The fields of HF's trainer_state.json that vary between runs.
struct HfTrainerStateFields {
  double epoch = 0.0;
  int64_t global_step = 0, eval_steps = 0, logging_steps = 0, max_steps = 0, num_input_tokens_seen = 0;
  int64_t save_steps = 0, train_batch_size = 0;
  nlohmann::json num_train_epochs = 0;  // kept as given: `train` writes an integer, the RL trainers a float
  double total_flos = 0.0;
  bool final_step = false;  // TrainerControl.should_training_stop
};
// trainer_state.json exactly in HF's layout (one writer for `train` and the RL trainers' checkpoints).
nlohmann::json hf_trainer_state_json(const HfTrainerStateFields& f, const std::vector<nlohmann::json>& log_history);

struct Trainer {
  // Validates the arguments, builds the optimizer and schedule, then starts the run: without
  // resume_from_checkpoint it checks output_dir (refusing another run's checkpoints/metrics unless
  // overwrite_output_dir, which clears them; it creates nothing); with it, it loads the checkpoint
  // (weights via load_model_weights, optimizer, scheduler, RNG, state). So evaluate() may run before
  // train(). The train loader must outlive the Trainer; eval_samples (nullable) is copied.
  Trainer(Model& model, const DataLoader& train_loader, const std::vector<Sample>* eval_samples,
          TrainingArguments args, TrainerHooks hooks);
  ~Trainer();

  // Trains from the current state (step 0, or the resumed checkpoint) to max_steps; returns the
  // summary entry.
  nlohmann::json train();
  // Evaluates now, logs the entry (metrics.jsonl, log_history, on_log) and returns it.
  nlohmann::json evaluate();

  Model& model;
  const DataLoader& train_loader;
  std::optional<DataLoader> eval_loader;
  TrainingArguments args;
  TrainerHooks hooks;

  // The plan (§4.2, §4.3), fixed at construction.
  int64_t len_dl = 0, steps_per_epoch = 0, max_steps = 0, num_epochs = 0;
  int64_t logging_steps = 0, save_steps = 0, eval_steps = 0;
  bool eval_enabled = false;

  Optimizer optimizer;
  LrScheduler scheduler;
  Rng dropout_rng;
  Workspace ws;
  TrainerState state;

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const;
  };
  std::unique_ptr<std::FILE, FileCloser> metrics_file_;
  std::string fingerprint_;
  int64_t non_embedding_params_ = 0;

  void begin_run();
  void prepare_output_dir();
  void resume_from(const std::string& checkpoint_dir);
  void save_checkpoint(bool final_step);
  nlohmann::json trainer_state_json(bool final_step) const;
  void emit(const std::string& type, nlohmann::json entry);
  std::FILE* metrics_file();
};

}  // namespace llmtune
