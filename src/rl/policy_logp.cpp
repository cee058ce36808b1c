// Completion log-probs through the fused LM head, and the per-token-weighted backward that turns an RL
// loss's dL/dlogp into parameter gradients (lm_head_loss_weighted → ws.d_final → decoder_backward).
#include "rl/policy_logp.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/lm_head_loss.h"

namespace llmtune::rl {

PackedBatch pack_sequences(std::span<const ScoredSeq> seqs, const Model& m, const char* what) {
  PackedBatch pb;
  pb.B = int64_t(seqs.size());
  for (const auto& s : seqs) pb.T = std::max<int64_t>(pb.T, int64_t(s.ids.size()));
  const int64_t ctx = m.cfg.max_position_embeddings;
  for (size_t b = 0; b < seqs.size(); b++) {
    const ScoredSeq& s = seqs[b];
    if (s.prompt_len < 1)
      fail(what, ": row ", b, " has an empty prompt: the first completion token needs at least one token "
           "before it (a BOS or prompt text)");
    if (s.prompt_len > int64_t(s.ids.size())) fail(what, ": row ", b, " prompt_len beyond its ids");
    if (ctx > 0 && int64_t(s.ids.size()) > ctx)
      fail(what, ": row ", b, " is ", s.ids.size(), " tokens, longer than the model's context of ", ctx,
           " (max_position_embeddings): shorten the prompt or the completion length");
  }
  const size_t n = size_t(pb.B * pb.T);
  pb.ids.assign(n, 0);
  pb.targets.assign(n, kIgnoreIndex);
  pb.segments.assign(n, -1);
  for (int64_t b = 0; b < pb.B; b++) {
    const ScoredSeq& s = seqs[size_t(b)];
    const int64_t L = int64_t(s.ids.size());
    std::copy(s.ids.begin(), s.ids.end(), pb.ids.begin() + b * pb.T);
    std::fill_n(pb.segments.begin() + b * pb.T, L, 0);
    for (int64_t t = s.prompt_len - 1; t + 1 < L; t++) pb.targets[size_t(b * pb.T + t)] = s.ids[size_t(t + 1)];
    pb.prompt_len.push_back(s.prompt_len);
    pb.completion_len.push_back(L - s.prompt_len);
  }
  return pb;
}

namespace {

DecoderInput input_of(const PackedBatch& pb, Rng* dropout_rng) {
  DecoderInput in;
  in.B = pb.B;
  in.T = pb.T;
  in.ids = pb.ids.data();
  in.segments = pb.segments.data();
  in.dropout_rng = dropout_rng;
  return in;
}

// h_final, scaled by 1/temperature when it is not 1 (logits/τ = (h/τ)·Wᵀ: the LM head has no bias here).
const float* head_input(Workspace& ws, int64_t n, float temperature, std::vector<float>& scaled) {
  const float* h = ws.h_final.f32();
  if (temperature == 1.f) return h;
  scaled.assign(h, h + n);
  const float inv = 1.f / temperature;
  for (float& x : scaled) x *= inv;
  return scaled.data();
}

}  // namespace

std::vector<float> forward_token_logps(Model& m, Workspace& ws, const PackedBatch& pb, Rng* dropout_rng,
                                       float temperature) {
  LLMTUNE_CHECK(temperature > 0, "forward_token_logps: temperature must be > 0");
  if (!m.lm_head.weight) fail(m.cfg.architecture, " has no LM head: RL training needs a causal LM");
  DecoderInput in = input_of(pb, dropout_rng);
  decoder_forward(m, ws, in);
  const int64_t N = pb.B * pb.T, E = m.cfg.hidden_size;
  std::vector<float> scaled, logp(size_t(N), 0.f);
  const float* h = head_input(ws, N * E, temperature, scaled);
  lm_head_loss(h, m.lm_head.view(), nullptr, pb.targets.data(), N, E, m.cfg.vocab_size, 0.f, nullptr, nullptr,
               logp.data());
  return logp;
}

namespace {

// The LM-head part of backward_token_weights: OVERWRITES ws.d_final with ∂L/∂h_final of the log-prob loss
// (and accumulates the LM head's weight gradient).
void lm_head_backward_to_d_final(Model& m, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                                 float temperature) {
  const int64_t N = pb.B * pb.T, E = m.cfg.hidden_size;
  LLMTUNE_CHECK(int64_t(dlogp.size()) == N, "backward_token_weights: dlogp has ", dlogp.size(), " values, expected ",
                N);
  // loss_t = −logp_t, so the weight on loss_t is −dL/dlogp_t.
  std::vector<float> w(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; i++) w[size_t(i)] = -dlogp[size_t(i)];
  std::memset(ws.d_final.data, 0, ws.d_final.nbytes());
  Param* W = m.lm_head.weight;
  float* dW = (W && W->trainable && W->grad.defined()) ? W->grad.f32() : nullptr;
  std::vector<float> scaled;
  const float* h = head_input(ws, N * E, temperature, scaled);
  lm_head_loss_weighted(h, m.lm_head.view(), nullptr, pb.targets.data(), w.data(), N, E, m.cfg.vocab_size,
                        ws.d_final.f32(), dW);
  if (temperature != 1.f) {  // d/dh of f(h/τ) = f'(h/τ)/τ (dW above already used h/τ, as it should)
    float* d = ws.d_final.f32();
    const float inv = 1.f / temperature;
    for (int64_t i = 0; i < N * E; i++) d[i] *= inv;
  }
}

}  // namespace

void backward_token_weights(Model& m, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                            Rng* dropout_rng, float temperature) {
  lm_head_backward_to_d_final(m, ws, pb, dlogp, temperature);
  decoder_backward(m, ws, input_of(pb, dropout_rng));
}

void backward_token_weights_and_hidden(Model& m, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                                       const std::function<void(float* d_final)>& add_d_final, Rng* dropout_rng,
                                       float temperature) {
  lm_head_backward_to_d_final(m, ws, pb, dlogp, temperature);
  if (add_d_final) add_d_final(ws.d_final.f32());
  decoder_backward(m, ws, input_of(pb, dropout_rng));
}

std::vector<float> completion_sums(const PackedBatch& pb, std::span<const float> token_logp) {
  std::vector<float> out(size_t(pb.B), 0.f);
  for (int64_t b = 0; b < pb.B; b++) {
    double s = 0;
    for (int64_t j = 0; j < pb.completion_len[size_t(b)]; j++) s += token_logp[size_t(pb.pos(b, j))];
    out[size_t(b)] = float(s);
  }
  return out;
}

}  // namespace llmtune::rl
