// simd_math.h: the vectorised exp / sigmoid / normal CDF and pdf (AVX-512 when compiled for it) and
// their portable scalar twins against double-precision std:: functions, plus the edge cases
// (±inf, NaN, underflow to exactly 0, no overflow to inf) that the softmax and GELU callers rely on.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/simd_math.h"

using namespace llmtune;

namespace {

// Evaluates f_scalar and (with AVX-512) f_vector on every x; returns both result arrays.
template <typename Scalar, typename Vector>
void evaluate(const std::vector<float>& x, Scalar f_scalar, Vector f_vector, std::vector<float>* scalar,
              std::vector<float>* vector) {
  scalar->resize(x.size());
  vector->resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) (*scalar)[i] = f_scalar(x[i]);
#if LLMTUNE_AVX512
  for (size_t i = 0; i < x.size(); i += 16) {
    const __mmask16 m = simd::tail_mask(int64_t(x.size() - i));
    _mm512_mask_storeu_ps(vector->data() + i, m, f_vector(_mm512_maskz_loadu_ps(m, x.data() + i)));
  }
#else
  (void)f_vector;
  *vector = *scalar;
#endif
}

std::vector<float> grid(double lo, double hi, double step) {
  std::vector<float> x;
  for (double v = lo; v <= hi; v += step) x.push_back(float(v));
  return x;
}

// |got − want| in units of the float spacing at want.
double ulps(float got, double want) {
  const float w = float(want);
  const double spacing = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return std::fabs(double(got) - want) / spacing;
}

#if LLMTUNE_AVX512
#define VEC(fn) [](__m512 v) { return simd::fn(v); }
#else
#define VEC(fn) nullptr
#endif

}  // namespace

TEST(SimdMath, ExpWithinTwoUlps) {
  // Down to −87 (normal results); the denormal range is checked in absolute terms below.
  const std::vector<float> x = grid(-87.0, 88.37, 1.7e-4);
  std::vector<float> s, v;
  evaluate(x, simd::exp_scalar, VEC(exp16), &s, &v);
  double worst_s = 0, worst_v = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double(x[i]));
    worst_s = std::max(worst_s, ulps(s[i], want));
    worst_v = std::max(worst_v, ulps(v[i], want));
  }
  EXPECT_LT(worst_s, 2.0);
  EXPECT_LT(worst_v, 2.0);
  // Denormal results: within one denormal step.
  for (float xi : grid(-103.5, -87.5, 0.01)) {
    EXPECT_NEAR(simd::exp_scalar(xi), std::exp(double(xi)), 2e-45) << xi;
  }
}

TEST(SimdMath, ExpEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {-inf, -1e30f, -105.f, -200.f, 0.f, 1e30f, inf, 100.f, nan};
  std::vector<float> s, v;
  evaluate(x, simd::exp_scalar, VEC(exp16), &s, &v);
  for (const auto* r : {&s, &v}) {
    EXPECT_EQ((*r)[0], 0.f);
    EXPECT_EQ((*r)[1], 0.f);
    EXPECT_EQ((*r)[2], 0.f);  // exactly 0, not a denormal: masked softmax entries stay exact zeros
    EXPECT_EQ((*r)[3], 0.f);
    EXPECT_EQ((*r)[4], 1.f);
    for (int i : {5, 6, 7}) {  // clamped: large but finite, so 1/(1 + e) never makes inf·0 = NaN
      EXPECT_TRUE(std::isfinite((*r)[size_t(i)])) << i;
      EXPECT_GT((*r)[size_t(i)], 1e38f) << i;
    }
    EXPECT_TRUE(std::isnan((*r)[8]));
  }
}

TEST(SimdMath, SigmoidRelativeError) {
  const std::vector<float> x = grid(-85.0, 40.0, 1e-3);
  std::vector<float> s, v;
  evaluate(x, simd::sigmoid_scalar, VEC(sigmoid16), &s, &v);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double want = 1.0 / (1.0 + std::exp(-double(x[i])));
    worst = std::max({worst, std::fabs(s[i] - want) / want, std::fabs(v[i] - want) / want});
  }
  EXPECT_LT(worst, 4e-7);
  EXPECT_LT(simd::sigmoid_scalar(-1e30f), 1e-37f);  // exp is clamped: tiny, not inf → 0
  EXPECT_EQ(simd::sigmoid_scalar(1e30f), 1.f);
}

// Φ keeps its relative accuracy in the negative tail (where ½(1 + erf) would cancel) down to the
// float range's end, and φ likewise.
TEST(SimdMath, NormalCdfAndPdfRelativeError) {
  const std::vector<float> x = grid(-12.5, 9.0, 2.3e-5);  // Φ(−12.5) ≈ 4e-36: still a normal float
  std::vector<float> cs, cv, ps, pv;
  evaluate(x, simd::normal_cdf_scalar, VEC(normal_cdf16), &cs, &cv);
  evaluate(x, simd::normal_pdf_scalar, VEC(normal_pdf16), &ps, &pv);
  double worst_cdf = 0, worst_pdf = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double xd = x[i];
    const double cdf = 0.5 * std::erfc(-xd / std::sqrt(2.0));
    const double pdf = std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * M_PI);
    worst_cdf = std::max({worst_cdf, std::fabs(cs[i] - cdf) / cdf, std::fabs(cv[i] - cdf) / cdf});
    worst_pdf = std::max({worst_pdf, std::fabs(ps[i] - pdf) / pdf, std::fabs(pv[i] - pdf) / pdf});
  }
  EXPECT_LT(worst_cdf, 1e-6);
  EXPECT_LT(worst_pdf, 5e-7);
}

TEST(SimdMath, NormalCdfEdgeCases) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {-inf, -1e30f, -40.f, 0.f, 40.f, 1e30f, inf, nan};
  std::vector<float> s, v;
  evaluate(x, simd::normal_cdf_scalar, VEC(normal_cdf16), &s, &v);
  for (const auto* r : {&s, &v}) {
    EXPECT_EQ((*r)[0], 0.f);
    EXPECT_EQ((*r)[1], 0.f);
    EXPECT_EQ((*r)[2], 0.f);
    EXPECT_NEAR((*r)[3], 0.5f, 1e-7);
    EXPECT_EQ((*r)[4], 1.f);
    EXPECT_EQ((*r)[5], 1.f);
    EXPECT_EQ((*r)[6], 1.f);
    EXPECT_TRUE(std::isnan((*r)[7]));
  }
}
