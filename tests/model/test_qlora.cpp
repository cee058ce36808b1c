// QLoRA / k-bit base (hf-semantics §3): gradients with a quantized base equal LoRA gradients on the
// dequantized weights, the bitsandbytes serialization round trip (in process and through the CLI),
// training from a quantized folder, merge into a k-bit base, and that the f32 copies are freed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "data/loader.h"
#include "golden_util.h"
#include "io/safetensors.h"
#include "model/decoder.h"
#include "model/model.h"
#include "model/quantize_model.h"
#include "peft/lora.h"
#include "train/trainer.h"

using namespace llmtune;
using namespace llmtune::testing;
namespace fs = std::filesystem;

namespace {

struct RunResult {
  double loss = 0;
  std::vector<std::pair<std::string, std::vector<float>>> grads;  // trainable params, Model::params order
};

// One forward + LM loss + backward on fixed random ids.
RunResult run(Model& m, int64_t B = 2, int64_t T = 9) {
  m.zero_grads();
  Workspace ws;
  const LossSum ls = forward_backward_on_random_ids(m, ws, B, T, 1.f / float(B * (T - 1)));
  RunResult r;
  r.loss = ls.sum;
  for (auto& p : m.params)
    if (p.trainable && p.grad.defined()) r.grads.push_back({p.name, {p.grad.f32(), p.grad.f32() + p.grad.numel()}});
  return r;
}

// LoRA on every linear of the blocks, with B filled too (B = 0 would leave A's gradient zero).
void add_lora(Model& m, bool bias_all = false) {
  LoraConfig c;
  c.r = 4;
  c.lora_alpha = 8;
  c.target_modules = ModuleSelector::pattern("all-linear");
  if (bias_all) c.bias = LoraBias::All;
  Rng rng(1);
  apply_lora(m, c, rng);
  Rng brng(9);
  for (LinearModule* l : lora_modules(m)) {
    float* Bv = l->lora.B->value.f32();
    for (int64_t i = 0; i < l->lora.B->value.numel(); i++) Bv[i] = 0.05f * brng.normal();
  }
}

// Model B of the comparison: the same checkpoint with every block linear replaced by A's dequantized
// weight in plain f32, everything frozen (then the same LoRA).
Model dequantized_twin(const std::string& dir, Model& quantized) {
  Model m = load_model(dir);
  for (size_t b = 0; b < m.blocks.size(); b++) {
    auto ls = m.blocks[b].linears();
    auto qs = quantized.blocks[b].linears();
    for (size_t i = 0; i < ls.size(); i++) ls[i]->weight->value = dequantized_weight(*qs[i]);
  }
  for (auto& p : m.params) p.trainable = false;
  m.sync_grad_buffers();
  return m;
}

void expect_same_grads(const RunResult& a, const RunResult& b, double tol) {
  EXPECT_NEAR(a.loss, b.loss, tol * std::fabs(b.loss));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  ASSERT_GT(a.grads.size(), 0u);
  for (size_t i = 0; i < a.grads.size(); i++) {
    ASSERT_EQ(a.grads[i].first, b.grads[i].first);
    const auto& ga = a.grads[i].second;
    const auto& gb = b.grads[i].second;
    double ref = 0;
    for (float v : gb) ref = std::max(ref, double(std::fabs(v)));
    EXPECT_GT(ref, 0) << a.grads[i].first;  // every compared gradient is live
    EXPECT_LE(rel_err(ga.data(), gb.data(), int64_t(ga.size())), tol) << a.grads[i].first;
  }
}

std::string temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("llmtune_qlora_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

QuantizeOptions nf4_dq() {
  QuantizeOptions o;
  o.load_in_4bit = true;
  o.bnb_4bit_quant_type = Quant4Type::NF4;
  o.bnb_4bit_use_double_quant = true;
  return o;
}

}  // namespace

// QLoRA gradients (quantized base, f32 tiles) equal LoRA gradients on the dequantized weights.
TEST(QLora, GradientsEqualLoraOnDequantizedWeights) {
  QuantizeOptions fp4;
  fp4.load_in_4bit = true;  // transformers' default quant type: fp4
  QuantizeOptions int8;
  int8.load_in_8bit = true;
  struct Case {
    const char* arch;
    QuantizeOptions q;
    bool bias_all;
  };
  for (const Case& c : {Case{"llama_gqa_untied", nf4_dq(), false}, Case{"gpt2", fp4, true},
                        Case{"qwen2_bias", nf4_dq(), true}, Case{"neox_parallel", int8, false}}) {
    SCOPED_TRACE(c.arch);
    const std::string dir = golden_dir(c.arch);
    Model a = load_model(dir);
    std::string summary = quantize_model(a, c.q);
    EXPECT_NE(summary.find("quantized base"), std::string::npos);
    Model b = dequantized_twin(dir, a);
    add_lora(a, c.bias_all);
    add_lora(b, c.bias_all);
    expect_same_grads(run(a), run(b), 1e-5);
    // The quantized weights never get a gradient buffer.
    for (auto& blk : a.blocks)
      for (LinearModule* l : blk.linears()) {
        EXPECT_TRUE(l->quantized());
        EXPECT_FALSE(l->weight->grad.defined());
        EXPECT_FALSE(l->weight->trainable);
      }
  }
}

// bf16 tiles (bnb_4bit_compute_dtype bfloat16) stay close to the f32 result.
TEST(QLora, Bf16ComputeDtypeClose) {
  const std::string dir = golden_dir("llama_gqa_untied");
  QuantizeOptions q = nf4_dq();
  q.compute_bf16 = true;
  Model a = load_model(dir);
  quantize_model(a, q);
  Model b = dequantized_twin(dir, a);
  for (auto& blk : a.blocks)
    for (LinearModule* l : blk.linears()) EXPECT_TRUE(l->qopt.bf16);
  add_lora(a);
  add_lora(b);
  RunResult ra = run(a), rb = run(b);
  EXPECT_NEAR(ra.loss, rb.loss, 2e-2 * std::fabs(rb.loss));
  EXPECT_NE(ra.loss, rb.loss);  // the bf16 path really ran
}

// Memory: the f32 values of quantized weights are released (shape kept) and the packed storage is
// about an eighth of them.
TEST(QLora, F32CopiesAreFreed) {
  Model m = load_model(golden_dir("llama_gqa_untied"));
  const int64_t before = f32_param_bytes(m);
  int64_t linear_elems = 0;
  for (auto& blk : m.blocks)
    for (LinearModule* l : blk.linears()) linear_elems += l->in * l->out;
  const int64_t params_before = m.num_params();
  quantize_model(m, nf4_dq());
  EXPECT_EQ(f32_param_bytes(m), before - 4 * linear_elems);
  EXPECT_EQ(m.num_params(), params_before);  // logical parameter count unchanged
  const int64_t qbytes = quantized_weight_bytes(m);
  EXPECT_GE(qbytes, linear_elems / 2);
  EXPECT_LE(qbytes, linear_elems / 2 + linear_elems / 64 + 64 * 64);
  for (auto& blk : m.blocks)
    for (LinearModule* l : blk.linears()) {
      EXPECT_FALSE(l->weight->value.defined());
      EXPECT_EQ(l->weight->value.shape, (Shape{l->out, l->in}));
    }
  EXPECT_TRUE(m.lm_head.weight->value.defined());  // the head and embeddings stay f32
  EXPECT_FALSE(m.lm_head.quantized());
  EXPECT_TRUE(m.embed->value.defined());
  // Quantizing while loading gives the same model as load + quantize_model.
  Model s = load_model_quantized(golden_dir("llama_gqa_untied"), nf4_dq());
  for (size_t b = 0; b < m.blocks.size(); b++) {
    auto x = m.blocks[b].linears(), y = s.blocks[b].linears();
    for (size_t i = 0; i < x.size(); i++) {
      EXPECT_EQ(x[i]->q4->packed, y[i]->q4->packed);
      EXPECT_EQ(x[i]->q4->qabsmax, y[i]->q4->qabsmax);
    }
  }
  // The streaming random model holds the same values as random_model, quantized.
  ModelConfig cfg = m.cfg;
  Model r = random_model(cfg, 4, 0.02f);
  Model rq = random_model_quantized(cfg, 4, 0.02f, nf4_dq());
  quantize_model(r, nf4_dq());
  for (size_t b = 0; b < r.blocks.size(); b++) {
    auto x = r.blocks[b].linears(), y = rq.blocks[b].linears();
    for (size_t i = 0; i < x.size(); i++) EXPECT_EQ(x[i]->q4->packed, y[i]->q4->packed);
  }
  EXPECT_EQ(std::memcmp(r.embed->value.data, rq.embed->value.data, r.embed->value.nbytes()), 0);
}

TEST(QLora, OptionErrors) {
  Model m = load_model(golden_dir("llama_gqa_untied"));
  QuantizeOptions both;
  both.load_in_4bit = both.load_in_8bit = true;
  EXPECT_THROW(quantize_model(m, both), llmtune::Error);
  EXPECT_THROW(compute_dtype_is_bf16("float16"), llmtune::Error);
  EXPECT_TRUE(compute_dtype_is_bf16("bfloat16"));
  // LoRA first, then quantize: refused with advice.
  LoraConfig c;
  c.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(1);
  apply_lora(m, c, rng);
  try {
    quantize_model(m, nf4_dq());
    ADD_FAILURE() << "expected an error";
  } catch (const llmtune::Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantize the base first"), std::string::npos);
  }
}

// The bitsandbytes layout: key names, dtypes, shapes, the quant_state JSON, config.json's
// quantization_config; reloading gives the same quantized weights bit for bit.
TEST(QLora, SerializationRoundTrip) {
  for (bool dq : {true, false}) {
    SCOPED_TRACE(dq ? "nf4 + double quant" : "fp4");
    QuantizeOptions q;
    q.load_in_4bit = true;
    q.bnb_4bit_quant_type = dq ? Quant4Type::NF4 : Quant4Type::FP4;
    q.bnb_4bit_use_double_quant = dq;
    q.compute_bf16 = dq;
    const std::string src = golden_dir("llama_gqa_untied");
    Model m = load_model_quantized(src, q);
    const std::string dir = temp_dir(dq ? "ser_dq" : "ser");
    save_quantized_model(m, q, dir);
    SafetensorsFile f = open_safetensors(dir + "/model.safetensors");
    const LinearModule& l = m.blocks[0].q;
    const std::string p = "model.layers.0.self_attn.q_proj.weight";
    const int64_t n = l.in * l.out, nb = (n + 63) / 64;
    const std::string type = dq ? "nf4" : "fp4";
    auto expect_tensor = [&](const std::string& name, DType dt, Shape shape) {
      ASSERT_TRUE(f.has(name)) << name;
      Tensor t = f.get(name);
      EXPECT_EQ(t.dtype, dt) << name;
      EXPECT_EQ(t.shape, shape) << name;
    };
    expect_tensor(p, DType::U8, {(n + 1) / 2, 1});
    expect_tensor(p + ".quant_map", DType::F32, {16});
    expect_tensor(p + ".absmax", dq ? DType::U8 : DType::F32, {nb});
    if (dq) {
      expect_tensor(p + ".nested_absmax", DType::F32, {(nb + 255) / 256});
      expect_tensor(p + ".nested_quant_map", DType::F32, {256});
    } else {
      EXPECT_FALSE(f.has(p + ".nested_absmax"));
    }
    const std::string sk = p + ".quant_state.bitsandbytes__" + type;
    ASSERT_TRUE(f.has(sk));
    Tensor js = f.get(sk);
    EXPECT_EQ(js.dtype, DType::U8);
    EXPECT_EQ(js.ndim(), 1);
    std::string json_text(static_cast<const char*>(js.data), js.nbytes());
    std::string want = "{\"quant_type\": \"" + type + "\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [" +
                       std::to_string(l.out) + ", " + std::to_string(l.in) + "]";
    EXPECT_EQ(json_text.substr(0, want.size()), want);
    if (dq) EXPECT_NE(json_text.find(", \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": "),
                      std::string::npos) << json_text;
    // Unquantized tensors stay f32 under their HF names.
    expect_tensor("model.embed_tokens.weight", DType::F32, m.embed->value.shape);
    expect_tensor("lm_head.weight", DType::F32, m.lm_head.weight->value.shape);
    expect_tensor("model.layers.0.input_layernorm.weight", DType::F32, {m.cfg.hidden_size});
    // config.json
    std::ifstream cf(dir + "/config.json");
    nlohmann::json cfg = nlohmann::json::parse(cf);
    const auto& qc = cfg["quantization_config"];
    EXPECT_EQ(qc["quant_method"], "bitsandbytes");
    EXPECT_EQ(qc["load_in_4bit"], true);
    EXPECT_EQ(qc["load_in_8bit"], false);
    EXPECT_EQ(qc["bnb_4bit_quant_type"], type);
    EXPECT_EQ(qc["bnb_4bit_use_double_quant"], dq);
    EXPECT_EQ(qc["bnb_4bit_compute_dtype"], dq ? "bfloat16" : "float32");
    EXPECT_EQ(qc["bnb_4bit_quant_storage"], "uint8");
    // Reload: same codes, scales and dequantized values, bit for bit.
    Model r = load_model(dir);
    EXPECT_TRUE(is_quantized(r));
    for (size_t b = 0; b < m.blocks.size(); b++) {
      auto x = m.blocks[b].linears(), y = r.blocks[b].linears();
      ASSERT_EQ(x.size(), y.size());
      for (size_t i = 0; i < x.size(); i++) {
        ASSERT_TRUE(y[i]->q4) << y[i]->name;
        EXPECT_EQ(y[i]->qopt.bf16, dq);
        EXPECT_EQ(x[i]->q4->packed, y[i]->q4->packed);
        EXPECT_EQ(x[i]->q4->absmax, y[i]->q4->absmax);
        EXPECT_EQ(x[i]->q4->qabsmax, y[i]->q4->qabsmax);
        EXPECT_EQ(x[i]->q4->absmax2, y[i]->q4->absmax2);
        EXPECT_EQ(x[i]->q4->offset, y[i]->q4->offset);
        Tensor dx = dequantized_weight(*x[i]), dy = dequantized_weight(*y[i]);
        EXPECT_EQ(std::memcmp(dx.data, dy.data, dx.nbytes()), 0) << y[i]->name;
      }
    }
    EXPECT_EQ(std::memcmp(r.embed->value.data, m.embed->value.data, m.embed->value.nbytes()), 0);
    for (auto& p2 : r.params) EXPECT_FALSE(p2.trainable);
    fs::remove_all(dir);
  }
}

// A damaged quant_state is a clear error, not a crash.
TEST(QLora, DamagedFolderErrors) {
  Model m = load_model_quantized(golden_dir("llama_gqa_untied"), nf4_dq());
  const std::string dir = temp_dir("damaged");
  save_quantized_model(m, nf4_dq(), dir);
  std::ifstream cf(dir + "/config.json");
  nlohmann::json cfg = nlohmann::json::parse(cf);
  cfg["quantization_config"]["quant_method"] = "gptq";
  std::ofstream(dir + "/config.json") << cfg.dump();
  try {
    load_model(dir);
    ADD_FAILURE() << "expected an error";
  } catch (const llmtune::Error& e) {
    EXPECT_NE(std::string(e.what()).find("quant_method"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// Merging an adapter into a k-bit base dequantizes that module (exact) and adds ΔW; save_model then
// writes a plain f32 folder without quantization_config.
TEST(QLora, MergeIntoQuantizedBase) {
  const std::string dir = golden_dir("llama_gqa_untied");
  Model a = load_model(dir);
  quantize_model(a, nf4_dq());
  Model b = dequantized_twin(dir, a);
  add_lora(a);
  add_lora(b);
  merge_and_unload(a);
  merge_and_unload(b);
  for (size_t i = 0; i < a.blocks.size(); i++) {
    auto x = a.blocks[i].linears(), y = b.blocks[i].linears();
    for (size_t k = 0; k < x.size(); k++) {
      EXPECT_FALSE(x[k]->quantized());
      EXPECT_EQ(std::memcmp(x[k]->weight->value.data, y[k]->weight->value.data, y[k]->weight->value.nbytes()), 0);
    }
  }
  const std::string out = temp_dir("merged");
  save_model(a, out);
  Model r = load_model(out);
  EXPECT_FALSE(is_quantized(r));
  fs::remove_all(out);
}

// Training straight from a quantized folder: a few Trainer steps, the loss goes down, the base
// stays untouched.
TEST(QLora, TrainsFromQuantizedFolder) {
  const std::string src = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";
  const std::string dir = temp_dir("trainsrc");
  {
    Model m = load_model_quantized(src, nf4_dq());
    save_quantized_model(m, nf4_dq(), dir);
  }
  Model m = load_model(dir);
  ASSERT_TRUE(is_quantized(m));
  std::vector<uint8_t> packed0 = m.blocks[0].q.q4->packed;
  LoraConfig c;
  c.r = 8;
  c.lora_alpha = 16;
  c.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(1);
  apply_lora(m, c, rng);
  // A tiny repeated sequence: easy to fit.
  std::vector<Sample> samples;
  Rng srng(3);
  Sample s;
  for (int t = 0; t < 24; t++) s.ids.push_back(int32_t(3 + srng.below(100)));
  s.labels = s.ids;
  for (int i = 0; i < 4; i++) samples.push_back(s);
  LoaderOptions lo;
  lo.batch_size = 2;
  lo.seed = 5;
  lo.pad_id = 0;
  DataLoader loader(samples, lo);
  TrainingArguments args;
  args.output_dir = temp_dir("trainout");
  args.max_steps = 6;
  args.per_device_train_batch_size = 2;
  args.learning_rate = 2e-2;
  args.logging_steps = 1;
  args.save_steps = 1000;
  std::vector<double> losses;
  TrainerHooks hooks;
  hooks.save_model = [](const std::string&) {};
  hooks.on_log = [&](const nlohmann::json& e) {
    if (e.value("type", "") == "train") losses.push_back(e.value("loss", 0.0));
  };
  Trainer t(m, loader, nullptr, args, hooks);
  t.train();
  ASSERT_GE(losses.size(), 4u);
  EXPECT_LT(losses.back(), losses.front() * 0.9);
  EXPECT_EQ(m.blocks[0].q.q4->packed, packed0);
  fs::remove_all(dir);
  fs::remove_all(args.output_dir);
}

// The CLI: `llmtune quantize` writes the folder (tokenizer files copied) and reloads to the same
// weights as in-process quantization; training a quantized base with --method full is refused.
TEST(QLora, QuantizeCli) {
  const std::string src = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";
  if (!fs::exists(LLMTUNE_BINARY)) GTEST_SKIP() << "no llmtune binary in this (LLMTUNE_ONLY) build";
  const std::string out = temp_dir("cli");
  std::string cmd = std::string(LLMTUNE_BINARY) + " quantize --model '" + src + "' --output '" + out +
                    "' --load_in_4bit --bnb_4bit_quant_type nf4 --bnb_4bit_use_double_quant --num_threads 1 >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  EXPECT_TRUE(fs::exists(out + "/tokenizer.model"));
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  Model r = load_model(out);
  Model m = load_model_quantized(src, nf4_dq());
  for (size_t b = 0; b < m.blocks.size(); b++) {
    auto x = m.blocks[b].linears(), y = r.blocks[b].linears();
    for (size_t i = 0; i < x.size(); i++) EXPECT_EQ(x[i]->q4->packed, y[i]->q4->packed);
  }
  // Without --load_in_4bit: an error naming the flag.
  std::string bad = std::string(LLMTUNE_BINARY) + " quantize --model '" + src + "' --output '" + out +
                    "_x' 2>&1";
  FILE* p = ::popen(bad.c_str(), "r");
  std::string text;
  char buf[512];
  size_t k;
  while ((k = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, k);
  EXPECT_NE(::pclose(p), 0);
  EXPECT_NE(text.find("--load_in_4bit"), std::string::npos) << text;
  fs::remove_all(out);
}
