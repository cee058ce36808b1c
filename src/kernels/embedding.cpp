// Embedding lookup (rows of a [V, E] table by token id) and its backward (row scatter-add),
// with range checks on the ids and plain-loop references.
#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace llmtune {

namespace {

void check_ids(const int32_t* ids, int64_t N, int64_t V) {
  for (int64_t i = 0; i < N; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      fail("token id ", ids[i], " out of range for vocabulary of ", V,
           " (tokenizer and model do not match?)");
}

void check_nonnegative(const int32_t* ids, int64_t N) {
  for (int64_t i = 0; i < N; ++i)
    if (ids[i] < 0) fail("token id ", ids[i], " out of range (negative) in embedding backward");
}

}  // namespace

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t E,
                       int64_t V) {
  check_ids(ids, N, V);
#pragma omp parallel for schedule(static) if (N * E > (1 << 15))
  for (int64_t i = 0; i < N; ++i)
    std::memcpy(out + i * E, table + int64_t(ids[i]) * E, size_t(E) * sizeof(float));
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t E) {
  if (!dtable) return;
  check_nonnegative(ids, N);
  // Repeated ids write the same row, so split the columns, not the tokens: no races, and each
  // entry sums its tokens in order, identical for any thread count.
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (E + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (N * E > (1 << 15))
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t e0 = blk * kBlock, e1 = std::min(E, e0 + kBlock);
    for (int64_t i = 0; i < N; ++i) {
      float* row = dtable + int64_t(ids[i]) * E;
      const float* g = dout + i * E;
      for (int64_t e = e0; e < e1; ++e) row[e] += g[e];
    }
  }
}

namespace reference {

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t N, int64_t E,
                       int64_t V) {
  check_ids(ids, N, V);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t e = 0; e < E; ++e) out[i * E + e] = table[int64_t(ids[i]) * E + e];
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t E) {
  if (!dtable) return;
  check_nonnegative(ids, N);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t e = 0; e < E; ++e) dtable[int64_t(ids[i]) * E + e] += dout[i * E + e];
}

}  // namespace reference

}  // namespace llmtune
