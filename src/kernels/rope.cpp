// Rotary position embedding (HF rotate_half layout): cos/sin tables computed the way HF does in
// f32 (with linear / llama3 scaling), the in-place rotation and its inverse for the backward.
#include "kernels/rope.h"

#include <cmath>

#include "core/error.h"

namespace llmtune {

// The frequencies must round like torch's op-by-op f32 arithmetic, so no fused multiply-adds here
// (GCC contracts a*b + c across statements by default, which moves llama3 values by an ulp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
std::vector<float> rope_inv_freq(int64_t rot_dim, double base, const RopeScaling& scaling) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  LLMTUNE_CHECK(rot_dim > 0 && rot_dim % 2 == 0, "rotary dimension must be a positive even number, got ",
                rot_dim, " (check head_dim / rotary_pct in config.json)");
  LLMTUNE_CHECK(base > 0.0, "rope_theta must be positive, got ", base);
  const bool none = scaling.type.empty() || scaling.type == "default";
  LLMTUNE_CHECK(none || scaling.type == "linear" || scaling.type == "llama3", "rope_scaling type '",
                scaling.type, "' is not supported (supported: linear, llama3)");
  LLMTUNE_CHECK(none || scaling.factor > 0.0, "rope_scaling.factor must be positive, got ",
                scaling.factor);

  const int64_t half = rot_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  const float base_f = float(base);
  for (int64_t i = 0; i < half; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in f32. pow is evaluated in
    // double and rounded (torch's f32 pow is within an ulp of that).
    const float expo = float(2 * i) / float(rot_dim);
    const float p = float(std::pow(double(base_f), double(expo)));
    inv[size_t(i)] = 1.0f / p;
  }

  const float factor = float(scaling.factor);
  if (scaling.type == "linear") {
    for (auto& f : inv) f = f / factor;
  } else if (scaling.type == "llama3") {
    // transformers _compute_llama3_parameters, op by op in f32 (`scalar / tensor` is
    // reciprocal-then-multiply in torch).
    const double orig = double(scaling.original_max_position_embeddings);
    const float lff = float(scaling.low_freq_factor), hff = float(scaling.high_freq_factor);
    LLMTUNE_CHECK(scaling.high_freq_factor != scaling.low_freq_factor,
                  "rope_scaling: high_freq_factor must differ from low_freq_factor");
    const float low_freq_wavelen = float(orig / scaling.low_freq_factor);
    const float high_freq_wavelen = float(orig / scaling.high_freq_factor);
    const float two_pi = float(2.0 * M_PI);
    for (auto& f : inv) {
      const float wavelen = (1.0f / f) * two_pi;
      float scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const float smooth = ((1.0f / wavelen) * float(orig) - lff) / (hff - lff);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      f = scaled;
    }
  }
  return inv;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

RopeTable rope_table(int64_t rot_dim, int64_t max_pos, double base, const RopeScaling& scaling) {
  LLMTUNE_CHECK(max_pos >= 0, "max_position_embeddings must not be negative, got ", max_pos);
  const std::vector<float> inv = rope_inv_freq(rot_dim, base, scaling);
  RopeTable t;
  t.rot_dim = rot_dim;
  t.max_pos = max_pos;
  const int64_t half = rot_dim / 2;
  t.cos.resize(size_t(max_pos * half));
  t.sin.resize(size_t(max_pos * half));
#pragma omp parallel for schedule(static) if (max_pos * half > (1 << 14))
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(p) * inv[size_t(i)];  // f32 product, as HF's f32 matmul
      t.cos[size_t(p * half + i)] = float(std::cos(double(angle)));
      t.sin[size_t(p * half + i)] = float(std::sin(double(angle)));
    }
  return t;
}

namespace {

void check_rope_args(const int32_t* pos, int64_t N, int64_t head_dim, const RopeTable& table) {
  LLMTUNE_CHECK(table.rot_dim > 0 && table.rot_dim <= head_dim && table.rot_dim % 2 == 0,
                "rope: rotary dimension ", table.rot_dim, " does not fit head_dim ", head_dim);
  for (int64_t t = 0; t < N; ++t)
    if (pos[t] < 0 || pos[t] >= table.max_pos)
      fail("position ", pos[t], " is outside the RoPE table of ", table.max_pos,
           " positions: the sequence is longer than the model's context "
           "(max_position_embeddings); shorten it (e.g. --max-seq-len)");
}

// sign = +1 rotates forward; -1 applies the transpose (inverse rotation).
void rotate(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
            int64_t token_stride, const RopeTable& table, float sign) {
  check_rope_args(pos, N, head_dim, table);
  const int64_t half = table.rot_dim / 2;
#pragma omp parallel for schedule(static) if (N * nheads * head_dim > (1 << 14))
  for (int64_t t = 0; t < N; ++t) {
    const float* c = table.cos.data() + int64_t(pos[t]) * half;
    const float* s = table.sin.data() + int64_t(pos[t]) * half;
    for (int64_t h = 0; h < nheads; ++h) {
      float* x1 = x + t * token_stride + h * head_dim;
      float* x2 = x1 + half;
      // x' = x·cos + rotate_half(x)·sin, rotate_half(x) = (−x2, x1).
      for (int64_t i = 0; i < half; ++i) {
        const float a = x1[i], b = x2[i], si = sign * s[i];
        x1[i] = a * c[i] - b * si;
        x2[i] = b * c[i] + a * si;
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                  int64_t token_stride, const RopeTable& table) {
  rotate(x, pos, N, nheads, head_dim, token_stride, table, 1.0f);
}

void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                   int64_t token_stride, const RopeTable& table) {
  rotate(dx, pos, N, nheads, head_dim, token_stride, table, -1.0f);
}

namespace reference {

namespace {
void rotate_ref(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                int64_t token_stride, const RopeTable& table, double sign) {
  check_rope_args(pos, N, head_dim, table);
  const int64_t half = table.rot_dim / 2;
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < nheads; ++h) {
      float* head = x + t * token_stride + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const double c = table.cos[size_t(pos[t] * half + i)];
        const double s = sign * table.sin[size_t(pos[t] * half + i)];
        const double a = head[i], b = head[i + half];
        head[i] = float(a * c - b * s);
        head[i + half] = float(b * c + a * s);
      }
    }
}
}  // namespace

void rope_forward(float* x, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                  int64_t token_stride, const RopeTable& table) {
  rotate_ref(x, pos, N, nheads, head_dim, token_stride, table, 1.0);
}

void rope_backward(float* dx, const int32_t* pos, int64_t N, int64_t nheads, int64_t head_dim,
                   int64_t token_stride, const RopeTable& table) {
  rotate_ref(dx, pos, N, nheads, head_dim, token_stride, table, -1.0);
}

}  // namespace reference

}  // namespace llmtune
