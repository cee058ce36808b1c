// Generic decoder forward/backward over GPT-NeoX, Llama-family and GPT-2 switches.
#include "model/decoder.h"
#include "core/profile.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "core/error.h"
#include "kernels/activation.h"
#include "kernels/attention.h"
#include "kernels/attention_decode.h"
#include "kernels/decode_pool.h"
#include "kernels/embedding.h"
#include "kernels/gemv.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

namespace llmtune {

namespace {

void ensure_tensor(Tensor& t, const Shape& s) {
  if (!t.defined() || t.numel() < shape_numel(s)) t = Tensor::zeros(s);
  t.shape = s;
}
// A per-layer activation: its own storage when the backward reads it (`own`), else a view of `shared`.
void ensure_own_or_shared(Tensor& t, const Tensor& shared, const Shape& s, bool own) {
  const bool is_view = t.defined() && shared.defined() && t.owner == shared.owner;
  if (!own) {
    t = Tensor::view(shared.data, s, DType::F32, shared.owner);
    return;
  }
  if (is_view) t = Tensor{};  // was shared: needs storage of its own now
  ensure_tensor(t, s);
}
void zero(Tensor& t) { std::memset(t.data, 0, t.nbytes()); }
float* gradp(Param* p) { return (p && p->trainable && p->grad.defined()) ? p->grad.f32() : nullptr; }
const float* val(Param* p) { return p ? p->value.f32() : nullptr; }

void norm_forward(const ModelConfig& c, const NormModule& n, float* out, float* mean, float* rstd,
                  const float* x, int64_t N) {
  if (c.norm == NormKind::LayerNorm)
    layernorm_forward(out, mean, rstd, x, val(n.weight), val(n.bias), N, c.hidden_size, c.norm_eps);
  else
    rmsnorm_forward(out, rstd, x, val(n.weight), N, c.hidden_size, c.norm_eps);
}

void norm_backward(const ModelConfig& c, const NormModule& n, float* dx, const float* dout, const float* x,
                   const float* mean, const float* rstd, int64_t N) {
  if (c.norm == NormKind::LayerNorm)
    layernorm_backward(dx, gradp(n.weight), gradp(n.bias), dout, x, val(n.weight), mean, rstd, N, c.hidden_size);
  else
    rmsnorm_backward(dx, gradp(n.weight), dout, x, val(n.weight), rstd, N, c.hidden_size);
}

bool norm_trainable(const NormModule& n) {
  return (n.weight && n.weight->trainable) || (n.bias && n.bias->trainable);
}

bool linear_trainable(const LinearModule& l, bool adapters_enabled) {
  if ((l.weight && l.weight->trainable) || (l.bias && l.bias->trainable)) return true;
  return l.lora.runs(adapters_enabled) && (l.lora.A->trainable || l.lora.B->trainable);
}

bool block_trainable(Block& b, bool adapters_enabled) {
  if (norm_trainable(b.ln1) || norm_trainable(b.ln2)) return true;
  for (auto* l : b.linears())
    if (linear_trainable(*l, adapters_enabled)) return true;
  return false;
}

// Token n of a fused QKV projection output [N, 3·H·D] into q/k/v [N, H, D].
inline void split_qkv_row(const ModelConfig& c, const float* qkv, float* q, float* k, float* v, int64_t n) {
  const int64_t H = c.num_heads, D = c.head_dim, HD = H * D;
    const float* row = qkv + n * 3 * HD;
    if (c.qkv_layout == QkvLayout::NeoxInterleaved) {
      for (int64_t h = 0; h < H; h++) {
        std::memcpy(q + n * HD + h * D, row + h * 3 * D, size_t(D) * 4);
        std::memcpy(k + n * HD + h * D, row + h * 3 * D + D, size_t(D) * 4);
        std::memcpy(v + n * HD + h * D, row + h * 3 * D + 2 * D, size_t(D) * 4);
      }
    } else {
      std::memcpy(q + n * HD, row, size_t(HD) * 4);
      std::memcpy(k + n * HD, row + HD, size_t(HD) * 4);
      std::memcpy(v + n * HD, row + 2 * HD, size_t(HD) * 4);
    }
}

// Split a fused QKV projection output [N, 3·H·D] into q/k/v [N, H, D] (and the reverse for grads).
void split_qkv(const ModelConfig& c, const float* qkv, float* q, float* k, float* v, int64_t N) {
#pragma omp parallel for
  for (int64_t n = 0; n < N; n++) split_qkv_row(c, qkv, q, k, v, n);
}

void merge_qkv(const ModelConfig& c, float* qkv, const float* q, const float* k, const float* v, int64_t N) {
  const int64_t H = c.num_heads, D = c.head_dim, HD = H * D;
#pragma omp parallel for
  for (int64_t n = 0; n < N; n++) {
    float* row = qkv + n * 3 * HD;
    if (c.qkv_layout == QkvLayout::NeoxInterleaved) {
      for (int64_t h = 0; h < H; h++) {
        std::memcpy(row + h * 3 * D, q + n * HD + h * D, size_t(D) * 4);
        std::memcpy(row + h * 3 * D + D, k + n * HD + h * D, size_t(D) * 4);
        std::memcpy(row + h * 3 * D + 2 * D, v + n * HD + h * D, size_t(D) * 4);
      }
    } else {
      std::memcpy(row, q + n * HD, size_t(HD) * 4);
      std::memcpy(row + HD, k + n * HD, size_t(HD) * 4);
      std::memcpy(row + 2 * HD, v + n * HD, size_t(HD) * 4);
    }
  }
}

// Index of a linear module inside Block::linears(), for its LinearActs slot.
LinearActs* lin_acts(Block& b, BlockActs& a, const LinearModule& l) {
  auto ls = b.linears();
  for (size_t i = 0; i < ls.size(); i++)
    if (ls[i] == &l) return &a.lin[i];
  return nullptr;
}

struct AttnCtx {
  const int32_t* positions;
  const int32_t* q_seg;
  const int32_t* k_seg;
  KVCache* cache;  // inference only
  int layer;
};

// One block forward. x_in holds the block input and receives the block output in `out`.
void block_forward(Model& m, Block& b, BlockActs& a, const float* x_in, float* out, int64_t B, int64_t T,
                   const AttnCtx& ctx, Workspace& ws, Rng* rng) {
  const ModelConfig& c = m.cfg;
  const int64_t N = B * T, E = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const bool en = m.adapters_enabled;
  norm_forward(c, b.ln1, a.ln1.f32(), a.ln1_mean.f32(), a.ln1_rstd.f32(), x_in, N);
  if (c.qkv_layout == QkvLayout::Separate) {
    linear_module_forward(b.q, en, a.ln1.f32(), a.q.f32(), N, lin_acts(b, a, b.q), rng);
    linear_module_forward(b.k, en, a.ln1.f32(), a.k.f32(), N, lin_acts(b, a, b.k), rng);
    linear_module_forward(b.v, en, a.ln1.f32(), a.v.f32(), N, lin_acts(b, a, b.v), rng);
  } else {
    linear_module_forward(b.qkv, en, a.ln1.f32(), ws.tmp_qkv.f32(), N, lin_acts(b, a, b.qkv), rng);
    split_qkv(c, ws.tmp_qkv.f32(), a.q.f32(), a.k.f32(), a.v.f32(), N);
  }
  if (c.use_rope) {
    rope_forward(a.q.f32(), ctx.positions, N, H, D, H * D, m.rope);
    rope_forward(a.k.f32(), ctx.positions, N, Hkv, D, Hkv * D, m.rope);
  }
  AttentionDims ad;
  ad.B = B;
  ad.Tq = T;
  ad.H = H;
  ad.Hkv = Hkv;
  ad.D = D;
  if (ctx.cache) {
    KVCache& kc = *ctx.cache;
    Tensor& kt = kc.k[size_t(ctx.layer)];
    Tensor& vt = kc.v[size_t(ctx.layer)];
    for (int64_t bi = 0; bi < B; bi++)
      for (int64_t t = 0; t < T; t++) {
        size_t dst = size_t(((bi * kc.cap) + kc.len + t) * Hkv * D);
        size_t src = size_t((bi * T + t) * Hkv * D);
        std::memcpy(kt.f32() + dst, a.k.f32() + src, size_t(Hkv * D) * 4);
        std::memcpy(vt.f32() + dst, a.v.f32() + src, size_t(Hkv * D) * 4);
      }
    ad.Tk = kc.len + T;
    ad.kv_cap = kc.cap;
    attention_forward(a.attn.f32(), a.lse.f32(), a.q.f32(), kt.f32(), vt.f32(), ctx.q_seg, ctx.k_seg, ad);
  } else {
    ad.Tk = T;
    attention_forward(a.attn.f32(), a.lse.f32(), a.q.f32(), a.k.f32(), a.v.f32(), ctx.q_seg, ctx.k_seg, ad);
  }
  float* attn_out = ws.tmp_e.f32();
  linear_module_forward(b.o, en, a.attn.f32(), attn_out, N, lin_acts(b, a, b.o), rng);

  const float* mlp_in_src;
  if (c.parallel_residual) {
    mlp_in_src = x_in;
  } else {
#pragma omp parallel for
    for (int64_t i = 0; i < N * E; i++) a.x_mid.f32()[i] = x_in[i] + attn_out[i];
    mlp_in_src = a.x_mid.f32();
  }
  norm_forward(c, b.ln2, a.ln2.f32(), a.ln2_mean.f32(), a.ln2_rstd.f32(), mlp_in_src, N);
  float* mlp_out = ws.tmp_e2.f32();
  const int64_t I = c.intermediate_size;
  if (c.gated_mlp) {
    linear_module_forward(b.gate, en, a.ln2.f32(), a.h1.f32(), N, lin_acts(b, a, b.gate), rng);
    linear_module_forward(b.up, en, a.ln2.f32(), a.up.f32(), N, lin_acts(b, a, b.up), rng);
    swiglu_forward(a.act.f32(), a.h1.f32(), a.up.f32(), N * I);
    linear_module_forward(b.down, en, a.act.f32(), mlp_out, N, lin_acts(b, a, b.down), rng);
  } else {
    linear_module_forward(b.fc_in, en, a.ln2.f32(), a.h1.f32(), N, lin_acts(b, a, b.fc_in), rng);
    activation_forward(a.act.f32(), a.h1.f32(), N * I, c.act);
    linear_module_forward(b.fc_out, en, a.act.f32(), mlp_out, N, lin_acts(b, a, b.fc_out), rng);
  }
  if (c.parallel_residual) {
#pragma omp parallel for
    for (int64_t i = 0; i < N * E; i++) out[i] = x_in[i] + attn_out[i] + mlp_out[i];
  } else {
#pragma omp parallel for
    for (int64_t i = 0; i < N * E; i++) out[i] = a.x_mid.f32()[i] + mlp_out[i];
  }
}

// Backward of one block: ws.d_resid holds ∂L/∂out on entry and ∂L/∂x_in on exit.
void block_backward(Model& m, Block& b, BlockActs& a, int64_t B, int64_t T, const AttnCtx& ctx, Workspace& ws,
                    bool need_dx) {
  const ModelConfig& c = m.cfg;
  const int64_t N = B * T, E = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const int64_t I = c.intermediate_size;
  const bool en = m.adapters_enabled;
  float* d_resid = ws.d_resid.f32();
  (void)E;

  // Which input gradients are needed. need_dx: ∂L/∂x_in for the blocks below. In the lowest
  // trainable block (LoRA on q/k/v: block 0) most input-gradient products feed nothing and are
  // skipped: for Pythia-160m that is the fc_out, fc_in and qkv input products of block 0 (~2.5% of
  // a LoRA step). Sequential residual: ∂L/∂x_mid reaches the attention branch through the MLP.
  auto any_trainable = [&](std::initializer_list<const LinearModule*> ls) {
    for (const LinearModule* l : ls)
      if (linear_trainable(*l, en)) return true;
    return false;
  };
  const bool qkv_trainable = c.qkv_layout == QkvLayout::Separate ? any_trainable({&b.q, &b.k, &b.v})
                                                                  : any_trainable({&b.qkv});
  const bool mlp_in_trainable = c.gated_mlp ? any_trainable({&b.gate, &b.up}) : any_trainable({&b.fc_in});
  const bool attention_trainable = norm_trainable(b.ln1) || qkv_trainable || linear_trainable(b.o, en);
  const bool need_d_x_mid = need_dx || (!c.parallel_residual && attention_trainable);  // through ln2
  const bool need_d_ln2 = need_d_x_mid || norm_trainable(b.ln2);
  const bool need_d_act = need_d_ln2 || mlp_in_trainable;
  const bool need_d_ln1 = need_dx || norm_trainable(b.ln1);
  const bool need_d_attn = need_d_ln1 || qkv_trainable;
  const bool run_o_proj = need_d_attn || linear_trainable(b.o, en);

  // Both branches read d_resid (= ∂L/∂out) before any norm backward adds into it.
  LinearModule& mlp_out_l = c.gated_mlp ? b.down : b.fc_out;
  if (need_d_act) zero(ws.d_act);
  linear_module_backward(mlp_out_l, en, d_resid, a.act.f32(), need_d_act ? ws.d_act.f32() : nullptr, N,
                         lin_acts(b, a, mlp_out_l));

  // ∂L/∂(o-proj input) into ws.d_attn from ∂L/∂(attention branch output).
  auto o_proj_backward = [&](const float* d_attn_out) {
    if (need_d_attn) zero(ws.d_attn);
    linear_module_backward(b.o, en, d_attn_out, a.attn.f32(), need_d_attn ? ws.d_attn.f32() : nullptr, N,
                           lin_acts(b, a, b.o));
  };
  // The rest of the attention branch, from ws.d_attn down to ∂L/∂ln1 in ws.d_ln.
  auto attention_branch = [&]() {
    zero(ws.d_q);
    zero(ws.d_k);
    zero(ws.d_v);
    AttentionDims ad;
    ad.B = B;
    ad.Tq = T;
    ad.Tk = T;
    ad.H = H;
    ad.Hkv = Hkv;
    ad.D = D;
    attention_backward(ws.d_q.f32(), ws.d_k.f32(), ws.d_v.f32(), ws.d_attn.f32(), a.attn.f32(), a.lse.f32(),
                       a.q.f32(), a.k.f32(), a.v.f32(), ctx.q_seg, ctx.k_seg, ad);
    if (c.use_rope) {
      rope_backward(ws.d_q.f32(), ctx.positions, N, H, D, H * D, m.rope);
      rope_backward(ws.d_k.f32(), ctx.positions, N, Hkv, D, Hkv * D, m.rope);
    }
    float* d_ln1 = need_d_ln1 ? ws.d_ln.f32() : nullptr;
    if (need_d_ln1) zero(ws.d_ln);
    if (c.qkv_layout == QkvLayout::Separate) {
      linear_module_backward(b.q, en, ws.d_q.f32(), a.ln1.f32(), d_ln1, N, lin_acts(b, a, b.q));
      linear_module_backward(b.k, en, ws.d_k.f32(), a.ln1.f32(), d_ln1, N, lin_acts(b, a, b.k));
      linear_module_backward(b.v, en, ws.d_v.f32(), a.ln1.f32(), d_ln1, N, lin_acts(b, a, b.v));
    } else {
      merge_qkv(c, ws.d_qkv.f32(), ws.d_q.f32(), ws.d_k.f32(), ws.d_v.f32(), N);
      linear_module_backward(b.qkv, en, ws.d_qkv.f32(), a.ln1.f32(), d_ln1, N, lin_acts(b, a, b.qkv));
    }
  };

  // Parallel residual: the o-proj backward also reads ∂L/∂out, so it runs now, before the ln2 norm
  // backward accumulates into d_resid (this order needs no copy of d_resid).
  if (c.parallel_residual && run_o_proj) o_proj_backward(d_resid);

  // MLP branch rest: activation backward → input projections → ln2. The activation backward
  // overwrites d_h1 / d_up (accumulate = false), so they need no zero-fill.
  if (need_d_act) {
    float* d_ln2 = need_d_ln2 ? ws.d_ln.f32() : nullptr;
    if (need_d_ln2) zero(ws.d_ln);
    if (c.gated_mlp) {
      swiglu_backward(ws.d_h1.f32(), ws.d_up.f32(), ws.d_act.f32(), a.h1.f32(), a.up.f32(), N * I, false);
      linear_module_backward(b.gate, en, ws.d_h1.f32(), a.ln2.f32(), d_ln2, N, lin_acts(b, a, b.gate));
      linear_module_backward(b.up, en, ws.d_up.f32(), a.ln2.f32(), d_ln2, N, lin_acts(b, a, b.up));
    } else {
      activation_backward(ws.d_h1.f32(), ws.d_act.f32(), a.h1.f32(), N * I, c.act, false);
      linear_module_backward(b.fc_in, en, ws.d_h1.f32(), a.ln2.f32(), d_ln2, N, lin_acts(b, a, b.fc_in));
    }
  }
  if (need_d_ln2) {
    const float* ln2_in = c.parallel_residual ? a.x_in.f32() : a.x_mid.f32();
    norm_backward(c, b.ln2, need_d_x_mid ? d_resid : nullptr, ws.d_ln.f32(), ln2_in, a.ln2_mean.f32(),
                  a.ln2_rstd.f32(), N);
  }
  // Now d_resid = ∂L/∂x_in (parallel, partial) or ∂L/∂x_mid (sequential), where needed.

  if (!c.parallel_residual && run_o_proj) o_proj_backward(d_resid);  // d_resid = ∂L/∂x_mid here
  if (need_d_attn) attention_branch();
  if (need_d_ln1)
    norm_backward(c, b.ln1, need_dx ? d_resid : nullptr, ws.d_ln.f32(), a.x_in.f32(), a.ln1_mean.f32(),
                  a.ln1_rstd.f32(), N);
}

}  // namespace

void Workspace::ensure(const Model& m, int64_t B_, int64_t T_) {
  const ModelConfig& c = m.cfg;
  const int64_t N = B_ * T_, E = c.hidden_size, I = c.intermediate_size;
  const int64_t QD = c.q_dim(), KD = c.kv_dim();
  // Per layer: does the backward read act (fc_out / down can train) and ln2 (fc_in / gate / up can)?
  // LoRA counts whether or not adapters are enabled right now. Checkpointing shares one block anyway.
  std::vector<uint8_t> kept(size_t(c.num_layers), 3);
  if (!gradient_checkpointing)
    for (size_t li = 0; li < kept.size(); li++) {
      const Block& b = m.blocks[li];
      const bool act = linear_trainable(c.gated_mlp ? b.down : b.fc_out, true);
      const bool ln2 = c.gated_mlp ? linear_trainable(b.gate, true) || linear_trainable(b.up, true)
                                   : linear_trainable(b.fc_in, true);
      kept[li] = uint8_t((act ? 1 : 0) | (ln2 ? 2 : 0));
    }
  if (B_ == B && T_ == T && !blocks.empty() && allocated_checkpointing == gradient_checkpointing &&
      kept == kept_mlp_acts)
    return;
  kept_mlp_acts = kept;
  B = B_;
  T = T_;
  allocated_checkpointing = gradient_checkpointing;
  ckpt_layer = -1;
  blocks.resize(size_t(c.num_layers));
  // Checkpointing: per layer only the input; the rest of one block's activations live in ckpt.
  std::vector<BlockActs*> full;
  if (gradient_checkpointing) {
    for (BlockActs& a : blocks) {
      Tensor x_in = std::move(a.x_in);
      a = BlockActs{};  // frees anything a stored-mode workspace held
      a.x_in = std::move(x_in);
      ensure_tensor(a.x_in, {N, E});
    }
    if (!blocks.empty()) full.push_back(&ckpt);
  } else {
    ckpt = BlockActs{};
    for (BlockActs& a : blocks) full.push_back(&a);
  }
  // The shared stand-ins exist only while some layer uses them (sized first: the views point into them).
  auto size_shared = [&](Tensor& shared, uint8_t bit, const Shape& shape) {
    const bool used = std::any_of(kept.begin(), kept.end(), [&](uint8_t k) { return !(k & bit); });
    if (used) ensure_tensor(shared, shape);
    else shared = Tensor{};
  };
  size_shared(shared_act, 1, {N, I});
  size_shared(shared_ln2, 2, {N, E});
  for (size_t li = 0; li < full.size(); li++) {
    BlockActs& a = *full[li];
    if (!gradient_checkpointing) ensure_tensor(a.x_in, {N, E});
    ensure_tensor(a.ln1, {N, E});
    ensure_tensor(a.ln1_mean, {N});
    ensure_tensor(a.ln1_rstd, {N});
    ensure_tensor(a.q, {N, QD});
    ensure_tensor(a.k, {N, KD});
    ensure_tensor(a.v, {N, KD});
    ensure_tensor(a.attn, {N, QD});
    ensure_tensor(a.lse, {B_, c.num_heads, T_});
    if (!c.parallel_residual) ensure_tensor(a.x_mid, {N, E});
    ensure_own_or_shared(a.ln2, shared_ln2, {N, E}, gradient_checkpointing || (kept[li] & 2));
    ensure_tensor(a.ln2_mean, {N});
    ensure_tensor(a.ln2_rstd, {N});
    ensure_tensor(a.h1, {N, I});
    if (c.gated_mlp) ensure_tensor(a.up, {N, I});
    ensure_own_or_shared(a.act, shared_act, {N, I}, gradient_checkpointing || (kept[li] & 1));
    a.lin.resize(10);
  }
  ensure_tensor(x_final, {N, E});
  ensure_tensor(h_final, {N, E});
  ensure_tensor(fn_mean, {N});
  ensure_tensor(fn_rstd, {N});
  ensure_tensor(d_final, {N, E});
  ensure_tensor(tmp_e, {N, E});
  ensure_tensor(tmp_e2, {N, E});
  ensure_tensor(tmp_qkv, {N, QD + 2 * KD});
  ensure_tensor(d_resid, {N, E});
  ensure_tensor(d_ln, {N, E});
  ensure_tensor(d_q, {N, QD});
  ensure_tensor(d_k, {N, KD});
  ensure_tensor(d_v, {N, KD});
  ensure_tensor(d_attn, {N, QD});
  ensure_tensor(d_qkv, {N, QD + 2 * KD});
  ensure_tensor(d_h1, {N, I});
  if (c.gated_mlp) ensure_tensor(d_up, {N, I});
  ensure_tensor(d_act, {N, I});
}

int64_t Workspace::bytes() const {
  int64_t n = 0;
  auto add = [&](const Tensor& t) {
    const bool shared_view = t.defined() && ((shared_act.defined() && t.owner == shared_act.owner) ||
                                             (shared_ln2.defined() && t.owner == shared_ln2.owner));
    if (t.defined() && !shared_view) n += int64_t(t.nbytes());
  };
  auto add_block = [&](const BlockActs& a) {
    for (const Tensor* t : {&a.x_in, &a.ln1, &a.ln1_mean, &a.ln1_rstd, &a.q, &a.k, &a.v, &a.attn, &a.lse,
                            &a.x_mid, &a.ln2, &a.ln2_mean, &a.ln2_rstd, &a.h1, &a.up, &a.act})
      add(*t);
    for (const LinearActs& l : a.lin) {
      add(l.xa);
      add(l.xd);
      add(l.mask);
    }
  };
  for (const BlockActs& a : blocks) add_block(a);
  add_block(ckpt);
  for (const Tensor* t : {&x_final, &h_final, &fn_mean, &fn_rstd, &d_final, &tmp_e, &tmp_e2, &tmp_qkv, &d_resid,
                          &d_ln, &d_q, &d_k, &d_v, &d_attn, &d_qkv, &d_h1, &d_up, &d_act})
    add(*t);
  for (const Tensor* t : {&shared_act, &shared_ln2})
    if (t->defined()) n += int64_t(t->nbytes());
  return n;
}

namespace {
void resolve_positions(Workspace& ws, const DecoderInput& in) {
  ws.positions.resize(size_t(in.B * in.T));
  for (int64_t b = 0; b < in.B; b++)
    for (int64_t t = 0; t < in.T; t++)
      ws.positions[size_t(b * in.T + t)] = in.positions ? in.positions[b * in.T + t] : int32_t(t);
}

// Checkpointing: runs block li's forward in the shared ckpt acts, its input borrowed from
// blocks[li].x_in (swapped in and back, so block_backward finds the input where it expects it).
void run_block_in_ckpt(Model& m, Workspace& ws, size_t li, float* out, int64_t B, int64_t T, const AttnCtx& ctx,
                       Rng* rng) {
  std::swap(ws.ckpt.x_in, ws.blocks[li].x_in);
  block_forward(m, m.blocks[li], ws.ckpt, ws.ckpt.x_in.f32(), out, B, T, ctx, ws, rng);
  std::swap(ws.ckpt.x_in, ws.blocks[li].x_in);
  ws.ckpt_layer = int64_t(li);
}

void embed_forward(Model& m, float* x, const int32_t* ids, const int32_t* positions, int64_t N) {
  const ModelConfig& c = m.cfg;
  embedding_forward(x, ids, m.embed->value.f32(), N, c.hidden_size, c.vocab_size);
  if (m.pos_embed) {
    for (int64_t i = 0; i < N; i++)
      if (positions[i] < 0 || positions[i] >= c.max_position_embeddings)
        fail("position ", positions[i], " is outside the model's context of ", c.max_position_embeddings,
             " tokens (n_positions): shorten the input");
    // Position rows added in place (no [N, E] temporary).
    const int64_t E = c.hidden_size;
    const float* table = m.pos_embed->value.f32();
#pragma omp parallel for schedule(static) if (N * E > (1 << 15))
    for (int64_t i = 0; i < N; i++) {
      const float* row = table + int64_t(positions[i]) * E;
      float* xi = x + i * E;
      for (int64_t e = 0; e < E; e++) xi[e] += row[e];
    }
  }
}
}  // namespace

void decoder_forward(Model& m, Workspace& ws, const DecoderInput& in) {
  ProfileScope profile_scope("decoder fwd glue (embed, residual, split)");
  const ModelConfig& c = m.cfg;
  ws.ensure(m, in.B, in.T);
  resolve_positions(ws, in);
  const int64_t N = in.B * in.T, E = c.hidden_size;
  if (c.use_rope)
    for (int32_t p : ws.positions)
      if (p < 0 || p >= m.rope.max_pos)
        fail("position ", p, " is outside the model's context of ", m.rope.max_pos,
             " tokens (max_position_embeddings): shorten the input");
  float* x0 = ws.blocks.empty() ? ws.x_final.f32() : ws.blocks[0].x_in.f32();
  embed_forward(m, x0, in.ids, ws.positions.data(), N);
  AttnCtx ctx{ws.positions.data(), in.segments, in.segments, nullptr, 0};
  if (ws.gradient_checkpointing) {
    ws.ckpt_rng.resize(m.blocks.size());
    ws.ckpt_rng_used = in.dropout_rng != nullptr;
  }
  for (size_t li = 0; li < m.blocks.size(); li++) {
    float* out = li + 1 < m.blocks.size() ? ws.blocks[li + 1].x_in.f32() : ws.x_final.f32();
    ctx.layer = int(li);
    if (ws.gradient_checkpointing) {
      if (in.dropout_rng) ws.ckpt_rng[li] = *in.dropout_rng;
      run_block_in_ckpt(m, ws, li, out, in.B, in.T, ctx, in.dropout_rng);
    } else {
      block_forward(m, m.blocks[li], ws.blocks[li], ws.blocks[li].x_in.f32(), out, in.B, in.T, ctx, ws,
                    in.dropout_rng);
    }
  }
  norm_forward(c, m.final_norm, ws.h_final.f32(), ws.fn_mean.f32(), ws.fn_rstd.f32(), ws.x_final.f32(), N);
  (void)E;
}

LossSum decoder_lm_loss(Model& m, Workspace& ws, const int32_t* targets, float grad_scale, bool backward,
                        float* token_logp) {
  ProfileScope profile_scope("decoder loss glue");
  const ModelConfig& c = m.cfg;
  const int64_t N = ws.B * ws.T;
  if (!m.lm_head.weight)
    fail(c.architecture, " has no LM head (a sequence-classification model): use the classification head");
  float* dh = nullptr;
  if (backward) {
    zero(ws.d_final);
    dh = ws.d_final.f32();
  }
  float* dW = backward ? gradp(m.lm_head.weight) : nullptr;
  return lm_head_loss(ws.h_final.f32(), m.lm_head.view(), nullptr, targets, N, c.hidden_size, c.vocab_size,
                      grad_scale, dh, dW, token_logp);
}

void decoder_backward(Model& m, Workspace& ws, const DecoderInput& in) {
  ProfileScope profile_scope("decoder bwd glue (residual, merge, memset)");
  const ModelConfig& c = m.cfg;
  const int64_t N = in.B * in.T;
  const bool embed_trainable = (m.embed->trainable) || (m.pos_embed && m.pos_embed->trainable);
  // Lowest block that needs gradients: below it nothing is trainable, so backward can stop.
  int64_t lowest = embed_trainable ? -1 : int64_t(m.blocks.size());
  if (!embed_trainable)
    for (size_t li = 0; li < m.blocks.size(); li++)
      if (block_trainable(m.blocks[li], m.adapters_enabled)) {
        lowest = int64_t(li);
        break;
      }
  const bool need_final_dx = lowest < int64_t(m.blocks.size());
  zero(ws.d_resid);
  if (need_final_dx || norm_trainable(m.final_norm))
    norm_backward(c, m.final_norm, need_final_dx ? ws.d_resid.f32() : nullptr, ws.d_final.f32(),
                  ws.x_final.f32(), ws.fn_mean.f32(), ws.fn_rstd.f32(), N);
  if (!need_final_dx) return;
  AttnCtx ctx{ws.positions.data(), in.segments, in.segments, nullptr, 0};
  for (int64_t li = int64_t(m.blocks.size()) - 1; li >= std::max<int64_t>(lowest, 0); li--) {
    ctx.layer = int(li);
    bool need_dx = li > lowest || embed_trainable;
    if (ws.gradient_checkpointing) {
      // Recompute this block's activations (the top block's are still in ckpt after the forward).
      // The forward's block output went to the next block's input / x_final, which backward no
      // longer reads, so the recompute writes it to scratch. d_resid is untouched by a forward;
      // tmp_e/tmp_e2 are clobbered, and block_backward does not read them.
      if (ws.ckpt_layer != li) {
        Rng rng = ws.ckpt_rng_used ? ws.ckpt_rng[size_t(li)] : Rng();
        run_block_in_ckpt(m, ws, size_t(li), ws.d_final.f32(), in.B, in.T, ctx,
                          ws.ckpt_rng_used ? &rng : nullptr);
      }
      std::swap(ws.ckpt.x_in, ws.blocks[size_t(li)].x_in);
      block_backward(m, m.blocks[size_t(li)], ws.ckpt, in.B, in.T, ctx, ws, need_dx);
      std::swap(ws.ckpt.x_in, ws.blocks[size_t(li)].x_in);
      ws.ckpt_layer = -1;  // backward may have overwritten the acts it consumed
    } else {
      block_backward(m, m.blocks[size_t(li)], ws.blocks[size_t(li)], in.B, in.T, ctx, ws, need_dx);
    }
  }
  if (embed_trainable) {
    if (m.embed->trainable)
      embedding_backward(m.embed->grad.f32(), ws.d_resid.f32(), in.ids, N, c.hidden_size);
    if (m.pos_embed && m.pos_embed->trainable)
      embedding_backward(m.pos_embed->grad.f32(), ws.d_resid.f32(), ws.positions.data(), N, c.hidden_size);
  }
}

void KVCache::init(const Model& m, int64_t B_, int64_t cap_) {
  const ModelConfig& c = m.cfg;
  B = B_;
  cap = cap_;
  len = 0;
  k.assign(size_t(c.num_layers), Tensor{});
  v.assign(size_t(c.num_layers), Tensor{});
  for (int64_t l = 0; l < c.num_layers; l++) {
    k[size_t(l)] = Tensor::zeros({B, cap, c.num_kv_heads, c.head_dim});
    v[size_t(l)] = Tensor::zeros({B, cap, c.num_kv_heads, c.head_dim});
  }
  seg.assign(size_t(B * cap), -1);
}

namespace {
// The reference cached forward: the training block forward in the Workspace, one oneDNN call per linear.
void decoder_forward_cached_generic(Model& m, KVCache& cache, Workspace& ws, const int32_t* ids,
                                    const int32_t* positions, const int32_t* seg_new, int64_t Tq,
                                    float* logits_last) {
  const ModelConfig& c = m.cfg;
  const int64_t B = cache.B, N = B * Tq;
  if (!m.lm_head.weight)
    fail(c.architecture, " has no LM head (a sequence-classification model): it cannot generate text");
  if (cache.len + Tq > cache.cap)
    fail("the sequence would grow to ", cache.len + Tq, " tokens, more than the ", cache.cap,
         " the KV cache holds (model context ", c.max_position_embeddings, ")");
  ws.ensure(m, B, Tq);
  ws.positions.assign(positions, positions + N);
  if (c.use_rope)
    for (int32_t p : ws.positions)
      if (p < 0 || p >= m.rope.max_pos)
        fail("position ", p, " is outside the model's context of ", m.rope.max_pos,
             " tokens (max_position_embeddings): use a shorter prompt or fewer new tokens");
  std::vector<int32_t> q_seg(size_t(N), 0);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < Tq; t++) {
      int32_t s = seg_new ? seg_new[b * Tq + t] : 0;
      q_seg[size_t(b * Tq + t)] = s;
      cache.seg[size_t(b * cache.cap + cache.len + t)] = s;
    }
  // Padding queries (-1) attend only to padding keys; a real token never sees padding.
  float* x0 = ws.blocks.empty() ? ws.x_final.f32() : ws.blocks[0].x_in.f32();
  embed_forward(m, x0, ids, ws.positions.data(), N);
  AttnCtx ctx{ws.positions.data(), q_seg.data(), nullptr, &cache, 0};
  // k_seg must be [B, Tk] with Tk = len + Tq packed rows; the cache keeps it with stride cap.
  std::vector<int32_t> k_seg(size_t(B * (cache.len + Tq)));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < cache.len + Tq; t++)
      k_seg[size_t(b * (cache.len + Tq) + t)] = cache.seg[size_t(b * cache.cap + t)];
  ctx.k_seg = k_seg.data();
  for (size_t li = 0; li < m.blocks.size(); li++) {
    float* out = li + 1 < m.blocks.size() ? ws.blocks[li + 1].x_in.f32() : ws.x_final.f32();
    ctx.layer = int(li);
    if (ws.gradient_checkpointing)
      run_block_in_ckpt(m, ws, li, out, B, Tq, ctx, nullptr);
    else
      block_forward(m, m.blocks[li], ws.blocks[li], ws.blocks[li].x_in.f32(), out, B, Tq, ctx, ws, nullptr);
  }
  cache.len += Tq;
  // Final norm and LM head only for each row's last new token.
  const int64_t E = c.hidden_size;
  Tensor last = Tensor::zeros({B, E}), normed = Tensor::zeros({B, E}), mean = Tensor::zeros({B}),
         rstd = Tensor::zeros({B});
  for (int64_t b = 0; b < B; b++)
    std::memcpy(last.f32() + b * E, ws.x_final.f32() + (b * Tq + Tq - 1) * E, size_t(E) * 4);
  norm_forward(c, m.final_norm, normed.f32(), mean.f32(), rstd.f32(), last.f32(), B);
  linear_forward(logits_last, normed.f32(), m.lm_head.view(), nullptr, B, E, c.vocab_size);
}
}  // namespace

