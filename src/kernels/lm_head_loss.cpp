// Fused LM head + cross-entropy over chunks of counted rows (labels != -100), so the [N × V] logits
// are never held: per chunk, logits = h·Wᵀ (+bias), softmax/loss in place, then dh/dW via linear.
#include "kernels/lm_head_loss.h"
#include "core/profile.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "core/error.h"
#include "kernels/simd_math.h"

namespace llmtune {

namespace {

// Validates labels before anything is written; returns the counted rows in ascending order.
std::vector<int64_t> counted_rows(const int32_t* labels, int64_t N, int64_t V, const char* who) {
  std::vector<int64_t> rows;
  rows.reserve(size_t(N));
  for (int64_t t = 0; t < N; ++t) {
    const int32_t label = labels[t];
    if (label == kIgnoreIndex) continue;
    LLMTUNE_CHECK(label >= 0 && label < V, who, ": label ", label, " at position ", t,
                  " is outside the vocabulary [0, ", V,
                  "); labels must be token ids of this model's tokenizer, or -100 to ignore");
    rows.push_back(t);
  }
  return rows;
}

void check_args(const WeightView& W, float* dW, int64_t N, int64_t E, int64_t V, const char* who) {
  LLMTUNE_CHECK(N >= 0 && E > 0 && V > 0, who, ": invalid sizes N=", N, " E=", E, " V=", V);
  LLMTUNE_CHECK(W.dtype == DType::F32 || W.dtype == DType::BF16, who,
                ": LM head weight must be F32 or BF16, got ", dtype_name(W.dtype));
  LLMTUNE_CHECK(!dW || W.dtype == DType::F32, who,
                ": a weight gradient needs an f32 LM head (bf16 weights are frozen)");
}

// Rows per chunk: big enough for an efficient product, small enough that the chunk's logits
// (rows × V floats) stay around 32 MiB even for 150k-token vocabularies.
int64_t chunk_rows(int64_t V) { return std::clamp<int64_t>((int64_t(1) << 23) / V, 16, 256); }

// Splits `count` rows into chunks of about equal size: 1020 rows at 166 per chunk were six of 166
// and one of 24, and the 24-row products ran at half the rate of the others (bench/NOTES.md). Rows
// per chunk stay within 1.25x of chunk_rows(V).
int64_t balanced_chunk(int64_t count, int64_t V) {
  const int64_t max_rows = chunk_rows(V);
  if (count <= max_rows) return std::max<int64_t>(count, 1);
  int64_t chunks = count / max_rows;
  if ((count + chunks - 1) / chunks > max_rows + max_rows / 4) chunks++;
  return (count + chunks - 1) / chunks;
}

// The chunk's logits live in a per-thread buffer kept between calls, uninitialised (every entry is
// written by the product before it is read): a fresh 32 MiB vector per call was mmap'ed, page-faulted
// and zero-filled each time, which cost more than the whole vectorised softmax (bench/NOTES.md).
float* logits_scratch(size_t n) {
  thread_local std::unique_ptr<float[]> buffer;
  thread_local size_t capacity = 0;
  if (capacity < n) {
    buffer.reset();  // free the old one first: peak memory is one buffer, not two
    buffer.reset(new float[n]);
    capacity = n;
  }
  return buffer.get();
}

}  // namespace

// Three vectorised passes (max; exp and sum, the exponentials stored; scaling) — the row (V floats)
// stays in L2 between them.
float softmax_xent_row(float* z, int64_t V, int32_t label, bool need_grad, float row_scale) {
  const float label_logit = z[label];
#if LLMTUNE_AVX512
  __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0, m2 = m0, m3 = m0;
  int64_t c = 0;
  for (; c + 64 <= V; c += 64) {
    m0 = _mm512_max_ps(m0, _mm512_loadu_ps(z + c));
    m1 = _mm512_max_ps(m1, _mm512_loadu_ps(z + c + 16));
    m2 = _mm512_max_ps(m2, _mm512_loadu_ps(z + c + 32));
    m3 = _mm512_max_ps(m3, _mm512_loadu_ps(z + c + 48));
  }
  for (; c < V; c += 16) {
    const __mmask16 m = simd::tail_mask(V - c);
    m0 = _mm512_mask_max_ps(m0, m, m0, _mm512_maskz_loadu_ps(m, z + c));
  }
  const float max_logit =
      _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
  const __m512 neg_max = _mm512_set1_ps(-max_logit);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  c = 0;
  for (; c + 32 <= V; c += 32) {  // exponentials kept in place: they become the softmax
    const __m512 e0 = simd::exp16(_mm512_add_ps(_mm512_loadu_ps(z + c), neg_max));
    const __m512 e1 = simd::exp16(_mm512_add_ps(_mm512_loadu_ps(z + c + 16), neg_max));
    _mm512_storeu_ps(z + c, e0);
    _mm512_storeu_ps(z + c + 16, e1);
    s0 = _mm512_add_ps(s0, e0);
    s1 = _mm512_add_ps(s1, e1);
  }
  for (; c < V; c += 16) {
    const __mmask16 m = simd::tail_mask(V - c);
    const __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(m, z + c), neg_max);
    const __m512 e = _mm512_maskz_mov_ps(m, simd::exp16(x));
    _mm512_mask_storeu_ps(z + c, m, e);
    s0 = _mm512_add_ps(s0, e);
  }
  const float sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
#else
  float max_logit = z[0];
  for (int64_t c = 1; c < V; ++c) max_logit = std::max(max_logit, z[c]);
  float sum = 0.f;
  for (int64_t c = 0; c < V; ++c) {
    z[c] = simd::exp_scalar(z[c] - max_logit);
    sum += z[c];
  }
#endif
  const float loss = (max_logit + std::log(sum)) - label_logit;
  if (need_grad) {
    const float factor = row_scale / sum;
#if LLMTUNE_AVX512
    const __m512 f = _mm512_set1_ps(factor);
    simd::for_each16(V, [&](int64_t i, __mmask16 m) {
      _mm512_mask_storeu_ps(z + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, z + i), f));
    });
