// Opt-in phase timers: with LLMTUNE_PROFILE=1 in the environment, ProfileScope("name") adds the
// wall time of its scope to a named bucket, EXCLUSIVE of nested scopes (a linear's inner matmul is
// billed to "matmul", not twice). profile_report() prints the buckets. Off: one branch per scope.
#pragma once
#include <cstdio>
#include <string>

namespace llmtune {

bool profile_enabled();  // LLMTUNE_PROFILE set and not "0" (read once)

struct ProfileScope {
  explicit ProfileScope(const char* name);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;
  const char* name;
  double start = 0, child = 0;
  ProfileScope* parent = nullptr;
  bool on = false;
};

// Prints "bucket  seconds  %-of-total  calls" lines to `out`, sorted by time; `total_seconds` > 0
// adds an "(outside profiled kernels)" line for the rest. Then clears the buckets.
void profile_report(std::FILE* out, double total_seconds);
// LLMTUNE_PROFILE=shapes also times every matrix product by shape: `shape` names it, `flops` is its
// multiply-add count × 2. profile_report then adds a table of time and GFLOP/s per shape.
bool profile_shapes_enabled();
void profile_add_shape(const std::string& shape, double seconds, double flops);
void profile_reset();

}  // namespace llmtune
