// RL loss math (src/rl/) against the PyTorch goldens of tools/rl_reference.py (tests/data/rl/rl_golden.json),
// plus finite-difference checks of every provided gradient and the documented masking guards.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "rl/dpo_math.h"
#include "rl/grpo_math.h"
#include "rl/ppo_math.h"
#include "rl/rl_common.h"

using namespace llmtune;
using namespace llmtune::rl;
using nlohmann::json;

namespace {

const json& golden() {
  static const json j = [] {
    std::ifstream f(std::string(LLMTUNE_TEST_DATA) + "/rl/rl_golden.json");
    std::stringstream ss;
    ss << f.rdbuf();
    return json::parse(ss.str());
  }();
  return j;
}

std::vector<float> F(const json& a) {
  std::vector<float> v;
  for (const auto& x : a) v.push_back(x.get<float>());
  return v;
}
std::vector<uint8_t> M(const json& a) {
  std::vector<uint8_t> v;
  for (const auto& x : a) v.push_back(x.get<double>() != 0.0);
  return v;
}
std::vector<int64_t> I(const json& a) {
  std::vector<int64_t> v;
  for (const auto& x : a) v.push_back(int64_t(std::llround(x.get<double>())));
  return v;
}

// Float outputs: ≤ 1e-5 relative, with a 1e-6 floor for values near zero.
bool close(double got, double want, double rel = 1e-5, double abs_floor = 1e-6) {
  return std::fabs(got - want) <= rel * std::fabs(want) + abs_floor;
}
#define EXPECT_CLOSE(got, want) EXPECT_TRUE(close((got), (want))) << #got << " = " << (got) << ", want " << (want)

template <typename V>
void expect_vec(const V& got, const json& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); i++)
    EXPECT_TRUE(close(double(got[i]), want[i].get<double>()))
        << what << "[" << i << "] = " << got[i] << ", want " << want[i].get<double>();
}

}  // namespace

TEST(RlMath, MaskedStatsMatchGolden) {
  const json& g = golden()["masked_stats"];
  const auto x = F(g["x"]);
  for (const char* name : {"partial", "single", "empty"}) {
    SCOPED_TRACE(name);
    const json& c = g["cases"][name];
    const auto m = M(c["mask"]);
    EXPECT_CLOSE(masked_mean(x, m), c["mean"].get<double>());
    EXPECT_CLOSE(masked_var(x, m), c["var"].get<double>());
    EXPECT_CLOSE(masked_var(x, m, false), c["var_biased"].get<double>());
    std::vector<double> rows(3);
    masked_mean_rows(x, m, 3, rows);
    expect_vec(rows, c["row_mean"], "row_mean");
    std::vector<float> w(x.size());
    masked_whiten(x, m, w);
    expect_vec(w, c["whiten"], "whiten");
    masked_whiten(x, m, w, false);
    expect_vec(w, c["whiten_noshift"], "whiten_noshift");
  }
  // Guards (TRL: NaN / ValueError): n == 1 → variance 0, the element whitens to 0; n == 0 → all zeros.
  const auto single = M(g["cases"]["single"]["mask"]);
  EXPECT_EQ(masked_var(x, single), 0.0);
  std::vector<float> w(x.size());
  masked_whiten(x, single, w);
  EXPECT_EQ(w[7], 0.0f);
  const auto empty = M(g["cases"]["empty"]["mask"]);
  masked_whiten(x, empty, w);
  for (float v : w) EXPECT_EQ(v, 0.0f);
}

TEST(RlMath, KlEstimatorsAndGradientsMatchGolden) {
  const json& g = golden()["kl_estimators"];
  const auto logp = F(g["logp"]), ref = F(g["ref"]);
  for (const char* name : {"kl", "abs", "mse", "k3"}) {
    SCOPED_TRACE(name);
    const KlEstimator est = kl_estimator_from_name(name);
    std::vector<float> k(logp.size());
    kl_per_token(est, logp, ref, k);
    expect_vec(k, g["cases"][name]["kl"], "kl");
    std::vector<double> grad;
    for (size_t i = 0; i < logp.size(); i++) grad.push_back(kl_estimate_grad(est, logp[i], ref[i]));
    expect_vec(grad, g["cases"][name]["grad"], "grad");
  }
  EXPECT_GE(kl_estimate(KlEstimator::k3, -1.0, 2.0), 0.0);
}

