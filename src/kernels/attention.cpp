// Causal (GQA, segment-masked) attention: flash-style blocked forward with online softmax and a
// FlashAttention-2 backward that recomputes probabilities from lse; plus a plain reference.
#include "kernels/attention.h"
#include "core/profile.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"

namespace llmtune {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Query rows per work item and keys per block: a key block (kKeyBlock × D floats of K and V) stays
// in L1/L2 while every row of the query block uses it.
constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 64;

// Resolved dimensions and strides shared by the fast path and the reference.
struct Geometry {
  int64_t B, Tq, Tk, H, Hkv, D, cap, group, offset;
  float scale;
  const int32_t* q_seg;
  const int32_t* k_seg;

  const float* q_row(const float* q, int64_t b, int64_t i, int64_t h) const {
    return q + ((b * Tq + i) * H + h) * D;
  }
  float* q_row(float* q, int64_t b, int64_t i, int64_t h) const {
    return q + ((b * Tq + i) * H + h) * D;
  }
  const float* kv_row(const float* k, int64_t b, int64_t j, int64_t kvh) const {
    return k + ((b * cap + j) * Hkv + kvh) * D;
  }
  float* kv_row(float* k, int64_t b, int64_t j, int64_t kvh) const {
    return k + ((b * cap + j) * Hkv + kvh) * D;
  }
  int64_t lse_index(int64_t b, int64_t h, int64_t i) const { return (b * H + h) * Tq + i; }
  // Last key (exclusive bound) that query i may see by causality.
  int64_t key_end(int64_t i) const { return std::min(Tk, offset + i + 1); }
  // Segment id of query i, used only when segments are present.
  int32_t query_segment(int64_t b, int64_t i) const { return q_seg ? q_seg[b * Tq + i] : 0; }
  bool key_visible(int64_t b, int32_t qs, int64_t j) const {
    return !k_seg || k_seg[b * Tk + j] == qs;
  }
};

Geometry resolve(const AttentionDims& d, const int32_t* q_seg, const int32_t* k_seg,
                 const char* who) {
  Geometry g{};
  g.B = d.B, g.Tq = d.Tq, g.Tk = d.Tk, g.H = d.H, g.Hkv = d.Hkv, g.D = d.D;
  g.cap = d.kv_cap == 0 ? d.Tk : d.kv_cap;
  LLMTUNE_CHECK(g.B >= 0 && g.Tq >= 0 && g.D > 0 && g.H > 0 && g.Hkv > 0, who,
                ": invalid dims B=", g.B, " Tq=", g.Tq, " H=", g.H, " Hkv=", g.Hkv, " D=", g.D);
  LLMTUNE_CHECK(g.H % g.Hkv == 0, who, ": H=", g.H, " is not a multiple of Hkv=", g.Hkv);
  LLMTUNE_CHECK(g.Tq <= g.Tk, who, ": Tq=", g.Tq, " exceeds Tk=", g.Tk,
                " (queries are the last Tq of the Tk positions)");
  LLMTUNE_CHECK(g.cap >= g.Tk, who, ": kv_cap=", g.cap, " is smaller than Tk=", g.Tk);
  LLMTUNE_CHECK((q_seg == nullptr) == (k_seg == nullptr), who,
                ": q_seg and k_seg must both be given or both be null");
  g.group = g.H / g.Hkv;
  g.offset = g.Tk - g.Tq;
  g.scale = d.scale != 0.f ? d.scale : 1.f / std::sqrt(float(g.D));
  g.q_seg = q_seg;
  g.k_seg = k_seg;
  return g;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// exp(x) for x <= ~88 that vectorises (std::exp does not without -ffast-math): 2^n · e^r with
// |r| <= ln2/2 and a degree-6 Taylor polynomial (relative error ~2e-7); exactly 0 below -87.
inline float exp_approx(float x) {
  const bool underflow = x < -87.f;
  x = std::clamp(x, -87.f, 88.f);
  const float n = (x * 1.44269504f + 12582912.f) - 12582912.f;  // round to nearest
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;  // ln2 split hi + lo
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const float two_n = std::bit_cast<float>((int32_t(n) + 127) << 23);
  return underflow ? 0.f : p * two_n;
}

// Rows [j0, j0 + n) of a [cap, Hkv, D] tensor (one kv head), transposed to [D][kKeyBlock] so that
// score rows are computed with the key index contiguous (vectorised over keys).
void transpose_key_block(float* dst, const Geometry& g, const float* src, int64_t b, int64_t kvh,
                         int64_t j0, int64_t n) {
  for (int64_t jj = 0; jj < n; ++jj) {
    const float* row = g.kv_row(src, b, j0 + jj, kvh);
    for (int64_t e = 0; e < g.D; ++e) dst[e * kKeyBlock + jj] = row[e];
  }
}

// s[jj] = scale · x·keyᵀ for a whole key block (keys transposed, stride kKeyBlock).
inline void block_scores(float* s, const float* x, const float* keys_t, int64_t D, float scale) {
  float acc[kKeyBlock] = {};
  for (int64_t e = 0; e < D; ++e) {
    const float xe = x[e];
    const float* kr = keys_t + e * kKeyBlock;
#pragma omp simd
    for (int64_t jj = 0; jj < kKeyBlock; ++jj) acc[jj] += xe * kr[jj];
  }
#pragma omp simd
  for (int64_t jj = 0; jj < kKeyBlock; ++jj) s[jj] = acc[jj] * scale;
}

// Sets scores of keys query i may not see (beyond causality / the block, other segment) to -inf.
// Returns the number of leading block entries that can be non-masked.
inline int64_t mask_scores(float* s, const Geometry& g, int64_t b, int64_t i, int64_t j0,
                           int64_t j1) {
  const int64_t limit = std::min(j1, g.key_end(i)) - j0;
  for (int64_t jj = std::max<int64_t>(limit, 0); jj < kKeyBlock; ++jj) s[jj] = kNegInf;
  if (g.k_seg) {
    const int32_t qs = g.query_segment(b, i);
    const int32_t* ks = g.k_seg + b * g.Tk + j0;
    for (int64_t jj = 0; jj < limit; ++jj)
      if (ks[jj] != qs) s[jj] = kNegInf;
  }
  return std::max<int64_t>(limit, 0);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  ProfileScope profile_scope("attention fwd");
  const Geometry g = resolve(d, q_seg, k_seg, "attention_forward");
  const int64_t D = g.D;
  const int64_t q_blocks = ceil_div(g.Tq, kQueryBlock);
  const int64_t items = g.B * g.H * q_blocks;

#pragma omp parallel
  {
    // Per-thread scratch, allocated once per call.
    std::vector<float> keys_t(D * kKeyBlock), scores(kKeyBlock), row_max(kQueryBlock),
        row_sum(kQueryBlock), acc(kQueryBlock * D);

#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t qb = item % q_blocks;
      const int64_t h = (item / q_blocks) % g.H;
      const int64_t b = item / (q_blocks * g.H);
      const int64_t kvh = h / g.group;
      const int64_t i0 = qb * kQueryBlock, i1 = std::min(g.Tq, i0 + kQueryBlock);
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.f);
      std::fill(acc.begin(), acc.end(), 0.f);

      const int64_t block_key_end = g.key_end(i1 - 1);
      for (int64_t j0 = 0; j0 < block_key_end; j0 += kKeyBlock) {
        const int64_t j1 = std::min(block_key_end, j0 + kKeyBlock);
        transpose_key_block(keys_t.data(), g, k, b, kvh, j0, j1 - j0);
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t r = i - i0;
          if (g.key_end(i) <= j0) continue;
          float* s = scores.data();
          block_scores(s, g.q_row(q, b, i, h), keys_t.data(), D, g.scale);
          const int64_t n = mask_scores(s, g, b, i, j0, j1);
          float block_max = kNegInf;
#pragma omp simd reduction(max : block_max)
          for (int64_t jj = 0; jj < kKeyBlock; ++jj) block_max = std::max(block_max, s[jj]);
          if (block_max == kNegInf) continue;  // nothing visible in this block
          const float new_max = std::max(row_max[r], block_max);
          float* acc_row = acc.data() + r * D;
          if (new_max != row_max[r]) {
            const float correction = std::exp(row_max[r] - new_max);  // 0 on the first block
            row_sum[r] *= correction;
            for (int64_t e = 0; e < D; ++e) acc_row[e] *= correction;
            row_max[r] = new_max;
          }
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
            s[jj] = exp_approx(s[jj] - new_max);
            sum += s[jj];
          }
          row_sum[r] += sum;
          for (int64_t jj = 0; jj < n; ++jj)
            if (s[jj] != 0.f) axpy(acc_row, s[jj], g.kv_row(v, b, j0 + jj, kvh), D);
        }
      }

