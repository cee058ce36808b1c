// `llmtune grpo` and `llmtune dpo` end to end through the built binary on the bundled stories260K: good
// runs write the adapter, metrics, report, checkpoints and trainer_state; resume 2+2 equals 4 steps byte
// for byte; a reward model trained by `llmtune train --task reward` works as `--reward model:DIR`; bad
// input (failing / non-number / NaN reward command, a prompt longer than the context, batch arithmetic)
// gives ONE "error: " line naming the spec or line, exit code 1, and leaves the checkpoints intact.
// Skipped when the binary is not built (LLMTUNE_ONLY builds) — and `grpo` must be registered in main.cpp.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using llmtune::cli_test::CliRun;
using llmtune::cli_test::expect_one_error_line;
using llmtune::cli_test::put;
using llmtune::cli_test::quote;
using llmtune::cli_test::run_llmtune;
using llmtune::cli_test::slurp;

// This file's scratch folders.
struct Scratch : llmtune::cli_test::Scratch {
  Scratch() : llmtune::cli_test::Scratch("llmtune_rlcli_") {}
};

const std::string kStories = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";

fs::path prompts_file(const fs::path& dir, const std::string& extra = "") {
  const fs::path p = dir / "prompts.jsonl";
  put(p, "{\"prompt\": \"Once upon a time,\"}\n{\"prompt\": \"One day,\"}\n" + extra +
             "{\"prompt\": \"Tom and\"}\n{\"prompt\": \"Lily saw\"}\n");
  return p;
}

std::vector<std::string> tiny_grpo(const fs::path& prompts, const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"grpo",
                                "--model", kStories,
                                "--train_file", prompts.string(),
                                "--output_dir", out.string(),
                                "--reward", "keyword:Lily",
                                "--num_generations", "4",
                                "--per_device_train_batch_size", "8",
                                "--max_completion_length", "8",
                                "--max_steps", "3",
                                "--learning_rate", "0.005",
                                "--lr_scheduler_type", "constant",
                                "--logging_steps", "1",
                                "--save_steps", "2",
                                "--num_threads", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// metrics.jsonl entries without wall-clock fields, summaries dropped.
std::vector<std::string> logged(const fs::path& dir) {
  std::vector<std::string> v;
  std::istringstream in(slurp(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line);
    if (e.value("type", "") == "summary") continue;
    for (const char* k : {"elapsed_seconds", "train_runtime", "peak_rss_bytes"}) e.erase(k);
    v.push_back(e.dump());
  }
  return v;
}

bool has_stray_folder(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos || n.find(".old.") != std::string::npos) return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------- GRPO: good runs

TEST(GrpoCli, TinyLoraRunWritesAdapterMetricsReportCheckpointsAndPlainProgress) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_grpo(prompts_file(s.path), out), s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "report.html",
                        "run_config.json", "trainer_state.json", "checkpoint-2/adapter_model.safetensors",
                        "checkpoint-2/optimizer.safetensors", "checkpoint-2/rng_state.json",
                        "checkpoint-3/trainer_state.json", "checkpoint-3/llmtune_state.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  int train_lines = 0;
  for (const auto& e : logged(out)) {
    const json j = json::parse(e);
    if (j["type"] != "train") continue;
    train_lines++;
    for (const char* k : {"loss", "reward", "reward_std", "kl", "clip_ratio/region_mean", "completions/mean_length",
                          "learning_rate", "grad_norm", "rewards/keyword:Lily/mean"})
      EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(train_lines, 3);
  const json ts = json::parse(slurp(out / "trainer_state.json"));
  EXPECT_EQ(ts["global_step"], 3);
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  EXPECT_NE(r.out.find("step 3/3 | loss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ETA"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("trainable params: "), std::string::npos);
}

// The option parser appends repeated list flags: two --reward flags are two rewards, each logged.
TEST(GrpoCli, RepeatedRewardFlagsAreBothScored) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_grpo(prompts_file(s.path), out,
                                   {"--reward", "length:0:100", "--reward_weights", "1,0.5", "--max_steps", "1"}),
                         s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("rewards: keyword:Lily length:0:100 (×0.5)"), std::string::npos) << r.out;
  int train_lines = 0;
  for (const auto& e : logged(out)) {
    const json j = json::parse(e);
    if (j["type"] != "train") continue;
    train_lines++;
    EXPECT_TRUE(j.contains("rewards/keyword:Lily/mean")) << e;
    EXPECT_TRUE(j.contains("rewards/length:0:100/mean")) << e;
    EXPECT_GE(j["reward"].get<double>(), 0.5) << e;  // length:0:100 holds for 8 tokens: 0.5 each at least
  }
  EXPECT_EQ(train_lines, 1);
}