TEST(RlMath, EntropyAndLogSoftmaxMatchGolden) {
  const json& g = golden()["logits"];
  const auto z = F(g["logits"]);
  const int64_t V = g["V"];
  for (int64_t r = 0; r < 3; r++) {
    std::span<const float> row(z.data() + r * V, V);
    EXPECT_CLOSE(entropy_from_logits(row), g["entropy"][r].get<double>());
    EXPECT_CLOSE(log_softmax_at(row, g["tokens"][r].get<int64_t>()), g["log_softmax"][r].get<double>());
  }
}

namespace {

void check_loss_against_golden(const json& c, std::span<const float> logp_old, const PpoMasks& masks,
                               PpoVariant variant) {
  const json& L = c["loss"];
  const auto logp_new = F(L["logp_new"]), v_new = F(L["values_new"]);
  const auto v_old = F(c["masked_values"]), adv = F(c["advantages"]), ret = F(c["returns"]);
  PpoLossOptions opt;
  opt.cliprange = c["loss_opts"]["cliprange"];
  opt.cliprange_value = c["loss_opts"]["cliprange_value"];
  opt.vf_coef = c["loss_opts"]["vf_coef"];
  if (variant == PpoVariant::classic) opt.ratio_threshold = 10.0;
  std::vector<float> d_logp(logp_new.size(), 0.f), d_v(logp_new.size(), 0.f);
  const PpoLossStats s = ppo_loss(opt, logp_new, logp_old, adv, v_new, v_old, ret, masks, d_logp, d_v);
  EXPECT_FALSE(s.ratio_threshold_hit);
  EXPECT_CLOSE(s.loss, L["loss"].get<double>());
  EXPECT_CLOSE(s.pg_loss, L["pg_loss"].get<double>());
  EXPECT_CLOSE(s.vf_loss, L["vf_loss"].get<double>());
  EXPECT_CLOSE(s.pg_clipfrac, L["pg_clipfrac"].get<double>());
  EXPECT_CLOSE(s.vf_clipfrac, L["vf_clipfrac"].get<double>());
  EXPECT_CLOSE(s.approx_kl, L["approx_kl"].get<double>());
  EXPECT_CLOSE(s.approx_kl_all, L["approx_kl_all"].get<double>());
  EXPECT_CLOSE(s.policy_kl, L["policy_kl"].get<double>());
  EXPECT_CLOSE(s.mean_ratio, L["mean_ratio"].get<double>());
  expect_vec(d_logp, L["d_logp_new"], "d_logp_new");
  expect_vec(d_v, L["d_values_new"], "d_values_new");
}

}  // namespace

TEST(RlMath, ClassicPpoPipelineMatchesGolden) {
  for (const json& c : golden()["classic_ppo"]) {
    SCOPED_TRACE(c["kl_penalty"].get<std::string>());
    const int64_t B = c["B"], T = c["T"], L = c["L"];
    const PpoMasks masks = classic_ppo_masks(M(c["attention_mask"]), I(c["query_len"]), I(c["response_len"]), B, L);
    expect_vec(masks.policy, c["mask"], "mask (left-padding start offset)");
    const auto logp = F(c["logp"]);
    const PpoRewards r = ppo_rewards(PpoVariant::classic, kl_estimator_from_name(c["kl_penalty"].get<std::string>()),
                                     c["kl_coef"], logp, F(c["ref_logp"]), F(c["scores"]), masks, B, T);
    expect_vec(r.rewards, c["rewards"], "rewards");
    expect_vec(r.non_score, c["non_score"], "non_score");
    expect_vec(r.kl, c["kl"], "kl");
    EXPECT_CLOSE(mean_sequence_kl(r.kl, masks.policy, B, T), c["mean_kl"].get<double>());
    // Golden rewards in, so the GAE check does not depend on the rewards check.
    const PpoAdvantages a = ppo_advantages(PpoVariant::classic, F(c["values"]), F(c["rewards"]), masks, c["gamma"],
                                           c["lam"], c["whiten_rewards"], B, T);
    expect_vec(a.values, c["masked_values"], "values");
    expect_vec(a.advantages, c["advantages"], "advantages");
    expect_vec(a.returns, c["returns"], "returns");
    check_loss_against_golden(c, logp, masks, PpoVariant::classic);
  }
}

