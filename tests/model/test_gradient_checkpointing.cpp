// Gradient checkpointing: gradients bit-identical to the stored-activation path on every golden
// architecture (full fine-tuning, and LoRA with dropout), and the activation store it saves.
#include <gtest/gtest.h>

#include <cstring>

#include "core/rng.h"
#include "core/sysinfo.h"
#include "golden_util.h"
#include "model/decoder.h"
#include "model/memory_estimate.h"
#include "model/model.h"
#include "peft/lora.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

struct RunResult {
  double loss = 0;
  std::vector<std::vector<float>> grads;  // per trainable param, in Model::params order
  int64_t ws_bytes = 0;
};

// One forward + LM loss + backward on fixed random ids (row 1 right-padded), dropout RNG seeded 5.
RunResult run(Model& m, bool checkpointing, bool dropout, int64_t B = 2, int64_t T = 9) {
  for (auto& p : m.params)
    if (p.trainable && p.grad.defined()) std::memset(p.grad.data, 0, p.grad.nbytes());
  Rng ids_rng(3);
  std::vector<int32_t> ids(size_t(B * T)), segments(size_t(B * T), 0), targets(size_t(B * T), -100);
  for (auto& v : ids) v = int32_t(ids_rng.below(uint64_t(m.cfg.vocab_size)));
  for (int64_t t = T - 2; t < T; t++) segments[size_t(1 * T + t)] = -1;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t + 1 < T; t++)
      if (segments[size_t(b * T + t + 1)] == 0) targets[size_t(b * T + t)] = ids[size_t(b * T + t + 1)];
  Rng drop_rng(5);
  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  in.segments = segments.data();
  in.dropout_rng = dropout ? &drop_rng : nullptr;
  Workspace ws;
  ws.gradient_checkpointing = checkpointing;
  decoder_forward(m, ws, in);
  LossSum ls = decoder_lm_loss(m, ws, targets.data(), 0.1f, true);
  decoder_backward(m, ws, in);
  RunResult r;
  r.loss = ls.sum;
  r.ws_bytes = ws.bytes();
  for (auto& p : m.params)
    if (p.trainable && p.grad.defined()) r.grads.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
  return r;
}

void expect_identical(const RunResult& a, const RunResult& b) {
  EXPECT_EQ(a.loss, b.loss);
  ASSERT_EQ(a.grads.size(), b.grads.size());
  ASSERT_GT(a.grads.size(), 0u);
  for (size_t i = 0; i < a.grads.size(); i++) {
    ASSERT_EQ(a.grads[i].size(), b.grads[i].size());
    EXPECT_EQ(std::memcmp(a.grads[i].data(), b.grads[i].data(), a.grads[i].size() * 4), 0) << "param #" << i;
  }
}

const char* kArchs[] = {"neox_parallel", "neox_sequential", "llama_gqa_untied", "llama_tied_llama3rope",
                        "qwen2_bias", "gpt2"};

}  // namespace

TEST(GradientCheckpointing, FullFineTuningIdenticalGradients) {
  for (const char* name : kArchs) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    for (auto& p : m.params) p.trainable = true;
    m.sync_grad_buffers();
    RunResult stored = run(m, false, false), ckpt = run(m, true, false);
    expect_identical(stored, ckpt);
    EXPECT_LT(ckpt.ws_bytes, stored.ws_bytes);
  }
}

TEST(GradientCheckpointing, LoraWithDropoutIdenticalGradients) {
  for (const char* name : kArchs) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    LoraConfig c;
    c.r = 4;
    c.lora_alpha = 8;
    c.lora_dropout = 0.25;
    c.target_modules = ModuleSelector::pattern("all-linear");
    c.init_lora_weights = LoraInit::Random;  // B ≠ 0 so the adapters change the activations
    Rng rng(11);
    apply_lora(m, c, rng);
    RunResult stored = run(m, false, true), ckpt = run(m, true, true);
    expect_identical(stored, ckpt);
    // The dropout really ran: another dropout stream changes the LoRA gradients.
    RunResult no_drop = run(m, false, false);
    bool differs = false;
    for (size_t i = 0; i < stored.grads.size(); i++)
      differs |= std::memcmp(stored.grads[i].data(), no_drop.grads[i].data(), stored.grads[i].size() * 4) != 0;
    EXPECT_TRUE(differs);
  }
}

