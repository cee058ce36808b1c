// PEFT adapter folders: exact key names / shapes / config fields per architecture, round trips
// (identical outputs, byte-identical re-save, also of the PyTorch-written golden folders), PEFT's
// in-memory ".default" key spelling, bias / modules_to_save tensors, and load errors.
#include <gtest/gtest.h>

#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "peft_test_util.h"

using namespace llmtune;
using namespace llmtune::peft_testing;

namespace {

Model golden_base(const std::string& golden) { return load_model(golden_dir(golden)); }

// Gives every adapter random B (PEFT init has B = 0, which would make round trips trivial).
void randomise_adapters(Model& m, uint64_t seed) {
  Rng rng(seed);
  for (LinearModule* l : lora_modules(m)) {
    Tensor& b = l->lora.B->value;
    for (int64_t i = 0; i < b.numel(); i++) b.f32()[i] = 0.1f * rng.normal();
  }
}

LoraConfig cfg_r4(std::vector<std::string> targets, double alpha) {
  LoraConfig c;
  c.r = 4;
  c.lora_alpha = alpha;
  c.target_modules = ModuleSelector::list(std::move(targets));
  return c;
}

std::vector<std::pair<std::string, Shape>> file_entries(const std::string& path) {
  SafetensorsFile f = open_safetensors(path);
  std::vector<std::pair<std::string, Shape>> out;
  for (const std::string& n : f.names()) {
    EXPECT_EQ(f.info(n).dtype, DType::F32) << n;
    out.push_back({n, f.info(n).shape});
  }
  EXPECT_EQ(f.metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  return out;
}

void copy_folder_files(const std::string& from, const std::string& to, const std::vector<std::string>& names) {
  for (const std::string& n : names) write_file_atomic(to + "/" + n, read_file(from + "/" + n));
}

}  // namespace

TEST(PeftAdapterIO, NeoxKeysShapesAndConfig) {
  Model m = golden_base("neox_parallel");
  Rng rng(3);
  LoraConfig c = cfg_r4({"query_key_value"}, 8);
  c.lora_dropout = 0.05;
  apply_lora(m, c, rng);
  PeftTempDir tmp;
  save_adapter(m, c, tmp.path);
  std::vector<std::pair<std::string, Shape>> want = {
      {"base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_A.weight", {4, 64}},
      {"base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_B.weight", {192, 4}},
      {"base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_A.weight", {4, 64}},
      {"base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight", {192, 4}},
  };
  EXPECT_EQ(file_entries(tmp.file("adapter_model.safetensors")), want);

  nlohmann::json j = read_json_file(tmp.file("adapter_config.json"));
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());
  EXPECT_DOUBLE_EQ(j["lora_dropout"].get<double>(), 0.05);
  EXPECT_EQ(j["target_modules"], nlohmann::json({"query_key_value"}));
  EXPECT_EQ(j["fan_in_fan_out"], false);
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["init_lora_weights"], true);
  EXPECT_EQ(j["use_rslora"], false);
  EXPECT_EQ(j["use_dora"], false);
  EXPECT_EQ(j["modules_to_save"], nullptr);
  EXPECT_EQ(j["base_model_name_or_path"], golden_dir("neox_parallel"));
  // The key set of a PEFT 0.13 file (golden), minus peft_version.
  nlohmann::json golden = read_json_file(golden_dir("neox_lora") + "/adapter_config.json");
  golden.erase("peft_version");
  std::vector<std::string> keys, golden_keys;
  for (auto& [k, v] : j.items()) keys.push_back(k);
  for (auto& [k, v] : golden.items()) golden_keys.push_back(k);
  EXPECT_EQ(keys, golden_keys);
  // PEFT's json.dumps(indent=2, sort_keys=True) layout.
  std::string text = read_file(tmp.file("adapter_config.json"));
  EXPECT_EQ(text.substr(0, 25), "{\n  \"alpha_pattern\": {},\n");
  EXPECT_NE(text.find("  \"target_modules\": [\n    \"query_key_value\"\n  ],\n"), std::string::npos) << text;
  EXPECT_TRUE(std::filesystem::exists(tmp.file("README.md")));
}

