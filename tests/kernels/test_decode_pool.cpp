// Tests for decode_pool: every chunk of every job runs exactly once and is finished when run_chunks
// returns (thousands of back-to-back jobs, as a decode step issues them), nested and concurrent calls
// run inline, one configured thread runs inline, SerialOmpScope keeps the pool's thread count.
#include <gtest/gtest.h>

#include <omp.h>

#include <atomic>
#include <thread>
#include <vector>

#include "core/threads.h"
#include "kernels/decode_pool.h"

namespace llmtune {
namespace {

struct Threads {
  int before = num_threads();
  explicit Threads(int n) { set_num_threads(n); }
  ~Threads() { set_num_threads(before); }
};

TEST(DecodePool, EveryChunkOnceManyJobs) {
  Threads two(2);
  std::vector<int> hits(64);
  for (int job = 0; job < 3000; job++) {
    const int64_t n = 1 + job % 64;
    std::fill(hits.begin(), hits.end(), 0);
    run_chunks(n, [&](int64_t c) { hits[size_t(c)]++; });  // distinct slots: no race
    for (int64_t c = 0; c < 64; c++) ASSERT_EQ(hits[size_t(c)], c < n ? 1 : 0) << "job " << job << " chunk " << c;
  }
}

// Chunks that take a while, so the helper really takes part; results are complete on return.
TEST(DecodePool, ResultsCompleteOnReturn) {
  Threads two(2);
  std::vector<double> out(16);
  for (int job = 0; job < 50; job++) {
    std::fill(out.begin(), out.end(), 0.0);
    run_chunks(16, [&](int64_t c) {
      double s = 0;
      for (int i = 0; i < 20000; i++) s += 1.0 / (1.0 + double(i + c));
      out[size_t(c)] = s;
    });
    for (int64_t c = 0; c < 16; c++) {
      double s = 0;
      for (int i = 0; i < 20000; i++) s += 1.0 / (1.0 + double(i + c));
      ASSERT_EQ(out[size_t(c)], s) << "job " << job << " chunk " << c;
    }
  }
}

TEST(DecodePool, NestedConcurrentAndSingleThreadRunInline) {
  Threads two(2);
  std::atomic<int> total{0};
  run_chunks(8, [&](int64_t) { run_chunks(4, [&](int64_t) { total++; }); });  // nested: inline
  EXPECT_EQ(total.load(), 32);
  // Two user threads submitting at once: one gets the pool, the other runs inline; all chunks run.
  total = 0;
  auto submit = [&] {
    for (int j = 0; j < 200; j++) run_chunks(10, [&](int64_t) { total++; });
  };
  std::thread a(submit), b(submit);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 200 * 10);
  {
    Threads one(1);
    const auto caller = std::this_thread::get_id();
    bool all_on_caller = true;
    run_chunks(10, [&](int64_t) { all_on_caller &= std::this_thread::get_id() == caller; });
    EXPECT_TRUE(all_on_caller);
  }
  {  // inside an OpenMP region: inline too (no deadlock), every call runs all its chunks
    std::atomic<int> n{0}, team{0};
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      team = omp_get_num_threads();
      run_chunks(5, [&](int64_t) { n++; });
    }
    EXPECT_EQ(n.load(), 5 * team.load());
  }
}

TEST(DecodePool, SerialOmpScopeKeepsPoolThreads) {
  Threads two(2);
  EXPECT_EQ(pool_threads(), 2);
  {
    SerialOmpScope serial;
    EXPECT_EQ(omp_get_max_threads(), 1);
    EXPECT_EQ(pool_threads(), 2);
    {
      SerialOmpScope nested;
      EXPECT_EQ(pool_threads(), 2);
    }
    EXPECT_EQ(omp_get_max_threads(), 1);
  }
  EXPECT_EQ(omp_get_max_threads(), 2);
}

}  // namespace
}  // namespace llmtune
