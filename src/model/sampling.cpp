// HF logits processing (generation/logits_process.py) for one row, and the greedy / multinomial choice.
// Order and tie rules follow transformers so that greedy output matches token for token.
#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace llmtune {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}

void validate_sampling_params(const SamplingParams& p) {
  // Written as !(x > 0) so NaN is rejected too.
  if (!(p.temperature > 0.0f) || !std::isfinite(p.temperature))
    fail("option 'temperature' must be a number > 0, got ", p.temperature,
         " (for greedy decoding leave do_sample off instead of temperature 0)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    fail("option 'top_p' must be in (0, 1], got ", p.top_p, " (1 turns top-p off)");
  if (p.top_k < 0) fail("option 'top_k' must be >= 0, got ", p.top_k, " (0 turns top-k off)");
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    fail("option 'repetition_penalty' must be a number > 0, got ", p.repetition_penalty, " (1 turns it off)");
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int32_t> context_ids, float penalty) {
  if (penalty == 1.0f) return;
  const size_t V = logits.size();
  // HF gathers the scores of all context ids first and scatters the penalised values back, so an id
  // that occurs several times is penalised exactly once.
  thread_local std::vector<char> seen;  // reused: generation calls this once per token
  seen.assign(V, 0);
  for (int32_t id : context_ids) {
    if (id < 0 || size_t(id) >= V)
      fail("repetition penalty: token id ", id, " in the context is outside the vocabulary (size ", V, ")");
    if (seen[size_t(id)]) continue;
    seen[size_t(id)] = 1;
    float& s = logits[size_t(id)];
    s = s < 0 ? s * penalty : s / penalty;
  }
}

void apply_top_k(std::span<float> logits, int top_k) {
  if (top_k <= 0 || size_t(top_k) >= logits.size()) return;
  thread_local std::vector<float> sorted;
  sorted.assign(logits.begin(), logits.end());
  std::nth_element(sorted.begin(), sorted.begin() + (top_k - 1), sorted.end(), std::greater<float>());
  const float kth = sorted[size_t(top_k - 1)];
  for (float& s : logits)
    if (s < kth) s = kNegInf;  // ties with the k-th score are kept, as in HF
}

void apply_top_p(std::span<float> logits, float top_p) {
  if (top_p >= 1.0f || logits.empty()) return;
  const size_t V = logits.size();
  float max_f = kNegInf;
  for (float s : logits) max_f = std::max(max_f, s);
  if (max_f == kNegInf) return;
  const double max_s = max_f;
  double total = 0;
  for (float s : logits) total += std::exp(double(s) - max_s);
  const double threshold = 1.0 - double(top_p);
  // HF sorts ascending and removes tokens while the cumulative probability stays <= threshold. Tokens
  // with probability below threshold / V hold at most `threshold` together and come first in that
  // order, so they are removed without sorting; only the rest (a few hundred for a trained model's
  // peaked distribution, everything for a flat one) is sorted. -inf tokens have probability 0.
  const double small = threshold / double(V);
  double cumulative = 0;
  thread_local std::vector<int32_t> order;
  order.clear();
  for (size_t i = 0; i < V; ++i) {
    const double p = std::exp(double(logits[i]) - max_s) / total;
    if (p < small) {
      cumulative += p;
      logits[i] = kNegInf;
    } else {
      order.push_back(int32_t(i));
    }
  }
  // Ascending order; equal scores by index so the result does not depend on the sort's whims.
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[size_t(a)] < logits[size_t(b)]; });
  // The highest-scoring token (last in ascending order) is always kept (min_tokens_to_keep = 1).
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    float& s = logits[size_t(order[i])];
    cumulative += std::exp(double(s) - max_s) / total;
    if (cumulative <= threshold) s = kNegInf;
    else break;  // cumulative only grows, so nothing after this is removed
  }
}

void process_logits(std::span<float> logits, std::span<const int32_t> context_ids, const SamplingParams& params) {
  validate_sampling_params(params);
  if (logits.empty()) fail("sampling: empty logits row (vocabulary size 0)");
  for (float s : logits)
    if (std::isnan(s)) fail("sampling: the model produced NaN logits (diverged weights or bad input)");
  apply_repetition_penalty(logits, context_ids, params.repetition_penalty);
  if (!params.do_sample) return;
  if (params.temperature != 1.0f)
    for (float& s : logits) s /= params.temperature;
  apply_top_k(logits, params.top_k);
  apply_top_p(logits, params.top_p);
}

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) fail("argmax of an empty logits row");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;  // strict: the first maximum wins, like torch.argmax
  return int32_t(best);
}

int32_t sample_from_logits(std::span<const float> logits, Rng& rng) {
  const size_t V = logits.size();
  if (V == 0) fail("sampling from an empty logits row");
  float max_s = kNegInf;
  for (float s : logits) max_s = std::max(max_s, s);
  if (max_s == kNegInf) fail("sampling: every token was filtered out (all logits are -inf)");
  thread_local std::vector<double> weights;  // reused: generation draws once per token
  weights.resize(V);
  double total = 0;
  for (size_t i = 0; i < V; ++i)
    total += weights[i] = logits[i] == kNegInf ? 0.0 : std::exp(double(logits[i]) - double(max_s));
  // 53-bit uniform: Rng::uniform's 24 bits would be too coarse for tails of a 100k-token vocabulary.
  const double u = double(rng.next_u64() >> 11) * (1.0 / 9007199254740992.0) * total;
  double cumulative = 0;
  int32_t last_positive = 0;
  for (size_t i = 0; i < V; ++i) {
    if (weights[i] <= 0) continue;
    cumulative += weights[i];
    last_positive = int32_t(i);
    if (u < cumulative) return int32_t(i);
  }
  return last_positive;  // rounding left u at the very top: take the last token with mass
}

int32_t sample_next(std::span<float> logits, std::span<const int32_t> context_ids, const SamplingParams& params,
                    Rng& rng) {
  process_logits(logits, context_ids, params);
  return params.do_sample ? sample_from_logits(logits, rng) : argmax(logits);
}

}  // namespace llmtune
