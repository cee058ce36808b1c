// gemv for decode steps: AVX-512 dot products of weight rows with the M input rows held in registers
// (f32 FMA, bf16 vdpbf16ps, 4-bit codes looked up with vpermps, int8 widened to f32), output rows
// split over threads in chunks claimed dynamically through decode_pool (a busy machine stalls an
// OpenMP fork/join at every product, see decode_pool.h).
// Plain loops stand in where the CPU lacks AVX-512.
#include "kernels/gemv.h"

#include <algorithm>
#include <vector>

#if defined(__AVX512F__)
// GCC 12's AVX-512 headers seed some intrinsics with _mm512_undefined_*(), which -Wall reports as
// uninitialized once inlined here (false positives).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include "core/dtype.h"
#include "core/error.h"
#include "core/profile.h"
#include "kernels/decode_pool.h"

namespace llmtune {

namespace {

constexpr int kMaxTasks = 8;
// Bytes of weights per work chunk: big enough that handing out chunks costs nothing, small enough
// that two threads end together.
constexpr int64_t kChunkBytes = 64 * 1024;
// Below this many weight bytes in total, one thread (a fork/join costs more than the product).
constexpr int64_t kParallelBytes = 256 * 1024;

enum class Kind { F32, BF16, Q4, Q8 };

Kind kind_of(const GemvTask& t) {
  if (t.q4) return Kind::Q4;
  if (t.q8) return Kind::Q8;
  return t.dense.dtype == DType::BF16 ? Kind::BF16 : Kind::F32;
}

int64_t row_bytes(const GemvTask& t, int64_t in) {
  switch (kind_of(t)) {
    case Kind::F32: return in * 4;
    case Kind::BF16: return in * 2;
    case Kind::Q4: return in / 2 + std::max<int64_t>(1, in / t.q4->blocksize);
    case Kind::Q8: return in;
  }
  return in * 4;
}

template <typename T>
T* scratch(int slot, int64_t n) {
  thread_local std::vector<T> bufs[2];
  auto& b = bufs[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

// y[m, o] for the R rows starting at o, sums[r][m] computed; writes with bias / accumulate.
template <int M, int R>
inline void store(const GemvTask& t, int64_t o, const float (&sums)[R][M]) {
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) {
      float v = sums[r][m];
      float* dst = t.y + m * t.out + o + r;
      if (t.bias) v += t.bias[o + r];  // product first, then the bias, as linear_forward
      *dst = t.accumulate ? *dst + v : v;
    }
}

// Rows per register block: R·M accumulators must fit the 32 vector registers with room to spare.
template <int M>
constexpr int rows_per_block() {
  return M <= 4 ? 4 : 2;
}

#if defined(__AVX512F__)

inline __mmask16 tail_mask16(int64_t n) { return __mmask16((1u << n) - 1u); }

// The kernels prefetch the next block of R rows (same offset) one block ahead: with short rows the
// hardware prefetcher warms up too late on each new row (bf16 768-wide rows: 2.9 -> 4.6 GB/s on one
// core, bench/NOTES.md). f32 rows longer than this stream well enough without it.
constexpr int64_t kPrefetchRowBytes = 4096;

// Horizontal sum by halving shuffles (_mm512_reduce_add_ps trips GCC 12's uninitialized warnings).
inline float hsum(__m512 v) {
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_permute_ps(v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(v);
}

// ---- f32 weights [out, in] ----
template <int M, int R>
inline void rows_f32(const GemvTask& t, const float* x, int64_t in, int64_t o) {
  const float* W = static_cast<const float*>(t.dense.data) + o * in;
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  const bool prefetch = in * 4 <= kPrefetchRowBytes;
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    __m512 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = _mm512_loadu_ps(x + m * in + i);
    for (int r = 0; r < R; ++r) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(W + (r + R) * in + i), _MM_HINT_T0);
      const __m512 w = _mm512_loadu_ps(W + r * in + i);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  if (i < in) {
    const __mmask16 k = tail_mask16(in - i);
    __m512 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = _mm512_maskz_loadu_ps(k, x + m * in + i);
    for (int r = 0; r < R; ++r) {
      const __m512 w = _mm512_maskz_loadu_ps(k, W + r * in + i);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  float sums[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) sums[r][m] = hsum(acc[r][m]);
  store<M, R>(t, o, sums);
}

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
// ---- bf16 weights [out, in]; x16 = activations rounded to bf16 ----
template <int M, int R>
inline void rows_bf16(const GemvTask& t, const uint16_t* x16, int64_t in, int64_t o) {
  const uint16_t* W = static_cast<const uint16_t*>(t.dense.data) + o * in;
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= in; i += 32) {
    __m512bh xv[M];
    for (int m = 0; m < M; ++m) xv[m] = (__m512bh)_mm512_loadu_si512(x16 + m * in + i);
    for (int r = 0; r < R; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(W + (r + R) * in + i), _MM_HINT_T0);
      const __m512bh w = (__m512bh)_mm512_loadu_si512(W + r * in + i);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], w, xv[m]);
    }
  }
  if (i < in) {
    const __mmask32 k = __mmask32((uint64_t(1) << (in - i)) - 1);
    __m512bh xv[M];
    for (int m = 0; m < M; ++m) xv[m] = (__m512bh)_mm512_maskz_loadu_epi16(k, x16 + m * in + i);
    for (int r = 0; r < R; ++r) {
      const __m512bh w = (__m512bh)_mm512_maskz_loadu_epi16(k, W + r * in + i);
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], w, xv[m]);
    }
  }
  float sums[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) sums[r][m] = hsum(acc[r][m]);
  store<M, R>(t, o, sums);
}
#define LLMTUNE_GEMV_BF16_SIMD 1
#endif

