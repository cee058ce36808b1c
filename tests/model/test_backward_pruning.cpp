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

// Gradient of `p` after one forward + LM loss + backward on fixed random ids.
std::vector<float> grad_of(Model& m, const Param& p) {
  for (auto& q : m.params)
    if (q.trainable && q.grad.defined()) std::memset(q.grad.data, 0, q.grad.nbytes());
  const int64_t B = 2, T = 7;
  Rng rng(3);
  std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T), -100);
  for (auto& v : ids) v = int32_t(rng.below(uint64_t(m.cfg.vocab_size)));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t + 1 < T; t++) targets[size_t(b * T + t)] = ids[size_t(b * T + t + 1)];
  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  Workspace ws;
  decoder_forward(m, ws, in);
  decoder_lm_loss(m, ws, targets.data(), 0.1f, true);
  decoder_backward(m, ws, in);
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
