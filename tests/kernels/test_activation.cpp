// Activations and SwiGLU: fast path against the double reference, known values, HF name mapping,
// and the derivatives against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernel_test_util.h"
#include "kernels/activation.h"

using namespace llmtune;
using namespace llmtune::test;

namespace {
const Activation kAll[] = {Activation::GeluErf, Activation::GeluTanh, Activation::Silu,
                           Activation::Relu};
}

TEST(Activation, HfNames) {
  Activation a;
  ASSERT_TRUE(activation_from_hf_name("gelu", &a));
  EXPECT_EQ(a, Activation::GeluErf);
  for (const char* n : {"gelu_new", "gelu_pytorch_tanh", "gelu_fast"}) {
    ASSERT_TRUE(activation_from_hf_name(n, &a)) << n;
    EXPECT_EQ(a, Activation::GeluTanh) << n;
  }
  for (const char* n : {"silu", "swish"}) {
    ASSERT_TRUE(activation_from_hf_name(n, &a)) << n;
    EXPECT_EQ(a, Activation::Silu) << n;
  }
  ASSERT_TRUE(activation_from_hf_name("relu", &a));
  EXPECT_EQ(a, Activation::Relu);
  a = Activation::Relu;
  EXPECT_FALSE(activation_from_hf_name("quick_gelu", &a));
  EXPECT_FALSE(activation_from_hf_name("", &a));
  EXPECT_EQ(a, Activation::Relu);  // untouched on failure
}

TEST(Activation, KnownValues) {
  const float x[] = {-1.0f, 0.0f, 1.0f, 2.0f};
  float y[4];
  activation_forward(y, x, 4, Activation::GeluErf);  // torch.nn.functional.gelu
  EXPECT_NEAR(y[0], -0.15865525f, 1e-6);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_NEAR(y[2], 0.84134475f, 1e-6);
  EXPECT_NEAR(y[3], 1.95449974f, 1e-6);
  activation_forward(y, x, 4, Activation::GeluTanh);  // gelu(approximate="tanh")
  EXPECT_NEAR(y[0], -0.15880801f, 1e-6);
  EXPECT_NEAR(y[2], 0.84119199f, 1e-6);
  EXPECT_NEAR(y[3], 1.95459769f, 1e-6);
  activation_forward(y, x, 4, Activation::Silu);
  EXPECT_NEAR(y[0], -0.26894142f, 1e-6);
  EXPECT_NEAR(y[2], 0.73105858f, 1e-6);
  activation_forward(y, x, 4, Activation::Relu);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[3], 2.0f);
}

TEST(Activation, MatchesReference) {
  for (int64_t n : {1, 7, 1000, 40000}) {  // 40000 takes the parallel path
    auto x = random_vec(size_t(n), uint64_t(n), 6.0f);
    auto g = random_vec(size_t(n), uint64_t(n) + 1);
    for (Activation act : kAll) {
      std::vector<float> y(static_cast<size_t>(n)), y_ref(static_cast<size_t>(n));
      activation_forward(y.data(), x.data(), n, act);
      reference::activation_forward(y_ref.data(), x.data(), n, act);
      EXPECT_LT(max_rel_err(y, y_ref), 2e-6) << int(act) << " n=" << n;
      auto dx = random_vec(size_t(n), 5), dx_ref = dx;
      activation_backward(dx.data(), g.data(), x.data(), n, act);
      reference::activation_backward(dx_ref.data(), g.data(), x.data(), n, act);
      EXPECT_LT(max_rel_err(dx, dx_ref), 2e-6) << int(act) << " n=" << n;
    }
    auto up = random_vec(size_t(n), 77, 2.0f);
    std::vector<float> y(static_cast<size_t>(n)), y_ref(static_cast<size_t>(n));
    swiglu_forward(y.data(), x.data(), up.data(), n);
    reference::swiglu_forward(y_ref.data(), x.data(), up.data(), n);
    EXPECT_LT(max_rel_err(y, y_ref), 2e-6);
    auto dg = random_vec(size_t(n), 8), dg_ref = dg, du = random_vec(size_t(n), 9), du_ref = du;
    swiglu_backward(dg.data(), du.data(), g.data(), x.data(), up.data(), n);
    reference::swiglu_backward(dg_ref.data(), du_ref.data(), g.data(), x.data(), up.data(), n);
    EXPECT_LT(max_rel_err(dg, dg_ref), 2e-6);
    EXPECT_LT(max_rel_err(du, du_ref), 2e-6);
  }
}