TEST(RlMath, CurrentPpoPipelineMatchesGolden) {
  for (const json& c : golden()["current_ppo"]) {
    SCOPED_TRACE(c["kl_estimator"].get<std::string>());
    const int64_t B = c["B"], T = c["T"];
    std::vector<int32_t> responses;
    for (const auto& t : c["responses"]) responses.push_back(int32_t(t.get<double>()));
    const auto seq_len = response_last_index(responses, c["pad_token_id"], B, T);
    EXPECT_EQ(seq_len, I(c["seq_len"]));
    const PpoMasks masks = current_ppo_masks(seq_len, B, T);
    expect_vec(masks.policy, c["policy_mask"], "policy_mask");
    expect_vec(masks.value, c["value_mask"], "value_mask");
    const auto logp = F(c["logp"]);
    const PpoRewards r = ppo_rewards(PpoVariant::current, kl_estimator_from_name(c["kl_estimator"].get<std::string>()),
                                     c["kl_coef"], logp, F(c["ref_logp"]), F(c["scores"]), masks, B, T);
    expect_vec(r.rewards, c["rewards"], "rewards (score one position after the last token)");
    expect_vec(r.kl, c["kl"], "kl");
    const PpoAdvantages a = ppo_advantages(PpoVariant::current, F(c["values"]), F(c["rewards"]), masks, c["gamma"],
                                           c["lam"], c["whiten_rewards"], B, T);
    expect_vec(a.values, c["masked_values"], "values");
    expect_vec(a.advantages, c["advantages"], "advantages");
    expect_vec(a.returns, c["returns"], "returns");
    check_loss_against_golden(c, logp, masks, PpoVariant::current);
  }
}

TEST(RlMath, PpoLossGradientsMatchFiniteDifferences) {
  for (const json& c : {golden()["classic_ppo"][0], golden()["current_ppo"][0]}) {
    const bool classic = c.contains("L");
    const int64_t B = c["B"], T = c["T"];
    PpoMasks masks;
    if (classic) {
      masks = classic_ppo_masks(M(c["attention_mask"]), I(c["query_len"]), I(c["response_len"]), B, c["L"]);
    } else {
      masks = current_ppo_masks(I(c["seq_len"]), B, T);
    }
    auto logp_new = F(c["loss"]["logp_new"]), v_new = F(c["loss"]["values_new"]);
    const auto logp_old = F(c["logp"]), v_old = F(c["masked_values"]), adv = F(c["advantages"]),
               ret = F(c["returns"]);
    PpoLossOptions opt;
    std::vector<float> d_logp(B * T, 0.f), d_v(B * T, 0.f);
    ppo_loss(opt, logp_new, logp_old, adv, v_new, v_old, ret, masks, d_logp, d_v, /*grad_scale=*/2.0);
    auto loss_of = [&] { return 2.0 * ppo_loss(opt, logp_new, logp_old, adv, v_new, v_old, ret, masks, {}, {}).loss; };
    const float h = 1.0f / 1024;
    for (std::vector<float>* x : {&logp_new, &v_new}) {
      const auto& grad = x == &logp_new ? d_logp : d_v;
      for (int64_t i = 0; i < B * T; i++) {
        const float x0 = (*x)[i];
        (*x)[i] = x0 + h;
        const double lp = loss_of();
        (*x)[i] = x0 - h;
        const double lm = loss_of();
        (*x)[i] = x0;
        const double fd = (lp - lm) / (2.0 * h);
        EXPECT_NEAR(grad[i], fd, 1e-4 + 1e-3 * std::fabs(fd)) << (x == &logp_new ? "logp " : "value ") << i;
      }
    }
  }
}

