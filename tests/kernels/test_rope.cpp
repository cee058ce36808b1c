// RoPE: table values against hand-computed cos/sin and the llama3 / linear scaling formulas; the
// rotation against the reference; backward as the exact inverse/transpose; range errors.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/rope.h"

using namespace llmtune;
using namespace llmtune::test;

TEST(Rope, TableMatchesHandComputedValues) {
  const RopeTable t = rope_table(64, 5, 10000.0, {});
  ASSERT_EQ(t.cos.size(), size_t(5 * 32));
  // Position 0: no rotation.
  for (int i = 0; i < 32; ++i) {
    EXPECT_EQ(t.cos[size_t(i)], 1.0f);
    EXPECT_EQ(t.sin[size_t(i)], 0.0f);
  }
  // inv_freq_0 = 1: angle = position.
  EXPECT_FLOAT_EQ(t.cos[3 * 32 + 0], float(std::cos(3.0)));
  EXPECT_FLOAT_EQ(t.sin[3 * 32 + 0], float(std::sin(3.0)));
  // inv_freq_1 = 10000^(-2/64); values from torch 1.13 in f32 (our cos/sin are correctly
  // rounded; torch's vectorised cos/sin can be one ulp away, hence FLOAT_EQ).
  EXPECT_FLOAT_EQ(t.cos[3 * 32 + 1], -0.6279267072677612f);
  EXPECT_FLOAT_EQ(t.sin[3 * 32 + 1], 0.7782725095748901f);
  EXPECT_FLOAT_EQ(t.cos[4 * 32 + 10], 0.9748082756996155f);
  EXPECT_FLOAT_EQ(t.sin[4 * 32 + 31], 0.0005334086017683148f);
  const auto inv = rope_inv_freq(64, 10000.0, {});
  EXPECT_FLOAT_EQ(inv[1], 0.7498942017555237f);
  EXPECT_FLOAT_EQ(inv[3], 0.4216965138912201f);
}

TEST(Rope, Llama3ScalingFollowsFormula) {
  RopeScaling s;
  s.type = "llama3";
  s.factor = 8.0, s.low_freq_factor = 1.0, s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  const auto plain = rope_inv_freq(128, 500000.0, {});
  const auto scaled = rope_inv_freq(128, 500000.0, s);
  int low = 0, mid = 0, high = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double f = plain[i], wavelen = 2 * M_PI / f;
    const double lo = 8192.0 / 1.0, hi = 8192.0 / 4.0;
    double expect;
    if (wavelen < hi) {
      expect = f, ++high;
    } else if (wavelen > lo) {
      expect = f / 8.0, ++low;
    } else {
      const double sm = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      expect = (1 - sm) * f / 8.0 + sm * f, ++mid;
    }
    EXPECT_NEAR(scaled[i], expect, 1e-6 * expect) << i;
  }
  // All three regimes are exercised.
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
  EXPECT_GT(high, 0);

  // Bit-exact against transformers' _compute_llama3_parameters run in torch 1.13 (Llama-3.2
  // settings, factor 32): a medium-frequency entry, where fused multiply-adds would be an ulp off.
  s.factor = 32.0;
  const auto scaled32 = rope_inv_freq(128, 500000.0, s);
  EXPECT_EQ(scaled32[32], 0.000429556705057621f);
}

TEST(Rope, LinearScalingDividesFrequencies) {
  RopeScaling s;
  s.type = "linear";
  s.factor = 4.0;
  const auto plain = rope_inv_freq(32, 10000.0, {}), scaled = rope_inv_freq(32, 10000.0, s);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_FLOAT_EQ(scaled[i], plain[i] / 4.0f);
  // Position 8 with factor 4 rotates like position 2 without scaling.
  const RopeTable a = rope_table(32, 10, 10000.0, s), b = rope_table(32, 10, 10000.0, {});
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(a.cos[size_t(8 * 16 + i)], b.cos[size_t(2 * 16 + i)], 1e-6);
}

TEST(Rope, BadConfigFails) {
  RopeScaling s;
  s.type = "yarn";
  EXPECT_THROW(rope_table(64, 10, 10000.0, s), Error);
  EXPECT_THROW(rope_table(63, 10, 10000.0, {}), Error);
}

