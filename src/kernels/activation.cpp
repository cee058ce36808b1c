// Elementwise activations (GELU erf/tanh, SiLU, ReLU) and the SwiGLU product, forward and
// backward, vectorised (AVX-512 through simd_math.h, or the same formulas in scalar code), with
// double-precision references.
#include "kernels/activation.h"
#include "core/profile.h"

#include <algorithm>
#include <cmath>

#include "kernels/simd_math.h"

namespace llmtune {

bool activation_from_hf_name(std::string_view name, Activation* out) {
  Activation a;
  if (name == "gelu")
    a = Activation::GeluErf;
  else if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    a = Activation::GeluTanh;
  else if (name == "silu" || name == "swish")
    a = Activation::Silu;
  else if (name == "relu")
    a = Activation::Relu;
  else
    return false;
  *out = a;
  return true;
}

namespace {

// Below this many elements the thread start-up costs more than the work.
constexpr int64_t kParallelMin = 1 << 14;
// Elements per parallel work chunk (a multiple of 16: only the array's end has a masked tail).
constexpr int64_t kChunk = 1 << 12;

constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kGeluCubic = 0.044715f;

// Splits [0, n) into chunks over the threads; f(begin, end) does one chunk.
template <typename F>
void parallel_chunks(int64_t n, F&& f) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

// Value and derivative of each activation, written once for a scalar float and once for 16 lanes
// of AVX-512 with the same formulas (simd_math.h):
//   GELU (erf):  x·Φ(x),                       Φ(x) + x·φ(x)
//   GELU (tanh): x·σ(2u), u = √(2/π)(x + 0.044715x³)  [½(1 + tanh u) = σ(2u)],
//                σ(2u) + 2x·σ(2u)(1 − σ(2u))·u'
//   SiLU:        x·σ(x),                       σ(x)(1 + x(1 − σ(x)))
template <Activation act>
inline float act_value(float x) {
  switch (act) {  // resolved at compile time
    case Activation::GeluErf: return x * simd::normal_cdf_scalar(x);
    case Activation::GeluTanh: {
      const float u2 = 2.f * kSqrt2OverPi * simd::fmadd(kGeluCubic * x, x * x, x);
      return x * simd::sigmoid_scalar(u2);
    }
    case Activation::Silu: return x * simd::sigmoid_scalar(x);
    case Activation::Relu: return x > 0.0f ? x : 0.0f;
  }
  return 0.0f;
}

template <Activation act>
inline float act_derivative(float x) {
  switch (act) {
    case Activation::GeluErf: return simd::fmadd(x, simd::normal_pdf_scalar(x), simd::normal_cdf_scalar(x));
    case Activation::GeluTanh: {
      const float x2 = x * x;
      const float s = simd::sigmoid_scalar(2.f * kSqrt2OverPi * simd::fmadd(kGeluCubic * x, x2, x));
      const float du = kSqrt2OverPi * simd::fmadd(3.f * kGeluCubic, x2, 1.f);
      return s + 2.f * x * s * (1.f - s) * du;
    }
    case Activation::Silu: {
      const float s = simd::sigmoid_scalar(x);
      return s * (1.0f + x * (1.0f - s));
    }
    case Activation::Relu: return x > 0.0f ? 1.0f : 0.0f;
  }
  return 0.0f;
}

#if LLMTUNE_AVX512
template <Activation act>
inline __m512 act_value16(__m512 x) {
  switch (act) {
    case Activation::GeluErf: return _mm512_mul_ps(x, simd::normal_cdf16(x));
    case Activation::GeluTanh: {
      const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), _mm512_mul_ps(x, _mm512_set1_ps(kGeluCubic)));
      const __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(2.f * kSqrt2OverPi), _mm512_add_ps(x, x3));
      return _mm512_mul_ps(x, simd::sigmoid16(u2));
    }
    case Activation::Silu: return _mm512_mul_ps(x, simd::sigmoid16(x));
    case Activation::Relu: return _mm512_max_ps(x, _mm512_setzero_ps());
  }
  return x;
}

