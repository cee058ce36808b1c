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

// Per-row weighted gradient (RL losses: policy-gradient weights per token): ACCUMULATES into dh / dW
// the gradient of Σ_t row_weight[t] · loss_t (loss_t = −logp_t), so a caller wanting the gradient of
// Σ_t w_t·logp_t passes row_weight = −w. Returned sums and token_logp as lm_head_loss.
LossSum lm_head_loss_weighted(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                              const float* row_weight, int64_t N, int64_t E, int64_t V, float* dh, float* dW,
                              float* token_logp = nullptr);

// The per-row piece (exposed for tests and bench/kernels.cpp): cross-entropy of one logits row
// z[0, V) in place. Returns logsumexp(z) − z[label]; with need_grad, z becomes
// row_scale · (softmax(z) − onehot(label)).
float softmax_xent_row(float* z, int64_t V, int32_t label, bool need_grad, float row_scale);

namespace reference {
// Double-precision softmax_xent_row (same contract).
float softmax_xent_row(float* z, int64_t V, int32_t label, bool need_grad, float row_scale);
// row_weight nullable here (= all ones); the gradient is of grad_scale · Σ row_weight[t]·loss_t.
LossSum lm_head_loss_weighted(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                              const float* row_weight, int64_t N, int64_t E, int64_t V, float grad_scale,
                              float* dh, float* dW, float* token_logp = nullptr);
LossSum lm_head_loss(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                     int64_t N, int64_t E, int64_t V, float grad_scale, float* dh, float* dW,
                     float* token_logp = nullptr);
}  // namespace reference

}  // namespace llmtune