// ---- 4-bit weights, blocks aligned to rows. xd: x with each group of 32 split into its 16 even
// elements then its 16 odd ones (the high / low nibbles of 16 packed bytes) ----
template <int M, int R>
inline void rows_q4(const GemvTask& t, const float* xd, int64_t in, int64_t o) {
  const Quant4Weight& W = *t.q4;
  const __m512 code = _mm512_loadu_ps(quant4_code(W.quant_type).data());
  const int64_t bs = W.blocksize, blocks_per_row = in / bs;
  const __m512i low4 = _mm512_set1_epi32(15);
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  for (int64_t kb = 0; kb < blocks_per_row; ++kb) {
    __m512 lut[R];
    for (int r = 0; r < R; ++r)  // code[q]·scale rounded once, as dequantize_4bit does
      lut[r] = _mm512_mul_ps(code, _mm512_set1_ps(quant4_block_scale(W, (o + r) * blocks_per_row + kb)));
    for (int64_t i = kb * bs; i < (kb + 1) * bs; i += 32) {
      for (int r = 0; r < R; ++r) {
        const uint8_t* p = W.packed.data() + ((o + r) * in + i) / 2;
        if ((i & 127) == 0) _mm_prefetch(reinterpret_cast<const char*>(p + R * in / 2), _MM_HINT_T0);
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512 w_even = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut[r]);
        const __m512 w_odd = _mm512_permutexvar_ps(_mm512_and_si512(v, low4), lut[r]);
        for (int m = 0; m < M; ++m) {
          acc[r][m] = _mm512_fmadd_ps(w_even, _mm512_loadu_ps(xd + m * in + i), acc[r][m]);
          acc[r][m] = _mm512_fmadd_ps(w_odd, _mm512_loadu_ps(xd + m * in + i + 16), acc[r][m]);
        }
      }
    }
  }
  float sums[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) sums[r][m] = hsum(acc[r][m]);
  store<M, R>(t, o, sums);
}

