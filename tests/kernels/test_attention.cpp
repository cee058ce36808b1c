// Attention kernels: blocked fast path vs the full-matrix reference (forward and backward) over GQA,
// segment masks, KV-cache decode; packing/padding equivalences; finite-difference gradients.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "kernels/attention.h"

using namespace llmtune;

namespace {

enum class Segments { None, Packed, LeftPad, RightPad };

const char* segments_name(Segments s) {
  switch (s) {
    case Segments::None: return "none";
    case Segments::Packed: return "packed";
    case Segments::LeftPad: return "left-pad";
    case Segments::RightPad: return "right-pad";
  }
  return "?";
}

std::vector<float> random_vector(size_t n, Rng& rng, float scale = 1.f) {
  std::vector<float> x(n);
  for (auto& e : x) e = rng.normal() * scale;
  return x;
}

// Segment ids for Tk key positions of each row; queries take the last Tq of them.
std::vector<int32_t> make_key_segments(Segments mode, int64_t B, int64_t Tk) {
  std::vector<int32_t> seg(B * Tk, 0);
  for (int64_t b = 0; b < B; ++b) {
    int32_t* s = seg.data() + b * Tk;
    switch (mode) {
      case Segments::None: break;
      case Segments::Packed: {  // two samples per row, split differing between rows
        const int64_t split = b == 0 ? Tk / 3 : Tk / 2;
        for (int64_t t = 0; t < Tk; ++t) s[t] = t < split ? 1 : 2;
        break;
      }
      case Segments::LeftPad: {
        const int64_t pad = b == 0 ? Tk / 4 : Tk / 2;
        for (int64_t t = 0; t < pad; ++t) s[t] = -1;
        break;
      }
      case Segments::RightPad: {
        const int64_t pad = b == 0 ? Tk / 4 : Tk / 2;
        for (int64_t t = Tk - pad; t < Tk; ++t) s[t] = -1;
        break;
      }
    }
  }
  return seg;
}

std::vector<int32_t> query_segments(const std::vector<int32_t>& k_seg, int64_t B, int64_t Tk,
                                    int64_t Tq) {
  std::vector<int32_t> q_seg(B * Tq);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tq; ++i) q_seg[b * Tq + i] = k_seg[b * Tk + Tk - Tq + i];
  return q_seg;
}

// max |a - b| / max(1, max |b|): a relative error that is robust to values near zero.
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0.0, scale = 1.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    const double diff = std::fabs(double(a[i]) - b[i]);
    if (!(diff <= err)) err = diff;  // NaN counts as a failure
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return err / scale;
}

bool all_finite(const std::vector<float>& x) {
  return std::all_of(x.begin(), x.end(), [](float e) { return std::isfinite(e); });
}

struct Tensors {
  std::vector<float> q, k, v, dout;
};

// k/v of kv_cap positions; positions >= Tk are NaN so any read past Tk poisons the result.
Tensors random_tensors(const AttentionDims& d, Rng& rng) {
  const int64_t cap = d.kv_cap ? d.kv_cap : d.Tk;
  Tensors t;
  t.q = random_vector(d.B * d.Tq * d.H * d.D, rng);
  t.k = random_vector(d.B * cap * d.Hkv * d.D, rng);
  t.v = random_vector(d.B * cap * d.Hkv * d.D, rng);
  t.dout = random_vector(d.B * d.Tq * d.H * d.D, rng);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = d.Tk; j < cap; ++j)
      for (int64_t e = 0; e < d.Hkv * d.D; ++e) {
        t.k[(b * cap + j) * d.Hkv * d.D + e] = nan;
        t.v[(b * cap + j) * d.Hkv * d.D + e] = nan;
      }
  return t;
}

struct Results {
  std::vector<float> out, lse, dq, dk, dv;
};

