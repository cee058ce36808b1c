// Helpers for the quantization tests: a minimal safetensors reader for tests/data/quant (the
// kernels test binary does not link io/) and bit-level comparisons.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llmtune::test {

struct StTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  template <typename T>
  std::vector<T> as() const {
    std::vector<T> v(bytes.size() / sizeof(T));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
    return v;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

struct StFile {
  std::map<std::string, StTensor> tensors;
  std::map<std::string, std::string> metadata;
  const StTensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error("golden file lacks tensor " + name);
    return it->second;
  }
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  int64_t meta_int(const std::string& key) const { return std::stoll(metadata.at(key)); }
};

inline StFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f)
    throw std::runtime_error("cannot open " + path +
                             " (run /usr/bin/python3 tools/bnb_reference.py)");
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(header.data(), std::streamsize(n));
  std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto j = nlohmann::json::parse(header);
  StFile out;
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      for (const auto& [k, s] : v.items()) out.metadata[k] = s.get<std::string>();
      continue;
    }
    StTensor t;
    t.dtype = v.at("dtype").get<std::string>();
    t.shape = v.at("shape").get<std::vector<int64_t>>();
    const auto off = v.at("data_offsets").get<std::vector<uint64_t>>();
    t.bytes.assign(data.begin() + long(off[0]), data.begin() + long(off[1]));
    out.tensors[name] = std::move(t);
  }
  return out;
}

inline std::string quant_data(const std::string& name) {
  return std::string(LLMTUNE_TEST_DATA) + "/quant/" + name;
}

inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Number of positions whose float32 bit patterns differ (-0 vs +0 and NaN payloads count as
// different).
inline int64_t count_bit_mismatches(const float* a, const float* b, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += bits(a[i]) != bits(b[i]);
  return bad;
}
template <typename T>
int64_t count_mismatches(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return -1;
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) bad += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
  return bad;
}

}  // namespace llmtune::test