// ---- LLM.int8 weights: Σ w8·x, then · SCB/127 ----
template <int M, int R>
inline void rows_q8(const GemvTask& t, const float* x, int64_t in, int64_t o) {
  const Int8Weight& W = *t.q8;
  const int8_t* w8 = W.w8.data() + o * in;
  __m512 acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= in; i += 16) {
    __m512 xv[M];
    for (int m = 0; m < M; ++m) xv[m] = _mm512_loadu_ps(x + m * in + i);
    for (int r = 0; r < R; ++r) {
      if ((i & 63) == 0) _mm_prefetch(reinterpret_cast<const char*>(w8 + (r + R) * in + i), _MM_HINT_T0);
      const __m512 w = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w8 + r * in + i))));
      for (int m = 0; m < M; ++m) acc[r][m] = _mm512_fmadd_ps(w, xv[m], acc[r][m]);
    }
  }
  float sums[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) {
      float s = hsum(acc[r][m]);
      for (int64_t j = i; j < in; ++j) s += float(w8[r * in + j]) * x[m * in + j];
      sums[r][m] = s * (W.scb[size_t(o + r)] * (1.0f / 127.0f));
    }
  store<M, R>(t, o, sums);
}

#endif  // __AVX512F__

// ---- portable fallbacks (also the tail rows' path where no SIMD kernel exists) ----
template <int M, int R>
inline void rows_plain(const GemvTask& t, const float* x, const uint16_t* x16, int64_t in, int64_t o) {
  float sums[R][M] = {};
  const Kind k = kind_of(t);
  for (int r = 0; r < R; ++r) {
    const int64_t row = o + r;
    for (int m = 0; m < M; ++m) {
      float s = 0.f;
      if (k == Kind::F32) {
        const float* w = static_cast<const float*>(t.dense.data) + row * in;
        for (int64_t i = 0; i < in; ++i) s += w[i] * x[m * in + i];
      } else if (k == Kind::BF16) {
        const uint16_t* w = static_cast<const uint16_t*>(t.dense.data) + row * in;
        for (int64_t i = 0; i < in; ++i) s += bf16_to_f32(w[i]) * bf16_to_f32(x16[m * in + i]);
      } else if (k == Kind::Q8) {
        const int8_t* w = t.q8->w8.data() + row * in;
        for (int64_t i = 0; i < in; ++i) s += float(w[i]) * x[m * in + i];
        s *= t.q8->scb[size_t(row)] * (1.0f / 127.0f);
      } else {
        const Quant4Weight& W = *t.q4;
        const float* code = quant4_code(W.quant_type).data();
        for (int64_t i = 0; i < in; ++i) {
          const int64_t e = row * in + i;
          const uint8_t byte = W.packed[size_t(e >> 1)];
          const int q = (e & 1) ? (byte & 15) : (byte >> 4);
          s += code[q] * quant4_block_scale(W, e / W.blocksize) * x[m * in + i];
        }
      }
      sums[r][m] = s;
    }
  }
  store<M, R>(t, o, sums);
}

// The inputs each kind reads: x (f32, q8), x16 (bf16), xd (q4, deinterleaved).
struct Inputs {
  const float* x;
  const uint16_t* x16;
  const float* xd;
};

template <int M, int R>
inline void rows_any(const GemvTask& t, Kind k, const Inputs& in_, int64_t in, int64_t o) {
#if defined(__AVX512F__)
  switch (k) {
    case Kind::F32: return rows_f32<M, R>(t, in_.x, in, o);
#if defined(LLMTUNE_GEMV_BF16_SIMD)
    case Kind::BF16: return rows_bf16<M, R>(t, in_.x16, in, o);
#else
    case Kind::BF16: return rows_plain<M, R>(t, in_.x, in_.x16, in, o);
#endif
    case Kind::Q4: return rows_q4<M, R>(t, in_.xd, in, o);
    case Kind::Q8: return rows_q8<M, R>(t, in_.x, in, o);
  }
#else
  rows_plain<M, R>(t, in_.x, in_.x16, in, o);
#endif
}

template <int M>
void run_rows(const GemvTask& t, const Inputs& inputs, int64_t in, int64_t r0, int64_t r1) {
  constexpr int R = rows_per_block<M>();
  const Kind k = kind_of(t);
  int64_t o = r0;
  for (; o + R <= r1; o += R) rows_any<M, R>(t, k, inputs, in, o);
  for (; o < r1; ++o) rows_any<M, 1>(t, k, inputs, in, o);
}