      for (int64_t i = i0; i < i1; ++i) {
        const int64_t r = i - i0;
        float* o = g.q_row(out, b, i, h);
        if (row_sum[r] > 0.f) {
          const float inv = 1.f / row_sum[r];
          for (int64_t e = 0; e < D; ++e) o[e] = acc[r * D + e] * inv;
          lse[g.lse_index(b, h, i)] = row_max[r] + std::log(row_sum[r]);
        } else {  // the row sees no key (inconsistent segments): zeros, lse = log(0)
          std::fill(o, o + D, 0.f);
          lse[g.lse_index(b, h, i)] = kNegInf;
        }
      }
    }
  }
}

namespace {
// For query row i against one key block: p = exp(s - lse) and ds = p ∘ (dP - delta), where
// dP = dout_i·vᵀ. Both are 0 for masked keys. Returns the count of leading entries to visit.
inline int64_t block_probabilities(float* p, float* ds, const Geometry& g, const float* qi,
                                   const float* doi, float row_lse, float delta,
                                   const float* keys_t, const float* values_t, int64_t b,
                                   int64_t i, int64_t j0, int64_t j1) {
  block_scores(p, qi, keys_t, g.D, g.scale);
  const int64_t n = mask_scores(p, g, b, i, j0, j1);
  block_scores(ds, doi, values_t, g.D, 1.f);
#pragma omp simd
  for (int64_t jj = 0; jj < kKeyBlock; ++jj) {
    p[jj] = exp_approx(p[jj] - row_lse);
    ds[jj] = p[jj] * (ds[jj] - delta);
  }
  return n;
}
}  // namespace

