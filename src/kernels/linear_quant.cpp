// linear_quant: linear layers on 4-bit / int8 weights by tiles of dequantized output rows (see
// linear_quant.h). Only one tile (tile_rows × in) is ever dequantized at a time; its rows are
// dequantized in parallel and the product runs on the (multi-threaded) matmul.
#include "kernels/linear_quant.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/matmul.h"

namespace llmtune {

namespace {

// Scratch reused across calls (one per calling thread).
template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> bufs[2];
  auto& b = bufs[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

// Runs dequantize(dst_row, r) for rows [r0, r1) of a tile, in parallel (dst rows are `cols` apart).
template <typename T, typename RowFn>
void dequantize_tile(T* dst, int64_t r0, int64_t r1, int64_t cols, RowFn row) {
#pragma omp parallel for schedule(static) if ((r1 - r0) * cols > 16384)
  for (int64_t r = r0; r < r1; ++r) row(dst + (r - r0) * cols, r);
}

const uint16_t* to_bf16(const float* src, int64_t n) {
  uint16_t* dst = scratch<uint16_t>(1, n);
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  return dst;
}

int64_t tile_rows_of(const QuantMatmulOptions& opt, int64_t in, int64_t out) {
  LLMTUNE_CHECK(opt.tile_rows >= 0,
                "quantized linear: tile_rows must be >= 0 (0 = automatic), got ", opt.tile_rows);
  const int64_t rows = opt.tile_rows > 0
                           ? opt.tile_rows
                           : std::max<int64_t>(64, (int64_t(1) << 20) / std::max<int64_t>(in, 1));
  return std::min(rows, out);
}

// RowF32(float* dst, r) / RowBF16(uint16_t* dst, r) dequantize weight row r of [out, in].
template <typename RowF32, typename RowBF16>
void forward(float* y, const float* x, int64_t out, int64_t in, RowF32 row_f32, RowBF16 row_bf16,
             const float* bias, int64_t N, const QuantMatmulOptions& opt) {
  const int64_t tile = tile_rows_of(opt, in, out);
  if (N <= 0) return;
  const uint16_t* x16 = opt.bf16 ? to_bf16(x, N * in) : nullptr;
  for (int64_t o0 = 0; o0 < out; o0 += tile) {
    const int64_t o1 = std::min(out, o0 + tile);
    GemmDims d;  // y[:, o0:o1] = x · tileᵀ, tile stored [o1-o0, in]
    d.M = N, d.N = o1 - o0, d.K = in;
    d.trans_b = true;
    d.lda = in, d.ldb = in, d.ldc = out;
    if (opt.bf16) {
      uint16_t* buf = scratch<uint16_t>(0, tile * in);
      dequantize_tile(buf, o0, o1, in, row_bf16);
      matmul_bf16(y + o0, x16, buf, d, false);
    } else {
      float* buf = scratch<float>(0, tile * in);
      dequantize_tile(buf, o0, o1, in, row_f32);
      matmul_f32(y + o0, x, buf, d, false);
    }
  }
  if (bias) {
#pragma omp parallel for schedule(static) if (N * out > (1 << 14))
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) y[n * out + o] += bias[o];
  }
}

template <typename RowF32, typename RowBF16>
void backward_input(float* dx, const float* dy, int64_t out, int64_t in, RowF32 row_f32,
                    RowBF16 row_bf16, int64_t N, const QuantMatmulOptions& opt) {
  const int64_t tile = tile_rows_of(opt, in, out);
  if (N <= 0 || !dx) return;
  const uint16_t* dy16 = opt.bf16 ? to_bf16(dy, N * out) : nullptr;
  for (int64_t o0 = 0; o0 < out; o0 += tile) {
    const int64_t o1 = std::min(out, o0 + tile);
    GemmDims d;  // dx += dy[:, o0:o1] · tile
    d.M = N, d.N = in, d.K = o1 - o0;
    d.lda = out, d.ldb = in, d.ldc = in;
    if (opt.bf16) {
      uint16_t* buf = scratch<uint16_t>(0, tile * in);
      dequantize_tile(buf, o0, o1, in, row_bf16);
      matmul_bf16(dx, dy16 + o0, buf, d, true);
    } else {
      float* buf = scratch<float>(0, tile * in);
      dequantize_tile(buf, o0, o1, in, row_f32);
      matmul_f32(dx, dy + o0, buf, d, true);
    }
  }
}

}  // namespace

namespace {
// Row dequantizers; the weight is validated once up front so nothing throws inside a parallel
// region.
auto q4_rows(const Quant4Weight& W) {
  check_quant4_weight(W);
  const int64_t in = W.cols;
  return std::pair{
      [&W, in](float* dst, int64_t r) { dequantize_4bit_range(dst, W, r * in, (r + 1) * in); },
      [&W, in](uint16_t* dst, int64_t r) {
        dequantize_4bit_range_bf16(dst, W, r * in, (r + 1) * in);
      }};
}
auto int8_rows(const Int8Weight& W) {
  LLMTUNE_CHECK(W.rows > 0 && W.cols > 0 && W.w8.size() == size_t(W.rows * W.cols) &&
                    W.scb.size() == size_t(W.rows),
                "int8 weight: inconsistent sizes (rows ", W.rows, ", cols ", W.cols, ", w8 ",
                W.w8.size(), ", SCB ", W.scb.size(), ")");
  return std::pair{[&W](float* dst, int64_t r) { dequantize_int8_rows(dst, W, r, r + 1); },
                   [&W](uint16_t* dst, int64_t r) { dequantize_int8_rows_bf16(dst, W, r, r + 1); }};
}
}  // namespace

void linear_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias,
                       int64_t N, const QuantMatmulOptions& opt) {
  auto [f32, bf16] = q4_rows(W);
  forward(y, x, W.rows, W.cols, f32, bf16, bias, N, opt);
}
void linear_q4_backward_input(float* dx, const float* dy, const Quant4Weight& W, int64_t N,
                              const QuantMatmulOptions& opt) {
  auto [f32, bf16] = q4_rows(W);
  backward_input(dx, dy, W.rows, W.cols, f32, bf16, N, opt);
}
void linear_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias,
                         int64_t N, const QuantMatmulOptions& opt) {
  auto [f32, bf16] = int8_rows(W);
  forward(y, x, W.rows, W.cols, f32, bf16, bias, N, opt);
}
void linear_int8_backward_input(float* dx, const float* dy, const Int8Weight& W, int64_t N,
                                const QuantMatmulOptions& opt) {
  auto [f32, bf16] = int8_rows(W);
  backward_input(dx, dy, W.rows, W.cols, f32, bf16, N, opt);
}

