// matmul: oneDNN fast path (and its tiny-product loop path) against the double-accumulating
// reference, over transposes, leading dimensions, accumulate, bf16 and empty shapes.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/matmul.h"

using namespace llmtune;
using namespace llmtune::test;

namespace {

struct Case {
  int64_t M, N, K;
  bool ta, tb;
  int64_t pad;  // extra columns in every leading dimension (0 = packed)
  bool accumulate;
};

// Buffer sizes for the stored (not the logical) shapes, including padding.
struct Layout {
  GemmDims d;
  size_t a_size, b_size, c_size;
};

Layout layout(const Case& c) {
  Layout l;
  l.d.M = c.M, l.d.N = c.N, l.d.K = c.K, l.d.trans_a = c.ta, l.d.trans_b = c.tb;
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  if (c.pad) {
    l.d.lda = a_cols + c.pad, l.d.ldb = b_cols + c.pad, l.d.ldc = c.N + c.pad;
  }
  l.a_size = size_t(a_rows * (a_cols + c.pad));
  l.b_size = size_t(b_rows * (b_cols + c.pad));
  l.c_size = size_t(c.M * (c.N + c.pad));
  return l;
}

std::vector<Case> cases() {
  std::vector<Case> out;
  // The last three are big enough for the B-layout rewrites in matmul.cpp (N not a power of two):
  // a transposed product (M <= K) and a transposed copy of B (M > K, or A stored transposed).
  const int64_t shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 65}, {64, 48, 130}, {1, 200, 96},
                               {129, 1, 70}, {70, 130, 300}, {160, 96, 200}, {600, 70, 65}};
  for (auto& s : shapes)
    for (int t = 0; t < 4; ++t)
      for (int64_t pad : {0, 3})
        for (bool acc : {false, true}) out.push_back({s[0], s[1], s[2], bool(t & 1), bool(t & 2), pad, acc});
  return out;
}

std::string name(const Case& c) {
  return cat("M=", c.M, " N=", c.N, " K=", c.K, " ta=", c.ta, " tb=", c.tb, " pad=", c.pad,
             " acc=", c.accumulate);
}

}  // namespace

TEST(Matmul, F32MatchesReference) {
  uint64_t seed = 1;
  for (const Case& c : cases()) {
    Layout l = layout(c);
    auto A = random_vec(l.a_size, seed++), B = random_vec(l.b_size, seed++);
    auto C0 = random_vec(l.c_size, seed++);
    auto fast = C0, ref = C0;
    matmul_f32(fast.data(), A.data(), B.data(), l.d, c.accumulate);
    reference::matmul_f32(ref.data(), A.data(), B.data(), l.d, c.accumulate);
    EXPECT_LT(max_rel_err(fast, ref), 1e-5) << name(c);
    // Padding columns of C are never written.
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = c.N; n < c.N + c.pad; ++n)
        ASSERT_EQ(fast[size_t(m * (c.N + c.pad) + n)], C0[size_t(m * (c.N + c.pad) + n)]) << name(c);
  }
}

TEST(Matmul, Bf16MatchesReferenceOnSameInputs) {
  uint64_t seed = 100;
  for (const Case& c : cases()) {
    Layout l = layout(c);
    auto A = to_bf16(random_vec(l.a_size, seed++)), B = to_bf16(random_vec(l.b_size, seed++));
    auto C0 = random_vec(l.c_size, seed++);
    auto fast = C0, ref = C0;
    matmul_bf16(fast.data(), A.data(), B.data(), l.d, c.accumulate);
    reference::matmul_bf16(ref.data(), A.data(), B.data(), l.d, c.accumulate);
    EXPECT_LT(max_rel_err(fast, ref), 1e-5) << name(c);
  }
}

