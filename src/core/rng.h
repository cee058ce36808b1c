// Deterministic, serialisable RNG (xoshiro256**), so that training and resume are bit-exact.
// We cannot reproduce PyTorch's streams (hf-semantics §4.14); we are deterministic under our own.
#pragma once
#include <array>
#include <cstdint>

namespace llmtune {

struct Rng {
  std::array<uint64_t, 4> s{};

  explicit Rng(uint64_t seed = 42) { reseed(seed); }
  void reseed(uint64_t seed);
  uint64_t next_u64();
  // Uniform in [0, 1) with 24 random bits (exactly representable in f32).
  float uniform();
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n);
  // Standard normal (Box–Muller, one value per call).
  float normal();
};

}  // namespace llmtune