// Runs forward then backward (into gradients pre-filled with 0.25 to check accumulation).
template <typename Forward, typename Backward>
Results run(Forward forward, Backward backward, const Tensors& t, const int32_t* q_seg,
            const int32_t* k_seg, const AttentionDims& d) {
  Results r;
  r.out.assign(t.q.size(), 0.f);
  r.lse.assign(d.B * d.H * d.Tq, 0.f);
  forward(r.out.data(), r.lse.data(), t.q.data(), t.k.data(), t.v.data(), q_seg, k_seg, d);
  r.dq.assign(t.q.size(), 0.25f);
  r.dk.assign(t.k.size(), 0.25f);
  r.dv.assign(t.v.size(), 0.25f);
  backward(r.dq.data(), r.dk.data(), r.dv.data(), t.dout.data(), r.out.data(), r.lse.data(),
           t.q.data(), t.k.data(), t.v.data(), q_seg, k_seg, d);
  return r;
}

Results run_fast(const Tensors& t, const int32_t* q_seg, const int32_t* k_seg,
                 const AttentionDims& d) {
  return run(attention_forward, attention_backward, t, q_seg, k_seg, d);
}
Results run_reference(const Tensors& t, const int32_t* q_seg, const int32_t* k_seg,
                      const AttentionDims& d) {
  return run(reference::attention_forward, reference::attention_backward, t, q_seg, k_seg, d);
}

// Compares gradients only on the first Tk cache positions; the rest must stay untouched (0.25).
void expect_kv_gradients(const std::vector<float>& fast, const std::vector<float>& ref,
                         const AttentionDims& d, const char* what, double tol) {
  const int64_t cap = d.kv_cap ? d.kv_cap : d.Tk;
  const int64_t row = d.Hkv * d.D;
  std::vector<float> used_fast, used_ref;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t j = 0; j < cap; ++j)
      for (int64_t e = 0; e < row; ++e) {
        const size_t idx = (b * cap + j) * row + e;
        if (j < d.Tk) {
          used_fast.push_back(fast[idx]);
          used_ref.push_back(ref[idx]);
        } else {
          ASSERT_EQ(fast[idx], 0.25f) << what << " written past Tk at b=" << b << " j=" << j;
        }
      }
  EXPECT_LT(relative_error(used_fast, used_ref), tol) << what;
}

void compare_fast_and_reference(const AttentionDims& d, Segments mode, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "B=" << d.B << " Tq=" << d.Tq << " Tk=" << d.Tk
                                  << " H=" << d.H << " Hkv=" << d.Hkv << " D=" << d.D
                                  << " cap=" << d.kv_cap << " segments=" << segments_name(mode));
  Rng rng(seed);
  const Tensors t = random_tensors(d, rng);
  std::vector<int32_t> k_seg, q_seg;
  const int32_t *qs = nullptr, *ks = nullptr;
  if (mode != Segments::None) {
    k_seg = make_key_segments(mode, d.B, d.Tk);
    q_seg = query_segments(k_seg, d.B, d.Tk, d.Tq);
    qs = q_seg.data();
    ks = k_seg.data();
  }
  const Results fast = run_fast(t, qs, ks, d);
  const Results ref = run_reference(t, qs, ks, d);
  EXPECT_TRUE(all_finite(fast.out));
  EXPECT_TRUE(all_finite(fast.lse));
  EXPECT_TRUE(all_finite(fast.dq));
  EXPECT_LT(relative_error(fast.out, ref.out), 2e-5);
  EXPECT_LT(relative_error(fast.lse, ref.lse), 2e-5);
  EXPECT_LT(relative_error(fast.dq, ref.dq), 5e-5);
  expect_kv_gradients(fast.dk, ref.dk, d, "dk", 5e-5);
  expect_kv_gradients(fast.dv, ref.dv, d, "dv", 5e-5);
}

// Rows [t0, t0 + n) of a [B=1, T, heads, D] tensor.
std::vector<float> slice_rows(const std::vector<float>& x, int64_t t0, int64_t n, int64_t row) {
  return std::vector<float>(x.begin() + t0 * row, x.begin() + (t0 + n) * row);
}

}  // namespace