TEST(RlMath, PpoRatioThresholdAndEmptyMaskGuards) {
  // One token, ratio e^3 > 10: classic zeroes loss and gradient; without a threshold it does not.
  const std::vector<float> lp_new{0.f}, lp_old{-3.f}, adv{1.f}, v{0.5f}, vo{0.f}, ret{1.f};
  PpoMasks m{{1}, {1}};
  PpoLossOptions opt;
  std::vector<float> d(1, 0.f), dv(1, 0.f);
  auto s = ppo_loss(opt, lp_new, lp_old, adv, v, vo, ret, m, d, dv);
  EXPECT_FALSE(s.ratio_threshold_hit);
  EXPECT_NE(s.loss, 0.0);
  opt.ratio_threshold = 10.0;
  d[0] = dv[0] = 0.f;
  s = ppo_loss(opt, lp_new, lp_old, adv, v, vo, ret, m, d, dv);
  EXPECT_TRUE(s.ratio_threshold_hit);
  EXPECT_EQ(s.loss, 0.0);
  EXPECT_EQ(d[0], 0.f);
  EXPECT_EQ(dv[0], 0.f);
  // An all-masked mini-batch: zero loss, zero gradient (TRL: NaN).
  PpoMasks none{{0}, {0}};
  s = ppo_loss(PpoLossOptions{}, lp_new, lp_old, adv, v, vo, ret, none, d, dv);
  EXPECT_EQ(s.loss, 0.0);
  EXPECT_EQ(d[0], 0.f);
  // Gradients accumulate (+=).
  std::vector<float> acc{1.f}, acc_v{1.f};
  ppo_loss(PpoLossOptions{}, std::vector<float>{-0.1f}, std::vector<float>{0.f}, adv, v, vo, ret, m, acc, acc_v);
  std::vector<float> fresh{0.f}, fresh_v{0.f};
  ppo_loss(PpoLossOptions{}, std::vector<float>{-0.1f}, std::vector<float>{0.f}, adv, v, vo, ret, m, fresh, fresh_v);
  EXPECT_FLOAT_EQ(acc[0], 1.f + fresh[0]);
  EXPECT_FLOAT_EQ(acc_v[0], 1.f + fresh_v[0]);
}

TEST(RlMath, KlControllersMatchGolden) {
  const json& g = golden()["kl_controller"];
  KlController ctl = adaptive_kl_controller(g["init"], g["target"], g["horizon"]);
  for (size_t i = 0; i < g["values"].size(); i++) {
    kl_controller_update(ctl, g["current"][i], g["n_steps"][i].get<int64_t>());
    EXPECT_CLOSE(ctl.value, g["values"][i].get<double>());
  }
  KlController fixed = fixed_kl_controller(0.05);
  kl_controller_update(fixed, 100.0, 1000);
  EXPECT_EQ(fixed.value, 0.05);
  EXPECT_THROW(adaptive_kl_controller(0.2, 0.0, 10000), Error);
}

TEST(RlMath, ScoreScalingMatchesGolden) {
  const json& g = golden()["scores"];
  for (const char* mode : {"scale", "norm"}) {
    SCOPED_TRACE(mode);
    ScoreOptions opt;
    opt.use_score_scaling = true;
    opt.use_score_norm = std::string(mode) == "norm";
    opt.score_clip = g["score_clip"].get<double>();
    RunningMoments rm;
    for (size_t b = 0; b < g["batches"].size(); b++) {
      auto s = F(g["batches"][b]);
      process_scores(opt, rm, s);
      expect_vec(s, g[mode]["outputs"][b], "scores");
      const json& mo = g[mode]["moments"][b];
      EXPECT_CLOSE(rm.mean, mo[0].get<double>());
      EXPECT_CLOSE(rm.std, mo[1].get<double>());
      EXPECT_CLOSE(rm.var, mo[2].get<double>());
    }
  }
  RunningMoments fresh;
  std::vector<float> one{1.f};
  EXPECT_THROW(process_scores(ScoreOptions{true, false, {}}, fresh, one), Error);
  std::vector<float> clip_only{-3.f, 0.5f, 7.f};
  process_scores(ScoreOptions{false, false, 2.0}, fresh, clip_only);
  EXPECT_EQ(clip_only, (std::vector<float>{-2.f, 0.5f, 2.f}));
}

namespace {

DpoOptions dpo_options(const json& c) {
  DpoOptions o;
  o.loss_type = dpo_loss_type_from_name(c["loss_type"].get<std::string>());
  o.beta = c["beta"];
  o.label_smoothing = c["label_smoothing"];
  o.reference_free = c["reference_free"];
  return o;
}

}  // namespace

TEST(RlMath, DpoMatchesGolden) {
  for (const json& c : golden()["dpo"]) {
    SCOPED_TRACE(c["loss_type"].get<std::string>());
    const auto pc = F(c["policy_chosen"]), pr = F(c["policy_rejected"]), rc = F(c["ref_chosen"]),
               rr = F(c["ref_rejected"]);
    const auto cl = I(c["chosen_len"]), rl = I(c["rejected_len"]);
    const DpoResult r = dpo_loss(dpo_options(c), DpoBatch{pc, pr, rc, rr, cl, rl});
    expect_vec(r.loss, c["loss"], "loss");
    EXPECT_CLOSE(r.mean_loss, c["mean_loss"].get<double>());
    expect_vec(r.d_policy_chosen, c["d_policy_chosen"], "d_policy_chosen");
    expect_vec(r.d_policy_rejected, c["d_policy_rejected"], "d_policy_rejected");
    expect_vec(r.rewards_chosen, c["rewards_chosen"], "rewards/chosen");
    expect_vec(r.rewards_rejected, c["rewards_rejected"], "rewards/rejected");
    expect_vec(r.margins, c["margins"], "rewards/margins");
    expect_vec(r.accuracies, c["accuracies"], "rewards/accuracies");
  }
  // hinge golden case 0 sits in the flat region: zero loss and gradient.
  const json& h = golden()["dpo"][3];
  EXPECT_EQ(h["loss"][0].get<double>(), 0.0);
}

