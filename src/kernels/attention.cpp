// Causal (GQA, segment-masked) attention: flash-style blocked forward with online softmax and a
// FlashAttention-2 backward that recomputes probabilities from lse; plus a plain reference. Both fast
// paths run their block products (scores, P·V, the four backward products) through one register-tiled
// small GEMM (AVX-512 when compiled for it), so the work is FMA-bound instead of load/store-bound.
#include "kernels/attention.h"
#include "core/profile.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/error.h"
#include "kernels/simd_math.h"

namespace llmtune {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Query rows per block (forward work item; M of the backward's score products) and keys per forward
// block: the block's K/V rows and scores stay in L1/L2 while every row of the query block uses them.
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
inline int64_t round_up16(int64_t n) { return ceil_div(n, 16) * 16; }

// ---- small GEMM -------------------------------------------------------------------------------
// C[M×N] (+)= A·B with A(m, k) = A[m·a_m + k·a_k] (a row-major A, or the transpose of one: A is only
// ever read one broadcast element at a time) and B row-major [K×N] with row stride ldb; C has row
// stride ldc. Sizes are attention blocks (tens to a few hundred): register tiles of 6 rows × 64
// columns, no packing, one thread (the callers parallelise over heads and blocks).

#if LLMTUNE_AVX512
constexpr int kTileRows = 6;
constexpr int kTileVecs = 4;  // 16-float vectors per tile row

template <int MR, int NV>
void gemm_tile(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k, const float* B,
               int64_t ldb, int64_t K, __mmask16 last, bool accumulate) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      acc[m][v] = accumulate ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : __mmask16(0xFFFF),
                                                     C + m * ldc + 16 * v)
                             : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
    const float* a = A + k * a_k;
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(a[m * a_m]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(am, bv[v], acc[m][v]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1)
        _mm512_mask_storeu_ps(C + m * ldc + 16 * v, last, acc[m][v]);
      else
        _mm512_storeu_ps(C + m * ldc + 16 * v, acc[m][v]);
    }
}

using TileFn = void (*)(float*, int64_t, const float*, int64_t, int64_t, const float*, int64_t,
                        int64_t, __mmask16, bool);

template <int MR>
constexpr TileFn tile_for(int nv) {
  return nv == 1   ? gemm_tile<MR, 1>
         : nv == 2 ? gemm_tile<MR, 2>
         : nv == 3 ? gemm_tile<MR, 3>
                   : gemm_tile<MR, 4>;
}

TileFn tile_fn(int mr, int nv) {
  switch (mr) {
    case 1: return tile_for<1>(nv);
    case 2: return tile_for<2>(nv);
    case 3: return tile_for<3>(nv);
    case 4: return tile_for<4>(nv);
    case 5: return tile_for<5>(nv);
    default: return tile_for<6>(nv);
  }
}

void small_gemm(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k, const float* B,
                int64_t ldb, int64_t M, int64_t N, int64_t K, bool accumulate) {
  constexpr int64_t kTileCols = 16 * kTileVecs;
  for (int64_t n0 = 0; n0 < N; n0 += kTileCols) {
    const int64_t nn = std::min(kTileCols, N - n0);
    const int nv = int(ceil_div(nn, 16));
    const __mmask16 last = simd::tail_mask(nn - 16 * (nv - 1));
    const TileFn full = tile_fn(kTileRows, nv);
    int64_t m0 = 0;
    for (; m0 + kTileRows <= M; m0 += kTileRows)
      full(C + m0 * ldc + n0, ldc, A + m0 * a_m, a_m, a_k, B + n0, ldb, K, last, accumulate);
    if (m0 < M)
      tile_fn(int(M - m0), nv)(C + m0 * ldc + n0, ldc, A + m0 * a_m, a_m, a_k, B + n0, ldb, K, last,
                               accumulate);
  }
}
#else
void small_gemm(float* C, int64_t ldc, const float* A, int64_t a_m, int64_t a_k, const float* B,
                int64_t ldb, int64_t M, int64_t N, int64_t K, bool accumulate) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    if (!accumulate) std::fill(c, c + N, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[m * a_m + k * a_k];
      const float* b = B + k * ldb;
#pragma omp simd
      for (int64_t n = 0; n < N; ++n) c[n] += a * b[n];
    }
  }
}
#endif

// Row stride for transposed K/V and score rows of n keys: a multiple of 16 floats that is an ODD
// number of 64-byte lines, so the 16 rows written by one transposed block do not all map to the same
// few L1 sets (a 1 KiB stride made the transpose miss on every store).
inline int64_t padded_stride(int64_t n) { return round_up16(n) | 16; }

