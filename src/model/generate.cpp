// KV-cache generation loop.
#include "model/generate.h"

#include <algorithm>

#include "core/error.h"
#include "kernels/linear.h"
#include "model/decoder.h"

namespace llmtune {

std::vector<std::vector<int32_t>> generate(Model& m, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& opt, const TokenCallback& on_token) {
  const ModelConfig& c = m.cfg;
  const int64_t B = int64_t(prompts.size());
  if (B == 0) return {};
  int64_t P = 0;
  for (auto& p : prompts) {
    if (p.empty()) fail("generate: a prompt is empty (it needs at least one token, e.g. BOS)");
    P = std::max<int64_t>(P, int64_t(p.size()));
  }
  if (opt.max_new_tokens < 0) fail("max_new_tokens must be >= 0");
  if (P > c.max_position_embeddings)
    fail("the prompt has ", P, " tokens but the model's context is ", c.max_position_embeddings,
         " tokens: shorten the prompt");
  const int64_t total = std::min<int64_t>(P + opt.max_new_tokens, c.max_position_embeddings);
  const int64_t new_tokens = total - P;
  KVCache cache;
  cache.init(m, B, std::max<int64_t>(total, 1));
  cache.fast = opt.fast_decode;
  Workspace ws;  // used by the generic path only (sized lazily)
  Rng rng(opt.seed);
  const int64_t V = c.vocab_size;
  std::vector<float> logits(static_cast<size_t>(B * V));

  // Prompt pass, left-padded: pad slots get segment -1, positions count real tokens only.
  std::vector<int32_t> ids(static_cast<size_t>(B * P)), pos(static_cast<size_t>(B * P)), seg(static_cast<size_t>(B * P));
  std::vector<int32_t> next_pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; b++) {
    const auto& p = prompts[size_t(b)];
    int64_t pad = P - int64_t(p.size());
    for (int64_t t = 0; t < P; t++) {
      bool is_pad = t < pad;
      ids[size_t(b * P + t)] = is_pad ? p[0] : p[size_t(t - pad)];
      pos[size_t(b * P + t)] = is_pad ? 0 : int32_t(t - pad);
      seg[size_t(b * P + t)] = is_pad ? -1 : 0;
    }
    next_pos[size_t(b)] = int32_t(p.size());
  }
  decoder_forward_cached(m, cache, ws, ids.data(), pos.data(), seg.data(), P, logits.data());

  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<std::vector<int32_t>> context(prompts);
  std::vector<char> done(static_cast<size_t>(B), 0);
  std::vector<int32_t> step_ids(static_cast<size_t>(B)), step_pos(static_cast<size_t>(B)), step_seg(static_cast<size_t>(B), 0);
  for (int64_t s = 0; s < new_tokens; s++) {
    for (int64_t b = 0; b < B; b++) {
      if (done[size_t(b)]) {
        step_ids[size_t(b)] = ids[size_t(b * P + P - 1)];
        step_seg[size_t(b)] = -1;  // finished rows keep running as padding
        step_pos[size_t(b)] = 0;
        continue;
      }
      std::span<float> row(logits.data() + b * V, size_t(V));
      int32_t tok = sample_next(row, context[size_t(b)], opt.sampling, rng);
      out[size_t(b)].push_back(tok);
      context[size_t(b)].push_back(tok);
      if (on_token) on_token(b, tok);
      if (std::find(opt.eos_ids.begin(), opt.eos_ids.end(), tok) != opt.eos_ids.end()) done[size_t(b)] = 1;
      step_ids[size_t(b)] = tok;
      step_pos[size_t(b)] = next_pos[size_t(b)]++;
      step_seg[size_t(b)] = 0;
    }
    if (std::all_of(done.begin(), done.end(), [](char d) { return d; })) break;
    if (s + 1 == new_tokens) break;
    decoder_forward_cached(m, cache, ws, step_ids.data(), step_pos.data(), step_seg.data(), 1, logits.data());
  }
  return out;
}

std::vector<float> last_logits_no_cache(Model& m, const std::vector<int32_t>& ids) {
  const ModelConfig& c = m.cfg;
  Workspace ws;
  DecoderInput in;
  in.B = 1;
  in.T = int64_t(ids.size());
  in.ids = ids.data();
  decoder_forward(m, ws, in);
  std::vector<float> logits(size_t(c.vocab_size));
  linear_forward(logits.data(), ws.h_final.f32() + (in.T - 1) * c.hidden_size, m.lm_head.view(), nullptr, 1,
                 c.hidden_size, c.vocab_size);
  return logits;
}

std::vector<int32_t> generate_greedy_no_cache(Model& m, const std::vector<int32_t>& prompt, int64_t max_new_tokens,
                                              const std::vector<int32_t>& eos_ids) {
  std::vector<int32_t> seq = prompt, out;
  for (int64_t s = 0; s < max_new_tokens && int64_t(seq.size()) < m.cfg.max_position_embeddings; s++) {
    std::vector<float> logits = last_logits_no_cache(m, seq);
    int32_t tok = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(tok);
    seq.push_back(tok);
    if (std::find(eos_ids.begin(), eos_ids.end(), tok) != eos_ids.end()) break;
  }
  return out;
}

}  // namespace llmtune
