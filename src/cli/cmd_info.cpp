// `llmtune info`: architecture, parameter counts and memory estimates of a model folder.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/config.h"
#include "model/memory_estimate.h"

namespace llmtune::cli {

namespace {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::GPTNeoX: return "GPT-NeoX";
    case Arch::Llama: return "Llama";
    case Arch::Qwen2: return "Qwen2";
    case Arch::GPT2: return "GPT-2";
  }
  return "?";
}

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v), out;
  int n = 0;
  for (auto it = s.rbegin(); it != s.rend(); ++it) {
    if (n && n % 3 == 0) out.insert(out.begin(), ',');
    out.insert(out.begin(), *it);
    n++;
  }
  return out;
}

int run(const ResolvedOptions& o) {
  const std::string dir = o.get_string("model");
  ModelConfig c = load_model_config(dir);
  const int64_t params = count_parameters(c);
  const int64_t B = o.get_int("batch_size"), T = o.get_int("max_seq_length");
  std::printf("model:          %s\n", dir.c_str());
  std::printf("architecture:   %s (%s, model_type %s)\n", arch_name(c.arch),
              c.architecture.empty() ? "-" : c.architecture.c_str(), c.model_type.c_str());
  std::printf("layers:         %lld, hidden %lld, heads %lld (kv %lld, head_dim %lld), mlp %lld\n",
              (long long)c.num_layers, (long long)c.hidden_size, (long long)c.num_heads, (long long)c.num_kv_heads,
              (long long)c.head_dim, (long long)c.intermediate_size);
  std::printf("vocab:          %lld, context %lld, tied embeddings: %s\n", (long long)c.vocab_size,
              (long long)c.max_position_embeddings, c.tie_word_embeddings ? "yes" : "no");
  std::printf("parameters:     %s\n", with_commas(params).c_str());
  MemoryEstimate inf = estimate_inference(c, c.max_position_embeddings);
  std::printf("inference:      %s (f32 weights %s + KV cache for the full context %s)\n",
              format_bytes(inf.total()).c_str(), format_bytes(inf.weights).c_str(), format_bytes(inf.kv_cache).c_str());
  MemoryEstimate full = estimate_training(c, params, 0, B, T);
  std::printf("train (full, AdamW, batch %lld x seq %lld): %s (weights %s, grads %s, optimizer %s, activations %s)\n",
              (long long)B, (long long)T, format_bytes(full.total()).c_str(), format_bytes(full.weights).c_str(),
              format_bytes(full.gradients).c_str(), format_bytes(full.optimizer).c_str(),
              format_bytes(full.activations).c_str());
  std::printf("available RAM:  %s\n", format_bytes(available_ram_bytes()).c_str());
  return 0;
}

}  // namespace

Command info_command() {
  CommandSpec s;
  s.name = "info";
  s.summary = "Architecture, parameter counts and memory estimates of a model folder";
  s.add_string("model", std::nullopt, "Hugging Face model folder").required = true;
  s.add_int("batch_size", 4, "micro-batch size for the training estimate").min = 1;
  s.add_int("max_seq_length", 512, "sequence length for the training estimate").min = 1;
  return {s, run};
}

}  // namespace llmtune::cli
