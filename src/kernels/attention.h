// Causal self-attention, blocked flash-style (online softmax): no per-head T×T buffer is held.
// Grouped-query attention: query head h reads kv head h / (H / Hkv).
//
// Layouts (row-major, f32):
//   q, out, dq, dout : [B, Tq, H, D]
//   k, v, dk, dv     : [B, kv_cap, Hkv, D]; only the first Tk positions of each batch row are used
//                      (kv_cap >= Tk lets a KV cache be passed directly).
//   lse              : [B, H, Tq]  log-sum-exp of each query row's scaled scores (saved for backward)
// Query i of a row sits at absolute position Tk - Tq + i and sees keys j <= Tk - Tq + i.
// Segments (nullable): q_seg [B, Tq], k_seg [B, Tk]; a query additionally sees only keys with the same
// segment id. Packing gives each sample its own id; padding gets id -1 (real tokens never see it).
// Backward ACCUMULATES into dq, dk, dv.
#pragma once
#include <cstdint>

namespace llmtune {

struct AttentionDims {
  int64_t B = 0, Tq = 0, Tk = 0, H = 0, Hkv = 0, D = 0;
  int64_t kv_cap = 0;  // 0 means Tk
  float scale = 0.f;   // 0 means 1/sqrt(D)
};

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d);

namespace reference {
// Materialises the full score matrix; double accumulation. For tests only.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d);
}  // namespace reference

}  // namespace llmtune