template <Activation act>
inline __m512 act_derivative16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  switch (act) {
    case Activation::GeluErf: {
      __m512 gauss;
      const __m512 cdf = simd::cdf_from_tail16(x, simd::normal_tail16(x, &gauss));
      return _mm512_fmadd_ps(_mm512_mul_ps(x, _mm512_set1_ps(simd::kInvSqrt2Pi)), gauss, cdf);
    }
    case Activation::GeluTanh: {
      const __m512 x2 = _mm512_mul_ps(x, x);
      const __m512 x3 = _mm512_mul_ps(x2, _mm512_mul_ps(x, _mm512_set1_ps(kGeluCubic)));
      const __m512 u2 = _mm512_mul_ps(_mm512_set1_ps(2.f * kSqrt2OverPi), _mm512_add_ps(x, x3));
      const __m512 s = simd::sigmoid16(u2);
      const __m512 du = _mm512_mul_ps(_mm512_set1_ps(kSqrt2OverPi),
                                      _mm512_fmadd_ps(_mm512_set1_ps(3.f * kGeluCubic), x2, one));
      const __m512 two_x_s = _mm512_mul_ps(_mm512_add_ps(x, x), s);
      return _mm512_fmadd_ps(_mm512_mul_ps(two_x_s, _mm512_sub_ps(one, s)), du, s);
    }
    case Activation::Silu: {
      const __m512 s = simd::sigmoid16(x);
      return _mm512_mul_ps(s, _mm512_fmadd_ps(x, _mm512_sub_ps(one, s), one));
    }
    case Activation::Relu:
      return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), one);
  }
  return x;
}
#endif

template <Activation act>
void forward_loop(float* out, const float* x, int64_t n) {
  parallel_chunks(n, [&](int64_t i0, int64_t i1) {
#if LLMTUNE_AVX512
    simd::for_each16(i1 - i0, [&](int64_t i, __mmask16 m) {
      _mm512_mask_storeu_ps(out + i0 + i, m, act_value16<act>(_mm512_maskz_loadu_ps(m, x + i0 + i)));
    });
#else
    for (int64_t i = i0; i < i1; ++i) out[i] = act_value<act>(x[i]);
#endif
  });
}

template <Activation act>
void backward_loop(float* dx, const float* dout, const float* x, int64_t n, bool accumulate) {
  parallel_chunks(n, [&](int64_t i0, int64_t i1) {
#if LLMTUNE_AVX512
    simd::for_each16(i1 - i0, [&](int64_t i, __mmask16 m) {
      const int64_t j = i0 + i;
      const __m512 d = act_derivative16<act>(_mm512_maskz_loadu_ps(m, x + j));
      const __m512 prior = accumulate ? _mm512_maskz_loadu_ps(m, dx + j) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(dx + j, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dout + j), d, prior));
    });
#else
    for (int64_t i = i0; i < i1; ++i)
      dx[i] = (accumulate ? dx[i] : 0.f) + dout[i] * act_derivative<act>(x[i]);
#endif
  });
}

}  // namespace

// The switch sits outside the loops so that each loop body is branch-free.
void activation_forward(float* out, const float* x, int64_t n, Activation act) {
  ProfileScope profile_scope("activation");
  switch (act) {
    case Activation::GeluErf: return forward_loop<Activation::GeluErf>(out, x, n);
    case Activation::GeluTanh: return forward_loop<Activation::GeluTanh>(out, x, n);
    case Activation::Silu: return forward_loop<Activation::Silu>(out, x, n);
    case Activation::Relu: return forward_loop<Activation::Relu>(out, x, n);
  }
}

