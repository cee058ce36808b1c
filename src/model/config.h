// ModelConfig: the architecture switches of the one generic decoder, read from a Hugging Face
// config.json. GPT-NeoX, Llama/Mistral, Qwen2 and GPT-2 differ only in these fields.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/activation.h"
#include "kernels/rope.h"

namespace llmtune {

enum class Arch { GPTNeoX, Llama, Qwen2, GPT2 };
enum class NormKind { LayerNorm, RMSNorm };
// How q, k and v come out of the attention input projection(s).
enum class QkvLayout {
  NeoxInterleaved,  // one fused Linear, outputs viewed as [H, 3, D]
  Gpt2Contiguous,   // one fused Conv1D, outputs [q(E) | k(E) | v(E)]
  Separate,         // q_proj, k_proj, v_proj
};

struct ModelConfig {
  std::string model_type;    // "gpt_neox", "llama", "mistral", "qwen2", "gpt2"
  std::string architecture;  // e.g. "GPTNeoXForCausalLM"
  Arch arch = Arch::GPTNeoX;
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0, num_heads = 0, num_kv_heads = 0;
  int64_t head_dim = 0, intermediate_size = 0, max_position_embeddings = 0;
  NormKind norm = NormKind::LayerNorm;
  float norm_eps = 1e-5f;
  Activation act = Activation::GeluErf;
  bool gated_mlp = false;  // SwiGLU (Llama family)
  bool parallel_residual = false;
  bool use_rope = true;
  int64_t rotary_dim = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool learned_positions = false;  // GPT-2 wpe
  bool tie_word_embeddings = false;
  bool qkv_bias = false, o_bias = false, mlp_bias = false;
  QkvLayout qkv_layout = QkvLayout::Separate;
  bool conv1d_weights = false;  // GPT-2: Linear weights stored [in, out]
  int32_t bos_token_id = -1, pad_token_id = -1;
  std::vector<int32_t> eos_token_ids;
  // *ForSequenceClassification checkpoints (hf-semantics §7.6): no LM head; a `score` Linear
  // [num_labels, E] (no bias) reads the final hidden state instead. See model/heads.h.
  bool is_seq_cls = false;
  int64_t num_labels = 0;             // seq-cls only: `num_labels`, else len(id2label), else 2 (HF default)
  std::vector<std::string> id2label;  // seq-cls only: num_labels names ("LABEL_i" when the file has none)
  std::string problem_type;           // "" (infer), "regression", "single_label_classification",
                                      // "multi_label_classification"
  nlohmann::json raw;  // the config.json as read (written back unchanged when saving a model)

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Reads and validates <dir>/config.json. Unsupported architectures name themselves and the supported
// list; a missing or ill-typed field names the file and the field.
ModelConfig load_model_config(const std::string& dir);
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source_name);

std::string supported_architectures();

}  // namespace llmtune
