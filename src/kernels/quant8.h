// quant8: bitsandbytes' 8-bit formats — the dynamic 8-bit maps (create_dynamic_map), blockwise
// 8-bit quantization with a code table (8-bit optimizer states, double-quantized 4-bit absmax) and
// LLM.int8 row-wise int8 weights. Bit-exact with bitsandbytes' pure-PyTorch semantics (docs:
// tests/data/quant/README.md).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace llmtune {

// Rounds v to float32 here and now. GCC contracts a*b+c into an FMA even in ISO mode;
// bitsandbytes/torch round the product first, so every product that feeds an add/sub in a bit-exact
// path goes through this.
inline float round_f32(float v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(v));
#else
  volatile float t = v;
  v = t;
#endif
  return v;
}

// The 256-entry dynamic maps of bitsandbytes.functional.create_dynamic_map(signed, 7, 8), sorted
// ascending: signed in [-0.99297, 1], unsigned in [0, 1]. Computed once, replicating torch's
// float32 arithmetic (linspace included) so they equal the tables bitsandbytes builds with torch
// 1.13's CPU kernels bit for bit.
const std::array<float, 256>& dynamic_map_signed();
const std::array<float, 256>& dynamic_map_unsigned();
std::array<float, 256> create_dynamic_map(bool is_signed);

// torch.linspace(start, end, steps) in float32 on the CPU, operation for operation (exposed for the
// tests).
std::vector<float> torch_linspace_f32(float start, float end, int64_t steps);

// Index of the code value nearest to s, as torch.argmin(|s - code|) computes it in float32: ties go
// to the lowest index, NaN to index 0. `code` must be sorted ascending (the dynamic maps, NF4).
int nearest_code_sorted(const float* code, int n, float s);
// Same for any table order (FP4 is ordered by bit pattern), by brute force.
int nearest_code_any(const float* code, int n, float s);

int64_t num_blocks(int64_t n, int64_t blocksize);

// Blockwise 8-bit quantization (bitsandbytes quantize_blockwise): per block of `blocksize` values
// (the last may be short) absmax = max|x|, s = clamp(x * (1/absmax), -1, 1), q = nearest code
// index. `code` has 256 sorted entries. q: n bytes; absmax: num_blocks(n, blocksize) floats. An
// all-zero block gets absmax 0 and q = 0.
void quantize_blockwise_8bit(uint8_t* q, float* absmax, const float* x, int64_t n,
                             const float* code, int64_t blocksize);
// y = code[q] * absmax[block], float32.
void dequantize_blockwise_8bit(float* y, const uint8_t* q, const float* absmax, int64_t n,
                               const float* code, int64_t blocksize);

// LLM.int8 weight [rows, cols]: SCB[r] = max_c |W[r,c]|, w8 = round_half_even(W * ((1/SCB) * 127)).
// A zero row gets SCB 0 and w8 0 (torch would produce NaN there).
struct Int8Weight {
  int64_t rows = 0, cols = 0;
  std::vector<int8_t> w8;  // rows*cols, row-major
  std::vector<float> scb;  // rows
};
Int8Weight quantize_int8_rowwise(const float* W, int64_t rows, int64_t cols);
// out[(r - row_begin) * cols + c] = (w8 * SCB[r]) * float(1/127)  (bitsandbytes
// int8_vectorwise_dequant).
void dequantize_int8_rows(float* out, const Int8Weight& W, int64_t row_begin, int64_t row_end);
void dequantize_int8_rows_bf16(uint16_t* out, const Int8Weight& W, int64_t row_begin,
                               int64_t row_end);

}  // namespace llmtune
