// PPO loop: roll out, score, policy/reference log-probs + value-head values, ppo_math rewards / GAE /
// whitening, then PPO epochs of the clipped policy + value loss through one combined backward per micro-batch.
#include "rl/ppo_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "peft/lora.h"
#include "rl/metrics_log.h"
#include "rl/prompt_sampler.h"
#include "rl/rl_checkpoint.h"
#include "rl/rl_optim.h"
#include "train/clip.h"
#include "train/optimizer.h"
#include "train/scheduler.h"
#include "train/trainer.h"  // model_fingerprint

using nlohmann::json;

namespace llmtune::rl {

// ---------------------------------------------------------------- value head

ValueHead make_value_head(int64_t hidden, float init_std, uint64_t seed) {
  if (hidden < 1) fail("value head: hidden size must be >= 1, got ", hidden);
  if (!(init_std >= 0)) fail("v_head_init_std must be >= 0, got ", init_std);
  ValueHead vh;
  Tensor w = Tensor::zeros({1, hidden});
  Rng rng(seed);
  for (int64_t e = 0; e < hidden; e++) w.f32()[e] = init_std * rng.normal();
  vh.params.add_param(kValueHeadWeight, std::move(w)).trainable = true;
  vh.params.add_param(kValueHeadBias, Tensor::zeros({1})).trainable = true;
  vh.params.sync_grad_buffers();
  return vh;
}

std::vector<float> value_head_forward(const ValueHead& vh, const float* h, int64_t N) {
  const int64_t E = vh.hidden();
  const float* w = vh.weight().value.f32();
  const double b = vh.bias().value.f32()[0];
  std::vector<float> v(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; i++) {
    const float* row = h + i * E;
    double s = b;
    for (int64_t e = 0; e < E; e++) s += double(w[e]) * double(row[e]);
    v[size_t(i)] = float(s);
  }
  return v;
}

void value_head_backward(ValueHead& vh, const float* h, int64_t N, std::span<const float> dvalues, float* d_h) {
  LLMTUNE_CHECK(int64_t(dvalues.size()) == N, "value_head_backward: dvalues has ", dvalues.size(), " values, expected ",
                N);
  const int64_t E = vh.hidden();
  const float* w = vh.weight().value.f32();
  float* dw = vh.weight().grad.defined() ? vh.weight().grad.f32() : nullptr;
  float* db = vh.bias().grad.defined() ? vh.bias().grad.f32() : nullptr;
  double db_sum = 0;
  std::vector<double> dw_sum(size_t(E), 0.0);
  for (int64_t i = 0; i < N; i++) {
    const float g = dvalues[size_t(i)];
    if (g == 0.f) continue;
    const float* row = h + i * E;
    db_sum += g;
    for (int64_t e = 0; e < E; e++) dw_sum[size_t(e)] += double(g) * double(row[e]);
    if (d_h) {
      float* d = d_h + i * E;
      for (int64_t e = 0; e < E; e++) d[e] += g * w[e];
    }
  }
  if (dw)
    for (int64_t e = 0; e < E; e++) dw[e] += float(dw_sum[size_t(e)]);
  if (db) db[0] += float(db_sum);
}

void save_value_head(const ValueHead& vh, const std::string& path) {
  write_safetensors(path, {{kValueHeadWeight, vh.weight().value}, {kValueHeadBias, vh.bias().value}},
                    {{"format", "pt"}});
}

ValueHead load_value_head(const std::string& path, int64_t hidden) {
  SafetensorsFile f = open_safetensors(path);
  for (const char* name : {kValueHeadWeight, kValueHeadBias})
    if (!f.has(name)) fail(path, ": no tensor named '", name, "': not a PPO value head file");
  ValueHead vh = make_value_head(hidden, 0.f, 0);
  Tensor w = f.get_f32(kValueHeadWeight), b = f.get_f32(kValueHeadBias);
  if (w.shape != Shape{1, hidden} || b.shape != Shape{1})
    fail(path, ": value head shapes do not match a model of hidden size ", hidden, " (expected [1, ", hidden,
         "] and [1])");
  std::memcpy(vh.weight().value.data, w.data, size_t(hidden) * sizeof(float));
  vh.bias().value.f32()[0] = b.f32()[0];
  return vh;
}

// ---------------------------------------------------------------- step pieces

std::vector<float> reference_token_logps(Model& policy, Model* ref, Workspace& ws, const PackedBatch& pb,
                                         float temperature) {
  if (ref) return forward_token_logps(*ref, ws, pb, nullptr, temperature);
  AdaptersOff adapters_off(policy);
  return forward_token_logps(policy, ws, pb, nullptr, temperature);
}

PolicyValueOut policy_value_forward(Model& policy, const ValueHead& vh, Workspace& ws, const PackedBatch& pb,
                                    float temperature) {
  if (vh.hidden() != policy.cfg.hidden_size)
    fail("value head: hidden size ", vh.hidden(), " does not match the model's ", policy.cfg.hidden_size);
  PolicyValueOut out;
  out.logp = forward_token_logps(policy, ws, pb, nullptr, temperature);
  out.values = value_head_forward(vh, ws.h_final.f32(), pb.B * pb.T);  // h_final is untouched by temperature
  return out;
}

void ppo_backward(Model& policy, ValueHead& vh, Workspace& ws, const PackedBatch& pb, std::span<const float> dlogp,
                  std::span<const float> dvalues, float temperature) {
  const int64_t N = pb.B * pb.T;
  backward_token_weights_and_hidden(
      policy, ws, pb, dlogp, [&](float* d_final) { value_head_backward(vh, ws.h_final.f32(), N, dvalues, d_final); },
      nullptr, temperature);
}

// ---------------------------------------------------------------- trainer

namespace {

double mean_of(std::span<const float> xs) {
  double s = 0;
  for (float x : xs) s += x;
  return xs.empty() ? 0.0 : s / double(xs.size());
}

double unbiased_std(std::span<const float> xs) {
  if (xs.size() < 2) return 0.0;
  const double m = mean_of(xs);
  double v = 0;
  for (float x : xs) v += (x - m) * (x - m);
  return std::sqrt(v / double(xs.size() - 1));
}

void scale_grads(Model& m, double c) {
  for (Param& p : m.params)
    if (p.trainable && p.grad.defined()) {
      float* g = p.grad.f32();
      for (int64_t i = 0; i < p.grad.numel(); i++) g[i] = float(double(g[i]) * c);
    }
}

// One PPO batch in the response layout (B rows × T = response_length positions): position t of row b is
// response token t, predicted from the hidden state at full position prompt_len − 1 + t.
struct Rollout {
  int64_t B = 0, T = 0;
  std::vector<ScoredSeq> seqs;  // prompt ⊕ response
  std::vector<int64_t> len;     // response tokens (≥ 1)
  std::vector<uint8_t> has_eos;
  std::vector<float> logp, ref_logp, values;  // B×T
};

// Copies positions t < n_b(b) of each row from the full layout of pb into rows [row0, row0+pb.B) of `out`
// (B×T response layout).
template <class CountFn>
void gather_response(const PackedBatch& pb, std::span<const float> full, int64_t T, int64_t row0, CountFn n_b,
                     std::vector<float>& out) {
  for (int64_t b = 0; b < pb.B; b++)
    for (int64_t t = 0; t < n_b(b); t++) out[size_t((row0 + b) * T + t)] = full[size_t(pb.pos(b, t))];
}

}  // namespace

int64_t ppo_max_steps(const PpoArgs& args, int64_t num_prompts) {
  if (args.max_steps > 0) return args.max_steps;
  const double episodes = std::floor(args.num_train_epochs * double(num_prompts));
  return int64_t(std::ceil(episodes / double(std::max<int64_t>(args.batch_size(), 1))));
}

PpoTrainResult ppo_train(Model& policy, Model* ref, ValueHead& vh, const std::vector<PromptRow>& prompts,
                         const std::vector<RewardSpec>& rewards, const PpoArgs& args, const PpoHooks& hooks) {
  const double t0 = now_seconds();
  if (prompts.empty()) fail("ppo: the prompt dataset is empty");
  if (rewards.empty()) fail("ppo: no reward given (--reward keyword:WORD, regex:..., length:MIN:MAX, gsm8k or command:...)");
  if (!hooks.decode) fail("ppo_train: a decode hook is required");
  if (args.per_device_train_batch_size < 1) fail("per_device_train_batch_size must be >= 1");
  if (args.gradient_accumulation_steps < 1) fail("gradient_accumulation_steps must be >= 1");
  if (args.num_mini_batches < 1) fail("num_mini_batches must be >= 1");
  if (args.local_rollout_forward_batch_size < 1) fail("local_rollout_forward_batch_size must be >= 1");
  if (args.response_length < 1) fail("response_length must be >= 1");
  if (args.num_ppo_epochs < 1) fail("num_ppo_epochs must be >= 1");
  if (!(args.temperature > 0)) fail("temperature must be > 0 for PPO (responses are sampled), got ", args.temperature);
  if (!(args.gamma >= 0 && args.gamma <= 1)) fail("gamma must be in [0, 1], got ", args.gamma);
  if (!(args.lam >= 0 && args.lam <= 1)) fail("lam must be in [0, 1], got ", args.lam);
  if (!(args.loss.cliprange > 0)) fail("cliprange must be > 0, got ", args.loss.cliprange);
  if (!(args.loss.cliprange_value >= 0)) fail("cliprange_value must be >= 0, got ", args.loss.cliprange_value);
  if (vh.hidden() != policy.cfg.hidden_size)
    fail("value head: hidden size ", vh.hidden(), " does not match the model's ", policy.cfg.hidden_size);
  if (args.score.use_score_scaling && args.batch_size() < 2)
    fail("use_score_scaling needs a batch of at least 2 rollouts (per_device_train_batch_size · "
         "gradient_accumulation_steps · num_mini_batches)");
  const bool classic = args.variant == PpoVariant::classic;
  const int64_t B = args.batch_size(), T = args.response_length, GA = args.gradient_accumulation_steps;
  const int64_t MB = args.per_device_train_batch_size;
  const int64_t mini = MB * GA;
  const int64_t max_steps = ppo_max_steps(args, int64_t(prompts.size()));
  if (max_steps < 1) fail("ppo: nothing to train (max_steps / num_train_epochs give 0 steps)");
  // Classic TRL scores raw logits; current TRL divides them by the sampling temperature.
  const float logp_temperature = classic ? 1.f : args.temperature;

  policy.sync_grad_buffers();
  policy.zero_grads();
  vh.params.zero_grads();
  Optimizer opt = rl_policy_optimizer(policy, args, "ppo");
  const OptimizerConfig oc = rl_optimizer_config(args);
  Optimizer opt_v = make_optimizer(vh.params, oc);
  LrScheduler sched = rl_scheduler(args, max_steps);
  KlController kl_ctl = args.adaptive_kl ? adaptive_kl_controller(args.init_kl_coef, args.target, args.horizon)
                                         : fixed_kl_controller(args.kl_coef);
  RunningMoments running;
  PpoLossOptions lopt = args.loss;
  if (!classic) lopt.ratio_threshold.reset();  // current TRL has no ratio threshold

  PpoTrainResult result;
  PromptSampler sampler(prompts.size(), args.seed);
  Rng perm_rng(args.seed ^ 0x7070e70cULL);

  // Checkpoints / resume (before metrics.jsonl is opened: a refused output_dir stays untouched). The
  // value head travels beside the policy weights, its optimizer as "value_head"; the fingerprint names
  // the head's shape too.
  RlCheckpointParts parts = rl_checkpoint_parts("ppo", policy, opt, sched, hooks.save_model, hooks.load_model_weights);
  parts.fingerprint += cat("\nvalue_head ", kValueHeadWeight, " [1, ", vh.hidden(), "]");
  parts.extra_optimizers = {{"value_head", &opt_v}};
  parts.rngs = {{"order", &sampler.rng}, {"perm", &perm_rng}};
  if (hooks.save_model)
    parts.save_model = [&](const std::string& dir) {
      hooks.save_model(dir);
      save_value_head(vh, dir + "/" + kValueHeadFile);
    };
  if (hooks.load_model_weights)
    parts.load_model_weights = [&](const std::string& dir) {
      // The head is read and checked first, so a bad head file fails before the policy changes.
      const ValueHead loaded = load_value_head(dir + "/" + kValueHeadFile, vh.hidden());
      hooks.load_model_weights(dir);
      std::memcpy(vh.weight().value.data, loaded.weight().value.data, size_t(vh.hidden()) * sizeof(float));
      vh.bias().value.f32()[0] = loaded.bias().value.f32()[0];
    };
  RlCheckpointer ck(rl_checkpoint_options(args), parts, rl_run_info(args, max_steps, B));
  std::optional<RlState> resumed = ck.begin();
  int64_t first_step = 1;
  if (resumed) {
    const json& t = resumed->trainer;
    try {
      kl_ctl.value = t.at("kl_coef").get<double>();
      const json& rm = t.at("running_moments");
      running.mean = rm.at("mean").get<double>();
      running.std = rm.at("std").get<double>();
      running.var = rm.at("var").get<double>();
      running.count = rm.at("count").get<double>();
      sampler.from_json(t, "prompt_");
      result.reward_mean = t.at("reward_mean").get<std::vector<double>>();
      result.kl = t.at("kl").get<std::vector<double>>();
    } catch (const json::exception& e) {
      fail("cannot resume ppo: the checkpoint's llmtune_state.json trainer_state is incomplete (", e.what(), ")");
    }
    sampler.check_prompt_count("ppo");
    first_step = resumed->global_step + 1;
  }
  MetricsLog metrics(args.output_dir, result.log_history, hooks.on_log);
  // metrics.jsonl restarts from the checkpoint's history (later lines were the failed run's).
  if (resumed) metrics.replay(resumed->log_history);
  auto state_at = [&](int64_t step) {
    RlState st;
    st.global_step = step;
    st.epoch = double(step * B) / double(prompts.size());
    st.log_history = result.log_history;
    st.trainer = {{"kl_coef", kl_ctl.value},
                  {"running_moments",
                   {{"mean", running.mean}, {"std", running.std}, {"var", running.var}, {"count", running.count}}},
                  {"reward_mean", result.reward_mean},
                  {"kl", result.kl}};
    sampler.to_json(st.trainer, "prompt_");
    return st;
  };

  Workspace ws, ws_ref;
  ws.gradient_checkpointing = args.gradient_checkpointing;

  for (int64_t step = first_step; step <= max_steps; step++) {
    const double lr = sched.current_lr();
    const double kl_coef_used = kl_ctl.value;

    // ---- rollout: prompts, responses, scores
    std::vector<const PromptRow*> batch;
    while (int64_t(batch.size()) < B) batch.push_back(&prompts[sampler.next()]);
    Rollout ro;
    ro.B = B;
    ro.T = T;
    const int64_t chunk = args.local_rollout_forward_batch_size;
    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      std::vector<std::vector<int32_t>> in;
      for (int64_t i = c0; i < std::min(B, c0 + chunk); i++) in.push_back(batch[size_t(i)]->ids);
      GenerateOptions go;
      go.max_new_tokens = T;
      go.sampling.do_sample = true;
      go.sampling.temperature = args.temperature;
      go.sampling.top_k = args.top_k;
      go.sampling.top_p = args.top_p;
      go.seed = args.seed * 1000003ULL + uint64_t(step) * 7919ULL + uint64_t(c0);
      go.eos_ids = args.eos_ids;
      std::vector<std::vector<int32_t>> out = generate(policy, in, go);
      for (size_t k = 0; k < out.size(); k++) {
        std::vector<int32_t>& r = out[k];
        // generate() stops a row at its first EOS (kept); cut defensively at the first EOS anyway.
        for (size_t j = 0; j < r.size(); j++)
          if (std::find(args.eos_ids.begin(), args.eos_ids.end(), r[j]) != args.eos_ids.end()) {
            r.resize(j + 1);
            break;
          }
        if (r.empty()) fail("ppo: generation returned an empty response (internal)");
        const PromptRow* p = batch[size_t(c0) + k];
        ScoredSeq s;
        s.ids = p->ids;
        s.ids.insert(s.ids.end(), r.begin(), r.end());
        s.prompt_len = int64_t(p->ids.size());
        ro.seqs.push_back(std::move(s));
        ro.len.push_back(int64_t(r.size()));
        ro.has_eos.push_back(std::find(args.eos_ids.begin(), args.eos_ids.end(), r.back()) != args.eos_ids.end());
      }
    }
    std::vector<RewardInput> rin;
    for (int64_t b = 0; b < B; b++) {
      const ScoredSeq& s = ro.seqs[size_t(b)];
      std::vector<int32_t> resp(s.ids.begin() + s.prompt_len, s.ids.end());
      rin.push_back({batch[size_t(b)]->prompt, hooks.decode(resp), batch[size_t(b)]->answer});
    }
    const std::vector<float> raw_scores = compute_rewards(rewards, rin);
    std::vector<float> scores = raw_scores;
    if (args.missing_eos_penalty)
      for (int64_t b = 0; b < B; b++)
        if (!ro.has_eos[size_t(b)]) scores[size_t(b)] -= float(*args.missing_eos_penalty);
    process_scores(args.score, running, scores);

    // ---- old log-probs, reference log-probs, values (no dropout, no gradient)
    ro.logp.assign(size_t(B * T), 0.f);
    ro.ref_logp.assign(size_t(B * T), 0.f);
    ro.values.assign(size_t(B * T), 0.f);
    for (int64_t c0 = 0; c0 < B; c0 += chunk) {
      const int64_t n = std::min(B, c0 + chunk) - c0;
      const PackedBatch pb = pack_sequences(std::span(ro.seqs).subspan(size_t(c0), size_t(n)), policy, "PPO rollout");
      auto resp_len = [&](int64_t b) { return ro.len[size_t(c0 + b)]; };
      // Values are read one position further (the current variant's value mask reaches last + 1, the
      // hidden state after the last response token), within the row and within T.
      auto value_len = [&](int64_t b) { return std::min(ro.len[size_t(c0 + b)] + 1, T); };
      const PolicyValueOut pv = policy_value_forward(policy, vh, ws, pb, logp_temperature);
      gather_response(pb, pv.logp, T, c0, resp_len, ro.logp);
      gather_response(pb, pv.values, T, c0, value_len, ro.values);
      const std::vector<float> ref_lp = reference_token_logps(policy, ref, ref ? ws_ref : ws, pb, logp_temperature);
      gather_response(pb, ref_lp, T, c0, resp_len, ro.ref_logp);
    }

    // ---- rewards, advantages, returns
    std::vector<int64_t> seq_last(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; b++) seq_last[size_t(b)] = ro.len[size_t(b)] - 1;
    PpoMasks masks = current_ppo_masks(seq_last, B, T);  // policy: t < len
    if (classic) masks.value = masks.policy;              // classic: value mask = policy mask
    const PpoRewards rw = ppo_rewards(args.variant, args.kl_estimator, kl_coef_used, ro.logp, ro.ref_logp, scores,
                                      masks, B, T);
    const PpoAdvantages adv =
        ppo_advantages(args.variant, ro.values, rw.rewards, masks, args.gamma, args.lam, args.whiten_rewards, B, T);

    // ---- PPO epochs
    struct Acc {
      double loss = 0, pg = 0, vf = 0, pg_clip = 0, vf_clip = 0, approx_kl = 0, ratio = 0, ratio_sq = 0;
      int64_t n = 0, threshold_hits = 0;
    } acc;
    double gn_sum = 0;
    int64_t opt_steps = 0;
    std::vector<int64_t> perm(static_cast<size_t>(B));
    for (int64_t epoch = 0; epoch < args.num_ppo_epochs; epoch++) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = B - 1; i > 0; i--) std::swap(perm[size_t(i)], perm[size_t(perm_rng.below(uint64_t(i + 1)))]);
      for (int64_t m0 = 0; m0 < B; m0 += mini) {
        for (int64_t u0 = m0; u0 < m0 + mini; u0 += MB) {
          std::vector<int64_t> rows(perm.begin() + u0, perm.begin() + u0 + MB);
          const int64_t n = MB;
          std::vector<ScoredSeq> seqs;
          for (int64_t r : rows) seqs.push_back(ro.seqs[size_t(r)]);
          const PackedBatch pb = pack_sequences(seqs, policy, "PPO micro-batch");
          const PolicyValueOut pv = policy_value_forward(policy, vh, ws, pb, logp_temperature);
          // Micro-batch slices in the response layout.
          const size_t NT = size_t(n * T);
          std::vector<float> lp_new(NT, 0.f), v_new(NT, 0.f), lp_old(NT), a(NT), v_old(NT), ret(NT);
          PpoMasks mk;
          mk.policy.resize(NT);
          mk.value.resize(NT);
          for (int64_t k = 0; k < n; k++) {
            const size_t src = size_t(rows[size_t(k)] * T), dst = size_t(k * T);
            std::copy_n(ro.logp.begin() + long(src), T, lp_old.begin() + long(dst));
            std::copy_n(adv.advantages.begin() + long(src), T, a.begin() + long(dst));
            std::copy_n(adv.values.begin() + long(src), T, v_old.begin() + long(dst));
            std::copy_n(adv.returns.begin() + long(src), T, ret.begin() + long(dst));
            std::copy_n(masks.policy.begin() + long(src), T, mk.policy.begin() + long(dst));
            std::copy_n(masks.value.begin() + long(src), T, mk.value.begin() + long(dst));
          }
          auto resp_len = [&](int64_t b) { return ro.len[size_t(rows[size_t(b)])]; };
          auto value_len = [&](int64_t b) { return std::min(ro.len[size_t(rows[size_t(b)])] + 1, T); };
          gather_response(pb, pv.logp, T, 0, resp_len, lp_new);
          gather_response(pb, pv.values, T, 0, value_len, v_new);
          std::vector<float> d_lp(NT, 0.f), d_v(NT, 0.f);
          const PpoLossStats st = ppo_loss(lopt, lp_new, lp_old, a, v_new, v_old, ret, mk, d_lp, d_v, 1.0 / double(GA));
          if (!std::isfinite(st.loss))
            fail("ppo: the loss became ", st.loss, " at step ", step, " (PPO epoch ", epoch + 1,
                 "): the policy or the value head diverged. Lower --learning_rate, raise --kl_coef / --cliprange_value "
                 "or set --max_grad_norm. The failing mini-batch was not applied (the weights hold no NaN) and no "
                 "checkpoint was written for this step");
          // Back to the full layout of the micro-batch, then one backward for both losses.
          std::vector<float> d_lp_full(size_t(pb.B * pb.T), 0.f), d_v_full(size_t(pb.B * pb.T), 0.f);
          for (int64_t b = 0; b < n; b++) {
            for (int64_t t = 0; t < resp_len(b); t++) d_lp_full[size_t(pb.pos(b, t))] = d_lp[size_t(b * T + t)];
            for (int64_t t = 0; t < value_len(b); t++) d_v_full[size_t(pb.pos(b, t))] = d_v[size_t(b * T + t)];
          }
          ppo_backward(policy, vh, ws, pb, d_lp_full, d_v_full, logp_temperature);
          acc.loss += st.loss;
          acc.pg += st.pg_loss;
          acc.vf += st.vf_loss;
          acc.pg_clip += st.pg_clipfrac;
          acc.vf_clip += st.vf_clipfrac;
          acc.approx_kl += classic ? st.approx_kl : st.approx_kl_all;
          acc.ratio += st.mean_ratio;
          acc.ratio_sq += st.mean_ratio * st.mean_ratio;
          acc.threshold_hits += st.ratio_threshold_hit;
          acc.n++;
        }
        // One optimizer step per mini-batch; the norm covers the policy and the value head together.
        const double gp = global_grad_norm(policy), gv = global_grad_norm(vh.params);
        const double gn = std::sqrt(gp * gp + gv * gv);
        if (!std::isfinite(gn))
          fail("ppo: the gradient norm became ", gn, " at step ", step, " (PPO epoch ", epoch + 1,
               "): lower --learning_rate or set --max_grad_norm. That update was not applied (the weights hold no "
               "NaN) and no checkpoint was written for this step");
        if (args.max_grad_norm > 0) {
          const double c = args.max_grad_norm / (gn + 1e-6);
          if (c < 1.0) {
            scale_grads(policy, c);
            scale_grads(vh.params, c);
          }
        }
        opt.step(lr);
        opt_v.step(lr);
        policy.zero_grads();
        vh.params.zero_grads();
        gn_sum += gn;
        opt_steps++;
      }
    }
    sched.step();
    const double seq_kl = mean_sequence_kl(rw.kl, masks.policy, B, T);
    kl_controller_update(kl_ctl, seq_kl, B);

    // ---- statistics
    double entropy = 0, non_score = 0, resp_len_sum = 0, eos = 0;
    for (int64_t b = 0; b < B; b++) {
      for (int64_t t = 0; t < T; t++) {
        const size_t i = size_t(b * T + t);
        if (masks.policy[i]) entropy -= ro.logp[i];
        non_score += rw.non_score[i];
      }
      resp_len_sum += double(ro.len[size_t(b)]);
      eos += ro.has_eos[size_t(b)];
    }
    const double reward_mean = mean_of(raw_scores), score_mean = mean_of(scores);
    const double c = double(std::max<int64_t>(acc.n, 1));
    const double ratio_mean = acc.ratio / c;
    json stats{{"type", "train"},
               {"step", step},
               {"episode", step * B},
               {"epoch", double(step * B) / double(prompts.size())},
               {"loss", acc.loss / c},
               {"learning_rate", lr},
               {"grad_norm", opt_steps ? gn_sum / double(opt_steps) : 0.0},
               {"reward", reward_mean},
               {"reward_std", unbiased_std(raw_scores)},
               {"objective/scores", score_mean},
               {"objective/kl", seq_kl},
               {"objective/entropy", entropy / double(B)},
               {"objective/non_score_reward", non_score / double(B)},
               {"objective/rlhf_reward", score_mean + non_score / double(B)},
               {"policy/approxkl_avg", acc.approx_kl / c},
               {"policy/clipfrac_avg", acc.pg_clip / c},
               {"loss/policy_avg", acc.pg / c},
               {"loss/value_avg", acc.vf / c},
               {"val/clipfrac_avg", acc.vf_clip / c},
               {"val/ratio", ratio_mean},
               {"val/ratio_var", std::max(0.0, acc.ratio_sq / c - ratio_mean * ratio_mean)},
               {"val/num_eos_tokens", eos},
               {"kl_coef", kl_coef_used},
               {"response_length", resp_len_sum / double(B)},
               {"elapsed_seconds", now_seconds() - t0}};
    if (classic) stats["ppo/ratio_threshold_hits"] = acc.threshold_hits;
    result.reward_mean.push_back(reward_mean);
    result.kl.push_back(seq_kl);
    if (hooks.on_step) hooks.on_step(step, max_steps, stats);
    const bool last = step == max_steps;
    if ((args.logging_steps > 0 && step % args.logging_steps == 0) || last) metrics.emit(stats);
    ck.maybe_save(state_at(step));
  }
  result.steps = max_steps;
  result.final_kl_coef = kl_ctl.value;
  result.runtime_s = now_seconds() - t0;
  metrics.emit(json{{"type", "summary"},
                    {"step", max_steps},
                    {"train_runtime", result.runtime_s},
                    {"reward_first", result.reward_mean.front()},
                    {"reward_last", result.reward_mean.back()},
                    {"peak_rss_bytes", peak_rss_bytes()}});
  ck.write_final_state(state_at(max_steps));
  return result;
}

}  // namespace llmtune::rl
