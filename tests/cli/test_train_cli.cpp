// `llmtune train` end to end through the built binary on the bundled stories260K model: bad input gives
// ONE "error: " line naming the file/line/field and a nonzero exit; good runs write the PEFT adapter /
// HF model folders, metrics, report and checkpoints; generate --adapter, merge and resume agree with
// each other; progress output is plain (no '\r', no ESC) when stdout is a pipe.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include "model/model.h"

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
  Scratch() : llmtune::cli_test::Scratch("llmtune_traincli_") {}
};

const std::string kStories = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";

// A small {"text"} JSONL file from the first lines of tiny Shakespeare (2 lines per row).
fs::path shakespeare_jsonl(const fs::path& dir, int rows, int skip_rows = 0) {
  const fs::path p = dir / (skip_rows ? "eval.jsonl" : "train.jsonl");
  std::ifstream in(std::string(LLMTUNE_SOURCE_DIR) + "/data/tinyshakespeare/train.txt");
  std::string line, out, text;
  int made = 0, pairs = 0;
  while (made < rows && std::getline(in, line)) {
    if (line.empty()) continue;
    text += (text.empty() ? "" : "\n") + line;
    if (++pairs % 2) continue;
    if (skip_rows > 0) {
      skip_rows--;
    } else {
      out += json{{"text", text}}.dump() + "\n";
      made++;
    }
    text.clear();
  }
  put(p, out);
  return p;
}

// The common arguments of a tiny, fast run.
std::vector<std::string> tiny_run(const fs::path& train, const fs::path& out, std::vector<std::string> extra = {}) {
  std::vector<std::string> a = {"train",           "--model",          kStories,
                                "--train_file",    train.string(),     "--output_dir",
                                out.string(),      "--max_steps",      "4",
                                "--max_seq_length", "32",              "--per_device_train_batch_size",
                                "2",               "--num_threads",    "1",
                                "--learning_rate", "0.02",             "--lr_scheduler_type",
                                "constant",        "--logging_steps",  "1",
                                "--save_steps",    "2"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

std::vector<int32_t> greedy_ids(const std::vector<std::string>& model_args, const fs::path& scratch) {
  std::vector<std::string> a = {"generate", "--prompt", "Once upon a time", "--max_new_tokens", "24", "--json",
                                "--num_threads", "1"};
  a.insert(a.end(), model_args.begin(), model_args.end());
  CliRun r = run_llmtune(a, scratch);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return {};
  return json::parse(r.out)["ids"].get<std::vector<int32_t>>();
}

}  // namespace

// ---------------------------------------------------------------- bad input

TEST(TrainCliErrors, JsonlLineThatDoesNotParseNamesTheLine) {
  REQUIRE_BINARY();
  Scratch s;
  put(s.path / "bad.jsonl", "{\"text\": \"fine\"}\n{\"text\": \"broken\"\n{\"text\": \"fine\"}\n");
  expect_one_error_line(run_llmtune(tiny_run(s.path / "bad.jsonl", s.path / "out"), s.path), {"bad.jsonl:2", "JSON"});
}

TEST(TrainCliErrors, RowMissingItsFieldNamesLineAndField) {
  REQUIRE_BINARY();
  Scratch s;
  put(s.path / "rows.jsonl", "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n");
  expect_one_error_line(run_llmtune(tiny_run(s.path / "rows.jsonl", s.path / "out"), s.path), {"rows.jsonl:2", "\"text\""});
}

TEST(TrainCliErrors, EmptyDataset) {
  REQUIRE_BINARY();
  Scratch s;
  put(s.path / "empty.jsonl", "\n\n");
  expect_one_error_line(run_llmtune(tiny_run(s.path / "empty.jsonl", s.path / "out"), s.path), {"empty.jsonl"});
  put(s.path / "empty.txt", "");
  expect_one_error_line(run_llmtune(tiny_run(s.path / "empty.txt", s.path / "out"), s.path), {"empty.txt"});
}

TEST(TrainCliErrors, TargetModulesMatchingNothingListsLinearModules) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 4);
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--target_modules", "qkv_proj"}), s.path),
                   {"qkv_proj", "matched no module", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                    "down_proj"});
}

TEST(TrainCliErrors, RankMustBePositive) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 4);
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--r", "0"}), s.path), {"r", "0"});
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--r", "-3"}), s.path), {"r", "-3"});
}

TEST(TrainCliErrors, UnknownSchedulerAndOptimizerListValidNames) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 4);
  std::vector<std::string> a = tiny_run(train, s.path / "out");
  a.insert(a.end(), {"--lr_scheduler_type", "cosin"});  // the later flag wins
  expect_one_error_line(run_llmtune(a, s.path), {"lr_scheduler_type", "cosin", "linear", "cosine", "constant_with_warmup"});
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--optim", "adam"}), s.path),
                   {"optim", "'adam'", "adamw_torch", "sgd"});
  EXPECT_FALSE(fs::exists(s.path / "out")) << "nothing is written before the arguments are checked";
}

