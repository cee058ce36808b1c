// Process memory and timing facts used by progress lines, reports and the memory preflight.
#pragma once
#include <cstdint>

namespace llmtune {

int64_t peak_rss_bytes();       // VmHWM of this process
int64_t current_rss_bytes();    // VmRSS of this process
int64_t available_ram_bytes();  // MemAvailable from /proc/meminfo
double now_seconds();           // monotonic clock

}  // namespace llmtune
