// apply_lora's init / scaling / trainable flags, print_trainable_parameters (Pythia-70m exact line),
// disable_adapter semantics (exact base logits, modules_to_save originals), freeze policies.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "io/json_file.h"
#include "model/config.h"
#include "model/heads.h"
#include "peft/adapter_io.h"
#include "peft/freeze.h"
#include "peft/lora.h"
#include "peft_test_util.h"

using namespace llmtune;
using namespace llmtune::peft_testing;

namespace {

Model small_model(const std::string& golden) { return random_model(load_model_config(golden_dir(golden)), 11); }

}  // namespace

TEST(PeftLora, PrintTrainableParametersPythia70m) {
  // EleutherAI/pythia-70m config.json (the fields that matter).
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 512,
    "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 50304,
    "rotary_pct": 0.25, "rotary_emb_base": 10000, "max_position_embeddings": 2048, "hidden_act": "gelu",
    "layer_norm_eps": 1e-05, "use_parallel_residual": true, "tie_word_embeddings": false,
    "bos_token_id": 0, "eos_token_id": 0, "initializer_range": 0.02, "torch_dtype": "float16"})");
  ModelConfig cfg = parse_model_config(j, "pythia-70m/config.json");
  Model m = random_model(cfg, 1, 0.0f);
  EXPECT_EQ(m.num_params(), 70426624);
  LoraConfig c;  // r = 8, default target query_key_value
  Rng rng(1);
  apply_lora(m, c, rng);
  EXPECT_EQ(trainable_parameters_string(m), "trainable params: 98,304 || all params: 70,524,928 || trainable%: 0.1394");
}

TEST(PeftLora, InitScalingAndFlags) {
  Model m = small_model("neox_parallel");  // E = 64, 3E = 192
  LoraConfig c;
  c.r = 4;
  c.lora_alpha = 16;
  c.lora_dropout = 0.1;
  c.target_modules = ModuleSelector::list({"query_key_value", "dense_h_to_4h"});
  c.rank_pattern = {{"dense_h_to_4h", 2}};
  c.alpha_pattern = {{"layers\\.1\\.attention\\.query_key_value", 3}};
  Rng rng(2);
  apply_lora(m, c, rng);
  auto mods = lora_modules(m);
  ASSERT_EQ(mods.size(), 4u);
  for (LinearModule* l : mods) {
    SCOPED_TRACE(l->name);
    EXPECT_EQ(l->lora.A->name, l->name + ".lora_A.weight");
    EXPECT_EQ(l->lora.B->name, l->name + ".lora_B.weight");
    const int64_t r = l->name.find("dense_h_to_4h") != std::string::npos ? 2 : 4;
    EXPECT_EQ(l->lora.r, r);
    EXPECT_EQ(l->lora.A->value.shape, (Shape{r, l->in}));
    EXPECT_EQ(l->lora.B->value.shape, (Shape{l->out, r}));
    const float alpha = l->name == "gpt_neox.layers.1.attention.query_key_value" ? 3.f : 16.f;
    EXPECT_FLOAT_EQ(l->lora.scaling, alpha / float(r));
    EXPECT_FLOAT_EQ(l->lora.dropout, 0.1f);
    // kaiming_uniform(a=√5) == U(±1/√in); B = 0.
    const float bound = 1.f / std::sqrt(float(l->in));
    float amax = 0;
    for (int64_t i = 0; i < l->lora.A->value.numel(); i++) amax = std::max(amax, std::fabs(l->lora.A->value.f32()[i]));
    EXPECT_LE(amax, bound);
    EXPECT_GT(amax, 0.8f * bound);
    for (int64_t i = 0; i < l->lora.B->value.numel(); i++) ASSERT_EQ(l->lora.B->value.f32()[i], 0.f);
    EXPECT_TRUE(l->lora.A->trainable && l->lora.B->trainable);
    EXPECT_TRUE(l->lora.A->grad.defined() && l->lora.B->grad.defined());
  }
  for (const Param& p : m.params)
    if (p.name.find(".lora_") == std::string::npos) {
      EXPECT_FALSE(p.trainable) << p.name;
      EXPECT_FALSE(p.grad.defined()) << p.name;
    }
  // 2 layers × (A 4·64 + B 192·4 on query_key_value, A 2·64 + B 192·2 on dense_h_to_4h) = 3,072.
  EXPECT_EQ(m.num_params(), 103040);
  EXPECT_EQ(trainable_parameters_string(m), "trainable params: 3,072 || all params: 103,040 || trainable%: 2.9814");

  // rsLoRA and gaussian init.
  Model g = small_model("llama_gqa_untied");
  LoraConfig cg;
  cg.r = 16;
  cg.lora_alpha = 8;
  cg.use_rslora = true;
  cg.init_lora_weights = LoraInit::Gaussian;
  apply_lora(g, cg, rng);
  double ss = 0;
  int64_t n = 0;
  for (LinearModule* l : lora_modules(g)) {
    EXPECT_FLOAT_EQ(l->lora.scaling, 8.f / 4.f);  // alpha / √r
    for (int64_t i = 0; i < l->lora.A->value.numel(); i++, n++) ss += double(l->lora.A->value.f32()[i]) * l->lora.A->value.f32()[i];
  }
  EXPECT_NEAR(std::sqrt(ss / double(n)), 1.0 / 16, 0.1 / 16);  // std 1/r

  // init_lora_weights=false: B random too; bias="all" makes every bias trainable.
  Model f = small_model("gpt2");
  LoraConfig cf;
  cf.init_lora_weights = LoraInit::Random;
  cf.bias = LoraBias::All;
  apply_lora(f, cf, rng);
  bool b_nonzero = false;
  for (LinearModule* l : lora_modules(f))
    for (int64_t i = 0; i < l->lora.B->value.numel(); i++) b_nonzero |= l->lora.B->value.f32()[i] != 0.f;
  EXPECT_TRUE(b_nonzero);
  for (const Param& p : f.params) {
    bool bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    bool adapter = p.name.find(".lora_") != std::string::npos;
    EXPECT_EQ(p.trainable, bias || adapter) << p.name;
  }
}