// Two passes so no two threads ever write the same gradient row: dq is owned by (b, h, query
// block) items, dk/dv by (b, kv head, key block) items that loop over every query head of the group.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  ProfileScope profile_scope("attention bwd");
  const Geometry g = resolve(d, q_seg, k_seg, "attention_backward");
  if (!dq && !dk && !dv) return;
  const int64_t D = g.D;

  // delta_i = rowsum(dout_i ∘ out_i) = Σ_j P_ij dP_ij.
  std::vector<float> delta(g.B * g.H * g.Tq);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < g.Tq; ++i)
      for (int64_t h = 0; h < g.H; ++h)
        delta[g.lse_index(b, h, i)] = dot(g.q_row(dout, b, i, h), g.q_row(out, b, i, h), D);

  if (dq) {
    const int64_t q_blocks = ceil_div(g.Tq, kQueryBlock);
    const int64_t items = g.B * g.H * q_blocks;
#pragma omp parallel
    {
      std::vector<float> dq_acc(kQueryBlock * D), keys_t(D * kKeyBlock), values_t(D * kKeyBlock),
          p(kKeyBlock), ds(kKeyBlock);
#pragma omp for schedule(dynamic)
      for (int64_t item = 0; item < items; ++item) {
        const int64_t qb = item % q_blocks;
        const int64_t h = (item / q_blocks) % g.H;
        const int64_t b = item / (q_blocks * g.H);
        const int64_t kvh = h / g.group;
        const int64_t i0 = qb * kQueryBlock, i1 = std::min(g.Tq, i0 + kQueryBlock);
        std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
        const int64_t block_key_end = g.key_end(i1 - 1);
        for (int64_t j0 = 0; j0 < block_key_end; j0 += kKeyBlock) {
          const int64_t j1 = std::min(block_key_end, j0 + kKeyBlock);
          transpose_key_block(keys_t.data(), g, k, b, kvh, j0, j1 - j0);
          transpose_key_block(values_t.data(), g, v, b, kvh, j0, j1 - j0);
          for (int64_t i = i0; i < i1; ++i) {
            const float row_lse = lse[g.lse_index(b, h, i)];
            if (row_lse == kNegInf || g.key_end(i) <= j0) continue;
            const int64_t n = block_probabilities(
                p.data(), ds.data(), g, g.q_row(q, b, i, h), g.q_row(dout, b, i, h), row_lse,
                delta[g.lse_index(b, h, i)], keys_t.data(), values_t.data(), b, i, j0, j1);
            float* acc_row = dq_acc.data() + (i - i0) * D;
            for (int64_t jj = 0; jj < n; ++jj)
              if (ds[jj] != 0.f) axpy(acc_row, ds[jj], g.kv_row(k, b, j0 + jj, kvh), D);
          }
        }
        for (int64_t i = i0; i < i1; ++i)
          axpy(g.q_row(dq, b, i, h), g.scale, dq_acc.data() + (i - i0) * D, D);
      }
    }
  }

  if (dk || dv) {
    const int64_t k_blocks = ceil_div(g.Tk, kKeyBlock);
    const int64_t items = g.B * g.Hkv * k_blocks;
#pragma omp parallel
    {
      std::vector<float> dk_acc(kKeyBlock * D), dv_acc(kKeyBlock * D), keys_t(D * kKeyBlock),
          values_t(D * kKeyBlock), p(kKeyBlock), ds(kKeyBlock);
#pragma omp for schedule(dynamic)
      for (int64_t item = 0; item < items; ++item) {
        const int64_t kb = item % k_blocks;
        const int64_t kvh = (item / k_blocks) % g.Hkv;
        const int64_t b = item / (k_blocks * g.Hkv);
        const int64_t j0 = kb * kKeyBlock, j1 = std::min(g.Tk, j0 + kKeyBlock);
        std::fill(dk_acc.begin(), dk_acc.end(), 0.f);
        std::fill(dv_acc.begin(), dv_acc.end(), 0.f);
        transpose_key_block(keys_t.data(), g, k, b, kvh, j0, j1 - j0);
        transpose_key_block(values_t.data(), g, v, b, kvh, j0, j1 - j0);
        // Queries before j0 - offset cannot see any key of this block.
        const int64_t first_query = std::max<int64_t>(0, j0 - g.offset);
        for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
          for (int64_t i = first_query; i < g.Tq; ++i) {
            const float row_lse = lse[g.lse_index(b, h, i)];
            if (row_lse == kNegInf) continue;
            const float* qi = g.q_row(q, b, i, h);
            const float* doi = g.q_row(dout, b, i, h);
            const int64_t n = block_probabilities(p.data(), ds.data(), g, qi, doi, row_lse,
                                                  delta[g.lse_index(b, h, i)], keys_t.data(),
                                                  values_t.data(), b, i, j0, j1);
            for (int64_t jj = 0; jj < n; ++jj) {
              if (p[jj] == 0.f) continue;
              axpy(dk_acc.data() + jj * D, ds[jj], qi, D);
              axpy(dv_acc.data() + jj * D, p[jj], doi, D);
            }
          }
        }
        for (int64_t j = j0; j < j1; ++j) {
          if (dk) axpy(g.kv_row(dk, b, j, kvh), g.scale, dk_acc.data() + (j - j0) * D, D);
          if (dv) axpy(g.kv_row(dv, b, j, kvh), 1.f, dv_acc.data() + (j - j0) * D, D);
        }
      }
    }
  }
}

