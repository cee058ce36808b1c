// matmul: the one entry point for matrix products. Fast path: oneDNN (AVX-512 / AMX-BF16), with a
// primitive cache keyed by shape; reference: plain loops with double accumulation.
//
// C[M,N] = op(A)·op(B)  (or += when accumulate), row-major.
//   op(A) is [M,K]: A is stored [M,K] (lda >= K), or [K,M] when trans_a (lda >= M).
//   op(B) is [K,N]: B is stored [K,N] (ldb >= N), or [N,K] when trans_b (ldb >= K).
//   ldc >= N. A leading dimension of 0 means "packed" (the minimum).
#pragma once
#include <cstdint>

namespace llmtune {

struct GemmDims {
  int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
};

// f32 inputs, f32 output.
void matmul_f32(float* C, const float* A, const float* B, const GemmDims& d, bool accumulate);
// bf16 inputs (raw uint16 bf16 bits), f32 accumulation and output.
void matmul_bf16(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& d, bool accumulate);

// Same product where B is a CONSTANT bf16 weight (frozen; not modified or freed while cached): B is
// reordered once into oneDNN's blocked layout and the packed copy cached by (pointer, shape, layout,
// a checksum of sampled elements) when LLMTUNE_PREPACK=1; by default it is plain matmul_bf16
// (packing measured no faster on this CPU class, bench/NOTES.md).
void matmul_bf16_const_b(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& d, bool accumulate);
// Drops every packed weight (call before changing or freeing weights that were used above).
void matmul_forget_packed_weights();

// True when oneDNN can use AMX tiles for bf16 products on this CPU (the OS must enable them; some
// hypervisors mask them). Without AMX, bf16 products run below the f32 rate (bench_fma_peak).
bool matmul_bf16_uses_amx();

// The B-layout rewrite of matmul.cpp (on by default): off runs every product in the caller's layout.
// For benchmarks and tests that compare the two.
void matmul_set_layout_rewrite(bool on);

namespace reference {
void matmul_f32(float* C, const float* A, const float* B, const GemmDims& d, bool accumulate);
void matmul_bf16(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& d, bool accumulate);
}  // namespace reference

}  // namespace llmtune
