// The memory preflight shared by `llmtune info` and the start of `llmtune train`: estimates peak
// memory from config.json alone (no weights needed) and refuses a run that cannot fit.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/memory_estimate.h"
#include "peft/lora_config.h"

namespace llmtune::cli {

struct PreflightPlan {
  std::string method = "lora";  // lora | freeze | full
  LoraConfig lora;              // method lora: r and target_modules matter
  int64_t trainable_layers = 2;  // method freeze: last blocks that train (+ final norm, LM head)
  TrainingMemoryOptions mem;     // batch, seq, checkpointing, 4/8-bit base, 8-bit optimizer
};

// LoRA parameters (A and B of every target linear) from the config alone: target_modules as
// given, "all-linear" = every block linear, none = the architecture's PEFT defaults. rank_pattern is
// ignored (r everywhere). small_tensors receives the parameters of adapter tensors under 4096
// elements (the 8-bit optimizer keeps their states in f32).
int64_t estimate_lora_params(const ModelConfig& cfg, const LoraConfig& lora, int64_t* small_tensors = nullptr);

// The training estimate for `plan` (gradients, optimizer states per method and optim).
MemoryEstimate estimate_training_plan(const ModelConfig& cfg, const PreflightPlan& plan);

// Fails before anything big is loaded when `est` exceeds `available` bytes, naming what to change
// (batch, seq, gradient_checkpointing, load_in_4bit, adamw_8bit — only those not already in use).
void refuse_if_too_big(const MemoryEstimate& est, int64_t available, const PreflightPlan& plan);

}  // namespace llmtune::cli