TEST(GrpoCli, ResumeTwoPlusOneEqualsThreeStepsByteForByte) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path prompts = prompts_file(s.path);
  CliRun a = run_llmtune(tiny_grpo(prompts, s.path / "a", {"--beta", "0.04"}), s.path);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  // The same run stopped after step 2 (constant schedule: max_steps does not change the lr) …
  CliRun half = run_llmtune(tiny_grpo(prompts, s.path / "b", {"--beta", "0.04", "--max_steps", "2"}), s.path);
  ASSERT_EQ(half.exit_code, 0) << half.err;
  // … and resumed to 3.
  CliRun rest = run_llmtune(tiny_grpo(prompts, s.path / "b", {"--beta", "0.04", "--resume_from_checkpoint", "true"}), s.path);
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  const std::string adapter = slurp(s.path / "a/adapter_model.safetensors");
  ASSERT_GT(adapter.size(), 1000u);
  EXPECT_TRUE(adapter == slurp(s.path / "b/adapter_model.safetensors")) << "adapters differ";
  EXPECT_TRUE(slurp(s.path / "a/checkpoint-3/optimizer.safetensors") ==
              slurp(s.path / "b/checkpoint-3/optimizer.safetensors"));
  EXPECT_EQ(logged(s.path / "a"), logged(s.path / "b"));
}

TEST(GrpoCli, RewardModelTrainedByTrainTaskRewardScoresCompletions) {
  REQUIRE_BINARY();
  Scratch s;
  put(s.path / "pairs.jsonl",
      "{\"prompt\": \"Once upon a time,\", \"chosen\": \" Lily was happy.\", \"rejected\": \" Tom was sad.\"}\n"
      "{\"prompt\": \"One day,\", \"chosen\": \" Lily smiled.\", \"rejected\": \" it rained.\"}\n");
  for (const std::string method : {"lora", "full"}) {
    SCOPED_TRACE(method);
    const fs::path rm = s.path / ("rm_" + method);
    CliRun t = run_llmtune({"train", "--task", "reward", "--model", kStories, "--train_file",
                            (s.path / "pairs.jsonl").string(), "--output_dir", rm.string(), "--method", method,
                            "--max_steps", "2", "--per_device_train_batch_size", "2", "--num_threads", "1",
                            "--learning_rate", "0.001"},
                           s.path);
    ASSERT_EQ(t.exit_code, 0) << t.err;
    const fs::path out = s.path / ("grpo_" + method);
    CliRun r = run_llmtune(tiny_grpo(prompts_file(s.path), out,
                                     {"--reward", "model:" + rm.string(), "--max_steps", "1", "--save_steps", "0"}),
                           s.path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const std::vector<std::string> l = logged(out);
    ASSERT_FALSE(l.empty());
    const json e = json::parse(l.back());
    EXPECT_TRUE(e.contains("rewards/model:" + rm.string() + "/mean")) << e.dump();
    EXPECT_NE(e.value("reward_std", 0.0), 0.0) << "a reward model gives graded rewards";
  }
}

// ---------------------------------------------------------------- GRPO: bad input

TEST(GrpoCli, FailingRewardCommandIsOneErrorAndKeepsTheCheckpointsLoadable) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path out = s.path / "out";
  const fs::path counter = s.path / "calls";
  // Succeeds twice (steps 1, 2: checkpoint-1 and -2 are written), then exits 4 at step 3.
  const std::string cmd = "command:n=$(cat '" + counter.string() + "' 2>/dev/null || echo 0); echo $((n+1)) > '" +
                          counter.string() + "'; [ $n -lt 2 ] || exit 4; sed 's/.*/0/'";
  CliRun r = run_llmtune(tiny_grpo(prompts_file(s.path), out, {"--reward", cmd, "--save_steps", "1"}), s.path);
  expect_one_error_line(r, {"reward command", "failed (exit status 4)"});
  EXPECT_TRUE(fs::exists(out / "checkpoint-2/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(out / "checkpoint-3"));
  EXPECT_FALSE(has_stray_folder(out));
  // The checkpoint loads: resume finishes the run (with a working reward).
  CliRun resumed = run_llmtune(
      tiny_grpo(prompts_file(s.path), out, {"--reward", "keyword:Lily", "--resume_from_checkpoint", "true"}), s.path);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(fs::exists(out / "checkpoint-3/optimizer.safetensors"));
}

TEST(GrpoCli, RewardCommandPrintingANonNumberOrNaNIsOneError) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path prompts = prompts_file(s.path);
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "a", {"--reward", "command:sed 's/.*/oops/'"}), s.path),
                   {"reward command", "not a number: 'oops'"});
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "b", {"--reward", "command:sed 's/.*/nan/'"}), s.path),
                   {"reward command", "nan", "finite"});
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "c", {"--reward", "command:head -n 1 | sed 's/.*/1/'"}), s.path),
                   {"printed 1 numbers for 8 responses"});
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "d", {"--reward", "model:" + (s.path / "nope").string()}), s.path),
                   {"model:", "nope", "not a folder"});
  EXPECT_FALSE(fs::exists(s.path / "d")) << "a bad reward spec fails before anything is written";
}

