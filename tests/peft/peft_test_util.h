// Helpers shared by the PEFT tests: running a golden batch through a model (forward, loss,
// backward, logits at real positions), a temporary folder, error capture.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "../model/golden_util.h"
#include "core/error.h"
#include "data/collator.h"
#include "kernels/linear.h"
#include "model/decoder.h"
#include "model/model.h"

namespace llmtune::peft_testing {

using llmtune::testing::golden_dir;
using llmtune::testing::read_i32;
using llmtune::testing::rel_err;

// The batch every golden folder holds (right padding; segments -1 on pads).
struct GoldenBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids, labels, mask, segments;
};

inline GoldenBatch read_batch(const SafetensorsFile& g) {
  GoldenBatch b;
  b.ids = read_i32(g, "input_ids");
  b.labels = read_i32(g, "labels");
  b.mask = read_i32(g, "attention_mask");
  b.segments.resize(b.mask.size());
  for (size_t i = 0; i < b.mask.size(); i++) b.segments[i] = b.mask[i] ? 0 : -1;
  Tensor t = g.get("input_ids");
  b.B = t.shape[0];
  b.T = t.shape[1];
  return b;
}

struct RunResult {
  std::vector<float> logits;  // real (mask = 1) positions only, [n_real, V]
  float loss = 0;
};

// Forward (+ loss; + backward into the trainable params' grads when `backward`), the way
// tests/model/test_model_golden.cpp does it: token-mean loss over shifted labels.
inline RunResult run_batch(Model& m, const GoldenBatch& b, bool backward) {
  DecoderInput in;
  in.B = b.B;
  in.T = b.T;
  in.ids = b.ids.data();
  in.segments = b.segments.data();
  Workspace ws;
  decoder_forward(m, ws, in);
  const int64_t V = m.cfg.vocab_size, E = m.cfg.hidden_size, N = b.B * b.T;
  std::vector<float> all(size_t(N * V));
  linear_forward(all.data(), ws.h_final.f32(), m.lm_head.view(), nullptr, N, E, V);
  RunResult r;
  for (int64_t i = 0; i < N; i++)
    if (b.mask[size_t(i)]) r.logits.insert(r.logits.end(), all.begin() + i * V, all.begin() + (i + 1) * V);
  std::vector<int32_t> targets = shift_labels(b.labels.data(), b.segments.data(), b.B, b.T);
  int64_t count = 0;
  for (int32_t t : targets) count += t != kIgnoreIndex;
  if (backward) m.zero_grads();
  LossSum ls = decoder_lm_loss(m, ws, targets.data(), 1.0f / float(count), backward);
  r.loss = float(ls.sum / double(ls.count));
  if (backward) decoder_backward(m, ws, in);
  return r;
}

// Golden logits at real positions.
inline std::vector<float> golden_logits(const SafetensorsFile& g, const GoldenBatch& b) {
  Tensor ref = g.get_f32("logits");
  const int64_t V = ref.shape[2];
  std::vector<float> out;
  for (int64_t i = 0; i < b.B * b.T; i++)
    if (b.mask[size_t(i)]) out.insert(out.end(), ref.f32() + i * V, ref.f32() + (i + 1) * V);
  return out;
}

// A fresh folder under the system temp dir, unique per test and process, removed afterwards.
struct PeftTempDir {
  std::string path;
  PeftTempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    static int counter = 0;
    std::string name = std::string("llmtune_peft_") + (info ? info->name() : "x") + "_" + std::to_string(::getpid()) +
                       "_" + std::to_string(counter++);
    path = (std::filesystem::temp_directory_path() / name).string();
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~PeftTempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

// The llmtune::Error message `f` throws, or "<no error>".
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace llmtune::peft_testing