TEST(TrainCliErrors, OutputDirOfAnotherRunIsRefusedUnlessOverwrite) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 6);
  CliRun first = run_llmtune(tiny_run(train, s.path / "out", {"--max_steps", "2"}), s.path);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--max_steps", "2"}), s.path),
                   {(s.path / "out").string(), "another run", "overwrite_output_dir", "resume_from_checkpoint"});
  CliRun again = run_llmtune(tiny_run(train, s.path / "out", {"--max_steps", "2", "--overwrite_output_dir"}), s.path);
  EXPECT_EQ(again.exit_code, 0) << again.err;
}

TEST(TrainCliErrors, ResumeFromACheckpointOfAnotherModelOrAdapter) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 6);
  CliRun first = run_llmtune(tiny_run(train, s.path / "out", {"--max_steps", "2", "--r", "4"}), s.path);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(fs::exists(s.path / "out" / "checkpoint-2"));
  // Another adapter shape (r 8) …
  expect_one_error_line(run_llmtune(tiny_run(train, s.path / "out", {"--r", "8", "--resume_from_checkpoint", "true"}), s.path),
                   {"checkpoint-2", "different model"});
  // … and a full fine-tuning run of the model (another set of trainable params).
  expect_one_error_line(
      run_llmtune(tiny_run(train, s.path / "out",
                       {"--method", "full", "--resume_from_checkpoint", (s.path / "out" / "checkpoint-2").string()}),
              s.path),
      {"checkpoint-2", "different model"});
}

// ---------------------------------------------------------------- good runs

TEST(TrainCli, TinyLoraRunWritesAdapterMetricsReportCheckpointsAndPlainProgress) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 8);
  const fs::path eval = shakespeare_jsonl(s.path, 3, 8);
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_run(train, out, {"--eval_file", eval.string(), "--eval_steps", "2"}), s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "metrics.jsonl", "report.html",
                        "run_config.json", "trainer_state.json", "checkpoint-2", "checkpoint-4",
                        "checkpoint-4/adapter_model.safetensors", "checkpoint-4/optimizer.safetensors",
                        "checkpoint-4/trainer_state.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const json cfg = json::parse(slurp(out / "adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 8);
  int train_lines = 0, eval_lines = 0;
  std::istringstream metrics(slurp(out / "metrics.jsonl"));
  for (std::string line; std::getline(metrics, line);) {
    const json e = json::parse(line);
    train_lines += e.value("type", "") == "train";
    eval_lines += e.value("type", "") == "eval";
  }
  EXPECT_EQ(train_lines, 4) << "logging_steps 1";
  EXPECT_GE(eval_lines, 2);
  // stdout is a pipe: plain lines only.
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.err.find('\r'), std::string::npos);
  EXPECT_EQ(r.err.find('\x1b'), std::string::npos);
  EXPECT_NE(r.out.find("trainable params: "), std::string::npos);
  EXPECT_NE(r.out.find("step 4 | loss"), std::string::npos) << r.out;
}

TEST(TrainCli, FullMethodWritesALoadableModelFolder) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 6);
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_run(train, out, {"--method", "full", "--max_steps", "2", "--learning_rate", "0.001"}), s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "checkpoint-2/model.safetensors"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  EXPECT_FALSE(fs::exists(out / "adapter_config.json"));
  llmtune::Model trained = llmtune::load_model(out.string()), base = llmtune::load_model(kStories);
  ASSERT_EQ(trained.params.size(), base.params.size());
  int changed = 0;
  for (const auto& p : base.params) {
    llmtune::Param* q = trained.find(p.name);
    ASSERT_NE(q, nullptr) << p.name;
    changed += std::memcmp(q->value.data, p.value.data, p.value.nbytes()) != 0;
  }
  EXPECT_EQ(changed, int(base.params.size())) << "full fine-tuning moves every tensor";
  EXPECT_FALSE(greedy_ids({"--model", out.string()}, s.path).empty()) << "the folder works with generate";
}

TEST(TrainCli, FreezeMethodTrainsOnlyTheLastBlock) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 6);
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_run(train, out,
                              {"--method", "freeze", "--trainable_layers", "1", "--max_steps", "2", "--learning_rate",
                               "0.001", "--train_lm_head", "false"}),
                     s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  llmtune::Model trained = llmtune::load_model(out.string()), base = llmtune::load_model(kStories);
  const std::string last = "model.layers." + std::to_string(base.cfg.num_layers - 1) + ".";
  int moved = 0;
  for (const auto& p : base.params) {
    llmtune::Param* q = trained.find(p.name);
    ASSERT_NE(q, nullptr) << p.name;
    const bool same = std::memcmp(q->value.data, p.value.data, p.value.nbytes()) == 0;
    const bool should_train = p.name.rfind(last, 0) == 0 || p.name == "model.norm.weight";
    if (should_train) moved += !same;
    else EXPECT_TRUE(same) << p.name << " is frozen and must not change";
  }
  EXPECT_GT(moved, 5);
}

