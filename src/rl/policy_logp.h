// Per-token log-probs of completions under the decoder (TRL's selective_log_softmax on prompt ⊕ completion)
// and the backward of any loss given as per-token weights dL/dlogp_t — the bridge between src/rl's loss
// math and the model. Rows are right-padded, so causal attention never lets padding reach a real token.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/rng.h"
#include "model/decoder.h"
#include "model/model.h"

namespace llmtune::rl {

// One sequence = prompt ⊕ completion; only completion tokens are scored.
struct ScoredSeq {
  std::vector<int32_t> ids;
  int64_t prompt_len = 0;  // ids[prompt_len..] are the completion
};

// B rows × T positions, right-padded with token 0. targets[b,t] = ids[b,t+1] when that token belongs to
// the completion, else -100. Completion token j of row b (ids[prompt_len+j]) is predicted at position
// prompt_len+j−1, so a row's completion log-probs are the contiguous span comp_pos(b, 0..len).
struct PackedBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids, targets, segments;  // segments: 0 real token, -1 padding
  std::vector<int64_t> prompt_len, completion_len;
  int64_t pos(int64_t b, int64_t j) const { return b * T + prompt_len[size_t(b)] - 1 + j; }
};

// Fails (naming `what`) on an empty prompt (the first completion token needs a position to be predicted
// from) or a sequence longer than the model's context.
PackedBatch pack_sequences(std::span<const ScoredSeq> seqs, const Model& m, const char* what);

// Forward (training mode when dropout_rng is non-null) and per-position log-probs (0 off the completion).
// Leaves the activations in ws for backward_token_weights. temperature divides the logits (GRPO/PPO
// score with the sampling temperature); 1 = plain log-probs.
std::vector<float> forward_token_logps(Model& m, Workspace& ws, const PackedBatch& pb, Rng* dropout_rng,
                                       float temperature = 1.f);

// After forward_token_logps on the same batch: ACCUMULATES into the trainable params' gradients the
// gradient of L where dL/dlogp at position i is dlogp[i] (size B·T; ignored off the completion).
void backward_token_weights(Model& m, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                            Rng* dropout_rng, float temperature = 1.f);

// backward_token_weights plus a second loss on the final hidden states (a value head on h_final, PPO):
// after the LM-head part has been written into ws.d_final (and scaled by 1/temperature), add_d_final(d)
// ACCUMULATES that loss's ∂/∂h_final into d ([B·T, E] row-major, NOT temperature-scaled), then one
// decoder_backward runs for both. With an add_d_final that adds nothing the gradients equal
// backward_token_weights' bit for bit.
void backward_token_weights_and_hidden(Model& m, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                                       const std::function<void(float* d_final)>& add_d_final, Rng* dropout_rng,
                                       float temperature = 1.f);

// Σ of the completion log-probs of each row.
std::vector<float> completion_sums(const PackedBatch& pb, std::span<const float> token_logp);

}  // namespace llmtune::rl
