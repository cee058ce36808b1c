// matmul: C = op(A)·op(B) through oneDNN's matmul primitive (strided descriptors express the
// transposes and leading dimensions, a `sum` post-op the accumulate), plus the plain-loop reference.
#include "kernels/matmul.h"

#include <dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/sysinfo.h"

namespace llmtune {

namespace {

// Fills in packed leading dimensions and rejects impossible ones (a programming error, but a
// clear message beats reading out of bounds).
GemmDims normalized(const GemmDims& d) {
  GemmDims n = d;
  LLMTUNE_CHECK(d.M >= 0 && d.N >= 0 && d.K >= 0, "matmul: negative size M=", d.M, " N=", d.N,
                " K=", d.K);
  const int64_t min_lda = d.trans_a ? d.M : d.K;
  const int64_t min_ldb = d.trans_b ? d.K : d.N;
  if (n.lda == 0) n.lda = std::max<int64_t>(min_lda, 1);
  if (n.ldb == 0) n.ldb = std::max<int64_t>(min_ldb, 1);
  if (n.ldc == 0) n.ldc = std::max<int64_t>(d.N, 1);
  LLMTUNE_CHECK(n.lda >= min_lda && n.ldb >= min_ldb && n.ldc >= d.N,
                "matmul: leading dimension too small (lda=", n.lda, " ldb=", n.ldb, " ldc=", n.ldc,
                " for M=", d.M, " N=", d.N, " K=", d.K, ")");
  return n;
}

// Handles the degenerate shapes. Returns true when nothing is left to compute.
bool handle_empty(float* C, const GemmDims& d, bool accumulate) {
  if (d.M == 0 || d.N == 0) return true;
  if (d.K > 0) return false;
  if (!accumulate)
    for (int64_t m = 0; m < d.M; ++m) std::memset(C + m * d.ldc, 0, size_t(d.N) * sizeof(float));
  return true;
}

inline float load(const float* p) { return *p; }
inline float load(const uint16_t* p) { return bf16_to_f32(*p); }

// Plain loops with f32 accumulation, used for products too small to be worth a oneDNN call and
// as the fallback when oneDNN cannot build a primitive (e.g. bf16 on a CPU without AVX-512).
template <typename T>
void loop_matmul(float* C, const T* A, const T* B, const GemmDims& d, bool accumulate) {
#pragma omp parallel for schedule(static) if (d.M * d.N * d.K > (1 << 16))
  for (int64_t m = 0; m < d.M; ++m) {
    float* c = C + m * d.ldc;
    if (!accumulate) std::memset(c, 0, size_t(d.N) * sizeof(float));
    for (int64_t k = 0; k < d.K; ++k) {
      const float a = load(d.trans_a ? A + k * d.lda + m : A + m * d.lda + k);
      if (!d.trans_b) {
        const T* b = B + k * d.ldb;
        for (int64_t n = 0; n < d.N; ++n) c[n] += a * load(b + n);
      } else {
        for (int64_t n = 0; n < d.N; ++n) c[n] += a * load(B + n * d.ldb + k);
      }
    }
  }
}

// ---- oneDNN plumbing ------------------------------------------------------------------------

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, bool, int>;

struct CachedMatmul {
  bool ok = false;  // false: oneDNN refused this configuration; use the loop path
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, c_md, scratch_md;
  dnnl::memory::desc b_plain_md;  // B as the caller stores it (differs from b_md when B is packed)
};

dnnl::engine& global_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::mutex cache_mutex;
std::map<Key, std::shared_ptr<const CachedMatmul>> cache;

std::shared_ptr<const CachedMatmul> get_matmul(const GemmDims& d, bool accumulate, bool bf16, bool packed_b = false) {
  const Key key{d.M, d.N, d.K, d.trans_a, d.trans_b, d.lda, d.ldb, d.ldc, accumulate, (bf16 ? 1 : 0) + (packed_b ? 2 : 0)};
  std::lock_guard<std::mutex> lock(cache_mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;

  using md = dnnl::memory::desc;
  using dims = dnnl::memory::dims;
  using dt = dnnl::memory::data_type;
  const dt in_type = bf16 ? dt::bf16 : dt::f32;
  auto entry = std::make_shared<CachedMatmul>();
  // op(A)[m,k] lives at A[m·lda + k], or A[k·lda + m] when A is stored transposed.
  entry->a_md = md({d.M, d.K}, in_type, d.trans_a ? dims{1, d.lda} : dims{d.lda, 1});
  entry->b_md = md({d.K, d.N}, in_type, d.trans_b ? dims{1, d.ldb} : dims{d.ldb, 1});
  entry->b_plain_md = entry->b_md;
  if (packed_b) entry->b_md = md({d.K, d.N}, in_type, dnnl::memory::format_tag::any);
  entry->c_md = md({d.M, d.N}, dt::f32, dims{d.ldc, 1});
  try {
    dnnl::primitive_attr attr;
    // User scratchpad: each calling thread brings its own, so concurrent calls are safe.
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (accumulate) {
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    dnnl::matmul::desc desc(entry->a_md, entry->b_md, entry->c_md);
    dnnl::matmul::primitive_desc pd(desc, attr, global_engine());
    entry->scratch_md = pd.scratchpad_desc();
    if (packed_b) entry->b_md = pd.weights_desc();  // the blocked layout oneDNN chose
    entry->prim = dnnl::matmul(pd);
    entry->ok = true;
  } catch (const dnnl::error&) {
    entry->ok = false;
  }
  // Training uses a handful of shapes; a runaway cache (e.g. generation with growing lengths)
  // is simply dropped and rebuilt.
  if (cache.size() > 4096) cache.clear();
  cache.emplace(key, entry);
  return entry;
}

bool run_onednn(float* C, const void* A, const void* B, const GemmDims& d, bool accumulate,
                bool bf16) {
  auto mm = get_matmul(d, accumulate, bf16);
  if (!mm->ok) return false;
  thread_local dnnl::stream stream(global_engine());
  thread_local std::vector<uint8_t> scratch;
  const size_t scratch_bytes = mm->scratch_md.get_size();
  if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
  auto& eng = global_engine();
  dnnl::memory a(mm->a_md, eng, const_cast<void*>(A));
  dnnl::memory b(mm->b_md, eng, const_cast<void*>(B));
  dnnl::memory c(mm->c_md, eng, C);
  dnnl::memory s(mm->scratch_md, eng, scratch.data());
  mm->prim.execute(stream, {{DNNL_ARG_SRC, a},
                            {DNNL_ARG_WEIGHTS, b},
                            {DNNL_ARG_DST, c},
                            {DNNL_ARG_SCRATCHPAD, s}});
  stream.wait();
  return true;
}

// ---- packed constant weights ----

struct PackedWeight {
  dnnl::memory::desc md;
  dnnl::memory mem;
  uint64_t checksum = 0;
};
using PackKey = std::tuple<const void*, int64_t, int64_t, bool, int64_t>;
std::mutex pack_mutex;
std::map<PackKey, std::vector<PackedWeight>> packed_weights;

// 64 sampled elements: a different weight that reuses a freed pointer is caught (in-place changes
// of a cached weight are not: matmul_forget_packed_weights exists for that).
uint64_t sample_checksum(const uint16_t* B, const GemmDims& d) {
  const int64_t rows = d.trans_b ? d.N : d.K, cols = d.trans_b ? d.K : d.N;
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < 64; i++) {
    const int64_t r = (i * 7919) % rows, c = (i * 104729) % cols;
    h = (h ^ B[r * d.ldb + c]) * 1099511628211ull;
  }
  return h;
}

bool run_onednn_packed(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& d, bool accumulate) {
  auto mm = get_matmul(d, accumulate, true, true);
  if (!mm->ok) return false;
  thread_local dnnl::stream stream(global_engine());
  auto& eng = global_engine();
  dnnl::memory packed;
  {
    const uint64_t sum = sample_checksum(B, d);
    std::lock_guard<std::mutex> lock(pack_mutex);
    auto& list = packed_weights[PackKey{B, d.K, d.N, d.trans_b, d.ldb}];
    for (auto& p : list)
      if (p.md == mm->b_md && p.checksum == sum) packed = p.mem;
    if (!packed) {
      std::erase_if(list, [&](const PackedWeight& p) { return p.checksum != sum; });  // stale pointer reuse
      PackedWeight p{mm->b_md, dnnl::memory(mm->b_md, eng), sum};
      dnnl::memory plain(mm->b_plain_md, eng, const_cast<uint16_t*>(B));
      dnnl::reorder(plain, p.mem).execute(stream, plain, p.mem);
      stream.wait();
      packed = p.mem;
      list.push_back(std::move(p));
    }
  }
  thread_local std::vector<uint8_t> scratch;
  const size_t scratch_bytes = mm->scratch_md.get_size();
  if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
  dnnl::memory a(mm->a_md, eng, const_cast<uint16_t*>(A));
  dnnl::memory c(mm->c_md, eng, C);
  dnnl::memory s(mm->scratch_md, eng, scratch.data());
  mm->prim.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, packed}, {DNNL_ARG_DST, c}, {DNNL_ARG_SCRATCHPAD, s}});
  stream.wait();
  return true;
}

