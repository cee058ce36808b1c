// Helpers shared by the train tests: tiny models, synthetic samples, temporary folders, weight copies.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/rng.h"
#include "data/dataset.h"
#include "model/config.h"
#include "model/model.h"

namespace llmtune::testing {

inline std::string train_golden_dir(const std::string& name) {
  return std::string(LLMTUNE_TEST_DATA) + "/golden/" + name;
}

// ||a − b||∞ / ||b||∞ (relative to the reference's largest magnitude).
inline double max_rel_err(const float* a, const float* b, int64_t n) {
  double diff = 0, ref = 1e-30;
  for (int64_t i = 0; i < n; i++) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return diff / ref;
}

// A fresh, empty folder under the system temp dir, removed when the object goes away.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& tag) {
    path = (std::filesystem::temp_directory_path() /
            ("llmtune_train_" + tag + "_" + std::to_string(::getpid())))
               .string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A tiny random GPT-NeoX (V 128, E 64, 2 layers: the golden base config), every param trainable.
inline Model tiny_model(uint64_t seed = 7) {
  Model m = random_model(load_model_config(train_golden_dir("neox_parallel")), seed, 0.05f);
  for (auto& p : m.params) p.trainable = true;
  m.sync_grad_buffers();
  return m;
}

// Samples with random ids in [3, V) of lengths in [min_len, max_len], labels = ids.
inline std::vector<Sample> random_samples(int n, int64_t min_len, int64_t max_len, int64_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<Sample> out;
  for (int i = 0; i < n; i++) {
    const int64_t len = min_len + int64_t(rng.below(uint64_t(max_len - min_len + 1)));
    Sample s;
    for (int64_t t = 0; t < len; t++) s.ids.push_back(int32_t(3 + rng.below(uint64_t(vocab - 3))));
    s.labels = s.ids;
    out.push_back(std::move(s));
  }
  return out;
}

// Copies every parameter value of `src` into `dst` (same names and shapes).
inline void copy_weights(Model& dst, const Model& src) {
  for (const Param& p : src.params) {
    Param* d = dst.find(p.name);
    ASSERT_NE(d, nullptr) << p.name;
    ASSERT_EQ(d->value.shape, p.value.shape) << p.name;
    std::copy_n(p.value.f32(), p.value.numel(), d->value.f32());
  }
}

// Bitwise equality of all parameter values.
inline bool same_weights(const Model& a, const Model& b, std::string* first_diff = nullptr) {
  for (const Param& p : a.params) {
    const Param* q = nullptr;
    for (const Param& c : b.params)
      if (c.name == p.name) q = &c;
    if (!q || q->value.nbytes() != p.value.nbytes() ||
        std::memcmp(q->value.data, p.value.data, p.value.nbytes()) != 0) {
      if (first_diff) *first_diff = p.name;
      return false;
    }
  }
  return true;
}

}  // namespace llmtune::testing
