// RL checkpoints and resume (rl/rl_checkpoint.h) through the DPO and GRPO trainers on the bundled
// stories260K with LoRA (dropout on, so the RNG state matters): a run interrupted after step 4 and resumed
// from checkpoint-3 ends bit for bit where an uninterrupted 6-step run ends (params, optimizer state and
// every logged value); failures — mid-run and inside a checkpoint write — leave the earlier checkpoints
// intact and loadable and no partial folder; output_dir / fingerprint / trainer mix-ups are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "model/model.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "rl/dpo_trainer.h"
#include "rl/grpo_trainer.h"
#include "rl/rewards.h"
#include "rl/rl_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace llmtune;
using namespace llmtune::rl;
using nlohmann::json;

namespace {

const std::string kModel = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";

struct Scratch {
  fs::path path;
  Scratch() {
    path = fs::temp_directory_path() / ("llmtune_rlckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) { return read_file(p.string()); }

// metrics.jsonl without the wall-clock fields.
std::vector<std::string> logged(const fs::path& dir) {
  std::vector<std::string> out;
  std::istringstream in(slurp(dir / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line);
    for (const char* k : {"elapsed_seconds", "train_runtime", "peak_rss_bytes"}) e.erase(k);
    out.push_back(e.dump());
  }
  return out;
}

// Entries of the folder that are not complete checkpoints / known files (leftovers of a failed write).
std::vector<std::string> stray_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos || n.find(".old.") != std::string::npos) out.push_back(n);
  }
  return out;
}

struct Policy {
  Model m = load_model(kModel);
  Tokenizer tok = Tokenizer::load(kModel);
  LoraConfig lora;
  explicit Policy(uint64_t seed) {
    Rng rng(seed);
    LoraConfig c;
    c.r = 4;
    c.lora_alpha = 8;
    c.lora_dropout = 0.1;
    c.target_modules = ModuleSelector::pattern("all-linear");
    lora = apply_lora(m, c, rng);
  }
  void save(const std::string& dir) const { save_adapter(m, lora, dir); }
  // What cli::load_trained_weights does for LoRA: copy the values into the live params.
  void load(const std::string& dir) {
    Model tmp = load_model(kModel);
    load_adapter(tmp, dir, true);
    for (auto& p : m.params)
      if (p.trainable) {
        Param* q = tmp.find(p.name);
        ASSERT_TRUE(q && q->value.shape == p.value.shape) << p.name;
        std::memcpy(p.value.data, q->value.data, p.value.nbytes());
      }
  }
  std::vector<std::string> trainable_bytes() const {
    std::vector<std::string> v;
    for (const auto& p : m.params)
      if (p.trainable) v.emplace_back(static_cast<const char*>(p.value.data), p.value.nbytes());
    return v;
  }
};

// ---------------------------------------------------------------- DPO

std::vector<PreferencePair> dpo_pairs(const Policy& p, const std::vector<std::string>& subjects) {
  std::string jsonl;
  for (const auto& s : subjects)
    jsonl += "{\"prompt\": \"Once upon a time,\", \"chosen\": \" the " + s + " was happy.\", \"rejected\": \" the " +
             s + " was sad.\"}\n";
  EncodeFn enc = [&](std::string_view s, bool special) { return p.tok.encode(s, special); };
  return parse_preference_pairs(jsonl, "mem", enc, TokenIds{p.tok.bos_id(), p.tok.eos_id(), p.tok.pad_id()}, 64).pairs;
}

DpoArgs dpo_args(const fs::path& out) {
  DpoArgs a;
  a.output_dir = out.string();
  a.learning_rate = 5e-3;
  a.max_steps = 6;
  a.per_device_train_batch_size = 2;  // 5 pairs: 3 micro-batches an epoch, so windows cross epochs
  a.gradient_accumulation_steps = 2;
  a.logging_steps = 2;                // accumulators are mid-interval at the checkpoint (step 3)
  a.eval_steps = 2;
  a.save_steps = 3;
  a.seed = 7;
  return a;
}

DpoHooks dpo_hooks(Policy& p) {
  DpoHooks h;
  h.save_model = [&p](const std::string& d) { p.save(d); };
  h.load_model_weights = [&p](const std::string& d) { p.load(d); };
  return h;
}

}  // namespace