void run_chunk(int64_t M, const GemvTask& t, const Inputs& inputs, int64_t in, int64_t r0, int64_t r1) {
  switch (M) {
    case 1: return run_rows<1>(t, inputs, in, r0, r1);
    case 2: return run_rows<2>(t, inputs, in, r0, r1);
    case 3: return run_rows<3>(t, inputs, in, r0, r1);
    case 4: return run_rows<4>(t, inputs, in, r0, r1);
    case 5: return run_rows<5>(t, inputs, in, r0, r1);
    case 6: return run_rows<6>(t, inputs, in, r0, r1);
    case 7: return run_rows<7>(t, inputs, in, r0, r1);
    case 8: return run_rows<8>(t, inputs, in, r0, r1);
  }
}

void check_task(const GemvTask& t, int64_t in) {
  const int set = (t.dense.data != nullptr) + (t.q4 != nullptr) + (t.q8 != nullptr);
  LLMTUNE_CHECK(set == 1, "gemv: a task needs exactly one weight (dense, q4 or q8)");
  LLMTUNE_CHECK(t.y && t.out > 0, "gemv: a task needs an output and out > 0");
  if (t.q4) {
    LLMTUNE_CHECK(t.q4->cols == in && t.q4->rows == t.out, "gemv: 4-bit weight [", t.q4->rows, ", ",
                  t.q4->cols, "] does not match in=", in, " out=", t.out);
    check_quant4_weight(*t.q4);
  } else if (t.q8) {
    LLMTUNE_CHECK(t.q8->cols == in && t.q8->rows == t.out && t.q8->w8.size() == size_t(in * t.out) &&
                      t.q8->scb.size() == size_t(t.out),
                  "gemv: int8 weight [", t.q8->rows, ", ", t.q8->cols, "] does not match in=", in,
                  " out=", t.out);
  } else {
    LLMTUNE_CHECK(t.dense.dtype == DType::F32 || t.dense.dtype == DType::BF16,
                  "gemv: dense weight must be F32 or BF16, got ", dtype_name(t.dense.dtype));
  }
  LLMTUNE_CHECK(gemv_supports(t, in), "gemv: unsupported weight layout (transposed dense, or 4-bit blocks "
                                      "not aligned to rows); use linear_forward");
}

}  // namespace

bool gemv_supports(const GemvTask& t, int64_t in) {
  if (in <= 0) return false;
  if (t.q4) return in % t.q4->blocksize == 0;
  if (t.q8) return true;
  return t.dense.data != nullptr && !t.dense.transposed &&
         (t.dense.dtype == DType::F32 || t.dense.dtype == DType::BF16);
}

