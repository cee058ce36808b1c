// `llmtune ppo`: PPO with a value head and a KL-penalised reference (TRL PPOTrainer, current variant by
// default) on a {"prompt"} JSONL with rule / command rewards — LoRA by default (the reference is the same
// weights with the adapters off), freeze/full keep a frozen reference copy. Same training options as
// `llmtune train` plus the PPO ones; writes the adapter/model and value_head.safetensors to output_dir.
#include <algorithm>
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
#include "rl/ppo_trainer.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace llmtune::cli {

namespace {

rl::PpoArgs ppo_args_from(const ResolvedOptions& o, const TrainPlan& plan) {
  rl::PpoArgs a;
  const TrainingArguments& t = plan.args;
  a.output_dir = t.output_dir;
  a.variant = o.get_string("ppo_variant") == "classic" ? rl::PpoVariant::classic : rl::PpoVariant::current;
  const bool classic = a.variant == rl::PpoVariant::classic;
  a.per_device_train_batch_size = t.per_device_train_batch_size;
  a.gradient_accumulation_steps = t.gradient_accumulation_steps;
  a.num_mini_batches = o.get_int("num_mini_batches");
  a.local_rollout_forward_batch_size = o.get_int("local_rollout_forward_batch_size");
  a.response_length = o.get_int("response_length");
  a.temperature = float(o.get_float("temperature"));
  a.top_k = int(o.get_int("top_k"));
  a.top_p = float(o.get_float("top_p"));
  a.missing_eos_penalty = o.get_optional_float("missing_eos_penalty");
  a.score.use_score_scaling = o.get_bool("use_score_scaling");
  a.score.use_score_norm = o.get_bool("use_score_norm");
  a.score.score_clip = o.get_optional_float("score_clip");
  if (a.score.use_score_norm && !a.score.use_score_scaling)
    fail("--use_score_norm needs --use_score_scaling (as in TRL, it only changes how scaling is done)");
  // --ppo_epochs is classic TRL's name for --num_ppo_epochs.
  a.num_ppo_epochs = o.get_int("num_ppo_epochs");
  if (auto pe = o.get_optional_int("ppo_epochs")) {
    if (o.was_set("num_ppo_epochs") && *pe != a.num_ppo_epochs)
      fail("--ppo_epochs ", *pe, " and --num_ppo_epochs ", a.num_ppo_epochs, " disagree: give one of them");
    a.num_ppo_epochs = *pe;
  }
  a.kl_estimator = rl::kl_estimator_from_name(o.get_string("kl_estimator"), "kl_estimator");
  // Classic TRL's AdaptiveKLController is on by default (adap_kl_ctrl=True); current TRL has a fixed kl_coef.
  a.adaptive_kl = o.was_set("adaptive_kl") ? o.get_bool("adaptive_kl") : classic;
  a.kl_coef = o.get_float("kl_coef");
  a.init_kl_coef = o.get_float("init_kl_coef");
  a.target = o.get_float("target");
  a.horizon = o.get_float("horizon");
  if (a.adaptive_kl && o.was_set("kl_coef"))
    fail("--kl_coef is the fixed coefficient; with the adaptive KL controller give --init_kl_coef instead");
  a.gamma = o.get_float("gamma");
  a.lam = o.get_float("lam");
  a.whiten_rewards = o.get_bool("whiten_rewards");
  a.loss.cliprange = o.get_float("cliprange");
  a.loss.cliprange_value = o.get_float("cliprange_value");
  a.loss.vf_coef = o.get_float("vf_coef");
  if (classic && o.get_float("ratio_threshold") > 0) a.loss.ratio_threshold = o.get_float("ratio_threshold");
  a.num_train_epochs = t.num_train_epochs;
  a.max_steps = t.max_steps;
  copy_optimizer_arguments(a, t);
  a.gradient_checkpointing = t.gradient_checkpointing;
  a.seed = t.seed;
  return a;
}

int run(const ResolvedOptions& o) {
  const TrainPlan plan = resolve_rl_plan(o, "ppo");
  const std::string out_dir = plan.args.output_dir;
  if (plan.bf16) fail("ppo: --bf16 / --fp16 are not supported by ppo yet (it trains in float32)");
  if (!plan.eval_file.empty()) fail("ppo has no evaluation loop: drop --eval_file");
  // Rewards first: a bad spec (or reward model folder) fails before the policy loads.
  const std::vector<rl::RewardSpec> rewards = reward_specs_from_options(o);
  rl::PpoArgs a = ppo_args_from(o, plan);
  check_rl_output_dir(plan);  // before the policy loads: another run's output_dir fails at once

  print_rl_config(o, "ppo");
  RlPolicy policy = load_rl_policy(plan);
  Model& m = policy.model;
  Tokenizer& tok = policy.tokenizer;
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  a.eos_ids = m.cfg.eos_token_ids;
  if (a.eos_ids.empty() && tok.eos_id() >= 0) a.eos_ids.push_back(tok.eos_id());
  const std::vector<rl::PromptRow> prompts =
      rl::load_prompt_rows(plan.train_file, enc, m.cfg.max_position_embeddings, a.response_length);
  const int64_t max_steps = rl::ppo_max_steps(a, int64_t(prompts.size()));
  a.logging_steps = resolve_interval(plan.args.logging_steps, max_steps, "logging_steps");
  a.save_steps = plan.args.save_steps;
  a.save_total_limit = plan.args.save_total_limit;
  a.resume_from_checkpoint = plan.args.resume_from_checkpoint;
  a.overwrite_output_dir = plan.args.overwrite_output_dir;
  std::printf("rewards:");
  for (const auto& r : rewards) std::printf(" %s%s", r.source.c_str(), r.weight != 1.0 ? cat(" (×", r.weight, ")").c_str() : "");
  std::printf("\n");
  std::printf("prompts: %s — %zu prompts; %lld PPO steps of %lld rollouts (%lld mini-batches × %lld micro-batches "
              "× %lld), %lld PPO epochs, variant %s\n",
              plan.train_file.c_str(), prompts.size(), (long long)max_steps, (long long)a.batch_size(),
              (long long)a.num_mini_batches, (long long)a.gradient_accumulation_steps,
              (long long)a.per_device_train_batch_size, (long long)a.num_ppo_epochs,
              a.variant == rl::PpoVariant::classic ? "classic (TRL <= 0.11)" : "current (TRL >= 0.12)");

  attach_trainable(policy, plan, true, "reference");  // what trains, and what the reference is
  rl::ValueHead vh = rl::make_value_head(m.cfg.hidden_size, float(o.get_float("v_head_init_std")), plan.args.seed);
  std::printf("%s; value head: Linear(%lld -> 1) on the last hidden state, trained in full\n",
              trainable_parameters_string(m).c_str(), (long long)m.cfg.hidden_size);

  write_rl_run_config(o, out_dir);

  std::unique_ptr<Progress> progress;
  rl::PpoHooks hooks;
  set_rl_save_hooks(hooks, policy);
  hooks.decode = [&](const std::vector<int32_t>& ids) { return tok.decode(ids, true); };
  hooks.on_log = [&](const nlohmann::json& e) {
    if (e.value("type", "") != "train") return;
    const std::string line =
        cat("step ", e.value("step", 0), " | reward ", e.value("reward", 0.0), " ± ", e.value("reward_std", 0.0),
            " | kl ", e.value("objective/kl", 0.0), " | entropy ", e.value("objective/entropy", 0.0), " | clipfrac ",
            e.value("policy/clipfrac_avg", 0.0), " | vf_loss ", e.value("loss/value_avg", 0.0), " | approxkl ",
            e.value("policy/approxkl_avg", 0.0), " | pg_loss ", e.value("loss/policy_avg", 0.0), " | lr ",
            e.value("learning_rate", 0.0), " | resp_len ", e.value("response_length", 0.0), " | ",
            e.value("elapsed_seconds", 0.0), " s");
    log_line_and_update_report(progress.get(), line, out_dir);
  };
  hooks.on_step = [&](int64_t step, int64_t total, const nlohmann::json& s) {
    if (!progress) progress = std::make_unique<Progress>(total, stdout);
    progress->update(step, {{"reward", s.value("reward", 0.0)},
                            {"kl", s.value("objective/kl", 0.0)},
                            {"loss", s.value("loss", 0.0)}});
  };
  const double t0 = now_seconds();
  rl::PpoTrainResult r = rl::ppo_train(m, policy.ref.get(), vh, prompts, rewards, a, hooks);
  if (progress) progress->finish();
  save_rl_policy(policy, out_dir);
  rl::save_value_head(vh, out_dir + "/" + rl::kValueHeadFile);
  write_report(out_dir);
  std::printf("done in %.1f s: %lld PPO steps, reward %.4f -> %.4f, final kl %.4f (kl_coef %.4g), peak RSS %s\n"
              "%s and %s written to %s/ — report: %s/report.html\n",
              now_seconds() - t0, (long long)r.steps, r.reward_mean.front(), r.reward_mean.back(), r.kl.back(),
              r.final_kl_coef, format_bytes(peak_rss_bytes()).c_str(), policy.lora ? "adapter" : "model",
              rl::kValueHeadFile, out_dir.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

Command ppo_command() {
  CommandSpec s;
  s.name = "ppo";
  s.summary = "PPO with a value head and a KL-penalised reference on {prompt} JSONL with rule/command/model rewards (TRL PPOTrainer)";
  add_train_options(s);
  for (auto& opt : s.options) {  // TRL PPOConfig defaults where they differ from TrainingArguments
    if (opt.name == "learning_rate") opt.default_value = 3e-6;
    if (opt.name == "max_grad_norm") opt.default_value = 0.0;  // TRL's PPO loops do not clip
    if (opt.name == "logging_steps") opt.default_value = 1.0;  // TRL logs every PPO step
    if (opt.name == "train_file") opt.help = "prompts: JSONL {\"prompt\"} rows (+ optional \"answer\" for gsm8k)";
    if (opt.name == "per_device_train_batch_size") opt.help = "rollouts per micro-batch";
  }
  add_reward_options(s);
  auto& variant = s.add_string("ppo_variant", std::string("current"),
                               "current (TRL >= 0.12: fixed kl_coef, score after the last token) | classic (TRL <= "
                               "0.11: adaptive KL, score at the last token, ratio_threshold)");
  variant.choices = {"current", "classic"};
  s.add_int("response_length", 53, "max new tokens per response (stops earlier at EOS)").min = 1;
  s.add_float("temperature", 0.7, "sampling temperature (current variant: log-probs use logits/temperature)").min = 1e-6;
  s.add_int("top_k", 0, "sample from the k most likely tokens (0 = off)").min = 0;
  auto& tp = s.add_float("top_p", 1.0, "nucleus sampling mass");
  tp.min = 1e-6;
  tp.max = 1.0;
  s.add_int("num_ppo_epochs", 4, "PPO passes over each rollout batch").min = 1;
  s.add_int("ppo_epochs", std::nullopt, "classic TRL's name for num_ppo_epochs").min = 1;
  s.add_int("num_mini_batches", 1, "mini-batches per PPO epoch (one optimizer step each)").min = 1;
  s.add_int("local_rollout_forward_batch_size", 64, "rows per generation / rollout forward chunk").min = 1;
  s.add_float("kl_coef", 0.05, "fixed KL penalty coefficient (current TRL)").min = 0;
  s.add_string("kl_estimator", std::string("k1"), "per-token KL: k1 (= kl) | k3 | abs | mse").choices = {"k1", "k3", "kl",
                                                                                                         "abs", "mse"};
  s.add_bool("adaptive_kl", false, "adaptive KL controller (init_kl_coef, target, horizon); default on with "
                                   "--ppo_variant classic");
  s.add_float("init_kl_coef", 0.2, "adaptive KL: initial coefficient").min = 0;
  s.add_float("target", 6.0, "adaptive KL: target KL (nats per response)").min = 1e-12;
  s.add_float("horizon", 10000.0, "adaptive KL: horizon (rollouts)").min = 1e-12;
  auto& gamma = s.add_float("gamma", 1.0, "GAE discount");
  gamma.min = 0;
  gamma.max = 1;
  auto& lam = s.add_float("lam", 0.95, "GAE lambda");
  lam.min = 0;
  lam.max = 1;
  s.add_float("cliprange", 0.2, "policy ratio clip ε").min = 1e-12;
  s.add_float("cliprange_value", 0.2, "value clip around the old values").min = 0;
  s.add_float("vf_coef", 0.1, "value loss coefficient").min = 0;
  s.add_bool("whiten_rewards", false, "whiten the per-token rewards before GAE");
  s.add_float("ratio_threshold", 10.0, "classic only: skip a mini-batch whose mean ratio exceeds this (0 = off)").min = 0;
  s.add_float("missing_eos_penalty", std::nullopt, "subtracted from the score of responses without EOS (current TRL)");
  s.add_bool("use_score_scaling", false, "divide scores by their running std (classic TRL)");
  s.add_bool("use_score_norm", false, "with use_score_scaling: also subtract the running mean");
  s.add_float("score_clip", std::nullopt, "clip scores to [-score_clip, score_clip]").min = 0;
  s.add_float("v_head_init_std", 0.02, "value head weight init N(0, std), bias 0").min = 0;
  return {s, run};
}

}  // namespace llmtune::cli