TEST(PeftAdapterIO, LlamaAndGpt2KeyNames) {
  {
    Model m = golden_base("llama_gqa_untied");
    Rng rng(3);
    LoraConfig c = cfg_r4({"q_proj", "v_proj"}, 16);
    apply_lora(m, c, rng);
    PeftTempDir tmp;
    save_adapter(m, c, tmp.path);
    std::vector<std::pair<std::string, Shape>> want;
    for (int i = 0; i < 2; i++) {
      std::string p = cat("base_model.model.model.layers.", i, ".self_attn.");
      want.push_back({p + "q_proj.lora_A.weight", {4, 64}});
      want.push_back({p + "q_proj.lora_B.weight", {64, 4}});
      want.push_back({p + "v_proj.lora_A.weight", {4, 64}});
      want.push_back({p + "v_proj.lora_B.weight", {32, 4}});
    }
    EXPECT_EQ(file_entries(tmp.file("adapter_model.safetensors")), want);
    nlohmann::json j = read_json_file(tmp.file("adapter_config.json"));
    EXPECT_EQ(j["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
    EXPECT_EQ(j["fan_in_fan_out"], false);
  }
  {
    Model m = golden_base("gpt2");
    Rng rng(3);
    LoraConfig c = cfg_r4({"c_attn"}, 8);
    apply_lora(m, c, rng);
    PeftTempDir tmp;
    save_adapter(m, c, tmp.path);
    std::vector<std::pair<std::string, Shape>> want = {
        {"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", {4, 32}},
        {"base_model.model.transformer.h.0.attn.c_attn.lora_B.weight", {96, 4}},
        {"base_model.model.transformer.h.1.attn.c_attn.lora_A.weight", {4, 32}},
        {"base_model.model.transformer.h.1.attn.c_attn.lora_B.weight", {96, 4}},
    };
    EXPECT_EQ(file_entries(tmp.file("adapter_model.safetensors")), want);
    nlohmann::json j = read_json_file(tmp.file("adapter_config.json"));
    EXPECT_EQ(j["fan_in_fan_out"], true);  // PEFT sets it for Conv1D
  }
}

TEST(PeftAdapterIO, RoundTripIdenticalOutputsAndBytes) {
  for (const char* golden : {"neox_parallel", "llama_gqa_untied", "gpt2"}) {
    SCOPED_TRACE(golden);
    Model m = golden_base(golden);
    Rng rng(5);
    LoraConfig c;
    c.r = 3;
    c.lora_alpha = 6;
    c.use_rslora = true;
    c.target_modules = ModuleSelector::pattern("all-linear");
    c.rank_pattern = {{"dense", 2}, {"o_proj", 2}, {"c_proj", 2}};
    c.alpha_pattern = {{"mlp\\..*", 5}};
    apply_lora(m, c, rng);
    randomise_adapters(m, 9);
    PeftTempDir tmp;
    save_adapter(m, c, tmp.path);

    SafetensorsFile g = open_safetensors(golden_dir(golden) + "/golden.safetensors");
    GoldenBatch b = read_batch(g);
    RunResult ref = run_batch(m, b, false);
    Model fresh = golden_base(golden);
    LoraConfig loaded = load_adapter(fresh, tmp.path);
    ASSERT_EQ(lora_modules(fresh).size(), lora_modules(m).size());
    for (size_t i = 0; i < lora_modules(m).size(); i++) {
      EXPECT_EQ(lora_modules(fresh)[i]->lora.r, lora_modules(m)[i]->lora.r);
      EXPECT_EQ(lora_modules(fresh)[i]->lora.scaling, lora_modules(m)[i]->lora.scaling);
    }
    RunResult got = run_batch(fresh, b, false);
    EXPECT_EQ(got.logits, ref.logits);
    EXPECT_EQ(got.loss, ref.loss);
    PeftTempDir again;
    save_adapter(fresh, loaded, again.path);
    EXPECT_EQ(read_file(again.file("adapter_model.safetensors")), read_file(tmp.file("adapter_model.safetensors")));
    EXPECT_EQ(read_file(again.file("adapter_config.json")), read_file(tmp.file("adapter_config.json")));
  }
}

TEST(PeftAdapterIO, GoldenFoldersResaveIdentically) {
  for (const char* name : {"neox_lora", "llama_lora", "gpt2_lora"}) {
    SCOPED_TRACE(name);
    Model m = load_model(golden_dir(name));
    std::vector<std::string> warnings;
    LoraConfig c = load_adapter(m, golden_dir(name), true, &warnings);
    EXPECT_TRUE(warnings.empty());
    PeftTempDir tmp;
    c.base_model_name_or_path = nlohmann::json::parse(read_file(golden_dir(name) + "/adapter_config.json"))["base_model_name_or_path"];
    save_adapter(m, c, tmp.path);
    // The tensors file is byte-identical to the one the PyTorch script wrote.
    EXPECT_EQ(read_file(tmp.file("adapter_model.safetensors")), read_file(golden_dir(name) + "/adapter_model.safetensors"));
    // The config is PEFT 0.13's text without its peft_version line.
    std::string golden_text = read_file(golden_dir(name) + "/adapter_config.json");
    size_t pv = golden_text.find("  \"peft_version\"");
    golden_text.erase(pv, golden_text.find('\n', pv) + 1 - pv);
    EXPECT_EQ(read_file(tmp.file("adapter_config.json")), golden_text);
  }
}

TEST(PeftAdapterIO, AcceptsDefaultAdapterNameInKeys) {
  PeftTempDir tmp;
  SafetensorsFile src = open_safetensors(golden_dir("llama_lora") + "/adapter_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> renamed;
  for (const std::string& n : src.names()) {
    std::string k = n;
    k.replace(k.find(".weight"), 7, ".default.weight");  // "...lora_A.default.weight"
    renamed.push_back({k, src.get(n)});
  }
  write_safetensors(tmp.file("adapter_model.safetensors"), renamed, {{"format", "pt"}});
  copy_folder_files(golden_dir("llama_lora"), tmp.path, {"adapter_config.json"});
  Model a = load_model(golden_dir("llama_lora"));
  load_adapter(a, tmp.path);
  Model b = load_model(golden_dir("llama_lora"));
  load_adapter(b, golden_dir("llama_lora"));
  for (size_t i = 0; i < lora_modules(a).size(); i++) {
    const Tensor& x = lora_modules(a)[i]->lora.B->value;
    const Tensor& y = lora_modules(b)[i]->lora.B->value;
    EXPECT_EQ(std::vector<float>(x.f32(), x.f32() + x.numel()), std::vector<float>(y.f32(), y.f32() + y.numel()));
  }
}

TEST(PeftAdapterIO, BiasAndModulesToSave) {
  Model m = golden_base("neox_parallel");
  Rng rng(3);
  LoraConfig c = cfg_r4({"query_key_value"}, 8);
  c.bias = LoraBias::LoraOnly;
  c.modules_to_save = std::vector<std::string>{"embed_out"};
  apply_lora(m, c, rng);
  EXPECT_TRUE(m.find("gpt_neox.layers.0.attention.query_key_value.bias")->trainable);
  EXPECT_FALSE(m.find("gpt_neox.layers.0.attention.dense.bias")->trainable);
  EXPECT_TRUE(m.find("embed_out.weight")->trainable);
  // "Train": change the saved module and a bias.
  m.find("embed_out.weight")->value.f32()[0] += 1.0f;
  m.find("gpt_neox.layers.1.attention.query_key_value.bias")->value.f32()[0] += 1.0f;
  randomise_adapters(m, 4);
  PeftTempDir tmp;
  save_adapter(m, c, tmp.path);
  std::vector<std::string> names;
  for (auto& [n, s] : file_entries(tmp.file("adapter_model.safetensors"))) names.push_back(n);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "base_model.model.embed_out.weight",
                       "base_model.model.gpt_neox.layers.0.attention.query_key_value.bias",
                       "base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_A.weight",
                       "base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_B.weight",
                       "base_model.model.gpt_neox.layers.1.attention.query_key_value.bias",
                       "base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_A.weight",
                       "base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight",
                   }));
  nlohmann::json j = read_json_file(tmp.file("adapter_config.json"));
  EXPECT_EQ(j["bias"], "lora_only");
  EXPECT_EQ(j["modules_to_save"], nlohmann::json({"embed_out"}));

  SafetensorsFile g = open_safetensors(golden_dir("neox_parallel") + "/golden.safetensors");
  GoldenBatch b = read_batch(g);
  RunResult ref = run_batch(m, b, false);
  Model fresh = golden_base("neox_parallel");
  load_adapter(fresh, tmp.path);
  EXPECT_EQ(run_batch(fresh, b, false).logits, ref.logits);

  // bias="all": every bias of the model is saved.
  Model m2 = golden_base("neox_parallel");
  c.bias = LoraBias::All;
  c.modules_to_save.reset();
  apply_lora(m2, c, rng);
  int biases = 0;
  for (auto& [n, t] : adapter_state_dict(m2, c)) biases += n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
  EXPECT_EQ(biases, 2 * 6 + 1);  // per layer: 2 LayerNorms + 4 linears; final LayerNorm
}