TEST(RlMath, DpoGradientsMatchFiniteDifferences) {
  for (const json& c : golden()["dpo"]) {
    SCOPED_TRACE(c["loss_type"].get<std::string>());
    auto pc = F(c["policy_chosen"]), pr = F(c["policy_rejected"]);
    const auto rc = F(c["ref_chosen"]), rr = F(c["ref_rejected"]);
    const auto cl = I(c["chosen_len"]), rl = I(c["rejected_len"]);
    const DpoOptions o = dpo_options(c);
    const DpoResult r = dpo_loss(o, DpoBatch{pc, pr, rc, rr, cl, rl});
    const float h = 1.0f / 256;
    for (std::vector<float>* x : {&pc, &pr}) {
      for (size_t i = 0; i < x->size(); i++) {
        const float x0 = (*x)[i];
        (*x)[i] = x0 + h;
        const double lp = dpo_loss(o, DpoBatch{pc, pr, rc, rr, cl, rl}).mean_loss;
        (*x)[i] = x0 - h;
        const double lm = dpo_loss(o, DpoBatch{pc, pr, rc, rr, cl, rl}).mean_loss;
        (*x)[i] = x0;
        const double fd = (lp - lm) / (2.0 * h);
        const double an = x == &pc ? r.d_policy_chosen[i] : r.d_policy_rejected[i];
        EXPECT_NEAR(an, fd, 1e-6 + 1e-4 * std::fabs(fd)) << i;
      }
    }
  }
  // ipo with an empty completion is a data error, not a NaN.
  const std::vector<float> a{-1.f}, b{-2.f};
  const std::vector<int64_t> zero{0}, one{1};
  EXPECT_THROW(dpo_loss(DpoOptions{DpoLossType::ipo}, DpoBatch{a, b, a, b, zero, one}), Error);
}

TEST(RlMath, RewardPairLossMatchesGoldenAndFiniteDifferences) {
  const json& g = golden()["reward_model"];
  auto c = F(g["chosen"]), r = F(g["rejected"]);
  const auto m = F(g["margin"]);
  const double coef = g["center_coef"];
  const RewardPairResult res = reward_pair_loss(c, r, m, coef);
  expect_vec(res.loss, g["loss"], "loss");
  EXPECT_CLOSE(res.mean_loss, g["mean_loss"].get<double>());
  expect_vec(res.d_chosen, g["d_chosen"], "d_chosen");
  expect_vec(res.d_rejected, g["d_rejected"], "d_rejected");
  EXPECT_CLOSE(res.accuracy, g["accuracy"].get<double>());
  const float h = 1.0f / 1024;
  for (size_t i = 0; i < c.size(); i++) {
    const float c0 = c[i];
    c[i] = c0 + h;
    const double lp = reward_pair_loss(c, r, m, coef).mean_loss;
    c[i] = c0 - h;
    const double lm = reward_pair_loss(c, r, m, coef).mean_loss;
    c[i] = c0;
    EXPECT_NEAR(res.d_chosen[i], (lp - lm) / (2.0 * h), 1e-6);
  }
}

TEST(RlMath, GrpoAdvantagesMatchGolden) {
  const json& g = golden()["grpo_advantages"];
  const auto rewards = F(g["rewards"]);
  for (const char* scale : {"group", "batch", "none"}) {
    SCOPED_TRACE(scale);
    const GrpoAdvantages a = grpo_advantages(rewards, g["G"], scale_rewards_from_name(scale));
    expect_vec(a.advantages, g["cases"][scale]["advantages"], "advantages");
    expect_vec(a.std, g["cases"][scale]["std"], "std");
    for (int i = 0; i < 4; i++) EXPECT_EQ(a.advantages[i], 0.0f) << "zero-variance group";
  }
  const GrpoAdvantages one = grpo_advantages(rewards, 1, ScaleRewards::group);
  expect_vec(one.advantages, g["cases"]["group_G1"]["advantages"], "G=1 advantages");
  EXPECT_THROW(grpo_advantages(rewards, 5, ScaleRewards::group), Error);
}

