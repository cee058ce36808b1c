// decode_pool: runs a job of n independent chunks on the calling thread plus up to num_threads() - 1
// persistent helper threads that take part only while they are running. Chunks are claimed one at a
// time from a shared counter and the caller waits only for chunks a helper has already claimed, never
// for a helper to show up. A decode step issues ~100 small parallel products per token; on a busy
// (oversubscribed) machine an OpenMP fork/join waits for a descheduled thread at every one of them,
// which measured 6x slower than one thread (bench/NOTES.md, Generation). Here a descheduled helper
// costs only its share of the work: never slower than one thread, up to n_threads times faster.
#pragma once
#include <cstdint>
#include <type_traits>
#include <utility>

namespace llmtune {

using ChunkFn = void (*)(void* ctx, int64_t chunk);

// Calls fn(ctx, c) once for every c in [0, n_chunks), spread over the caller and the helpers; returns
// when all are done. Runs everything on the caller when one thread is configured, when called from
// inside a chunk or an OpenMP parallel region, or while another thread's job is running.
// fn must not throw.
void run_chunks(int64_t n_chunks, ChunkFn fn, void* ctx);

// Threads run_chunks spreads a job over (the caller included).
int pool_threads();

// Within its scope the calling thread's OpenMP regions run as teams of one (the elementwise kernels of
// a decode step fork unconditionally; on a busy machine each fork/join can cost milliseconds), while
// run_chunks keeps the thread count configured before. Scopes nest.
struct SerialOmpScope {
  SerialOmpScope();
  ~SerialOmpScope();
  SerialOmpScope(const SerialOmpScope&) = delete;
  SerialOmpScope& operator=(const SerialOmpScope&) = delete;
  int omp_threads_before, pool_threads_before;
};

template <typename F>
void run_chunks(int64_t n_chunks, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_chunks(n_chunks, [](void* c, int64_t i) { (*static_cast<Fn*>(c))(i); }, const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace llmtune
