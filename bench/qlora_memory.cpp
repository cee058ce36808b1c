// Peak RSS and training tokens/s of LoRA vs QLoRA-NF4 (double quant) on a TinyLlama-1.1B-shaped random
// model (hidden 2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632, vocab 32000), batch 1,
// seq 512, gradient checkpointing on, LoRA r 16 on all linears. Each mode runs in its own forked
// process so that its peak RSS (VmHWM) is its own. The QLoRA model is quantized layer by layer as it
// is created (random_model_quantized): the 4.4 GB f32 model never exists.
// --shape llama2-7b uses the Llama-2-7B shape (hidden 4096, 32 layers, 32 heads, intermediate 11008) for the
// "one training step under 8 GiB" check. Each result also prints the memory preflight's estimate.
// Usage: bench_qlora_memory [--shape tinyllama|llama2-7b] [--mode lora|qlora|both] [--layers N] [--seq T]
//                           [--steps S] [--bf16]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/sysinfo.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/memory_estimate.h"
#include "model/model.h"
#include "model/quantize_model.h"
#include "peft/lora.h"

using namespace llmtune;

namespace {

struct Args {
  std::string mode = "both";
  std::string shape = "tinyllama";
  int64_t layers = -1, seq = 512, steps = 2;  // layers -1: the shape's own
  bool bf16 = false;
};

ModelConfig bench_config(const std::string& shape, int64_t layers) {
  if (shape == "llama2-7b") {
    nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
    "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2})");
    j["num_hidden_layers"] = layers < 0 ? 32 : layers;
    return parse_model_config(j, "llama-2-7b-shaped/config.json");
  }
  if (shape != "tinyllama") {
    std::fprintf(stderr, "--shape must be tinyllama or llama2-7b\n");
    std::exit(2);
  }
  if (layers < 0) layers = 22;
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632, "vocab_size": 32000,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu", "rope_theta": 10000.0,
    "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2})");
  j["num_hidden_layers"] = layers;
  return parse_model_config(j, "tinyllama-1.1b-shaped/config.json");
}

int run_mode(const Args& a, bool qlora) {
  const double t0 = now_seconds();
  ModelConfig cfg = bench_config(a.shape, a.layers);
  QuantizeOptions q;
  q.load_in_4bit = true;
  q.bnb_4bit_quant_type = Quant4Type::NF4;
  q.bnb_4bit_use_double_quant = true;
  q.compute_bf16 = a.bf16;
  Model m = qlora ? random_model_quantized(cfg, 1, 0.02f, q) : random_model(cfg, 1, 0.02f);
  if (!qlora) {
    for (auto& p : m.params) p.trainable = false;
  }
  LoraConfig c;
  c.r = 16;
  c.lora_alpha = 32;
  c.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(1);
  apply_lora(m, c, rng);
  const double t_build = now_seconds() - t0;
  const int64_t rss_model = current_rss_bytes();

  const int64_t B = 1, T = a.seq;
  std::vector<int32_t> ids(size_t(B * T)), targets(size_t(B * T), -100);
  Rng ids_rng(2);
  for (auto& v : ids) v = int32_t(ids_rng.below(uint64_t(cfg.vocab_size)));
  for (int64_t t = 0; t + 1 < T; t++) targets[size_t(t)] = ids[size_t(t + 1)];
  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  Workspace ws;
  ws.gradient_checkpointing = true;
  std::vector<double> step_s;
  double loss = 0;
  for (int64_t s = 0; s < a.steps; s++) {
    const double ts = now_seconds();
    m.zero_grads();
    decoder_forward(m, ws, in);
    LossSum ls = decoder_lm_loss(m, ws, targets.data(), 1.f / float(T - 1), true);
    decoder_backward(m, ws, in);
    loss = ls.sum / double(T - 1);
    step_s.push_back(now_seconds() - ts);
  }
  // The first step includes first-touch page faults; report the best.
  double best = step_s.empty() ? 0 : *std::min_element(step_s.begin(), step_s.end());
  nlohmann::json out;
  TrainingMemoryOptions mo;
  mo.B = B;
  mo.T = T;
  mo.gradient_checkpointing = true;
  mo.load_in_4bit = qlora;
  mo.double_quant = qlora;
  int64_t trainable = 0;
  for (const auto& p : m.params)
    if (p.trainable) trainable += p.value.numel();
  const MemoryEstimate est = estimate_training(cfg, trainable, trainable, mo);
  out["shape"] = a.shape;
  out["mode"] = qlora ? "qlora-nf4-dq" : "lora-f32";
  out["preflight_estimate"] = format_bytes(est.total());
  out["layers"] = cfg.num_layers;
  out["seq"] = T;
  out["compute"] = a.bf16 ? "bfloat16" : "float32";
  out["build_s"] = t_build;
  out["rss_after_build"] = format_bytes(rss_model);
  out["peak_rss"] = format_bytes(peak_rss_bytes());
  out["peak_rss_bytes"] = peak_rss_bytes();
  out["f32_param_bytes"] = format_bytes(f32_param_bytes(m));
  out["quantized_weight_bytes"] = format_bytes(quantized_weight_bytes(m));
  out["step_s"] = step_s;
  out["tokens_per_s"] = best > 0 ? double(B * T) / best : 0.0;
  out["loss"] = loss;
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--mode") a.mode = next();
    else if (k == "--shape") a.shape = next();
    else if (k == "--layers") a.layers = std::atoll(next().c_str());
    else if (k == "--seq") a.seq = std::atoll(next().c_str());
    else if (k == "--steps") a.steps = std::atoll(next().c_str());
    else if (k == "--bf16") a.bf16 = true;
    else {
      std::fprintf(stderr, "usage: %s [--shape tinyllama|llama2-7b] [--mode lora|qlora|both] [--layers N] [--seq T] [--steps S] [--bf16]\n", argv[0]);
      return 2;
    }
  }
  try {
    if (a.mode == "lora") return run_mode(a, false);
    if (a.mode == "qlora") return run_mode(a, true);
    int rc = 0;
    for (bool qlora : {true, false}) {  // each in its own process: separate peak RSS
      pid_t pid = fork();
      if (pid == 0) std::_Exit(run_mode(a, qlora));
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
    }
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
