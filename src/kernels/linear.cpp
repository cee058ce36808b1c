// linear: y = x·Wᵀ + b and its backward, as matmul calls on f32 or bf16 weights stored [out,in]
// (torch) or [in,out] (GPT-2 Conv1D). With bf16 weights the activations are rounded to bf16 too
// (bf16 products, f32 accumulation), which is what the reference does as well.
#include "kernels/linear.h"
#include "core/profile.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "kernels/matmul.h"

namespace llmtune {

namespace {

void check_weight(const WeightView& W, const char* where) {
  LLMTUNE_CHECK(W.dtype == DType::F32 || W.dtype == DType::BF16, where,
                ": weight dtype must be F32 or BF16, got ", dtype_name(W.dtype),
                " (dequantize other formats first)");
}

// Activations rounded to bf16, in a per-thread buffer reused across calls.
const uint16_t* to_bf16_scratch(const float* src, int64_t n) {
  thread_local std::vector<uint16_t> buf;
  if (int64_t(buf.size()) < n) buf.resize(size_t(n));
  uint16_t* dst = buf.data();
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  return dst;
}

// op(W) as the [in,out] right-hand side of y = x·op(W).
GemmDims forward_dims(const WeightView& W, int64_t N, int64_t in, int64_t out) {
  GemmDims d;
  d.M = N, d.N = out, d.K = in;
  d.trans_b = !W.transposed;  // [out,in] storage is the transpose of what the product needs
  d.ldb = W.transposed ? out : in;
  return d;
}

// W as the [out,in] right-hand side of dx = dy·W.
GemmDims dx_dims(const WeightView& W, int64_t N, int64_t in, int64_t out) {
  GemmDims d;
  d.M = N, d.N = in, d.K = out;
  d.trans_b = W.transposed;
  d.ldb = W.transposed ? out : in;
  return d;
}

void matmul_with_weight(float* C, const float* A, const WeightView& W, const GemmDims& d,
                        bool accumulate) {
  if (W.dtype == DType::BF16) {
    const uint16_t* a16 = to_bf16_scratch(A, d.M * d.K);
    // bf16 weights are frozen (no gradient path exists for them): pack once, reuse every step.
    matmul_bf16_const_b(C, a16, static_cast<const uint16_t*>(W.data), d, accumulate);
  } else {
    matmul_f32(C, A, static_cast<const float*>(W.data), d, accumulate);
  }
}

}  // namespace

void linear_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t N,
                    int64_t in, int64_t out) {
  ProfileScope profile_scope("linear glue (bias, bf16 cast)");
  check_weight(W, "linear_forward");
  matmul_with_weight(y, x, W, forward_dims(W, N, in, out), false);
  if (bias) {
#pragma omp parallel for schedule(static) if (N * out > (1 << 14))
    for (int64_t n = 0; n < N; ++n) {
      float* row = y + n * out;
      for (int64_t o = 0; o < out; ++o) row[o] += bias[o];
    }
  }
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const WeightView& W, int64_t N, int64_t in, int64_t out) {
  ProfileScope profile_scope("linear glue (bias, bf16 cast)");
  check_weight(W, "linear_backward");
  LLMTUNE_CHECK(!dW || W.dtype == DType::F32,
                "linear_backward: a weight gradient needs an f32 weight (bf16 weights are frozen)");
  if (dx) matmul_with_weight(dx, dy, W, dx_dims(W, N, in, out), true);
  if (dW) {
    GemmDims d;
    d.trans_a = true;
    d.K = N;
    if (!W.transposed) {  // dW[out,in] += dyᵀ·x
      d.M = out, d.N = in, d.lda = out, d.ldb = in;
      matmul_f32(dW, dy, x, d, true);
    } else {  // dW[in,out] += xᵀ·dy
      d.M = in, d.N = out, d.lda = in, d.ldb = out;
      matmul_f32(dW, x, dy, d, true);
    }
  }
  if (db) {
    // Parallel over column blocks, rows summed in order: deterministic for any thread count.
    constexpr int64_t kBlock = 256;
    const int64_t nblocks = (out + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * out > (1 << 14))
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t o0 = blk * kBlock, o1 = std::min(out, o0 + kBlock);
      for (int64_t n = 0; n < N; ++n) {
        const float* row = dy + n * out;
        for (int64_t o = o0; o < o1; ++o) db[o] += row[o];
      }
    }
  }
}

namespace reference {

namespace {
// W[o][i] as a double, whatever the storage.
double weight_at(const WeightView& W, int64_t o, int64_t i, int64_t in, int64_t out) {
  const int64_t idx = W.transposed ? i * out + o : o * in + i;
  if (W.dtype == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(W.data)[idx]);
  return static_cast<const float*>(W.data)[idx];
}
// Activations as the fast path sees them: rounded to bf16 when the weight is bf16.
double act(const WeightView& W, float v) {
  return W.dtype == DType::BF16 ? double(bf16_to_f32(f32_to_bf16(v))) : double(v);
}
}  // namespace

void linear_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t N,
                    int64_t in, int64_t out) {
  check_weight(W, "reference::linear_forward");
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int64_t i = 0; i < in; ++i) sum += act(W, x[n * in + i]) * weight_at(W, o, i, in, out);
      // The fast path rounds the product to f32 before adding the bias.
      y[n * out + o] = bias ? float(sum) + bias[o] : float(sum);
    }
}

void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x,
                     const WeightView& W, int64_t N, int64_t in, int64_t out) {
  check_weight(W, "reference::linear_backward");
  LLMTUNE_CHECK(!dW || W.dtype == DType::F32,
                "linear_backward: a weight gradient needs an f32 weight (bf16 weights are frozen)");
  if (dx)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < in; ++i) {
        double sum = 0.0;
        for (int64_t o = 0; o < out; ++o) sum += act(W, dy[n * out + o]) * weight_at(W, o, i, in, out);
        dx[n * in + i] = float(dx[n * in + i] + sum);
      }
  if (dW)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) {
        double sum = 0.0;
        for (int64_t n = 0; n < N; ++n) sum += double(dy[n * out + o]) * x[n * in + i];
        float& g = W.transposed ? dW[i * out + o] : dW[o * in + i];
        g = float(g + sum);
      }
  if (db)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int64_t n = 0; n < N; ++n) sum += dy[n * out + o];
      db[o] = float(db[o] + sum);
    }
}

}  // namespace reference

}  // namespace llmtune
