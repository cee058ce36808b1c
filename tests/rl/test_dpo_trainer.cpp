// DPO end to end on the bundled stories260K: the adapters-off reference equals a fresh base model bit for
// bit, the per-token-weighted backward matches finite differences, and a short LoRA DPO run raises the
// held-out preference accuracy on a constructed word-choice task.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>

#include "core/error.h"
#include "core/threads.h"
#include "model/model.h"
#include "peft/lora.h"
#include "rl/dpo_trainer.h"
#include "rl/policy_logp.h"
#include "tokenizer/tokenizer.h"

using namespace llmtune;
using namespace llmtune::rl;

namespace {

std::string model_dir() { return std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K"; }

struct Fixture {
  Model m = load_model(model_dir());
  Tokenizer tok = Tokenizer::load(model_dir());
  EncodeFn enc = [this](std::string_view s, bool special) { return tok.encode(s, special); };
  TokenIds ids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
};

LoraConfig lora_cfg(LoraInit init) {
  LoraConfig c;
  c.r = 8;
  c.lora_alpha = 16;
  c.target_modules = ModuleSelector::pattern("all-linear");
  c.init_lora_weights = init;
  return c;
}

// Word-choice preferences: the "chosen" story ends happily, the "rejected" one sadly (the base model
// prefers "sad" on every held-out pair, so its raw preference accuracy starts at 0), over subjects/prompts disjoint between train and held-out.
std::string pairs_jsonl(const std::vector<std::string>& subjects, const std::vector<std::string>& prompts) {
  std::string out;
  for (const auto& p : prompts)
    for (const auto& s : subjects)
      out += "{\"prompt\": \"" + p + "\", \"chosen\": \" The " + s + " was happy.\", \"rejected\": \" The " + s +
             " was sad.\"}\n";
  return out;
}

}  // namespace

TEST(DpoTrainer, ParsesPairsWithPromptMaskAndEos) {
  Fixture f;
  PreferencePairs p = parse_preference_pairs("{\"prompt\":\"Once\",\"chosen\":\" a cat\",\"rejected\":\" a dog\"}\n",
                                             "mem.jsonl", f.enc, f.ids, 64);
  ASSERT_EQ(p.pairs.size(), 1u);
  const auto prompt = f.tok.encode("Once", true);
  EXPECT_EQ(p.pairs[0].chosen.prompt_len, int64_t(prompt.size()));
  EXPECT_EQ(p.pairs[0].chosen.ids.back(), f.tok.eos_id());
  EXPECT_THROW(parse_preference_pairs("{\"prompt\":\"x\",\"chosen\":\"a\"}\n", "bad.jsonl", f.enc, f.ids, 64), Error);
  EXPECT_THROW(parse_preference_pairs("{\"prompt\":\"x\",\"chosen\":1,\"rejected\":\"b\"}\n", "bad.jsonl", f.enc,
                                      f.ids, 64),
               Error);
}

TEST(DpoTrainer, AdaptersOffReferenceEqualsFreshBaseModelBitForBit) {
  set_num_threads(1);
  Fixture f;
  Rng rng(1);
  apply_lora(f.m, lora_cfg(LoraInit::Random), rng);  // non-zero B: the adapters change the outputs
  PreferencePairs p = parse_preference_pairs(pairs_jsonl({"cat", "dog", "bird"}, {"Once upon a time,", "Lily"}),
                                             "mem", f.enc, f.ids, 128);
  RefLogps ref = reference_logps(f.m, nullptr, p.pairs, 4);
  Model base = load_model(model_dir());
  RefLogps fresh = sequence_logps(base, p.pairs, 4);
  RefLogps with_adapters = sequence_logps(f.m, p.pairs, 4);
  ASSERT_EQ(ref.chosen.size(), p.pairs.size());
  int differ = 0;
  for (size_t i = 0; i < p.pairs.size(); i++) {
    EXPECT_EQ(ref.chosen[i], fresh.chosen[i]) << i;  // exact
    EXPECT_EQ(ref.rejected[i], fresh.rejected[i]) << i;
    differ += with_adapters.chosen[i] != fresh.chosen[i];
  }
  EXPECT_GT(differ, 0) << "the adapters should change the log-probs, or the test proves nothing";
  EXPECT_TRUE(f.m.adapters_enabled) << "adapters restored after computing the reference";
}

TEST(DpoTrainer, WeightedBackwardMatchesFiniteDifferences) {
  set_num_threads(1);
  Fixture f;
  Rng rng(2);
  apply_lora(f.m, lora_cfg(LoraInit::Random), rng);
  f.m.sync_grad_buffers();
  f.m.zero_grads();
  std::vector<ScoredSeq> seqs{{f.tok.encode("Once upon a time there", true), 3},
                              {f.tok.encode("The cat sat", true), 2}};
  PackedBatch pb = pack_sequences(seqs, f.m, "test");
  const float temperature = 0.7f;
  Workspace ws;
  std::vector<float> lp = forward_token_logps(f.m, ws, pb, nullptr, temperature);
  std::vector<float> w(lp.size());
  Rng wr(5);
  for (float& x : w) x = wr.normal();
  backward_token_weights(f.m, ws, pb, w, nullptr, temperature);
  auto objective = [&] {
    Workspace w2;
    std::vector<float> l = forward_token_logps(f.m, w2, pb, nullptr, temperature);
    double s = 0;
    for (size_t i = 0; i < l.size(); i++) s += double(w[i]) * l[i];
    return s;
  };
  int checked = 0;
  for (auto& p : f.m.params) {
    if (!p.trainable || p.name.find("lora_A") == std::string::npos || checked >= 3) continue;
    for (int64_t i = 0; i < p.value.numel(); i += p.value.numel() / 3 + 1) {
      float* v = p.value.f32() + i;
      const float old = *v, eps = 1e-2f;
      *v = old + eps;
      const double up = objective();
      *v = old - eps;
      const double down = objective();
      *v = old;
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(p.grad.f32()[i], fd, 2e-3 + 2e-2 * std::fabs(fd)) << p.name << "[" << i << "]";
    }
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(DpoTrainer, LoraDpoRaisesHeldOutPreferenceAccuracy) {
  set_num_threads(1);
  const auto t0 = std::chrono::steady_clock::now();
  Fixture f;
  Rng rng(3);
  apply_lora(f.m, lora_cfg(LoraInit::Default), rng);
  PreferencePairs train = parse_preference_pairs(
      pairs_jsonl({"cat", "dog", "bird", "bunny", "fish", "frog"}, {"Once upon a time,", "One day,", "Lily saw it."}),
      "train", f.enc, f.ids, 128);
  PreferencePairs eval = parse_preference_pairs(
      pairs_jsonl({"girl", "boy", "bear", "duck"}, {"Tom went to the park.", "It was a sunny day."}), "eval", f.enc,
      f.ids, 128);
  DpoArgs args;
  args.loss.beta = 0.1;
  args.learning_rate = 2e-2;
  args.max_steps = 30;
  args.per_device_train_batch_size = 6;
  args.lr_scheduler_type = "constant";
  args.logging_steps = 10;
  DpoTrainResult r = dpo_train(f.m, nullptr, train.pairs, eval.pairs, args, {});
  const nlohmann::json* first = nullptr;
  const nlohmann::json* last = nullptr;
  for (const auto& e : r.log_history)
    if (e["type"] == "eval") (first ? last : first) = &e, last = &e;
  ASSERT_TRUE(first && last && first != last);
  const double acc0 = (*first)["eval_policy_accuracy"], acc1 = (*last)["eval_policy_accuracy"];
  const double racc1 = (*last)["eval_rewards/accuracies"];
  const double loss0 = (*first)["eval_loss"], loss1 = (*last)["eval_loss"];
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("DPO held-out: policy accuracy %.3f -> %.3f, rewards/accuracies -> %.3f, eval_loss %.4f -> %.4f, "
              "%.1f s\n", acc0, acc1, racc1, loss0, loss1, secs);
  EXPECT_NEAR(loss0, std::log(2.0), 1e-6);  // policy == reference before training
  EXPECT_GE(racc1, 0.9);
  EXPECT_GE(acc1 - acc0, 0.5);
  EXPECT_LT(loss1, loss0 - 0.1);
}