TEST(TrainCli, GenerateWithAdapterDiffersFromBaseAndMergeEqualsBasePlusAdapter) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 8);
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune(tiny_run(train, out, {"--learning_rate", "0.05"}), s.path);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int32_t> base = greedy_ids({"--model", kStories}, s.path);
  const std::vector<int32_t> adapted = greedy_ids({"--model", kStories, "--adapter", out.string()}, s.path);
  ASSERT_FALSE(base.empty());
  ASSERT_FALSE(adapted.empty());
  EXPECT_NE(adapted, base) << "the adapter changes the greedy continuation";

  CliRun m = run_llmtune({"merge", "--model", kStories, "--adapter", out.string(), "--output", (s.path / "merged").string(),
                      "--num_threads", "1"},
                     s.path);
  ASSERT_EQ(m.exit_code, 0) << m.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    EXPECT_TRUE(fs::exists(s.path / "merged" / f)) << f;
  EXPECT_EQ(greedy_ids({"--model", (s.path / "merged").string()}, s.path), adapted);
}

TEST(TrainCli, ResumeTwoPlusTwoEqualsFourStepsByteForByte) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path train = shakespeare_jsonl(s.path, 12);
  const fs::path eval = shakespeare_jsonl(s.path, 2, 12);
  const std::vector<std::string> with_eval = {"--eval_file", eval.string(), "--eval_steps", "2"};
  CliRun straight = run_llmtune(tiny_run(train, s.path / "a", with_eval), s.path);
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  std::vector<std::string> half_args = with_eval;
  half_args.insert(half_args.end(), {"--max_steps", "2"});
  CliRun half = run_llmtune(tiny_run(train, s.path / "b", half_args), s.path);
  ASSERT_EQ(half.exit_code, 0) << half.err;
  std::vector<std::string> resume_args = with_eval;
  resume_args.insert(resume_args.end(), {"--resume_from_checkpoint", "true"});
  CliRun resumed = run_llmtune(tiny_run(train, s.path / "b", resume_args), s.path);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  const std::string a = slurp(s.path / "a" / "adapter_model.safetensors");
  ASSERT_GT(a.size(), 1000u);
  EXPECT_TRUE(a == slurp(s.path / "b" / "adapter_model.safetensors")) << "adapters differ";
  EXPECT_TRUE(slurp(s.path / "a/checkpoint-4/optimizer.safetensors") ==
              slurp(s.path / "b/checkpoint-4/optimizer.safetensors"));
  // The same log entries (metrics.jsonl minus timings): train losses, learning rates, grad norms and
  // evaluations, each exactly once.
  auto entries = [&](const fs::path& dir) {
    std::vector<std::string> v;
    std::istringstream in(slurp(dir / "metrics.jsonl"));
    for (std::string line; std::getline(in, line);) {
      const json e = json::parse(line);
      json kept;
      for (const char* k : {"type", "step", "loss", "learning_rate", "grad_norm", "eval_loss", "epoch"})
        if (e.contains(k)) kept[k] = e[k];
      if (e.value("type", "") != "summary") v.push_back(kept.dump());
    }
    return v;
  };
  const std::vector<std::string> ea = entries(s.path / "a"), eb = entries(s.path / "b");
  EXPECT_EQ(ea, eb);
  EXPECT_EQ(std::count_if(ea.begin(), ea.end(), [](const std::string& e) { return e.find("\"train\"") != std::string::npos; }), 4);
  EXPECT_EQ(std::count_if(ea.begin(), ea.end(), [](const std::string& e) { return e.find("\"eval\"") != std::string::npos; }), 3)
      << "before training, at step 2 and at step 4";
}

// `llmtune train` with options but neither --model nor --config runs the main job (configs/default.yaml)
// with those options on top; naming a model keeps the default config out of it.
TEST(TrainCli, OptionsWithoutModelOrConfigRunTheMainJobWithThem) {
  REQUIRE_BINARY();
  Scratch s;
  const fs::path out = s.path / "out";
  CliRun r = run_llmtune({"train", "--max_steps", "2", "--eval_strategy", "no", "--num_threads", "1",
                          "--output_dir", out.string()},
                         s.path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("no --model or --config: running the main job from"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(out / "adapter_model.safetensors"));
  const json state = json::parse(slurp(out / "trainer_state.json"));
  EXPECT_EQ(state["global_step"], 2);
  // With --model, the default config is not read: the data file becomes required.
  CliRun m = run_llmtune({"train", "--model", kStories, "--max_steps", "2", "--output_dir", (s.path / "o2").string()},
                         s.path);
  EXPECT_NE(m.exit_code, 0);
  EXPECT_EQ(m.out.find("running the main job"), std::string::npos);
}
