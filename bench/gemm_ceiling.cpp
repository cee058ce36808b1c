// The matrix-product ceiling of this machine: GFLOP/s of a large square product through oneDNN, in
// f32 and in bf16 (f32 accumulation), the denominator of bench/compare's MFU. Prints one JSON line.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "kernels/matmul.h"

using namespace llmtune;

namespace {
// Best GFLOP/s over `reps` timed runs after one warm-up (best, not median: a ceiling).
template <typename Fn>
double best_gflops(Fn&& fn, double flops, int reps) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; i++) {
    const double t0 = now_seconds();
    fn();
    best = std::min(best, now_seconds() - t0);
  }
  return flops / best * 1e-9;
}
}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 2048;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  set_num_threads(0);
  Rng rng(1);
  std::vector<float> a(size_t(n * n)), b(size_t(n * n)), c(size_t(n * n));
  for (auto& v : a) v = rng.uniform() - 0.5f;
  for (auto& v : b) v = rng.uniform() - 0.5f;
  std::vector<uint16_t> a16(a.size()), b16(b.size());
  convert_f32_to_bf16(a.data(), a16.data(), a.size());
  convert_f32_to_bf16(b.data(), b16.data(), b.size());
  GemmDims d{n, n, n, false, false, 0, 0, 0};
  const double flops = 2.0 * double(n) * double(n) * double(n);
  const double f32 = best_gflops([&] { matmul_f32(c.data(), a.data(), b.data(), d, false); }, flops, reps);
  const double bf16 = best_gflops([&] { matmul_bf16(c.data(), a16.data(), b16.data(), d, false); }, flops, reps);
  std::printf("{\"n\": %lld, \"threads\": %d, \"f32_gflops\": %.1f, \"bf16_gflops\": %.1f}\n", (long long)n,
              num_threads(), f32, bf16);
  return 0;
}
