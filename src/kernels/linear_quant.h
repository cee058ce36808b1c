// linear_quant: y = x·Wᵀ + b and dx += dy·W with a 4-bit (NF4/FP4) or LLM.int8 weight W [out, in],
// without materialising the dequantized matrix: tiles of output rows are dequantized into one
// buffer and fed to matmul. Backward ACCUMULATES into dx. The reference versions dequantize
// everything and use the reference matmul.
#pragma once
#include <cstdint>

#include "kernels/quant4.h"
#include "kernels/quant8.h"

namespace llmtune {

struct QuantMatmulOptions {
  // false: tiles dequantized to f32 and an f32 matmul (matches the reference to ~1e-6). true: tiles
  // and activations rounded to bf16, bf16 matmul with f32 accumulation (faster, ~1e-2 relative).
  bool bf16 = false;
  // Output rows dequantized per tile (buffer = tile_rows * in elements). 0: about 2^20 elements per
  // tile, at least 64 rows — few enough tiles that the per-tile thread fork/join stays negligible.
  int64_t tile_rows = 0;
};

// y [N, out] = x [N, in] · Wᵀ + bias (bias [out] or null); in = W.cols, out = W.rows.
void linear_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias,
                       int64_t N, const QuantMatmulOptions& opt = {});
// dx [N, in] += dy [N, out] · W.
void linear_q4_backward_input(float* dx, const float* dy, const Quant4Weight& W, int64_t N,
                              const QuantMatmulOptions& opt = {});

void linear_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias,
                         int64_t N, const QuantMatmulOptions& opt = {});
void linear_int8_backward_input(float* dx, const float* dy, const Int8Weight& W, int64_t N,
                                const QuantMatmulOptions& opt = {});

namespace reference {
void linear_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias,
                       int64_t N);
void linear_q4_backward_input(float* dx, const float* dy, const Quant4Weight& W, int64_t N);
void linear_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias,
                         int64_t N);
void linear_int8_backward_input(float* dx, const float* dy, const Int8Weight& W, int64_t N);
}  // namespace reference

}  // namespace llmtune
