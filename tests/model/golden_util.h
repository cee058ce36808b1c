// Helpers shared by the model tests: reading PyTorch golden files (tests/data/golden/<case>/) and one
// forward/backward on fixed random tokens.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/decoder.h"
#include "model/model.h"

namespace llmtune::testing {

inline std::string golden_dir(const std::string& name) { return std::string(LLMTUNE_TEST_DATA) + "/golden/" + name; }

// ||a − b||∞ / ||b||∞ (relative to the reference's largest magnitude).
inline double rel_err(const float* a, const float* b, int64_t n) {
  double diff = 0, ref = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return diff / ref;
}

inline std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name) {
  Tensor t = f.get(name);
  EXPECT_EQ(t.dtype, DType::I32) << name;
  const int32_t* p = t.as<int32_t>();
  return std::vector<int32_t>(p, p + t.numel());
}

// One forward + LM loss (gradient scaled by grad_scale) + backward of `m` in `ws` on fixed random ids
// [B, T] (Rng seed 3; each row predicts its own next token). Gradients ACCUMULATE into the trainable
// params. Returns the loss.
inline LossSum forward_backward_on_random_ids(Model& m, Workspace& ws, int64_t B, int64_t T, float grad_scale) {
  Rng ids_rng(3);
  std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T), -100);
  for (auto& v : ids) v = int32_t(ids_rng.below(uint64_t(m.cfg.vocab_size)));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t + 1 < T; t++) targets[size_t(b * T + t)] = ids[size_t(b * T + t + 1)];
  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  decoder_forward(m, ws, in);
  const LossSum ls = decoder_lm_loss(m, ws, targets.data(), grad_scale, true);
  decoder_backward(m, ws, in);
  return ls;
}

}  // namespace llmtune::testing
