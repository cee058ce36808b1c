// Tests of HF-order logits processing and next-token choice (model/sampling.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"
#include "model/sampling.h"

using namespace llmtune;

namespace {
const float kInf = std::numeric_limits<float>::infinity();

std::vector<bool> kept(const std::vector<float>& logits) {
  std::vector<bool> k;
  for (float s : logits) k.push_back(s != -kInf);
  return k;
}
}  // namespace

TEST(Sampling, GreedyIsArgmaxFirstOnTies) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f, 1.9f};
  Rng rng(1);
  EXPECT_EQ(sample_next(l, {}, SamplingParams{}, rng), 1);
  std::vector<float> neg = {-5.0f, -3.0f, -4.0f};
  EXPECT_EQ(sample_next(neg, {}, SamplingParams{}, rng), 1);
}

TEST(Sampling, GreedyIgnoresWarpers) {
  // Temperature/top-k/top-p only apply when sampling; greedy must leave the logits untouched.
  std::vector<float> l = {1.0f, 3.0f, 2.0f};
  SamplingParams p;
  p.temperature = 0.5f;
  p.top_k = 1;
  p.top_p = 0.1f;
  process_logits(l, {}, p);
  EXPECT_EQ(l, (std::vector<float>{1.0f, 3.0f, 2.0f}));
}

TEST(Sampling, RepetitionPenaltyPositiveAndNegativeOncePerId) {
  std::vector<float> l = {2.0f, -2.0f, 1.0f, 0.0f, 4.0f};
  std::vector<int32_t> ctx = {0, 1, 1, 0, 3, 0};  // repeated ids are penalised once
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  process_logits(l, ctx, p);
  EXPECT_FLOAT_EQ(l[0], 1.0f);   // positive: divided
  EXPECT_FLOAT_EQ(l[1], -4.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(l[2], 1.0f);   // not in context
  EXPECT_FLOAT_EQ(l[3], 0.0f);   // zero stays zero
  EXPECT_FLOAT_EQ(l[4], 4.0f);
}

TEST(Sampling, RepetitionPenaltyChangesGreedyChoice) {
  std::vector<float> l = {3.0f, 2.0f};
  std::vector<int32_t> ctx = {0};
  SamplingParams p;
  p.repetition_penalty = 1.6f;
  Rng rng(0);
  EXPECT_EQ(sample_next(l, ctx, p, rng), 1);
}

TEST(Sampling, RepetitionPenaltyRejectsIdOutsideVocab) {
  std::vector<float> l = {1.0f, 2.0f};
  std::vector<int32_t> ctx = {5};
  SamplingParams p;
  p.repetition_penalty = 1.2f;
  EXPECT_THROW(process_logits(l, ctx, p), Error);
}

TEST(Sampling, TemperatureDivides) {
  std::vector<float> l = {1.0f, -2.0f, 0.5f};
  SamplingParams p;
  p.do_sample = true;
  p.temperature = 0.5f;
  process_logits(l, {}, p);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[1], -4.0f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
}

TEST(Sampling, TopKKeepsTies) {
  std::vector<float> l = {1.0f, 5.0f, 3.0f, 3.0f, 0.0f, 4.0f};
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 3;  // 3rd largest is 3.0, tied: both 3.0 are kept
  process_logits(l, {}, p);
  EXPECT_EQ(kept(l), (std::vector<bool>{false, true, true, true, false, true}));
  EXPECT_FLOAT_EQ(l[1], 5.0f);

  std::vector<float> l2 = {1.0f, 5.0f, 3.0f, 2.0f};
  p.top_k = 1;
  process_logits(l2, {}, p);
  EXPECT_EQ(kept(l2), (std::vector<bool>{false, true, false, false}));

  std::vector<float> l3 = {1.0f, 5.0f};
  p.top_k = 10;  // larger than V: nothing removed
  process_logits(l3, {}, p);
  EXPECT_EQ(kept(l3), (std::vector<bool>{true, true}));
}

TEST(Sampling, TopPRemovesLowTail) {
  // probs: 0.5, 0.25, 0.15, 0.1 (as logs). Ascending cumsum: 0.1, 0.25, 0.5, 1.0.
  std::vector<float> base = {std::log(0.25f), std::log(0.1f), std::log(0.5f), std::log(0.15f)};
  SamplingParams p;
  p.do_sample = true;
  auto run = [&](float top_p) {
    std::vector<float> l = base;
    p.top_p = top_p;
    process_logits(l, {}, p);
    return kept(l);
  };
  // remove cum <= 1-p
  EXPECT_EQ(run(0.8f), (std::vector<bool>{true, false, true, true}));   // 1-p=0.2: removes 0.1
  EXPECT_EQ(run(0.7f), (std::vector<bool>{true, false, true, false}));  // 0.3: removes 0.1, 0.15
  EXPECT_EQ(run(0.6f), (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(run(0.4f), (std::vector<bool>{false, false, true, false}));  // 0.6: only the top remains
  EXPECT_EQ(run(0.01f), (std::vector<bool>{false, false, true, false}));  // top one always kept
  EXPECT_EQ(run(1.0f), (std::vector<bool>{true, true, true, true}));
}

// apply_top_p removes the low tail without sorting it; the result equals the plain algorithm (sort
// everything ascending, remove while the cumulative probability is <= 1 - top_p, keep the top one) on
// peaked, flat and tied distributions with -inf entries.
TEST(Sampling, TopPEqualsFullSortReference) {
  auto reference = [](std::vector<float> l, float top_p) {
    std::vector<int32_t> order(l.size());
    for (size_t i = 0; i < l.size(); i++) order[i] = int32_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[size_t(a)] < l[size_t(b)]; });
    const double mx = l[size_t(order.back())];
    double total = 0, cum = 0;
    for (float s : l) total += std::exp(double(s) - mx);
    for (size_t i = 0; i + 1 < order.size(); i++) {
      cum += std::exp(double(l[size_t(order[i])]) - mx) / total;
      if (cum <= 1.0 - double(top_p)) l[size_t(order[i])] = -kInf;
      else break;
    }
    return kept(l);
  };
  uint64_t state = 12345;
  auto uniform = [&] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return float(state >> 40) / 16777216.0f;
  };
  for (int shape = 0; shape < 3; shape++) {
    std::vector<float> l(5000);
    for (size_t i = 0; i < l.size(); i++) {
      if (shape == 0) l[i] = 12.f * uniform() * uniform() * uniform();  // a few large, a long tail
      else if (shape == 1) l[i] = 0.01f * uniform();                    // nearly flat
      else l[i] = float(int(4 * uniform()));                            // many ties
      if (i % 97 == 3) l[i] = -kInf;
    }
    for (float top_p : {0.3f, 0.9f, 0.99f, 0.999f}) {
      SCOPED_TRACE(testing::Message() << "shape " << shape << " top_p " << top_p);
      std::vector<float> fast = l;
      apply_top_p(fast, top_p);
      EXPECT_EQ(kept(fast), reference(l, top_p));
    }
  }
}

