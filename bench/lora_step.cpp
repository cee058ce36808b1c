// One Trainer step (train_step_on_window: forward, fused LM-head loss, backward, clipping, AdamW) of a
// randomly initialised model, timed: the llmtune side of bench/compare. Prints one JSON line.
//   bench_lora_step --config 70m|160m|tinyllama [--full] [--bf16] [--batch B] [--seq T]
//                   [--steps N (timed)] [--warmup N] [--threads N]
// LoRA: r = 16, alpha = 32 on query_key_value (q_proj, v_proj for Llama), AdamW lr 1e-4, clip 1.0.
#include <algorithm>
#include <atomic>
#include <new>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "data/collator.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/model.h"
#include "peft/lora.h"
#include "train/optimizer.h"
#include "train/precision.h"
#include "train/trainer.h"

using namespace llmtune;

// Heap allocations through operator new (std::vector, std::string, make_shared, ...), counted so the
// JSON line can report what a step allocates after warm-up (owned Tensors: aligned_alloc_count()).
namespace {
std::atomic<int64_t> new_calls{0}, new_bytes{0};
}
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // new = malloc and delete = free, as a pair
void* operator new(size_t n) {
  new_calls.fetch_add(1, std::memory_order_relaxed);
  new_bytes.fetch_add(int64_t(n), std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace {

nlohmann::json config_json(const std::string& name) {
  if (name == "tinyllama")
    return nlohmann::json::parse(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
      "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
      "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": false, "bos_token_id": 1,
      "eos_token_id": 2})");
  nlohmann::json j = nlohmann::json::parse(R"({"architectures": ["GPTNeoXForCausalLM"],
      "model_type": "gpt_neox", "vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25,
      "rotary_emb_base": 10000, "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
      "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0})");
  const bool small = name == "70m";
  if (!small && name != "160m") fail("--config must be 70m, 160m or tinyllama, got '", name, "'");
  j["hidden_size"] = small ? 512 : 768;
  j["num_hidden_layers"] = small ? 6 : 12;
  j["num_attention_heads"] = small ? 8 : 12;
  j["intermediate_size"] = small ? 2048 : 3072;
  return j;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "70m";
  bool full = false, bf16 = false;
  int64_t B = 4, T = 256;
  int steps = 5, warmup = 2, threads = 0;
  for (int i = 1; i < argc; i++) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", k.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (k == "--config") config = next();
    else if (k == "--full") full = true;
    else if (k == "--bf16") bf16 = true;
    else if (k == "--batch") B = std::atoll(next().c_str());
    else if (k == "--seq") T = std::atoll(next().c_str());
    else if (k == "--steps") steps = std::atoi(next().c_str());
    else if (k == "--warmup") warmup = std::atoi(next().c_str());
    else if (k == "--threads") threads = std::atoi(next().c_str());
    else { std::fprintf(stderr, "unknown option %s (see the top of bench/lora_step.cpp)\n", k.c_str()); return 2; }
  }
  try {
    set_num_threads(threads);
    const ModelConfig cfg = parse_model_config(config_json(config), config);
    Model m = random_model(cfg, 1234);
    if (full) {
      for (auto& p : m.params) p.trainable = true;
      m.sync_grad_buffers();
    } else {
      LoraConfig lc;
      lc.r = 16;
      lc.lora_alpha = 32;
      lc.target_modules = ModuleSelector::list(cfg.model_type == "llama" ? std::vector<std::string>{"q_proj", "v_proj"}
                                                                          : std::vector<std::string>{"query_key_value"});
      Rng init(42);
      apply_lora(m, lc, init);
    }
    if (bf16) store_frozen_weights_bf16(m);

    Rng rng(7);
    Batch batch;
    batch.B = B, batch.T = T;
    const size_t N = size_t(B * T);
    batch.input_ids.resize(N), batch.labels.resize(N), batch.positions.resize(N);
    batch.segment_ids.assign(N, 0), batch.attention_mask.assign(N, 1);
    for (size_t i = 0; i < N; i++) {
      batch.input_ids[i] = int32_t(rng.below(uint64_t(cfg.vocab_size)));
      batch.labels[i] = batch.input_ids[i];
      batch.positions[i] = int32_t(i % size_t(T));
    }
    batch.num_label_tokens = int64_t(N);
    batch.num_predicted_tokens = int64_t(N) - B;
    batch.num_samples = B;

    OptimizerConfig oc;
    Optimizer opt = make_optimizer(m, oc);
    Workspace ws;
    std::vector<double> times;
    double loss = 0;
    int64_t news_before = 0, new_bytes_before = 0, tensors_before = 0;
    for (int s = 0; s < warmup + steps; s++) {
      if (s == warmup) {
        profile_reset();  // LLMTUNE_PROFILE=1: breakdown of the timed steps only
        news_before = new_calls, new_bytes_before = new_bytes, tensors_before = aligned_alloc_count();
      }
      const double t0 = now_seconds();
      StepResult r = [&] {
        ProfileScope scope("trainer rest (AdamW, clip, zero)");
        return train_step_on_window(m, ws, std::span<const Batch>(&batch, 1), opt, 1e-4, 1.0, nullptr);
      }();
      const double dt = now_seconds() - t0;
      loss = r.window.loss();
      if (s >= warmup) times.push_back(dt);
    }
    int64_t trainable = 0;
    for (auto& p : m.params) if (p.trainable) trainable += p.value.numel();
    nlohmann::json out = {{"impl", "llmtune"}, {"config", config}, {"mode", full ? "full" : "lora"},
                          {"precision", bf16 ? "bf16" : "fp32"}, {"batch", B}, {"seq", T},
                          {"threads", num_threads()}, {"step_seconds", times},
                          {"tokens_per_second", double(N) / median(times)},
                          {"peak_rss_bytes", peak_rss_bytes()}, {"trainable_params", trainable},
                          {"final_loss", loss},
                          {"allocations_per_step", {{"new_calls", double(new_calls - news_before) / steps},
                                                    {"new_bytes", double(new_bytes - new_bytes_before) / steps},
                                                    {"tensors", double(aligned_alloc_count() - tensors_before) / steps}}}};
    if (profile_enabled()) {
      double total = 0;
      for (double t : times) total += t;
      std::fprintf(stderr, "profile over %d timed steps (%.3f s), exclusive time per scope:\n", steps, total);
      profile_report(stderr, total);
    }
    std::printf("%s\n", out.dump().c_str());
  } catch (const llmtune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