#else
#pragma omp simd
    for (int64_t c = 0; c < V; ++c) z[c] *= factor;
#endif
    z[label] -= row_scale;
  }
  return loss;
}

// Shared body: the gradient factor of row t is grad_scale · (row_weight ? row_weight[t] : 1).
LossSum lm_head_loss_impl(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                          const float* row_weight, int64_t N, int64_t E, int64_t V, float grad_scale, float* dh,
                          float* dW, float* token_logp) {
  ProfileScope profile_scope("lm_head_loss (excl. matmul)");
  check_args(W, dW, N, E, V, "lm_head_loss");
  const std::vector<int64_t> rows = counted_rows(labels, N, V, "lm_head_loss");
  if (token_logp)
    for (int64_t t = 0; t < N; ++t)
      if (labels[t] == kIgnoreIndex) token_logp[t] = 0.f;

  const int64_t count = int64_t(rows.size());
  const bool need_grad = dh || dW;
  const int64_t chunk = balanced_chunk(count, V);
  // Scratch: the chunk's logits (turned into dlogits in place), gathered rows and their dh.
  float* logits = logits_scratch(size_t(chunk * V));
  std::vector<float> h_gathered, dh_gathered;

  double total = 0.0;
  for (int64_t c0 = 0; c0 < count; c0 += chunk) {
    const int64_t n = std::min(chunk, count - c0);
    const int64_t* chunk_rows_idx = rows.data() + c0;
    // Counted rows usually come in runs; a contiguous run is used in place, without copies.
    const bool contiguous = chunk_rows_idx[n - 1] - chunk_rows_idx[0] == n - 1;
    const float* hc = h + chunk_rows_idx[0] * E;
    if (!contiguous) {
      h_gathered.resize(size_t(chunk * E));
#pragma omp parallel for schedule(static) if (n * E > (1 << 16))
      for (int64_t r = 0; r < n; ++r)
        std::copy_n(h + chunk_rows_idx[r] * E, E, h_gathered.data() + r * E);
      hc = h_gathered.data();
    }

    linear_forward(logits, hc, W, bias, n, E, V);

#pragma omp parallel for schedule(static) reduction(+ : total)
    for (int64_t r = 0; r < n; ++r) {
      const int64_t t = chunk_rows_idx[r];
      const float row_scale = row_weight ? grad_scale * row_weight[t] : grad_scale;
      const float loss = softmax_xent_row(logits + r * V, V, labels[t], need_grad, row_scale);
      total += double(loss);
      if (token_logp) token_logp[t] = -loss;
    }

    if (!need_grad) continue;
    float* dx = nullptr;
    if (dh && contiguous) {
      dx = dh + chunk_rows_idx[0] * E;  // linear_backward accumulates in place
    } else if (dh) {
      dh_gathered.assign(size_t(n * E), 0.f);
      dx = dh_gathered.data();
    }
    linear_backward(dx, dW, nullptr, logits, hc, W, n, E, V);
    if (dh && !contiguous) {
#pragma omp parallel for schedule(static) if (n * E > (1 << 16))
      for (int64_t r = 0; r < n; ++r) {
        float* dst = dh + chunk_rows_idx[r] * E;
        const float* src = dh_gathered.data() + r * E;
        for (int64_t e = 0; e < E; ++e) dst[e] += src[e];
      }
    }
  }
  return LossSum{total, count};
}