TEST(Attention, FastMatchesReferenceAcrossShapes) {
  uint64_t seed = 1;
  for (int64_t T : {1, 7, 33, 130})
    for (int64_t Hkv : {4, 2, 1})
      for (int64_t D : {8, 16, 64})
        for (Segments mode :
             {Segments::None, Segments::Packed, Segments::LeftPad, Segments::RightPad}) {
          AttentionDims d;
          d.B = 2, d.Tq = T, d.Tk = T, d.H = 4, d.Hkv = Hkv, d.D = D;
          compare_fast_and_reference(d, mode, seed++);
        }
}

TEST(Attention, ExplicitScale) {
  AttentionDims d;
  d.B = 2, d.Tq = 40, d.Tk = 40, d.H = 4, d.Hkv = 2, d.D = 16, d.scale = 0.37f;
  compare_fast_and_reference(d, Segments::Packed, 7);
}

TEST(Attention, DecodeAgainstCacheMatchesReference) {
  uint64_t seed = 100;
  for (int64_t Tq : {1, 3})
    for (int64_t Tk : {3, 9, 70, 130})
      for (int64_t Hkv : {4, 1})
        for (Segments mode : {Segments::None, Segments::LeftPad}) {
          AttentionDims d;
          d.B = 2, d.Tq = Tq, d.Tk = Tk, d.H = 4, d.Hkv = Hkv, d.D = 16, d.kv_cap = Tk + 37;
          compare_fast_and_reference(d, mode, seed++);
        }
}

// Decoding the last Tq positions against a cache gives the last Tq rows of full attention.
TEST(Attention, DecodeEqualsLastRowsOfFullAttention) {
  const int64_t B = 2, T = 75, H = 4, Hkv = 2, D = 16, cap = 96;
  Rng rng(5);
  AttentionDims full;
  full.B = B, full.Tq = T, full.Tk = T, full.H = H, full.Hkv = Hkv, full.D = D;
  const Tensors ft = random_tensors(full, rng);
  const Results fr = run_fast(ft, nullptr, nullptr, full);

  for (int64_t Tq : {1, 3}) {
    AttentionDims dec = full;
    dec.Tq = Tq;
    dec.kv_cap = cap;
    Tensors dt;
    dt.k.assign(B * cap * Hkv * D, 0.f);
    dt.v.assign(B * cap * Hkv * D, 0.f);
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(ft.k.begin() + b * T * Hkv * D, T * Hkv * D, dt.k.begin() + b * cap * Hkv * D);
      std::copy_n(ft.v.begin() + b * T * Hkv * D, T * Hkv * D, dt.v.begin() + b * cap * Hkv * D);
      for (const auto* src : {&ft.q, &ft.dout}) {
        auto& dst = src == &ft.q ? dt.q : dt.dout;
        dst.insert(dst.end(), src->begin() + (b * T + T - Tq) * H * D,
                   src->begin() + (b + 1) * T * H * D);
      }
    }
    const Results dr = run_fast(dt, nullptr, nullptr, dec);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < Tq; ++i)
        for (int64_t e = 0; e < H * D; ++e) {
          const int64_t full_idx = (b * T + T - Tq + i) * H * D + e, dec_idx = (b * Tq + i) * H * D + e;
          EXPECT_NEAR(dr.out[dec_idx], fr.out[full_idx], 1e-5);
        }
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Tq; ++i)
          EXPECT_NEAR(dr.lse[(b * H + h) * Tq + i], fr.lse[(b * H + h) * T + T - Tq + i], 1e-5);
    }
  }
}

