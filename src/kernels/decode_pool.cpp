// decode_pool: one job at a time, published through a single 64-bit ticket (job id | chunk count |
// next chunk). Claiming a chunk is one fetch_add on the ticket, so a claim is always tied to the job it
// belongs to; the job's function and context are written before the ticket is published (release) and
// not rewritten until every chunk of the job is done, so whoever claims a chunk reads the right job.
// Helpers spin briefly after each chunk run (the next product of a decode step follows within
// microseconds), then sleep on the ticket (futex).
#include "kernels/decode_pool.h"

#include <omp.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "core/error.h"
#include "core/threads.h"

namespace llmtune {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

// Ticket layout: id (24 bits) | n (20 bits) | next (20 bits).
constexpr int kNextBits = 20, kCountBits = 20;
constexpr uint64_t kNextMask = (uint64_t(1) << kNextBits) - 1, kCountMask = (uint64_t(1) << kCountBits) - 1;
constexpr int64_t kMaxChunks = int64_t(1) << 19;  // headroom: `next` may pass n by one per thread
inline uint32_t ticket_id(uint64_t t) { return uint32_t(t >> (kNextBits + kCountBits)); }
inline int64_t ticket_count(uint64_t t) { return int64_t((t >> kNextBits) & kCountMask); }
inline int64_t ticket_next(uint64_t t) { return int64_t(t & kNextMask); }

// Pause iterations a helper spins waiting for the next job before sleeping (~100 microseconds).
constexpr int kHelperSpins = 2000;
// Pause iterations the caller spins on outstanding chunks before yielding its core to them.
constexpr int kCallerSpins = 2000;

thread_local bool t_inside_job = false;
thread_local int t_pool_threads = 0;  // > 0 inside a SerialOmpScope: the thread count to use

struct Pool {
  alignas(64) std::atomic<uint64_t> ticket{0};
  alignas(64) std::atomic<int64_t> done{0};
  alignas(64) ChunkFn fn = nullptr;
  void* ctx = nullptr;
  std::atomic<int> allowed{0};  // helpers [0, allowed) take part in jobs
  std::mutex submit;            // one job at a time
  std::vector<std::thread> helpers;

  void run_claimed(uint64_t t) {
    fn(ctx, ticket_next(t));
    done.fetch_add(1, std::memory_order_release);
  }

  void helper_loop(int index) {
    t_inside_job = true;    // a chunk that calls run_chunks runs it inline
    omp_set_num_threads(1);  // and OpenMP kernels inside a chunk stay on this thread
    uint32_t seen = ticket_id(ticket.load(std::memory_order_acquire));
    for (;;) {
      uint64_t t = ticket.load(std::memory_order_acquire);
      for (int spin = 0; ticket_id(t) == seen && spin < kHelperSpins; spin++) {
        cpu_relax();
        t = ticket.load(std::memory_order_acquire);
      }
      while (ticket_id(t) == seen) {
        ticket.wait(t, std::memory_order_acquire);
        t = ticket.load(std::memory_order_acquire);
      }
      seen = ticket_id(t);
      if (index >= allowed.load(std::memory_order_relaxed)) continue;
      for (;;) {
        const uint64_t c = ticket.fetch_add(1, std::memory_order_acq_rel);
        seen = ticket_id(c);  // a newer job may have been published meanwhile: this claim is in it
        if (ticket_next(c) >= ticket_count(c)) break;
        run_claimed(c);
      }
    }
  }

  void ensure_helpers(int n) {
    while (int(helpers.size()) < n) {
      const int index = int(helpers.size());
      helpers.emplace_back([this, index] { helper_loop(index); });
      helpers.back().detach();
    }
  }
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: detached helpers may still reference it at exit
  return *p;
}

void run_inline(int64_t n, ChunkFn fn, void* ctx) {
  for (int64_t c = 0; c < n; c++) fn(ctx, c);
}

}  // namespace

SerialOmpScope::SerialOmpScope()
    : omp_threads_before(omp_get_max_threads()), pool_threads_before(t_pool_threads) {
  if (t_pool_threads == 0) t_pool_threads = omp_threads_before;
  omp_set_num_threads(1);
}

SerialOmpScope::~SerialOmpScope() {
  omp_set_num_threads(omp_threads_before);
  t_pool_threads = pool_threads_before;
}

int pool_threads() { return t_pool_threads > 0 ? t_pool_threads : num_threads(); }

void run_chunks(int64_t n_chunks, ChunkFn fn, void* ctx) {
  if (n_chunks <= 0) return;
  const int helpers = pool_threads() - 1;
  if (n_chunks == 1 || helpers <= 0 || t_inside_job || omp_in_parallel()) return run_inline(n_chunks, fn, ctx);
  LLMTUNE_CHECK(n_chunks <= kMaxChunks, "run_chunks: ", n_chunks, " chunks (at most ", kMaxChunks, ")");
  Pool& p = pool();
  std::unique_lock<std::mutex> lock(p.submit, std::try_to_lock);
  if (!lock.owns_lock()) return run_inline(n_chunks, fn, ctx);  // another thread's job is running
  p.ensure_helpers(helpers);
  p.allowed.store(helpers, std::memory_order_relaxed);
  p.fn = fn;
  p.ctx = ctx;
  p.done.store(0, std::memory_order_relaxed);
  const uint64_t id = (uint64_t(ticket_id(p.ticket.load(std::memory_order_relaxed))) + 1) & 0xffffff;
  p.ticket.store((id << (kNextBits + kCountBits)) | (uint64_t(n_chunks) << kNextBits), std::memory_order_release);
  p.ticket.notify_all();
  t_inside_job = true;
  for (;;) {
    const uint64_t c = p.ticket.fetch_add(1, std::memory_order_acq_rel);
    if (ticket_next(c) >= n_chunks) break;
    p.run_claimed(c);
  }
  t_inside_job = false;
  // Only chunks a helper has claimed are outstanding: wait for those.
  for (int spin = 0; p.done.load(std::memory_order_acquire) < n_chunks; spin++) {
    if (spin < kCallerSpins) cpu_relax();
    else std::this_thread::yield();
  }
}

}  // namespace llmtune
