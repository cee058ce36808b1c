// LayerNorm and RMSNorm over rows of C floats: forward (saving per-row statistics) and backward,
// each with a plain double-precision reference.
#include "kernels/norm.h"
#include "core/profile.h"

#include <algorithm>
#include <cmath>

namespace llmtune {

namespace {

// Weight/bias gradients are sums over rows. Splitting the work by column blocks (rows summed in
// order inside each block) avoids races and keeps results identical for any thread count.
constexpr int64_t kColumnBlock = 128;

inline int64_t column_blocks(int64_t C) { return (C + kColumnBlock - 1) / kColumnBlock; }

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
  ProfileScope profile_scope("norm");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* yr = out + n * C;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < C; ++c) sum += xr[c];
    const float m = sum / float(C);
    float var = 0.0f;  // two passes: no cancellation for rows with a large mean
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < C; ++c) {
      const float d = xr[c] - m;
      var += d * d;
    }
    const float rs = 1.0f / std::sqrt(var / float(C) + eps);
    if (w && b) {
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - m) * rs * w[c] + b[c];
    } else {
      for (int64_t c = 0; c < C; ++c)
        yr[c] = (xr[c] - m) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = rs;
  }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
  ProfileScope profile_scope("norm");
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* gr = dout + n * C;
      const float m = mean[n], rs = rstd[n];
      // dx = rstd · (dn − mean(dn) − x̂ · mean(dn · x̂)) with dn = dout·w, x̂ the normalised x.
      float sum_dn = 0.0f, sum_dn_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_dn, sum_dn_xhat)
      for (int64_t c = 0; c < C; ++c) {
        const float dn = gr[c] * (w ? w[c] : 1.0f);
        sum_dn += dn;
        sum_dn_xhat += dn * (xr[c] - m) * rs;
      }
      const float mean_dn = sum_dn / float(C), mean_dn_xhat = sum_dn_xhat / float(C);
      float* dxr = dx + n * C;
      for (int64_t c = 0; c < C; ++c) {
        const float dn = gr[c] * (w ? w[c] : 1.0f);
        const float xhat = (xr[c] - m) * rs;
        dxr[c] += rs * (dn - mean_dn - xhat * mean_dn_xhat);
      }
    }
  }
  if (dw || db) {
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < column_blocks(C); ++blk) {
      const int64_t c0 = blk * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
      for (int64_t n = 0; n < N; ++n) {
        const float* xr = x + n * C;
        const float* gr = dout + n * C;
        const float m = mean[n], rs = rstd[n];
        if (dw)
          for (int64_t c = c0; c < c1; ++c) dw[c] += gr[c] * ((xr[c] - m) * rs);
        if (db)
          for (int64_t c = c0; c < c1; ++c) db[c] += gr[c];
      }
    }
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps) {
  ProfileScope profile_scope("norm");
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    float* yr = out + n * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
    const float rs = 1.0f / std::sqrt(ss / float(C) + eps);
    // HF order: normalise first (rounded to f32), then scale by the weight.
    if (w) {
      for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] * rs) * w[c];
    } else {
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * rs;
    }
    if (rstd) rstd[n] = rs;
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C) {
  ProfileScope profile_scope("norm");
  if (dx) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = x + n * C;
      const float* gr = dout + n * C;
      const float rs = rstd[n];
      // dx = rstd · (dn − x̂ · mean(dn · x̂)) with dn = dout·w, x̂ = x·rstd.
      float sum_dn_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_dn_xhat)
      for (int64_t c = 0; c < C; ++c) sum_dn_xhat += gr[c] * (w ? w[c] : 1.0f) * (xr[c] * rs);
      const float mean_dn_xhat = sum_dn_xhat / float(C);
      float* dxr = dx + n * C;
      for (int64_t c = 0; c < C; ++c)
        dxr[c] += rs * (gr[c] * (w ? w[c] : 1.0f) - (xr[c] * rs) * mean_dn_xhat);
    }
  }
  if (dw) {
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < column_blocks(C); ++blk) {
      const int64_t c0 = blk * kColumnBlock, c1 = std::min(C, c0 + kColumnBlock);
      for (int64_t n = 0; n < N; ++n) {
        const float* xr = x + n * C;
        const float* gr = dout + n * C;
        const float rs = rstd[n];
        for (int64_t c = c0; c < c1; ++c) dw[c] += gr[c] * (xr[c] * rs);
      }
    }
  }
}

namespace reference {

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    double m = 0.0;
    for (int64_t c = 0; c < C; ++c) m += xr[c];
    m /= double(C);
    double var = 0.0;
    for (int64_t c = 0; c < C; ++c) var += (xr[c] - m) * (xr[c] - m);
    var /= double(C);
    const double rs = 1.0 / std::sqrt(var + double(eps));
    for (int64_t c = 0; c < C; ++c)
      out[n * C + c] = float((xr[c] - m) * rs * (w ? w[c] : 1.0) + (b ? b[c] : 0.0));
    if (mean) mean[n] = float(m);
    if (rstd) rstd[n] = float(rs);
  }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* gr = dout + n * C;
    const double m = mean[n], rs = rstd[n];
    double sum_dn = 0.0, sum_dn_xhat = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double dn = double(gr[c]) * (w ? w[c] : 1.0);
      sum_dn += dn;
      sum_dn_xhat += dn * (xr[c] - m) * rs;
    }
    for (int64_t c = 0; c < C; ++c) {
      const double dn = double(gr[c]) * (w ? w[c] : 1.0);
      const double xhat = (xr[c] - m) * rs;
      if (dx) dx[n * C + c] = float(dx[n * C + c] + rs * (dn - sum_dn / C - xhat * sum_dn_xhat / C));
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double sw = 0.0, sb = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const double g = dout[n * C + c];
      sw += g * (x[n * C + c] - double(mean[n])) * double(rstd[n]);
      sb += g;
    }
    if (dw) dw[c] = float(dw[c] + sw);
    if (db) db[c] = float(db[c] + sb);
  }
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t C,
                     float eps) {
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += double(xr[c]) * xr[c];
    const double rs = 1.0 / std::sqrt(ss / double(C) + double(eps));
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = float(xr[c] * rs * (w ? w[c] : 1.0));
    if (rstd) rstd[n] = float(rs);
  }
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = x + n * C;
    const float* gr = dout + n * C;
    const double rs = rstd[n];
    double sum_dn_xhat = 0.0;
    for (int64_t c = 0; c < C; ++c) sum_dn_xhat += double(gr[c]) * (w ? w[c] : 1.0) * xr[c] * rs;
    if (dx)
      for (int64_t c = 0; c < C; ++c) {
        const double dn = double(gr[c]) * (w ? w[c] : 1.0);
        dx[n * C + c] = float(dx[n * C + c] + rs * (dn - xr[c] * rs * sum_dn_xhat / C));
      }
  }
  if (dw)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0.0;
      for (int64_t n = 0; n < N; ++n) s += double(dout[n * C + c]) * x[n * C + c] * double(rstd[n]);
      dw[c] = float(dw[c] + s);
    }
}

}  // namespace reference

}  // namespace llmtune
