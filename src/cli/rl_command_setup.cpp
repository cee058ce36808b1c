// Shared setup of the RL commands (dpo / grpo / ppo): plan checks, policy + reference, save hooks, log lines.
#include "cli/rl_command_setup.h"
#include "cli/model_loading.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/json_file.h"
#include "peft/adapter_io.h"
#include "peft/freeze.h"
#include "peft/lora.h"
#include "report/report.h"
#include "rl/rl_checkpoint.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

TrainPlan resolve_rl_plan(const ResolvedOptions& o, const std::string& command) {
  set_num_threads(int(o.get_int("num_threads")));
  TrainPlan plan = resolve_train_plan(o);
  if (plan.task_type == "SEQ_CLS") fail(command, " trains a causal LM: drop --task / --task_type SEQ_CLS");
  if (plan.quant.enabled())
    fail(command, ": --load_in_4bit / --load_in_8bit are not supported by ", command, " yet");
  return plan;
}

void check_rl_output_dir(const TrainPlan& plan) {
  rl::RlCheckpointOptions ck;
  ck.output_dir = plan.args.output_dir;
  ck.resume_from_checkpoint = plan.args.resume_from_checkpoint;
  ck.overwrite_output_dir = plan.args.overwrite_output_dir;
  rl::check_rl_output_dir(ck);
}

void print_rl_config(const ResolvedOptions& o, const std::string& command) {
  std::printf("llmtune %s — resolved configuration:\n%s\n", command.c_str(), o.to_json().dump(2).c_str());
  std::fflush(stdout);
}

void write_rl_run_config(const ResolvedOptions& o, const std::string& out_dir) {
  fs::create_directories(out_dir);  // the trainer clears an overwritten run's checkpoints / loads a resumed one
  write_json_file(out_dir + "/run_config.json", o.to_json());
}

RlPolicy load_rl_policy(const TrainPlan& plan) {
  return RlPolicy{plan.model_dir, plan.method == "lora", load_model(plan.model_dir), Tokenizer::load(plan.model_dir),
                  LoraConfig{}, nullptr};
}

void attach_trainable(RlPolicy& p, const TrainPlan& plan, bool with_reference, const std::string& reference_name) {
  Rng init_rng(plan.args.seed);
  if (p.lora) {
    p.lora_config = apply_lora(p.model, plan.lora, init_rng);
    const std::string ref_note =
        with_reference ? "; " + reference_name + " = the same weights with adapters off" : std::string();
    std::printf("LoRA: r=%lld, lora_alpha=%g, targets %s%s\n", (long long)p.lora_config.r, p.lora_config.lora_alpha,
                p.lora_config.target_modules.describe().c_str(), ref_note.c_str());
  } else {
    std::printf("%s\n", apply_freeze_policy(p.model, plan.freeze).c_str());
    if (with_reference) {
      p.ref = std::make_unique<Model>(load_model(p.model_dir));
      std::printf("%s: a frozen copy of %s\n", reference_name.c_str(), p.model_dir.c_str());
    }
  }
}

void save_rl_policy(const RlPolicy& p, const std::string& dir) {
  if (p.lora) {
    save_adapter(p.model, p.lora_config, dir);
  } else {
    save_model(p.model, dir);
    copy_tokenizer_files(p.model_dir, dir);
  }
}

void log_line_and_update_report(Progress* progress, const std::string& line, const std::string& out_dir) {
  if (progress) progress->log_line(line);
  else std::printf("%s\n", line.c_str());
  try {
    write_report(out_dir);
  } catch (const Error& err) {
    std::printf("warning: report not updated: %s\n", err.what());
  }
}

}  // namespace llmtune::cli
