// Whole-model speed: forward and forward+backward (full fine-tuning) tokens/s and achieved GFLOP/s of
// Pythia-70m- and Pythia-160m-shaped random models. The FLOP formula is in bench/README.md.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/model.h"

using namespace llmtune;

namespace {

struct BenchConfig {
  std::string name;
  nlohmann::json config;  // a config.json as Hugging Face ships it (the fields that matter)
};

std::vector<BenchConfig> pythia_configs() {
  auto neox = [](int64_t hidden, int64_t layers, int64_t heads, int64_t inter) {
    nlohmann::json j = nlohmann::json::parse(R"({
      "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
      "vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
      "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
      "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0})");
    j["hidden_size"] = hidden;
    j["num_hidden_layers"] = layers;
    j["num_attention_heads"] = heads;
    j["intermediate_size"] = inter;
    return j;
  };
  return {{"70m", neox(512, 6, 8, 2048)}, {"160m", neox(768, 12, 12, 3072)}};
}

// Multiply-accumulates per token of every matmul with a weight (all linears incl. the LM head;
// the embedding lookup is not a matmul).
int64_t matmul_params(Model& m) {
  int64_t n = 0;
  for (LinearModule* l : m.linears()) n += l->in * l->out;
  return n;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

struct Args {
  int iters = 5;
  int threads = 0;
  std::string config = "all";
  int64_t batch = 4, seq = 256;
};

[[noreturn]] void usage_and_exit(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: bench_model_speed [--iters N (5)] [--threads N (0 = all cores)] [--config 70m|160m|all]\n"
               "                         [--batch B (4)] [--seq T (256)]\n");
  std::exit(code);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") usage_and_exit(0);
    if (i + 1 >= argc) usage_and_exit(2);
    std::string v = argv[++i];
    try {
      if (k == "--iters") a.iters = std::stoi(v);
      else if (k == "--threads") a.threads = std::stoi(v);
      else if (k == "--config") a.config = v;
      else if (k == "--batch") a.batch = std::stoll(v);
      else if (k == "--seq") a.seq = std::stoll(v);
      else usage_and_exit(2);
    } catch (const std::logic_error&) {
      usage_and_exit(2);
    }
  }
  if (a.iters < 1 || a.batch < 1 || a.seq < 2 || (a.config != "70m" && a.config != "160m" && a.config != "all"))
    usage_and_exit(2);
  return a;
}

void bench_one(const BenchConfig& bc, const Args& a) {
  ModelConfig cfg = parse_model_config(bc.config, "pythia-" + bc.name);
  const int64_t B = a.batch, T = a.seq, N = B * T, V = cfg.vocab_size;
  if (T > cfg.max_position_embeddings) fail("--seq ", T, " exceeds the context ", cfg.max_position_embeddings);
  Model m = random_model(cfg, 1234);
  for (auto& p : m.params) p.trainable = true;  // full fine-tuning: every parameter gets a gradient
  m.sync_grad_buffers();

  Rng rng(7);
  std::vector<int32_t> ids(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(V)));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      targets[size_t(b * T + t)] = t + 1 < T ? ids[size_t(b * T + t + 1)] : -100;
  DecoderInput in;
  in.B = B;
  in.T = T;
  in.ids = ids.data();
  Workspace ws;
  volatile double sink = 0;  // keeps the loss live

  auto forward = [&] {
    decoder_forward(m, ws, in);
    sink = sink + decoder_lm_loss(m, ws, targets.data(), 0.f, false).sum;
  };
  auto forward_backward = [&] {
    m.zero_grads();
    decoder_forward(m, ws, in);
    sink = sink + decoder_lm_loss(m, ws, targets.data(), 1.0f / float(N - B), true).sum;
    decoder_backward(m, ws, in);
  };
  auto time_median = [&](auto&& fn) {
    for (int i = 0; i < 2; i++) fn();  // warm-up: oneDNN primitive creation, first-touch of buffers
    std::vector<double> t;
    for (int i = 0; i < a.iters; i++) {
      double t0 = now_seconds();
      fn();
      t.push_back(now_seconds() - t0);
    }
    return median(t);
  };

  // FLOPs (bench/README.md): 2 per MAC; the causal attention scores and weighted sum cost
  // 2·(2·B·T²·E)/2 per layer; backward = 2 × forward.
  const double P_mm = double(matmul_params(m));
  const double E = double(cfg.hidden_size), L = double(cfg.num_layers);
  const double fwd_flops = 2.0 * P_mm * double(N) + 2.0 * double(B) * double(T) * double(T) * E * L;
  const double fwdbwd_flops = 3.0 * fwd_flops;

  const double t_fwd = time_median(forward);
  const double t_fb = time_median(forward_backward);
  std::printf("pythia-%s fwd: %.0f tok/s, %.1f GFLOP/s | fwd+bwd: %.0f tok/s, %.1f GFLOP/s"
              "  (params %.1fM, matmul params %.1fM, %d threads, batch %lld x seq %lld, median of %d, peak RSS %.2f GB)\n",
              bc.name.c_str(), double(N) / t_fwd, fwd_flops / t_fwd * 1e-9, double(N) / t_fb,
              fwdbwd_flops / t_fb * 1e-9, double(m.num_params()) * 1e-6, P_mm * 1e-6, num_threads(), (long long)B,
              (long long)T, a.iters, double(peak_rss_bytes()) / 1e9);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse_args(argc, argv);
  try {
    set_num_threads(a.threads);
    for (const BenchConfig& bc : pythia_configs())
      if (a.config == "all" || a.config == bc.name) bench_one(bc, a);
  } catch (const llmtune::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
