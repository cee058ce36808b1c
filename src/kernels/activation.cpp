// Elementwise activations (GELU erf/tanh, SiLU, ReLU) and the SwiGLU product, forward and
// backward, with double-precision references.
#include "kernels/activation.h"
#include "core/profile.h"

#include <cmath>

namespace llmtune {

bool activation_from_hf_name(std::string_view name, Activation* out) {
  Activation a;
  if (name == "gelu")
    a = Activation::GeluErf;
  else if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast")
    a = Activation::GeluTanh;
  else if (name == "silu" || name == "swish")
    a = Activation::Silu;
  else if (name == "relu")
    a = Activation::Relu;
  else
    return false;
  *out = a;
  return true;
}

namespace {

// Below this many elements the thread start-up costs more than the work.
constexpr int64_t kParallelMin = 1 << 14;

constexpr float kInvSqrt2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f;
constexpr float kGeluCubic = 0.044715f;

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

template <Activation act>
inline float act_value(float x) {
  switch (act) {  // resolved at compile time
    case Activation::GeluErf: return 0.5f * x * (1.0f + std::erf(x * kInvSqrt2));
    case Activation::GeluTanh:
      return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x)));
    case Activation::Silu: return x * sigmoid(x);
    case Activation::Relu: return x > 0.0f ? x : 0.0f;
  }
  return 0.0f;
}

template <Activation act>
inline float act_derivative(float x) {
  switch (act) {
    case Activation::GeluErf:
      return 0.5f * (1.0f + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
    case Activation::GeluTanh: {
      const float t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
      return 0.5f * (1.0f + t) +
             0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * x * x);
    }
    case Activation::Silu: {
      const float s = sigmoid(x);
      return s * (1.0f + x * (1.0f - s));
    }
    case Activation::Relu: return x > 0.0f ? 1.0f : 0.0f;
  }
  return 0.0f;
}

template <Activation act>
void forward_loop(float* out, const float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = act_value<act>(x[i]);
}

template <Activation act>
void backward_loop(float* dx, const float* dout, const float* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] += dout[i] * act_derivative<act>(x[i]);
}

}  // namespace

// The switch sits outside the loops so that each loop body is branch-free.
void activation_forward(float* out, const float* x, int64_t n, Activation act) {
  ProfileScope profile_scope("activation");
  switch (act) {
    case Activation::GeluErf: return forward_loop<Activation::GeluErf>(out, x, n);
    case Activation::GeluTanh: return forward_loop<Activation::GeluTanh>(out, x, n);
    case Activation::Silu: return forward_loop<Activation::Silu>(out, x, n);
    case Activation::Relu: return forward_loop<Activation::Relu>(out, x, n);
  }
}

void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act) {
  ProfileScope profile_scope("activation");
  if (!dx) return;
  switch (act) {
    case Activation::GeluErf: return backward_loop<Activation::GeluErf>(dx, dout, x, n);
    case Activation::GeluTanh: return backward_loop<Activation::GeluTanh>(dx, dout, x, n);
    case Activation::Silu: return backward_loop<Activation::Silu>(dx, dout, x, n);
    case Activation::Relu: return backward_loop<Activation::Relu>(dx, dout, x, n);
  }
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  ProfileScope profile_scope("activation");
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n) {
  ProfileScope profile_scope("activation");
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i], s = sigmoid(g);
    if (dgate) dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    if (dup) dup[i] += dout[i] * g * s;
  }
}

namespace reference {

namespace {
double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double value_d(double x, Activation act) {
  const double k = std::sqrt(2.0 / M_PI);
  switch (act) {
    case Activation::GeluErf: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::GeluTanh: return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
    case Activation::Silu: return x * sigmoid_d(x);
    case Activation::Relu: return x > 0.0 ? x : 0.0;
  }
  return 0.0;
}

double derivative_d(double x, Activation act) {
  const double k = std::sqrt(2.0 / M_PI);
  switch (act) {
    case Activation::GeluErf:
      return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) +
             x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
    case Activation::GeluTanh: {
      const double t = std::tanh(k * (x + 0.044715 * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
    }
    case Activation::Silu: {
      const double s = sigmoid_d(x);
      return s * (1.0 + x * (1.0 - s));
    }
    case Activation::Relu: return x > 0.0 ? 1.0 : 0.0;
  }
  return 0.0;
}
}  // namespace

void activation_forward(float* out, const float* x, int64_t n, Activation act) {
  for (int64_t i = 0; i < n; ++i) out[i] = float(value_d(x[i], act));
}

void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act) {
  if (!dx) return;
  for (int64_t i = 0; i < n; ++i) dx[i] = float(dx[i] + double(dout[i]) * derivative_d(x[i], act));
}

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float(double(gate[i]) * sigmoid_d(gate[i]) * up[i]);
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i], s = sigmoid_d(g);
    if (dgate) dgate[i] = float(dgate[i] + double(dout[i]) * up[i] * s * (1.0 + g * (1.0 - s)));
    if (dup) dup[i] = float(dup[i] + double(dout[i]) * g * s);
  }
}

}  // namespace reference

}  // namespace llmtune
