// GFLOP/s of matmul_f32 (2 threads, accumulate) for the products of training steps, per operand layout:
// NN/TN = B stored [K,N] (A stored [M,K] / [K,M]), NT/TT = B stored [N,K]; "-as-is" runs NN/TN with
// matmul.cpp's B-layout rewrite switched off (oneDNN on the caller's layout). Variants alternate,
// median of 15 runs each, so a busy neighbour hits all of them alike (bench/NOTES.md).
//   bench_gemm_shapes [M N K ...]   (default: shapes of the Pythia-160m and TinyLlama steps)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "kernels/matmul.h"

using namespace llmtune;

int main(int argc, char** argv) {
  std::vector<int64_t> mnk;
  for (int i = 1; i < argc; i++) mnk.push_back(std::atoll(argv[i]));
  if (mnk.empty())
    mnk = {1024, 3072, 768, 1024, 768, 3072, 1024, 2304, 768, 1024, 768, 2304, 170, 768, 50304,
           512, 5632, 2048, 512, 2048, 5632, 512, 2048, 2048, 512, 256, 2048};
  set_num_threads(0);
  Rng rng(1);
  for (size_t s = 0; s + 2 < mnk.size(); s += 3) {
    const int64_t M = mnk[s], N = mnk[s + 1], K = mnk[s + 2];
    std::vector<float> a(size_t(M * K)), b(size_t(K * N)), c(size_t(M * N));
    for (auto& v : a) v = rng.uniform() - 0.5f;
    for (auto& v : b) v = rng.uniform() - 0.5f;
    auto run = [&](bool ta, bool tb) {
      return [&, ta, tb] { matmul_f32(c.data(), a.data(), b.data(), GemmDims{M, N, K, ta, tb, 0, 0, 0}, true); };
    };
    auto off = [&](std::function<void()> fn) {
      return [fn] { matmul_set_layout_rewrite(false); fn(); matmul_set_layout_rewrite(true); };
    };
    const std::vector<std::function<void()>> fns = {off(run(false, false)), run(false, false), off(run(true, false)),
                                                    run(true, false), run(false, true), run(true, true)};
    const char* names[] = {"NN-as-is", "NN", "TN-as-is", "TN", "NT", "TT"};
    std::vector<double> t[6];
    for (int r = 0; r < 16; r++) {
      int v = 0;
      for (auto& fn : fns) {
        const double t0 = now_seconds();
        fn();
        if (r > 0) t[v].push_back(now_seconds() - t0);
        v++;
      }
    }
    std::printf("%5lld x %5lld x %5lld (ldb %5lld B)", (long long)M, (long long)N, (long long)K, (long long)N * 4);
    for (int v = 0; v < 6; v++) {
      std::sort(t[v].begin(), t[v].end());
      std::printf("  %s %6.1f", names[v], 2.0 * M * N * K / t[v][t[v].size() / 2] * 1e-9);
    }
    std::printf("  GFLOP/s\n");
  }
  return 0;
}
