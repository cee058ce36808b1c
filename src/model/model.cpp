// Model construction: parameter names and shapes per architecture, loading from a HF folder,
// random initialisation, saving.
#include "model/model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/hf_checkpoint.h"
#include "io/safetensors.h"
#include "model/quantize_model.h"

namespace llmtune {

std::vector<LinearModule*> Block::linears() {
  std::vector<LinearModule*> out;
  for (LinearModule* l : {&qkv, &q, &k, &v, &o, &fc_in, &fc_out, &gate, &up, &down})
    if (l->weight) out.push_back(l);
  return out;
}

Param* Model::find(const std::string& name) {
  auto it = by_name.find(name);
  return it == by_name.end() ? nullptr : it->second;
}

Param& Model::add_param(const std::string& name, Tensor value) {
  if (by_name.count(name)) fail("internal: duplicate parameter ", name);
  params.push_back(Param{name, std::move(value), Tensor{}, false});
  by_name[name] = &params.back();
  return params.back();
}

std::vector<LinearModule*> Model::linears() {
  std::vector<LinearModule*> out;
  for (auto& b : blocks)
    for (auto* l : b.linears()) out.push_back(l);
  if (lm_head.weight) out.push_back(&lm_head);  // absent in sequence-classification models
  return out;
}

int64_t Model::num_params() const {
  int64_t n = 0;
  for (auto& p : params) n += p.value.numel();
  return n;
}

void Model::sync_grad_buffers() {
  for (auto& p : params) {
    if (p.trainable && !p.grad.defined()) p.grad = Tensor::zeros(p.value.shape, DType::F32);
    if (!p.trainable) p.grad = Tensor{};
  }
}

void Model::zero_grads() {
  for (auto& p : params)
    if (p.grad.defined()) std::memset(p.grad.data, 0, p.grad.nbytes());
}

namespace {

// Describes one parameter to create: in-memory name and shape.
struct ParamSpec {
  std::string name;
  Shape shape;
};

struct Builder {
  Model& m;
  std::vector<ParamSpec> specs;
  bool allocate = true;  // false: shapes only (filled one by one by the loader / streaming paths)

