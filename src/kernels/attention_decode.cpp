// Decode-step attention over the KV cache: per (batch row, kv head) item, scores of every query head of
// the group against all visible keys (vectorised over the head dimension), a two-pass softmax with a
// vectorised exp, and the value sum. Scratch is per thread and reused across steps.
#include "kernels/attention_decode.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/profile.h"
#include "kernels/decode_pool.h"

namespace llmtune {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 that vectorises (std::exp does not without -ffast-math): 2^n · e^r, |r| <= ln2/2,
// degree-6 Taylor polynomial (relative error ~2e-7); exactly 0 below -87 (and for -inf).
inline float exp_nonpositive(float x) {
  const bool underflow = x < -87.f;
  x = std::clamp(x, -87.f, 0.f);
  const float n = (x * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;  // ln2 split hi + lo
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const float two_n = std::bit_cast<float>((int32_t(n) + 127) << 23);
  return underflow ? 0.f : p * two_n;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void attention_decode_forward(float* out, const float* q, const float* k, const float* v, const int32_t* q_seg,
                              const int32_t* k_seg, int64_t k_seg_stride, const AttentionDims& d) {
  ProfileScope profile_scope("attention decode");
  const int64_t B = d.B, Tq = d.Tq, Tk = d.Tk, H = d.H, Hkv = d.Hkv, D = d.D;
  const int64_t cap = d.kv_cap == 0 ? Tk : d.kv_cap;
  LLMTUNE_CHECK(B >= 0 && Tq >= 1 && D > 0 && H > 0 && Hkv > 0 && H % Hkv == 0,
                "attention_decode_forward: invalid dims B=", B, " Tq=", Tq, " H=", H, " Hkv=", Hkv, " D=", D);
  LLMTUNE_CHECK(Tq <= Tk && cap >= Tk, "attention_decode_forward: need Tq <= Tk <= kv_cap, got Tq=", Tq,
                " Tk=", Tk, " kv_cap=", cap);
  LLMTUNE_CHECK((q_seg == nullptr) == (k_seg == nullptr),
                "attention_decode_forward: q_seg and k_seg must both be given or both be null");
  const int64_t group = H / Hkv, offset = Tk - Tq, ks_stride = k_seg_stride == 0 ? Tk : k_seg_stride;
  LLMTUNE_CHECK(!k_seg || ks_stride >= Tk, "attention_decode_forward: k_seg stride ", ks_stride, " < Tk=", Tk);
  const float scale = d.scale != 0.f ? d.scale : 1.f / std::sqrt(float(D));
  const int64_t items = B * Hkv;
  const bool parallel = B * H * Tq * Tk * D > (1 << 15);

  auto run_item = [&](int64_t item) {
    thread_local std::vector<float> scores_buf, acc_buf;
    if (int64_t(scores_buf.size()) < Tk) scores_buf.resize(size_t(cap));  // cap: no regrowth as Tk grows
    if (int64_t(acc_buf.size()) < D) acc_buf.resize(size_t(D));
    float* s = scores_buf.data();
    float* acc = acc_buf.data();
    const int64_t b = item / Hkv, kvh = item % Hkv;
    const float* kb = k + (b * cap * Hkv + kvh) * D;  // key j at kb + j·Hkv·D
    const float* vb = v + (b * cap * Hkv + kvh) * D;
    const int64_t kv_stride = Hkv * D;
    for (int64_t i = 0; i < Tq; ++i) {
      const int64_t kend = std::min(Tk, offset + i + 1);
      const int32_t qs = q_seg ? q_seg[b * Tq + i] : 0;
      const int32_t* ks = k_seg ? k_seg + b * ks_stride : nullptr;
      for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* qr = q + ((b * Tq + i) * H + h) * D;
        float* o = out + ((b * Tq + i) * H + h) * D;
        float mx = kNegInf;
        for (int64_t j = 0; j < kend; ++j) {
          const float sj = (ks && ks[j] != qs) ? kNegInf : dot(qr, kb + j * kv_stride, D) * scale;
          s[j] = sj;
          mx = std::max(mx, sj);
        }
        if (mx == kNegInf) {  // sees no key (inconsistent segments): zeros, as attention_forward
          std::fill(o, o + D, 0.f);
          continue;
        }
        float sum = 0.f;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < kend; ++j) {
          s[j] = exp_nonpositive(s[j] - mx);
          sum += s[j];
        }
        std::fill(acc, acc + D, 0.f);
        for (int64_t j = 0; j < kend; ++j) {
          const float p = s[j];
          if (p == 0.f) continue;
          const float* vr = vb + j * kv_stride;
#pragma omp simd
          for (int64_t e = 0; e < D; ++e) acc[e] += p * vr[e];
        }
        const float inv = 1.f / sum;
        for (int64_t e = 0; e < D; ++e) o[e] = acc[e] * inv;
      }
    }
  };
  if (parallel) {
    run_chunks(items, run_item);
  } else {
    for (int64_t item = 0; item < items; ++item) run_item(item);
  }
}

}  // namespace llmtune