// The activation store shrinks from L full blocks to L block inputs + one block, and the estimate
// (memory_estimate.cpp) follows Workspace::ensure in both modes.
TEST(GradientCheckpointing, WorkspaceBytesAndEstimate) {
  Model m = load_model(golden_dir("llama_gqa_untied"));
  // Everything trains, so every block keeps all its activations (the estimate's worst case).
  for (auto& p : m.params) p.trainable = true;
  m.sync_grad_buffers();
  const ModelConfig& c = m.cfg;
  const int64_t B = 2, T = 16, N = B * T;
  Workspace stored, ckpt;
  ckpt.gradient_checkpointing = true;
  stored.ensure(m, B, T);
  ckpt.ensure(m, B, T);
  int64_t block_full = 0;  // one stored block's activations, input included
  const BlockActs& b0 = stored.blocks[0];
  for (const Tensor* t : {&b0.x_in, &b0.ln1, &b0.ln1_mean, &b0.ln1_rstd, &b0.q, &b0.k, &b0.v, &b0.attn, &b0.lse,
                          &b0.x_mid, &b0.ln2, &b0.ln2_mean, &b0.ln2_rstd, &b0.h1, &b0.up, &b0.act})
    if (t->defined()) block_full += int64_t(t->nbytes());
  ASSERT_GT(c.num_layers, 1);
  // Checkpointing keeps L inputs and one full block: (L-1) blocks minus their inputs are saved.
  EXPECT_EQ(stored.bytes() - ckpt.bytes(), (c.num_layers - 1) * (block_full - 4 * N * c.hidden_size));
  for (const BlockActs& a : ckpt.blocks) {
    EXPECT_TRUE(a.x_in.defined());
    EXPECT_FALSE(a.ln1.defined());
    EXPECT_FALSE(a.h1.defined());
  }
  // The estimate is within 25% of the workspace bytes in both modes (it also counts the LM-head chunk).
  const double lm_chunk = 4.0 * 256 * c.vocab_size * 2;
  EXPECT_NEAR(double(activation_bytes(c, B, T, false)) - lm_chunk, double(stored.bytes()), 0.25 * stored.bytes());
  EXPECT_NEAR(double(activation_bytes(c, B, T, true)) - lm_chunk, double(ckpt.bytes()), 0.25 * ckpt.bytes());
  // Switching a workspace into checkpointing frees the per-layer store.
  stored.gradient_checkpointing = true;
  stored.ensure(m, B, T);
  EXPECT_EQ(stored.bytes(), ckpt.bytes());
}

// Measured peak-memory drop on a mid-size random model (E 256, 8 layers, B 4 × T 128): the RSS
// growth of a checkpointed forward+backward is well under that of the stored path.
TEST(GradientCheckpointing, MeasuredMemoryDrop) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 688,
    "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "tie_word_embeddings": false})");
  ModelConfig cfg = parse_model_config(j, "mid/config.json");
  Model m = random_model(cfg, 1, 0.02f);
  LoraConfig c;
  c.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(1);
  apply_lora(m, c, rng);
  const int64_t B = 4, T = 128;
  Workspace ckpt_ws, stored_ws;
  ckpt_ws.gradient_checkpointing = true;
  // Checkpointed first: its smaller store cannot reuse pages freed by the larger one.
  int64_t rss0 = current_rss_bytes();
  ckpt_ws.ensure(m, B, T);
  int64_t rss_ckpt = current_rss_bytes() - rss0;
  int64_t rss1 = current_rss_bytes();
  stored_ws.ensure(m, B, T);
  int64_t rss_stored = current_rss_bytes() - rss1;
  std::printf("[ workspace ] stored %s (RSS +%s), checkpointed %s (RSS +%s)\n", format_bytes(stored_ws.bytes()).c_str(),
              format_bytes(rss_stored).c_str(), format_bytes(ckpt_ws.bytes()).c_str(),
              format_bytes(rss_ckpt).c_str());
  EXPECT_LT(ckpt_ws.bytes() * 2, stored_ws.bytes());
  EXPECT_LT(rss_ckpt * 2, rss_stored);
  // And the checkpointed run still trains (a full step through the recompute path).
  RunResult r = run(m, true, false, 2, 32);
  EXPECT_GT(r.loss, 0);
}