namespace reference {

namespace {
void forward_dense(float* y, const float* x, const std::vector<float>& w, const float* bias,
                   int64_t N, int64_t in, int64_t out) {
  GemmDims d;
  d.M = N, d.N = out, d.K = in;
  d.trans_b = true;
  ::llmtune::reference::matmul_f32(y, x, w.data(), d, false);
  if (bias)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < out; ++o) y[n * out + o] += bias[o];
}
void backward_dense(float* dx, const float* dy, const std::vector<float>& w, int64_t N, int64_t in,
                    int64_t out) {
  GemmDims d;
  d.M = N, d.N = in, d.K = out;
  ::llmtune::reference::matmul_f32(dx, dy, w.data(), d, true);
}
std::vector<float> dense(const Quant4Weight& W) {
  std::vector<float> w(size_t(W.numel()));
  dequantize_4bit(w.data(), W);
  return w;
}
std::vector<float> dense(const Int8Weight& W) {
  std::vector<float> w(size_t(W.rows * W.cols));
  dequantize_int8_rows(w.data(), W, 0, W.rows);
  return w;
}
}  // namespace

void linear_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias,
                       int64_t N) {
  forward_dense(y, x, dense(W), bias, N, W.cols, W.rows);
}
void linear_q4_backward_input(float* dx, const float* dy, const Quant4Weight& W, int64_t N) {
  backward_dense(dx, dy, dense(W), N, W.cols, W.rows);
}
void linear_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias,
                         int64_t N) {
  forward_dense(y, x, dense(W), bias, N, W.cols, W.rows);
}
void linear_int8_backward_input(float* dx, const float* dy, const Int8Weight& W, int64_t N) {
  backward_dense(dx, dy, dense(W), N, W.cols, W.rows);
}

}  // namespace reference

}  // namespace llmtune
