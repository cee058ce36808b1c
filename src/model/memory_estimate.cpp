// Memory arithmetic mirroring Workspace::ensure and the parameter layout.
#include "model/memory_estimate.h"

#include <cstdio>

#include "model/model.h"

namespace llmtune {

int64_t count_parameters(const ModelConfig& cfg) {
  int64_t n = 0;
  for (auto& [name, shape] : expected_tensors(cfg)) n += shape_numel(shape);
  return n;
}

int64_t activation_bytes(const ModelConfig& c, int64_t B, int64_t T) {
  const int64_t N = B * T, E = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  int64_t per_layer = N * (E * (c.parallel_residual ? 3 : 4) + 2 * QD + 2 * KD + I * (c.gated_mlp ? 3 : 2) + 4) +
                      B * c.num_heads * T;
  int64_t scratch = N * (E * 6 + 3 * QD + 3 * KD + (QD + 2 * KD) * 2 + I * (c.gated_mlp ? 3 : 2));
  int64_t lm_head_chunk = 256 * c.vocab_size * 2;  // chunked logits + their gradient
  return 4 * (per_layer * c.num_layers + scratch + lm_head_chunk);
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

std::string format_bytes(int64_t b) {
  char buf[64];
  double v = double(b);
  if (v >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", v / (1024.0 * 1024 * 1024));
  else if (v >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", v / (1024.0 * 1024));
  else std::snprintf(buf, sizeof buf, "%.1f KiB", v / 1024.0);
  return buf;
}

}  // namespace llmtune
