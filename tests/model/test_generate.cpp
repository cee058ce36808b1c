// KV-cache generation against the plain reference that recomputes the whole sequence every step, on
// every golden architecture: tokens, per-step logits, batching with left padding, sampling, stopping.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "golden_util.h"
#include "model/decoder.h"
#include "model/generate.h"
#include "model/model.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

const char* const kArchCases[] = {"neox_parallel", "neox_sequential", "llama_gqa_untied",
                                  "llama_tied_llama3rope", "qwen2_bias", "gpt2"};

// Every golden model has a vocabulary of at least 96 tokens and a context of 64.
std::vector<int32_t> prompt_of(int64_t n, int32_t salt = 0) {
  std::vector<int32_t> p;
  for (int64_t i = 0; i < n; i++) p.push_back(int32_t((7 * i + 3 + 13 * salt) % 90 + 1));
  return p;
}

// Tiny models: one thread is fastest, and OpenMP spinning on a busy shared machine is very slow.
struct OneThread {
  int before = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(before); }
};

GenerateOptions greedy(int64_t max_new) {
  GenerateOptions g;
  g.max_new_tokens = max_new;
  return g;
}

}  // namespace

// Greedy generation with the KV cache picks exactly the tokens a full recomputation picks.
TEST(Generate, KvCacheEqualsRecomputeEveryArchitecture) {
  OneThread one_thread;
  for (const char* name : kArchCases) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    std::vector<int32_t> prompt = prompt_of(6);
    auto cached = generate(m, {prompt}, greedy(36));
    std::vector<int32_t> ref = generate_greedy_no_cache(m, prompt, 36, {});
    ASSERT_EQ(cached.size(), 1u);
    EXPECT_EQ(cached[0].size(), 36u);
    EXPECT_EQ(cached[0], ref);
  }
}

// The logits decoder_forward_cached produces at every step (prompt pass, then one token at a time)
// equal the last-position logits of a full forward over the sequence so far.
TEST(Generate, CachedStepLogitsEqualFullForward) {
  OneThread one_thread;
  for (const char* name : kArchCases) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    const int64_t V = m.cfg.vocab_size;
    std::vector<int32_t> seq = prompt_of(5, 1);
    KVCache cache;
    cache.init(m, 1, m.cfg.max_position_embeddings);
    Workspace ws;
    std::vector<float> logits(static_cast<size_t>(V));
    std::vector<int32_t> pos(seq.size());
    for (size_t i = 0; i < pos.size(); i++) pos[i] = int32_t(i);
    decoder_forward_cached(m, cache, ws, seq.data(), pos.data(), nullptr, int64_t(seq.size()), logits.data());
    for (int step = 0; step < 32; step++) {
      SCOPED_TRACE(step);
      std::vector<float> ref = last_logits_no_cache(m, seq);
      ASSERT_LE(rel_err(logits.data(), ref.data(), V), 1e-5);
      int32_t next = int32_t(std::max_element(ref.begin(), ref.end()) - ref.begin());
      int32_t p = int32_t(seq.size());
      seq.push_back(next);
      decoder_forward_cached(m, cache, ws, &next, &p, nullptr, 1, logits.data());
    }
    EXPECT_EQ(cache.len, int64_t(seq.size()));
  }
}

// A batch of prompts of different lengths (left-padded inside generate) gives each row exactly what
// that prompt gives alone; the streaming callback reports each row's tokens in order.
TEST(Generate, BatchedPromptsEqualEachAlone) {
  OneThread one_thread;
  for (const char* name : {"neox_parallel", "llama_gqa_untied", "gpt2"}) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    std::vector<std::vector<int32_t>> prompts = {prompt_of(3, 0), prompt_of(11, 1), prompt_of(1, 2), prompt_of(7, 3)};
    std::vector<std::vector<int32_t>> streamed(prompts.size());
    auto batched = generate(m, prompts, greedy(20), [&](int64_t row, int32_t tok) {
      streamed[size_t(row)].push_back(tok);
    });
    ASSERT_EQ(batched.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); i++) {
      SCOPED_TRACE(i);
      auto alone = generate(m, {prompts[i]}, greedy(20));
      EXPECT_EQ(batched[i], alone[0]);
      EXPECT_EQ(batched[i], generate_greedy_no_cache(m, prompts[i], 20, {}));
      EXPECT_EQ(streamed[i], batched[i]);
    }
  }
}