  Param* add(const std::string& name, Shape shape) {
    specs.push_back({name, shape});
    Tensor t;
    t.shape = shape;
    return &m.add_param(name, allocate ? Tensor::zeros(shape) : t);
  }
  void linear(LinearModule& l, const std::string& module, int64_t in, int64_t out, bool bias, bool conv1d) {
    l.name = module;
    l.in = in;
    l.out = out;
    l.transposed = conv1d;
    l.weight = add(module + ".weight", conv1d ? Shape{in, out} : Shape{out, in});
    l.bias = bias ? add(module + ".bias", {out}) : nullptr;
  }
  void norm(NormModule& n, const std::string& module, int64_t E, bool bias) {
    n.weight = add(module + ".weight", {E});
    n.bias = bias ? add(module + ".bias", {E}) : nullptr;
  }
};

void build(Model& m, bool allocate = true) {
  const ModelConfig& c = m.cfg;
  Builder b{m, {}, allocate};
  const int64_t E = c.hidden_size, V = c.vocab_size, I = c.intermediate_size;
  const bool ln_bias = c.norm == NormKind::LayerNorm;
  m.blocks.resize(size_t(c.num_layers));
  switch (c.arch) {
    case Arch::GPTNeoX: {
      m.embed = b.add("gpt_neox.embed_in.weight", {V, E});
      for (int64_t i = 0; i < c.num_layers; i++) {
        Block& bl = m.blocks[size_t(i)];
        std::string p = cat("gpt_neox.layers.", i, ".");
        b.norm(bl.ln1, p + "input_layernorm", E, true);
        b.norm(bl.ln2, p + "post_attention_layernorm", E, true);
        b.linear(bl.qkv, p + "attention.query_key_value", E, 3 * E, c.qkv_bias, false);
        b.linear(bl.o, p + "attention.dense", E, E, c.o_bias, false);
        b.linear(bl.fc_in, p + "mlp.dense_h_to_4h", E, I, true, false);
        b.linear(bl.fc_out, p + "mlp.dense_4h_to_h", I, E, true, false);
      }
      b.norm(m.final_norm, "gpt_neox.final_layer_norm", E, true);
      break;
    }
    case Arch::Llama:
    case Arch::Qwen2: {
      m.embed = b.add("model.embed_tokens.weight", {V, E});
      for (int64_t i = 0; i < c.num_layers; i++) {
        Block& bl = m.blocks[size_t(i)];
        std::string p = cat("model.layers.", i, ".");
        b.norm(bl.ln1, p + "input_layernorm", E, false);
        b.norm(bl.ln2, p + "post_attention_layernorm", E, false);
        b.linear(bl.q, p + "self_attn.q_proj", E, c.q_dim(), c.qkv_bias, false);
        b.linear(bl.k, p + "self_attn.k_proj", E, c.kv_dim(), c.qkv_bias, false);
        b.linear(bl.v, p + "self_attn.v_proj", E, c.kv_dim(), c.qkv_bias, false);
        b.linear(bl.o, p + "self_attn.o_proj", c.q_dim(), E, c.o_bias, false);
        b.linear(bl.gate, p + "mlp.gate_proj", E, I, c.mlp_bias, false);
        b.linear(bl.up, p + "mlp.up_proj", E, I, c.mlp_bias, false);
        b.linear(bl.down, p + "mlp.down_proj", I, E, c.mlp_bias, false);
      }
      b.norm(m.final_norm, "model.norm", E, false);
      break;
    }
    case Arch::GPT2: {
      m.embed = b.add("transformer.wte.weight", {V, E});
      m.pos_embed = b.add("transformer.wpe.weight", {c.max_position_embeddings, E});
      for (int64_t i = 0; i < c.num_layers; i++) {
        Block& bl = m.blocks[size_t(i)];
        std::string p = cat("transformer.h.", i, ".");
        b.norm(bl.ln1, p + "ln_1", E, true);
        b.norm(bl.ln2, p + "ln_2", E, true);
        b.linear(bl.qkv, p + "attn.c_attn", E, 3 * E, true, true);
        b.linear(bl.o, p + "attn.c_proj", E, E, true, true);
        b.linear(bl.fc_in, p + "mlp.c_fc", E, I, true, true);
        b.linear(bl.fc_out, p + "mlp.c_proj", I, E, true, true);
      }
      b.norm(m.final_norm, "transformer.ln_f", E, true);
      break;
    }
  }
  if (c.is_seq_cls) {
    // *ForSequenceClassification: no LM head; the score head reads the final hidden states (model/heads.h).
    b.add("score.weight", {c.num_labels, E});
  } else {
    const std::string head = c.arch == Arch::GPTNeoX ? "embed_out" : "lm_head";
    if (c.tie_word_embeddings) {
      m.lm_head = LinearModule{};
      m.lm_head.name = head, m.lm_head.weight = m.embed, m.lm_head.in = E, m.lm_head.out = V;
    } else {
      b.linear(m.lm_head, head, E, V, false, false);
    }
  }
  (void)ln_bias;
  if (c.use_rope) m.rope = rope_table(c.rotary_dim, c.max_position_embeddings, c.rope_theta, c.rope_scaling);
}

}  // namespace

std::string file_name_for(const ModelConfig& cfg, const std::string& name) {
  // GPT2ForSequenceClassification files keep the prefix (what its save_pretrained writes): without it,
  // HF would load the file into the base GPT2Model only and re-initialise score.weight.
  if (cfg.arch == Arch::GPT2 && !cfg.is_seq_cls && name.rfind("transformer.", 0) == 0) return name.substr(12);
  return name;
}

std::vector<std::pair<std::string, Shape>> expected_tensors(const ModelConfig& cfg) {
  Model m;
  m.cfg = cfg;
  build(m, false);  // shapes only: the preflight asks this of 70B-sized configs
  std::vector<std::pair<std::string, Shape>> out;
  for (auto& p : m.params) out.push_back({file_name_for(cfg, p.name), p.value.shape});
  return out;
}

Model model_skeleton(const ModelConfig& cfg) {
  Model m;
  m.cfg = cfg;
  build(m, false);
  return m;
}

Model load_model(const std::string& dir, const ParamLoadedFn& on_loaded) {
  Model m;
  m.cfg = load_model_config(dir);
  m.source_dir = dir;
  build(m, false);  // no zero-filled copies: each value is read straight from the checkpoint
  CheckpointFiles ck = open_checkpoint(dir);
  if (m.cfg.raw.contains("quantization_config")) {  // a bitsandbytes-serialized k-bit folder
    load_bnb_quantized_weights(m, ck);
    return m;
  }
  const std::string arch_name = m.cfg.architecture.empty() ? m.cfg.model_type : m.cfg.architecture;
  for (auto& p : m.params) {
    std::string fname = file_name_for(m.cfg, p.name);
    std::string found;
    if (ck.has(fname)) found = fname;
    else if (ck.has(p.name)) found = p.name;
    else if (m.cfg.arch == Arch::GPT2 && p.name.rfind("transformer.", 0) == 0 && ck.has(p.name.substr(12)))
      found = p.name.substr(12);  // either GPT-2 naming is accepted
    if (found.empty())
      fail(dir, ": tensor '", fname, "' is missing from the checkpoint (needed by ", arch_name, ")");
    Tensor t = ck.get_f32(found);
    if (t.shape != p.value.shape)
      fail(dir, ": tensor '", found, "' has shape ", shape_str(t.shape), " but config.json implies ",
           shape_str(p.value.shape));
    p.value = std::move(t);
    if (on_loaded) on_loaded(m, p);
  }
  return m;
}

Model random_model(const ModelConfig& cfg, uint64_t seed, float std) {
  Model m;
  m.cfg = cfg;
  build(m);
  Rng rng(seed);
  for (auto& p : m.params) {
    float* w = p.value.f32();
    int64_t n = p.value.numel();
    bool is_norm = p.name.find("norm") != std::string::npos || p.name.find(".ln_") != std::string::npos ||
                   p.name.find("ln_f") != std::string::npos;
    bool is_bias = p.name.size() > 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    for (int64_t i = 0; i < n; i++) {
      if (is_norm && !is_bias) w[i] = 1.0f;
      else if (is_bias) w[i] = 0.0f;
      else w[i] = std == 0.f ? 0.f : std * rng.normal();  // std 0: a cheap all-zero model (big shapes in tests)
    }
  }
  return m;
}

void save_model(const Model& m, const std::string& dir) {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<const Param*, const LinearModule*> quantized;  // k-bit weights are saved dequantized (f32)
  for (auto& b : m.blocks)
    for (const LinearModule* l : const_cast<Block&>(b).linears())
      if (l->quantized()) quantized[l->weight] = l;
  for (auto& p : m.params) {
    auto q = quantized.find(&p);
    tensors.push_back({file_name_for(m.cfg, p.name), q == quantized.end() ? p.value : dequantized_weight(*q->second)});
  }
  write_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json cfg = m.cfg.raw;
  cfg["torch_dtype"] = "float32";
  cfg.erase("quantization_config");  // the weights written here are plain f32
  write_file_atomic(dir + "/config.json", cfg.dump(2) + "\n");
}

}  // namespace llmtune
