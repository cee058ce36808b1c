// Reads /proc for memory figures.
#include "core/sysinfo.h"

#include <chrono>
#include <cstdio>
#include <cstring>

namespace llmtune {

namespace {
int64_t read_kb_field(const char* path, const char* key) {
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  char line[256];
  int64_t kb = 0;
  size_t klen = std::strlen(key);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, key, klen) == 0) {
      long long v = 0;
      std::sscanf(line + klen, "%lld", &v);
      kb = v;
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}
}  // namespace

int64_t peak_rss_bytes() { return read_kb_field("/proc/self/status", "VmHWM:"); }
int64_t current_rss_bytes() { return read_kb_field("/proc/self/status", "VmRSS:"); }
int64_t available_ram_bytes() { return read_kb_field("/proc/meminfo", "MemAvailable:"); }
double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace llmtune
