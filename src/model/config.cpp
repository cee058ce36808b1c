// config.json → ModelConfig for each supported model_type (hf-semantics §7).
#include "model/config.h"

#include <cmath>
#include <fstream>

#include "core/error.h"

namespace llmtune {

namespace {

struct Reader {
  const nlohmann::json& j;
  const std::string& src;

  const nlohmann::json* find(std::initializer_list<const char*> names) const {
    for (const char* n : names) {
      auto it = j.find(n);
      if (it != j.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }
  int64_t req_int(std::initializer_list<const char*> names) const {
    const nlohmann::json* v = find(names);
    if (!v) fail(src, ": missing field '", *names.begin(), "' (required for model_type '",
                 j.value("model_type", std::string("?")), "')");
    if (!v->is_number_integer()) fail(src, ": field '", *names.begin(), "' must be an integer, got ", v->dump());
    int64_t x = v->get<int64_t>();
    if (x <= 0) fail(src, ": field '", *names.begin(), "' must be positive, got ", x);
    return x;
  }
  int64_t opt_int(std::initializer_list<const char*> names, int64_t def) const {
    const nlohmann::json* v = find(names);
    if (!v) return def;
    if (!v->is_number_integer()) fail(src, ": field '", *names.begin(), "' must be an integer, got ", v->dump());
    return v->get<int64_t>();
  }
  double opt_num(std::initializer_list<const char*> names, double def) const {
    const nlohmann::json* v = find(names);
    if (!v) return def;
    if (!v->is_number()) fail(src, ": field '", *names.begin(), "' must be a number, got ", v->dump());
    return v->get<double>();
  }
  bool opt_bool(std::initializer_list<const char*> names, bool def) const {
    const nlohmann::json* v = find(names);
    if (!v) return def;
    if (!v->is_boolean()) fail(src, ": field '", *names.begin(), "' must be true or false, got ", v->dump());
    return v->get<bool>();
  }
  std::string opt_str(std::initializer_list<const char*> names, const std::string& def) const {
    const nlohmann::json* v = find(names);
    if (!v) return def;
    if (!v->is_string()) fail(src, ": field '", *names.begin(), "' must be a string, got ", v->dump());
    return v->get<std::string>();
  }
};

std::vector<int32_t> read_eos(const nlohmann::json& j, const std::string& src) {
  std::vector<int32_t> out;
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return out;
  if (it->is_number_integer()) {
    out.push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (auto& e : *it) {
      if (!e.is_number_integer()) fail(src, ": eos_token_id entries must be integers");
      out.push_back(e.get<int32_t>());
    }
  } else {
    fail(src, ": eos_token_id must be an integer or a list of integers");
  }
  return out;
}

void read_rope_scaling(const nlohmann::json& j, const std::string& src, ModelConfig& c) {
  const nlohmann::json* rs = nullptr;
  auto it = j.find("rope_scaling");
  if (it != j.end() && !it->is_null()) rs = &*it;
  // transformers v5 writes rope_parameters {rope_type, rope_theta, ...}
  auto it2 = j.find("rope_parameters");
  if (it2 != j.end() && it2->is_object()) {
    if (it2->contains("rope_theta")) c.rope_theta = (*it2)["rope_theta"].get<double>();
    if (!rs) rs = &*it2;
  }
  if (!rs) return;
  if (!rs->is_object()) fail(src, ": rope_scaling must be an object or null");
  std::string type = rs->value("rope_type", rs->value("type", std::string("default")));
  if (type == "default") return;
  Reader r{*rs, src};
  c.rope_scaling.type = type;
  c.rope_scaling.factor = r.opt_num({"factor"}, 1.0);
  if (type == "llama3") {
    c.rope_scaling.low_freq_factor = r.opt_num({"low_freq_factor"}, 1.0);
    c.rope_scaling.high_freq_factor = r.opt_num({"high_freq_factor"}, 4.0);
    c.rope_scaling.original_max_position_embeddings = r.opt_int({"original_max_position_embeddings"}, 8192);
  } else if (type != "linear") {
    fail(src, ": rope_scaling type '", type, "' is not supported (supported: linear, llama3)");
  }
}

Activation read_act(const std::string& name, const std::string& src, const char* field) {
  Activation a;
  if (!activation_from_hf_name(name, &a))
    fail(src, ": ", field, " '", name, "' is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, silu, relu)");
  return a;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// num_labels / id2label / problem_type of a *ForSequenceClassification config. HF's config.json stores
// id2label (string keys "0".."n-1") and usually no num_labels; an explicit num_labels must agree with it.
void read_seq_cls(const nlohmann::json& j, const std::string& src, ModelConfig& c) {
  Reader r{j, src};
  c.is_seq_cls = true;
  std::vector<std::string> names;
  if (const nlohmann::json* m = r.find({"id2label"})) {
    if (!m->is_object()) fail(src, ": field 'id2label' must be an object {\"0\": \"name\", ...}, got ", m->dump());
    names.assign(m->size(), std::string());
    std::vector<bool> seen(m->size(), false);
    for (auto it = m->begin(); it != m->end(); ++it) {
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(it.key(), &used);
      } catch (const std::exception&) {
      }
      if (used != it.key().size() || id < 0 || id >= (long long)m->size() || seen[size_t(id)])
        fail(src, ": field 'id2label' must have the keys \"0\"..\"", m->size() - 1, "\" once each, got key \"",
             it.key(), "\"");
      if (!it.value().is_string()) fail(src, ": id2label[\"", it.key(), "\"] must be a string, got ", it.value().dump());
      seen[size_t(id)] = true;
      names[size_t(id)] = it.value().get<std::string>();
    }
  }
  const int64_t explicit_n = r.opt_int({"num_labels"}, 0);
  if (explicit_n < 0) fail(src, ": field 'num_labels' must be positive, got ", explicit_n);
  if (explicit_n > 0 && !names.empty() && int64_t(names.size()) != explicit_n)
    fail(src, ": field 'num_labels' is ", explicit_n, " but 'id2label' has ", names.size(),
         " entries: make them agree (or drop num_labels)");
  c.num_labels = explicit_n > 0 ? explicit_n : !names.empty() ? int64_t(names.size()) : 2;
  if (names.empty())
    for (int64_t i = 0; i < c.num_labels; i++) names.push_back(cat("LABEL_", i));
  c.id2label = std::move(names);
  c.problem_type = r.opt_str({"problem_type"}, "");
  if (!c.problem_type.empty() && c.problem_type != "regression" && c.problem_type != "single_label_classification" &&
      c.problem_type != "multi_label_classification")
    fail(src, ": field 'problem_type' '", c.problem_type,
         "' is not one of regression, single_label_classification, multi_label_classification");
}

}  // namespace

std::string supported_architectures() {
  return "GPTNeoXForCausalLM (gpt_neox), LlamaForCausalLM (llama), MistralForCausalLM (mistral), "
         "Qwen2ForCausalLM (qwen2), GPT2LMHeadModel (gpt2), and the *ForSequenceClassification variant of each "
         "(e.g. LlamaForSequenceClassification)";
}

ModelConfig parse_model_config(const nlohmann::json& j, const std::string& src) {
  if (!j.is_object()) fail(src, ": expected a JSON object");
  Reader r{j, src};
  ModelConfig c;
  c.raw = j;
  c.model_type = r.opt_str({"model_type"}, "");
  if (auto it = j.find("architectures"); it != j.end() && it->is_array() && !it->empty() && (*it)[0].is_string())
    c.architecture = (*it)[0].get<std::string>();
  if (c.model_type.empty())
    fail(src, ": missing field 'model_type' (supported: ", supported_architectures(), ")");

  if (c.model_type == "gpt_neox") {
    c.arch = Arch::GPTNeoX;
    c.hidden_size = r.req_int({"hidden_size"});
    c.num_heads = r.req_int({"num_attention_heads"});
    c.num_kv_heads = c.num_heads;
    c.num_layers = r.req_int({"num_hidden_layers"});
    c.intermediate_size = r.req_int({"intermediate_size"});
    c.vocab_size = r.req_int({"vocab_size"});
    c.max_position_embeddings = r.req_int({"max_position_embeddings"});
    c.norm = NormKind::LayerNorm;
    c.norm_eps = float(r.opt_num({"layer_norm_eps"}, 1e-5));
    c.act = read_act(r.opt_str({"hidden_act"}, "gelu"), src, "hidden_act");
    c.parallel_residual = r.opt_bool({"use_parallel_residual"}, true);
    c.tie_word_embeddings = r.opt_bool({"tie_word_embeddings"}, false);
    double pct = r.opt_num({"rotary_pct", "partial_rotary_factor"}, 1.0);
    if (!(pct > 0 && pct <= 1)) fail(src, ": rotary_pct must be in (0, 1], got ", pct);
    if (c.hidden_size % c.num_heads) fail(src, ": hidden_size ", c.hidden_size, " is not divisible by num_attention_heads ", c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
    c.rotary_dim = int64_t(double(c.head_dim) * pct);
    c.rope_theta = r.opt_num({"rotary_emb_base", "rope_theta"}, 10000.0);
    read_rope_scaling(j, src, c);
    bool bias = r.opt_bool({"attention_bias"}, true);
    c.qkv_bias = c.o_bias = bias;
    c.mlp_bias = true;
    c.qkv_layout = QkvLayout::NeoxInterleaved;
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2") {
    c.arch = c.model_type == "qwen2" ? Arch::Qwen2 : Arch::Llama;
    c.hidden_size = r.req_int({"hidden_size"});
    c.num_heads = r.req_int({"num_attention_heads"});
    c.num_kv_heads = r.opt_int({"num_key_value_heads"}, c.num_heads);
    c.num_layers = r.req_int({"num_hidden_layers"});
    c.intermediate_size = r.req_int({"intermediate_size"});
    c.vocab_size = r.req_int({"vocab_size"});
    c.max_position_embeddings = r.req_int({"max_position_embeddings"});
    c.norm = NormKind::RMSNorm;
    c.norm_eps = float(r.opt_num({"rms_norm_eps"}, 1e-6));
    c.act = read_act(r.opt_str({"hidden_act"}, "silu"), src, "hidden_act");
    c.gated_mlp = true;
    c.tie_word_embeddings = r.opt_bool({"tie_word_embeddings"}, c.model_type == "qwen2");
    if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads)
      fail(src, ": num_attention_heads ", c.num_heads, " must be a multiple of num_key_value_heads ", c.num_kv_heads);
    c.head_dim = r.opt_int({"head_dim"}, 0);
    if (c.head_dim <= 0) {
      if (c.hidden_size % c.num_heads) fail(src, ": hidden_size is not divisible by num_attention_heads");
      c.head_dim = c.hidden_size / c.num_heads;
    }
    c.rotary_dim = c.head_dim;
    c.rope_theta = r.opt_num({"rope_theta"}, 10000.0);
    read_rope_scaling(j, src, c);
    bool attn_bias = r.opt_bool({"attention_bias"}, false);
    c.qkv_bias = c.model_type == "qwen2" ? true : attn_bias;
    c.o_bias = c.model_type == "qwen2" ? false : attn_bias;
    c.mlp_bias = r.opt_bool({"mlp_bias"}, false);
    c.qkv_layout = QkvLayout::Separate;
  } else if (c.model_type == "gpt2") {
    c.arch = Arch::GPT2;
    c.hidden_size = r.req_int({"n_embd", "hidden_size"});
    c.num_heads = r.req_int({"n_head", "num_attention_heads"});
    c.num_kv_heads = c.num_heads;
    c.num_layers = r.req_int({"n_layer", "num_hidden_layers"});
    c.intermediate_size = r.opt_int({"n_inner"}, 4 * c.hidden_size);
    c.vocab_size = r.req_int({"vocab_size"});
    c.max_position_embeddings = r.req_int({"n_positions", "max_position_embeddings"});
    c.norm = NormKind::LayerNorm;
    c.norm_eps = float(r.opt_num({"layer_norm_epsilon"}, 1e-5));
    c.act = read_act(r.opt_str({"activation_function"}, "gelu_new"), src, "activation_function");
    c.tie_word_embeddings = r.opt_bool({"tie_word_embeddings"}, true);
    if (c.hidden_size % c.num_heads) fail(src, ": n_embd is not divisible by n_head");
    c.head_dim = c.hidden_size / c.num_heads;
    c.use_rope = false;
    c.learned_positions = true;
    c.qkv_bias = c.o_bias = c.mlp_bias = true;
    c.qkv_layout = QkvLayout::Gpt2Contiguous;
    c.conv1d_weights = true;
    if (!r.opt_bool({"scale_attn_weights"}, true)) fail(src, ": scale_attn_weights=false is not supported");
  } else {
    fail(src, ": model_type '", c.model_type, "' (", c.architecture.empty() ? "?" : c.architecture,
         ") is not supported. Supported architectures: ", supported_architectures());
  }
  if (c.use_rope && (c.rotary_dim % 2 || c.rotary_dim <= 0))
    fail(src, ": rotary dimension ", c.rotary_dim, " must be a positive even number");
  c.bos_token_id = int32_t(r.opt_int({"bos_token_id"}, -1));
  c.pad_token_id = int32_t(r.opt_int({"pad_token_id"}, -1));
  c.eos_token_ids = read_eos(j, src);
  if (ends_with(c.architecture, "ForSequenceClassification")) read_seq_cls(j, src, c);
  return c;
}

ModelConfig load_model_config(const std::string& dir) {
  std::string path = dir + "/config.json";
  std::ifstream f(path);
  if (!f) fail(path, ": cannot open (is '", dir, "' a Hugging Face model folder?)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  return parse_model_config(j, path);
}

}  // namespace llmtune
