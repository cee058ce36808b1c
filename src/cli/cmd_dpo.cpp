// `llmtune dpo`: Direct Preference Optimization (TRL DPOTrainer) on {"prompt","chosen","rejected"} JSONL —
// LoRA by default (the reference is the same weights with the adapters off), freeze/full keep a frozen
// reference copy. Same training options as `llmtune train`, plus beta / loss_type / label_smoothing.
#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/progress.h"
#include "cli/rl_command_setup.h"
#include "cli/train_options.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/memory_estimate.h"
#include "peft/lora.h"
#include "report/report.h"
#include "rl/dpo_trainer.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

namespace {

int run(const ResolvedOptions& o) {
  const TrainPlan plan = resolve_rl_plan(o, "dpo");
  const std::string out_dir = plan.args.output_dir;
  check_rl_output_dir(plan);  // before anything loads: another run's output_dir fails at once

  print_rl_config(o, "dpo");
  RlPolicy policy = load_rl_policy(plan);
  Model& m = policy.model;
  Tokenizer& tok = policy.tokenizer;
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  const int64_t max_length = std::min<int64_t>(plan.max_seq_length, m.cfg.max_position_embeddings);
  rl::PreferencePairs train = rl::load_preference_pairs(plan.train_file, enc, tids, max_length);
  std::printf("train pairs: %s — %zu pairs (%lld truncated, %lld dropped: prompt >= max_length %lld)\n",
              plan.train_file.c_str(), train.pairs.size(), (long long)train.num_truncated,
              (long long)train.num_dropped, (long long)max_length);
  rl::PreferencePairs eval;
  if (!plan.eval_file.empty()) {
    eval = rl::load_preference_pairs(plan.eval_file, enc, tids, max_length);
    std::printf("eval pairs:  %s — %zu pairs\n", plan.eval_file.c_str(), eval.pairs.size());
  }

  attach_trainable(policy, plan, true, "reference");  // what trains, and what the reference is
  std::printf("%s\n", trainable_parameters_string(m).c_str());

  rl::DpoArgs a;
  a.output_dir = out_dir;
  a.loss.loss_type = rl::dpo_loss_type_from_name(o.get_string("loss_type"));
  a.loss.beta = o.get_float("beta");
  a.loss.label_smoothing = o.get_float("label_smoothing");
  if (a.loss.label_smoothing != 0 && a.loss.loss_type != rl::DpoLossType::sigmoid)
    fail("--label_smoothing applies to --loss_type sigmoid only");
  const TrainingArguments& t = plan.args;
  a.num_train_epochs = t.num_train_epochs;
  a.max_steps = t.max_steps;
  a.per_device_train_batch_size = t.per_device_train_batch_size;
  a.per_device_eval_batch_size = t.per_device_eval_batch_size;
  a.gradient_accumulation_steps = t.gradient_accumulation_steps;
  copy_optimizer_arguments(a, t);
  a.logging_steps = std::max<int64_t>(1, int64_t(t.logging_steps));
  a.eval_steps = t.eval_steps ? int64_t(*t.eval_steps) : 0;
  a.save_steps = t.save_steps;
  a.save_total_limit = t.save_total_limit;
  a.resume_from_checkpoint = t.resume_from_checkpoint;
  a.overwrite_output_dir = t.overwrite_output_dir;
  a.seed = t.seed;

  write_rl_run_config(o, out_dir);

  std::unique_ptr<Progress> progress;
  rl::DpoHooks hooks;
  set_rl_save_hooks(hooks, policy);
  hooks.on_log = [&](const nlohmann::json& e) {
    const std::string type = e.value("type", "");
    std::string line;
    if (type == "train")
      line = cat("step ", e.value("step", 0), " | loss ", e.value("loss", 0.0), " | lr ", e.value("learning_rate", 0.0),
                 " | rewards/chosen ", e.value("rewards/chosen", 0.0), " | rewards/rejected ",
                 e.value("rewards/rejected", 0.0), " | accuracy ", e.value("rewards/accuracies", 0.0), " | margin ",
                 e.value("rewards/margins", 0.0));
    else if (type == "eval")
      line = cat("eval @ step ", e.value("step", 0), " | eval_loss ", e.value("eval_loss", 0.0),
                 " | rewards/accuracies ", e.value("eval_rewards/accuracies", 0.0), " | policy accuracy ",
                 e.value("eval_policy_accuracy", 0.0), " | margin ", e.value("eval_rewards/margins", 0.0));
    if (line.empty()) return;
    if (progress && type == "train") line += " | ETA " + format_duration(progress->eta_seconds());
    log_line_and_update_report(progress.get(), line, out_dir);
  };
  int64_t shown_max = 0;
  hooks.on_step = [&](int64_t step, int64_t max_steps, double loss) {
    if (!progress) {
      shown_max = max_steps;
      progress = std::make_unique<Progress>(max_steps, stdout);
    }
    progress->update(step, {{"loss", loss}});
  };
  const double t0 = now_seconds();
  rl::DpoTrainResult r = rl::dpo_train(m, policy.ref.get(), train.pairs, eval.pairs, a, hooks);
  if (progress) progress->finish();
  (void)shown_max;
  save_rl_policy(policy, out_dir);
  write_report(out_dir);
  std::printf("done in %.1f s: %lld steps, train_loss %.4f, peak RSS %s\n%s written to %s/ — report: %s/report.html\n",
              now_seconds() - t0, (long long)r.steps, r.train_loss, format_bytes(peak_rss_bytes()).c_str(),
              policy.lora ? "adapter" : "model", out_dir.c_str(), out_dir.c_str());
  return 0;
}

}  // namespace

Command dpo_command() {
  CommandSpec s;
  s.name = "dpo";
  s.summary = "Direct Preference Optimization on {prompt, chosen, rejected} JSONL (TRL DPOTrainer)";
  add_train_options(s);
  for (auto& opt : s.options)  // TRL DPOConfig defaults where they differ from TrainingArguments
    if (opt.name == "learning_rate") opt.default_value = 1e-6;
  s.add_float("beta", 0.1, "DPO temperature β (deviation from the reference)").min = 0.0;
  s.add_string("loss_type", std::string("sigmoid"), "sigmoid | hinge | ipo").choices = {"sigmoid", "hinge", "ipo"};
  s.add_float("label_smoothing", 0.0, "conservative DPO ε (sigmoid only)").min = 0.0;
  return {s, run};
}

}  // namespace llmtune::cli