TEST(PeftLora, DisableAdaptersGivesBaseExactly) {
  SafetensorsFile g = open_safetensors(golden_dir("neox_parallel") + "/golden.safetensors");
  GoldenBatch b = read_batch(g);
  Model base = load_model(golden_dir("neox_parallel"));
  RunResult ref = run_batch(base, b, false);

  Model m = load_model(golden_dir("neox_parallel"));
  LoraConfig c;
  c.r = 4;
  c.modules_to_save = std::vector<std::string>{"embed_out"};
  Rng rng(1);
  apply_lora(m, c, rng);
  ASSERT_EQ(m.modules_to_save_originals.count("embed_out.weight"), 1u);
  EXPECT_NE(trainable_parameters_string(m).find("all params: " + [&] {
    int64_t all = m.num_params() + m.find("embed_out.weight")->value.numel();  // original copy counted, like PEFT
    std::string s = std::to_string(all), o;
    for (size_t i = 0; i < s.size(); i++) o += std::string(i && (s.size() - i) % 3 == 0 ? "," : "") + s[i];
    return o;
  }()), std::string::npos);
  // "Trained" adapter and head.
  for (LinearModule* l : lora_modules(m))
    for (int64_t i = 0; i < l->lora.B->value.numel(); i++) l->lora.B->value.f32()[i] = 0.05f * float(i % 7) - 0.1f;
  float* head = m.find("embed_out.weight")->value.f32();
  for (int i = 0; i < 100; i++) head[i] += 0.5f;

  RunResult adapted = run_batch(m, b, false);
  EXPECT_NE(adapted.logits, ref.logits);
  set_adapters_enabled(m, false);
  EXPECT_FALSE(m.adapters_enabled);
  RunResult off = run_batch(m, b, false);
  EXPECT_EQ(off.logits, ref.logits);  // bitwise: the pristine base model
  EXPECT_EQ(off.loss, ref.loss);
  set_adapters_enabled(m, true);
  EXPECT_EQ(run_batch(m, b, false).logits, adapted.logits);

  // Merged adapters are unmerged when disabled (PEFT), so the base is still exact up to rounding.
  merge_lora(m);
  set_adapters_enabled(m, false);
  RunResult off2 = run_batch(m, b, false);
  EXPECT_LE(rel_err(off2.logits.data(), ref.logits.data(), int64_t(ref.logits.size())), 1e-6);
  set_adapters_enabled(m, true);

  // remove_lora restores the base model (modules_to_save original back).
  remove_lora(m);
  EXPECT_TRUE(lora_modules(m).empty());
  EXPECT_EQ(m.params.size(), base.params.size());
  EXPECT_LE(rel_err(run_batch(m, b, false).logits.data(), ref.logits.data(), int64_t(ref.logits.size())), 1e-6);
}

