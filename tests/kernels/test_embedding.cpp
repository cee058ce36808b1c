// Embedding: lookup and scatter-add backward against the reference (repeated ids included), and
// the clear error for ids outside the vocabulary.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/embedding.h"

using namespace llmtune;
using namespace llmtune::test;

TEST(Embedding, ForwardCopiesRows) {
  const int64_t V = 5, E = 3;
  auto table = random_vec(size_t(V * E), 1);
  const int32_t ids[] = {4, 0, 4, 2};
  std::vector<float> out(4 * E), out_ref(out.size());
  embedding_forward(out.data(), ids, table.data(), 4, E, V);
  reference::embedding_forward(out_ref.data(), ids, table.data(), 4, E, V);
  EXPECT_EQ(out, out_ref);
  for (int64_t e = 0; e < E; ++e) EXPECT_EQ(out[size_t(2 * E + e)], table[size_t(4 * E + e)]);
}

TEST(Embedding, BackwardAccumulatesRepeatedIds) {
  for (int64_t E : {3, 100, 1000}) {  // 1000 columns × 200 tokens takes the parallel path
    const int64_t V = 11, N = 200;
    std::vector<int32_t> ids(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) ids[size_t(i)] = int32_t((i * 7) % V);
    auto dout = random_vec(size_t(N * E), 2);
    auto dtable = random_vec(size_t(V * E), 3), dtable_ref = dtable;
    embedding_backward(dtable.data(), dout.data(), ids.data(), N, E);
    reference::embedding_backward(dtable_ref.data(), dout.data(), ids.data(), N, E);
    // Same summation order as the reference: bit-identical.
    EXPECT_EQ(dtable, dtable_ref) << "E=" << E;
  }
}

TEST(Embedding, IdOutOfRangeFailsClearly) {
  const int64_t V = 5, E = 2;
  std::vector<float> table(size_t(V * E)), out(4);
  for (int32_t bad : {5, -1, 1000}) {
    const int32_t ids[] = {0, bad};
    try {
      embedding_forward(out.data(), ids, table.data(), 2, E, V);
      FAIL() << "no error for id " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(cat("token id ", bad, " out of range for vocabulary of 5")),
                std::string::npos)
          << e.what();
    }
    EXPECT_THROW(reference::embedding_forward(out.data(), ids, table.data(), 2, E, V), Error);
  }
}
