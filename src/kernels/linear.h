// linear: y = x·Wᵀ + b over N rows (tokens), built on matmul. The weight may be stored torch-style
// [out, in] or GPT-2 Conv1D-style [in, out] (transposed = true), in f32 or bf16.
// Backward ACCUMULATES (+=) into dx, dW, db; any of them may be null (frozen / not needed).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace llmtune {

struct WeightView {
  const void* data = nullptr;
  DType dtype = DType::F32;  // F32 or BF16
  bool transposed = false;   // true: stored [in, out] (Conv1D)
};

void linear_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t N,
                    int64_t in, int64_t out);
// dW (f32, same storage orientation as W) is only allowed for f32 weights.
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const WeightView& W, int64_t N, int64_t in, int64_t out);

namespace reference {
void linear_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t N,
                    int64_t in, int64_t out);
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const WeightView& W, int64_t N, int64_t in, int64_t out);
}  // namespace reference

}  // namespace llmtune
