// LinearModule forward/backward incl. the LoRA branch.
#include "model/linear_module.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/decode_pool.h"
#include "kernels/gemv.h"
#include "kernels/linear_quant.h"
#include "kernels/matmul.h"

namespace llmtune {

namespace {
float* grad_of(Param* p) { return (p && p->trainable && p->grad.defined()) ? p->grad.f32() : nullptr; }

void ensure(Tensor& t, const Shape& s) {
  if (!t.defined() || t.numel() < shape_numel(s)) t = Tensor::zeros(s);
  else t.shape = s;
}
}  // namespace

void linear_module_forward(const LinearModule& l, bool adapters_enabled, const float* x, float* y,
                           int64_t N, LinearActs* acts, Rng* rng) {
  const float* bias = l.bias ? l.bias->value.f32() : nullptr;
  if (l.q4) linear_q4_forward(y, x, *l.q4, bias, N, l.qopt);
  else if (l.q8) linear_int8_forward(y, x, *l.q8, bias, N, l.qopt);
  else linear_forward(y, x, l.view(), bias, N, l.in, l.out);
  if (!l.lora.runs(adapters_enabled)) return;
  const int64_t r = l.lora.r;
  const float* xin = x;
  Tensor xa_t, xd_t, mask_t;
  Tensor& xa = acts ? acts->xa : xa_t;
  ensure(xa, {N, r});
  if (rng && l.lora.dropout > 0.f) {
    Tensor& xd = acts ? acts->xd : xd_t;
    Tensor& mask = acts ? acts->mask : mask_t;
    ensure(xd, {N, l.in});
    if (!mask.defined() || mask.numel() < N * l.in) mask = Tensor::zeros({N, l.in}, DType::U8);
    const float p = l.lora.dropout, keep = 1.f / (1.f - p);
    float* d = xd.f32();
    uint8_t* m = mask.as<uint8_t>();
    for (int64_t i = 0; i < N * l.in; i++) {
      m[i] = rng->uniform() >= p;
      d[i] = m[i] ? x[i] * keep : 0.f;
    }
    xin = d;
  }
  if (acts) acts->dropped = (xin != x);
  // xa = xin·Aᵀ ; y += scaling · xa·Bᵀ
  GemmDims d1{N, r, l.in, false, true, 0, 0, 0};
  matmul_f32(xa.f32(), xin, l.lora.A->value.f32(), d1, false);
  if (l.lora.scaling == 1.f) {
    GemmDims d2{N, l.out, r, false, true, 0, 0, 0};
    matmul_f32(y, xa.f32(), l.lora.B->value.f32(), d2, true);
  } else {
    std::vector<float> scaled(size_t(N * r));
    const float* s = xa.f32();
    for (size_t i = 0; i < scaled.size(); i++) scaled[i] = s[i] * l.lora.scaling;
    GemmDims d2{N, l.out, r, false, true, 0, 0, 0};
    matmul_f32(y, scaled.data(), l.lora.B->value.f32(), d2, true);
  }
}

void linear_module_backward(const LinearModule& l, bool adapters_enabled, const float* dy, const float* x,
                            float* dx, int64_t N, LinearActs* acts) {
  float* dW = grad_of(l.weight);
  float* db = grad_of(l.bias);
  if (l.quantized()) {
    // A quantized weight is always frozen: only the input gradient (and a trainable bias).
    if (dx && l.q4) linear_q4_backward_input(dx, dy, *l.q4, N, l.qopt);
    else if (dx) linear_int8_backward_input(dx, dy, *l.q8, N, l.qopt);
    if (db)
      for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < l.out; o++) db[o] += dy[n * l.out + o];
  } else if (dx || dW || db) {
    linear_backward(dx, dW, db, dy, x, l.view(), N, l.in, l.out);
  }
  if (!l.lora.runs(adapters_enabled)) return;
  if (!acts || !acts->xa.defined()) fail("internal: LoRA backward without stored activations for ", l.name);
  const int64_t r = l.lora.r;
  const float s = l.lora.scaling;
  const bool dropped = acts->dropped;
  const float* xin = dropped ? acts->xd.f32() : x;
  // dB += s · dyᵀ·xa      [out, r]
  // dxa = s · dy·B        [N, r]
  // dA += dxaᵀ·xin        [r, in]
  // dxin = dxa·A          [N, in]  → dx (through the dropout mask)
  std::vector<float> dxa(size_t(N * r));
  GemmDims g1{N, r, l.out, false, false, 0, 0, 0};
  matmul_f32(dxa.data(), dy, l.lora.B->value.f32(), g1, false);
  for (auto& v : dxa) v *= s;
  if (float* dB = grad_of(l.lora.B)) {
    std::vector<float> xas(size_t(N * r));
    const float* xa = acts->xa.f32();
    for (size_t i = 0; i < xas.size(); i++) xas[i] = xa[i] * s;
    GemmDims g2{l.out, r, N, true, false, 0, 0, 0};
    matmul_f32(dB, dy, xas.data(), g2, true);
  }
  if (float* dA = grad_of(l.lora.A)) {
    GemmDims g3{r, l.in, N, true, false, 0, 0, 0};
    matmul_f32(dA, dxa.data(), xin, g3, true);
  }
  if (dx) {
    if (!dropped) {
      GemmDims g4{N, l.in, r, false, false, 0, 0, 0};
      matmul_f32(dx, dxa.data(), l.lora.A->value.f32(), g4, true);
    } else {
      std::vector<float> dxin(size_t(N * l.in));
      GemmDims g4{N, l.in, r, false, false, 0, 0, 0};
      matmul_f32(dxin.data(), dxa.data(), l.lora.A->value.f32(), g4, false);
      const float keep = 1.f / (1.f - l.lora.dropout);
      const uint8_t* m = acts->mask.as<uint8_t>();
      for (int64_t i = 0; i < N * l.in; i++)
        if (m[i]) dx[i] += dxin[size_t(i)] * keep;
    }
  }
}