namespace {
struct Layout {
  int64_t N = 6, nheads = 3, head_dim = 10, rot_dim = 6, token_stride = 35;  // 5 spare floats/token
};
}  // namespace

TEST(Rope, MatchesReferenceAndLeavesTheRestAlone) {
  const Layout L;
  const RopeTable t = rope_table(L.rot_dim, 50, 10000.0, {});
  const std::vector<int32_t> pos = {0, 1, 7, 49, 3, 3};
  const auto x0 = random_vec(size_t(L.N * L.token_stride), 1);
  auto fast = x0, ref = x0;
  rope_forward(fast.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  reference::rope_forward(ref.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  EXPECT_LT(max_rel_err(fast, ref), 1e-6);
  for (int64_t tok = 0; tok < L.N; ++tok)
    for (int64_t j = 0; j < L.token_stride; ++j) {
      const size_t k = size_t(tok * L.token_stride + j);
      const bool rotated = j < L.nheads * L.head_dim && j % L.head_dim < L.rot_dim && pos[size_t(tok)] != 0;
      if (!rotated) {
        EXPECT_EQ(fast[k], x0[k]) << tok << "," << j;
      }
    }
  // Token at position 7, head 1, pair i = 1 (dims 1 and 4 of the head), by hand.
  const int64_t base = 2 * L.token_stride + 1 * L.head_dim;
  const float c = t.cos[7 * 3 + 1], s = t.sin[7 * 3 + 1];
  EXPECT_FLOAT_EQ(fast[size_t(base + 1)], x0[size_t(base + 1)] * c - x0[size_t(base + 4)] * s);
  EXPECT_FLOAT_EQ(fast[size_t(base + 4)], x0[size_t(base + 4)] * c + x0[size_t(base + 1)] * s);

  auto gfast = x0, gref = x0;
  rope_backward(gfast.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  reference::rope_backward(gref.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  EXPECT_LT(max_rel_err(gfast, gref), 1e-6);
}

TEST(Rope, BackwardUndoesForward) {
  const Layout L;
  const RopeTable t = rope_table(L.rot_dim, 5000, 10000.0, {});
  const std::vector<int32_t> pos = {0, 1, 100, 4999, 2500, 17};
  const auto x0 = random_vec(size_t(L.N * L.token_stride), 2);
  auto x = x0;
  rope_forward(x.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  EXPECT_GT(max_rel_err(x, x0), 1e-2);  // it did rotate
  rope_backward(x.data(), pos.data(), L.N, L.nheads, L.head_dim, L.token_stride, t);
  EXPECT_LT(max_rel_err(x, x0), 1e-6);
}

TEST(Rope, BackwardMatchesFiniteDifferences) {
  // L = Σ rope(x)·g; dL/dx = rope_backward(g).
  const int64_t N = 2, nheads = 2, head_dim = 6, stride = 12;
  const RopeTable t = rope_table(4, 10, 100.0, {});
  const std::vector<int32_t> pos = {3, 9};
  auto x = random_vec(size_t(N * stride), 3), g = random_vec(size_t(N * stride), 4);
  std::vector<float> y;
  auto loss = [&] {
    y = x;
    reference::rope_forward(y.data(), pos.data(), N, nheads, head_dim, stride, t);
    return dot(y, g);
  };
  auto dx = g;
  rope_backward(dx.data(), pos.data(), N, nheads, head_dim, stride, t);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx[i], central_difference(x.data(), i, 1e-2, loss), 1e-3) << i;
}

TEST(Rope, PositionBeyondTableFailsClearly) {
  const RopeTable t = rope_table(4, 8, 10000.0, {});
  std::vector<float> x(2 * 4, 1.0f);
  const int32_t pos[] = {7, 8};
  try {
    rope_forward(x.data(), pos, 2, 1, 4, 4, t);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("position 8"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("longer than the model's context"), std::string::npos);
  }
  for (float v : x) EXPECT_EQ(v, 1.0f);  // checked before anything was rotated
  const int32_t neg[] = {-1};
  EXPECT_THROW(reference::rope_backward(x.data(), neg, 1, 1, 4, 4, t), Error);
}