#if LLMTUNE_AVX512
// In-register transpose of 16 rows of 16 floats.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < 4; ++c) {
      t[8 * i + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0x88);
      t[8 * i + 4 + c] = _mm512_shuffle_f32x4(r[8 * i + c], r[8 * i + 4 + c], 0xdd);
    }
  for (int c = 0; c < 8; ++c) {
    r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
  }
}
#endif

// Rows [j0, j0 + n) of a [cap, Hkv, D] tensor (one kv head), transposed to dst[e·ld + jj] so that
// score rows are products with the key index contiguous. 16×16 blocks in registers.
void transpose_rows(float* dst, int64_t ld, const Geometry& g, const float* src, int64_t b,
                    int64_t kvh, int64_t j0, int64_t n) {
#if LLMTUNE_AVX512
  for (int64_t jb = 0; jb < n; jb += 16) {
    const int64_t rows = std::min<int64_t>(16, n - jb);
    const __mmask16 row_mask = simd::tail_mask(rows);
    for (int64_t eb = 0; eb < g.D; eb += 16) {
      const int64_t cols = std::min<int64_t>(16, g.D - eb);
      const __mmask16 col_mask = simd::tail_mask(cols);
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(col_mask, g.kv_row(src, b, j0 + jb + i, kvh) + eb)
                        : _mm512_setzero_ps();
      transpose16(r);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c)
        if (c < cols) _mm512_mask_storeu_ps(dst + (eb + c) * ld + jb, row_mask, r[c]);
    }
  }
#else
  for (int64_t jj = 0; jj < n; ++jj) {
    const float* row = g.kv_row(src, b, j0 + jj, kvh);
    for (int64_t e = 0; e < g.D; ++e) dst[e * ld + jj] = row[e];
  }
#endif
}

// ---- per-row softmax pieces (vectorised over keys) ----------------------------------------------
// A query row sees keys [j0, j0 + limit) of the block by causality, and of those only the ones whose
// segment equals qs (k_seg: the block's key segments, or null). Invisible keys get probability 0.

#if LLMTUNE_AVX512
inline __mmask16 visible16(int64_t jj, int64_t limit, const int32_t* k_seg, int32_t qs) {
  __mmask16 m = simd::tail_mask(std::max<int64_t>(limit - jj, 0));
  if (k_seg && m) {
    const __m512i ks = _mm512_maskz_loadu_epi32(m, k_seg + jj);
    m = _mm512_mask_cmpeq_epi32_mask(m, ks, _mm512_set1_epi32(qs));
  }
  return m;
}
#endif

// Forward: s[0, n) holds raw scores of one block row. Folds the block into the running (max, sum),
// rescales acc_row[0, D) when the max grows, and leaves exp(scale·s − max) in s (0 if invisible).
void online_softmax_row(float* s, int64_t n, int64_t limit, const int32_t* k_seg, int32_t qs,
                        float scale, float* row_max, float* row_sum, float* acc_row, int64_t D) {
  limit = std::min(limit, n);
#if LLMTUNE_AVX512
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(kNegInf);
  for (int64_t jj = 0; jj < n; jj += 16) {
    const __mmask16 vis = visible16(jj, limit, k_seg, qs);
    vmax = _mm512_mask_max_ps(vmax, vis, vmax,
                              _mm512_mul_ps(_mm512_maskz_loadu_ps(vis, s + jj), vscale));
  }
  const float block_max = _mm512_reduce_max_ps(vmax);
#else
  float block_max = kNegInf;
  for (int64_t jj = 0; jj < std::min(n, limit); ++jj)
    if (!k_seg || k_seg[jj] == qs) block_max = std::max(block_max, s[jj] * scale);
#endif
  if (block_max == kNegInf) {  // nothing visible in this block: the row adds nothing
    std::fill(s, s + n, 0.f);
    return;
  }
  const float new_max = std::max(*row_max, block_max);
  if (new_max != *row_max) {
    const float correction = std::exp(*row_max - new_max);  // 0 on the first visible block
    *row_sum *= correction;
    for (int64_t e = 0; e < D; ++e) acc_row[e] *= correction;
    *row_max = new_max;
  }
#if LLMTUNE_AVX512
  const __m512 vneg_max = _mm512_set1_ps(-new_max);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t jj = 0; jj < n; jj += 16) {
    const __mmask16 in_row = simd::tail_mask(n - jj);
    const __mmask16 vis = visible16(jj, limit, k_seg, qs);
    const __m512 x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(vis, s + jj), vscale, vneg_max);
    const __m512 p = _mm512_maskz_mov_ps(vis, simd::exp16(x));
    vsum = _mm512_add_ps(vsum, p);
    _mm512_mask_storeu_ps(s + jj, in_row, p);
  }
  *row_sum += _mm512_reduce_add_ps(vsum);