namespace {

GemvTask base_task(const LinearModule& l, float* y) {
  GemvTask t;
  t.y = y;
  t.out = l.out;
  t.bias = l.bias ? l.bias->value.f32() : nullptr;
  if (l.q4) t.q4 = l.q4.get();
  else if (l.q8) t.q8 = l.q8.get();
  else t.dense = l.view();
  return t;
}

template <typename T>
T* slice_scratch(int slot, int64_t n) {
  thread_local std::vector<T> bufs[2];
  auto& b = bufs[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

// LoRA branch on a decode step: y += scaling · (x·Aᵀ)·Bᵀ, both products as GEMVs.
void lora_decode(const LinearModule& l, const float* x, float* y, int64_t N) {
  const int64_t r = l.lora.r;
  thread_local std::vector<float> xa;
  if (int64_t(xa.size()) < N * r) xa.resize(size_t(N * r));
  gemv_forward(xa.data(), x, WeightView{l.lora.A->value.data, DType::F32, false}, nullptr, N, l.in, r);
  if (l.lora.scaling != 1.f)
    for (int64_t j = 0; j < N * r; j++) xa[size_t(j)] *= l.lora.scaling;
  gemv_forward(y, xa.data(), WeightView{l.lora.B->value.data, DType::F32, false}, nullptr, N, r, l.out,
               /*accumulate=*/true);
}

// One slice of output columns [o0, o1) of a module over N rows, on this thread.
struct Slice {
  const LinearModule* l;
  float* y;
  const float* xa;  // LoRA: scaling·x·Aᵀ [N, r], or null
  int64_t o0, o1;
};

void run_slice(const Slice& s, const float* x, const uint16_t* x16, int64_t N) {
  const LinearModule& l = *s.l;
  const int64_t in = l.in, out = l.out, rows = s.o1 - s.o0;
  GemmDims d;  // y[:, o0:o1] = x · W[o0:o1, :]ᵀ
  d.M = N, d.N = rows, d.K = in, d.lda = in, d.ldc = out;
  float* y = s.y + s.o0;
  if (l.q4 || l.q8) {  // dequantize the slice's rows, as linear_q4/int8_forward do per tile
    d.trans_b = true;
    d.ldb = in;
    if (l.qopt.bf16) {
      uint16_t* w = slice_scratch<uint16_t>(0, rows * in);
      if (l.q4) dequantize_4bit_range_bf16(w, *l.q4, s.o0 * in, s.o1 * in);
      else dequantize_int8_rows_bf16(w, *l.q8, s.o0, s.o1);
      matmul_bf16(y, x16, w, d, false);
    } else {
      float* w = slice_scratch<float>(1, rows * in);
      if (l.q4) dequantize_4bit_range(w, *l.q4, s.o0 * in, s.o1 * in);
      else dequantize_int8_rows(w, *l.q8, s.o0, s.o1);
      matmul_f32(y, x, w, d, false);
    }
  } else {
    const WeightView W = l.view();
    d.trans_b = !W.transposed;
    d.ldb = W.transposed ? out : in;
    const int64_t offset = W.transposed ? s.o0 : s.o0 * in;  // first element of the slice
    if (W.dtype == DType::BF16) matmul_bf16(y, x16, static_cast<const uint16_t*>(W.data) + offset, d, false);
    else matmul_f32(y, x, static_cast<const float*>(W.data) + offset, d, false);
  }
  if (l.bias) {
    const float* b = l.bias->value.f32();
    for (int64_t m = 0; m < N; m++)
      for (int64_t o = s.o0; o < s.o1; o++) s.y[m * out + o] += b[o];
  }
  if (s.xa) {  // y[:, o0:o1] += xa · B[o0:o1, :]ᵀ
    GemmDims e;
    e.M = N, e.N = rows, e.K = l.lora.r, e.trans_b = true, e.lda = l.lora.r, e.ldb = l.lora.r, e.ldc = out;
    matmul_f32(y, s.xa, l.lora.B->value.f32() + s.o0 * l.lora.r, e, true);
  }
}

// Any number of rows: slices of output columns, each a one-thread matmul, spread over the pool.
void modules_sliced(const LinearModule* const* mods, float* const* ys, int n, bool en, const float* x, int64_t N) {
  const int64_t in = mods[0]->in;
  bool need16 = false;
  for (int i = 0; i < n; i++)
    if (mods[i]->q4) check_quant4_weight(*mods[i]->q4);  // nothing may throw inside the job
  for (int i = 0; i < n; i++)
    need16 |= (mods[i]->quantized() ? mods[i]->qopt.bf16 : mods[i]->view().dtype == DType::BF16);
  uint16_t* x16 = nullptr;
  if (need16) {  // activations rounded to bf16 once, as the linear kernels do for bf16 products
    thread_local std::vector<uint16_t> buf;
    if (int64_t(buf.size()) < N * in) buf.resize(size_t(N * in));
    x16 = buf.data();
    for (int64_t i = 0; i < N * in; i++) x16[i] = f32_to_bf16(x[i]);
  }
  // LoRA: xa = scaling · x·Aᵀ once per module (small: [N, r]).
  thread_local std::vector<float> xa_buf;
  int64_t xa_total = 0;
  for (int i = 0; i < n; i++)
    if (mods[i]->lora.runs(en)) xa_total += N * mods[i]->lora.r;
  if (int64_t(xa_buf.size()) < xa_total) xa_buf.resize(size_t(xa_total));
  const float* xa[8] = {};
  int64_t xa_at = 0;
  for (int i = 0; i < n; i++) {
    const LinearModule& l = *mods[i];
    if (!l.lora.runs(en)) continue;
    float* dst = xa_buf.data() + xa_at;
    xa_at += N * l.lora.r;
    GemmDims d{N, l.lora.r, l.in, false, true, 0, 0, 0};
    matmul_f32(dst, x, l.lora.A->value.f32(), d, false);
    if (l.lora.scaling != 1.f)
      for (int64_t j = 0; j < N * l.lora.r; j++) dst[j] *= l.lora.scaling;
    xa[i] = dst;
  }
  // Slices: about 4 per thread per module for balance on a busy machine (measured better than 1 or 2
  // with 2 threads), at least 64 columns; one thread: whole modules (each slice repacks the input).
  Slice slices[8 * 64];
  int ns = 0;
  const int64_t threads = std::max(1, pool_threads()), per_module = threads > 1 ? 4 * threads : 1;
  for (int i = 0; i < n; i++) {
    const int64_t out = mods[i]->out;
    int64_t width = std::max<int64_t>(64, (out / per_module + 15) / 16 * 16);
    width = std::max(width, (out + 63) / 64);  // at most 64 slices per module
    for (int64_t o0 = 0; o0 < out; o0 += width) slices[ns++] = Slice{mods[i], ys[i], xa[i], o0, std::min(out, o0 + width)};
  }
  run_chunks(ns, [&](int64_t c) { run_slice(slices[c], x, x16, N); });
}

// A decode step: GEMVs for the weights the kernel takes (one job for all of them), column slices for
// the rest (GPT-2 Conv1D, 4-bit blocks straddling rows).
void modules_decode(const LinearModule* const* mods, float* const* ys, int n, bool en, const float* x, int64_t N) {
  GemvTask tasks[8];
  const LinearModule* other[8];
  float* other_y[8];
  bool gemv[8] = {};
  int nt = 0, no = 0;
  for (int i = 0; i < n; i++) {
    GemvTask t = base_task(*mods[i], ys[i]);
    gemv[i] = gemv_supports(t, mods[i]->in);
    if (gemv[i]) {
      tasks[nt++] = t;
    } else {
      other[no] = mods[i];
      other_y[no++] = ys[i];
    }
  }
  if (nt > 0) gemv_forward(tasks, nt, x, N, mods[0]->in);
  for (int i = 0; i < n; i++)
    if (gemv[i] && mods[i]->lora.runs(en)) lora_decode(*mods[i], x, ys[i], N);
  if (no > 0) modules_sliced(other, other_y, no, en, x, N);
}

}  // namespace

void linear_modules_inference(const LinearModule* const* mods, float* const* ys, int n, bool adapters_enabled,
                              const float* x, int64_t N) {
  LLMTUNE_CHECK(n >= 1 && n <= 8, "linear_modules_inference: ", n, " modules (1..8)");
  for (int i = 1; i < n; i++)
    LLMTUNE_CHECK(mods[i]->in == mods[0]->in, "linear_modules_inference: modules with different inputs");
  if (N <= 0) return;
  SerialOmpScope serial;  // kernels inside run on their own thread; the pool spreads the work
  if (N <= kGemvMaxRows) modules_decode(mods, ys, n, adapters_enabled, x, N);
  else modules_sliced(mods, ys, n, adapters_enabled, x, N);
}

}  // namespace llmtune
