// Tests for attention_decode_forward: a few queries against a KV cache (GQA, capacity > Tk, padding
// segments) equal the reference attention; parallel and serial sizes.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/attention.h"
#include "kernels/attention_decode.h"

namespace llmtune {
namespace {

using test::max_rel_err;
using test::random_vec;

struct Case {
  int64_t B, Tq, Tk, H, Hkv, D, cap;
};

TEST(AttentionDecode, MatchesReference) {
  for (Case c : {Case{1, 1, 1, 4, 4, 16, 4}, Case{2, 1, 37, 8, 2, 16, 40}, Case{2, 3, 100, 6, 3, 20, 128},
                 Case{1, 1, 300, 32, 4, 64, 300}, Case{3, 4, 9, 4, 1, 8, 9}}) {
    for (bool segments : {false, true}) {
      SCOPED_TRACE(testing::Message() << "B " << c.B << " Tq " << c.Tq << " Tk " << c.Tk << " H " << c.H << " Hkv "
                                      << c.Hkv << " D " << c.D << " cap " << c.cap << " seg " << segments);
      const auto q = random_vec(size_t(c.B * c.Tq * c.H * c.D), 1, 1.0f);
      const auto k = random_vec(size_t(c.B * c.cap * c.Hkv * c.D), 2, 1.0f);
      const auto v = random_vec(size_t(c.B * c.cap * c.Hkv * c.D), 3, 1.0f);
      // Left padding of a different length per row (row 0: none), as generate() lays out a batch; the
      // last row's queries are padding too when Tq > 1 ... except the last one.
      std::vector<int32_t> seg_cap(size_t(c.B * c.cap), 0), k_seg(size_t(c.B * c.Tk)), q_seg(size_t(c.B * c.Tq));
      for (int64_t b = 0; b < c.B; b++) {
        const int64_t pad = segments ? std::min<int64_t>(b * 3, c.Tk - c.Tq) : 0;
        for (int64_t j = 0; j < c.Tk; j++) {
          seg_cap[size_t(b * c.cap + j)] = j < pad ? -1 : 0;
          k_seg[size_t(b * c.Tk + j)] = j < pad ? -1 : 0;
        }
        for (int64_t i = 0; i < c.Tq; i++) q_seg[size_t(b * c.Tq + i)] = k_seg[size_t(b * c.Tk + c.Tk - c.Tq + i)];
      }
      AttentionDims d;
      d.B = c.B, d.Tq = c.Tq, d.Tk = c.Tk, d.H = c.H, d.Hkv = c.Hkv, d.D = c.D, d.kv_cap = c.cap;
      std::vector<float> out(q.size()), ref(q.size()), lse(size_t(c.B * c.H * c.Tq));
      attention_decode_forward(out.data(), q.data(), k.data(), v.data(), segments ? q_seg.data() : nullptr,
                               segments ? seg_cap.data() : nullptr, c.cap, d);
      reference::attention_forward(ref.data(), lse.data(), q.data(), k.data(), v.data(),
                                   segments ? q_seg.data() : nullptr, segments ? k_seg.data() : nullptr, d);
      EXPECT_LE(max_rel_err(out, ref), 2e-6);
    }
  }
}

// A query whose segment matches no visible key gets zeros (as attention_forward).
TEST(AttentionDecode, QueryThatSeesNothingGetsZeros) {
  const int64_t D = 16, Tk = 5;
  const auto q = random_vec(size_t(2 * D), 1, 1.0f);
  const auto k = random_vec(size_t(Tk * D), 2, 1.0f), v = random_vec(size_t(Tk * D), 3, 1.0f);
  std::vector<int32_t> q_seg = {7}, k_seg(Tk, 0);
  AttentionDims d;
  d.B = 1, d.Tq = 1, d.Tk = Tk, d.H = 2, d.Hkv = 1, d.D = D;
  std::vector<float> out(size_t(2 * D), 1.f);
  attention_decode_forward(out.data(), q.data(), k.data(), v.data(), q_seg.data(), k_seg.data(), 0, d);
  for (float o : out) EXPECT_EQ(o, 0.f);
  EXPECT_THROW(attention_decode_forward(out.data(), q.data(), k.data(), v.data(), q_seg.data(), nullptr, 0, d),
               Error);
}

}  // namespace
}  // namespace llmtune
