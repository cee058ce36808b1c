// Fused LM head + cross-entropy: chunked fast path vs the row-by-row reference (loss, count, dh, dW,
// token log-probs) with ignored labels, bias, transposed and bf16 weights; finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/lm_head_loss.h"

using namespace llmtune;
using llmtune::test::max_rel_err;
using llmtune::test::random_vec;

namespace {

// -100 on the first rows and on a sparse pattern, so chunks mix contiguous and gathered rows.
std::vector<int32_t> make_labels(int64_t N, int64_t V, bool with_ignored, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> labels(N);
  for (int64_t t = 0; t < N; ++t) {
    labels[t] = int32_t(rng.below(uint64_t(V)));
    if (with_ignored && (t < 11 || t % 7 == 3 || (t > N / 2 && t < N / 2 + 20))) labels[t] = kIgnoreIndex;
  }
  return labels;
}

struct Outputs {
  LossSum loss;
  std::vector<float> dh, dW, logp;
};

template <typename Fn>
Outputs run(Fn fn, const std::vector<float>& h, const WeightView& W, const float* bias,
            const std::vector<int32_t>& labels, int64_t E, int64_t V, float grad_scale,
            bool want_dW) {
  const int64_t N = int64_t(labels.size());
  Outputs o;
  o.dh.assign(N * E, 0.125f);  // non-zero: gradients must accumulate
  if (want_dW) o.dW.assign(V * E, -0.25f);
  o.logp.assign(N, 99.f);
  o.loss = fn(h.data(), W, bias, labels.data(), N, E, V, grad_scale, o.dh.data(),
              want_dW ? o.dW.data() : nullptr, o.logp.data());
  return o;
}

void compare(int64_t N, int64_t E, int64_t V, bool with_bias, bool transposed, DType dtype,
             bool with_ignored, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "N=" << N << " E=" << E << " V=" << V << " bias=" << with_bias
                                  << " transposed=" << transposed << " dtype=" << dtype_name(dtype)
                                  << " ignored=" << with_ignored);
  const std::vector<float> h = random_vec(N * E, seed, 1.f);
  const std::vector<float> w = random_vec(V * E, seed + 1, 0.5f);
  const std::vector<uint16_t> w16 = llmtune::test::to_bf16(w);
  const std::vector<float> bias = random_vec(V, seed + 2, 1.f);
  const std::vector<int32_t> labels = make_labels(N, V, with_ignored, seed + 3);
  WeightView W;
  W.dtype = dtype;
  W.transposed = transposed;
  W.data = dtype == DType::BF16 ? static_cast<const void*>(w16.data()) : w.data();
  const bool want_dW = dtype == DType::F32;
  const float* b = with_bias ? bias.data() : nullptr;
  const float grad_scale = 0.37f;

  const Outputs fast = run(lm_head_loss, h, W, b, labels, E, V, grad_scale, want_dW);
  const Outputs ref = run(reference::lm_head_loss, h, W, b, labels, E, V, grad_scale, want_dW);
  int64_t expected_count = 0;
  for (int32_t l : labels) expected_count += l != kIgnoreIndex;
  EXPECT_EQ(fast.loss.count, expected_count);
  EXPECT_EQ(ref.loss.count, expected_count);
  EXPECT_NEAR(fast.loss.sum, ref.loss.sum, 1e-5 * std::fabs(ref.loss.sum) + 1e-4);
  EXPECT_LT(max_rel_err(fast.logp, ref.logp), 1e-5);
  for (int64_t t = 0; t < N; ++t)
    if (labels[t] == kIgnoreIndex) {
      EXPECT_EQ(fast.logp[t], 0.f) << t;
      for (int64_t e = 0; e < E; ++e) ASSERT_EQ(fast.dh[t * E + e], 0.125f) << "ignored row " << t;
    }
  // bf16 rounds dlogits before the dh product; the reference does the same, up to rounding ties.
  EXPECT_LT(max_rel_err(fast.dh, ref.dh), dtype == DType::BF16 ? 1e-2 : 1e-5);
  if (want_dW) {
    EXPECT_LT(max_rel_err(fast.dW, ref.dW), 1e-5);
  }
}

}  // namespace

TEST(LmHeadLoss, FastMatchesReference) {
  uint64_t seed = 10;
  // N = 600 with ~500 counted rows and V = 50 gives two balanced chunks of ~250 (at most 256 each).
  for (bool transposed : {false, true})
    for (bool with_bias : {false, true})
      for (bool with_ignored : {false, true})
        compare(600, 32, 50, with_bias, transposed, DType::F32, with_ignored, seed += 4);
  // A larger vocabulary gives smaller chunks (at most 209 rows for V = 40000: two of them here).
  compare(500, 4, 40000, true, false, DType::F32, true, 77);
  compare(37, 16, 300, true, false, DType::F32, true, 81);
}