LossSum lm_head_loss(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                     int64_t N, int64_t E, int64_t V, float grad_scale, float* dh, float* dW,
                     float* token_logp) {
  return lm_head_loss_impl(h, W, bias, labels, nullptr, N, E, V, grad_scale, dh, dW, token_logp);
}

LossSum lm_head_loss_weighted(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                              const float* row_weight, int64_t N, int64_t E, int64_t V, float* dh, float* dW,
                              float* token_logp) {
  LLMTUNE_CHECK(row_weight != nullptr, "lm_head_loss_weighted: row_weight is required");
  return lm_head_loss_impl(h, W, bias, labels, row_weight, N, E, V, 1.f, dh, dW, token_logp);
}

namespace reference {

namespace {
double weight_at(const WeightView& W, int64_t v, int64_t e, int64_t E, int64_t V) {
  const int64_t idx = W.transposed ? e * V + v : v * E + e;
  if (W.dtype == DType::BF16) return bf16_to_f32(static_cast<const uint16_t*>(W.data)[idx]);
  return static_cast<const float*>(W.data)[idx];
}
// With a bf16 weight the products run in bf16 (activations and dlogits rounded), as in linear.
double as_operand(const WeightView& W, double x) {
  return W.dtype == DType::BF16 ? double(bf16_to_f32(f32_to_bf16(float(x)))) : x;
}
}  // namespace

float softmax_xent_row(float* z, int64_t V, int32_t label, bool need_grad, float row_scale) {
  double max_logit = z[0];
  for (int64_t c = 1; c < V; ++c) max_logit = std::max(max_logit, double(z[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < V; ++c) sum += std::exp(double(z[c]) - max_logit);
  const double loss = max_logit + std::log(sum) - double(z[label]);
  if (need_grad)
    for (int64_t c = 0; c < V; ++c)
      z[c] = float(double(row_scale) * (std::exp(double(z[c]) - max_logit) / sum - (c == label ? 1.0 : 0.0)));
  return float(loss);
}

// Row by row in double, one full logits row at a time.
LossSum lm_head_loss(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                     int64_t N, int64_t E, int64_t V, float grad_scale, float* dh, float* dW,
                     float* token_logp) {
  return lm_head_loss_weighted(h, W, bias, labels, nullptr, N, E, V, grad_scale, dh, dW, token_logp);
}

LossSum lm_head_loss_weighted(const float* h, const WeightView& W, const float* bias, const int32_t* labels,
                              const float* row_weight, int64_t N, int64_t E, int64_t V, float grad_scale,
                              float* dh, float* dW, float* token_logp) {
  check_args(W, dW, N, E, V, "reference::lm_head_loss");
  counted_rows(labels, N, V, "reference::lm_head_loss");
  LossSum result;
  std::vector<double> z(static_cast<size_t>(V)), dh_row(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    if (labels[t] == kIgnoreIndex) {
      if (token_logp) token_logp[t] = 0.f;
      continue;
    }
    const float* ht = h + t * E;
    for (int64_t v = 0; v < V; ++v) {
      double s = 0.0;
      for (int64_t e = 0; e < E; ++e) s += as_operand(W, ht[e]) * weight_at(W, v, e, E, V);
      z[v] = s + (bias ? bias[v] : 0.0);
    }
    const double max_logit = *std::max_element(z.begin(), z.end());
    double sum = 0.0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(z[v] - max_logit);
    const double loss = max_logit + std::log(sum) - z[labels[t]];
    result.sum += loss;
    result.count += 1;
    if (token_logp) token_logp[t] = float(-loss);
    if (!dh && !dW) continue;
    std::fill(dh_row.begin(), dh_row.end(), 0.0);
    for (int64_t v = 0; v < V; ++v) {
      double dz = std::exp(z[v] - max_logit) / sum - (v == labels[t] ? 1.0 : 0.0);
      dz *= double(grad_scale) * (row_weight ? double(row_weight[t]) : 1.0);
      for (int64_t e = 0; e < E; ++e) {
        dh_row[e] += as_operand(W, dz) * weight_at(W, v, e, E, V);
        if (dW) (W.transposed ? dW[e * V + v] : dW[v * E + e]) += float(dz * ht[e]);
      }
    }
    if (dh)
      for (int64_t e = 0; e < E; ++e) dh[t * E + e] += float(dh_row[e]);
  }
  return result;
}

}  // namespace reference

}  // namespace llmtune
