// lm_head_loss_weighted (per-row gradient weights for RL losses) against the plain reference, and its
// equivalence with lm_head_loss when every weight is the same.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/rng.h"
#include "kernels/lm_head_loss.h"

using namespace llmtune;

namespace {

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

}  // namespace

TEST(LmHeadLossWeighted, MatchesReferenceWithMixedWeightsAndIgnoredRows) {
  const int64_t N = 37, E = 16, V = 53;
  Rng rng(7);
  std::vector<float> h(size_t(N * E)), W(size_t(V * E)), w(static_cast<size_t>(N));
  for (float& x : h) x = rng.normal();
  for (float& x : W) x = 0.3f * rng.normal();
  for (float& x : w) x = 2.f * rng.normal();
  std::vector<int32_t> labels(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; t++) labels[size_t(t)] = (t % 5 == 3) ? kIgnoreIndex : int32_t(rng.below(uint64_t(V)));
  WeightView wv{W.data(), DType::F32, false};
  std::vector<float> dh(size_t(N * E), 0.5f), dW(size_t(V * E), -0.25f), lp(static_cast<size_t>(N));
  std::vector<float> dh_ref = dh, dW_ref = dW, lp_ref(static_cast<size_t>(N));
  LossSum fast = lm_head_loss_weighted(h.data(), wv, nullptr, labels.data(), w.data(), N, E, V, dh.data(), dW.data(),
                                       lp.data());
  LossSum ref = reference::lm_head_loss_weighted(h.data(), wv, nullptr, labels.data(), w.data(), N, E, V, 1.f,
                                                 dh_ref.data(), dW_ref.data(), lp_ref.data());
  EXPECT_EQ(fast.count, ref.count);
  EXPECT_NEAR(fast.sum, ref.sum, 1e-4 * std::fabs(ref.sum));
  EXPECT_LT(max_abs_diff(dh, dh_ref), 1e-4);  // accumulated onto the initial 0.5
  EXPECT_LT(max_abs_diff(dW, dW_ref), 1e-4);
  EXPECT_LT(max_abs_diff(lp, lp_ref), 1e-5);

  // Uniform weights c give exactly lm_head_loss with grad_scale c.
  std::vector<float> wc(size_t(N), 0.375f), dh_a(size_t(N * E), 0.f), dh_b(size_t(N * E), 0.f);
  lm_head_loss_weighted(h.data(), wv, nullptr, labels.data(), wc.data(), N, E, V, dh_a.data(), nullptr);
  lm_head_loss(h.data(), wv, nullptr, labels.data(), N, E, V, 0.375f, dh_b.data(), nullptr);
  EXPECT_EQ(max_abs_diff(dh_a, dh_b), 0.0);
}

TEST(LmHeadLossWeighted, FiniteDifferenceOfWeightedLoss) {
  const int64_t N = 4, E = 6, V = 9;
  Rng rng(3);
  std::vector<float> h(size_t(N * E)), W(size_t(V * E)), w{1.5f, -0.5f, 0.f, 2.f};
  for (float& x : h) x = rng.normal();
  for (float& x : W) x = 0.5f * rng.normal();
  std::vector<int32_t> labels{1, 4, 7, 2};
  WeightView wv{W.data(), DType::F32, false};
  std::vector<float> dh(size_t(N * E), 0.f);
  lm_head_loss_weighted(h.data(), wv, nullptr, labels.data(), w.data(), N, E, V, dh.data(), nullptr);
  auto weighted = [&](std::vector<float>& hh) {
    std::vector<float> lp(static_cast<size_t>(N));
    reference::lm_head_loss(hh.data(), wv, nullptr, labels.data(), N, E, V, 1.f, nullptr, nullptr, lp.data());
    double s = 0;
    for (int64_t t = 0; t < N; t++) s += double(w[size_t(t)]) * -double(lp[size_t(t)]);
    return s;
  };
  for (int64_t i = 0; i < N * E; i += 5) {
    std::vector<float> hp = h, hm = h;
    hp[size_t(i)] += 1e-2f;
    hm[size_t(i)] -= 1e-2f;
    const double fd = (weighted(hp) - weighted(hm)) / 2e-2;
    EXPECT_NEAR(dh[size_t(i)], fd, 2e-3) << "element " << i;
  }
}