bool prepack_enabled() {
  static const bool on = [] {
    // Off by default: measured no gain on avx512_core_bf16 (no AMX) for +35% RSS (bench/NOTES.md).
    const char* v = std::getenv("LLMTUNE_PREPACK");
    return v && std::string(v) == "1";
  }();
  return on;
}

// ---- B stored [K,N]: rewritten so that both operands are K-contiguous --------------------------
// oneDNN's f32 brgemm packs a B stored [N,K] before the product but reads a B stored [K,N] (N
// contiguous) in place, and for many widths N that are not a power of two that runs far below the
// ceiling. bench_gemm_shapes (2 threads, rewrite off vs on, alternating; bench/NOTES.md):
// 512x3072x1024 79 vs 204 GFLOP/s, TinyLlama's down_proj backward 512x5632x2048 72 vs 213, the
// Pythia-160m fc2 backward 1024x3072x768 91 vs 201, the LM-head backward chunk 170x768x50304 142 vs
// 173; for power-of-two N as-is is 5-10% faster than either rewrite, so those stay as they are.
// A product big enough to pay for moving the extra elements is run in the fast layout instead:
//   transposed product: Cᵀ = op(B)ᵀ·op(A)ᵀ into a scratch, then C (+)= (Cᵀ)ᵀ   (moves M·N elements)
//   transposed copy of B: B → Bᵀ stored [N,K], then the product            (moves K·N elements)
enum class Rewrite { none, transposed_product, transpose_b };

