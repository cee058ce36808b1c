// Peak RSS of PPO vs plain LoRA training of the same random Llama-shaped model (default hidden 512, 8 layers,
// vocab 32000, untied: ~58M params, ~234 MB of f32 weights), LoRA r 16 on all linears, batch 8 of 16 prompt +
// 16 response tokens. Modes, each in its own forked process so each peak RSS (VmHWM) is its own:
//   lora        plain causal-LM LoRA steps (forward, loss, backward, AdamW)
//   ppo         LoRA PPO, the reference = the same weights with adapters off (one copy of the base weights)
//   ppo-refcopy LoRA PPO with a separate frozen reference model (what freeze/full fine-tuning needs): shows
//               what a second copy of the weights costs, i.e. that the measurement can see one.
// Usage: bench_ppo_memory [--mode lora|ppo|ppo-refcopy|all] [--hidden E] [--layers N] [--steps S]
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/memory_estimate.h"
#include "model/model.h"
#include "model/quantize_model.h"
#include "peft/lora.h"
#include "rl/ppo_trainer.h"
#include "train/optimizer.h"

using namespace llmtune;

namespace {

struct Args {
  std::string mode = "all";
  int64_t hidden = 512, layers = 8, steps = 2;
};

constexpr int64_t kBatch = 8, kPrompt = 16, kResponse = 16;

ModelConfig bench_config(const Args& a) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_attention_heads": 8,
    "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 1,
    "eos_token_id": 2})");
  j["hidden_size"] = a.hidden;
  j["intermediate_size"] = a.hidden * 11 / 4;
  j["num_hidden_layers"] = a.layers;
  return parse_model_config(j, "bench-llama/config.json");
}

LoraConfig lora_config() {
  LoraConfig c;
  c.r = 16;
  c.lora_alpha = 32;
  c.target_modules = ModuleSelector::pattern("all-linear");
  return c;
}

int run_mode(const Args& a, const std::string& mode, int report_fd) {
  set_num_threads(1);
  const double t0 = now_seconds();
  const ModelConfig cfg = bench_config(a);
  Model m = random_model(cfg, 1, 0.02f);
  Rng rng(1);
  apply_lora(m, lora_config(), rng);
  const int64_t rss_model = current_rss_bytes();
  nlohmann::json out;
  out["mode"] = mode;
  out["f32_param_bytes"] = format_bytes(f32_param_bytes(m));
  out["rss_after_build"] = format_bytes(rss_model);

  if (mode == "lora") {
    const int64_t T = kPrompt + kResponse;
    std::vector<int32_t> ids(size_t(kBatch * T)), targets(size_t(kBatch * T), -100);
    Rng ids_rng(2);
    for (auto& v : ids) v = int32_t(ids_rng.below(uint64_t(cfg.vocab_size)));
    for (int64_t b = 0; b < kBatch; b++)
      for (int64_t t = 0; t + 1 < T; t++) targets[size_t(b * T + t)] = ids[size_t(b * T + t + 1)];
    DecoderInput in;
    in.B = kBatch;
    in.T = T;
    in.ids = ids.data();
    Workspace ws;
    Optimizer opt = make_optimizer(m, OptimizerConfig{});
    for (int64_t s = 0; s < a.steps; s++) {
      m.zero_grads();
      decoder_forward(m, ws, in);
      LossSum ls = decoder_lm_loss(m, ws, targets.data(), 1.f / float(kBatch * (T - 1)), true);
      decoder_backward(m, ws, in);
      opt.step(1e-4);
      out["loss"] = ls.sum / double(kBatch * (T - 1));
    }
  } else {
    std::unique_ptr<Model> ref;
    if (mode == "ppo-refcopy") {
      ref = std::make_unique<Model>(random_model(cfg, 1, 0.02f));  // a frozen copy of the same weights
      for (auto& p : ref->params) p.trainable = false;
      ref->sync_grad_buffers();
    }
    std::vector<rl::PromptRow> prompts(kBatch);
    Rng ids_rng(2);
    for (auto& p : prompts)
      for (int64_t t = 0; t < kPrompt; t++) p.ids.push_back(int32_t(3 + ids_rng.below(uint64_t(cfg.vocab_size - 3))));
    rl::ValueHead vh = rl::make_value_head(cfg.hidden_size, 0.02f, 3);
    rl::PpoArgs pa;
    pa.per_device_train_batch_size = kBatch;
    pa.response_length = kResponse;
    pa.temperature = 1.0f;
    pa.max_steps = a.steps;
    pa.num_ppo_epochs = 1;
    pa.learning_rate = 1e-4;
    rl::PpoHooks h;
    h.decode = [](const std::vector<int32_t>& ids) {  // digits of the ids: a reward rule has text to look at
      std::string s;
      for (int32_t id : ids) s += char('0' + id % 10);
      return s;
    };
    rl::PpoTrainResult r = rl::ppo_train(m, ref.get(), vh, prompts, {rl::parse_reward_spec("regex:7")}, pa, h);
    out["reward_mean_last"] = r.reward_mean.back();
  }
  const int64_t peak = peak_rss_bytes();
  out["peak_rss"] = format_bytes(peak);
  out["peak_rss_bytes"] = peak;
  out["seconds"] = now_seconds() - t0;
  std::printf("%s\n", out.dump().c_str());
  std::fflush(stdout);
  if (report_fd >= 0) {
    const ssize_t n = write(report_fd, &peak, sizeof(peak));
    (void)n;
  }
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
    else if (k == "--hidden") a.hidden = std::atoll(next().c_str());
    else if (k == "--layers") a.layers = std::atoll(next().c_str());
    else if (k == "--steps") a.steps = std::atoll(next().c_str());
    else {
      std::fprintf(stderr, "usage: %s [--mode lora|ppo|ppo-refcopy|all] [--hidden E] [--layers N] [--steps S]\n",
                   argv[0]);
      return 2;
    }
  }
  try {
    if (a.mode != "all") return run_mode(a, a.mode, -1);
    int rc = 0;
    std::vector<std::pair<std::string, int64_t>> peaks;
    for (const char* mode : {"lora", "ppo", "ppo-refcopy"}) {  // each in its own process: separate peak RSS
      int fds[2];
      if (pipe(fds) != 0) return 1;
      pid_t pid = fork();
      if (pid == 0) {
        close(fds[0]);
        std::_Exit(run_mode(a, mode, fds[1]));
      }
      close(fds[1]);
      int64_t peak = 0;
      if (read(fds[0], &peak, sizeof(peak)) != ssize_t(sizeof(peak))) peak = 0;
      close(fds[0]);
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) rc = 1;
      peaks.push_back({mode, peak});
    }
    int64_t weights = 0;  // f32 bytes of the base weights, from the config's tensor list
    for (const auto& [name, shape] : expected_tensors(bench_config(a))) {
      int64_t n = 4;
      for (int64_t d : shape) n *= d;
      weights += n;
    }
    std::printf("{\"summary\":true,\"base_weights\":\"%s\",\"ppo_minus_lora\":\"%s\",\"refcopy_minus_lora\":\"%s\","
                "\"ppo_minus_lora_over_weights\":%.3f}\n",
                format_bytes(weights).c_str(), format_bytes(peaks[1].second - peaks[0].second).c_str(),
                format_bytes(peaks[2].second - peaks[0].second).c_str(),
                double(peaks[1].second - peaks[0].second) / double(weights));
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
