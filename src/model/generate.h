// Text generation with the KV cache: a batch of prompts (left-padded internally, positions from the
// attention mask as HF does), greedy or sampled, stopping at EOS or max_new_tokens, with a callback
// per new token for streaming.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"
#include "model/sampling.h"

namespace llmtune {

struct GenerateOptions {
  int64_t max_new_tokens = 20;
  SamplingParams sampling;
  uint64_t seed = 42;
  std::vector<int32_t> eos_ids;  // stop when a row produces one of these (it is kept in the output)
  // false: the prompt pass and the decode steps run the generic (training) block forward, one
  // OpenMP/oneDNN call per linear, instead of the inference path (KVCache::fast) — for benchmarks and
  // tests comparing the two.
  bool fast_decode = true;
};

// on_token(row, token) is called for each new token as soon as it is chosen.
using TokenCallback = std::function<void(int64_t row, int32_t token)>;

// Returns each row's new tokens (without the prompt).
std::vector<std::vector<int32_t>> generate(Model& m, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& opt, const TokenCallback& on_token = {});

// Reference for tests: greedy decoding that recomputes the whole sequence at every step (no cache).
std::vector<int32_t> generate_greedy_no_cache(Model& m, const std::vector<int32_t>& prompt,
                                              int64_t max_new_tokens, const std::vector<int32_t>& eos_ids);

// Logits [V] of the last position of `ids` computed by a full forward pass (no cache).
std::vector<float> last_logits_no_cache(Model& m, const std::vector<int32_t>& ids);

}  // namespace llmtune
