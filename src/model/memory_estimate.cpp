// Memory arithmetic mirroring Workspace::ensure and the parameter layout.
#include "model/memory_estimate.h"

#include <algorithm>
#include <cstdio>

#include "model/model.h"

namespace llmtune {

int64_t count_parameters(const ModelConfig& cfg) {
  int64_t n = 0;
  for (auto& [name, shape] : expected_tensors(cfg)) n += shape_numel(shape);
  return n;
}

int64_t activation_bytes(const ModelConfig& c, int64_t B, int64_t T, bool gradient_checkpointing) {
  const int64_t N = B * T, E = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  int64_t per_layer = N * (E * (c.parallel_residual ? 3 : 4) + 2 * QD + 2 * KD + I * (c.gated_mlp ? 3 : 2) + 4) +
                      B * c.num_heads * T;
  int64_t scratch = N * (E * 6 + 3 * QD + 3 * KD + (QD + 2 * KD) * 2 + I * (c.gated_mlp ? 3 : 2));
  int64_t lm_head_chunk = 256 * c.vocab_size * 2;  // chunked logits + their gradient
  // Checkpointing (Workspace::ensure): every layer keeps its input [N, E]; one full block is shared.
  int64_t store = gradient_checkpointing ? N * E * c.num_layers + (c.num_layers > 0 ? per_layer : 0)
                                         : per_layer * c.num_layers;
  return 4 * (store + scratch + lm_head_chunk);
}

namespace {
bool is_block_tensor(const std::string& name) {
  return name.find(".layers.") != std::string::npos || name.find(".h.") != std::string::npos;
}
bool is_embedding_tensor(const std::string& name) {
  return name.find("embed_in") != std::string::npos || name.find("embed_tokens") != std::string::npos ||
         name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos;
}
}  // namespace

int64_t count_block_linear_parameters(const ModelConfig& cfg) {
  int64_t n = 0;
  for (auto& [name, shape] : expected_tensors(cfg))
    if (shape.size() == 2 && is_block_tensor(name)) n += shape_numel(shape);
  return n;
}

int64_t count_embedding_parameters(const ModelConfig& cfg) {
  int64_t n = 0;
  for (auto& [name, shape] : expected_tensors(cfg))
    if (is_embedding_tensor(name)) n += shape_numel(shape);
  return n;
}

int64_t base_weight_bytes(const ModelConfig& cfg, bool load_in_4bit, bool load_in_8bit, bool double_quant) {
  int64_t total = 0;
  for (auto& [name, shape] : expected_tensors(cfg)) {
    const int64_t n = shape_numel(shape);
    if (shape.size() == 2 && is_block_tensor(name) && load_in_4bit) {
      const int64_t blocks = (n + 63) / 64;
      total += (n + 1) / 2 + (double_quant ? blocks + 4 * ((blocks + 255) / 256) + 4 : 4 * blocks);
    } else if (shape.size() == 2 && is_block_tensor(name) && load_in_8bit) {
      total += n + 4 * shape[0];
    } else {
      total += 4 * n;
    }
  }
  return total;
}

int64_t optimizer_state_bytes(int64_t trainable, int64_t small_or_embedding, bool optim_8bit) {
  if (!optim_8bit) return trainable * 8;
  const int64_t q = std::max<int64_t>(trainable - small_or_embedding, 0);
  return q * 2 + 2 * 4 * ((q + 255) / 256) + (trainable - q) * 8;
}

MemoryEstimate estimate_inference(const ModelConfig& c, int64_t context, int64_t bpp) {
  MemoryEstimate e;
  e.weights = count_parameters(c) * bpp;
  e.kv_cache = 2 * 4 * c.num_layers * context * c.kv_dim();
  e.activations = activation_bytes(c, 1, context) / std::max<int64_t>(c.num_layers, 1);
  return e;
}

MemoryEstimate estimate_training(const ModelConfig& c, int64_t trainable, int64_t adapter, int64_t B, int64_t T,
                                 int64_t bpp) {
  MemoryEstimate e;
  e.weights = count_parameters(c) * bpp + adapter * 4;
  e.gradients = trainable * 4;
  e.optimizer = trainable * 8;
  e.activations = activation_bytes(c, B, T);
  return e;
}

MemoryEstimate estimate_training(const ModelConfig& c, int64_t trainable, int64_t adapter,
                                 const TrainingMemoryOptions& o) {
  MemoryEstimate e;
  e.weights = base_weight_bytes(c, o.load_in_4bit, o.load_in_8bit, o.double_quant) + adapter * 4;
  e.gradients = trainable * 4;
  e.optimizer = optimizer_state_bytes(trainable, o.f32_state_params, o.optim_8bit);
  e.activations = activation_bytes(c, o.B, o.T, o.gradient_checkpointing);
  return e;
}

std::string format_bytes(int64_t b) {
  char buf[64];
  double v = double(b);
  if (v >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", v / (1024.0 * 1024 * 1024));
  else if (v >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", v / (1024.0 * 1024));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", v / 1024.0);
  return buf;
}

}  // namespace llmtune