// Same seed → same sample; another seed → (with near-uniform logits over ~100 tokens) another one.
TEST(Generate, SamplingIsDeterministicPerSeed) {
  OneThread one_thread;
  Model m = load_model(golden_dir("llama_tied_llama3rope"));
  GenerateOptions g = greedy(24);
  g.sampling.do_sample = true;
  g.sampling.temperature = 1.0f;
  g.seed = 1234;
  std::vector<std::vector<int32_t>> prompts = {prompt_of(4), prompt_of(9, 1)};
  auto a = generate(m, prompts, g);
  auto b = generate(m, prompts, g);
  EXPECT_EQ(a, b);
  g.seed = 1235;
  auto c = generate(m, prompts, g);
  EXPECT_NE(a, c);
  // Sampling really samples: not the greedy continuation.
  EXPECT_NE(a[0], generate(m, {prompts[0]}, greedy(24))[0]);
}

TEST(Generate, MaxNewTokensAndContextLimit) {
  OneThread one_thread;
  Model m = load_model(golden_dir("qwen2_bias"));
  EXPECT_TRUE(generate(m, {prompt_of(4)}, greedy(0))[0].empty());
  EXPECT_EQ(generate(m, {prompt_of(4)}, greedy(1))[0].size(), 1u);
  EXPECT_EQ(generate(m, {prompt_of(4)}, greedy(13))[0].size(), 13u);
  // 60 prompt tokens + 20 asked for: the context (64) leaves room for 4, as in the reference.
  std::vector<int32_t> longp = prompt_of(60);
  auto out = generate(m, {longp}, greedy(20));
  EXPECT_EQ(out[0].size(), 4u);
  EXPECT_EQ(out[0], generate_greedy_no_cache(m, longp, 20, {}));
  // A prompt that fills the context exactly generates nothing (and does not fail).
  EXPECT_TRUE(generate(m, {prompt_of(64)}, greedy(5))[0].empty());
  EXPECT_THROW(generate(m, {prompt_of(4)}, greedy(-1)), Error);
  EXPECT_THROW(generate(m, {{}}, greedy(3)), Error);
}

// A row stops right after its first EOS (kept in the output); the other rows carry on unchanged.
TEST(Generate, StopsAtEos) {
  OneThread one_thread;
  Model m = load_model(golden_dir("neox_sequential"));
  std::vector<std::vector<int32_t>> prompts = {prompt_of(5, 0), prompt_of(8, 1)};
  auto free_run = generate(m, prompts, greedy(30));
  // Pick as EOS a token that row 0 produces at index >= 3 for the first time.
  int32_t eos = -1;
  size_t first = 0;
  for (size_t i = 3; i < free_run[0].size() && eos < 0; i++) {
    int32_t t = free_run[0][i];
    if (std::find(free_run[0].begin(), free_run[0].begin() + long(i), t) == free_run[0].begin() + long(i)) {
      eos = t;
      first = i;
    }
  }
  ASSERT_GE(eos, 0) << "row 0 repeats one token from the start; pick another prompt";
  GenerateOptions g = greedy(30);
  g.eos_ids = {eos};
  auto stopped = generate(m, prompts, g);
  std::vector<int32_t> expect0(free_run[0].begin(), free_run[0].begin() + long(first) + 1);
  EXPECT_EQ(stopped[0], expect0);
  EXPECT_EQ(stopped[0], generate_greedy_no_cache(m, prompts[0], 30, {eos}));
  EXPECT_EQ(stopped[1], generate_greedy_no_cache(m, prompts[1], 30, {eos}));
  // Both rows ending early ends the loop; a later EOS list entry that never appears changes nothing.
  g.eos_ids = {eos, int32_t(m.cfg.vocab_size - 1)};
  EXPECT_EQ(generate(m, prompts, g), stopped);
}

// Going past the context is a clean llmtune::Error, never a crash or a silent wrap-around.
TEST(Generate, PositionsBeyondContextFailCleanly) {
  OneThread one_thread;
  for (const char* name : {"neox_parallel", "gpt2"}) {  // RoPE table and learned position table
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    const int64_t ctx = m.cfg.max_position_embeddings;
    try {
      generate(m, {prompt_of(ctx + 1)}, greedy(3));
      ADD_FAILURE() << "no error for a prompt longer than the context";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("context"), std::string::npos) << e.what();
    }
    EXPECT_THROW(last_logits_no_cache(m, prompt_of(ctx + 1)), Error);

    // Direct cache use: a position at the context size, and a cache that is full.
    KVCache cache;
    cache.init(m, 1, 4);
    Workspace ws;
    std::vector<float> logits(size_t(m.cfg.vocab_size));
    int32_t id = 5, far = int32_t(ctx);
    EXPECT_THROW(decoder_forward_cached(m, cache, ws, &id, &far, nullptr, 1, logits.data()), Error);
    KVCache small;
    small.init(m, 1, 2);
    std::vector<int32_t> ids = {1, 2, 3}, pos = {0, 1, 2};
    EXPECT_THROW(decoder_forward_cached(m, small, ws, ids.data(), pos.data(), nullptr, 3, logits.data()), Error);
  }
}
