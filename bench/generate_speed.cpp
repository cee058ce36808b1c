// Generation speed: prompt-processing and decode tokens/s of generate() (KV cache, greedy, batch 1) on
// random-weight Pythia-160m- and TinyLlama-1.1B-shaped models in f32, bf16, NF4 and int8, with the
// memory bandwidth each decode rate implies (bytes read per token × tok/s) against a STREAM-like
// bandwidth measured here. Decode of a model this size is bandwidth bound (llama.cpp's rule of thumb:
// tok/s ≈ bandwidth / model bytes); the "roofline" column is that bound for our bytes per token.
// --compare alternates the fast decode path with the generic one (oneDNN per linear) in one invocation.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "kernels/decode_pool.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/quantize_model.h"
#include "train/precision.h"

using namespace llmtune;

namespace {

struct Args {
  std::string config = "all";                    // 160m | 1.1b | all
  std::vector<std::string> dtypes = {"f32", "bf16"};  // f32, bf16, nf4, int8
  int64_t prompt = 128, new_tokens = 64, layers = 0;  // layers 0: the real depth
  int reps = 2, threads = 0;
  bool compare = false;
  std::string json_out;
};

ModelConfig pythia160m(int64_t layers) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "vocab_size": 50304, "max_position_embeddings": 2048, "rotary_pct": 0.25, "rotary_emb_base": 10000,
    "use_parallel_residual": true, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
    "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 0})");
  if (layers > 0) j["num_hidden_layers"] = layers;
  return parse_model_config(j, "pythia-160m-shaped/config.json");
}

ModelConfig tinyllama(int64_t layers) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
    "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4, "intermediate_size": 5632,
    "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "rope_theta": 10000.0, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2})");
  if (layers > 0) j["num_hidden_layers"] = layers;
  return parse_model_config(j, "tinyllama-1.1b-shaped/config.json");
}

// ---- memory bandwidth (STREAM-like, all threads, arrays far larger than the caches) ----------------

struct Bandwidth {
  double read_gbs = 0, triad_gbs = 0;
};

// Sum of n floats with four independent accumulators (one dependency chain would cap a core).
float read_sum(const float* a, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
    s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
    s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
    s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  float s = 0;
  for (float l : lanes) s += l;
  for (; i < n; i++) s += a[i];
  return s;
}

// Read bandwidth: the best of one thread alone and all threads over 2 MiB chunks claimed dynamically
// (run_chunks: on a busy machine a static split waits for whichever thread was descheduled).
// Triad a = b + s·c: 2 reads + 1 write (STREAM counts 3 × 4 bytes per element, no write-allocate).
Bandwidth measure_bandwidth(int64_t bytes_per_array, int reps) {
  const int64_t n = bytes_per_array / 4 / 1024 * 1024;
  Tensor ta = Tensor::zeros({n}), tb = Tensor::zeros({n}), tc = Tensor::zeros({n});
  float *a = ta.f32(), *b = tb.f32(), *c = tc.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) a[i] = 1.f, b[i] = 2.f, c[i] = 0.f;
  constexpr int64_t kChunk = (2 << 20) / 4;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  Bandwidth bw;
  volatile float sink = 0;
  for (int r = 0; r < reps; r++) {
    double t0 = now_seconds();
    sink = sink + read_sum(a, n);
    double t1 = now_seconds();
    bw.read_gbs = std::max(bw.read_gbs, double(n) * 4 / (t1 - t0) * 1e-9);
    std::vector<float> partial(static_cast<size_t>(chunks));
    t0 = now_seconds();
    run_chunks(chunks, [&](int64_t k) {
      const int64_t i0 = k * kChunk;
      partial[size_t(k)] = read_sum(a + i0, std::min(n, i0 + kChunk) - i0);
    });
    t1 = now_seconds();
    for (float p : partial) sink = sink + p;
    bw.read_gbs = std::max(bw.read_gbs, double(n) * 4 / (t1 - t0) * 1e-9);
    t0 = now_seconds();
    run_chunks(chunks, [&](int64_t k) {
      const int64_t i0 = k * kChunk, i1 = std::min(n, i0 + kChunk);
      for (int64_t i = i0; i < i1; i++) a[i] = b[i] + 0.5f * c[i];
    });
    t1 = now_seconds();
    bw.triad_gbs = std::max(bw.triad_gbs, double(n) * 12 / (t1 - t0) * 1e-9);
  }
  return bw;
}

// 1-minute load average (the machine is shared; numbers only compare within one invocation).
double load_average() {
  double l = -1;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

// ---- models ------------------------------------------------------------------------------------------

// Fills every weight (not norms, not biases) with uniform values of standard deviation `std`, in
// parallel: random_model's sequential normal draws take minutes for 1.1B parameters. Decode speed does
// not depend on the values; the model only has to be a plausible one.
void fill_random(Model& m, float std, uint64_t seed) {
  const float a = std * 1.7320508f;  // uniform in [-a, a] has standard deviation a / sqrt(3)
  uint64_t salt = seed;
  for (auto& p : m.params) {
    salt += 0x9e3779b97f4a7c15ull;
    const std::string& n = p.name;
    const bool is_norm = n.find("norm") != std::string::npos || n.find(".ln_") != std::string::npos;
    const bool is_bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    if (is_norm || is_bias || !p.value.defined()) continue;
    float* w = p.value.f32();
    const int64_t count = p.value.numel();
    const uint64_t s0 = salt;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
      uint64_t z = s0 + uint64_t(i) * 0x9e3779b97f4a7c15ull;  // splitmix64
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      w[i] = a * (float(z >> 40) * (2.0f / 16777216.0f) - 1.0f);
    }
  }
}