TEST(RlCheckpoint, DpoResumedThreePlusThreeEqualsSixBitForBit) {
  set_num_threads(1);
  Scratch s;
  const std::vector<std::string> subjects = {"cat", "dog", "bird", "fish", "frog"};
  // Uninterrupted.
  Policy a(11);
  const auto train_a = dpo_pairs(a, subjects), eval_a = dpo_pairs(a, {"bear", "duck"});
  DpoTrainResult ra = dpo_train(a.m, nullptr, train_a, eval_a, dpo_args(s.path / "a"), dpo_hooks(a));
  ASSERT_EQ(ra.steps, 6);
  EXPECT_TRUE(fs::exists(s.path / "a/checkpoint-3/optimizer.safetensors"));
  EXPECT_TRUE(fs::exists(s.path / "a/checkpoint-6/trainer_state.json")) << "final checkpoint at max_steps (HF)";

  // Interrupted during step 4 (after checkpoint-3), then resumed in a fresh process-like setup.
  {
    Policy b(11);
    const auto train_b = dpo_pairs(b, subjects), eval_b = dpo_pairs(b, {"bear", "duck"});
    DpoHooks h = dpo_hooks(b);
    h.on_step = [](int64_t step, int64_t, double) {
      if (step == 4) fail("simulated crash at step 4");
    };
    EXPECT_THROW(dpo_train(b.m, nullptr, train_b, eval_b, dpo_args(s.path / "b"), h), Error);
  }
  ASSERT_TRUE(fs::exists(s.path / "b/checkpoint-3"));
  EXPECT_FALSE(fs::exists(s.path / "b/checkpoint-4"));
  EXPECT_TRUE(stray_entries(s.path / "b").empty());
  Policy b(999);  // another LoRA init: the checkpoint's values must replace it
  const auto train_b = dpo_pairs(b, subjects), eval_b = dpo_pairs(b, {"bear", "duck"});
  DpoArgs resume = dpo_args(s.path / "b");
  resume.resume_from_checkpoint = "true";
  DpoTrainResult rb = dpo_train(b.m, nullptr, train_b, eval_b, resume, dpo_hooks(b));

  EXPECT_TRUE(a.trainable_bytes() == b.trainable_bytes()) << "params differ after resume";
  EXPECT_TRUE(slurp(s.path / "a/checkpoint-6/optimizer.safetensors") ==
              slurp(s.path / "b/checkpoint-6/optimizer.safetensors"));
  EXPECT_EQ(logged(s.path / "a"), logged(s.path / "b"));
  EXPECT_EQ(ra.train_loss, rb.train_loss);
  int train_entries = 0, eval_entries = 0;
  for (const auto& e : logged(s.path / "a")) {
    train_entries += e.find("\"type\":\"train\"") != std::string::npos;
    eval_entries += e.find("\"type\":\"eval\"") != std::string::npos;
  }
  EXPECT_EQ(train_entries, 3);  // steps 2, 4, 6
  EXPECT_EQ(eval_entries, 4);   // before training, steps 2, 4, 6
  const json ts = json::parse(slurp(s.path / "b/trainer_state.json"));
  EXPECT_EQ(ts["global_step"], 6);
  EXPECT_EQ(ts["max_steps"], 6);
}

