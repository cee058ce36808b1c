// Token embedding lookup (and learned position embeddings for GPT-2): out[i] = table[ids[i]].
// Backward ACCUMULATES rows into dtable. Ids must be in [0, V): checked, a clear error otherwise.
#pragma once
#include <cstdint>

namespace llmtune {

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t E,
                       int64_t V);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t E);

namespace reference {
void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t E,
                       int64_t V);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t E);
}  // namespace reference

}  // namespace llmtune