#else
  float sum = 0.f;
  for (int64_t jj = 0; jj < n; ++jj) {
    const bool vis = jj < limit && (!k_seg || k_seg[jj] == qs);
    s[jj] = vis ? simd::exp_scalar(simd::fmadd(s[jj], scale, -new_max)) : 0.f;
    sum += s[jj];
  }
  *row_sum += sum;
#endif
}

// Backward: p[0, n) holds raw scores and ds[0, n) holds dP = dout·vᵀ of one query row; leaves
// P = exp(scale·s − lse) in p and dS = P ∘ (dP − delta) in ds, both 0 for invisible keys.
void probabilities_row(float* p, float* ds, int64_t n, int64_t limit, const int32_t* k_seg,
                       int32_t qs, float scale, float row_lse, float delta) {
  limit = std::min(limit, n);
#if LLMTUNE_AVX512
  const __m512 vscale = _mm512_set1_ps(scale), vneg_lse = _mm512_set1_ps(-row_lse),
               vdelta = _mm512_set1_ps(delta);
  for (int64_t jj = 0; jj < n; jj += 16) {
    const __mmask16 in_row = simd::tail_mask(n - jj);
    const __mmask16 vis = visible16(jj, limit, k_seg, qs);
    const __m512 x = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(vis, p + jj), vscale, vneg_lse);
    const __m512 pv = _mm512_maskz_mov_ps(vis, simd::exp16(x));
    const __m512 dsv = _mm512_mul_ps(pv, _mm512_sub_ps(_mm512_maskz_loadu_ps(vis, ds + jj), vdelta));
    _mm512_mask_storeu_ps(p + jj, in_row, pv);
    _mm512_mask_storeu_ps(ds + jj, in_row, dsv);
  }
#else
  for (int64_t jj = 0; jj < n; ++jj) {
    const bool vis = jj < limit && (!k_seg || k_seg[jj] == qs);
    const float pv = vis ? simd::exp_scalar(simd::fmadd(p[jj], scale, -row_lse)) : 0.f;
    ds[jj] = vis ? pv * (ds[jj] - delta) : 0.f;
    p[jj] = pv;
  }
#endif
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  ProfileScope profile_scope("attention fwd");
  const Geometry g = resolve(d, q_seg, k_seg, "attention_forward");
  const int64_t D = g.D;
  const int64_t q_blocks = ceil_div(g.Tq, kQueryBlock);
  const int64_t items = g.B * g.H * q_blocks;
  if (items == 0) return;

  // Keys transposed once per call, [B][Hkv][D][ldk], shared by every head of a GQA group and every
  // query block (uninitialised: every entry read is written first).
  const int64_t ldk = padded_stride(g.Tk);
  std::unique_ptr<float[]> keys_t(new float[size_t(g.B * g.Hkv * D * ldk)]);
#pragma omp parallel for collapse(2) schedule(static) if (g.B * g.Hkv > 1)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t kvh = 0; kvh < g.Hkv; ++kvh)
      transpose_rows(keys_t.get() + (b * g.Hkv + kvh) * D * ldk, ldk, g, k, b, kvh, 0, g.Tk);