TEST(RlCheckpoint, FailedCheckpointWriteLeavesEarlierCheckpointsAndNoPartialFolder) {
  set_num_threads(1);
  Scratch s;
  Policy p(3);
  const auto pairs = dpo_pairs(p, {"cat", "dog", "bird"});
  DpoArgs a = dpo_args(s.path / "out");
  a.save_steps = 2;
  a.max_steps = 4;
  a.eval_steps = 0;
  int saves = 0;
  DpoHooks h = dpo_hooks(p);
  h.save_model = [&](const std::string& d) {
    if (++saves == 2) {
      p.save(d);  // half of the folder is written …
      fail("disk full (simulated) while writing ", d);
    }
    p.save(d);
  };
  EXPECT_THROW(dpo_train(p.m, nullptr, pairs, {}, a, h), Error);
  EXPECT_TRUE(fs::exists(s.path / "out/checkpoint-2/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(s.path / "out/checkpoint-2/trainer_state.json"));
  EXPECT_FALSE(fs::exists(s.path / "out/checkpoint-4"));
  EXPECT_TRUE(stray_entries(s.path / "out").empty());
  // checkpoint-2 loads and training continues from it.
  Policy q(3);
  a.resume_from_checkpoint = (s.path / "out/checkpoint-2").string();
  DpoTrainResult r = dpo_train(q.m, nullptr, dpo_pairs(q, {"cat", "dog", "bird"}), {}, a, dpo_hooks(q));
  EXPECT_EQ(r.steps, 4);
  EXPECT_TRUE(fs::exists(s.path / "out/checkpoint-4/optimizer.safetensors"));
}

TEST(RlCheckpoint, RotationOutputDirAndMismatchErrors) {
  set_num_threads(1);
  Scratch s;
  Policy p(5);
  const auto pairs = dpo_pairs(p, {"cat", "dog"});
  DpoArgs a = dpo_args(s.path / "out");
  a.max_steps = 4;
  a.save_steps = 1;
  a.save_total_limit = 2;
  a.eval_steps = 0;
  dpo_train(p.m, nullptr, pairs, {}, a, dpo_hooks(p));
  std::vector<std::string> cks;
  for (const auto& e : fs::directory_iterator(s.path / "out"))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) cks.push_back(e.path().filename().string());
  std::sort(cks.begin(), cks.end());
  EXPECT_EQ(cks, (std::vector<std::string>{"checkpoint-3", "checkpoint-4"}));

  auto message = [&](const DpoArgs& args, Policy& pol) {
    try {
      dpo_train(pol.m, nullptr, pairs, {}, args, dpo_hooks(pol));
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  // Another run in the same output_dir is refused (and nothing is deleted) …
  Policy p2(5);
  EXPECT_NE(message(a, p2).find("already holds another run"), std::string::npos);
  EXPECT_TRUE(fs::exists(s.path / "out/checkpoint-4"));
  // … a different adapter shape is refused on resume …
  Model other = load_model(kModel);
  Rng rng(1);
  LoraConfig c;
  c.r = 2;
  c.target_modules = ModuleSelector::pattern("all-linear");
  Policy p3(5);
  remove_lora(p3.m);
  p3.lora = apply_lora(p3.m, c, rng);
  DpoArgs resume = a;
  resume.resume_from_checkpoint = "true";
  EXPECT_NE(message(resume, p3).find("different model or adapter"), std::string::npos) << message(resume, p3);
  // … a GRPO checkpoint is not a DPO one …
  json ls = json::parse(slurp(s.path / "out/checkpoint-4/llmtune_state.json"));
  ls["trainer"] = "grpo";
  std::ofstream(s.path / "out/checkpoint-4/llmtune_state.json") << ls.dump();
  Policy p4(5);
  EXPECT_NE(message(resume, p4).find("it is a grpo checkpoint"), std::string::npos) << message(resume, p4);
  // … and overwrite_output_dir starts over, clearing the old checkpoints.
  DpoArgs over = a;
  over.overwrite_output_dir = true;
  over.save_steps = 0;
  Policy p5(5);
  EXPECT_EQ(message(over, p5), "no error");
  EXPECT_FALSE(fs::exists(s.path / "out/checkpoint-3"));
  EXPECT_FALSE(fs::exists(s.path / "out/checkpoint-4"));
}

// ---------------------------------------------------------------- GRPO

namespace {

GrpoArgs grpo_args(const fs::path& out, const Policy& p) {
  GrpoArgs a;
  a.output_dir = out.string();
  a.num_generations = 4;
  a.prompts_per_step = 2;
  a.max_new_tokens = 8;
  a.max_steps = 6;
  a.learning_rate = 5e-3;
  a.loss.beta = 0.04;  // the adapters-off reference is exercised too
  a.logging_steps = 1;
  a.save_steps = 3;
  a.seed = 5;
  a.eos_ids = p.m.cfg.eos_token_ids;
  return a;
}

GrpoHooks grpo_hooks(Policy& p) {
  GrpoHooks h;
  h.save_model = [&p](const std::string& d) { p.save(d); };
  h.load_model_weights = [&p](const std::string& d) { p.load(d); };
  h.decode = [&p](const std::vector<int32_t>& ids) { return p.tok.decode(ids, true); };
  return h;
}

std::vector<PromptRow> grpo_prompts(const Policy& p) {
  EncodeFn enc = [&](std::string_view s, bool special) { return p.tok.encode(s, special); };
  return parse_prompt_rows("{\"prompt\":\"Once upon a time,\"}\n{\"prompt\":\"One day,\"}\n{\"prompt\":\"Tom and\"}\n",
                           "prompts.jsonl", enc, 512, 8);
}

}  // namespace

TEST(RlCheckpoint, GrpoResumedAfterAFailingRewardCommandEqualsUninterruptedRun) {
  set_num_threads(1);
  Scratch s;
  const fs::path flag = s.path / "make_the_reward_command_fail";
  // keyword reward + a command that scores 0 per line, or fails (exit 3) while the flag file exists.
  const std::vector<RewardSpec> specs = {
      parse_reward_spec("keyword:Lily"),
      parse_reward_spec("command:if [ -e '" + flag.string() + "' ]; then exit 3; fi; sed 's/.*/0/'")};
  Policy a(21);
  GrpoTrainResult ra = grpo_train(a.m, nullptr, grpo_prompts(a), specs, grpo_args(s.path / "a", a), grpo_hooks(a));
  ASSERT_EQ(ra.reward_mean.size(), 6u);

  {
    Policy b(21);
    GrpoHooks h = grpo_hooks(b);
    h.on_step = [&](int64_t step, int64_t, double, double) {
      if (step == 3) std::ofstream(flag) << "x";  // step 4's reward command fails
    };
    try {
      grpo_train(b.m, nullptr, grpo_prompts(b), specs, grpo_args(s.path / "b", b), h);
      ADD_FAILURE() << "the failing reward command must stop the run";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("failed (exit status 3)"), std::string::npos) << e.what();
    }
  }
  ASSERT_TRUE(fs::exists(s.path / "b/checkpoint-3/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(s.path / "b/checkpoint-4"));
  EXPECT_TRUE(stray_entries(s.path / "b").empty());
  fs::remove(flag);

  Policy b(77);
  GrpoArgs resume = grpo_args(s.path / "b", b);
  resume.resume_from_checkpoint = "true";
  GrpoTrainResult rb = grpo_train(b.m, nullptr, grpo_prompts(b), specs, resume, grpo_hooks(b));
  EXPECT_TRUE(a.trainable_bytes() == b.trainable_bytes()) << "params differ after resume";
  EXPECT_TRUE(slurp(s.path / "a/checkpoint-6/optimizer.safetensors") ==
              slurp(s.path / "b/checkpoint-6/optimizer.safetensors"));
  EXPECT_EQ(ra.reward_mean, rb.reward_mean);
  const std::vector<std::string> la = logged(s.path / "a"), lb = logged(s.path / "b");
  EXPECT_EQ(la, lb);
  EXPECT_EQ(la.size(), 7u) << "6 train lines + summary";
  // The run moved: a step with a non-zero loss and changed adapters (else the comparison proves little).
  Policy fresh(21);
  EXPECT_FALSE(fresh.trainable_bytes() == a.trainable_bytes());
}
