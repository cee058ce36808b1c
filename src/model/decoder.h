// The generic decoder's computation: training forward (storing what backward needs), the fused
// LM-head loss, and backward over every trainable parameter — the llm.c way, no autograd graph.
// Also the KV-cache inference forward used by generation.
#pragma once
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "kernels/lm_head_loss.h"
#include "model/linear_module.h"
#include "model/model.h"

namespace llmtune {

struct DecoderInput {
  int64_t B = 0, T = 0;
  const int32_t* ids = nullptr;        // [B, T]
  const int32_t* positions = nullptr;  // [B, T]; null → 0..T-1 per row
  const int32_t* segments = nullptr;   // [B, T]; null → one causal segment per row (-1 = padding)
  Rng* dropout_rng = nullptr;          // non-null: training mode (LoRA dropout on)
};

struct BlockActs {
  Tensor x_in;                      // [N, E] block input (residual stream)
  Tensor ln1, ln1_mean, ln1_rstd;   // [N, E], [N], [N]
  Tensor q, k, v;                   // [N, H, D], [N, Hkv, D], post-RoPE
  Tensor attn, lse;                 // [N, H·D] (o-proj input), [B, H, T]
  Tensor x_mid;                     // [N, E] sequential residual only (ln2 input)
  Tensor ln2, ln2_mean, ln2_rstd;
  Tensor h1, up, act;               // [N, I]: fc_in/gate output, up output (SwiGLU), fc_out/down input
  std::vector<LinearActs> lin;      // LoRA activations, one per linear of the block (Block::linears order)
};

// Activations and scratch, sized once per (B, T) and reused.
struct Workspace {
  int64_t B = 0, T = 0;
  std::vector<int32_t> positions;  // resolved positions
  std::vector<BlockActs> blocks;
  Tensor x_final, h_final, fn_mean, fn_rstd;  // final norm input/output [N, E]
  Tensor d_final;                              // ∂loss/∂h_final [N, E] (filled by a head's loss)
  // scratch for forward/backward
  Tensor tmp_e, tmp_e2, tmp_qkv, d_resid, d_ln, d_q, d_k, d_v, d_attn, d_qkv, d_h1, d_up, d_act;
  std::vector<LinearActs> head_lin;
  // A block whose MLP projections cannot train never reads its MLP input (ln2) or activation output
  // (act) in the backward: such blocks write them into these two shared buffers instead of keeping
  // their own (LoRA on attention only: N·(E + I) floats less per layer). ensure() decides per layer.
  Tensor shared_ln2, shared_act;
  std::vector<uint8_t> kept_mlp_acts;  // per layer, as ensure() last laid out: bit 0 act kept, bit 1 ln2 kept

  // Gradient checkpointing (HF `gradient_checkpointing`): set before the first forward. The forward
  // keeps only each block's input (blocks[l].x_in) and runs every block in the one shared `ckpt`;
  // decoder_backward recomputes each block from its input, with the dropout RNG state it had in the
  // forward, right before that block's backward — gradients identical to the stored path.
  bool gradient_checkpointing = false;
  BlockActs ckpt;
  int64_t ckpt_layer = -1;   // layer whose activations ckpt holds now (-1: none)
  std::vector<Rng> ckpt_rng;  // dropout RNG state at each block's forward
  bool ckpt_rng_used = false;  // the last forward ran with a dropout RNG

  void ensure(const Model& m, int64_t B, int64_t T);
  // Bytes held by the activation store and scratch (for tests and the memory estimate).
  int64_t bytes() const;
  bool allocated_checkpointing = false;  // the mode `ensure` last sized for
};

// Forward pass; leaves the final normed hidden states in ws.h_final.
void decoder_forward(Model& m, Workspace& ws, const DecoderInput& in);
// LM loss over shifted targets [B, T] (-100 = ignore). With backward=true, fills ws.d_final with the
// gradient of grad_scale·Σloss and accumulates the LM head's weight gradient (if trainable).
LossSum decoder_lm_loss(Model& m, Workspace& ws, const int32_t* targets, float grad_scale, bool backward,
                        float* token_logp = nullptr);
// Backward from ws.d_final down to the lowest trainable parameter.
void decoder_backward(Model& m, Workspace& ws, const DecoderInput& in);

// ---- inference with a KV cache ----
// Buffers of the fast cached forward, sized for the largest step seen and reused: a decode step
// allocates nothing. One set serves every layer (no activations are kept for a backward).
struct DecodeScratch {
  int64_t rows = 0;  // tokens the buffers hold
  Tensor x, x_next, ln, mean, rstd, q, k, v, qkv, attn, attn_out, x_mid, h1, up, act, mlp_out;
  Tensor last, normed;  // [B, E] final norm of each row's last token
  std::vector<int32_t> q_seg;  // zeros, the query segments when the caller passes none
  std::vector<int32_t> k_seg;  // prompt pass: the keys' segments packed [B, Tk] (the flash kernel's layout)
  LinearModule lm_head;        // the model's LM head without bias / adapter (as the training forward uses it)
};

struct KVCache {
  int64_t B = 0, cap = 0, len = 0;          // len: positions filled (same for every row)
  std::vector<Tensor> k, v;                 // per layer [B, cap, Hkv, D]
  std::vector<int32_t> seg;                 // [B, cap]: 0 real token, -1 padding
  // true: decoder_forward_cached runs the inference path (GEMV decode kernels, cached attention,
  // DecodeScratch); false: the training block forward in the Workspace (the reference it is tested against).
  bool fast = true;
  DecodeScratch scratch;
  void init(const Model& m, int64_t B, int64_t cap);
};

// Runs Tq new tokens per row through the model, appending them to the cache; writes the logits of
// each row's last new token into logits_last [B, V]. seg_new [B, Tq] (nullable) marks padding with -1.
void decoder_forward_cached(Model& m, KVCache& cache, Workspace& ws, const int32_t* ids,
                            const int32_t* positions, const int32_t* seg_new, int64_t Tq,
                            float* logits_last);

}  // namespace llmtune