// Attention over a packed row with segment ids equals attention over each sample alone; left
// padding (-1) changes nothing for the real tokens.
TEST(Attention, PackedAndPaddedRowsEqualSeparateSamples) {
  const int64_t H = 4, Hkv = 2, D = 16, T1 = 5, T2 = 41, pad = 6, T = T1 + T2 + pad;
  const int64_t q_row = H * D, kv_row = Hkv * D;
  Rng rng(11);
  AttentionDims packed;
  packed.B = 1, packed.Tq = T, packed.Tk = T, packed.H = H, packed.Hkv = Hkv, packed.D = D;
  const Tensors pt = random_tensors(packed, rng);
  // Layout: [pad × -1][sample 1][sample 2] — left padding followed by two packed samples.
  std::vector<int32_t> seg(T);
  for (int64_t t = 0; t < T; ++t) seg[t] = t < pad ? -1 : (t < pad + T1 ? 0 : 1);
  const Results pr = run_fast(pt, seg.data(), seg.data(), packed);
  const Results pref = run_reference(pt, seg.data(), seg.data(), packed);
  EXPECT_LT(relative_error(pr.dk, pref.dk), 5e-5);

  for (auto [t0, n] : {std::pair<int64_t, int64_t>{pad, T1}, {pad + T1, T2}}) {
    AttentionDims one = packed;
    one.Tq = one.Tk = n;
    Tensors st{slice_rows(pt.q, t0, n, q_row), slice_rows(pt.k, t0, n, kv_row),
               slice_rows(pt.v, t0, n, kv_row), slice_rows(pt.dout, t0, n, q_row)};
    const Results sr = run_fast(st, nullptr, nullptr, one);
    EXPECT_LT(relative_error(slice_rows(pr.out, t0, n, q_row), sr.out), 1e-5) << "t0=" << t0;
    EXPECT_LT(relative_error(slice_rows(pr.dq, t0, n, q_row), sr.dq), 1e-5) << "t0=" << t0;
    EXPECT_LT(relative_error(slice_rows(pr.dk, t0, n, kv_row), sr.dk), 1e-5) << "t0=" << t0;
    EXPECT_LT(relative_error(slice_rows(pr.dv, t0, n, kv_row), sr.dv), 1e-5) << "t0=" << t0;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(pr.lse[h * T + t0 + i], sr.lse[h * n + i], 1e-5);
  }
}

// A query whose segment matches no visible key gets zeros, lse = -inf and finite gradients.
TEST(Attention, RowSeeingNoKeyGivesZerosNotNaN) {
  AttentionDims d;
  d.B = 1, d.Tq = 6, d.Tk = 6, d.H = 2, d.Hkv = 1, d.D = 8;
  Rng rng(3);
  const Tensors t = random_tensors(d, rng);
  const std::vector<int32_t> k_seg = {0, 0, 0, 0, 9, 0};
  const std::vector<int32_t> q_seg = {0, 0, 7, 0, 0, 0};  // row 2: segment 7 exists nowhere
  const Results fast = run_fast(t, q_seg.data(), k_seg.data(), d);
  const Results ref = run_reference(t, q_seg.data(), k_seg.data(), d);
  for (int64_t h = 0; h < d.H; ++h) {
    EXPECT_EQ(fast.lse[h * d.Tq + 2], -std::numeric_limits<float>::infinity());
    for (int64_t e = 0; e < d.D; ++e) EXPECT_EQ(fast.out[(2 * d.H + h) * d.D + e], 0.f);
  }
  EXPECT_TRUE(all_finite(fast.out));
  EXPECT_TRUE(all_finite(fast.dq));
  EXPECT_TRUE(all_finite(fast.dk));
  EXPECT_TRUE(all_finite(fast.dv));
  EXPECT_LT(relative_error(fast.out, ref.out), 2e-5);
  EXPECT_LT(relative_error(fast.lse, ref.lse), 2e-5);
  EXPECT_LT(relative_error(fast.dq, ref.dq), 5e-5);
  EXPECT_LT(relative_error(fast.dk, ref.dk), 5e-5);
  EXPECT_LT(relative_error(fast.dv, ref.dv), 5e-5);
}

