// LLMTUNE_PROFILE phase timers (see profile.h).
#include "core/profile.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "core/sysinfo.h"

namespace llmtune {

namespace {
struct Bucket {
  double seconds = 0;
  int64_t calls = 0;
};
std::mutex profile_mutex;
std::map<std::string, Bucket>& buckets() {
  static std::map<std::string, Bucket> b;
  return b;
}
struct ShapeBucket {
  double seconds = 0, flops = 0;
  int64_t calls = 0;
};
std::map<std::string, ShapeBucket>& shape_buckets() {
  static std::map<std::string, ShapeBucket> b;
  return b;
}
thread_local ProfileScope* current_scope = nullptr;
}  // namespace

bool profile_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LLMTUNE_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

bool profile_shapes_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LLMTUNE_PROFILE");
    return v && std::strcmp(v, "shapes") == 0;
  }();
  return on;
}

void profile_add_shape(const std::string& shape, double seconds, double flops) {
  std::lock_guard<std::mutex> lock(profile_mutex);
  ShapeBucket& b = shape_buckets()[shape];
  b.seconds += seconds;
  b.flops += flops;
  b.calls++;
}

ProfileScope::ProfileScope(const char* n) : name(n) {
  if (!profile_enabled()) return;
  on = true;
  parent = current_scope;
  current_scope = this;
  start = now_seconds();
}

ProfileScope::~ProfileScope() {
  if (!on) return;
  const double total = now_seconds() - start;
  current_scope = parent;
  if (parent) parent->child += total;
  std::lock_guard<std::mutex> lock(profile_mutex);
  Bucket& b = buckets()[name];
  b.seconds += total - child;
  b.calls++;
}

void profile_reset() {
  std::lock_guard<std::mutex> lock(profile_mutex);
  buckets().clear();
  shape_buckets().clear();
}

void profile_report(std::FILE* out, double total_seconds) {
  std::vector<std::pair<std::string, Bucket>> rows;
  {
    std::lock_guard<std::mutex> lock(profile_mutex);
    rows.assign(buckets().begin(), buckets().end());
    buckets().clear();
  }
  std::vector<std::pair<std::string, ShapeBucket>> shapes;
  {
    std::lock_guard<std::mutex> lock(profile_mutex);
    shapes.assign(shape_buckets().begin(), shape_buckets().end());
    shape_buckets().clear();
  }
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
  double sum = 0;
  for (auto& r : rows) sum += r.second.seconds;
  const double denom = total_seconds > 0 ? total_seconds : sum;
  for (auto& r : rows)
    std::fprintf(out, "  %-28s %8.3f s %5.1f%% %7lld calls\n", r.first.c_str(), r.second.seconds,
                 denom > 0 ? 100 * r.second.seconds / denom : 0.0, (long long)r.second.calls);
  if (total_seconds > 0)
    std::fprintf(out, "  %-28s %8.3f s %5.1f%%\n", "(outside profiled scopes)", total_seconds - sum,
                 100 * (total_seconds - sum) / total_seconds);
  if (shapes.empty()) return;
  std::sort(shapes.begin(), shapes.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
  std::fprintf(out, "  matrix products by shape (M x N x K, transposes, +=):\n");
  for (auto& [shape, b] : shapes)
    std::fprintf(out, "    %-40s %8.3f s %5.1f%% %7lld calls %7.1f GFLOP/s\n", shape.c_str(), b.seconds,
                 denom > 0 ? 100 * b.seconds / denom : 0.0, (long long)b.calls,
                 b.seconds > 0 ? b.flops / b.seconds / 1e9 : 0.0);
}

}  // namespace llmtune
