// Non-LoRA training policies: "full" (every parameter trainable) and "freeze" (only the last k
// blocks, plus optionally the final norm and the LM head, like LLaMA-Factory's freeze tuning).
#pragma once
#include <cstdint>
#include <string>

#include "model/model.h"

namespace llmtune {

struct FreezeOptions {
  std::string method = "freeze";  // "full" or "freeze"
  int64_t trainable_layers = 1;   // "freeze": the last k blocks are trainable (0 ≤ k ≤ num_layers)
  bool train_final_norm = true;   // "freeze": also the final norm
  bool train_lm_head = true;      // "freeze": also the LM head (with tied weights this is the embedding)
};

// Sets Param::trainable for the policy, then m.sync_grad_buffers(). Returns a one-line summary,
// e.g. "freeze: trainable = blocks 1..1 of 2, final norm, LM head (15 tensors, 123,456 of 1,234,567 params)".
// Errors for an unknown method or k outside [0, num_layers].
std::string apply_freeze_policy(Model& m, const FreezeOptions& opt);

}  // namespace llmtune
