// decoder_backward skips the input-gradient products that feed nothing (in the lowest trainable
// block, e.g. block 0 under LoRA on q/k/v). Check: with any single parameter of block 0 trainable
// (base weights, biases, norms, LoRA A/B), its gradient is bit-identical to the unpruned path,
// forced by also training the embedding (then every block must pass ∂L/∂x down).
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/rng.h"
#include "golden_util.h"
#include "model/decoder.h"
#include "model/model.h"
#include "peft/lora.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

constexpr int64_t kB = 2, kT = 7;

// Gradient of `p` after one forward + LM loss + backward on fixed random ids.
std::vector<float> grad_of(Model& m, const Param& p) {
  m.zero_grads();
  Workspace ws;
  forward_backward_on_random_ids(m, ws, kB, kT, 0.1f);
  return std::vector<float>(p.grad.f32(), p.grad.f32() + p.grad.numel());
}

bool in_block0(const std::string& name) {
  return name.find("layers.0.") != std::string::npos || name.find("h.0.") != std::string::npos;
}

}  // namespace

TEST(BackwardPruning, Block0GradientsMatchUnprunedPath) {
  for (const char* arch : {"neox_parallel", "neox_sequential", "llama_gqa_untied", "qwen2_bias", "gpt2"}) {
    SCOPED_TRACE(arch);
    Model m = load_model(golden_dir(arch));
    LoraConfig c;
    c.r = 2;
    c.lora_alpha = 4;
    c.target_modules = ModuleSelector::pattern("all-linear");
    c.init_lora_weights = LoraInit::Random;  // B ≠ 0: every LoRA factor gets a gradient
    Rng lora_rng(11);
    apply_lora(m, c, lora_rng);
    int checked = 0;
    for (size_t i = 0; i < m.params.size(); i++) {
      if (!in_block0(m.params[i].name)) continue;
      SCOPED_TRACE(m.params[i].name);
      for (auto& q : m.params) q.trainable = false;
      m.params[i].trainable = true;
      m.sync_grad_buffers();
      const std::vector<float> pruned = grad_of(m, m.params[i]);
      m.embed->trainable = true;
      m.sync_grad_buffers();
      const std::vector<float> full = grad_of(m, m.params[i]);
      ASSERT_EQ(pruned.size(), full.size());
      EXPECT_EQ(std::memcmp(pruned.data(), full.data(), pruned.size() * sizeof(float)), 0);
      bool nonzero = false;
      for (float g : pruned) nonzero |= g != 0.f;
      EXPECT_TRUE(nonzero);
      checked++;
    }
    EXPECT_GE(checked, 8);
  }
}

// With only attention LoRA training, every block writes its MLP input (ln2) and activation output (act)
// into one shared buffer (Workspace::ensure): the LoRA gradients are bit-identical to a run where the
// MLP projections also train (each block keeping both), and the workspace is N·(E + I) floats a layer
// smaller.
TEST(BackwardPruning, SharedMlpActivationsWhenTheMlpIsFrozen) {
  for (const char* arch : {"neox_parallel", "llama_gqa_untied", "gpt2"}) {
    SCOPED_TRACE(arch);
    Model m = load_model(golden_dir(arch));
    LoraConfig c;
    c.r = 2;
    c.lora_alpha = 4;
    c.target_modules = ModuleSelector::pattern("all-linear");
    c.init_lora_weights = LoraInit::Random;
    Rng lora_rng(11);
    apply_lora(m, c, lora_rng);
    auto is_mlp = [](const std::string& n) { return n.find("mlp") != std::string::npos; };
    auto attention_lora_grads = [&](Workspace& ws) {
      std::vector<std::vector<float>> out;
      m.zero_grads();
      forward_backward_on_random_ids(m, ws, kB, kT, 0.1f);
      for (auto& p : m.params)
        if (p.trainable && p.name.find("lora_") != std::string::npos && !is_mlp(p.name))
          out.emplace_back(p.grad.f32(), p.grad.f32() + p.grad.numel());
      return out;
    };
    // Attention LoRA only.
    for (auto& p : m.params) p.trainable = p.name.find("lora_") != std::string::npos && !is_mlp(p.name);
    m.sync_grad_buffers();
    Workspace shared;
    const auto g_shared = attention_lora_grads(shared);
    EXPECT_TRUE(shared.shared_act.defined());
    // + every MLP weight: each block keeps its own ln2 and act.
    for (auto& p : m.params)
      if (is_mlp(p.name) && p.name.find("lora_") == std::string::npos && p.value.shape.size() == 2) p.trainable = true;
    m.sync_grad_buffers();
    Workspace kept;
    const auto g_kept = attention_lora_grads(kept);
    EXPECT_FALSE(kept.shared_act.defined());
    ASSERT_EQ(g_shared.size(), g_kept.size());
    ASSERT_GT(g_shared.size(), 0u);
    for (size_t i = 0; i < g_shared.size(); i++)
      EXPECT_EQ(std::memcmp(g_shared[i].data(), g_kept[i].data(), g_kept[i].size() * sizeof(float)), 0) << i;
    const int64_t N = kB * kT, L = m.cfg.num_layers;
    EXPECT_EQ(kept.bytes() - shared.bytes(), 4 * (L - 1) * N * (m.cfg.hidden_size + m.cfg.intermediate_size));
    // The same workspace re-lays itself out when what trains changes.
    const auto g_again = attention_lora_grads(shared);
    EXPECT_FALSE(shared.shared_act.defined());
    EXPECT_EQ(shared.bytes(), kept.bytes());
    for (size_t i = 0; i < g_again.size(); i++)
      EXPECT_EQ(std::memcmp(g_again[i].data(), g_kept[i].data(), g_kept[i].size() * sizeof(float)), 0) << i;
  }
}
