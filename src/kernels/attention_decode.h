// attention_decode: causal attention of the few new queries of a decode step against the KV cache.
// Same semantics and q/k/v/out layouts as attention_forward (kernels/attention.h), organised for
// Tq << Tk: one work item per (batch row, kv head) serves every query head of its GQA group, so each
// cached K/V row is read once per step; scores for all visible keys, then a two-pass softmax and the
// weighted sum of values. No lse (nothing runs backward through generation).
#pragma once
#include <cstdint>

#include "kernels/attention.h"

namespace llmtune {

// q, out: [B, Tq, H, D]; k, v: [B, kv_cap, Hkv, D] (first Tk positions used; query i sits at position
// Tk - Tq + i). Segments (both or neither): q_seg [B, Tq]; k_seg rows of stride k_seg_stride (the
// cache's [B, kv_cap] segment array can be passed directly; 0 means Tk). A query sees the keys up to
// its position whose segment equals its own; a query that sees none gets zeros.
void attention_decode_forward(float* out, const float* q, const float* k, const float* v, const int32_t* q_seg,
                              const int32_t* k_seg, int64_t k_seg_stride, const AttentionDims& d);

}  // namespace llmtune