// ---- fast cached forward (generation): one scratch set for all layers, GEMV linears and the decode
// attention kernel for decode steps, sliced one-thread GEMMs and query blocks of the flash kernel for
// the prompt pass; the parallel work runs on the decode pool (kernels/decode_pool.h); no allocation per
// decode step once sized. ----
namespace {

// Element counts below which elementwise loops stay on one thread (a fork/join costs more).
constexpr int64_t kSerialElems = 1 << 16;
// New tokens per row up to which attention runs the decode kernel (beyond: the flash-style kernel).
constexpr int64_t kDecodeAttentionMaxTq = 8;

void size_scratch(const Model& m, DecodeScratch& s, int64_t N) {
  if (N <= s.rows) return;
  const ModelConfig& c = m.cfg;
  const int64_t E = c.hidden_size, I = c.intermediate_size, QD = c.q_dim(), KD = c.kv_dim();
  s = DecodeScratch{};
  s.rows = N;
  auto mk = [](Tensor& t, int64_t rows, int64_t cols) { t = Tensor::zeros({rows, cols}); };
  mk(s.x, N, E);
  mk(s.x_next, N, E);
  mk(s.ln, N, E);
  mk(s.mean, N, 1);
  mk(s.rstd, N, 1);
  mk(s.q, N, QD);
  mk(s.k, N, KD);
  mk(s.v, N, KD);
  if (c.qkv_layout != QkvLayout::Separate) mk(s.qkv, N, QD + 2 * KD);
  mk(s.attn, N, QD);
  mk(s.attn_out, N, E);
  if (!c.parallel_residual) mk(s.x_mid, N, E);
  mk(s.h1, N, I);
  if (c.gated_mlp) mk(s.up, N, I);
  mk(s.act, N, I);
  mk(s.mlp_out, N, E);
  mk(s.last, N, E);  // B <= N rows used
  mk(s.normed, N, E);
}

// Token embeddings (+ learned positions, GPT-2) of N tokens into x, without temporaries.
void embed_fast(Model& m, float* x, const int32_t* ids, const int32_t* positions, int64_t N) {
  const ModelConfig& c = m.cfg;
  const int64_t E = c.hidden_size;
  embedding_forward(x, ids, m.embed->value.f32(), N, E, c.vocab_size);
  if (!m.pos_embed) return;
  const float* table = m.pos_embed->value.f32();
  for (int64_t i = 0; i < N; i++) {
    if (positions[i] < 0 || positions[i] >= c.max_position_embeddings)
      fail("position ", positions[i], " is outside the model's context of ", c.max_position_embeddings,
           " tokens (n_positions): shorten the input");
    const float* row = table + int64_t(positions[i]) * E;
    float* xi = x + i * E;
    for (int64_t e = 0; e < E; e++) xi[e] += row[e];
  }
}

void split_qkv_fast(const ModelConfig& c, const float* qkv, float* q, float* k, float* v, int64_t N) {
  if (N * (c.q_dim() + 2 * c.kv_dim()) > kSerialElems) return split_qkv(c, qkv, q, k, v, N);
  for (int64_t n = 0; n < N; n++) split_qkv_row(c, qkv, q, k, v, n);
}

// out[i] = a[i] + b[i] (+ c[i] when c is non-null).
void add_rows(float* out, const float* a, const float* b, const float* c, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kSerialElems)
  for (int64_t i = 0; i < n; i++) out[i] = c ? a[i] + b[i] + c[i] : a[i] + b[i];
}

