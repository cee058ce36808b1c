// Fused LM head + cross-entropy, computed in chunks of rows so the full [N × V] logits are never
// held. For each row t with labels[t] != -100:  loss_t = logsumexp(h_t·Wᵀ) − (h_t·Wᵀ)[labels[t]].
// Labels are already shifted (labels[t] is the token that row t predicts).
// When dh / dW are non-null, the gradient of grad_scale · Σ_t loss_t is ACCUMULATED into them
// (dW only for f32 weights). token_logp (nullable, [N]) receives −loss_t (0 for ignored rows).
#pragma once
#include <cstdint>

#include "kernels/linear.h"

namespace llmtune {

constexpr int32_t kIgnoreIndex = -100;

struct LossSum {
  double sum = 0.0;   // Σ loss_t over counted rows
  int64_t count = 0;  // rows with a label != -100
};

// h: [N, E]; W: [V, E] (torch layout; transposed view allowed); bias: [V] or null.
LossSum lm_head_loss(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                     int64_t N, int64_t E, int64_t V, float grad_scale, float* dh, float* dW,
                     float* token_logp = nullptr);

namespace reference {
LossSum lm_head_loss(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                     int64_t N, int64_t E, int64_t V, float grad_scale, float* dh, float* dW,
                     float* token_logp = nullptr);
}  // namespace reference

}  // namespace llmtune
