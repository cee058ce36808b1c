// Vectorised f32 math for the elementwise kernels: exp, sigmoid and the normal CDF Φ (GELU), as
// AVX-512 functions on 16 lanes plus portable scalar versions of the SAME formulas (the fallback of
// builds without AVX-512, and what the tests check against double-precision std:: functions).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#define LLMTUNE_AVX512 1
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
// GCC 12 reports its own _mm512_undefined_ps() ("__Y = __Y") as uninitialised wherever the masked
// AVX-512 intrinsics are inlined (GCC PR105593, fixed in GCC 13). Silenced for the files using this
// header, which are only the vectorised kernels and their tests.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#else
#define LLMTUNE_AVX512 0
#endif

namespace llmtune::simd {

// exp: n = round(x·log2 e), r = x − n·ln2 (two-constant split), e^r by the Cephes expf polynomial
// (|r| <= ln2/2; within ~1 ulp), times 2^n. Arguments are clamped to [kExpMin, kExpMax]: the result
// never overflows to inf (at most ~2.4e38) and is exactly 0 far below — no inf/NaN comes out of a
// finite input, which the softmax/sigmoid callers rely on. NaN inputs propagate.
constexpr float kExpMax = 88.3762626f;   // 127.5·ln 2: e^x stays below FLT_MAX
constexpr float kExpMin = -105.f;        // e^x rounds to exactly 0 here (< half the least denormal)
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;  // ln 2 = hi + lo, hi with 16 trailing zero bits
constexpr float kLn2Lo = 1.42860682030941723212e-6f;
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;

// Φ(x) (normal CDF, GELU): Φ(−a) = ½·erfc(a/√2) = ½·t·Q(t)·exp(−a²/2) for a = |x| >= 0, with
// t = 1/(1 + a/4) in (0, 1] and Q a degree-9 polynomial least-squares fitted in relative error to
// erfc(a/√2)·exp(a²/2)/t (fit error 8e-9; tools: numpy + mpmath, see bench/NOTES.md). exp(−a²/2) is
// taken with a² split exactly (hi + lo by FMA), so Φ keeps its RELATIVE accuracy in the far negative
// tail, where ½(1 + erf(x/√2)) cancels; Φ(x) = 1 − Φ(−x) for x > 0. The same exp gives φ(x).
constexpr float kCdfP = 0.25f;
constexpr float kCdfQ[10] = {1.994974472e-01f, 1.989572779e-01f, 1.912335817e-01f, 1.431731919e-01f,
                             1.754078806e-01f, 2.199644935e-02f, 6.049856146e-02f, 1.009066509e-01f,
                             -1.246836912e-01f, 3.301265864e-02f};
constexpr float kCdfMaxArg = 15.f;  // Φ(−15) ≈ 4e-51: |x| is clamped here (no inf·0 below)
constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

// ---- portable scalar versions (same algorithms) ----------------------------------------------

// a·b + c, fused where the target has FMA; a plain multiply-add otherwise (never the software fmaf
// that std::fma becomes without hardware FMA: ~100x slower). The exp range reduction stays exact
// either way (kLn2Hi·n needs at most 24 bits).
inline float fmadd(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

// The rounding error of a·a (a·a = hi + error exactly), by FMA or by Dekker's splitting.
inline float square_error(float a, float hi) {
#if defined(__FMA__)
  return std::fma(a, a, -hi);
#else
  const float c = 4097.f * a, a_hi = c - (c - a), a_lo = a - a_hi;
  return ((a_hi * a_hi - hi) + 2.f * a_hi * a_lo) + a_lo * a_lo;
#endif
}

inline float exp_scalar(float x) {
  if (std::isnan(x)) return x;
  x = x < kExpMin ? kExpMin : (x > kExpMax ? kExpMax : x);
  // Round to nearest by the 1.5·2^23 trick (|x·log2 e| < 2^22 after the clamp): vectorises, no call.
  const float n = (x * kLog2e + 12582912.f) - 12582912.f;
  float r = fmadd(-n, kLn2Hi, x);
  r = fmadd(-n, kLn2Lo, r);
  float p = kExpP0;
  p = fmadd(p, r, kExpP1);
  p = fmadd(p, r, kExpP2);
  p = fmadd(p, r, kExpP3);
  p = fmadd(p, r, kExpP4);
  p = fmadd(p, r, kExpP5);
  p = fmadd(p, r * r, r) + 1.f;
  // 2^n in two factors so that n down to −150 (denormal results) needs no special case.
  const int32_t ni = int32_t(n), n1 = ni / 2, n2 = ni - n1;
  return p * std::bit_cast<float>((n1 + 127) << 23) * std::bit_cast<float>((n2 + 127) << 23);
}

inline float sigmoid_scalar(float x) { return 1.f / (1.f + exp_scalar(-x)); }

// exp(−a²/2) with a² = hi + lo exactly: exp(−hi/2) has an exact argument, (1 − lo/2) corrects it.
inline float exp_neg_half_square_scalar(float a) {
  const float hi = a * a, lo = square_error(a, hi);
  const float e = exp_scalar(-0.5f * hi);
  return fmadd(e, -0.5f * lo, e);
}

inline float normal_cdf_scalar(float x) {
  const float a = std::fmin(std::fabs(x), kCdfMaxArg);
  const float t = 1.f / fmadd(kCdfP, a, 1.f);
  float q = kCdfQ[9];
  for (int i = 8; i >= 0; --i) q = fmadd(q, t, kCdfQ[i]);
  const float tail = 0.5f * t * q * exp_neg_half_square_scalar(a);  // Φ(−|x|)
  return std::isnan(x) ? x : (x < 0.f ? tail : 1.f - tail);
}

// Standard normal density φ(x) = exp(−x²/2)/√(2π).
inline float normal_pdf_scalar(float x) {
  return kInvSqrt2Pi * exp_neg_half_square_scalar(std::fmin(std::fabs(x), kCdfMaxArg));
}

#if LLMTUNE_AVX512
// ---- AVX-512, 16 lanes ------------------------------------------------------------------------

inline __m512 exp16(__m512 x) {
  // Operand order: min/max return their SECOND operand when either is NaN, so NaN propagates.
  x = _mm512_min_ps(_mm512_set1_ps(kExpMax), _mm512_max_ps(_mm512_set1_ps(kExpMin), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP5));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);  // p·2^n, denormals and underflow handled by the hardware
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 abs16(__m512 x) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}

inline __m512 exp_neg_half_square16(__m512 a) {
  const __m512 hi = _mm512_mul_ps(a, a), lo = _mm512_fmsub_ps(a, a, hi);
  const __m512 e = exp16(_mm512_mul_ps(hi, _mm512_set1_ps(-0.5f)));
  return _mm512_fmadd_ps(e, _mm512_mul_ps(lo, _mm512_set1_ps(-0.5f)), e);
}

// Φ(−|x|) and exp(−x²/2) together (GELU backward needs both; one exp).
inline __m512 normal_tail16(__m512 x, __m512* gauss) {
  const __m512 a = _mm512_min_ps(_mm512_set1_ps(kCdfMaxArg), abs16(x));
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f),
                                 _mm512_fmadd_ps(_mm512_set1_ps(kCdfP), a, _mm512_set1_ps(1.f)));
  __m512 q = _mm512_set1_ps(kCdfQ[9]);
  for (int i = 8; i >= 0; --i) q = _mm512_fmadd_ps(q, t, _mm512_set1_ps(kCdfQ[i]));
  *gauss = exp_neg_half_square16(a);
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), t), q), *gauss);
}

