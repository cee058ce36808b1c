// gemv: y[M, out] = x[M, in] · Wᵀ (+ bias) for a few rows (M <= kGemvMaxRows: the tokens of one
// decode step), the memory-bound product of token-by-token generation. Each weight byte is read once
// per call whatever M (all rows accumulate in registers) and the output rows are split over threads;
// several products sharing one input (q/k/v, gate/up) run in one parallel region.
// Weights: f32 or bf16 stored [out, in] (torch) or [in, out] (GPT-2 Conv1D), NF4/FP4 (blocks aligned to
// rows) and LLM.int8, the quantized ones without dequantizing to memory. Numerics follow
// linear_forward / linear_q4_forward / linear_int8_forward: bf16 weights see activations rounded to
// bf16, products exact in f32, f32 accumulation; 4-bit weights use the dequantized f32 values
// code[q]·scale; only the summation order differs from the reference.
#pragma once
#include <cstdint>

#include "kernels/linear.h"
#include "kernels/quant4.h"
#include "kernels/quant8.h"

namespace llmtune {

constexpr int64_t kGemvMaxRows = 8;

// One product of a batch: y[M, out] (row stride `out`) = x · Wᵀ + bias, or += when accumulate.
// Exactly one of dense / q4 / q8 is set.
struct GemvTask {
  float* y = nullptr;
  const float* bias = nullptr;  // [out] or null
  int64_t out = 0;
  bool accumulate = false;
  WeightView dense;             // used when dense.data != null (in = the batch's `in`)
  const Quant4Weight* q4 = nullptr;
  const Int8Weight* q8 = nullptr;
};

// Whether gemv_forward handles this weight (a 4-bit weight needs its blocks aligned to rows:
// in % blocksize == 0).
bool gemv_supports(const GemvTask& t, int64_t in);

// Runs every task on the same x [M, in] (1 <= M <= kGemvMaxRows) in one parallel region.
void gemv_forward(const GemvTask* tasks, int n_tasks, const float* x, int64_t M, int64_t in);

// Single-product convenience wrappers.
void gemv_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t M, int64_t in,
                  int64_t out, bool accumulate = false);
void gemv_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias, int64_t M);
void gemv_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias, int64_t M);

namespace reference {
// Plain loops, double accumulation, same rounding of inputs as the fast path (bf16 activations for
// bf16 weights; 4-bit values code[q]·scale rounded to f32; int8 values (w8·SCB)·(1/127)).
void gemv_forward(const GemvTask* tasks, int n_tasks, const float* x, int64_t M, int64_t in);
}  // namespace reference

}  // namespace llmtune