#pragma omp parallel if (items > 1)
  {
    // Per-thread scratch, allocated once per call.
    std::vector<float> scores(kQueryBlock * kKeyBlock), row_max(kQueryBlock), row_sum(kQueryBlock),
        acc(kQueryBlock * D);

#pragma omp for schedule(dynamic)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t qb = item % q_blocks;
      const int64_t h = (item / q_blocks) % g.H;
      const int64_t b = item / (q_blocks * g.H);
      const int64_t kvh = h / g.group;
      const int64_t i0 = qb * kQueryBlock, i1 = std::min(g.Tq, i0 + kQueryBlock), nq = i1 - i0;
      const float* kt = keys_t.get() + (b * g.Hkv + kvh) * D * ldk;
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.f);
      std::fill(acc.begin(), acc.end(), 0.f);

      const int64_t block_key_end = g.key_end(i1 - 1);
      for (int64_t j0 = 0; j0 < block_key_end; j0 += kKeyBlock) {
        const int64_t nk = std::min(block_key_end, j0 + kKeyBlock) - j0;
        // scores[r][jj] = q_{i0+r} · k_{j0+jj}
        small_gemm(scores.data(), kKeyBlock, g.q_row(q, b, i0, h), g.H * D, 1, kt + j0, ldk, nq, nk, D,
                   false);
        for (int64_t r = 0; r < nq; ++r) {
          const int64_t i = i0 + r;
          online_softmax_row(scores.data() + r * kKeyBlock, nk, g.key_end(i) - j0,
                             g.k_seg ? g.k_seg + b * g.Tk + j0 : nullptr, g.query_segment(b, i),
                             g.scale, &row_max[r], &row_sum[r], acc.data() + r * D, D);
        }
        // acc += P · V_block
        small_gemm(acc.data(), D, scores.data(), kKeyBlock, 1, g.kv_row(v, b, j0, kvh), g.Hkv * D, nq,
                   D, nk, true);
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

// Query ranges of the backward's work units: each (batch row, kv head) item is split into `splits`
// ranges of whole query blocks with about equal work (a query's work grows with its key range).
std::vector<int64_t> split_queries(const Geometry& g, int64_t splits) {
  const int64_t q_blocks = ceil_div(g.Tq, kQueryBlock);
  std::vector<double> work(size_t(q_blocks + 1), 0.0);
  for (int64_t qb = 0; qb < q_blocks; ++qb)
    work[size_t(qb + 1)] = work[size_t(qb)] + double(g.key_end(std::min(g.Tq, (qb + 1) * kQueryBlock) - 1));
  std::vector<int64_t> bounds(size_t(splits + 1), g.Tq);
  bounds[0] = 0;
  int64_t qb = 0;
  for (int64_t s = 1; s < splits; ++s) {
    const double target = work[size_t(q_blocks)] * double(s) / double(splits);
    while (qb < q_blocks && work[size_t(qb)] < target) ++qb;
    bounds[size_t(s)] = std::min(g.Tq, qb * kQueryBlock);
  }
  return bounds;
}

}  // namespace

// One unit of work = (batch row b, kv head, query range): for every query head of the group and every
// query block of the range, against all keys the block can see:
//   S = Q·Kᵀ, dP = dO·Vᵀ  →  P = exp(scale·S − lse), dS = P ∘ (dP − delta)
//   dV += Pᵀ·dO,  dK += dSᵀ·Q (·scale),  dQ = dS·K (·scale).
// dQ rows are owned by the unit. dK/dV: with one unit per item they are accumulated in thread scratch
// and added by the owner; when items are split (fewer items than threads) every unit has its own
// buffer and the buffers are summed afterwards in unit order — deterministic either way.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* q_seg, const int32_t* k_seg, const AttentionDims& d) {
  ProfileScope profile_scope("attention bwd");
  const Geometry g = resolve(d, q_seg, k_seg, "attention_backward");
  if (!dq && !dk && !dv) return;
  if (g.B == 0 || g.Tq == 0) return;
  const int64_t D = g.D;

  // delta_i = rowsum(dout_i ∘ out_i) = Σ_j P_ij dP_ij.
  std::vector<float> delta(g.B * g.H * g.Tq);
#pragma omp parallel for collapse(2)
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t i = 0; i < g.Tq; ++i)
      for (int64_t h = 0; h < g.H; ++h)
        delta[g.lse_index(b, h, i)] = dot(g.q_row(dout, b, i, h), g.q_row(out, b, i, h), D);

  const int64_t items = g.B * g.Hkv;
  const int64_t threads = omp_get_max_threads();
  const int64_t q_blocks = ceil_div(g.Tq, kQueryBlock);
  int64_t splits = 1;
  if (items < 4 * threads && items % threads != 0)
    splits = std::min(q_blocks, ceil_div(4 * threads, items));
  const std::vector<int64_t> bounds = split_queries(g, splits);
  const int64_t units = items * splits;
  const bool need_kv = dk || dv;
  // Per-unit dK/dV buffers [units][Tk][D] (only when split).
  std::vector<float> unit_dk, unit_dv;
  if (splits > 1 && dk) unit_dk.assign(size_t(units * g.Tk * D), 0.f);
  if (splits > 1 && dv) unit_dv.assign(size_t(units * g.Tk * D), 0.f);
  const int64_t ld = padded_stride(g.Tk);  // row stride of transposed K/V and of P/dS