// LLMTUNE_GEMM_REWRITE=0 starts with it off (A/B runs of whole steps).
std::atomic<bool> layout_rewrite_on{[] {
  const char* v = std::getenv("LLMTUNE_GEMM_REWRITE");
  return !(v && std::string(v) == "0");
}()};

Rewrite choose_rewrite(const GemmDims& d) {
  // Moving an element costs about as much as 128 multiply-adds of the product when it is cheap (a
  // small transposed output), the copy of B measured dearer (LM-head chunk 170x768x50304 with A
  // stored [K,M]: 206 as-is vs 126 GFLOP/s copying B), so it needs M >= 512.
  constexpr int64_t kMinDim = 64, kProductWork = 128, kCopyWork = 512;
  const bool power_of_two = (d.N & (d.N - 1)) == 0;
  if (!layout_rewrite_on.load(std::memory_order_relaxed) || d.trans_b || power_of_two || d.M < kMinDim ||
      d.N < kMinDim || d.K < kMinDim)
    return Rewrite::none;
  const int64_t work = d.M * d.N * d.K;
  // With A stored [K,M] the transposed product would read A as a [K,N]-style operand again.
  const int64_t product_moves = d.trans_a ? work : d.M * d.N, copy_moves = d.K * d.N;
  if (product_moves <= copy_moves && product_moves * kProductWork <= work) return Rewrite::transposed_product;
  if (copy_moves * kCopyWork <= work) return Rewrite::transpose_b;
  return Rewrite::none;
}

// dst[c·ld_dst + r] (=|+=) src[r·ld_src + c] for r < rows, c < cols; 32x32 tiles, spread across
// threads when big enough.
template <typename T>
void transpose_into(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols,
                    bool accumulate) {
  constexpr int64_t kTile = 32;
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) collapse(2) if (rows * cols > (1 << 15))
  for (int64_t rt = 0; rt < row_tiles; ++rt)
    for (int64_t ct = 0; ct < col_tiles; ++ct) {
      const int64_t r1 = std::min(rows, (rt + 1) * kTile), c1 = std::min(cols, (ct + 1) * kTile);
      for (int64_t c = ct * kTile; c < c1; ++c) {
        T* out = dst + c * ld_dst;
        if (accumulate)
          for (int64_t r = rt * kTile; r < r1; ++r) out[r] += src[r * ld_src + c];
        else
          for (int64_t r = rt * kTile; r < r1; ++r) out[r] = src[r * ld_src + c];
      }
    }
}

template <typename T>
std::vector<T>& scratch_buffer(int which) {
  thread_local std::vector<T> buffers[2];
  return buffers[which];
}

// C = op(A)·op(B) through oneDNN, in the layout choose_rewrite picks. False: oneDNN refused.
template <typename T>
bool run_fast(float* C, const T* A, const T* B, const GemmDims& d, bool accumulate) {
  constexpr bool bf16 = std::is_same_v<T, uint16_t>;
  switch (choose_rewrite(d)) {
    case Rewrite::none:
      return run_onednn(C, A, B, d, accumulate, bf16);
    case Rewrite::transposed_product: {
      // Cᵀ[N,M] = op(B)ᵀ·op(A)ᵀ: B stored [K,N] is op(B)ᵀ stored transposed, A stored [M,K] is
      // op(A)ᵀ stored transposed.
      GemmDims t{d.N, d.M, d.K, true, true, d.ldb, d.lda, d.M};
      auto& ct = scratch_buffer<float>(0);
      ct.resize(size_t(d.N * d.M));
      if (!run_onednn(ct.data(), B, A, t, false, bf16)) return run_onednn(C, A, B, d, accumulate, bf16);
      transpose_into(C, d.ldc, ct.data(), d.M, d.N, d.M, accumulate);
      return true;
    }
    case Rewrite::transpose_b: {
      auto& bt = scratch_buffer<T>(1);
      bt.resize(size_t(d.N * d.K));
      transpose_into(bt.data(), d.K, B, d.ldb, d.K, d.N, false);
      GemmDims t = d;
      t.trans_b = true, t.ldb = d.K;
      return run_onednn(C, A, bt.data(), t, accumulate, bf16) || run_onednn(C, A, B, d, accumulate, bf16);
    }
  }
  return false;
}

