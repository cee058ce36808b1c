// Threading: one OpenMP pool shared by our kernels and oneDNN (the Debian build of oneDNN
// uses OpenMP too), sized to the physical cores so nothing oversubscribes.
#pragma once

namespace llmtune {

// Sets the number of threads used by every kernel (<= 0: all available cores).
void set_num_threads(int n);
int num_threads();

}  // namespace llmtune
