// Import of llama2.c checkpoints (Karpathy's stories15M/42M/110M/260K family, legacy v0 and "ak42"
// version 1 fp32 exports) into a Hugging Face Llama folder, with Meta's interleaved RoPE rows of q/k
// permuted to HF's rotate-half layout.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace llmtune {

struct Llama2cHeader {
  int version = 0;  // 0 = legacy (bare 7×int32 header), 1 = "ak42" magic + 256-byte header
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier = true;  // lm_head is the token embedding (tied)
  uint64_t header_bytes = 0;      // 28 (v0) or 256 (v1)

  int64_t head_size() const { return dim / n_heads; }
  int64_t kv_dim() const { return n_kv_heads * head_size(); }
  // File size the header implies (header + every f32 tensor the format stores).
  uint64_t expected_file_bytes() const;
  std::string describe() const;  // "dim 64, hidden_dim 172, layers 5, ..." for messages
};

// Reads and validates the header of `path` (positive sizes, heads divide dim, file size exact).
// Every problem is an llmtune::Error naming the file.
Llama2cHeader read_llama2c_header(const std::string& path);

struct Llama2cCheckpoint {
  Llama2cHeader header;
  // f32 tensors under their HF Llama file names, q_proj/k_proj rows already permuted to the HF layout;
  // lm_head.weight only when the classifier is not shared.
  std::vector<std::pair<std::string, Tensor>> tensors;
};

Llama2cCheckpoint read_llama2c(const std::string& path);

// Meta (interleaved pairs 2i, 2i+1) → HF (rotate-half pairs i, i+D/2) row order of a q or k projection
// weight [n_heads·D, in]: HF row h·D + t·D/2 + i = Meta row h·D + 2i + t (t ∈ {0,1}); the same as
// transformers' convert script w.view(n_heads, D/2, 2, in).transpose(1, 2).reshape(n_heads·D, in).
Tensor permute_rotary_rows_meta_to_hf(const Tensor& w, int64_t n_heads);

// The HF config.json / tokenizer files written for a llama2.c model (deterministic key order).
std::string llama2c_config_json(const Llama2cHeader& h);

// Converts `bin_path` into the HF folder `out_dir` (written atomically; an existing folder is replaced):
// config.json, generation_config.json, model.safetensors, and — when `tokenizer_model` is not empty —
// tokenizer.model (a byte copy of the SentencePiece file), tokenizer_config.json, special_tokens_map.json.
void convert_llama2c_to_hf(const std::string& bin_path, const std::string& tokenizer_model, const std::string& out_dir);

}  // namespace llmtune