void gemv_forward(const GemvTask* tasks, int n_tasks, const float* x, int64_t M, int64_t in) {
  ProfileScope profile_scope("gemv (decode)");
  LLMTUNE_CHECK(M >= 1 && M <= kGemvMaxRows, "gemv: M=", M, " outside [1, ", kGemvMaxRows, "]");
  LLMTUNE_CHECK(n_tasks >= 1 && n_tasks <= kMaxTasks, "gemv: ", n_tasks, " tasks (1..", kMaxTasks, ")");
  bool any_bf16 = false, any_q4 = false;
  int64_t chunk_rows[kMaxTasks], first_chunk[kMaxTasks + 1], total_bytes = 0;
  first_chunk[0] = 0;
  for (int ti = 0; ti < n_tasks; ++ti) {
    const GemvTask& t = tasks[ti];
    check_task(t, in);
    any_bf16 |= kind_of(t) == Kind::BF16;
    any_q4 |= kind_of(t) == Kind::Q4;
    const int64_t rb = row_bytes(t, in);
    chunk_rows[ti] = std::max<int64_t>(8, kChunkBytes / rb / 8 * 8);
    first_chunk[ti + 1] = first_chunk[ti] + (t.out + chunk_rows[ti] - 1) / chunk_rows[ti];
    total_bytes += rb * t.out;
  }
  Inputs inputs{x, nullptr, nullptr};
  if (any_bf16) {  // activations rounded to bf16, as linear_forward does for bf16 weights
    uint16_t* x16 = scratch<uint16_t>(0, M * in);
    for (int64_t i = 0; i < M * in; ++i) x16[i] = f32_to_bf16(x[i]);
    inputs.x16 = x16;
  }
  if (any_q4) {  // in % 32 == 0 here (blocks are powers of two >= 32)
    float* xd = scratch<float>(1, M * in);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t g = 0; g < in; g += 32)
        for (int64_t j = 0; j < 16; ++j) {
          xd[m * in + g + j] = x[m * in + g + 2 * j];
          xd[m * in + g + 16 + j] = x[m * in + g + 2 * j + 1];
        }
    inputs.xd = xd;
  }
  const int64_t n_chunks = first_chunk[n_tasks];
  auto chunk = [&](int64_t c) {
    int ti = 0;
    while (c >= first_chunk[ti + 1]) ++ti;
    const GemvTask& t = tasks[ti];
    const int64_t r0 = (c - first_chunk[ti]) * chunk_rows[ti], r1 = std::min(t.out, r0 + chunk_rows[ti]);
    run_chunk(M, t, inputs, in, r0, r1);
  };
  if (total_bytes > kParallelBytes) {
    run_chunks(n_chunks, chunk);
  } else {
    for (int64_t c = 0; c < n_chunks; ++c) chunk(c);
  }
}

void gemv_forward(float* y, const float* x, const WeightView& W, const float* bias, int64_t M, int64_t in,
                  int64_t out, bool accumulate) {
  GemvTask t;
  t.y = y, t.bias = bias, t.out = out, t.accumulate = accumulate, t.dense = W;
  gemv_forward(&t, 1, x, M, in);
}

void gemv_q4_forward(float* y, const float* x, const Quant4Weight& W, const float* bias, int64_t M) {
  GemvTask t;
  t.y = y, t.bias = bias, t.out = W.rows, t.q4 = &W;
  gemv_forward(&t, 1, x, M, W.cols);
}

void gemv_int8_forward(float* y, const float* x, const Int8Weight& W, const float* bias, int64_t M) {
  GemvTask t;
  t.y = y, t.bias = bias, t.out = W.rows, t.q8 = &W;
  gemv_forward(&t, 1, x, M, W.cols);
}

namespace reference {

void gemv_forward(const GemvTask* tasks, int n_tasks, const float* x, int64_t M, int64_t in) {
  std::vector<float> row(static_cast<size_t>(in));
  for (int ti = 0; ti < n_tasks; ++ti) {
    const GemvTask& t = tasks[ti];
    for (int64_t o = 0; o < t.out; ++o) {
      // Weight row o as f32, the way the fast path sees it.
      if (t.q4) {
        dequantize_4bit_range(row.data(), *t.q4, o * in, (o + 1) * in);
      } else if (t.q8) {
        dequantize_int8_rows(row.data(), *t.q8, o, o + 1);
      } else {
        for (int64_t i = 0; i < in; ++i) {
          const int64_t idx = t.dense.transposed ? i * t.out + o : o * in + i;
          row[size_t(i)] = t.dense.dtype == DType::BF16
                               ? bf16_to_f32(static_cast<const uint16_t*>(t.dense.data)[idx])
                               : static_cast<const float*>(t.dense.data)[idx];
        }
      }
      const bool round_x = !t.q4 && !t.q8 && t.dense.dtype == DType::BF16;
      for (int64_t m = 0; m < M; ++m) {
        double s = 0;
        for (int64_t i = 0; i < in; ++i) {
          const float xv = round_x ? bf16_to_f32(f32_to_bf16(x[m * in + i])) : x[m * in + i];
          s += double(xv) * double(row[size_t(i)]);
        }
        float v = float(s);
        if (t.bias) v += t.bias[o];
        float& dst = t.y[m * t.out + o];
        dst = t.accumulate ? dst + v : v;
      }
    }
  }
}

}  // namespace reference

}  // namespace llmtune
