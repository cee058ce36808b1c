// `llmtune info`: architecture, parameter counts and memory estimates of a model folder.
#include <cstdio>

#include "cli/commands.h"
#include "cli/memory_preflight.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/config.h"
#include "model/memory_estimate.h"
#include "train/optimizer.h"

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
  const int64_t B = o.get_int("per_device_train_batch_size"), T = o.get_int("max_seq_length");
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
  std::printf("                4-bit base (NF4/FP4, block linears): weights %s; int8 base: %s\n",
              format_bytes(base_weight_bytes(c, true)).c_str(), format_bytes(base_weight_bytes(c, false, true)).c_str());

  PreflightPlan plan;
  plan.method = o.get_string("method");
  if (plan.method != "lora" && plan.method != "full" && plan.method != "freeze")
    fail("--method '", plan.method, "': use lora, freeze or full");
  plan.lora.r = o.get_int("r");
  plan.trainable_layers = o.get_int("trainable_layers");
  plan.mem.B = B;
  plan.mem.T = T;
  plan.mem.gradient_checkpointing = o.get_bool("gradient_checkpointing");
  plan.mem.load_in_4bit = o.get_bool("load_in_4bit");
  plan.mem.optim_8bit = parse_optimizer_name(o.get_string("optim")) == OptimizerKind::AdamW8bit;
  if (plan.mem.load_in_4bit && plan.method != "lora") fail("--load_in_4bit needs --method lora (QLoRA)");
  MemoryEstimate est = estimate_training_plan(c, plan);
  std::printf("train (%s%s, %s, batch %lld x seq %lld%s): %s\n", plan.method.c_str(),
              plan.method == "lora" ? (" r " + std::to_string(plan.lora.r)).c_str() : "",
              o.get_string("optim").c_str(), (long long)B, (long long)T,
              plan.mem.gradient_checkpointing ? ", gradient checkpointing" : "", format_bytes(est.total()).c_str());
  std::printf("  weights:      %s%s\n", format_bytes(est.weights).c_str(),
              plan.mem.load_in_4bit ? " (4-bit base + f32 rest + adapters)" : " (f32)");
  std::printf("  gradients:    %s\n", format_bytes(est.gradients).c_str());
  PreflightPlan p32 = plan, p8 = plan;
  p32.mem.optim_8bit = false;
  p8.mem.optim_8bit = true;
  std::printf("  optimizer:    %s (AdamW 32-bit %s, 8-bit %s)\n", format_bytes(est.optimizer).c_str(),
              format_bytes(estimate_training_plan(c, p32).optimizer).c_str(),
              format_bytes(estimate_training_plan(c, p8).optimizer).c_str());
  std::printf("  activations:  %s (without checkpointing %s, with %s)\n", format_bytes(est.activations).c_str(),
              format_bytes(activation_bytes(c, B, T, false)).c_str(), format_bytes(activation_bytes(c, B, T, true)).c_str());
  std::printf("available RAM:  %s\n", format_bytes(available_ram_bytes()).c_str());
  return 0;
}

}  // namespace

Command info_command() {
  CommandSpec s;
  s.name = "info";
  s.summary = "Architecture, parameter counts and memory estimates of a model folder";
  s.add_string("model", std::nullopt, "Hugging Face model folder").required = true;
  s.add_int("per_device_train_batch_size", 4, "micro-batch size for the training estimate").min = 1;
  s.add_int("max_seq_length", 512, "sequence length for the training estimate").min = 1;
  s.add_string("method", "full", "lora | freeze | full: what trains in the training estimate");
  s.add_int("r", 8, "LoRA rank (method lora; default target modules of the architecture)").min = 1;
  s.add_int("trainable_layers", 2, "method freeze: number of last blocks that train").min = 0;
  s.add_bool("load_in_4bit", false, "estimate with the block linears in 4 bit (QLoRA)");
  s.add_bool("gradient_checkpointing", false, "estimate with gradient checkpointing");
  s.add_string("optim", "adamw_torch", "optimizer of the estimate (adamw_8bit: 8-bit states)");
  return {s, run};
}

}  // namespace llmtune::cli