// fn(begin, end) over [0, n) in pool chunks of 64Ki elements (one chunk below that).
template <typename F>
void elementwise_on_pool(int64_t n, F&& fn) {
  constexpr int64_t kChunk = 1 << 16;
  run_chunks((n + kChunk - 1) / kChunk, [&](int64_t c) { fn(c * kChunk, std::min(n, (c + 1) * kChunk)); });
}

void linear_decode(const LinearModule& l, bool en, const float* x, float* y, int64_t N) {
  const LinearModule* mods[1] = {&l};
  float* ys[1] = {y};
  linear_modules_inference(mods, ys, 1, en, x, N);
}

// One block for N = B·Tq new tokens; k/v of the new tokens are appended to the cache at kc.len.
void block_forward_fast(Model& m, Block& b, DecodeScratch& s, const float* x_in, float* out, int64_t B,
                        int64_t Tq, const int32_t* positions, const int32_t* q_seg, KVCache& kc, size_t layer) {
  const ModelConfig& c = m.cfg;
  const int64_t N = B * Tq, E = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  const int64_t I = c.intermediate_size, KD = Hkv * D;
  const bool en = m.adapters_enabled;
  norm_forward(c, b.ln1, s.ln.f32(), s.mean.f32(), s.rstd.f32(), x_in, N);
  if (c.qkv_layout == QkvLayout::Separate) {
    const LinearModule* mods[3] = {&b.q, &b.k, &b.v};
    float* ys[3] = {s.q.f32(), s.k.f32(), s.v.f32()};
    linear_modules_inference(mods, ys, 3, en, s.ln.f32(), N);
  } else {
    linear_decode(b.qkv, en, s.ln.f32(), s.qkv.f32(), N);
    split_qkv_fast(c, s.qkv.f32(), s.q.f32(), s.k.f32(), s.v.f32(), N);
  }
  if (c.use_rope) {
    rope_forward(s.q.f32(), positions, N, H, D, H * D, m.rope);
    rope_forward(s.k.f32(), positions, N, Hkv, D, KD, m.rope);
  }
  float* kt = kc.k[layer].f32();
  float* vt = kc.v[layer].f32();
  for (int64_t bi = 0; bi < B; bi++) {
    const size_t dst = size_t((bi * kc.cap + kc.len) * KD), src = size_t(bi * Tq * KD);
    std::memcpy(kt + dst, s.k.f32() + src, size_t(Tq * KD) * 4);
    std::memcpy(vt + dst, s.v.f32() + src, size_t(Tq * KD) * 4);
  }
  AttentionDims ad;
  ad.B = B, ad.Tq = Tq, ad.Tk = kc.len + Tq, ad.H = H, ad.Hkv = Hkv, ad.D = D, ad.kv_cap = kc.cap;
  if (Tq <= kDecodeAttentionMaxTq) {
    attention_decode_forward(s.attn.f32(), s.q.f32(), kt, vt, q_seg, kc.seg.data(), kc.cap, ad);
  } else {
    // Prompt pass: the flash-style kernel (blocked over keys; ~4x faster than the decode kernel on 128
    // queries) on blocks of queries of one row each, as pool chunks; later blocks see more keys, the
    // dynamic claiming balances that. k_seg is packed [B, Tk] by the caller.
    constexpr int64_t kQueries = 32;
    const int64_t blocks = (Tq + kQueries - 1) / kQueries, QD = H * D, Tk_all = kc.len + Tq;
    run_chunks(B * blocks, [&](int64_t c) {
      const int64_t bi = c / blocks, i0 = (c % blocks) * kQueries, i1 = std::min(Tq, i0 + kQueries);
      AttentionDims d1 = ad;
      d1.B = 1, d1.Tq = i1 - i0, d1.Tk = kc.len + i1;
      thread_local std::vector<float> lse;
      if (int64_t(lse.size()) < H * kQueries) lse.resize(size_t(H * kQueries));
      const int64_t q_off = (bi * Tq + i0) * QD, kv_off = bi * kc.cap * KD;
      attention_forward(s.attn.f32() + q_off, lse.data(), s.q.f32() + q_off, kt + kv_off, vt + kv_off,
                        q_seg + bi * Tq + i0, s.k_seg.data() + bi * Tk_all, d1);
    });
  }
  linear_decode(b.o, en, s.attn.f32(), s.attn_out.f32(), N);

  const float* mlp_in = x_in;
  if (!c.parallel_residual) {
    add_rows(s.x_mid.f32(), x_in, s.attn_out.f32(), nullptr, N * E);
    mlp_in = s.x_mid.f32();
  }
  norm_forward(c, b.ln2, s.ln.f32(), s.mean.f32(), s.rstd.f32(), mlp_in, N);
  if (c.gated_mlp) {
    const LinearModule* mods[2] = {&b.gate, &b.up};
    float* ys[2] = {s.h1.f32(), s.up.f32()};
    linear_modules_inference(mods, ys, 2, en, s.ln.f32(), N);
    elementwise_on_pool(N * I, [&](int64_t i0, int64_t i1) {
      swiglu_forward(s.act.f32() + i0, s.h1.f32() + i0, s.up.f32() + i0, i1 - i0);
    });
    linear_decode(b.down, en, s.act.f32(), s.mlp_out.f32(), N);
  } else {
    linear_decode(b.fc_in, en, s.ln.f32(), s.h1.f32(), N);
    elementwise_on_pool(N * I, [&](int64_t i0, int64_t i1) {
      activation_forward(s.act.f32() + i0, s.h1.f32() + i0, i1 - i0, c.act);
    });
    linear_decode(b.fc_out, en, s.act.f32(), s.mlp_out.f32(), N);
  }
  if (c.parallel_residual) add_rows(out, x_in, s.attn_out.f32(), s.mlp_out.f32(), N * E);
  else add_rows(out, s.x_mid.f32(), s.mlp_out.f32(), nullptr, N * E);
}