void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act,
                         bool accumulate) {
  ProfileScope profile_scope("activation");
  if (!dx) return;
  switch (act) {
    case Activation::GeluErf: return backward_loop<Activation::GeluErf>(dx, dout, x, n, accumulate);
    case Activation::GeluTanh: return backward_loop<Activation::GeluTanh>(dx, dout, x, n, accumulate);
    case Activation::Silu: return backward_loop<Activation::Silu>(dx, dout, x, n, accumulate);
    case Activation::Relu: return backward_loop<Activation::Relu>(dx, dout, x, n, accumulate);
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  ProfileScope profile_scope("activation");
  parallel_chunks(n, [&](int64_t i0, int64_t i1) {
#if LLMTUNE_AVX512
    simd::for_each16(i1 - i0, [&](int64_t i, __mmask16 m) {
      const int64_t j = i0 + i;
      const __m512 g = _mm512_maskz_loadu_ps(m, gate + j);
      const __m512 y = _mm512_mul_ps(act_value16<Activation::Silu>(g), _mm512_maskz_loadu_ps(m, up + j));
      _mm512_mask_storeu_ps(out + j, m, y);
    });
#else
    for (int64_t i = i0; i < i1; ++i) out[i] = act_value<Activation::Silu>(gate[i]) * up[i];
#endif
  });
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n, bool accumulate) {
  ProfileScope profile_scope("activation");
  if (!dgate && !dup) return;
  parallel_chunks(n, [&](int64_t i0, int64_t i1) {
#if LLMTUNE_AVX512
    simd::for_each16(i1 - i0, [&](int64_t i, __mmask16 m) {
      const int64_t j = i0 + i;
      const __m512 g = _mm512_maskz_loadu_ps(m, gate + j), d = _mm512_maskz_loadu_ps(m, dout + j);
      const __m512 s = simd::sigmoid16(g);
      if (dgate) {  // dout · up · σ(g)(1 + g(1 − σ(g)))
        const __m512 one = _mm512_set1_ps(1.f);
        const __m512 dsilu = _mm512_mul_ps(s, _mm512_fmadd_ps(g, _mm512_sub_ps(one, s), one));
        const __m512 du = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, up + j));
        const __m512 prior = accumulate ? _mm512_maskz_loadu_ps(m, dgate + j) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(dgate + j, m, _mm512_fmadd_ps(du, dsilu, prior));
      }
      if (dup) {
        const __m512 prior = accumulate ? _mm512_maskz_loadu_ps(m, dup + j) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(dup + j, m, _mm512_fmadd_ps(d, _mm512_mul_ps(g, s), prior));
      }
    });
#else
    for (int64_t i = i0; i < i1; ++i) {
      const float g = gate[i], s = simd::sigmoid_scalar(g);
      if (dgate) dgate[i] = (accumulate ? dgate[i] : 0.f) + dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
      if (dup) dup[i] = (accumulate ? dup[i] : 0.f) + dout[i] * g * s;
    }
#endif
  });
}

namespace reference {

namespace {
double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double value_d(double x, Activation act) {
  const double k = std::sqrt(2.0 / M_PI);
  switch (act) {
    case Activation::GeluErf: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::GeluTanh: return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    case Activation::Silu: return x * sigmoid_d(x);
    case Activation::Relu: return x > 0.0 ? x : 0.0;
  }
  return 0.0;
}

double derivative_d(double x, Activation act) {
  const double k = std::sqrt(2.0 / M_PI);
  switch (act) {
    case Activation::GeluErf:
      return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) +
             x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    case Activation::GeluTanh: {
      const double t = std::tanh(k * (x + 0.044715 * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case Activation::Silu: {
      const double s = sigmoid_d(x);
      return s * (1.0 + x * (1.0 - s));
    }
    case Activation::Relu: return x > 0.0 ? 1.0 : 0.0;
  }
  return 0.0;
}
}  // namespace

void activation_forward(float* out, const float* x, int64_t n, Activation act) {
  for (int64_t i = 0; i < n; ++i) out[i] = float(value_d(x[i], act));
}

void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act) {
  if (!dx) return;
  for (int64_t i = 0; i < n; ++i) dx[i] = float(dx[i] + double(dout[i]) * derivative_d(x[i], act));
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float(double(gate[i]) * sigmoid_d(gate[i]) * up[i]);
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i], s = sigmoid_d(g);
    if (dgate) dgate[i] = float(dgate[i] + double(dout[i]) * up[i] * s * (1.0 + g * (1.0 - s)));
    if (dup) dup[i] = float(dup[i] + double(dout[i]) * g * s);
  }
}

}  // namespace reference

}  // namespace llmtune