namespace {

GrpoLossOptions grpo_options(const json& c) {
  GrpoLossOptions o;
  o.loss_type = grpo_loss_type_from_name(c["loss_type"].get<std::string>());
  o.beta = c["beta"];
  o.epsilon_low = c["epsilon_low"];
  o.epsilon_high = c["epsilon_high"];
  if (!c["delta"].is_null()) o.delta = c["delta"].get<double>();
  o.gradient_accumulation_steps = c["gradient_accumulation_steps"];
  o.max_completion_length = c["max_completion_length"];
  o.dapo_normalizer = c["dapo_normalizer"];
  return o;
}

}  // namespace

TEST(RlMath, GrpoLossMatchesGolden) {
  for (const json& c : golden()["grpo_loss"]) {
    SCOPED_TRACE(c["loss_type"].get<std::string>() + " beta " + std::to_string(c["beta"].get<double>()));
    const int64_t B = c["B"], T = c["T"];
    const auto logp = F(c["logp"]), ref = F(c["ref_logp"]), adv = F(c["advantages"]);
    const auto old = c["with_old"].get<bool>() ? F(c["logp_old"]) : std::vector<float>{};
    const auto mask = M(c["mask"]);
    std::vector<float> d(B * T, 0.f);
    const GrpoLossStats s = grpo_loss(grpo_options(c), logp, old, ref, adv, mask, B, T, d);
    EXPECT_CLOSE(s.loss, c["loss"].get<double>());
    expect_vec(d, c["d_logp"], "d_logp");
    EXPECT_CLOSE(s.mean_kl, c["mean_kl"].get<double>());
    EXPECT_CLOSE(s.low_clip, c["low_clip"].get<double>());
    EXPECT_CLOSE(s.high_clip, c["high_clip"].get<double>());
    EXPECT_CLOSE(s.region_clip, c["region_clip"].get<double>());
  }
}

TEST(RlMath, GrpoGradientsMatchFiniteDifferences) {
  for (const json& c : golden()["grpo_loss"]) {
    if (!c["with_old"].get<bool>()) continue;  // with logp_old = logp.detach() the loss value has no slope to probe
    SCOPED_TRACE(c["loss_type"].get<std::string>());
    const int64_t B = c["B"], T = c["T"];
    auto logp = F(c["logp"]);
    const auto old = F(c["logp_old"]), ref = F(c["ref_logp"]), adv = F(c["advantages"]);
    const auto mask = M(c["mask"]);
    const GrpoLossOptions o = grpo_options(c);
    std::vector<float> d(B * T, 0.f);
    grpo_loss(o, logp, old, ref, adv, mask, B, T, d, 3.0);
    const float h = 1.0f / 1024;
    for (int64_t i = 0; i < B * T; i++) {
      const float x0 = logp[i];
      logp[i] = x0 + h;
      const double lp = grpo_loss(o, logp, old, ref, adv, mask, B, T, {}).loss;
      logp[i] = x0 - h;
      const double lm = grpo_loss(o, logp, old, ref, adv, mask, B, T, {}).loss;
      logp[i] = x0;
      const double fd = 3.0 * (lp - lm) / (2.0 * h);
      EXPECT_NEAR(d[i], fd, 1e-5 + 1e-3 * std::fabs(fd)) << i;
    }
  }
}

TEST(RlMath, NamesParseAndUnknownNamesFail) {
  EXPECT_EQ(kl_estimator_from_name("k1"), KlEstimator::k1);
  EXPECT_EQ(kl_estimator_from_name("kl"), KlEstimator::k1);
  EXPECT_THROW(kl_estimator_from_name("full"), Error);
  EXPECT_EQ(dpo_loss_type_from_name("ipo"), DpoLossType::ipo);
  EXPECT_THROW(dpo_loss_type_from_name("kto"), Error);
  EXPECT_EQ(grpo_loss_type_from_name("dr_grpo"), GrpoLossType::dr_grpo);
  EXPECT_THROW(grpo_loss_type_from_name("sapo"), Error);
  EXPECT_THROW(scale_rewards_from_name("std"), Error);
}
