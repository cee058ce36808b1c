// Helpers shared by the model tests that read PyTorch golden files (tests/data/golden/<case>/).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

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

}  // namespace llmtune::testing
