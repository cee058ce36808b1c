// `llmtune grpo`: Group Relative Policy Optimization (TRL GRPOTrainer) on {"prompt", "answer"?} JSONL —
// num_generations sampled completions per prompt, scored by --reward specs (rules, an external command or
// a trained reward model), group-normalised advantages and the clipped objective. LoRA by default (the
// KL reference, when beta > 0, is the same weights with the adapters off); freeze/full keep a frozen
// reference copy when beta > 0. Same training options as `llmtune train`, TRL GRPOConfig defaults.
//
// Batch arithmetic (TRL): per_device_train_batch_size counts COMPLETIONS; one optimizer step takes
// per_device_train_batch_size · gradient_accumulation_steps completions = that / num_generations prompts
// (which must divide evenly). max_steps <= 0: ceil(num_train_epochs · prompts / prompts per step).
#include <cmath>
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/rl_command_setup.h"
#include "cli/rl_reward_options.h"
#include "cli/train_options.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/memory_estimate.h"
#include "peft/lora.h"
#include "report/report.h"
#include "rl/grpo_trainer.h"
#include "rl/rewards.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

namespace {

int run(const ResolvedOptions& o) {
  const TrainPlan plan = resolve_rl_plan(o, "grpo");
  const std::string out_dir = plan.args.output_dir;
  if (!plan.eval_file.empty()) fail("grpo: --eval_file is not supported (GRPO logs the reward of every step)");
  if (plan.packing) fail("grpo: --packing does not apply (completions are generated per prompt)");
  check_rl_output_dir(plan);  // before anything loads: another run's output_dir fails at once

  const TrainingArguments& t = plan.args;
  const int64_t G = o.get_int("num_generations");
  const int64_t completions = t.per_device_train_batch_size * t.gradient_accumulation_steps;
  if (completions % G != 0)
    fail("per_device_train_batch_size × gradient_accumulation_steps = ", completions,
         " completions per step is not a multiple of num_generations ", G,
         ": make it one (e.g. --per_device_train_batch_size ", G, ")");
  const int64_t max_new = o.get_int("max_completion_length");

  print_rl_config(o, "grpo");
  // Rewards first: a bad spec (or reward model folder) fails before the policy loads.
  std::vector<rl::RewardSpec> rewards = reward_specs_from_options(o);
  RlPolicy policy = load_rl_policy(plan);
  Model& m = policy.model;
  Tokenizer& tok = policy.tokenizer;
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  std::vector<rl::PromptRow> prompts =
      rl::load_prompt_rows(plan.train_file, enc, m.cfg.max_position_embeddings, max_new);
  std::printf("prompts: %s — %zu rows; rewards:", plan.train_file.c_str(), prompts.size());
  for (const auto& r : rewards) std::printf(" %s%s", r.source.c_str(), r.weight != 1.0 ? cat(" (×", r.weight, ")").c_str() : "");
  std::printf("\n");

  rl::GrpoArgs a;
  a.output_dir = out_dir;
  a.loss.loss_type = rl::grpo_loss_type_from_name(o.get_string("loss_type"));
  a.loss.beta = o.get_float("beta");
  a.loss.epsilon_low = o.get_float("epsilon");
  a.loss.epsilon_high = o.has("epsilon_high") ? o.get_float("epsilon_high") : a.loss.epsilon_low;
  if (o.has("delta")) a.loss.delta = o.get_float("delta");
  a.scale_rewards = rl::scale_rewards_from_name(o.get_string("scale_rewards"));
  a.num_generations = G;
  a.prompts_per_step = completions / G;
  a.max_new_tokens = max_new;
  a.temperature = float(o.get_float("temperature"));
  a.top_p = float(o.get_float("top_p"));
  a.top_k = int(o.get_int("top_k"));
  a.max_steps = t.max_steps;
  a.num_train_epochs = t.num_train_epochs;
  copy_optimizer_arguments(a, t);
  const int64_t max_steps = rl::grpo_max_steps(a, int64_t(prompts.size()));
  if (max_steps < 1) fail("grpo: nothing to train (max_steps / num_train_epochs give 0 steps)");
  a.logging_steps = resolve_interval(t.logging_steps, max_steps, "logging_steps");
  a.save_steps = t.save_steps;
  a.save_total_limit = t.save_total_limit;
  a.resume_from_checkpoint = t.resume_from_checkpoint;
  a.overwrite_output_dir = t.overwrite_output_dir;
  a.seed = t.seed;
  a.eos_ids = m.cfg.eos_token_ids;
  if (a.eos_ids.empty() && tok.eos_id() >= 0) a.eos_ids = {tok.eos_id()};

  // What trains, and what the KL reference is (none when beta is 0).
  attach_trainable(policy, plan, a.loss.beta != 0, "KL reference");
  if (a.loss.beta == 0) std::printf("beta 0: no KL term and no reference model (TRL >= 0.19 default)\n");
  std::printf("%s\n", trainable_parameters_string(m).c_str());
  std::printf("\ntraining: %lld steps × %lld prompts × %lld generations (%lld completions per step), "
              "max_completion_length %lld\n",
              (long long)max_steps, (long long)a.prompts_per_step, (long long)G, (long long)completions,
              (long long)max_new);

  write_rl_run_config(o, out_dir);

  std::unique_ptr<Progress> progress;
  rl::GrpoHooks hooks;
  set_rl_save_hooks(hooks, policy);
  hooks.decode = [&](const std::vector<int32_t>& ids) { return tok.decode(ids, true); };
  hooks.on_log = [&](const nlohmann::json& e) {
    if (e.value("type", "") != "train") return;
    std::string line = cat("step ", e.value("step", 0), "/", max_steps, " | loss ", e.value("loss", 0.0), " | reward ",
                           e.value("reward", 0.0), " ± ", e.value("reward_std", 0.0), " | kl ", e.value("kl", 0.0),
                           " | clip ", e.value("clip_ratio/region_mean", 0.0), " | length ",
                           e.value("completions/mean_length", 0.0), " | lr ", e.value("learning_rate", 0.0));
    if (progress) line += " | ETA " + format_duration(progress->eta_seconds());
    log_line_and_update_report(progress.get(), line, out_dir);
  };
  hooks.on_step = [&](int64_t step, int64_t total, double loss, double reward) {
    if (!progress) progress = std::make_unique<Progress>(total, stdout);
    progress->update(step, {{"loss", loss}, {"reward", reward}});
  };
  const double t0 = now_seconds();
  rl::GrpoTrainResult r = rl::grpo_train(m, policy.ref.get(), prompts, rewards, a, hooks);
  if (progress) progress->finish();
  save_rl_policy(policy, out_dir);
  write_report(out_dir);
  const size_t n = r.reward_mean.size();
  std::printf("done in %.1f s: %lld steps, mean reward %.4f (first step) → %.4f (last step), peak RSS %s\n"
              "%s written to %s/ — report: %s/report.html\n",
              now_seconds() - t0, (long long)r.steps, n ? r.reward_mean.front() : 0.0, n ? r.reward_mean.back() : 0.0,
              format_bytes(peak_rss_bytes()).c_str(), policy.lora ? "adapter" : "model", out_dir.c_str(),
              out_dir.c_str());
  return 0;
}

}  // namespace