namespace reference {

namespace {
// Softmax probabilities of query row i (double), or all zeros when it sees no key.
// Returns log-sum-exp of the visible scaled scores (-inf when none).
double row_probabilities(const Geometry& g, const float* q, const float* k, int64_t b, int64_t h,
                         int64_t i, std::vector<double>& p) {
  const int64_t kvh = h / g.group;
  const float* qi = g.q_row(q, b, i, h);
  const int32_t qs = g.query_segment(b, i);
  double max_score = -std::numeric_limits<double>::infinity();
  std::vector<char> visible(g.Tk, 0);
  for (int64_t j = 0; j < g.Tk; ++j) {
    p[j] = 0.0;
    if (j > g.offset + i || !g.key_visible(b, qs, j)) continue;
    visible[j] = 1;
    const float* kj = g.kv_row(k, b, j, kvh);
    double s = 0.0;
    for (int64_t e = 0; e < g.D; ++e) s += double(qi[e]) * kj[e];
    p[j] = s * g.scale;
    max_score = std::max(max_score, p[j]);
  }
  if (max_score == -std::numeric_limits<double>::infinity()) return max_score;
  double sum = 0.0;
  for (int64_t j = 0; j < g.Tk; ++j)
    if (visible[j]) sum += std::exp(p[j] - max_score);
  for (int64_t j = 0; j < g.Tk; ++j) p[j] = visible[j] ? std::exp(p[j] - max_score) / sum : 0.0;
  return max_score + std::log(sum);
}
}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  const Geometry g = resolve(d, q_seg, k_seg, "reference::attention_forward");
  std::vector<double> p(g.Tk), o(g.D);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t h = 0; h < g.H; ++h)
      for (int64_t i = 0; i < g.Tq; ++i) {
        const double row_lse = row_probabilities(g, q, k, b, h, i, p);
        std::fill(o.begin(), o.end(), 0.0);
        for (int64_t j = 0; j < g.Tk; ++j) {
          if (p[j] == 0.0) continue;
          const float* vj = g.kv_row(v, b, j, h / g.group);
          for (int64_t e = 0; e < g.D; ++e) o[e] += p[j] * vj[e];
        }
        float* oi = g.q_row(out, b, i, h);
        for (int64_t e = 0; e < g.D; ++e) oi[e] = float(o[e]);
        lse[g.lse_index(b, h, i)] = float(row_lse);
      }
}

