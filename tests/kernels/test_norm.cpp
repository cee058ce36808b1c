// LayerNorm / RMSNorm: fast path against the double reference (forward, statistics, backward)
// and the backward against central finite differences of L = Σ out·g.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/norm.h"

using namespace llmtune;
using namespace llmtune::test;

namespace {
const int64_t kShapes[][2] = {{1, 1}, {3, 7}, {5, 64}, {17, 300}};
}

TEST(LayerNorm, MatchesReference) {
  uint64_t seed = 1;
  for (auto& s : kShapes) {
    const int64_t N = s[0], C = s[1];
    const std::string what = cat("N=", N, " C=", C);
    auto x = random_vec(size_t(N * C), seed++, 3.0f);
    for (auto& v : x) v += 2.0f;  // a nonzero mean
    auto w = random_vec(size_t(C), seed++), b = random_vec(size_t(C), seed++);
    std::vector<float> y(x.size()), y_ref(x.size()), m(static_cast<size_t>(N)), m_ref(m), r(m), r_ref(m);
    layernorm_forward(y.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    reference::layernorm_forward(y_ref.data(), m_ref.data(), r_ref.data(), x.data(), w.data(),
                                 b.data(), N, C, 1e-5f);
    EXPECT_LT(max_rel_err(y, y_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(m, m_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(r, r_ref), 1e-5) << what;

    auto g = random_vec(x.size(), seed++);
    auto dx = random_vec(x.size(), seed++), dx_ref = dx;
    auto dw = random_vec(w.size(), seed++), dw_ref = dw;
    auto db = random_vec(b.size(), seed++), db_ref = db;
    layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), m.data(),
                       r.data(), N, C);
    reference::layernorm_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), g.data(), x.data(),
                                  w.data(), m.data(), r.data(), N, C);
    EXPECT_LT(max_rel_err(dx, dx_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(dw, dw_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(db, db_ref), 1e-5) << what;
  }
}

TEST(LayerNorm, OutputIsNormalised) {
  const int64_t N = 2, C = 50;
  auto x = random_vec(size_t(N * C), 3, 4.0f);
  std::vector<float> w(size_t(C), 1.0f), b(size_t(C), 0.0f), y(x.size()), m(2), r(2);
  layernorm_forward(y.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, C, 0.0f);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0, ss = 0;
    for (int64_t c = 0; c < C; ++c) s += y[size_t(n * C + c)], ss += double(y[size_t(n * C + c)]) * y[size_t(n * C + c)];
    EXPECT_NEAR(s / C, 0.0, 1e-6);
    EXPECT_NEAR(ss / C, 1.0, 1e-5);
  }
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  const int64_t N = 3, C = 6;
  auto x = random_vec(size_t(N * C), 11), w = random_vec(size_t(C), 12), b = random_vec(size_t(C), 13);
  auto g = random_vec(x.size(), 14);
  std::vector<float> y(x.size()), m(static_cast<size_t>(N)), r(static_cast<size_t>(N));
  auto loss = [&] {
    reference::layernorm_forward(y.data(), m.data(), r.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    return dot(y, g);
  };
  loss();
  std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
  layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), m.data(),
                     r.data(), N, C);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx[i], central_difference(x.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dx[i]))) << i;
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NEAR(dw[i], central_difference(w.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dw[i]))) << i;
  for (size_t i = 0; i < b.size(); ++i)
    EXPECT_NEAR(db[i], central_difference(b.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(db[i]))) << i;
}

TEST(RmsNorm, MatchesReference) {
  uint64_t seed = 40;
  for (auto& s : kShapes) {
    const int64_t N = s[0], C = s[1];
    const std::string what = cat("N=", N, " C=", C);
    auto x = random_vec(size_t(N * C), seed++, 3.0f), w = random_vec(size_t(C), seed++);
    std::vector<float> y(x.size()), y_ref(x.size()), r(static_cast<size_t>(N)), r_ref(r);
    rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), N, C, 1e-6f);
    reference::rmsnorm_forward(y_ref.data(), r_ref.data(), x.data(), w.data(), N, C, 1e-6f);
    EXPECT_LT(max_rel_err(y, y_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(r, r_ref), 1e-5) << what;

    auto g = random_vec(x.size(), seed++);
    auto dx = random_vec(x.size(), seed++), dx_ref = dx;
    auto dw = random_vec(w.size(), seed++), dw_ref = dw;
    rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), r.data(), N, C);
    reference::rmsnorm_backward(dx_ref.data(), dw_ref.data(), g.data(), x.data(), w.data(),
                                r.data(), N, C);
    EXPECT_LT(max_rel_err(dx, dx_ref), 1e-5) << what;
    EXPECT_LT(max_rel_err(dw, dw_ref), 1e-5) << what;
  }
}

TEST(RmsNorm, HandComputedRow) {
  // x = (3, 4): mean(x²) = 12.5, rstd = 1/sqrt(12.5); weight (1, 2).
  const float x[] = {3, 4}, w[] = {1, 2};
  float y[2], r;
  rmsnorm_forward(y, &r, x, w, 1, 2, 0.0f);
  EXPECT_NEAR(r, 1.0 / std::sqrt(12.5), 1e-7);
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(y[1], 8.0 / std::sqrt(12.5), 1e-6);
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  const int64_t N = 3, C = 7;
  auto x = random_vec(size_t(N * C), 51), w = random_vec(size_t(C), 52), g = random_vec(x.size(), 53);
  std::vector<float> y(x.size()), r(static_cast<size_t>(N));
  auto loss = [&] {
    reference::rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), N, C, 1e-5f);
    return dot(y, g);
  };
  loss();
  std::vector<float> dx(x.size()), dw(w.size());
  rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), r.data(), N, C);
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_NEAR(dx[i], central_difference(x.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dx[i]))) << i;
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_NEAR(dw[i], central_difference(w.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dw[i]))) << i;
}

TEST(Norm, BackwardSkipsNullAndAccumulates) {
  const int64_t N = 4, C = 9;
  auto x = random_vec(size_t(N * C), 61), w = random_vec(size_t(C), 62), g = random_vec(x.size(), 63);
  std::vector<float> y(x.size()), r(static_cast<size_t>(N));
  rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), N, C, 1e-5f);
  std::vector<float> dw1(w.size()), dw2(w.size());
  rmsnorm_backward(nullptr, dw1.data(), g.data(), x.data(), w.data(), r.data(), N, C);
  rmsnorm_backward(nullptr, dw2.data(), g.data(), x.data(), w.data(), r.data(), N, C);
  rmsnorm_backward(nullptr, dw2.data(), g.data(), x.data(), w.data(), r.data(), N, C);
  for (auto& v : dw1) v *= 2;
  EXPECT_LT(max_rel_err(dw2, dw1), 1e-6);
}
