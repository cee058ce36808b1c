// Global L2 gradient norm and clipping.
#include "train/clip.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace llmtune {

double global_grad_norm(const Model& m) {
  double total = 0.0;
  for (const Param& p : m.params) {
    if (!p.grad.defined()) continue;
    const float* g = p.grad.f32();
    const int64_t n = p.grad.numel();
    // Fixed-size chunks summed in chunk order: the result does not depend on the thread count or on
    // thread timing (an OpenMP reduction combines partial sums in arrival order), so resumed runs
    // reproduce uninterrupted ones bit for bit.
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<double> partial(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int64_t c = 0; c < chunks; c++) {
      double s = 0.0;
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; i++) s += double(g[i]) * double(g[i]);
      partial[size_t(c)] = s;
    }
    double sq = 0.0;
    for (double s : partial) sq += s;
    total += sq;
  }
  return std::sqrt(total);
}

double clip_grad_norm(Model& m, double max_norm) {
  const double norm = global_grad_norm(m);
  if (max_norm <= 0) return norm;
  const double coef = std::min(1.0, max_norm / (norm + 1e-6));
  if (coef < 1.0) {
    const float c = float(coef);
    for (Param& p : m.params) {
      if (!p.grad.defined()) continue;
      float* g = p.grad.f32();
      const int64_t n = p.grad.numel();
#pragma omp parallel for simd schedule(static) if (n >= (1 << 15))
      for (int64_t i = 0; i < n; i++) g[i] *= c;
    }
  }
  return norm;
}

}  // namespace llmtune
