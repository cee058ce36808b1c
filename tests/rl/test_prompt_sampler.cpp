// PromptSampler (GRPO / PPO prompt order): draws match the trainers' former inline shuffle, each pass is a
// permutation, and the checkpoint JSON round-trips under the exact key names existing checkpoints use.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "rl/prompt_sampler.h"

using namespace llmtune;
using namespace llmtune::rl;
using nlohmann::json;

namespace {

// The loop GRPO and PPO ran before PromptSampler (kept verbatim as the reference).
std::vector<size_t> reference_draws(size_t n, uint64_t seed, size_t count) {
  Rng order_rng(seed);
  std::vector<int64_t> order;
  size_t cursor = 0;
  std::vector<size_t> out;
  while (out.size() < count) {
    if (cursor >= order.size()) {
      order.resize(n);
      std::iota(order.begin(), order.end(), 0);
      for (size_t i = order.size() - 1; i > 0; i--) std::swap(order[i], order[size_t(order_rng.below(i + 1))]);
      cursor = 0;
    }
    out.push_back(size_t(order[cursor++]));
  }
  return out;
}

}  // namespace

TEST(PromptSampler, PermutationPerPassReshuffledLikeBefore) {
  const size_t n = 10, passes = 4;
  PromptSampler s(n, 42);
  std::vector<size_t> got;
  for (size_t i = 0; i < n * passes; i++) got.push_back(s.next());
  EXPECT_EQ(got, reference_draws(n, 42, n * passes));

  std::vector<std::vector<size_t>> pass_orders;
  for (size_t p = 0; p < passes; p++) {
    std::vector<size_t> pass(got.begin() + long(p * n), got.begin() + long((p + 1) * n));
    pass_orders.push_back(pass);
    std::sort(pass.begin(), pass.end());
    std::vector<size_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(pass, all) << "pass " << p << " is not a permutation of the prompts";
  }
  // A new order every pass (not one shuffle reused), and not the identity.
  for (size_t p = 1; p < passes; p++) EXPECT_NE(pass_orders[p], pass_orders[p - 1]) << "pass " << p;
  std::vector<size_t> identity(n);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(pass_orders[0], identity);

  // Another seed gives another stream; a single prompt is always prompt 0.
  PromptSampler other(n, 43);
  std::vector<size_t> got43;
  for (size_t i = 0; i < n; i++) got43.push_back(other.next());
  EXPECT_NE(got43, pass_orders[0]);
  EXPECT_EQ(got43, reference_draws(n, 43, n));
  PromptSampler one(1, 7);
  for (int i = 0; i < 3; i++) EXPECT_EQ(one.next(), 0u);
}

TEST(PromptSampler, JsonRoundTripResumesTheSameDraws) {
  const size_t n = 7;
  for (const std::string prefix : {"", "prompt_"}) {
    PromptSampler a(n, 5);
    for (int i = 0; i < 9; i++) a.next();  // into the second pass
    json state = {{"reward_mean", std::vector<double>{0.5, 0.25}}};
    a.to_json(state, prefix);
    // The trainers' former literal, byte for byte (GRPO: "cursor"/"order", PPO: "prompt_cursor"/"prompt_order").
    const json before = {{prefix + "cursor", a.cursor}, {prefix + "order", a.order},
                         {"reward_mean", std::vector<double>{0.5, 0.25}}};
    EXPECT_EQ(state.dump(), before.dump());
    EXPECT_EQ(state.at(prefix + "cursor").get<size_t>(), 2u);
    EXPECT_EQ(state.at(prefix + "order").size(), n);

    // What a resume does: the order/cursor from the trainer state, the RNG from rng_state.json.
    PromptSampler b(n, 999);
    b.from_json(json::parse(state.dump()), prefix);
    b.rng.s = a.rng.s;
    EXPECT_NO_THROW(b.check_prompt_count("grpo"));
    for (int i = 0; i < 3 * int(n); i++) EXPECT_EQ(b.next(), a.next()) << "draw " << i << " prefix '" << prefix << "'";
  }
  // Whole run == interrupted run.
  PromptSampler whole(n, 11), first(n, 11);
  std::vector<size_t> w, r;
  for (size_t i = 0; i < 20; i++) w.push_back(whole.next());
  for (size_t i = 0; i < 8; i++) r.push_back(first.next());
  json st = json::object();
  first.to_json(st, "prompt_");
  PromptSampler second(n, 11);
  second.from_json(st, "prompt_");
  second.rng.s = first.rng.s;
  for (size_t i = 8; i < 20; i++) r.push_back(second.next());
  EXPECT_EQ(r, w);
}

TEST(PromptSampler, ResumeErrors) {
  PromptSampler a(5, 1);
  a.next();
  json st = json::object();
  a.to_json(st, "");
  // Another prompt count is refused, naming the trainer.
  PromptSampler b(6, 1);
  b.from_json(st, "");
  try {
    b.check_prompt_count("ppo");
    FAIL() << "a 5-prompt order was accepted for 6 prompts";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot resume ppo: the checkpoint was made with 5 prompts, this run has 6"),
              std::string::npos)
        << e.what();
  }
  // Missing keys (wrong prefix) throw json::exception for the trainer's "incomplete" message.
  PromptSampler c(5, 1);
  EXPECT_THROW(c.from_json(st, "prompt_"), json::exception);
  // A checkpoint taken before any draw (empty order) resumes with a fresh shuffle.
  PromptSampler d(6, 1);
  d.from_json(json{{"cursor", 0}, {"order", json::array()}}, "");
  EXPECT_NO_THROW(d.check_prompt_count("grpo"));
  EXPECT_LT(d.next(), 6u);
}
