// Elementwise activations: GELU (exact erf, as NeoX "gelu"; tanh form, as GPT-2 "gelu_new"),
// SiLU, ReLU, and the SwiGLU product silu(gate)·up of the Llama MLP.
// Backward ACCUMULATES into its gradient outputs (nullable); accumulate = false overwrites them
// instead (the decoder's freshly produced gradients: no zero-fill pass first).
#pragma once
#include <cstdint>
#include <string_view>

namespace llmtune {

enum class Activation { GeluErf, GeluTanh, Silu, Relu };

// Maps HF names ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish", "relu").
// Returns false if unknown.
bool activation_from_hf_name(std::string_view name, Activation* out);

void activation_forward(float* out, const float* x, int64_t n, Activation act);
void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act,
                         bool accumulate = true);

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n, bool accumulate = true);

namespace reference {
void activation_forward(float* out, const float* x, int64_t n, Activation act);
void activation_backward(float* dx, const float* dout, const float* x, int64_t n, Activation act);
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t n);
}  // namespace reference

}  // namespace llmtune
