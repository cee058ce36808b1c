// The memory preflight: a Llama-2-70B-shaped full fine-tune is refused by `llmtune train` from a
// config.json-only folder (before any weight is needed) with a message naming what to change;
// `info` prints the estimates; and the estimate of a small run is within 2× of its measured RSS.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include "cli/memory_preflight.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "model/decoder.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace fs = std::filesystem;
using namespace llmtune;
using namespace llmtune::cli;

namespace {

const char* kLlama70B = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
  "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672,
  "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "hidden_act": "silu",
  "tie_word_embeddings": false, "rope_theta": 10000.0})";

using llmtune::cli_test::CliRun;
using llmtune::cli_test::put;
using llmtune::cli_test::run_llmtune;

// This file's scratch folders.
struct Scratch : llmtune::cli_test::Scratch {
  Scratch() : llmtune::cli_test::Scratch("llmtune_preflight_") {}
};

}  // namespace

TEST(MemoryPreflight, HugeFullFineTuneRefusedBeforeLoading) {
  REQUIRE_BINARY();
  Scratch s;
  fs::create_directories(s.path / "llama70b");
  put(s.path / "llama70b" / "config.json", kLlama70B);  // no weights, no tokenizer
  put(s.path / "train.jsonl", "{\"text\": \"hello world\"}\n");
  CliRun r = run_llmtune({"train", "--model", (s.path / "llama70b").string(), "--train_file",
                          (s.path / "train.jsonl").string(), "--method", "full", "--output_dir",
                          (s.path / "out").string(), "--max_seq_length", "1024", "--per_device_train_batch_size", "1"},
                         s.path);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  for (const char* want : {"training needs about", "is available", "per_device_train_batch_size", "max_seq_length",
                           "gradient_checkpointing", "load_in_4bit", "adamw_8bit", "method lora"})
    EXPECT_NE(r.err.find(want), std::string::npos) << want << "\n" << r.err;
  EXPECT_EQ(r.err.find("safetensors"), std::string::npos) << r.err;  // never got to the weights
  EXPECT_FALSE(fs::exists(s.path / "out" / "metrics.jsonl"));

  // info works from the same folder and prints every estimate.
  CliRun info = run_llmtune({"info", "--model", (s.path / "llama70b").string(), "--method", "lora", "--load_in_4bit",
                             "--gradient_checkpointing", "--optim", "paged_adamw_8bit", "--max_seq_length", "512",
                             "--per_device_train_batch_size", "1"},
                            s.path);
  ASSERT_EQ(info.exit_code, 0) << info.err;
  for (const char* want : {"inference:", "4-bit base", "train (lora r 8, paged_adamw_8bit", "gradient checkpointing",
                           "optimizer:", "8-bit", "activations:", "without checkpointing"})
    EXPECT_NE(info.out.find(want), std::string::npos) << want << "\n" << info.out;
}

TEST(MemoryPreflight, EstimatesFollowTheSwitches) {
  ModelConfig c = parse_model_config(nlohmann::json::parse(kLlama70B), "70b/config.json");
  PreflightPlan full;
  full.method = "full";
  full.mem.B = 1;
  full.mem.T = 1024;
  MemoryEstimate f = estimate_training_plan(c, full);
  const int64_t P = count_parameters(c);  // ~69B
  EXPECT_GT(P, int64_t(68e9));
  EXPECT_EQ(f.weights, 4 * P);
  EXPECT_EQ(f.gradients, 4 * P);
  EXPECT_EQ(f.optimizer, 8 * P);
  // QLoRA: the block linears at ~0.5 B/param; adapters on q_proj, v_proj (Llama defaults).
  PreflightPlan q;
  q.method = "lora";
  q.mem = full.mem;
  q.mem.load_in_4bit = true;
  q.mem.gradient_checkpointing = true;
  q.mem.optim_8bit = true;
  MemoryEstimate e = estimate_training_plan(c, q);
  const int64_t lora = 80 * 8 * ((8192 + 8192) + (8192 + 1024));
  EXPECT_EQ(estimate_lora_params(c, q.lora), lora);
  EXPECT_LT(e.weights, f.weights / 6);
  EXPECT_EQ(e.gradients, 4 * lora);
  EXPECT_LT(e.optimizer, 8 * lora / 3);  // 8-bit states ≈ 2 B/param
  EXPECT_LT(e.activations * 5, f.activations);
  EXPECT_NO_THROW(refuse_if_too_big(e, e.total() + 1, q));
  try {
    refuse_if_too_big(e, e.total() - 1, q);
    ADD_FAILURE() << "not refused";
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("max_seq_length"), std::string::npos) << m;
    EXPECT_EQ(m.find("adamw_8bit"), std::string::npos) << m;  // already in use: not advised again
  }
}

// Full fine-tuning of a mid-size random Llama (E 256, 4 layers, B 4 × T 128): the estimate is within
// a factor of 2 of the RSS growth measured across model + gradients + optimizer + one step.
TEST(MemoryPreflight, EstimateWithinFactorTwoOfMeasuredRss) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
    "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 688,
    "vocab_size": 512, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
    "tie_word_embeddings": false})");
  ModelConfig cfg = parse_model_config(j, "mid/config.json");
  // Stored path only: a second run in one process reuses the pages the first freed (glibc raises its
  // mmap threshold), so its RSS growth means nothing; the checkpointed store is checked against
  // Workspace::bytes in test_gradient_checkpointing.cpp.
  for (bool ckpt : {false}) {
    SCOPED_TRACE(ckpt ? "checkpointing" : "stored");
    PreflightPlan plan;
    plan.method = "full";
    plan.mem.B = 4;
    plan.mem.T = 128;
    plan.mem.gradient_checkpointing = ckpt;
    const int64_t est = estimate_training_plan(cfg, plan).total();
    const int64_t rss0 = current_rss_bytes();
    int64_t grown = 0;
    {
      Model m = random_model(cfg, 1, 0.02f);
      for (auto& p : m.params) p.trainable = true;
      m.sync_grad_buffers();
      Optimizer opt = make_optimizer(m, OptimizerConfig{});
      Workspace ws;
      ws.gradient_checkpointing = ckpt;
      std::vector<int32_t> ids(size_t(plan.mem.B * plan.mem.T), 5), targets(ids.size(), 7);
      DecoderInput in;
      in.B = plan.mem.B;
      in.T = plan.mem.T;
      in.ids = ids.data();
      decoder_forward(m, ws, in);
      decoder_lm_loss(m, ws, targets.data(), 1e-3f, true);
      decoder_backward(m, ws, in);
      opt.step(1e-3);
      grown = current_rss_bytes() - rss0;
    }
    std::printf("[ preflight ] %s: estimate %s, measured RSS growth %s\n", ckpt ? "checkpointed" : "stored",
                format_bytes(est).c_str(), format_bytes(grown).c_str());
    EXPECT_LE(est, 2 * grown);
    EXPECT_GE(est, grown / 2);
  }
}
