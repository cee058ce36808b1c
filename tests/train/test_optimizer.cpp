// Optimizer (AdamW/SGD vs hand computation, decay groups, state files), LR schedules and clipping.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "io/safetensors.h"
#include "train/clip.h"
#include "train/optimizer.h"
#include "train/scheduler.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Scheduler, LinearWithWarmupRatioUsesCeil) {
  LrScheduler s;
  s.kind = SchedulerKind::Linear;
  s.base_lr = 1.0;
  s.num_training_steps = 10;
  s.warmup_steps = resolve_warmup_steps(0, 0.15, 10);  // ceil(1.5) = 2
  EXPECT_EQ(s.warmup_steps, 2);
  EXPECT_DOUBLE_EQ(s.multiplier(0), 0.0);
  EXPECT_DOUBLE_EQ(s.multiplier(1), 0.5);
  EXPECT_DOUBLE_EQ(s.multiplier(2), 1.0);
  EXPECT_DOUBLE_EQ(s.multiplier(6), 0.5);  // (10 − 6) / (10 − 2)
  EXPECT_DOUBLE_EQ(s.multiplier(10), 0.0);
  EXPECT_DOUBLE_EQ(s.multiplier(12), 0.0);
  // The k-th optimizer step uses lr·λ(k−1): before any step() the lr is λ(0).
  EXPECT_DOUBLE_EQ(s.current_lr(), 0.0);
  s.step();
  EXPECT_DOUBLE_EQ(s.current_lr(), 0.5);
  // warmup_steps > 0 wins over the ratio.
  EXPECT_EQ(resolve_warmup_steps(3, 0.5, 10), 3);
  EXPECT_EQ(resolve_warmup_steps(0, 0.0, 10), 0);
  EXPECT_EQ(resolve_warmup_steps(0, 0.01, 10), 1);  // ceil(0.1)
}

TEST(Scheduler, LinearWithoutWarmup) {
  LrScheduler s{SchedulerKind::Linear, 2.0, 0, 4, 0};
  EXPECT_DOUBLE_EQ(s.lr_at(0), 2.0);
  EXPECT_DOUBLE_EQ(s.lr_at(1), 1.5);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 0.5);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 0.0);
}

TEST(Scheduler, Cosine) {
  LrScheduler s{SchedulerKind::Cosine, 1.0, 2, 10, 0};
  EXPECT_DOUBLE_EQ(s.multiplier(1), 0.5);
  EXPECT_DOUBLE_EQ(s.multiplier(2), 1.0);
  EXPECT_NEAR(s.multiplier(6), 0.5, 1e-15);  // halfway: 0.5·(1 + cos(π/2))
  EXPECT_NEAR(s.multiplier(4), 0.5 * (1 + std::cos(M_PI * 0.25)), 1e-15);
  EXPECT_NEAR(s.multiplier(10), 0.0, 1e-15);
}

TEST(Scheduler, ConstantIgnoresWarmupConstantWithWarmupDoesNot) {
  LrScheduler c{SchedulerKind::Constant, 1.0, 5, 10, 0};
  for (int64_t k = 0; k < 12; k++) EXPECT_DOUBLE_EQ(c.multiplier(k), 1.0) << k;
  LrScheduler w{SchedulerKind::ConstantWithWarmup, 1.0, 4, 10, 0};
  EXPECT_DOUBLE_EQ(w.multiplier(0), 0.0);
  EXPECT_DOUBLE_EQ(w.multiplier(1), 0.25);
  EXPECT_DOUBLE_EQ(w.multiplier(4), 1.0);
  EXPECT_DOUBLE_EQ(w.multiplier(9), 1.0);
}

