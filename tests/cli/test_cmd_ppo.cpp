// `llmtune ppo`, run in-process through ppo_command() (no binary needed): a tiny LoRA PPO run writes the
// adapter, value_head.safetensors, metrics, report and checkpoints; --resume_from_checkpoint continues a run
// bit-exactly; repeated --reward flags add up; full fine-tuning saves the model; user mistakes end in one
// clear error and leave no adapter behind.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_test_util.h"

#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace fs = std::filesystem;
using namespace llmtune;

namespace {

const std::string kModel = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";

// This file's scratch folders.
struct Scratch : llmtune::cli_test::Scratch {
  Scratch() : llmtune::cli_test::Scratch("llmtune_cmd_ppo_") {}
};

int run_ppo(const std::vector<std::string>& args) {
  cli::Command c = cli::ppo_command();
  cli::ResolvedOptions o = cli::parse_options(c.spec, args);
  return c.run(o);
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    run_ppo(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(CmdPpo, TinyLoraRunWritesAdapterValueHeadMetricsAndCheckpoints) {
  Scratch s;
  const std::string prompts = s.file("prompts.jsonl", "{\"prompt\":\"Once upon a time,\"}\n{\"prompt\":\"One day,\"}\n");
  const std::string out = (s.path / "out").string();
  ASSERT_EQ(run_ppo({"--model", kModel, "--train_file", prompts, "--output_dir", out, "--reward", "keyword:Lily,length:0:40",
                     "--reward_weights", "2,1", "--max_steps", "2", "--per_device_train_batch_size", "4",
                     "--response_length", "6", "--num_ppo_epochs", "2", "--save_steps", "1", "--num_threads", "1",
                     "--learning_rate", "1e-3"}),
            0);
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "metrics.jsonl",
                        "report.html", "run_config.json", "checkpoint-1/value_head.safetensors",
                        "checkpoint-1/adapter_model.safetensors", "checkpoint-1/optimizer.safetensors"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
  // The last step is checkpointed too (HF), in the shared RL layout.
  for (const char* f : {"checkpoint-2/llmtune_state.json", "checkpoint-2/value_head_optimizer.safetensors",
                        "checkpoint-2/rng_state.json", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
  // metrics.jsonl: two train lines with the PPO metrics, then the summary.
  const std::string metrics = read_file(out + "/metrics.jsonl");
  std::vector<nlohmann::json> lines;
  size_t start = 0;
  while (start < metrics.size()) {
    size_t end = metrics.find('\n', start);
    lines.push_back(nlohmann::json::parse(metrics.substr(start, end - start)));
    start = end + 1;
  }
  ASSERT_EQ(lines.size(), 3u);
  for (const char* key : {"reward", "reward_std", "objective/kl", "objective/entropy", "policy/clipfrac_avg",
                          "loss/value_avg", "policy/approxkl_avg", "loss/policy_avg", "learning_rate",
                          "response_length", "elapsed_seconds"})
    EXPECT_TRUE(lines[0].contains(key)) << key;
  EXPECT_EQ(lines[2]["type"], "summary");
  // Both rewards count (length always 1, keyword ×2): every score is 1 or 3.
  for (int i = 0; i < 2; i++) {
    const double r = lines[size_t(i)]["reward"].get<double>();
    EXPECT_GE(r, 1.0);
    EXPECT_NEAR(std::fmod(r * 4 - 4, 2.0), 0.0, 1e-9) << r;  // 4 rollouts: (4 + 2·k)/4
  }
  // A second run into the same folder needs --overwrite_output_dir.
  EXPECT_NE(error_of({"--model", kModel, "--train_file", prompts, "--output_dir", out, "--reward", "keyword:Lily"})
                .find("overwrite_output_dir"),
            std::string::npos);
}

// metrics.jsonl lines without the wall-clock fields.
std::vector<std::string> logged_without_clock(const std::string& dir) {
  std::vector<std::string> v;
  const std::string text = read_file(dir + "/metrics.jsonl");
  for (size_t start = 0; start < text.size();) {
    const size_t end = text.find('\n', start);
    nlohmann::json e = nlohmann::json::parse(text.substr(start, end - start));
    for (const char* k : {"elapsed_seconds", "train_runtime", "peak_rss_bytes"}) e.erase(k);
    v.push_back(e.dump());
    start = end + 1;
  }
  return v;
}

// Run a: 4 steps, checkpoint-2 and -4. Run b: only a's checkpoint-2, resumed with --resume_from_checkpoint
// true. Both end byte-identical (adapter, value head, metrics). Two --reward flags both count.
TEST(CmdPpo, ResumeFromCheckpointTwoPlusTwoEqualsFourAndRepeatedRewardFlagsAdd) {
  Scratch s;
  const std::string prompts = s.file("prompts.jsonl", "{\"prompt\":\"Once upon a time,\"}\n{\"prompt\":\"One day,\"}\n");
  auto args = [&](const std::string& out, std::vector<std::string> extra) {
    std::vector<std::string> a{"--model", kModel, "--train_file", prompts, "--output_dir", out,
                               "--reward", "keyword:Lily", "--reward", "length:0:40", "--reward_weights", "2,1",
                               "--max_steps", "4", "--per_device_train_batch_size", "2", "--response_length", "4",
                               "--num_ppo_epochs", "1", "--save_steps", "2", "--num_threads", "1",
                               "--learning_rate", "1e-2", "--ppo_variant", "classic"};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const std::string a = (s.path / "a").string(), b = (s.path / "b").string();
  ASSERT_EQ(run_ppo(args(a, {})), 0);
  // Both --reward flags reached the run (the parser appends repeated list flags) …
  const nlohmann::json cfg = read_json_file(a + "/run_config.json");
  EXPECT_EQ(cfg["reward"], nlohmann::json::array({"keyword:Lily", "length:0:40"})) << cfg["reward"].dump();
  // … and both count: length:0:40 always gives 1, keyword ×2 gives 0 or 2, so every mean is >= 1.
  for (const std::string& line : logged_without_clock(a)) {
    const nlohmann::json e = nlohmann::json::parse(line);
    if (e["type"] == "train") {
      EXPECT_GE(e["reward"].get<double>(), 1.0) << line;
    }
  }
  fs::create_directories(b);
  fs::copy(a + "/checkpoint-2", b + "/checkpoint-2", fs::copy_options::recursive);
  ASSERT_EQ(run_ppo(args(b, {"--resume_from_checkpoint", "true"})), 0);
  for (const char* f : {"adapter_model.safetensors", "value_head.safetensors",
                        "checkpoint-4/value_head_optimizer.safetensors", "checkpoint-4/optimizer.safetensors"})
    EXPECT_TRUE(read_file(a + "/" + f) == read_file(b + "/" + f)) << f << " differs";
  EXPECT_EQ(logged_without_clock(a), logged_without_clock(b));
  // A resume folder that does not exist is refused with a clear message.
  EXPECT_NE(error_of(args((s.path / "c").string(), {"--resume_from_checkpoint", (s.path / "nope").string()}))
                .find("not a folder"),
            std::string::npos);
}

TEST(CmdPpo, FullFineTuningKeepsAFrozenReferenceAndSavesTheModel) {
  Scratch s;
  const std::string prompts = s.file("prompts.jsonl", "{\"prompt\":\"Once upon a time,\"}\n");
  const std::string out = (s.path / "out").string();
  ASSERT_EQ(run_ppo({"--model", kModel, "--train_file", prompts, "--output_dir", out, "--reward", "length:0:30",
                     "--method", "full", "--max_steps", "1", "--per_device_train_batch_size", "2",
                     "--response_length", "4", "--num_ppo_epochs", "1", "--num_threads", "1", "--ppo_variant",
                     "classic"}),
            0);
  for (const char* f : {"model.safetensors", "config.json", "value_head.safetensors", "metrics.jsonl"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
  EXPECT_FALSE(fs::exists(fs::path(out) / "adapter_model.safetensors"));
}

TEST(CmdPpo, UserMistakesGiveClearErrorsAndWriteNoAdapter) {
  Scratch s;
  const std::string prompts = s.file("prompts.jsonl", "{\"prompt\":\"Once upon a time,\"}\n");
  const std::string out = (s.path / "out").string();
  const std::vector<std::string> base{"--model", kModel, "--train_file", prompts, "--output_dir", out,
                                      "--max_steps", "1", "--per_device_train_batch_size", "2",
                                      "--response_length", "4", "--num_threads", "1"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return error_of(a);
  };
  // No --reward at all: the option is required.
  EXPECT_NE(error_of(base).find("reward"), std::string::npos) << error_of(base);
  // A reward command that fails / prints a non-number.
  std::string e = with({"--reward", "command:exit 3"});
  EXPECT_NE(e.find("exit status 3"), std::string::npos) << e;
  e = with({"--reward", "command:echo abc; echo 1", "--overwrite_output_dir"});
  EXPECT_NE(e.find("not a number"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(fs::path(out) / "adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(out) / "value_head.safetensors"));
  // A prompt longer than the context (512 tokens for stories260K) names its line.
  const std::string long_prompts =
      s.file("long.jsonl", "{\"prompt\":\"hi\"}\n{\"prompt\":\"" + std::string(3000, 'x') + " y\"}\n");
  std::vector<std::string> a = base;
  a[3] = long_prompts;
  a.insert(a.end(), {"--reward", "keyword:x", "--overwrite_output_dir"});
  e = error_of(a);
  EXPECT_NE(e.find("long.jsonl:2"), std::string::npos) << e;
  e = with({"--reward", "keyword:x", "--reward_weights", "1,2"});
  EXPECT_NE(e.find("reward_weights"), std::string::npos) << e;
  // Contradicting aliases, and an unknown variant.
  e = with({"--reward", "keyword:x", "--ppo_epochs", "2", "--num_ppo_epochs", "3"});
  EXPECT_NE(e.find("disagree"), std::string::npos) << e;
  e = with({"--reward", "keyword:x", "--ppo_variant", "v3"});
  EXPECT_NE(e.find("ppo_variant"), std::string::npos) << e;
}