// Below this many multiply-adds a oneDNN call costs more than it saves.
constexpr int64_t kTinyProduct = 8 * 1024;

// LLMTUNE_PROFILE=shapes: bills the product's wall time to its shape (see core/profile.h).
struct ShapeTimer {
  const GemmDims& d;
  bool accumulate;
  const char* dtype;
  double start = profile_shapes_enabled() ? now_seconds() : -1;
  ~ShapeTimer() {
    if (start < 0) return;
    char name[96];
    std::snprintf(name, sizeof name, "%s %lldx%lldx%lld%s%s%s", dtype, (long long)d.M, (long long)d.N,
                  (long long)d.K, d.trans_a ? " At" : "", d.trans_b ? " Bt" : "", accumulate ? " +=" : "");
    profile_add_shape(name, now_seconds() - start, 2.0 * double(d.M) * double(d.N) * double(d.K));
  }
};

// matmul_f32 / matmul_bf16: oneDNN (in the layout choose_rewrite picks), the loop path for tiny
// products or when oneDNN refuses.
template <typename T>
void matmul_any(float* C, const T* A, const T* B, const GemmDims& dims, bool accumulate) {
  constexpr bool bf16 = std::is_same_v<T, uint16_t>;
  ProfileScope profile_scope(bf16 ? "matmul bf16" : "matmul f32");
  const GemmDims d = normalized(dims);
  ShapeTimer shape_timer{d, accumulate, bf16 ? "bf16" : "f32"};
  if (handle_empty(C, d, accumulate)) return;
  if (d.M * d.N * d.K <= kTinyProduct || !run_fast(C, A, B, d, accumulate)) loop_matmul(C, A, B, d, accumulate);
}

}  // namespace

void matmul_f32(float* C, const float* A, const float* B, const GemmDims& dims, bool accumulate) {
  matmul_any(C, A, B, dims, accumulate);
}

void matmul_bf16(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& dims, bool accumulate) {
  matmul_any(C, A, B, dims, accumulate);
}

void matmul_bf16_const_b(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& dims,
                         bool accumulate) {
  ProfileScope profile_scope("matmul bf16");
  const GemmDims d = normalized(dims);
  if (handle_empty(C, d, accumulate)) return;
  if (d.M * d.N * d.K <= kTinyProduct) return loop_matmul(C, A, B, d, accumulate);
  if (!prepack_enabled() || !run_onednn_packed(C, A, B, d, accumulate)) matmul_bf16(C, A, B, dims, accumulate);
}

bool matmul_bf16_uses_amx() {
  // oneDNN's ISA values are bit masks in which a bigger ISA contains the bits of the smaller ones.
  const unsigned isa = unsigned(dnnl::get_effective_cpu_isa()), amx = unsigned(dnnl::cpu_isa::avx512_core_amx);
  return (isa & amx) == amx;
}

void matmul_set_layout_rewrite(bool on) { layout_rewrite_on = on; }

void matmul_forget_packed_weights() {
  std::lock_guard<std::mutex> lock(pack_mutex);
  packed_weights.clear();
}

namespace reference {

namespace {
template <typename T>
void ref_matmul(float* C, const T* A, const T* B, const GemmDims& dims, bool accumulate) {
  const GemmDims d = normalized(dims);
  for (int64_t m = 0; m < d.M; ++m)
    for (int64_t n = 0; n < d.N; ++n) {
      double sum = 0.0;
      for (int64_t k = 0; k < d.K; ++k) {
        const double a = load(d.trans_a ? A + k * d.lda + m : A + m * d.lda + k);
        const double b = load(d.trans_b ? B + n * d.ldb + k : B + k * d.ldb + n);
        sum += a * b;
      }
      float& c = C[m * d.ldc + n];
      c = accumulate ? float(double(c) + sum) : float(sum);
    }
}
}  // namespace

void matmul_f32(float* C, const float* A, const float* B, const GemmDims& d, bool accumulate) {
  ref_matmul(C, A, B, d, accumulate);
}

void matmul_bf16(float* C, const uint16_t* A, const uint16_t* B, const GemmDims& d,
                 bool accumulate) {
  ref_matmul(C, A, B, d, accumulate);
}

}  // namespace reference

}  // namespace llmtune
