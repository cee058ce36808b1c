// A linear module with an optional LoRA branch: forward and backward (hf-semantics §1.5).
// The base weight is frozen or trainable; LoRA A/B get gradients; dropout applies to the LoRA input only.
#pragma once
#include <cstdint>

#include "core/rng.h"
#include "core/tensor.h"
#include "model/model.h"

namespace llmtune {

// What the LoRA branch keeps for backward.
struct LinearActs {
  Tensor xa;  // [N, r]  A(dropout(x))
  Tensor xd;    // [N, in] dropout(x), only when dropout > 0 in training
  Tensor mask;  // [N, in] U8 keep-mask of that dropout
  bool dropped = false;  // the last forward applied dropout
};

// y[N, out] = x·Wᵀ + b (+ scaling·B(A(dropout(x))) when the adapter is active and enabled).
// rng != null means training mode (dropout on). acts may be null when no backward will follow.
void linear_module_forward(const LinearModule& l, bool adapters_enabled, const float* x, float* y,
                           int64_t N, LinearActs* acts, Rng* rng);
// dx += dy·Wᵀ-path (+ LoRA path); grads of trainable W, b, A, B accumulate into their Param::grad.
// dx may be null when nothing below needs it.
void linear_module_backward(const LinearModule& l, bool adapters_enabled, const float* dy, const float* x,
                            float* dx, int64_t N, LinearActs* acts);

// Inference forward of n modules sharing the input x [N, in] (q/k/v, gate/up), as the cached
// (generation) forward runs them: no dropout, no stored activations. Work is spread with decode_pool
// (kernels/decode_pool.h), not OpenMP. With N <= kGemvMaxRows (a decode step) the base weights run as
// GEMVs (kernels/gemv.h) in one job; with more rows (a prompt), and for weights the GEMV does not take
// (GPT-2 Conv1D, 4-bit blocks straddling rows), as slices of output columns, each a one-thread matmul
// (quantized weights: the slice's rows dequantized first, as linear_q4/int8_forward do per tile).
// Numerics as linear_module_forward up to summation order, except that a 4-bit/int8 weight with
// bnb_4bit_compute_dtype bfloat16 computes decode steps in f32 (the GEMV is memory-bound either way).
// ys[i] receives module i's output [N, out_i].
void linear_modules_inference(const LinearModule* const* mods, float* const* ys, int n, bool adapters_enabled,
                              const float* x, int64_t N);

}  // namespace llmtune