Command grpo_command() {
  CommandSpec s;
  s.name = "grpo";
  s.summary = "Group Relative Policy Optimization on {prompt, answer?} JSONL with rule/command/model rewards (TRL GRPOTrainer)";
  add_train_options(s);
  for (auto& opt : s.options) {  // TRL GRPOConfig defaults where they differ from TrainingArguments
    if (opt.name == "learning_rate") opt.default_value = 1e-6;
    if (opt.name == "logging_steps") opt.default_value = 10.0;
    if (opt.name == "train_file")
      opt.help = "prompts: JSONL {\"prompt\"} rows, optionally with \"answer\" (string or number, for gsm8k)";
    if (opt.name == "per_device_train_batch_size")
      opt.help = "COMPLETIONS per micro-batch (TRL); × gradient_accumulation_steps must be a multiple of num_generations";
  }
  add_reward_options(s);
  s.add_int("num_generations", 8, "completions sampled per prompt (the group)").min = 2;
  s.add_int("max_completion_length", 256, "new tokens per completion at most").min = 1;
  s.add_float("temperature", 1.0, "sampling temperature (also divides the logits of the log-probs)").min = 1e-6;
  s.add_float("top_p", 1.0, "nucleus sampling (1 = off)").max = 1.0;
  s.add_int("top_k", 0, "top-k sampling (0 = off)").min = 0;
  s.add_float("beta", 0.0, "KL coefficient (k3 estimator) against the reference; 0 = no reference (TRL >= 0.19)").min = 0.0;
  s.add_string("loss_type", std::string("dapo"), "grpo | bnpo | dr_grpo | dapo (TRL >= 0.22 default)").choices = {
      "grpo", "bnpo", "dr_grpo", "dapo"};
  s.add_float("epsilon", 0.2, "clipping ε (lower bound 1 − ε)").min = 0.0;
  s.add_float("epsilon_high", std::nullopt, "upper clipping ε (default: epsilon; DAPO uses 0.28)").min = 0.0;
  s.add_float("delta", std::nullopt, "two-sided clipping: the ratio is also capped at delta (TRL delta)").min = 1.0;
  s.add_string("scale_rewards", std::string("group"), "group | batch | none: divide advantages by the std").choices = {
      "group", "batch", "none", "true", "false"};
  return {s, run};
}

}  // namespace llmtune::cli
