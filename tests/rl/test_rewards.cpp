// Reward functions (rl/rewards.h, rl/reward_model.h): every bad-input path of the external command gives
// one clear error naming the spec; weights; and the `model:DIR` reward — a tiny reward model built here
// (full seq-cls folder and SEQ_CLS LoRA adapter folder) scores exactly what its head gives when called
// directly at the last real token of prompt ⊕ response ⊕ EOS.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/threads.h"
#include "model/heads.h"
#include "model/model.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "rl/grpo_trainer.h"
#include "rl/reward_model.h"
#include "rl/rewards.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using namespace llmtune;
using namespace llmtune::rl;

namespace {

const std::string kModel = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";

struct Scratch {
  fs::path path;
  Scratch() {
    path = fs::temp_directory_path() / ("llmtune_rewards_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const std::vector<RewardInput> kTwo{{"Once", " upon a time", ""}, {"One day,", " Lily", ""}};

std::string error_of(const std::vector<std::string>& specs, const std::vector<RewardInput>& in = kTwo) {
  try {
    std::vector<RewardSpec> s;
    for (const auto& x : specs) s.push_back(parse_reward_spec(x));
    compute_rewards(s, in);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

#define EXPECT_HAS(text, needle) EXPECT_NE(std::string(text).find(needle), std::string::npos) << (text)

void copy_tokenizer(const fs::path& to) {
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(fs::path(kModel) / f, to / f, fs::copy_options::overwrite_existing);
}

// The head's output for one sequence, run alone (B = 1, no padding).
float direct_reward(Model& m, const std::vector<int32_t>& ids) {
  Workspace ws;
  DecoderInput in;
  in.B = 1;
  in.T = int64_t(ids.size());
  in.ids = ids.data();
  decoder_forward(m, ws, in);
  return head_forward(classification_head(m), ws, nullptr).logits.at(0);
}

std::vector<RewardInput> texts() {
  return {{"Once upon a time,", " there was a little girl named Lily.", ""},
          {"One day,", " the cat sat", ""},
          {"", "Tom and his dog went to the park and played all day long.", ""},
          {"The sun", "", ""}};
}

}  // namespace

TEST(Rewards, CommandFailuresAreOneClearErrorNamingTheCommand) {
  EXPECT_HAS(error_of({"command:exit 3"}), "reward command 'exit 3' failed (exit status 3)");
  EXPECT_HAS(error_of({"command:kill -9 $$"}), "killed by signal 9");
  EXPECT_HAS(error_of({"command:printf '1\\nabc\\n'"}), "output line 2 is not a number: 'abc'");
  EXPECT_HAS(error_of({"command:printf '1\\n2.5x\\n'"}), "not a number");
  EXPECT_HAS(error_of({"command:printf '1\\nnan\\n'"}), "output line 2 is nan (rewards must be finite)");
  EXPECT_HAS(error_of({"command:printf 'inf\\n1\\n'"}), "must be finite");
  EXPECT_HAS(error_of({"command:printf '1\\n'"}), "printed 1 numbers for 2 responses");
  EXPECT_HAS(error_of({"command:printf '1\\n2\\n3\\n'"}), "printed 3 numbers for 2 responses");
  EXPECT_HAS(error_of({"command:no_such_program_llmtune_xyz"}), "failed (exit status 127)");
  EXPECT_HAS(error_of({"bogus:x"}), "unknown kind 'bogus'");
  EXPECT_HAS(error_of({"command:"}), "command needs a shell command");
  EXPECT_HAS(error_of({"gsm8k"}), "no \"answer\"");
  // Good output: CRLF and trailing blanks are tolerated; the command sees the JSONL.
  std::vector<RewardSpec> ok{parse_reward_spec("command:grep -c '\"response\":\" Lily\"' >/dev/null; printf '0.5\\r\\n-2 \\n'")};
  EXPECT_EQ(compute_rewards(ok, kTwo), (std::vector<float>{0.5f, -2.f}));
  std::vector<RewardSpec> echo{parse_reward_spec("command:python3 -c 'import sys,json\nfor l in sys.stdin: print(len(json.loads(l)[\"response\"]))'")};
  EXPECT_EQ(compute_rewards(echo, kTwo), (std::vector<float>{12.f, 5.f}));
}

TEST(Rewards, WeightsAndPerSpecTerms) {
  std::vector<RewardSpec> s{parse_reward_spec("keyword:Lily"), parse_reward_spec("length:0:6")};
  s[0].weight = 2.0;
  s[1].weight = -0.5;
  const auto terms = compute_reward_terms(s, kTwo);
  ASSERT_EQ(terms.size(), 2u);
  EXPECT_EQ(terms[0], (std::vector<float>{0, 1}));
  EXPECT_EQ(terms[1], (std::vector<float>{0, 1}));
  EXPECT_EQ(compute_rewards(s, kTwo), (std::vector<float>{0.f, 1.5f}));
  // A weight that overflows the total is a clear error, not a NaN advantage.
  std::vector<RewardSpec> big{parse_reward_spec("command:printf '1e38\\n1e38\\n'")};
  big[0].weight = 1e10;
  try {
    compute_rewards(big, kTwo);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "must be finite");
  }
}

TEST(Rewards, PromptLongerThanTheContextNamesTheLine) {
  auto enc = [](std::string_view s, bool) { return std::vector<int32_t>(s.size(), 5); };
  try {
    parse_prompt_rows("{\"prompt\":\"ok\"}\n{\"prompt\":\"" + std::string(600, 'x') + "\"}\n", "p.jsonl", enc, 512, 8);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_HAS(e.what(), "p.jsonl:2");
    EXPECT_HAS(e.what(), "context of 512");
    EXPECT_HAS(e.what(), "max_completion_length");
  }
}

TEST(RewardModel, FullSeqClsFolderScoresEqualTheHeadCalledDirectly) {
  set_num_threads(1);
  Scratch s;
  SeqClsOptions so;
  so.num_labels = 1;
  so.id2label = {"reward"};
  so.init_std = 1.0f;  // rewards far apart, so a wrong position or row would show
  so.seed = 4;
  Model m = load_model_for_classification(kModel, so);
  save_model(m, (s.path / "rm").string());
  copy_tokenizer(s.path / "rm");

  RewardSpec spec = parse_reward_spec("model:" + (s.path / "rm").string());
  ASSERT_TRUE(spec.model);
  const std::vector<RewardInput> in = texts();
  spec.model->batch_size = 1;  // one row per forward: the same computation as the direct call, bit for bit
  const std::vector<float> got = compute_rewards({spec}, in);
  ASSERT_EQ(got.size(), in.size());
  Tokenizer tok = Tokenizer::load(kModel);
  std::vector<float> want;
  for (const auto& x : in) {
    std::vector<int32_t> ids = x.prompt.empty() ? tok.encode(x.response, true) : tok.encode(x.prompt, true);
    if (!x.prompt.empty()) {
      auto r = tok.encode(x.response, false);
      ids.insert(ids.end(), r.begin(), r.end());
    }
    ids.push_back(tok.eos_id());
    EXPECT_EQ(ids, reward_model_ids(*spec.model, x.prompt, x.response));
    want.push_back(direct_reward(m, ids));
  }
  EXPECT_EQ(got, want);
  EXPECT_GT(std::fabs(want[0] - want[1]), 1e-3) << "distinct rewards, or the test proves little";
  // Loaded once: copies of the spec share the model. Padded batches (the real-token rows pooled at their
  // own last token) agree up to the matmul's rounding for another row count.
  RewardSpec copy = spec;
  EXPECT_EQ(copy.model.get(), spec.model.get());
  spec.model->batch_size = 3;  // two batches, padded rows in each
  const std::vector<float> batched = compute_rewards({spec}, in);
  for (size_t i = 0; i < in.size(); i++) EXPECT_NEAR(batched[i], got[i], 1e-4 * std::max(1.f, std::fabs(got[i]))) << i;
}

TEST(RewardModel, SeqClsLoraAdapterFolderLoadsItsBaseAndScoresLikeTheTrainedModel) {
  set_num_threads(1);
  Scratch s;
  SeqClsOptions so;
  so.num_labels = 1;
  so.init_std = 1.0f;
  so.seed = 9;
  Model m = load_model_for_classification(kModel, so);
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 8;
  lc.task_type = "SEQ_CLS";
  lc.init_lora_weights = LoraInit::Random;  // non-zero B: the adapter changes the scores
  lc.target_modules = ModuleSelector::pattern("all-linear");
  Rng rng(2);
  LoraConfig resolved = apply_lora(m, lc, rng);
  save_adapter(m, resolved, (s.path / "adapter").string());
  ASSERT_FALSE(fs::exists(s.path / "adapter/config.json"));
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(s.path / "adapter/adapter_config.json"));
  EXPECT_EQ(cfg["base_model_name_or_path"], kModel);

  RewardSpec spec = parse_reward_spec("model:" + (s.path / "adapter").string());
  EXPECT_EQ(spec.model->base_dir, kModel);
  const std::vector<RewardInput> in = texts();
  spec.model->batch_size = 1;
  const std::vector<float> got = compute_rewards({spec}, in);
  spec.model->batch_size = 8;
  const std::vector<float> batched = compute_rewards({spec}, in);
  Model base_only = load_model_for_classification(kModel, so);  // same head init, no adapter
  int differ = 0;
  for (size_t i = 0; i < in.size(); i++) {
    const std::vector<int32_t> ids = reward_model_ids(*spec.model, in[i].prompt, in[i].response);
    const float want = direct_reward(m, ids);
    EXPECT_EQ(got[i], want) << i;
    EXPECT_NEAR(batched[i], want, 1e-4 * std::max(1.f, std::fabs(want))) << i;
    differ += std::fabs(direct_reward(base_only, ids) - want) > 1e-3;
  }
  EXPECT_GT(differ, 0) << "the adapter must matter, or the test proves nothing";

  // A relative base path resolves against the llmtune source tree (the bundled models).
  nlohmann::json rel = cfg;
  rel["base_model_name_or_path"] = "models/stories260K";
  std::ofstream(s.path / "adapter/adapter_config.json") << rel.dump();
  // (Resolved against the current folder first: compare the folders, not the spelling.)
  EXPECT_TRUE(fs::equivalent(parse_reward_spec("model:" + (s.path / "adapter").string()).model->base_dir,
                             std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K"));
  rel["base_model_name_or_path"] = "no/such/base";
  std::ofstream(s.path / "adapter/adapter_config.json") << rel.dump();
  EXPECT_HAS(error_of({"model:" + (s.path / "adapter").string()}), "base_model_name_or_path 'no/such/base'");
}

TEST(RewardModel, NotARewardModelIsAClearError) {
  Scratch s;
  EXPECT_HAS(error_of({"model:" + (s.path / "missing").string()}), "is not a folder");
  EXPECT_HAS(error_of({"model:" + kModel}), "is not a sequence-classification model");
  SeqClsOptions so;
  so.num_labels = 3;
  Model m = load_model_for_classification(kModel, so);
  save_model(m, (s.path / "cls").string());
  copy_tokenizer(s.path / "cls");
  EXPECT_HAS(error_of({"model:" + (s.path / "cls").string()}), "has 3 outputs; a reward model has one");
  EXPECT_HAS(error_of({"model:"}), "model needs a folder");
}
