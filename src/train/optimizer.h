// Optimizers over the trainable parameters of a Model: AdamW exactly as torch.optim.AdamW and plain
// SGD (torch.optim.SGD), Hugging Face's weight-decay groups, and optimizer state save/load.
//
// Choices and differences from Hugging Face / PyTorch (hf-semantics §4.5):
//  * "adamw_hf" and "adamw_torch_fused" run the same code as "adamw_torch" (the fused kernel is a
//    speed variant of the same math; old transformers' own AdamW differs from torch's only in
//    where eps is added, and we follow torch). optimizer_note() says so, for the caller to print.
//  * m/v live in f32 and the update is computed in f32 with double scalars (torch's f32 path).
//  * The state is written to `optimizer.safetensors` (exp_avg.<name>, exp_avg_sq.<name> or
//    momentum_buffer.<name>, plus an I64 scalar "step"), not a torch pickle.
//  * 8-bit AdamW (bitsandbytes AdamW8bit, hf-semantics §3.4): "adamw_8bit", "adamw_bnb_8bit" and
//    "paged_adamw_8bit"; "paged_adamw_32bit" is plain AdamW. Paging (CUDA unified memory) has no
//    meaning on CPU: the paged names run the same algorithm without it (optimizer_note says so).
//    8-bit states are written as state1/absmax1/state2/absmax2.<name> (U8 + F32).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/model.h"

namespace llmtune {

enum class OptimizerKind { AdamW, SGD, AdamW8bit };

// bitsandbytes' 8-bit state layout: blocks of 256, tensors under 4096 elements keep f32 states.
constexpr int64_t kAdam8bitBlock = 256;
constexpr int64_t kAdam8bitMinSize = 4096;

// Resolves a TrainingArguments.optim name; fails listing the valid names.
OptimizerKind parse_optimizer_name(const std::string& name);
// A one-line remark about an alias ("adamw_hf", "paged_*" …) for the caller to print once; "" when none.
std::string optimizer_note(const std::string& name);
// "adamw_torch, adamw, adamw_hf, adamw_torch_fused, sgd"
std::string valid_optimizer_names();

// HF's current no-decay rule on the lower-cased dotted name: contains "bias", "layernorm" or
// "rmsnorm", or has a component "norm" or a component ending in "_norm".
bool no_decay_by_name(const std::string& param_name);
// The rule above plus HF's module rule: every parameter of an nn.LayerNorm module (the model's
// LayerNorm norms, e.g. GPT-2's ln_1/ln_2/ln_f) is excluded too.
bool excluded_from_weight_decay(const Model& m, const Param& p);

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::AdamW;
  double weight_decay = 0.0;  // decoupled (AdamW) / L2 added to the gradient (SGD), decay group only
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double momentum = 0.0;  // SGD only
};

struct OptimizerParamState {
  Param* param = nullptr;
  bool decay = true;  // in the weight-decay group
  Tensor exp_avg;     // AdamW m, or SGD momentum buffer (only when momentum > 0)
  Tensor exp_avg_sq;  // AdamW v
  // AdamW8bit, tensors of ≥ 4096 elements that are not embeddings: m and v as blockwise dynamic
  // 8-bit codes (signed map for m, unsigned for v) with one f32 absmax per 256; exp_avg/exp_avg_sq
  // stay undefined. Other tensors keep the f32 states above.
  bool eight_bit = false;
  Tensor state1, absmax1, state2, absmax2;  // U8 [numel], F32 [blocks]
};

struct Optimizer {
  OptimizerConfig config;
  int64_t step_count = 0;  // optimizer steps taken (torch's per-param "step", the same for all)
  std::vector<OptimizerParamState> states;  // the trainable params, in Model::params order

  // One update of every trainable param from its gradient with learning rate `lr`.
  void step(double lr);
};

// The optimizer over m's trainable params (which must be f32 and have gradient buffers).
Optimizer make_optimizer(Model& m, const OptimizerConfig& config);

// Writes/reads `path` (optimizer.safetensors). Loading fails with "checkpoint optimizer state does
// not match the model: <path>: ..." when kinds, names or shapes differ.
void save_optimizer_state(const Optimizer& opt, const std::string& path);
void load_optimizer_state(Optimizer& opt, const std::string& path);

// ---- the per-tensor updates (exposed for tests) ----
// torch AdamW: p ← p(1−lr·wd); m ← β1m+(1−β1)g; v ← β2v+(1−β2)g²;
// p ← p − (lr/(1−β1^t))·m/(sqrt(v)/sqrt(1−β2^t) + eps)
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, double lr, double weight_decay,
                  double beta1, double beta2, double eps, int64_t step);
// bitsandbytes AdamW8bit on one tensor (§3.4): per 256-block, m, v = dequant(state); m ← β1m+(1−β1)g;
// v ← β2v+(1−β2)g²; p ← p(1−lr·wd); p ← p − (lr/(1−β1^t))·m/(sqrt(v)/sqrt(1−β2^t) + eps) with the f32
// m, v; then state, absmax ← blockwise_quant(m | v) (new absmax from the updated values).
void adamw8bit_update(float* p, const float* g, uint8_t* state1, float* absmax1, uint8_t* state2, float* absmax2,
                      int64_t n, double lr, double weight_decay, double beta1, double beta2, double eps,
                      int64_t step);
// torch SGD: d = g + wd·p; momentum: buf ← μ·buf + d (buf = d at step 1); p ← p − lr·(buf or d).
void sgd_update(float* p, const float* g, float* buf, int64_t n, double lr, double weight_decay, double momentum,
                int64_t step);

}  // namespace llmtune