#pragma omp parallel if (units > 1)
  {
    std::vector<float> keys_t(D * ld), values_t(D * ld), p(kQueryBlock * ld), ds(kQueryBlock * ld),
        dq_blk(kQueryBlock * D), dk_own, dv_own;
    if (splits == 1 && dk) dk_own.resize(size_t(g.Tk * D));
    if (splits == 1 && dv) dv_own.resize(size_t(g.Tk * D));
#pragma omp for schedule(dynamic)
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t item = unit / splits, part = unit % splits;
      const int64_t b = item / g.Hkv, kvh = item % g.Hkv;
      const int64_t qa = bounds[size_t(part)], qz = bounds[size_t(part + 1)];
      if (qa >= qz) continue;
      const int64_t kmax = g.key_end(qz - 1);  // keys any query of the range can see
      // Null when that gradient is not wanted.
      float* dk_acc = !dk ? nullptr : splits > 1 ? unit_dk.data() + unit * g.Tk * D : dk_own.data();
      float* dv_acc = !dv ? nullptr : splits > 1 ? unit_dv.data() + unit * g.Tk * D : dv_own.data();
      if (splits == 1 && dk_acc) std::fill(dk_acc, dk_acc + kmax * D, 0.f);
      if (splits == 1 && dv_acc) std::fill(dv_acc, dv_acc + kmax * D, 0.f);
      transpose_rows(keys_t.data(), ld, g, k, b, kvh, 0, kmax);
      transpose_rows(values_t.data(), ld, g, v, b, kvh, 0, kmax);
      const float* k0 = g.kv_row(k, b, 0, kvh);
      const int64_t kv_stride = g.Hkv * D, q_stride = g.H * D;

      for (int64_t h = kvh * g.group; h < (kvh + 1) * g.group; ++h) {
        for (int64_t i0 = qa; i0 < qz; i0 += kQueryBlock) {
          const int64_t i1 = std::min(qz, i0 + kQueryBlock), nq = i1 - i0;
          const int64_t kend = g.key_end(i1 - 1);
          if (kend <= 0) continue;
          const float* qi0 = g.q_row(q, b, i0, h);
          const float* doi0 = g.q_row(dout, b, i0, h);
          small_gemm(p.data(), ld, qi0, q_stride, 1, keys_t.data(), ld, nq, kend, D, false);
          small_gemm(ds.data(), ld, doi0, q_stride, 1, values_t.data(), ld, nq, kend, D, false);
          for (int64_t r = 0; r < nq; ++r) {
            const int64_t i = i0 + r;
            const float row_lse = lse[g.lse_index(b, h, i)];
            // A row that sees no key (lse = -inf) has P = 0: limit 0 masks everything.
            const int64_t limit = row_lse == kNegInf ? 0 : g.key_end(i);
            probabilities_row(p.data() + r * ld, ds.data() + r * ld, kend, limit,
                              g.k_seg ? g.k_seg + b * g.Tk : nullptr, g.query_segment(b, i),
                              g.scale, row_lse, delta[g.lse_index(b, h, i)]);
          }
          if (dv_acc)  // dV[j] += Σ_r P[r][j] · dO_r
            small_gemm(dv_acc, D, p.data(), 1, ld, doi0, q_stride, kend, D, nq, true);
          if (dk_acc)  // dK[j] += Σ_r dS[r][j] · Q_r   (scale applied when flushing)
            small_gemm(dk_acc, D, ds.data(), 1, ld, qi0, q_stride, kend, D, nq, true);
          if (dq) {  // dQ_r += scale · Σ_j dS[r][j] · K_j
            small_gemm(dq_blk.data(), D, ds.data(), ld, 1, k0, kv_stride, nq, D, kend, false);
            for (int64_t r = 0; r < nq; ++r)
              axpy(g.q_row(dq, b, i0 + r, h), g.scale, dq_blk.data() + r * D, D);
          }
        }
      }
      if (splits == 1 && need_kv)
        for (int64_t j = 0; j < kmax; ++j) {
          if (dk) axpy(g.kv_row(dk, b, j, kvh), g.scale, dk_acc + j * D, D);
          if (dv) axpy(g.kv_row(dv, b, j, kvh), 1.f, dv_acc + j * D, D);
        }
    }
  }

  if (splits > 1 && need_kv) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t item = 0; item < items; ++item)
      for (int64_t j = 0; j < g.Tk; ++j) {
        const int64_t b = item / g.Hkv, kvh = item % g.Hkv;
        for (int64_t part = 0; part < splits; ++part) {
          const int64_t off = ((item * splits + part) * g.Tk + j) * D;
          if (dk) axpy(g.kv_row(dk, b, j, kvh), g.scale, unit_dk.data() + off, D);
          if (dv) axpy(g.kv_row(dv, b, j, kvh), 1.f, unit_dv.data() + off, D);
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