TEST(Matmul, ReferenceIsAPlainProduct) {
  // 2x3 · 3x2 by hand, so the reference itself is pinned down.
  const float A[] = {1, 2, 3, 4, 5, 6};
  const float B[] = {7, 8, 9, 10, 11, 12};
  float C[4] = {1, 1, 1, 1};
  GemmDims d;
  d.M = 2, d.N = 2, d.K = 3;
  reference::matmul_f32(C, A, B, d, false);
  EXPECT_EQ(C[0], 58);
  EXPECT_EQ(C[1], 64);
  EXPECT_EQ(C[2], 139);
  EXPECT_EQ(C[3], 154);
  float Cf[4] = {1, 1, 1, 1};
  matmul_f32(Cf, A, B, d, true);
  EXPECT_EQ(Cf[0], 59);
  EXPECT_EQ(Cf[3], 155);
}

TEST(Matmul, EmptyShapes) {
  std::vector<float> A(64, 1.0f), B(64, 1.0f), C(64, 5.0f);
  GemmDims d;
  d.M = 4, d.N = 4, d.K = 0;
  matmul_f32(C.data(), A.data(), B.data(), d, true);  // += nothing
  EXPECT_EQ(C[0], 5.0f);
  matmul_f32(C.data(), A.data(), B.data(), d, false);  // = empty sum
  for (int i = 0; i < 16; ++i) EXPECT_EQ(C[size_t(i)], 0.0f);
  EXPECT_EQ(C[16], 5.0f);
  d.M = 0, d.K = 4;
  matmul_f32(C.data(), A.data(), B.data(), d, false);
  std::vector<uint16_t> A16(64), B16(64);
  d.M = 4, d.N = 0;
  matmul_bf16(C.data(), A16.data(), B16.data(), d, false);
  EXPECT_EQ(C[16], 5.0f);
}

TEST(Matmul, RepeatedCallsReuseCachedPrimitive) {
  // Same shape twice (second hits the cache) and a shape differing only in accumulate.
  const int64_t M = 40, N = 50, K = 60;
  auto A = random_vec(size_t(M * K), 7), B = random_vec(size_t(K * N), 8);
  GemmDims d;
  d.M = M, d.N = N, d.K = K;
  std::vector<float> c1(size_t(M * N)), c2(size_t(M * N)), ref(size_t(M * N));
  matmul_f32(c1.data(), A.data(), B.data(), d, false);
  matmul_f32(c2.data(), A.data(), B.data(), d, false);
  EXPECT_EQ(c1, c2);
  matmul_f32(c2.data(), A.data(), B.data(), d, true);
  reference::matmul_f32(ref.data(), A.data(), B.data(), d, false);
  for (auto& v : ref) v *= 2;
  EXPECT_LT(max_rel_err(c2, ref), 1e-5);
}

TEST(Matmul, BadLeadingDimensionFails) {
  std::vector<float> A(16), B(16), C(16);
  GemmDims d;
  d.M = 4, d.N = 4, d.K = 4, d.lda = 2;
  EXPECT_THROW(matmul_f32(C.data(), A.data(), B.data(), d, false), Error);
}

TEST(Matmul, ConcurrentCallsFromOpenMpThreads) {
  // Callers (e.g. attention over heads) may run products from inside a parallel region.
  const int64_t M = 24, N = 40, K = 36, jobs = 8;
  auto A = random_vec(size_t(jobs * M * K), 41), B = random_vec(size_t(jobs * K * N), 42);
  std::vector<float> C(size_t(jobs * M * N)), ref(C.size());
  GemmDims d;
  d.M = M, d.N = N, d.K = K, d.trans_b = true, d.ldb = K;
#pragma omp parallel for schedule(dynamic)
  for (int64_t j = 0; j < jobs; ++j)
    matmul_f32(C.data() + j * M * N, A.data() + j * M * K, B.data() + j * K * N, d, false);
  for (int64_t j = 0; j < jobs; ++j)
    reference::matmul_f32(ref.data() + j * M * N, A.data() + j * M * K, B.data() + j * K * N, d, false);
  EXPECT_LT(max_rel_err(C, ref), 1e-5);
}