TEST(Scheduler, NamesAndState) {
  EXPECT_EQ(parse_scheduler_name("cosine"), SchedulerKind::Cosine);
  EXPECT_EQ(parse_scheduler_name("constant_with_warmup"), SchedulerKind::ConstantWithWarmup);
  const std::string e = error_of([] { parse_scheduler_name("polynomial"); });
  EXPECT_NE(e.find("unknown lr_scheduler_type 'polynomial'"), std::string::npos) << e;
  EXPECT_NE(e.find("linear, cosine, constant, constant_with_warmup"), std::string::npos) << e;
  LrScheduler s{SchedulerKind::Linear, 1.0, 1, 9, 5}, t;
  load_scheduler_state(t, s.to_json(), "scheduler.json");
  EXPECT_EQ(t.step_count, 5);
  EXPECT_NE(error_of([&] { load_scheduler_state(t, nlohmann::json::object(), "x/scheduler.json"); })
                .find("x/scheduler.json: field 'step_count'"),
            std::string::npos);
  EXPECT_NE(error_of([] { resolve_warmup_steps(0, 1.5, 10); }).find("warmup_ratio"), std::string::npos);
}

TEST(Optimizer, NamesAliasesAndErrors) {
  EXPECT_EQ(parse_optimizer_name("adamw_torch"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_name("adamw"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_name("adamw_hf"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_name("adamw_torch_fused"), OptimizerKind::AdamW);
  EXPECT_EQ(parse_optimizer_name("sgd"), OptimizerKind::SGD);
  EXPECT_FALSE(optimizer_note("adamw_hf").empty());
  EXPECT_FALSE(optimizer_note("adamw_torch_fused").empty());
  EXPECT_TRUE(optimizer_note("adamw_torch").empty());
  std::string e = error_of([] { parse_optimizer_name("lion"); });
  EXPECT_NE(e.find("unknown optim 'lion'"), std::string::npos) << e;
  EXPECT_NE(e.find("adamw_torch, adamw, adamw_hf, adamw_torch_fused, sgd"), std::string::npos) << e;
  EXPECT_EQ(parse_optimizer_name("adamw_8bit"), OptimizerKind::AdamW8bit);
  EXPECT_EQ(parse_optimizer_name("adamw_bnb_8bit"), OptimizerKind::AdamW8bit);
  EXPECT_EQ(parse_optimizer_name("paged_adamw_8bit"), OptimizerKind::AdamW8bit);
  EXPECT_EQ(parse_optimizer_name("paged_adamw_32bit"), OptimizerKind::AdamW);
  EXPECT_NE(optimizer_note("paged_adamw_8bit").find("paged optimizers have no meaning on CPU"), std::string::npos);
  EXPECT_NE(optimizer_note("paged_adamw_32bit").find("without paging"), std::string::npos);
  EXPECT_TRUE(optimizer_note("adamw_8bit").empty());
  e = error_of([] { parse_optimizer_name("lion_8bit"); });
  EXPECT_NE(e.find("not available yet"), std::string::npos) << e;
}

TEST(Optimizer, DecayExclusionNames) {
  for (const char* n : {"gpt_neox.layers.0.attention.query_key_value.bias", "model.norm.weight",
                        "model.layers.3.input_layernorm.weight", "model.layers.3.post_attention_layernorm.weight",
                        "gpt_neox.final_layer_norm.weight", "model.layers.0.self_attn.q_norm.weight",
                        "x.RMSNorm.weight", "norm.weight", "a.norm", "blocks.0.LayerNorm.weight", "h.0.attn.c_attn.bias"})
    EXPECT_TRUE(no_decay_by_name(n)) << n;
  for (const char* n : {"model.layers.0.self_attn.q_proj.weight", "gpt_neox.embed_in.weight", "embed_out.weight",
                        "transformer.h.0.ln_1.weight", "model.layers.0.self_attn.q_proj.lora_A.weight",
                        "model.layers.0.self_attn.q_proj.lora_B.weight", "normal.weight", "x.norms.weight",
                        "x.norm_out.weight"})
    EXPECT_FALSE(no_decay_by_name(n)) << n;
}

TEST(Optimizer, LayerNormModuleRuleCoversGpt2) {
  // GPT-2's ln_1/ln_2/ln_f names match no name rule; HF excludes them as nn.LayerNorm params.
  Model m = load_model(train_golden_dir("gpt2"));
  int excluded = 0, decayed = 0;
  for (const Param& p : m.params) {
    const bool ex = excluded_from_weight_decay(m, p);
    const bool is_ln = p.name.find(".ln_") != std::string::npos;
    const bool is_bias = p.name.size() > 5 && p.name.substr(p.name.size() - 5) == ".bias";
    EXPECT_EQ(ex, is_ln || is_bias) << p.name;
    (ex ? excluded : decayed)++;
  }
  EXPECT_GT(excluded, 4);
  EXPECT_GT(decayed, 4);
}

TEST(Optimizer, AdamWTwoStepsMatchHandComputation) {
  const double lr = 0.01, wd = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  std::vector<float> p = {1.f, -2.f, 0.5f, 0.f}, m(4, 0.f), v(4, 0.f);
  const std::vector<std::vector<float>> grads = {{0.1f, -0.3f, 0.f, 2.f}, {-0.2f, 0.05f, 0.f, 1.f}};
  std::vector<double> P(p.begin(), p.end()), M(4, 0), V(4, 0);
  for (int t = 1; t <= 2; t++) {
    adamw_update(p.data(), grads[size_t(t - 1)].data(), m.data(), v.data(), 4, lr, wd, b1, b2, eps, t);
    for (size_t i = 0; i < 4; i++) {
      const double g = grads[size_t(t - 1)][i];
      P[i] *= 1 - lr * wd;
      M[i] = b1 * M[i] + (1 - b1) * g;
      V[i] = b2 * V[i] + (1 - b2) * g * g;
      P[i] -= (lr / (1 - std::pow(b1, t))) * M[i] / (std::sqrt(V[i]) / std::sqrt(1 - std::pow(b2, t)) + eps);
    }
  }
  for (size_t i = 0; i < 4; i++) {
    EXPECT_NEAR(p[i], P[i], 1e-6) << i;
    EXPECT_NEAR(m[i], M[i], 1e-7) << i;
    EXPECT_NEAR(v[i], V[i], 1e-9) << i;
  }
  // Step 1 moves every entry with |g| ≫ eps by ≈ lr (sign update) on top of the decay.
  EXPECT_NEAR(P[3], -0.01 - 0.01, 1e-3);
}

TEST(Optimizer, SgdMomentumAndL2MatchHandComputation) {
  const double lr = 0.1, wd = 0.01, mu = 0.9;
  std::vector<float> p = {1.f, -1.f}, buf(2, 0.f);
  const std::vector<std::vector<float>> grads = {{0.5f, 0.25f}, {-0.5f, 1.f}};
  std::vector<double> P = {1, -1}, B = {0, 0};
  for (int t = 1; t <= 2; t++) {
    sgd_update(p.data(), grads[size_t(t - 1)].data(), buf.data(), 2, lr, wd, mu, t);
    for (size_t i = 0; i < 2; i++) {
      const double d = grads[size_t(t - 1)][i] + wd * P[i];
      B[i] = t == 1 ? d : mu * B[i] + d;
      P[i] -= lr * B[i];
    }
  }
  for (size_t i = 0; i < 2; i++) EXPECT_NEAR(p[i], P[i], 1e-6) << i;
}

TEST(Optimizer, GroupsStepAndStateRoundTrip) {
  Model m = tiny_model();
  for (auto& p : m.params) p.trainable = p.name.find("layers.1.") != std::string::npos;
  m.sync_grad_buffers();
  OptimizerConfig oc;
  oc.weight_decay = 0.1;
  Optimizer opt = make_optimizer(m, oc);
  ASSERT_EQ(opt.states.size(), 12u);  // layer 1: 2 norms × 2 + 4 linears × 2
  for (auto& s : opt.states) EXPECT_EQ(s.decay, s.param->name.find("weight") != std::string::npos &&
                                                    s.param->name.find("layernorm") == std::string::npos)
                                 << s.param->name;
  // One step with unit gradients changes the trainable params only.
  Model before = tiny_model();
  for (auto& s : opt.states)
    for (int64_t i = 0; i < s.param->grad.numel(); i++) s.param->grad.f32()[i] = 1.f;
  opt.step(1e-3);
  EXPECT_EQ(opt.step_count, 1);
  for (const Param& p : m.params) {
    const bool same = std::memcmp(p.value.data, before.find(p.name)->value.data, p.value.nbytes()) == 0;
    EXPECT_EQ(same, !p.trainable) << p.name;
  }

  TempDir dir("optstate");
  const std::string path = dir.path + "/optimizer.safetensors";
  save_optimizer_state(opt, path);
  SafetensorsFile f = open_safetensors(path);
  EXPECT_TRUE(f.has("exp_avg.gpt_neox.layers.1.attention.dense.weight"));
  EXPECT_TRUE(f.has("exp_avg_sq.gpt_neox.layers.1.attention.dense.weight"));
  EXPECT_EQ(f.names().size(), 25u);  // 12 × 2 + step
  Optimizer opt2 = make_optimizer(m, oc);
  load_optimizer_state(opt2, path);
  EXPECT_EQ(opt2.step_count, 1);
  for (size_t i = 0; i < opt.states.size(); i++) {
    EXPECT_EQ(std::memcmp(opt.states[i].exp_avg.data, opt2.states[i].exp_avg.data, opt.states[i].exp_avg.nbytes()), 0);
    EXPECT_EQ(std::memcmp(opt.states[i].exp_avg_sq.data, opt2.states[i].exp_avg_sq.data,
                          opt.states[i].exp_avg_sq.nbytes()), 0);
  }

  // Another trainable set → a clear mismatch error.
  for (auto& p : m.params) p.trainable = p.name.find("layers.0.") != std::string::npos;
  m.sync_grad_buffers();
  Optimizer other = make_optimizer(m, oc);
  std::string e = error_of([&] { load_optimizer_state(other, path); });
  EXPECT_NE(e.find("checkpoint optimizer state does not match the model"), std::string::npos) << e;
  // Another optimizer kind too.
  OptimizerConfig sgd;
  sgd.kind = OptimizerKind::SGD;
  sgd.momentum = 0.9;
  Optimizer s = make_optimizer(m, sgd);
  e = error_of([&] { load_optimizer_state(s, path); });
  EXPECT_NE(e.find("does not match the model"), std::string::npos) << e;
  EXPECT_NE(e.find("'adamw'"), std::string::npos) << e;
}

TEST(Optimizer, RefusesModelsWithoutTrainableParams) {
  Model m = tiny_model();
  for (auto& p : m.params) p.trainable = false;
  m.sync_grad_buffers();
  EXPECT_NE(error_of([&] { make_optimizer(m, OptimizerConfig{}); }).find("no trainable parameters"),
            std::string::npos);
}

TEST(Clip, NormAndCoefficient) {
  Model m = tiny_model();
  double ref = 0;
  Rng rng(3);
  for (auto& p : m.params)
    for (int64_t i = 0; i < p.grad.numel(); i++) {
      p.grad.f32()[i] = rng.normal() * 0.01f;
      ref += double(p.grad.f32()[i]) * p.grad.f32()[i];
    }
  ref = std::sqrt(ref);
  EXPECT_NEAR(global_grad_norm(m), ref, 1e-12 * ref);
  // Below the limit: untouched.
  Param& any = m.params.front();
  const float g0 = any.grad.f32()[0];
  EXPECT_NEAR(clip_grad_norm(m, ref * 2), ref, 1e-12 * ref);
  EXPECT_EQ(any.grad.f32()[0], g0);
  // Above: scaled to max/(norm + 1e-6); returns the pre-clip norm.
  EXPECT_NEAR(clip_grad_norm(m, 0.5), ref, 1e-12 * ref);
  EXPECT_NEAR(any.grad.f32()[0], g0 * float(0.5 / (ref + 1e-6)), 1e-7 * std::fabs(g0) + 1e-12);
  EXPECT_NEAR(global_grad_norm(m), 0.5 * ref / (ref + 1e-6), 1e-6);
  // max_grad_norm <= 0: no clipping.
  const float g1 = any.grad.f32()[0];
  clip_grad_norm(m, 0.0);
  EXPECT_EQ(any.grad.f32()[0], g1);
}
