// Up-front memory estimates (bytes) for inference and training, used by `info` and the training
// preflight: weights, gradients, optimizer states and the activation store for one (batch, seq).
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"

namespace llmtune {

struct MemoryEstimate {
  int64_t weights = 0;      // frozen + trainable parameter values
  int64_t gradients = 0;    // trainable only
  int64_t optimizer = 0;    // AdamW m and v (f32)
  int64_t activations = 0;  // activation store + scratch for one micro-batch
  int64_t kv_cache = 0;     // inference: KV cache for the whole context
  int64_t total() const { return weights + gradients + optimizer + activations + kv_cache; }
};

int64_t count_parameters(const ModelConfig& cfg);
// Activation bytes of the training workspace for batch B × sequence T; with gradient checkpointing
// only each block's input is stored, plus one block's activations for the recompute.
int64_t activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T, bool gradient_checkpointing = false);
// Parameters of the blocks' linear weights (what load_in_4bit / load_in_8bit quantize).
int64_t count_block_linear_parameters(const ModelConfig& cfg);
// Parameters of the token/position embeddings (the Trainer keeps their 8-bit-optimizer states in f32).
int64_t count_embedding_parameters(const ModelConfig& cfg);
// Bytes of the frozen base weights: f32 everywhere, or the block linears in NF4/FP4 (0.5 B/param +
// one f32 absmax per 64, or with double quantization one byte per 64 + a f32 per 256 blocks) or int8
// (1 B/param + one f32 scale per row) with everything else f32 (prepare_model_for_kbit_training).
int64_t base_weight_bytes(const ModelConfig& cfg, bool load_in_4bit, bool load_in_8bit = false,
                          bool double_quant = false);
// AdamW state bytes: 32-bit = 8 B per trainable param; 8-bit = 2 B + 2 f32 absmax per 256 for tensors
// of ≥ 4096 elements, f32 states for the rest (`small_or_embedding` params).
int64_t optimizer_state_bytes(int64_t trainable_params, int64_t small_or_embedding_params, bool optim_8bit);

struct TrainingMemoryOptions {
  int64_t B = 1, T = 512;
  bool gradient_checkpointing = false;
  bool load_in_4bit = false, load_in_8bit = false, double_quant = false;
  bool optim_8bit = false;
  int64_t f32_state_params = 0;  // trainable params the 8-bit optimizer keeps in f32 (embeddings, small)
};
MemoryEstimate estimate_inference(const ModelConfig& cfg, int64_t context, int64_t weight_bytes_per_param = 4);
// trainable_params: parameters with gradients; adapter_params: those added on top of the base (LoRA).
MemoryEstimate estimate_training(const ModelConfig& cfg, int64_t trainable_params, int64_t adapter_params,
                                 int64_t B, int64_t T, int64_t weight_bytes_per_param = 4);
MemoryEstimate estimate_training(const ModelConfig& cfg, int64_t trainable_params, int64_t adapter_params,
                                 const TrainingMemoryOptions& opt);
std::string format_bytes(int64_t bytes);  // "1.23 GiB"

}  // namespace llmtune