void decoder_forward_cached_fast(Model& m, KVCache& cache, const int32_t* ids, const int32_t* positions,
                                 const int32_t* seg_new, int64_t Tq, float* logits_last) {
  const ModelConfig& c = m.cfg;
  const int64_t B = cache.B, N = B * Tq, E = c.hidden_size;
  DecodeScratch& s = cache.scratch;
  size_scratch(m, s, N);
  // Every OpenMP kernel of the step runs on this thread; the products and the attention spread over the
  // decode pool instead, which a busy machine does not stall (kernels/decode_pool.h).
  SerialOmpScope serial;
  if (c.use_rope)
    for (int64_t i = 0; i < N; i++)
      if (positions[i] < 0 || positions[i] >= m.rope.max_pos)
        fail("position ", positions[i], " is outside the model's context of ", m.rope.max_pos,
             " tokens (max_position_embeddings): use a shorter prompt or fewer new tokens");
  // Segments of the new tokens into the cache (attention reads the keys' segments from there); the
  // queries' are seg_new, or zeros when it is null.
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < Tq; t++)
      cache.seg[size_t(b * cache.cap + cache.len + t)] = seg_new ? seg_new[b * Tq + t] : 0;
  const int32_t* q_seg = seg_new;
  if (!q_seg) {
    s.q_seg.assign(size_t(N), 0);  // capacity kept across steps: no allocation per token
    q_seg = s.q_seg.data();
  }
  if (Tq > kDecodeAttentionMaxTq) {  // the prompt pass's flash kernel reads the keys' segments packed [B, Tk]
    const int64_t Tk = cache.len + Tq;
    s.k_seg.resize(size_t(B * Tk));
    for (int64_t b = 0; b < B; b++)
      std::memcpy(s.k_seg.data() + b * Tk, cache.seg.data() + b * cache.cap, size_t(Tk) * 4);
  }
  embed_fast(m, s.x.f32(), ids, positions, N);
  for (size_t li = 0; li < m.blocks.size(); li++) {
    block_forward_fast(m, m.blocks[li], s, s.x.f32(), s.x_next.f32(), B, Tq, positions, q_seg, cache, li);
    std::swap(s.x, s.x_next);
  }
  cache.len += Tq;
  // Final norm and LM head only for each row's last new token.
  for (int64_t b = 0; b < B; b++)
    std::memcpy(s.last.f32() + b * E, s.x.f32() + (b * Tq + Tq - 1) * E, size_t(E) * 4);
  norm_forward(c, m.final_norm, s.normed.f32(), s.mean.f32(), s.rstd.f32(), s.last.f32(), B);
  LinearModule& head = s.lm_head;
  head.weight = m.lm_head.weight;
  head.in = m.lm_head.in;
  head.out = m.lm_head.out;
  head.transposed = m.lm_head.transposed;
  const LinearModule* mods[1] = {&head};
  float* ys[1] = {logits_last};
  linear_modules_inference(mods, ys, 1, false, s.normed.f32(), B);
}

}  // namespace

void decoder_forward_cached(Model& m, KVCache& cache, Workspace& ws, const int32_t* ids, const int32_t* positions,
                            const int32_t* seg_new, int64_t Tq, float* logits_last) {
  const ModelConfig& c = m.cfg;
  if (!m.lm_head.weight)
    fail(c.architecture, " has no LM head (a sequence-classification model): it cannot generate text");
  if (cache.len + Tq > cache.cap)
    fail("the sequence would grow to ", cache.len + Tq, " tokens, more than the ", cache.cap,
         " the KV cache holds (model context ", c.max_position_embeddings, ")");
  if (Tq < 1) fail("decoder_forward_cached: no new tokens (Tq = ", Tq, ")");
  if (cache.fast) decoder_forward_cached_fast(m, cache, ids, positions, seg_new, Tq, logits_last);
  else decoder_forward_cached_generic(m, cache, ws, ids, positions, seg_new, Tq, logits_last);
}
}  // namespace llmtune
