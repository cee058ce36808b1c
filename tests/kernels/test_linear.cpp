// linear: fast path against the reference for f32/bf16 and both weight orientations, and the
// backward against central finite differences of L = Σ y·g.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/linear.h"

using namespace llmtune;
using namespace llmtune::test;

namespace {

struct Shape3 {
  int64_t N, in, out;
};
const Shape3 kShapes[] = {{1, 1, 1}, {3, 5, 7}, {13, 37, 29}, {40, 64, 96}};

// Weight buffers for either dtype; the view points at whichever is used.
struct Weight {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  WeightView view;
};

Weight make_weight(int64_t in, int64_t out, bool bf16, bool transposed, uint64_t seed) {
  Weight w;
  w.f32 = random_vec(size_t(in * out), seed, 0.5f);
  if (bf16) {
    w.bf16 = to_bf16(w.f32);
    w.view = {w.bf16.data(), DType::BF16, transposed};
  } else {
    w.view = {w.f32.data(), DType::F32, transposed};
  }
  return w;
}

}  // namespace

TEST(Linear, ForwardAndBackwardMatchReference) {
  uint64_t seed = 11;
  for (const auto& s : kShapes)
    for (bool bf16 : {false, true})
      for (bool transposed : {false, true})
        for (bool with_bias : {false, true}) {
          const std::string what = cat("N=", s.N, " in=", s.in, " out=", s.out, " bf16=", bf16,
                                       " transposed=", transposed, " bias=", with_bias);
          Weight W = make_weight(s.in, s.out, bf16, transposed, seed++);
          auto x = random_vec(size_t(s.N * s.in), seed++);
          auto b = random_vec(size_t(s.out), seed++);
          const float* bias = with_bias ? b.data() : nullptr;
          std::vector<float> y(size_t(s.N * s.out), 9.0f), y_ref(y.size(), -9.0f);
          linear_forward(y.data(), x.data(), W.view, bias, s.N, s.in, s.out);
          reference::linear_forward(y_ref.data(), x.data(), W.view, bias, s.N, s.in, s.out);
          EXPECT_LT(max_rel_err(y, y_ref), 1e-5) << what;

          auto dy = random_vec(y.size(), seed++);
          auto dx = random_vec(x.size(), seed++), dx_ref = dx;
          auto db = random_vec(b.size(), seed++), db_ref = db;
          std::vector<float> dW, dW_ref;
          if (!bf16) dW = dW_ref = random_vec(W.f32.size(), seed++);
          linear_backward(dx.data(), bf16 ? nullptr : dW.data(), with_bias ? db.data() : nullptr,
                          dy.data(), x.data(), W.view, s.N, s.in, s.out);
          reference::linear_backward(dx_ref.data(), bf16 ? nullptr : dW_ref.data(),
                                     with_bias ? db_ref.data() : nullptr, dy.data(), x.data(),
                                     W.view, s.N, s.in, s.out);
          EXPECT_LT(max_rel_err(dx, dx_ref), 1e-5) << what;
          if (!bf16) {
            EXPECT_LT(max_rel_err(dW, dW_ref), 1e-5) << what;
          }
          EXPECT_LT(max_rel_err(db, db_ref), 1e-5) << what;
        }
}

TEST(Linear, Bf16WeightIsCloseToF32Weight) {
  // The bf16 path must compute the same function up to bf16 rounding of x and W.
  const int64_t N = 8, in = 64, out = 32;
  Weight W32 = make_weight(in, out, false, false, 5), W16 = make_weight(in, out, true, false, 5);
  auto x = random_vec(size_t(N * in), 6);
  std::vector<float> y32(size_t(N * out)), y16(y32.size());
  linear_forward(y32.data(), x.data(), W32.view, nullptr, N, in, out);
  linear_forward(y16.data(), x.data(), W16.view, nullptr, N, in, out);
  const double err = max_rel_err(y16, y32);
  EXPECT_LT(err, 2e-2);
  EXPECT_GT(err, 0.0);  // the inputs really were rounded
}

TEST(Linear, OrientationsAgree) {
  // A [out,in] weight and its transpose stored [in,out] give the same y.
  const int64_t N = 5, in = 7, out = 3;
  auto w = random_vec(size_t(in * out), 1), wt(w);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) wt[size_t(i * out + o)] = w[size_t(o * in + i)];
  auto x = random_vec(size_t(N * in), 2);
  std::vector<float> y1(size_t(N * out)), y2(y1.size());
  linear_forward(y1.data(), x.data(), {w.data(), DType::F32, false}, nullptr, N, in, out);
  linear_forward(y2.data(), x.data(), {wt.data(), DType::F32, true}, nullptr, N, in, out);
  EXPECT_LT(max_rel_err(y1, y2), 1e-6);
}

TEST(Linear, GradientsMatchFiniteDifferences) {
  const int64_t N = 3, in = 5, out = 4;
  for (bool transposed : {false, true}) {
    auto w = random_vec(size_t(in * out), 21), x = random_vec(size_t(N * in), 22);
    auto b = random_vec(size_t(out), 23), g = random_vec(size_t(N * out), 24);
    const WeightView W{w.data(), DType::F32, transposed};
    std::vector<float> y(size_t(N * out));
    auto loss = [&] {
      reference::linear_forward(y.data(), x.data(), W, b.data(), N, in, out);
      return dot(y, g);
    };
    std::vector<float> dx(x.size()), dW(w.size()), db(b.size());
    linear_backward(dx.data(), dW.data(), db.data(), g.data(), x.data(), W, N, in, out);
    const double eps = 1e-2;  // L is linear in each input, so only rounding limits the step
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_NEAR(dx[i], central_difference(x.data(), i, eps, loss), 2e-3) << "dx " << i;
    for (size_t i = 0; i < w.size(); ++i)
      EXPECT_NEAR(dW[i], central_difference(w.data(), i, eps, loss), 2e-3) << "dW " << i;
    for (size_t i = 0; i < b.size(); ++i)
      EXPECT_NEAR(db[i], central_difference(b.data(), i, eps, loss), 2e-3) << "db " << i;
  }
}

TEST(Linear, BackwardAccumulatesAndSkipsNull) {
  const int64_t N = 4, in = 6, out = 5;
  auto w = random_vec(size_t(in * out), 31), x = random_vec(size_t(N * in), 32);
  auto dy = random_vec(size_t(N * out), 33);
  const WeightView W{w.data(), DType::F32, false};
  std::vector<float> dx1(x.size()), dx2(x.size());
  linear_backward(dx1.data(), nullptr, nullptr, dy.data(), x.data(), W, N, in, out);
  linear_backward(dx2.data(), nullptr, nullptr, dy.data(), x.data(), W, N, in, out);
  linear_backward(dx2.data(), nullptr, nullptr, dy.data(), x.data(), W, N, in, out);
  for (auto& v : dx1) v *= 2;
  EXPECT_LT(max_rel_err(dx2, dx1), 1e-6);
}

TEST(Linear, WeightGradientOfBf16WeightFails) {
  std::vector<uint16_t> w(6);
  std::vector<float> x(2), dy(3), dW(6);
  const WeightView W{w.data(), DType::BF16, false};
  EXPECT_THROW(linear_backward(nullptr, dW.data(), nullptr, dy.data(), x.data(), W, 1, 2, 3), Error);
  const WeightView bad{w.data(), DType::I8, false};
  std::vector<float> y(3);
  EXPECT_THROW(linear_forward(y.data(), x.data(), bad, nullptr, 1, 2, 3), Error);
}
