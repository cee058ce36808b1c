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
// Activation bytes of the training workspace for batch B × sequence T.
int64_t activation_bytes(const ModelConfig& cfg, int64_t B, int64_t T);
MemoryEstimate estimate_inference(const ModelConfig& cfg, int64_t context, int64_t weight_bytes_per_param = 4);
// trainable_params: parameters with gradients; adapter_params: those added on top of the base (LoRA).
MemoryEstimate estimate_training(const ModelConfig& cfg, int64_t trainable_params, int64_t adapter_params,
                                 int64_t B, int64_t T, int64_t weight_bytes_per_param = 4);
std::string format_bytes(int64_t bytes);  // "1.23 GiB"

}  // namespace llmtune