TEST(Activation, GradientsMatchFiniteDifferences) {
  const int64_t n = 41;
  auto x = random_vec(size_t(n), 3, 4.0f);
  for (auto& v : x)
    if (std::fabs(v) < 0.05f) v = 0.5f;  // keep ReLU's kink out of the difference stencil
  auto g = random_vec(size_t(n), 4);
  for (Activation act : kAll) {
    std::vector<float> y(static_cast<size_t>(n));
    auto loss = [&] {
      reference::activation_forward(y.data(), x.data(), n, act);
      return dot(y, g);
    };
    std::vector<float> dx(static_cast<size_t>(n));
    activation_backward(dx.data(), g.data(), x.data(), n, act);
    for (size_t i = 0; i < size_t(n); ++i)
      EXPECT_NEAR(dx[i], central_difference(x.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dx[i])))
          << int(act) << " x=" << x[i];
  }
}

TEST(SwiGlu, GradientsMatchFiniteDifferences) {
  const int64_t n = 23;
  auto gate = random_vec(size_t(n), 5, 4.0f), up = random_vec(size_t(n), 6, 2.0f);
  auto g = random_vec(size_t(n), 7);
  std::vector<float> y(static_cast<size_t>(n));
  auto loss = [&] {
    reference::swiglu_forward(y.data(), gate.data(), up.data(), n);
    return dot(y, g);
  };
  std::vector<float> dgate(static_cast<size_t>(n)), dup(static_cast<size_t>(n));
  swiglu_backward(dgate.data(), dup.data(), g.data(), gate.data(), up.data(), n);
  for (size_t i = 0; i < size_t(n); ++i) {
    EXPECT_NEAR(dgate[i], central_difference(gate.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dgate[i])));
    EXPECT_NEAR(dup[i], central_difference(up.data(), i, 1e-3, loss), 1e-2 * (1 + std::fabs(dup[i])));
  }
  // Null gradients are skipped.
  std::vector<float> only_up(static_cast<size_t>(n));
  swiglu_backward(nullptr, only_up.data(), g.data(), gate.data(), up.data(), n);
  EXPECT_EQ(only_up, dup);
}

// accumulate = false overwrites the gradient (the decoder skips its zero-fill): equal to
// accumulating into zeros, whatever the buffer held before.
TEST(Activation, BackwardOverwriteEqualsAccumulateIntoZeros) {
  const int64_t n = 1000;  // not a multiple of 16: the masked tail too
  auto x = random_vec(size_t(n), 21, 5.0f), g = random_vec(size_t(n), 22), up = random_vec(size_t(n), 23);
  for (Activation act : kAll) {
    std::vector<float> over = random_vec(size_t(n), 24), acc(static_cast<size_t>(n), 0.f);
    activation_backward(over.data(), g.data(), x.data(), n, act, false);
    activation_backward(acc.data(), g.data(), x.data(), n, act);
    EXPECT_EQ(over, acc) << int(act);
  }
  std::vector<float> dg = random_vec(size_t(n), 25), du = random_vec(size_t(n), 26);
  std::vector<float> dg0(static_cast<size_t>(n), 0.f), du0(static_cast<size_t>(n), 0.f);
  swiglu_backward(dg.data(), du.data(), g.data(), x.data(), up.data(), n, false);
  swiglu_backward(dg0.data(), du0.data(), g.data(), x.data(), up.data(), n);
  EXPECT_EQ(dg, dg0);
  EXPECT_EQ(du, du0);
}