inline __m512 cdf_from_tail16(__m512 x, __m512 tail) {
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 cdf = _mm512_mask_blend_ps(negative, _mm512_sub_ps(_mm512_set1_ps(1.f), tail), tail);
  return _mm512_mask_mov_ps(cdf, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);  // NaN stays NaN
}

inline __m512 normal_cdf16(__m512 x) {
  __m512 gauss;
  return cdf_from_tail16(x, normal_tail16(x, &gauss));
}

inline __m512 normal_pdf16(__m512 x) {
  const __m512 a = _mm512_min_ps(_mm512_set1_ps(kCdfMaxArg), abs16(x));
  return _mm512_mul_ps(_mm512_set1_ps(kInvSqrt2Pi), exp_neg_half_square16(a));
}

// Mask of the first `n` lanes (n in [0, 16]).
inline __mmask16 tail_mask(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << unsigned(n)) - 1u);
}

// Calls f(i, mask) for i = 0, 16, 32, ... covering [0, n); mask selects the valid lanes (all but
// possibly the last call are full). Loads/stores inside f use the mask (maskz_loadu / mask_storeu).
template <typename F>
inline void for_each16(int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) f(i, __mmask16(0xFFFF));
  if (i < n) f(i, tail_mask(n - i));
}
#endif

}  // namespace llmtune::simd