TEST(PeftLora, ModulesToSaveTiedHeadRejected) {
  Model m = small_model("llama_tied_llama3rope");
  LoraConfig c;
  c.modules_to_save = std::vector<std::string>{"lm_head"};
  Rng rng(1);
  std::string e = error_of([&] { apply_lora(m, c, rng); });
  EXPECT_NE(e.find("tied to the input embedding"), std::string::npos) << e;
  c.modules_to_save = std::vector<std::string>{"nothing_here"};
  e = error_of([&] { apply_lora(m, c, rng); });
  EXPECT_EQ(e, "LoRA config: modules_to_save 'nothing_here' matched no module of this Llama model");
  EXPECT_TRUE(lora_modules(m).empty());
}

TEST(PeftFreeze, LastBlockNormAndHeadMatchGolden) {
  Model m = load_model(golden_dir("neox_freeze"));
  std::string summary = apply_freeze_policy(m, FreezeOptions{});
  EXPECT_NE(summary.find("freeze: trainable = blocks 1..1 of 2, final norm, LM head (15 tensors"), std::string::npos)
      << summary;
  nlohmann::json tc = read_json_file(golden_dir("neox_freeze") + "/train_config.json");
  std::set<std::string> want = tc["trainable"].get<std::set<std::string>>(), got;
  for (const Param& p : m.params) {
    if (p.trainable) got.insert(p.name);
    EXPECT_EQ(p.grad.defined(), p.trainable) << p.name;
  }
  EXPECT_EQ(got, want);
  // Gradients of the trainable params equal the full-model golden gradients.
  SafetensorsFile g = open_safetensors(golden_dir("neox_parallel") + "/golden.safetensors");
  GoldenBatch b = read_batch(g);
  run_batch(m, b, true);
  for (const Param& p : m.params)
    if (p.trainable) {
      Tensor ref = g.get_f32("grad." + p.name);
      EXPECT_LE(rel_err(p.grad.f32(), ref.f32(), ref.numel()), 1e-4) << p.name;
    }
}

TEST(PeftFreeze, OptionsFullAndErrors) {
  Model m = small_model("llama_gqa_untied");
  FreezeOptions o;
  o.trainable_layers = 2;
  o.train_final_norm = false;
  o.train_lm_head = false;
  apply_freeze_policy(m, o);
  for (const Param& p : m.params)
    EXPECT_EQ(p.trainable, p.name.rfind("model.layers.", 0) == 0) << p.name;
  o.trainable_layers = 0;
  apply_freeze_policy(m, o);
  for (const Param& p : m.params) EXPECT_FALSE(p.trainable || p.grad.defined()) << p.name;
  o.trainable_layers = 3;
  EXPECT_EQ(error_of([&] { apply_freeze_policy(m, o); }),
            "freeze_trainable_layers must be between 0 and the model's 2 layers (got 3)");
  o.trainable_layers = -1;
  EXPECT_NE(error_of([&] { apply_freeze_policy(m, o); }).find("(got -1)"), std::string::npos);
  o.method = "full";
  std::string s = apply_freeze_policy(m, o);
  for (const Param& p : m.params) EXPECT_TRUE(p.trainable && p.grad.defined()) << p.name;
  EXPECT_NE(s.find("full: every parameter trainable"), std::string::npos);
  o.method = "partial";
  EXPECT_NE(error_of([&] { apply_freeze_policy(m, o); }).find("unknown finetuning method 'partial'"), std::string::npos);

  // Tied head: training the head trains the embedding (one tensor).
  Model t = small_model("llama_tied_llama3rope");
  std::string st = apply_freeze_policy(t, FreezeOptions{});
  EXPECT_TRUE(t.embed->trainable);
  EXPECT_NE(st.find("tied"), std::string::npos);
}

TEST(PeftLora, SeqClsTrainsAndSavesScoreHead) {
  Model m = small_model("llama_gqa_untied");
  SeqClsOptions so;
  so.num_labels = 3;
  add_classification_head(m, so);
  LoraConfig c;
  c.task_type = "SEQ_CLS";
  c.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(1);
  LoraConfig r = apply_lora(m, c, rng);
  EXPECT_EQ(r.modules_to_save, (std::vector<std::string>{"classifier", "score"}));  // PEFT adds both
  EXPECT_EQ(lora_modules(m).size(), 14u);  // all-linear never wraps the score head
  Param* score = m.find("score.weight");
  ASSERT_NE(score, nullptr);
  EXPECT_TRUE(score->trainable && score->grad.defined());
  EXPECT_EQ(m.modules_to_save_originals.count("score.weight"), 1u);
  std::vector<std::string> keys;
  for (auto& [k, t] : adapter_state_dict(m, r)) keys.push_back(k);
  EXPECT_NE(std::find(keys.begin(), keys.end(), "base_model.model.score.weight"), keys.end());
  nlohmann::json j = r.to_json();
  EXPECT_EQ(j["task_type"], "SEQ_CLS");
}