TEST(PeftAdapterIO, LoadErrorsNameFileAndKey) {
  const std::string golden = golden_dir("neox_lora");
  SafetensorsFile src = open_safetensors(golden + "/adapter_model.safetensors");
  auto write_variant = [&](const std::string& dir, const std::function<void(std::vector<std::pair<std::string, Tensor>>&)>& edit,
                           const std::string& config_text) {
    std::vector<std::pair<std::string, Tensor>> t;
    for (const std::string& n : src.names()) t.push_back({n, src.get(n)});
    edit(t);
    write_safetensors(dir + "/adapter_model.safetensors", t, {{"format", "pt"}});
    write_file_atomic(dir + "/adapter_config.json", config_text);
  };
  const std::string cfg_text = read_file(golden + "/adapter_config.json");
  const std::string missing_key = "base_model.model.gpt_neox.layers.1.attention.query_key_value.lora_B.weight";

  PeftTempDir d1;
  write_variant(d1.path, [&](auto& t) { t.pop_back(); }, cfg_text);
  Model m = load_model(golden);
  const size_t n_params = m.params.size();
  std::string e = error_of([&] { load_adapter(m, d1.path); });
  EXPECT_EQ(e, d1.path + "/adapter_model.safetensors: tensor '" + missing_key + "' is missing");
  // The model is unchanged after a failed load.
  EXPECT_EQ(m.params.size(), n_params);
  EXPECT_TRUE(lora_modules(m).empty());
  for (const Param& p : m.params) EXPECT_FALSE(p.grad.defined());

  PeftTempDir d2;
  write_variant(d2.path, [&](auto& t) { t.push_back({"base_model.model.gpt_neox.layers.0.mlp.dense_h_to_4h.lora_A.weight", t[0].second}); },
                cfg_text);
  e = error_of([&] { load_adapter(m, d2.path); });
  EXPECT_NE(e.find("adapter_model.safetensors: tensor 'base_model.model.gpt_neox.layers.0.mlp.dense_h_to_4h.lora_A.weight' "
                   "does not belong to this adapter"),
            std::string::npos)
      << e;

  PeftTempDir d3;
  std::string r8 = cfg_text;
  r8.replace(r8.find("\"r\": 4"), 6, "\"r\": 8");
  write_variant(d3.path, [](auto&) {}, r8);
  e = error_of([&] { load_adapter(m, d3.path); });
  EXPECT_NE(e.find("tensor 'base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_A.weight' has shape [4, 64] but "
                   "[8, 64] is expected"),
            std::string::npos)
      << e;

  PeftTempDir d4;
  std::string unknown = cfg_text;
  unknown.replace(unknown.find("{\n"), 2, "{\n  \"zz_new_option\": 1,\n");
  write_variant(d4.path, [](auto&) {}, unknown);
  std::vector<std::string> warnings;
  load_adapter(m, d4.path, false, &warnings);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("unknown field 'zz_new_option' ignored"), std::string::npos);
  for (const Param& p : m.params) EXPECT_FALSE(p.trainable) << p.name;  // trainable=false: inference
  e = error_of([&] { load_adapter(m, d4.path); });
  EXPECT_NE(e.find("already has LoRA adapters"), std::string::npos) << e;

  PeftTempDir d5;
  e = error_of([&] { load_adapter(m, d5.path); });
  EXPECT_EQ(e, d5.path + ": no adapter_config.json (not a PEFT adapter folder)");
}