TEST(LmHeadLoss, Bf16WeightMatchesReference) {
  for (bool transposed : {false, true}) compare(300, 32, 64, true, transposed, DType::BF16, true, 5);
}

TEST(LmHeadLoss, AllIgnoredGivesZeroCountAndTouchesNothing) {
  const int64_t N = 9, E = 8, V = 20;
  const std::vector<float> h = random_vec(N * E, 1), w = random_vec(V * E, 2);
  const std::vector<int32_t> labels(N, kIgnoreIndex);
  WeightView W{w.data(), DType::F32, false};
  const Outputs o = run(lm_head_loss, h, W, nullptr, labels, E, V, 1.f, true);
  EXPECT_EQ(o.loss.count, 0);
  EXPECT_EQ(o.loss.sum, 0.0);
  for (float g : o.dh) EXPECT_EQ(g, 0.125f);
  for (float g : o.dW) EXPECT_EQ(g, -0.25f);
  for (float l : o.logp) EXPECT_EQ(l, 0.f);
}

// Central differences of grad_scale · Σ loss_t with respect to h and W (both layouts).
TEST(LmHeadLoss, GradientsMatchFiniteDifferences) {
  const int64_t N = 5, E = 4, V = 7;
  const float grad_scale = 0.7f;
  for (bool transposed : {false, true}) {
    std::vector<float> h = random_vec(N * E, 31, 1.f), w = random_vec(V * E, 32, 1.f);
    const std::vector<float> bias = random_vec(V, 33, 1.f);
    const std::vector<int32_t> labels = {3, kIgnoreIndex, 0, 6, 2};
    WeightView W{w.data(), DType::F32, transposed};
    std::vector<float> dh(N * E, 0.f), dW(V * E, 0.f);
    lm_head_loss(h.data(), W, bias.data(), labels.data(), N, E, V, grad_scale, dh.data(),
                 dW.data());
    auto loss = [&]() {
      return grad_scale * lm_head_loss(h.data(), W, bias.data(), labels.data(), N, E, V, 1.f,
                                       nullptr, nullptr)
                              .sum;
    };
    for (auto [x, g, name] : {std::tuple{&h, &dh, "h"}, {&w, &dW, "W"}})
      for (size_t i = 0; i < x->size(); ++i) {
        const double numeric = llmtune::test::central_difference(x->data(), i, 3e-3, loss);
        EXPECT_NEAR((*g)[i], numeric, 1e-3 + 1e-2 * std::fabs(numeric))
            << name << "[" << i << "] transposed=" << transposed;
      }
  }
}

TEST(LmHeadLoss, LabelOutOfRangeThrows) {
  const int64_t N = 4, E = 8, V = 10;
  const std::vector<float> h = random_vec(N * E, 1), w = random_vec(V * E, 2);
  WeightView W{w.data(), DType::F32, false};
  for (int32_t bad : {int32_t(V), -1, -101}) {
    std::vector<int32_t> labels = {1, kIgnoreIndex, bad, 3};
    std::vector<float> dh(N * E, 0.f);
    for (auto fn : {lm_head_loss, reference::lm_head_loss}) {
      try {
        fn(h.data(), W, nullptr, labels.data(), N, E, V, 1.f, dh.data(), nullptr, nullptr);
        ADD_FAILURE() << "label " << bad << " accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("label " + std::to_string(bad)), std::string::npos)
            << e.what();
      }
    }
    for (float g : dh) EXPECT_EQ(g, 0.f);  // rejected before any gradient was written
  }
}

// The vectorised per-row softmax/cross-entropy against double precision, on a Pythia-sized
// vocabulary (and one with a ragged tail), with logits spread wide enough that most exponentials
// underflow and the label is sometimes the arg-max.
TEST(LmHeadLoss, SoftmaxRowMatchesDoubleReference) {
  for (int64_t V : {int64_t(50304), int64_t(1003), int64_t(5)}) {
    for (float spread : {1.f, 30.f}) {
      const std::vector<float> z = random_vec(size_t(V), uint64_t(V) + uint64_t(spread), spread);
      for (int32_t label : {int32_t(0), int32_t(V - 1), int32_t(V / 2)}) {
        for (bool need_grad : {false, true}) {
          std::vector<float> fast = z, ref = z;
          const float lf = softmax_xent_row(fast.data(), V, label, need_grad, 0.37f);
          const float lr = reference::softmax_xent_row(ref.data(), V, label, need_grad, 0.37f);
          EXPECT_NEAR(lf, lr, 2e-6 * std::max(1.f, std::fabs(lr))) << "V=" << V << " spread=" << spread;
          if (need_grad) {
            EXPECT_LT(max_rel_err(fast, ref), 2e-6) << "V=" << V << " spread=" << spread;
            double sum = 0;  // a softmax minus a one-hot sums to 0
            for (float g : fast) sum += g;
            EXPECT_NEAR(sum, 0.0, 1e-5);
          }
        }
      }
    }
  }
}
