// store_frozen_weights_bf16: the bf16 half of mixed-precision training (see precision.h).
#include "train/precision.h"

#include "core/dtype.h"

namespace llmtune {

int64_t store_frozen_weights_bf16(Model& m) {
  int64_t released = 0;
  for (LinearModule* l : m.linears()) {
    Param* w = l->weight;
    if (!w || w->trainable || w->value.dtype != DType::F32) continue;
    if (w == m.embed) continue;  // tied LM head: the embedding lookup needs f32
    Tensor b = Tensor::zeros(w->value.shape, DType::BF16);
    convert_f32_to_bf16(w->value.f32(), b.as<uint16_t>(), size_t(w->value.numel()));
    released += int64_t(w->value.nbytes()) - int64_t(b.nbytes());
    w->value = std::move(b);  // drops the f32 storage (an mmap view or a heap block)
  }
  return released;
}

}  // namespace llmtune
