// PEFT target matching (hf-semantics §1.2): list suffix semantics, regex full match,
// layers_to_transform / layers_pattern, exclude_modules, all-linear (+ PEFT's suffix condensing),
// modules_to_save never wrapped, default targets per architecture, and the config errors.
#include <gtest/gtest.h>

#include "model/config.h"
#include "peft/lora.h"
#include "peft/target_match.h"
#include "peft_test_util.h"

using namespace llmtune;
using namespace llmtune::peft_testing;

namespace {

std::vector<std::string> wrapped_names(Model& m) {
  std::vector<std::string> out;
  for (LinearModule* l : lora_modules(m)) out.push_back(l->name);
  return out;
}

Model small_model(const std::string& golden, int64_t layers = 0) {
  ModelConfig c = load_model_config(golden_dir(golden));
  if (layers) c.num_layers = layers;
  return random_model(c, 7);
}

LoraConfig targets(std::vector<std::string> names) {
  LoraConfig c;
  c.r = 2;
  c.target_modules = ModuleSelector::list(std::move(names));
  return c;
}

}  // namespace

TEST(PeftTargetMatch, ListIsDotAnchoredSuffix) {
  ModuleSelector s = ModuleSelector::list({"q_proj"});
  EXPECT_TRUE(selector_matches(s, "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_TRUE(selector_matches(s, "q_proj", "t"));  // key == t
  EXPECT_FALSE(selector_matches(s, "model.layers.0.self_attn.qq_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector::list({"proj"}), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector::list({"_proj"}), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_TRUE(selector_matches(ModuleSelector::list({"self_attn.q_proj"}), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_TRUE(selector_matches(ModuleSelector::list({"layers.0.self_attn.q_proj"}), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector::list({"layers.1.self_attn.q_proj"}), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector{}, "q_proj", "t"));
}

TEST(PeftTargetMatch, RegexIsFullMatch) {
  EXPECT_TRUE(selector_matches(ModuleSelector::pattern(".*q_proj"), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_TRUE(selector_matches(ModuleSelector::pattern(R"(.*\.(q|v)_proj)"), "model.layers.1.self_attn.v_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector::pattern(R"(.*\.(q|v)_proj)"), "model.layers.1.self_attn.k_proj", "t"));
  // re.fullmatch, not re.search: a bare name does not match a longer key.
  EXPECT_FALSE(selector_matches(ModuleSelector::pattern("q_proj"), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_FALSE(selector_matches(ModuleSelector::pattern("model"), "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_TRUE(selector_matches(ModuleSelector::pattern(R"(model\.layers\.[01]\.self_attn\.q_proj)"),
                               "model.layers.0.self_attn.q_proj", "t"));
  EXPECT_NE(error_of([] { regex_full_match("(unclosed", "x", "target_modules"); }).find("invalid regular expression"),
            std::string::npos);
}

TEST(PeftTargetMatch, LayerIndexExtraction) {
  EXPECT_EQ(layer_index_of("gpt_neox.layers.3.attention.query_key_value", std::nullopt), 3);
  EXPECT_EQ(layer_index_of("model.layers.12.self_attn.q_proj", std::nullopt), 12);
  EXPECT_EQ(layer_index_of("transformer.h.1.attn.c_attn", std::nullopt), 1);
  EXPECT_EQ(layer_index_of("lm_head", std::nullopt), std::nullopt);
  EXPECT_EQ(layer_index_of("model.norm", std::nullopt), std::nullopt);
  // Greedy ".*" as in PEFT: the last numbered component wins.
  EXPECT_EQ(layer_index_of("model.layers.1.mlp.experts.5.w1", std::nullopt), 5);
  std::vector<std::string> h{"h"}, layers{"layers"};
  EXPECT_EQ(layer_index_of("transformer.h.5.attn.c_attn", h), 5);
  EXPECT_EQ(layer_index_of("transformer.h.5.attn.c_attn", layers), std::nullopt);
  EXPECT_EQ(layer_index_of("model.layers.7.mlp.up_proj", layers), 7);
}

TEST(PeftTargetMatch, LayersToTransform) {
  Model m = small_model("llama_gqa_untied");
  LoraConfig c = targets({"q_proj", "v_proj"});
  c.layers_to_transform = std::vector<int64_t>{1};
  Rng rng(1);
  apply_lora(m, c, rng);
  EXPECT_EQ(wrapped_names(m), (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"}));

  Model g = small_model("gpt2");
  LoraConfig cg = targets({"c_attn"});
  cg.layers_to_transform = std::vector<int64_t>{0};
  cg.layers_pattern = std::vector<std::string>{"h"};
  apply_lora(g, cg, rng);
  EXPECT_EQ(wrapped_names(g), (std::vector<std::string>{"transformer.h.0.attn.c_attn"}));

  // A pattern that names no layer list: nothing matches → the error says why.
  Model g2 = small_model("gpt2");
  cg.layers_pattern = std::vector<std::string>{"layers"};
  std::string e = error_of([&] { apply_lora(g2, cg, rng); });
  EXPECT_NE(e.find("matched no module"), std::string::npos) << e;
  EXPECT_NE(e.find("layers_to_transform"), std::string::npos) << e;
}

TEST(PeftTargetMatch, ExcludeModules) {
  Model m = small_model("llama_gqa_untied");
  LoraConfig c = targets({"q_proj", "v_proj"});
  c.exclude_modules = ModuleSelector::list({"layers.0.self_attn.q_proj"});
  Rng rng(1);
  apply_lora(m, c, rng);
  EXPECT_EQ(wrapped_names(m), (std::vector<std::string>{"model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj",
                                                        "model.layers.1.self_attn.v_proj"}));
  Model m2 = small_model("llama_gqa_untied");
  LoraConfig c2;
  c2.target_modules = ModuleSelector::pattern("all-linear");
  c2.exclude_modules = ModuleSelector::pattern(R"(.*\.mlp\..*)");
  LoraConfig resolved = apply_lora(m2, c2, rng);
  EXPECT_EQ(wrapped_names(m2).size(), 8u);  // q, k, v, o × 2 layers
  for (auto& n : wrapped_names(m2)) EXPECT_NE(n.find("self_attn"), std::string::npos) << n;
  EXPECT_TRUE(resolved.to_json().contains("exclude_modules"));
}

TEST(PeftTargetMatch, AllLinearExcludesHeadAndCondenses) {
  Rng rng(1);
  Model m = small_model("neox_parallel");  // 2 layers: 8 linears (< 20 → full names, like PEFT)
  LoraConfig c;
  c.target_modules = ModuleSelector::pattern("ALL-LINEAR");
  LoraConfig r = apply_lora(m, c, rng);
  EXPECT_EQ(wrapped_names(m).size(), 8u);
  EXPECT_FALSE(m.lm_head.lora.active());
  ASSERT_EQ(r.target_modules.kind, ModuleSelector::Kind::List);
  EXPECT_EQ(r.target_modules.names.size(), 8u);
  EXPECT_EQ(r.target_modules.names[0], "gpt_neox.layers.0.attention.query_key_value");

  // >= 20 linears: PEFT writes the minimal suffix set.
  Model m6 = small_model("neox_parallel", 6);
  LoraConfig r6 = resolve_lora_config(m6, c);
  EXPECT_EQ(r6.to_json()["target_modules"],
            nlohmann::json({"dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"}));
  Model g6 = small_model("gpt2", 6);
  EXPECT_EQ(resolve_lora_config(g6, c).to_json()["target_modules"], nlohmann::json({"c_attn", "c_fc", "c_proj"}));
  Model l3 = small_model("llama_gqa_untied", 3);
  EXPECT_EQ(resolve_lora_config(l3, c).to_json()["target_modules"],
            nlohmann::json({"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
  // The condensed set wraps exactly the same modules, and never the head.
  LoraConfig again = resolve_lora_config(g6, c);
  apply_lora(g6, again, rng);
  EXPECT_EQ(wrapped_names(g6).size(), 24u);
}

TEST(PeftTargetMatch, FindMinimalTargetModules) {
  std::vector<std::string> t = {"a.0.x.q", "a.1.x.q", "a.0.y.q"};
  // "q" also names a module that is not a target → must keep more context.
  EXPECT_EQ(find_minimal_target_modules(t, {"a.0.z.q", "a.0.z"}), (std::set<std::string>{"x.q", "y.q"}));
  EXPECT_EQ(find_minimal_target_modules(t, {"a.0.z"}), (std::set<std::string>{"q"}));
}

TEST(PeftTargetMatch, ModulesToSaveNeverWrapped) {
  Model m = small_model("neox_parallel");
  LoraConfig c = targets({"query_key_value", "dense"});
  c.modules_to_save = std::vector<std::string>{"dense"};
  Rng rng(1);
  apply_lora(m, c, rng);
  EXPECT_EQ(wrapped_names(m), (std::vector<std::string>{"gpt_neox.layers.0.attention.query_key_value",
                                                        "gpt_neox.layers.1.attention.query_key_value"}));
  EXPECT_TRUE(m.find("gpt_neox.layers.0.attention.dense.weight")->trainable);
  EXPECT_TRUE(m.find("gpt_neox.layers.1.attention.dense.bias")->trainable);
  EXPECT_FALSE(m.find("gpt_neox.layers.1.mlp.dense_h_to_4h.weight")->trainable);
}

TEST(PeftTargetMatch, DefaultTargetsPerArchitecture) {
  struct {
    const char* golden;
    std::vector<std::string> want;
  } cases[] = {{"neox_parallel", {"query_key_value"}}, {"llama_gqa_untied", {"q_proj", "v_proj"}},
               {"qwen2_bias", {"q_proj", "v_proj"}}, {"gpt2", {"c_attn"}}};
  for (auto& k : cases) {
    Model m = small_model(k.golden);
    EXPECT_EQ(default_target_modules(m.cfg), k.want) << k.golden;
    Rng rng(1);
    LoraConfig r = apply_lora(m, LoraConfig{}, rng);
    EXPECT_EQ(r.target_modules.names, k.want) << k.golden;
    EXPECT_EQ(wrapped_names(m).size(), k.want.size() * 2) << k.golden;
    EXPECT_EQ(r.fan_in_fan_out, std::string(k.golden) == "gpt2") << k.golden;
  }
  ModelConfig mistral;
  mistral.model_type = "mistral";
  mistral.arch = Arch::Llama;
  EXPECT_EQ(default_target_modules(mistral), (std::vector<std::string>{"q_proj", "v_proj"}));
}

TEST(PeftTargetMatch, NothingMatchedListsModules) {
  Model m = small_model("neox_parallel");
  Rng rng(1);
  EXPECT_EQ(error_of([&] { apply_lora(m, targets({"foo"}), rng); }),
            "target_modules ['foo'] matched no module of this GPTNeoX model; its linear modules are: "
            "query_key_value, dense, dense_h_to_4h, dense_4h_to_h");
  Model l = small_model("llama_gqa_untied");
  LoraConfig c;
  c.target_modules = ModuleSelector::pattern("q_proj");  // full match: not a suffix
  EXPECT_EQ(error_of([&] { apply_lora(l, c, rng); }),
            "target_modules 'q_proj' matched no module of this Llama model; its linear modules are: "
            "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj");
  EXPECT_TRUE(lora_modules(m).empty());
  EXPECT_TRUE(lora_modules(l).empty());
}

TEST(PeftTargetMatch, NonLinearAndHeadTargetsRejected) {
  Model m = small_model("neox_parallel");
  Rng rng(1);
  std::string e = error_of([&] { apply_lora(m, targets({"attention"}), rng); });
  EXPECT_NE(e.find("'gpt_neox.layers.0.attention', which is not a linear layer"), std::string::npos) << e;
  e = error_of([&] { apply_lora(m, targets({"embed_out"}), rng); });
  EXPECT_NE(e.find("LoRA on the LM head is not supported"), std::string::npos) << e;
  EXPECT_TRUE(lora_modules(m).empty());
}

TEST(PeftConfig, ValidationErrors) {
  Model m = small_model("neox_parallel");
  Rng rng(1);
  LoraConfig c;
  c.r = 0;
  std::string e = error_of([&] { apply_lora(m, c, rng); });
  EXPECT_NE(e.find("r must be > 0 (got 0)"), std::string::npos) << e;
  c = LoraConfig{};
  c.target_modules = ModuleSelector::pattern(".*query_key_value");
  c.layers_to_transform = std::vector<int64_t>{0};
  e = error_of([&] { c.validate(); });
  EXPECT_NE(e.find("layers_to_transform cannot be used when target_modules is a str"), std::string::npos) << e;
  c = LoraConfig{};
  c.use_dora = true;
  e = error_of([&] { c.validate(); });
  EXPECT_NE(e.find("DoRA is not supported yet"), std::string::npos) << e;
  nlohmann::json j = {{"peft_type", "LORA"}, {"r", 4}, {"bias", "some"}};
  e = error_of([&] { LoraConfig::from_json(j, "cfg.json"); });
  EXPECT_EQ(e, "cfg.json: field 'bias' must be \"none\", \"all\" or \"lora_only\" (got \"some\")");
  j = {{"peft_type", "PREFIX_TUNING"}};
  e = error_of([&] { LoraConfig::from_json(j, "cfg.json"); });
  EXPECT_NE(e.find("only LORA adapters are supported"), std::string::npos) << e;
  j = {{"peft_type", "LORA"}, {"r", -1}};
  e = error_of([&] { LoraConfig::from_json(j, "cfg.json"); });
  EXPECT_NE(e.find("cfg.json: "), std::string::npos) << e;
  EXPECT_NE(e.find("r must be > 0 (got -1)"), std::string::npos) << e;
  j = {{"peft_type", "LORA"}, {"use_dora", true}};
  EXPECT_NE(error_of([&] { LoraConfig::from_json(j, "cfg.json"); }).find("DoRA is not supported yet"), std::string::npos);
  j = {{"peft_type", "LORA"}, {"init_lora_weights", "pissa"}};
  EXPECT_NE(error_of([&] { LoraConfig::from_json(j, "cfg.json"); }).find("not supported"), std::string::npos);
}

TEST(PeftConfig, FromJsonDefaultsAndWarnings) {
  nlohmann::json j = {{"peft_type", "LORA"}, {"some_future_field", 3}, {"peft_version", "0.17.0"},
                      {"lora_bias", false}, {"target_modules", "all-linear"}, {"layers_to_transform", nullptr},
                      {"task_type", nullptr}};
  std::vector<std::string> warnings;
  LoraConfig c = LoraConfig::from_json(j, "cfg.json", &warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(warnings[0], "cfg.json: unknown field 'some_future_field' ignored");
  EXPECT_EQ(c.r, 8);
  EXPECT_EQ(c.lora_alpha, 8);
  EXPECT_TRUE(c.target_modules.is_all_linear());
  EXPECT_EQ(c.task_type, "CAUSAL_LM");
  EXPECT_EQ(c.bias, LoraBias::None);
  j = {{"peft_type", "LORA"}, {"lora_bias", true}};
  EXPECT_NE(error_of([&] { LoraConfig::from_json(j, "cfg.json"); }).find("'lora_bias'"), std::string::npos);
}
