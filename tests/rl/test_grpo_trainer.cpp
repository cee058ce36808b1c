// GRPO on the bundled stories260K with a keyword reward, plus the reward functions' rules and errors.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "core/error.h"
#include "core/threads.h"
#include "model/generate.h"
#include "model/model.h"
#include "peft/lora.h"
#include "rl/grpo_trainer.h"
#include "rl/rewards.h"
#include "tokenizer/tokenizer.h"

using namespace llmtune;
using namespace llmtune::rl;

namespace {

std::string model_dir() { return std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K"; }

double sampled_reward(Model& m, const Tokenizer& tok, const std::vector<PromptRow>& prompts,
                      const std::vector<RewardSpec>& specs, int64_t per_prompt, int64_t max_new, uint64_t seed) {
  std::vector<std::vector<int32_t>> in;
  std::vector<RewardInput> ri;
  for (const auto& p : prompts)
    for (int64_t i = 0; i < per_prompt; i++) in.push_back(p.ids);
  GenerateOptions g;
  g.max_new_tokens = max_new;
  g.sampling.do_sample = true;
  g.seed = seed;
  g.eos_ids = m.cfg.eos_token_ids;
  auto out = generate(m, in, g);
  for (size_t i = 0; i < out.size(); i++) ri.push_back({"", tok.decode(out[i], true), ""});
  auto r = compute_rewards(specs, ri);
  double s = 0;
  for (float x : r) s += x;
  return s / double(r.size());
}

}  // namespace

TEST(Rewards, RulesAndCommand) {
  std::vector<RewardInput> in{{"p", "the cat sat #### 1,234", "#### 1234"}, {"p", "a dog", "5"}};
  EXPECT_EQ(compute_rewards({parse_reward_spec("keyword:cat")}, in), (std::vector<float>{1, 0}));
  EXPECT_EQ(compute_rewards({parse_reward_spec("regex:^a d")}, in), (std::vector<float>{0, 1}));
  EXPECT_EQ(compute_rewards({parse_reward_spec("length:0:5")}, in), (std::vector<float>{0, 1}));
  EXPECT_EQ(compute_rewards({parse_reward_spec("gsm8k")}, in), (std::vector<float>{1, 0}));
  EXPECT_EQ(compute_rewards({parse_reward_spec("keyword:cat"), parse_reward_spec("length:0:100")}, in),
            (std::vector<float>{2, 1}));
  // The command reads the JSONL and prints one number per line.
  EXPECT_EQ(compute_rewards({parse_reward_spec("command:grep -c cat | head -c0; printf '0.5\\n-2\\n'")}, in),
            (std::vector<float>{0.5f, -2.f}));
  auto msg = [&](const std::string& spec) {
    try {
      compute_rewards({parse_reward_spec(spec)}, in);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg("command:exit 3").find("failed (exit status 3)"), std::string::npos) << msg("command:exit 3");
  EXPECT_NE(msg("command:printf '1\\nabc\\n'").find("not a number"), std::string::npos);
  EXPECT_NE(msg("command:printf '1\\nnan\\n'").find("finite"), std::string::npos);
  EXPECT_NE(msg("command:printf '1\\n'").find("printed 1 numbers for 2"), std::string::npos);
  EXPECT_THROW(parse_reward_spec("regex:(("), Error);
  EXPECT_THROW(parse_reward_spec("bogus:x"), Error);
}

TEST(GrpoTrainer, PromptLongerThanContextFails) {
  auto enc = [](std::string_view s, bool) { return std::vector<int32_t>(s.size(), 5); };
  EXPECT_THROW(parse_prompt_rows("{\"prompt\":\"" + std::string(600, 'x') + "\"}\n", "p.jsonl", enc, 512, 8), Error);
  EXPECT_THROW(parse_prompt_rows("{\"text\":\"x\"}\n", "p.jsonl", enc, 512, 8), Error);
}

TEST(GrpoTrainer, KeywordRewardRises) {
  set_num_threads(1);
  const auto t0 = std::chrono::steady_clock::now();
  Model m = load_model(model_dir());
  Tokenizer tok = Tokenizer::load(model_dir());
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  Rng rng(1);
  LoraConfig lc;
  lc.r = 8;
  lc.lora_alpha = 16;
  lc.target_modules = ModuleSelector::pattern("all-linear");
  apply_lora(m, lc, rng);
  std::vector<PromptRow> prompts = parse_prompt_rows(
      "{\"prompt\":\"Once upon a time,\"}\n{\"prompt\":\"One day,\"}\n{\"prompt\":\"Tom and\"}\n", "mem", enc, 512, 12);
  std::vector<RewardSpec> specs{parse_reward_spec("keyword:Lily")};
  const double before = sampled_reward(m, tok, prompts, specs, 16, 12, 99);
  GrpoArgs a;
  a.num_generations = 8;
  a.prompts_per_step = 3;
  a.max_new_tokens = 12;
  a.max_steps = 20;
  a.learning_rate = 3e-3;
  a.lr_scheduler_type = "constant";
  a.loss.beta = 0.04;
  a.eos_ids = m.cfg.eos_token_ids;
  GrpoHooks h;
  h.decode = [&](const std::vector<int32_t>& ids) { return tok.decode(ids, true); };
  GrpoTrainResult r = grpo_train(m, nullptr, prompts, specs, a, h);
  const double after = sampled_reward(m, tok, prompts, specs, 16, 12, 99);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("GRPO keyword 'Lily': mean reward %.3f -> %.3f (48 samples each), %.1f s\n", before, after, secs);
  EXPECT_GE(after - before, 0.3);
}