TEST(GrpoCli, PromptLongerThanTheContextNamesTheLine) {
  REQUIRE_BINARY();
  Scratch s;
  std::string words;
  for (int i = 0; i < 400; i++) words += "the little cat ";
  const fs::path prompts = prompts_file(s.path, json{{"prompt", words}}.dump() + "\n");
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "out"), s.path),
                   {"prompts.jsonl:3", "context of 512", "max_completion_length"});
  EXPECT_FALSE(fs::exists(s.path / "out"));
}

TEST(GrpoCli, BatchArithmeticAndOutputDirErrors) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path prompts = prompts_file(s.path);
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "out", {"--per_device_train_batch_size", "6"}), s.path),
                   {"per_device_train_batch_size", "num_generations 4"});
  ASSERT_EQ(run_llmtune(tiny_grpo(prompts, s.path / "out", {"--max_steps", "1"}), s.path).exit_code, 0);
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "out", {"--max_steps", "1"}), s.path),
                   {"already holds another run", "overwrite_output_dir"});
  expect_one_error_line(run_llmtune(tiny_grpo(prompts, s.path / "fresh", {"--resume_from_checkpoint", "true"}), s.path),
                   {"no checkpoint-N folder"});
}

// ---------------------------------------------------------------- DPO resume

TEST(DpoCli, ResumeTwoPlusTwoEqualsFourStepsByteForByte) {
  REQUIRE_BINARY();
  Scratch s;
  std::string pairs;
  for (const char* subject : {"cat", "dog", "bird", "fish", "frog"})
    pairs += json{{"prompt", "Once upon a time,"},
                  {"chosen", std::string(" the ") + subject + " was happy."},
                  {"rejected", std::string(" the ") + subject + " was sad."}}
                 .dump() +
             "\n";
  put(s.path / "pairs.jsonl", pairs);
  auto dpo = [&](const fs::path& out, std::vector<std::string> extra) {
    std::vector<std::string> a = {"dpo", "--model", kStories, "--train_file", (s.path / "pairs.jsonl").string(),
                                  "--output_dir", out.string(), "--max_steps", "4", "--per_device_train_batch_size",
                                  "2", "--learning_rate", "0.005", "--lr_scheduler_type", "constant",
                                  "--logging_steps", "1", "--save_steps", "2", "--lora_dropout", "0.1",
                                  "--num_threads", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run_llmtune(a, s.path);
  };
  CliRun a = dpo(s.path / "a", {});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(dpo(s.path / "b", {"--max_steps", "2"}).exit_code, 0);
  CliRun b = dpo(s.path / "b", {"--resume_from_checkpoint", "true"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const std::string adapter = slurp(s.path / "a/adapter_model.safetensors");
  ASSERT_GT(adapter.size(), 1000u);
  EXPECT_TRUE(adapter == slurp(s.path / "b/adapter_model.safetensors")) << "adapters differ";
  EXPECT_EQ(logged(s.path / "a"), logged(s.path / "b"));
  EXPECT_TRUE(fs::exists(s.path / "b/checkpoint-4/trainer_state.json"));
}