Model build_model(const ModelConfig& cfg, const std::string& dtype) {
  Model m = random_model(cfg, 1, 0.f);  // zeros, unit norms: cheap
  fill_random(m, 0.02f, 1);
  for (auto& p : m.params) p.trainable = false;
  if (dtype == "nf4" || dtype == "int8") {
    QuantizeOptions q;
    if (dtype == "nf4") {
      q.load_in_4bit = true;
      q.bnb_4bit_quant_type = Quant4Type::NF4;
      q.bnb_4bit_use_double_quant = true;
    } else {
      q.load_in_8bit = true;
    }
    quantize_model(m, q);
  } else if (dtype == "bf16") {
    store_frozen_weights_bf16(m);
  } else if (dtype != "f32") {
    fail("--dtypes: unknown dtype '", dtype, "' (f32, bf16, nf4, int8)");
  }
  return m;
}

// Bytes of weights one decode step reads: every linear (incl. the LM head) once, plus one embedding row.
int64_t weight_bytes_per_token(Model& m) {
  int64_t n = 0;
  for (LinearModule* l : m.linears()) {
    if (l->q4) n += int64_t(l->q4->packed.size() + l->q4->absmax.size() * 4 + l->q4->qabsmax.size() +
                           l->q4->absmax2.size() * 4);
    else if (l->q8) n += int64_t(l->q8->w8.size() + l->q8->scb.size() * 4);
    else n += int64_t(l->weight->value.nbytes());
    if (l->bias) n += int64_t(l->bias->value.nbytes());
  }
  return n + m.cfg.hidden_size * 4;
}

// K and V bytes a decode step at context length `ctx` reads (f32 cache).
int64_t kv_bytes_per_token(const ModelConfig& c, int64_t ctx) {
  return 2 * c.num_layers * ctx * c.num_kv_heads * c.head_dim * 4;
}