TEST(Sampling, TopKThenTopPOnTheKeptSet) {
  // After top-k=2 only {0.5, 0.25} remain: renormalised 2/3, 1/3. top_p=0.6 → 1-p=0.4 ≥ 1/3 removes 0.25.
  std::vector<float> l = {std::log(0.25f), std::log(0.1f), std::log(0.5f), std::log(0.15f)};
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 2;
  p.top_p = 0.6f;
  process_logits(l, {}, p);
  EXPECT_EQ(kept(l), (std::vector<bool>{false, false, true, false}));
}

TEST(Sampling, FrequenciesMatchSoftmax) {
  std::vector<float> base = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
  SamplingParams p;
  p.do_sample = true;
  p.temperature = 0.8f;
  std::vector<double> prob(base.size());
  double z = 0;
  for (size_t i = 0; i < base.size(); ++i) z += prob[i] = std::exp(base[i] / 0.8);
  for (auto& q : prob) q /= z;

  Rng rng(1234);
  const int n = 40000;
  std::vector<int> count(base.size(), 0);
  for (int i = 0; i < n; ++i) {
    std::vector<float> l = base;
    count[size_t(sample_next(l, {}, p, rng))]++;
  }
  double chi2 = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    double expected = n * prob[i];
    chi2 += (count[i] - expected) * (count[i] - expected) / expected;
  }
  // 4 degrees of freedom: P(chi2 > 18.5) ≈ 0.001. A wrong temperature or off-by-one in the draw
  // gives chi2 in the hundreds at this n.
  EXPECT_LT(chi2, 18.5);
}

TEST(Sampling, NeverDrawsFilteredTokens) {
  std::vector<float> base = {2.0f, 1.9f, 1.8f, -1.0f, -2.0f};
  SamplingParams p;
  p.do_sample = true;
  p.top_k = 2;
  Rng rng(7);
  std::vector<int> count(base.size(), 0);
  for (int i = 0; i < 5000; ++i) {
    std::vector<float> l = base;
    count[size_t(sample_next(l, {}, p, rng))]++;
  }
  EXPECT_GT(count[0], 0);
  EXPECT_GT(count[1], 0);
  EXPECT_EQ(count[2] + count[3] + count[4], 0);
}

TEST(Sampling, DeterministicForFixedSeed) {
  std::vector<float> base(50);
  for (size_t i = 0; i < base.size(); ++i) base[i] = std::sin(float(i));
  SamplingParams p;
  p.do_sample = true;
  p.top_p = 0.9f;
  auto draw = [&](uint64_t seed) {
    Rng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 100; ++i) {
      std::vector<float> l = base;
      out.push_back(sample_next(l, out, p, rng));
    }
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

TEST(Sampling, ValidationNamesTheOption) {
  std::vector<float> l = {1.0f, 2.0f};
  Rng rng(0);
  auto message = [&](SamplingParams p) -> std::string {
    try {
      std::vector<float> copy = l;
      sample_next(copy, {}, p, rng);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  SamplingParams p;
  p.temperature = 0.0f;
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  p = {};
  p.top_p = 0.0f;
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p.top_p = 1.5f;
  EXPECT_NE(message(p).find("top_p"), std::string::npos);
  p = {};
  p.top_k = -1;
  EXPECT_NE(message(p).find("top_k"), std::string::npos);
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_NE(message(p).find("repetition_penalty"), std::string::npos);
  p = {};
  p.temperature = std::nanf("");
  EXPECT_NE(message(p).find("temperature"), std::string::npos);
  EXPECT_EQ(message(SamplingParams{}), "");
}

TEST(Sampling, NanLogitsAreAnError) {
  std::vector<float> l = {1.0f, std::nanf("")};
  Rng rng(0);
  EXPECT_THROW(sample_next(l, {}, SamplingParams{}, rng), Error);
}
