// Mixed precision for training (HF bf16=True on CPU): frozen linear weights stored in bf16 so their
// matrix products run in bf16 with f32 accumulation; trainable params stay f32 (master weights).
#pragma once
#include <cstdint>

#include "model/model.h"

namespace llmtune {

// Converts every FROZEN linear weight (incl. the LM head unless it is tied to the embedding, which
// the lookup reads as f32) to bf16, releasing the f32 copy. Trainable weights, norms, biases,
// embeddings and LoRA adapters stay f32. Returns the bytes released. Idempotent.
int64_t store_frozen_weights_bf16(Model& m);

}  // namespace llmtune
