// Per-core peak of the two instructions a CPU matrix product can be built on, measured with 12
// independent accumulator chains in registers (no memory traffic): vfmadd231ps (f32 FMA, 32 FLOPs
// per zmm instruction) and vdpbf16ps (AVX512-BF16 dot product, 64 FLOPs). Where vdpbf16ps delivers
// fewer FLOPs per second than the f32 FMA, a bf16 training path cannot be faster than f32 without
// AMX (bench/NOTES.md). Prints one JSON line.   bench_fma_peak [iterations (default 2e8)]
#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace {

#define TWELVE(op)                                                                                        \
  op " %%zmm14,%%zmm15,%%zmm0\n" op " %%zmm14,%%zmm15,%%zmm1\n" op " %%zmm14,%%zmm15,%%zmm2\n" op        \
     " %%zmm14,%%zmm15,%%zmm3\n" op " %%zmm14,%%zmm15,%%zmm4\n" op " %%zmm14,%%zmm15,%%zmm5\n" op        \
     " %%zmm14,%%zmm15,%%zmm6\n" op " %%zmm14,%%zmm15,%%zmm7\n" op " %%zmm14,%%zmm15,%%zmm8\n" op        \
     " %%zmm14,%%zmm15,%%zmm9\n" op " %%zmm14,%%zmm15,%%zmm10\n" op " %%zmm14,%%zmm15,%%zmm11\n"
#define CLOBBERS "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11"

double seconds_fma(long n) {
  const auto t0 = std::chrono::steady_clock::now();
  asm volatile("mov %0, %%rcx\n1:\n" TWELVE("vfmadd231ps") "dec %%rcx\njnz 1b\n" ::"r"(n) : CLOBBERS);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double seconds_dpbf16(long n) {
  const auto t0 = std::chrono::steady_clock::now();
  asm volatile("mov %0, %%rcx\n1:\n" TWELVE("vdpbf16ps") "dec %%rcx\njnz 1b\n" ::"r"(n) : CLOBBERS);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) / 12 : 200000000L / 12;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("{\"error\": \"no AVX-512 on this CPU\"}\n");
    return 0;
  }
  seconds_fma(n / 10);  // wake the core up to its AVX-512 clock
  const double fma = 12.0 * n * 32 / seconds_fma(n) * 1e-9;
  std::printf("{\"fma_f32_gflops_per_core\": %.1f", fma);
  if (__builtin_cpu_supports("avx512bf16")) {
    const double dp = 12.0 * n * 64 / seconds_dpbf16(n) * 1e-9;
    std::printf(", \"dpbf16_gflops_per_core\": %.1f, \"bf16_over_f32\": %.2f", dp, dp / fma);
  }
  std::printf("}\n");
  return 0;
}
