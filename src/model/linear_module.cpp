// LinearModule forward/backward incl. the LoRA branch.
#include "model/linear_module.h"

#include <cstring>
#include <vector>

#include "core/error.h"
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

}  // namespace llmtune
