// LoRA parity with PyTorch goldens (tests/data/golden/{neox,llama,gpt2}_lora): load the base model
// and the PEFT adapter folder, then logits, loss and every lora_A/lora_B gradient; plus merge,
// merge_and_unload → save_model → load_model, unmerge, and disabled adapters == base golden.
#include <gtest/gtest.h>

#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "peft_test_util.h"

using namespace llmtune;
using namespace llmtune::peft_testing;

namespace {

struct Case {
  const char* name;
  const char* base;  // the base model's golden folder (same weights, same batch)
  int64_t num_adapters;
  float scaling;
};

void check_parity(const Case& c) {
  SCOPED_TRACE(c.name);
  Model m = load_model(golden_dir(c.name));
  LoraConfig cfg = load_adapter(m, golden_dir(c.name));
  EXPECT_EQ(cfg.r, 4);
  ASSERT_EQ(int64_t(lora_modules(m).size()), c.num_adapters);
  for (LinearModule* l : lora_modules(m)) EXPECT_FLOAT_EQ(l->lora.scaling, c.scaling) << l->name;
  // Only adapters are trainable; frozen params have no gradient buffer at all.
  for (const Param& p : m.params) {
    bool adapter = p.name.find(".lora_") != std::string::npos;
    EXPECT_EQ(p.trainable, adapter) << p.name;
    EXPECT_EQ(p.grad.defined(), adapter) << p.name;
  }

  SafetensorsFile g = open_safetensors(golden_dir(c.name) + "/golden.safetensors");
  GoldenBatch b = read_batch(g);
  RunResult r = run_batch(m, b, true);
  std::vector<float> ref = golden_logits(g, b);
  ASSERT_EQ(r.logits.size(), ref.size());
  EXPECT_LE(rel_err(r.logits.data(), ref.data(), int64_t(ref.size())), 1e-5) << "logits";
  EXPECT_NEAR(r.loss, g.get_f32("loss").f32()[0], 1e-6) << "loss";

  int checked = 0;
  for (LinearModule* l : lora_modules(m))
    for (Param* p : {l->lora.A, l->lora.B}) {
      std::string gname = "grad." + peft_key(p->name);
      ASSERT_TRUE(g.has(gname)) << gname;
      Tensor gref = g.get_f32(gname);
      ASSERT_EQ(gref.shape, p->grad.shape) << gname;
      EXPECT_LE(rel_err(p->grad.f32(), gref.f32(), gref.numel()), 1e-4) << gname;
      checked++;
    }
  int golden_grads = 0;
  for (const std::string& n : g.names()) golden_grads += n.rfind("grad.", 0) == 0;
  EXPECT_EQ(checked, golden_grads) << "every golden gradient has an adapter param";
  EXPECT_EQ(checked, 2 * c.num_adapters);

  // Disabled adapters: exactly the base model (bitwise equal to a model without adapters), which is
  // also the base golden.
  set_adapters_enabled(m, false);
  RunResult off = run_batch(m, b, false);
  Model base = load_model(golden_dir(c.name));
  RunResult plain = run_batch(base, b, false);
  EXPECT_EQ(off.logits, plain.logits);
  EXPECT_EQ(off.loss, plain.loss);
  SafetensorsFile gb = open_safetensors(golden_dir(c.base) + "/golden.safetensors");
  std::vector<float> ref_base = golden_logits(gb, read_batch(gb));
  EXPECT_LE(rel_err(off.logits.data(), ref_base.data(), int64_t(ref_base.size())), 1e-5) << "base logits";
  set_adapters_enabled(m, true);
  RunResult on = run_batch(m, b, false);
  EXPECT_EQ(on.logits, r.logits);
}

void check_merge(const Case& c) {
  SCOPED_TRACE(c.name);
  Model m = load_model(golden_dir(c.name));
  load_adapter(m, golden_dir(c.name));
  SafetensorsFile g = open_safetensors(golden_dir(c.name) + "/golden.safetensors");
  GoldenBatch b = read_batch(g);
  std::vector<float> ref = golden_logits(g, b);
  std::vector<std::vector<float>> before;
  for (LinearModule* l : lora_modules(m)) before.push_back(std::vector<float>(l->weight->value.f32(), l->weight->value.f32() + l->weight->value.numel()));

  merge_lora(m);
  for (LinearModule* l : lora_modules(m)) EXPECT_TRUE(l->lora.merged);
  RunResult merged = run_batch(m, b, false);
  EXPECT_LE(rel_err(merged.logits.data(), ref.data(), int64_t(ref.size())), 1e-5) << "merged logits";
  // Merging changed the weights (B != 0 in these goldens).
  EXPECT_NE(before[0], std::vector<float>(lora_modules(m)[0]->weight->value.f32(),
                                          lora_modules(m)[0]->weight->value.f32() + before[0].size()));

  unmerge_lora(m);
  size_t i = 0;
  for (LinearModule* l : lora_modules(m)) {
    EXPECT_FALSE(l->lora.merged);
    EXPECT_LE(rel_err(l->weight->value.f32(), before[i].data(), int64_t(before[i].size())), 1e-6) << l->name;
    i++;
  }
  RunResult unmerged = run_batch(m, b, false);
  EXPECT_LE(rel_err(unmerged.logits.data(), ref.data(), int64_t(ref.size())), 1e-5) << "unmerged logits";

  // merge_and_unload → a plain HF folder → the adapted model's logits.
  merge_and_unload(m);
  EXPECT_TRUE(lora_modules(m).empty());
  for (const Param& p : m.params) EXPECT_EQ(p.name.find(".lora_"), std::string::npos) << p.name;
  PeftTempDir tmp;
  save_model(m, tmp.path);
  Model reloaded = load_model(tmp.path);
  RunResult rl = run_batch(reloaded, b, false);
  EXPECT_LE(rel_err(rl.logits.data(), ref.data(), int64_t(ref.size())), 1e-5) << "merged, saved, reloaded";
}

const Case kNeox{"neox_lora", "neox_parallel", 2, 2.0f};
const Case kLlama{"llama_lora", "llama_gqa_untied", 4, 4.0f};
const Case kGpt2{"gpt2_lora", "gpt2", 2, 2.0f};

}  // namespace

TEST(PeftGolden, NeoxLoraParity) { check_parity(kNeox); }
TEST(PeftGolden, LlamaLoraParity) { check_parity(kLlama); }
TEST(PeftGolden, Gpt2LoraParity) { check_parity(kGpt2); }
TEST(PeftGolden, NeoxMergeUnmerge) { check_merge(kNeox); }
TEST(PeftGolden, LlamaMergeUnmerge) { check_merge(kLlama); }
TEST(PeftGolden, Gpt2MergeUnmergeConv1D) { check_merge(kGpt2); }
