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
#include "model/quantize_model.h"

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

namespace {

// Runs the same token sequence through a fast and a generic cache in lockstep (prompt pass, then one
// token per row at a time along the fast path's greedy choice) and returns the worst relative logits
// difference over all steps.
double fast_vs_generic_logits(Model& m, const std::vector<std::vector<int32_t>>& prompts, int steps) {
  const int64_t B = int64_t(prompts.size()), V = m.cfg.vocab_size;
  int64_t P = 0;
  for (auto& p : prompts) P = std::max<int64_t>(P, int64_t(p.size()));
  KVCache fast, generic;
  fast.init(m, B, P + steps);
  generic.init(m, B, P + steps);
  generic.fast = false;
  Workspace ws_fast, ws_generic;
  std::vector<int32_t> ids(size_t(B * P)), pos(size_t(B * P)), seg(size_t(B * P)),
      next_pos(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; b++) {  // left padding, as generate() lays out a batch
    const auto& p = prompts[size_t(b)];
    const int64_t pad = P - int64_t(p.size());
    for (int64_t t = 0; t < P; t++) {
      ids[size_t(b * P + t)] = t < pad ? p[0] : p[size_t(t - pad)];
      pos[size_t(b * P + t)] = t < pad ? 0 : int32_t(t - pad);
      seg[size_t(b * P + t)] = t < pad ? -1 : 0;
    }
    next_pos[size_t(b)] = int32_t(p.size());
  }
  std::vector<float> lf(size_t(B * V)), lg(size_t(B * V));
  decoder_forward_cached(m, fast, ws_fast, ids.data(), pos.data(), seg.data(), P, lf.data());
  decoder_forward_cached(m, generic, ws_generic, ids.data(), pos.data(), seg.data(), P, lg.data());
  double worst = rel_err(lf.data(), lg.data(), B * V);
  std::vector<int32_t> tok(static_cast<size_t>(B)), tpos(static_cast<size_t>(B)), tseg(static_cast<size_t>(B), 0);
  for (int s = 0; s < steps; s++) {
    for (int64_t b = 0; b < B; b++) {
      tok[size_t(b)] = int32_t(std::max_element(lf.begin() + b * V, lf.begin() + (b + 1) * V) - (lf.begin() + b * V));
      tpos[size_t(b)] = next_pos[size_t(b)]++;
    }
    decoder_forward_cached(m, fast, ws_fast, tok.data(), tpos.data(), tseg.data(), 1, lf.data());
    decoder_forward_cached(m, generic, ws_generic, tok.data(), tpos.data(), tseg.data(), 1, lg.data());
    worst = std::max(worst, rel_err(lf.data(), lg.data(), B * V));
  }
  return worst;
}

// Frozen linear weights to bf16 in place (what --bf16 does; train/precision.h is not linked here).
void linears_to_bf16(Model& m) {
  for (LinearModule* l : m.linears()) {
    if (l->weight == m.embed || l->weight->value.dtype != DType::F32) continue;
    Tensor t = Tensor::zeros(l->weight->value.shape, DType::BF16);
    convert_f32_to_bf16(l->weight->value.f32(), t.as<uint16_t>(), size_t(t.numel()));
    l->weight->value = t;
  }
}

}  // namespace

// The fast decode path (GEMV linears, cached attention, shared scratch) gives the generic path's
// tokens on every architecture, batched with padding, and beyond kGemvMaxRows rows (the GEMM fallback).
// (The models are too small for the parallel GEMV path; tests/kernels/test_gemv.cpp covers it.)
TEST(Generate, FastDecodeEqualsGenericPath) {
  OneThread one_thread;
  for (const char* name : kArchCases) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    std::vector<std::vector<int32_t>> prompts = {prompt_of(3, 0), prompt_of(11, 1), prompt_of(1, 2)};
    GenerateOptions fast = greedy(16), generic = greedy(16);
    generic.fast_decode = false;
    EXPECT_EQ(generate(m, prompts, fast), generate(m, prompts, generic));
    EXPECT_LE(fast_vs_generic_logits(m, prompts, 12), 1e-5);
  }
  Model m = load_model(golden_dir("llama_gqa_untied"));
  std::vector<std::vector<int32_t>> many;
  for (int i = 0; i < 10; i++) many.push_back(prompt_of(2 + i, i));
  EXPECT_LE(fast_vs_generic_logits(m, many, 4), 1e-5);
}

// bf16 weights and k-bit (NF4 with double quant, LLM.int8) weights: the GEMV kernels follow the same
// numerics as the linear kernels, so the logits agree to accumulation-order noise (bf16: a changed
// rounding of an activation to bf16 moves a logit by ~2^-9 relative at most, hence the looser bound).
TEST(Generate, FastDecodeBf16AndQuantizedWeights) {
  OneThread one_thread;
  for (const char* name : {"llama_gqa_untied", "neox_parallel"}) {
    SCOPED_TRACE(name);
    std::vector<std::vector<int32_t>> prompts = {prompt_of(5, 0), prompt_of(9, 1)};
    {
      Model m = load_model(golden_dir(name));
      linears_to_bf16(m);
      EXPECT_LE(fast_vs_generic_logits(m, prompts, 8), 1e-2) << "bf16";
    }
    for (int mode = 0; mode < 2; mode++) {
      Model m = load_model(golden_dir(name));
      QuantizeOptions q;
      if (mode == 0) {
        q.load_in_4bit = true;
        q.bnb_4bit_quant_type = Quant4Type::NF4;
        q.bnb_4bit_use_double_quant = true;
      } else {
        q.load_in_8bit = true;
      }
      quantize_model(m, q);
      EXPECT_LE(fast_vs_generic_logits(m, prompts, 8), 1e-5) << (mode == 0 ? "nf4" : "int8");
    }
  }
}