// Central differences of L = Σ w ∘ out with respect to q, k, v against the fast backward.
TEST(Attention, GradientsMatchFiniteDifferences) {
  for (bool with_segments : {false, true}) {
    AttentionDims d;
    d.B = 1, d.Tq = 3, d.Tk = 4, d.H = 2, d.Hkv = 1, d.D = 4, d.kv_cap = 5;
    Rng rng(17);
    Tensors t = random_tensors(d, rng);
    for (auto& e : t.k)
      if (std::isnan(e)) e = 0.f;
    for (auto& e : t.v)
      if (std::isnan(e)) e = 0.f;
    const std::vector<int32_t> k_seg = {0, 1, 1, 1}, q_seg = {1, 1, 1};
    const int32_t* qs = with_segments ? q_seg.data() : nullptr;
    const int32_t* ks = with_segments ? k_seg.data() : nullptr;
    std::vector<float> out(t.q.size()), lse(d.B * d.H * d.Tq);
    auto loss = [&]() {
      attention_forward(out.data(), lse.data(), t.q.data(), t.k.data(), t.v.data(), qs, ks, d);
      double l = 0.0;
      for (size_t i = 0; i < out.size(); ++i) l += double(t.dout[i]) * out[i];
      return l;
    };
    loss();
    std::vector<float> dq(t.q.size(), 0.f), dk(t.k.size(), 0.f), dv(t.v.size(), 0.f);
    attention_backward(dq.data(), dk.data(), dv.data(), t.dout.data(), out.data(), lse.data(),
                       t.q.data(), t.k.data(), t.v.data(), qs, ks, d);
    const float eps = 3e-3f;
    for (auto [x, g, name] : {std::tuple{&t.q, &dq, "q"}, {&t.k, &dk, "k"}, {&t.v, &dv, "v"}})
      for (size_t i = 0; i < x->size(); ++i) {
        const float saved = (*x)[i];
        (*x)[i] = saved + eps;
        const double plus = loss();
        (*x)[i] = saved - eps;
        const double minus = loss();
        (*x)[i] = saved;
        const double numeric = (plus - minus) / (2.0 * eps);
        EXPECT_NEAR((*g)[i], numeric, 1e-3 + 1e-2 * std::fabs(numeric))
            << name << "[" << i << "] segments=" << with_segments;
      }
  }
}

// The backward splits a (batch row, kv head) item over query ranges when there are fewer items than
// threads (per-range dK/dV buffers, summed in order): every thread count gives the reference result.
TEST(Attention, BackwardSplitAcrossThreadsMatchesReference) {
  const int saved = omp_get_max_threads();
  uint64_t seed = 300;
  for (int threads : {1, 2, 3, 5})
    for (auto [B, Hkv] : {std::pair<int64_t, int64_t>{1, 1}, {3, 1}, {1, 2}}) {
      omp_set_num_threads(threads);
      AttentionDims d;
      d.B = B, d.Tq = 150, d.Tk = 150, d.H = 4, d.Hkv = Hkv, d.D = 24;
      SCOPED_TRACE(testing::Message() << "threads=" << threads);
      compare_fast_and_reference(d, Segments::Packed, seed++);
      d.Tq = 100;  // queries are the last 100 of 150 positions (a cache offset)
      compare_fast_and_reference(d, Segments::None, seed++);
    }
  omp_set_num_threads(saved);
}

// Pythia-sized heads (D = 64, several key blocks of the forward and rows longer than one GEMM tile).
TEST(Attention, LongRowsMatchReference) {
  AttentionDims d;
  d.B = 1, d.Tq = 300, d.Tk = 300, d.H = 2, d.Hkv = 2, d.D = 64;
  compare_fast_and_reference(d, Segments::None, 400);
  compare_fast_and_reference(d, Segments::Packed, 401);
}
