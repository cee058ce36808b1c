// The optimizer and learning-rate schedule of an RL trainer, from the TrainingArguments-style fields
// that DpoArgs, GrpoArgs and PpoArgs share (optim, weight_decay, adam_*, learning_rate,
// lr_scheduler_type, warmup_*), as the HF Trainer builds them.
#pragma once
#include <cstdint>

#include "core/error.h"
#include "model/model.h"
#include "train/optimizer.h"
#include "train/scheduler.h"

namespace llmtune::rl {

template <class Args>
OptimizerConfig rl_optimizer_config(const Args& args) {
  OptimizerConfig oc;
  oc.kind = parse_optimizer_name(args.optim);
  oc.weight_decay = args.weight_decay;
  oc.beta1 = args.adam_beta1;
  oc.beta2 = args.adam_beta2;
  oc.eps = args.adam_epsilon;
  return oc;
}

// The policy's optimizer; fails (naming `trainer`) when nothing in the policy trains.
template <class Args>
Optimizer rl_policy_optimizer(Model& policy, const Args& args, const char* trainer) {
  Optimizer opt = make_optimizer(policy, rl_optimizer_config(args));
  if (opt.states.empty()) fail(trainer, ": the model has no trainable parameters (use lora, freeze or full)");
  return opt;
}

template <class Args>
LrScheduler rl_scheduler(const Args& args, int64_t max_steps) {
  LrScheduler sched;
  sched.kind = parse_scheduler_name(args.lr_scheduler_type);
  sched.base_lr = args.learning_rate;
  sched.num_training_steps = max_steps;
  sched.warmup_steps = resolve_warmup_steps(args.warmup_steps, args.warmup_ratio, max_steps);
  return sched;
}

}  // namespace llmtune::rl