// Recomputes the softmax itself (lse and out are not used), and takes delta as Σ_j P dP rather
// than rowsum(dout ∘ out), so it checks the fast path's use of both.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  const Geometry g = resolve(d, q_seg, k_seg, "reference::attention_backward");
  const int64_t D = g.D;
  std::vector<double> p(g.Tk), dp(g.Tk), dq_row(D);
  std::vector<double> dk_acc(g.Tk * D), dv_acc(g.Tk * D);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t kvh = 0; kvh < g.Hkv; ++kvh) {
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h)
        for (int64_t i = 0; i < g.Tq; ++i) {
          row_probabilities(g, q, k, b, h, i, p);
          const float* doi = g.q_row(dout, b, i, h);
          const float* qi = g.q_row(q, b, i, h);
          double delta = 0.0;
          for (int64_t j = 0; j < g.Tk; ++j) {
            dp[j] = 0.0;
            if (p[j] == 0.0) continue;
            const float* vj = g.kv_row(v, b, j, kvh);
            for (int64_t e = 0; e < D; ++e) dp[j] += double(doi[e]) * vj[e];
            delta += p[j] * dp[j];
          }
          std::fill(dq_row.begin(), dq_row.end(), 0.0);
          for (int64_t j = 0; j < g.Tk; ++j) {
            if (p[j] == 0.0) continue;
            const double ds = p[j] * (dp[j] - delta) * g.scale;
            const float* kj = g.kv_row(k, b, j, kvh);
            for (int64_t e = 0; e < D; ++e) {
              dq_row[e] += ds * kj[e];
              dk_acc[j * D + e] += ds * qi[e];
              dv_acc[j * D + e] += p[j] * doi[e];
            }
          }
          if (dq) {
            float* dqi = g.q_row(dq, b, i, h);
            for (int64_t e = 0; e < D; ++e) dqi[e] += float(dq_row[e]);
          }
        }
      for (int64_t j = 0; j < g.Tk; ++j)
        for (int64_t e = 0; e < D; ++e) {
          if (dk) g.kv_row(dk, b, j, kvh)[e] += float(dk_acc[j * D + e]);
          if (dv) g.kv_row(dv, b, j, kvh)[e] += float(dv_acc[j * D + e]);
        }
    }
}

}  // namespace reference

}  // namespace llmtune