struct RunResult {
  double prompt_tok_s = 0, decode_tok_s = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// One generate() call: time to the first token = prompt processing (+ one sampling step); the tokens
// after it are decode steps.
RunResult run_once(Model& m, const std::vector<int32_t>& prompt, int64_t new_tokens, bool fast) {
  GenerateOptions g;
  g.max_new_tokens = new_tokens;
  g.fast_decode = fast;
  std::vector<double> stamps;
  stamps.reserve(size_t(new_tokens));
  const double t0 = now_seconds();
  generate(m, {prompt}, g, [&](int64_t, int32_t) { stamps.push_back(now_seconds()); });
  RunResult r;
  if (stamps.empty()) return r;
  r.prompt_tok_s = double(prompt.size()) / (stamps.front() - t0);
  if (stamps.size() > 1) r.decode_tok_s = double(stamps.size() - 1) / (stamps.back() - stamps.front());
  return r;
}

void bench_model(const std::string& name, const ModelConfig& cfg, const std::string& dtype, const Args& a,
                 nlohmann::json& rows) {
  const double tb = now_seconds();
  Model m = build_model(cfg, dtype);
  const double build_s = now_seconds() - tb;
  Rng rng(7);
  std::vector<int32_t> prompt(size_t(a.prompt));
  for (auto& t : prompt) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  const int64_t wbytes = weight_bytes_per_token(m);
  const int64_t kvbytes = kv_bytes_per_token(cfg, a.prompt + a.new_tokens / 2);  // mean context
  const double bytes = double(wbytes + kvbytes);

  std::vector<bool> paths = a.compare ? std::vector<bool>{true, false} : std::vector<bool>{true};
  std::vector<std::vector<RunResult>> res(paths.size());
  run_once(m, std::vector<int32_t>(prompt.begin(), prompt.begin() + 8), 4, true);  // warm-up (page faults)
  profile_reset();
  const double t_runs = now_seconds();
  // The machine is shared: bandwidth is measured again before every repetition (best kept), so the
  // comparison is against what the machine gave around these runs.
  Bandwidth bw;
  for (int r = 0; r < a.reps; r++) {
    const Bandwidth now = measure_bandwidth(int64_t(256) << 20, 2);
    bw.read_gbs = std::max(bw.read_gbs, now.read_gbs);
    bw.triad_gbs = std::max(bw.triad_gbs, now.triad_gbs);
    for (size_t p = 0; p < paths.size(); p++) {
      // Alternate the order each repetition so a load change does not favour one path.
      size_t pp = (r % 2) ? paths.size() - 1 - p : p;
      res[pp].push_back(run_once(m, prompt, a.new_tokens, paths[pp]));
    }
  }
  if (profile_enabled()) {  // LLMTUNE_PROFILE=1: where the time of all timed runs went
    std::printf("profile of the timed runs (%s %s):\n", name.c_str(), dtype.c_str());
    profile_report(stdout, now_seconds() - t_runs);
  }
  for (size_t p = 0; p < paths.size(); p++) {
    std::vector<double> pr, de;
    for (auto& x : res[p]) pr.push_back(x.prompt_tok_s), de.push_back(x.decode_tok_s);
    const double prompt_tps = median(pr), decode_tps = median(de);
    const double implied = bytes * decode_tps * 1e-9;
    std::printf("%-5s %-4s %-8s prompt %7.1f tok/s | decode %6.2f tok/s | %7.1f MB/token -> %5.1f GB/s "
                "= %3.0f%% of read BW %.1f GB/s (roofline %.1f tok/s) | decode runs:",
                name.c_str(), dtype.c_str(), paths[p] ? "fast" : "generic", prompt_tps, decode_tps, bytes * 1e-6,
                implied, 100 * implied / bw.read_gbs, bw.read_gbs, bw.read_gbs * 1e9 / bytes);
    for (double d : de) std::printf(" %.2f", d);
    std::printf("  (build %.0f s, RSS %.2f GB, load %.1f)\n", build_s, double(current_rss_bytes()) / 1e9,
                load_average());
    std::fflush(stdout);
    nlohmann::json row;
    row["model"] = name;
    row["dtype"] = dtype;
    row["path"] = paths[p] ? "fast" : "generic";
    row["layers"] = cfg.num_layers;
    row["prompt_tok_s"] = prompt_tps;
    row["decode_tok_s"] = decode_tps;
    row["decode_runs"] = de;
    row["prompt_runs"] = pr;
    row["weight_bytes_per_token"] = wbytes;
    row["kv_bytes_per_token"] = kvbytes;
    row["implied_gb_s"] = implied;
    row["read_bw_gb_s"] = bw.read_gbs;
    row["triad_bw_gb_s"] = bw.triad_gbs;
    row["load_average"] = load_average();
    rows.push_back(row);
  }
}

[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: bench_generate_speed [--config 160m|1.1b|all] [--dtypes f32,bf16,nf4,int8]\n"
               "       [--prompt 128] [--new 64] [--reps 2] [--threads 0] [--layers N] [--compare] [--json FILE]\n"
        "--compare alternates the fast decode path with the generic one; --layers shrinks the models.\n");
  std::exit(code);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    if (k == "-h" || k == "--help") usage(0);
    if (k == "--compare") {
      a.compare = true;
      continue;
    }
    if (i + 1 >= argc) usage(2);
    std::string v = argv[++i];
    try {
      if (k == "--config") a.config = v;
      else if (k == "--dtypes") a.dtypes = split(v);
      else if (k == "--prompt") a.prompt = std::stoll(v);
      else if (k == "--new") a.new_tokens = std::stoll(v);
      else if (k == "--reps") a.reps = std::stoi(v);
      else if (k == "--threads") a.threads = std::stoi(v);
      else if (k == "--layers") a.layers = std::stoll(v);
      else if (k == "--json") a.json_out = v;
      else usage(2);
    } catch (const std::logic_error&) {
      usage(2);
    }
  }
  if (a.prompt < 1 || a.new_tokens < 2 || a.reps < 1) usage(2);
  if (a.config != "160m" && a.config != "1.1b" && a.config != "all") usage(2);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  try {
    set_num_threads(a.threads);
    const Bandwidth bw = measure_bandwidth(int64_t(512) << 20, 3);
    std::printf("memory bandwidth (%d threads, 512 MiB arrays, best of 3 and of 1 or all threads): read %.1f GB/s, triad %.1f GB/s\n",
                num_threads(), bw.read_gbs, bw.triad_gbs);
    std::printf("batch 1, prompt %lld tokens, %lld new tokens (greedy), median of %d; bytes/token = weights + "
                "K/V at the mean context; read BW = best measured around each model's runs\n",
                (long long)a.prompt, (long long)a.new_tokens, a.reps);
    std::fflush(stdout);
    nlohmann::json rows = nlohmann::json::array();
    for (const std::string& dt : a.dtypes) {
      if (a.config == "160m" || a.config == "all") bench_model("160m", pythia160m(a.layers), dt, a, rows);
      if (a.config == "1.1b" || a.config == "all") bench_model("1.1b", tinyllama(a.layers), dt, a, rows);
    }
    if (!a.json_out.empty()) {
      nlohmann::json out;
      out["read_bw_gb_s"] = bw.read_gbs;
      out["triad_bw_gb_s"] = bw.triad_gbs;
      out["threads"] = num_threads();
      out["rows"] = rows;
      FILE* f = std::fopen(a.json_out.c_str(), "w");
      if (!f) fail("--json: cannot write ", a.json_out);
      std::fprintf(f, "%s\n", out.dump(1).c_str());
      std::fclose(f);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
