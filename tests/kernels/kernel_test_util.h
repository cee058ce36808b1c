// Helpers shared by the kernel tests: deterministic random fills and error measures.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"

namespace llmtune::test {

inline std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * (2.0f * rng.uniform() - 1.0f);
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

// max |a-b| / max(max|b|, floor): an error relative to the scale of the expected values, so that
// entries that happen to be near zero do not blow it up.
inline double max_rel_err(const float* a, const float* b, size_t n, double floor = 1e-6) {
  double max_abs = floor, max_diff = 0.0;
  for (size_t i = 0; i < n; ++i) {
    max_abs = std::max(max_abs, std::fabs(double(b[i])));
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= max_diff)) max_diff = d;  // NaN propagates as a failure
  }
  return max_diff / max_abs;
}
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return max_rel_err(a.data(), b.data(), a.size());
}

// Central finite difference of a scalar function of one entry of x (perturbed in place).
template <typename F>
double central_difference(float* x, size_t i, double eps, F&& loss) {
  const float saved = x[i];
  const float hi = float(saved + eps), lo = float(saved - eps);
  x[i] = hi;
  const double up = loss();
  x[i] = lo;
  const double down = loss();
  x[i] = saved;
  return (up - down) / (double(hi) - double(lo));  // the step actually taken after rounding
}

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * b[i];
  return s;
}

}  // namespace llmtune::test
