// Next-token choice for generation, following transformers' logits processing for one row of logits:
// repetition penalty, then (sampling only) temperature, top-k, top-p, then argmax or a multinomial draw.
#pragma once
#include <cstdint>
#include <span>

#include "core/rng.h"

namespace llmtune {

struct SamplingParams {
  bool do_sample = false;
  float temperature = 1.0f;
  float top_p = 1.0f;
  float repetition_penalty = 1.0f;
  int top_k = 0;  // 0 = off. HF's generate() default is 50; the CLI decides which default to use.
};

// Throws llmtune::Error naming the option when a value is outside what HF accepts
// (temperature > 0, 0 < top_p <= 1, top_k >= 0, repetition_penalty > 0).
void validate_sampling_params(const SamplingParams& params);

// Applies the processors in HF order, in place. Removed tokens become -inf. context_ids is the
// prompt plus everything generated so far (each distinct id is penalised once); ids must be < V.
void process_logits(std::span<float> logits, std::span<const int32_t> context_ids, const SamplingParams& params);

// process_logits, then argmax (first maximum on ties) for greedy, or a draw from softmax(logits).
int32_t sample_next(std::span<float> logits, std::span<const int32_t> context_ids, const SamplingParams& params,
                    Rng& rng);

// Single steps, exposed for tests and for callers composing their own pipeline.
void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> context_ids, float penalty);
void apply_top_k(std::span<float> logits, int top_k);
void apply_top_p(std::span<float> logits, float top_p);
int32_t argmax(std::span<const float> logits);
// Multinomial draw from softmax(logits); -inf entries are never drawn.
int32_t sample_from_logits(std::span<const float> logits, Rng& rng);

}  // namespace llmtune
