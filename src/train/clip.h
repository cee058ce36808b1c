// Global gradient-norm clipping over all trainable gradients (torch clip_grad_norm_, hf-semantics §4.7).
#pragma once
#include "model/model.h"

namespace llmtune {

// ‖concat(all trainable grads)‖₂, accumulated in double.
double global_grad_norm(const Model& m);
// Computes the norm; when max_norm > 0 scales every grad by min(1, max_norm/(norm + 1e-6)).
// Returns the PRE-clip norm (what HF logs as grad_norm).
double clip_grad_norm(Model& m, double max_norm);

}  // namespace llmtune
