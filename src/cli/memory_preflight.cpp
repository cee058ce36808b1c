// Memory preflight arithmetic for `info` and `train` (see memory_preflight.h).
#include "cli/memory_preflight.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "model/model.h"
#include "peft/target_match.h"
#include "train/optimizer.h"

namespace llmtune::cli {

namespace {

bool is_block_linear(const std::string& name, const Shape& shape) {
  return shape.size() == 2 && (name.find(".layers.") != std::string::npos || name.find(".h.") != std::string::npos);
}

}  // namespace

int64_t estimate_lora_params(const ModelConfig& cfg, const LoraConfig& lora, int64_t* small_tensors) {
  ModuleSelector targets = lora.target_modules;
  if (targets.is_none()) targets = ModuleSelector::list(default_target_modules(cfg));
  int64_t total = 0, small = 0;
  for (auto& [name, shape] : expected_tensors(cfg)) {
    if (!is_block_linear(name, shape)) continue;
    const std::string key = name.substr(0, name.rfind('.'));  // drop ".weight"
    if (!targets.is_all_linear() && !selector_matches(targets, key, "target_modules")) continue;
    if (!selector_matches(lora.exclude_modules, key, "exclude_modules")) {
      const int64_t a = lora.r * shape[1], b = shape[0] * lora.r;  // GPT-2 Conv1D: same sum
      total += a + b;
      small += (a < kAdam8bitMinSize ? a : 0) + (b < kAdam8bitMinSize ? b : 0);
    }
  }
  if (small_tensors) *small_tensors = small;
  return total;
}

MemoryEstimate estimate_training_plan(const ModelConfig& cfg, const PreflightPlan& plan) {
  TrainingMemoryOptions mem = plan.mem;
  int64_t trainable = 0, adapter = 0;
  if (plan.method == "lora") {
    adapter = trainable = estimate_lora_params(cfg, plan.lora, &mem.f32_state_params);
  } else {
    // full: everything; freeze: the last `trainable_layers` blocks plus final norm and LM head.
    const int64_t L = std::max<int64_t>(cfg.num_layers, 1);
    const int64_t k = plan.method == "freeze" ? std::min(plan.trainable_layers, L) : L;
    mem.f32_state_params = 0;
    for (auto& [name, shape] : expected_tensors(cfg)) {
      const int64_t n = shape_numel(shape);
      bool in_block = name.find(".layers.") != std::string::npos || name.find(".h.") != std::string::npos;
      bool embedding = name.find("embed_in") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
                       name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos;
      bool trains = plan.method == "full" || (in_block ? false : !embedding);
      if (in_block && plan.method == "freeze") {
        // "<prefix>.<idx>.<rest>": the block index follows ".layers." / ".h.".
        size_t at = name.find(".layers.");
        at = at != std::string::npos ? at + 8 : name.find(".h.") + 3;
        trains = std::stoll(name.substr(at)) >= L - k;
      }
      if (!trains) continue;
      trainable += n;
      if (embedding || n < kAdam8bitMinSize) mem.f32_state_params += n;
    }
  }
  return estimate_training(cfg, trainable, adapter, mem);
}

void refuse_if_too_big(const MemoryEstimate& est, int64_t available, const PreflightPlan& plan) {
  if (available <= 0 || est.total() <= available) return;
  std::string advice = "lower per_device_train_batch_size (use gradient_accumulation_steps to keep the effective "
                       "batch) or max_seq_length";
  if (!plan.mem.gradient_checkpointing) advice += ", set gradient_checkpointing";
  if (plan.method != "lora") advice += ", use method lora";
  if (!plan.mem.load_in_4bit) advice += ", load the base in 4 bit (load_in_4bit, method lora: QLoRA)";
  if (!plan.mem.optim_8bit) advice += ", use optim adamw_8bit";
  fail("training needs about ", format_bytes(est.total()), " (weights ", format_bytes(est.weights), ", gradients ",
       format_bytes(est.gradients), ", optimizer ", format_bytes(est.optimizer), ", activations ",
       format_bytes(est.activations), ") but only ", format_bytes(available), " is available: ", advice);
}

}  // namespace llmtune::cli
