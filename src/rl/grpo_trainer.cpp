// GRPO loop: sample G completions per prompt, score them, group-normalise, and take one clipped-objective
// step (grpo_math) through the per-token-weighted backward of policy_logp.
#include "rl/metrics_log.h"
#include "rl/grpo_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "core/error.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "io/atomic_file.h"
#include "model/generate.h"
#include "peft/lora.h"
#include "rl/policy_logp.h"
#include "rl/prompt_sampler.h"
#include "rl/rl_optim.h"
#include "train/clip.h"
#include "train/optimizer.h"
#include "train/scheduler.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmtune::rl {

std::vector<PromptRow> parse_prompt_rows(std::string_view content, std::string_view name, const EncodeFn& encode,
                                         int64_t context, int64_t max_new_tokens) {
  std::vector<PromptRow> rows;
  int64_t line = 0;
  size_t start = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string_view::npos) end = content.size();
    std::string_view text = content.substr(start, end - start);
    start = end + 1;
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    json j;
    try {
      j = json::parse(text);
    } catch (const json::exception& e) {
      fail(name, ":", line, ": not valid JSON (", e.what(), ")");
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
      fail(name, ":", line, ": each line must be an object with a string field 'prompt'");
    PromptRow r;
    r.line = line;
    r.prompt = j["prompt"].get<std::string>();
    if (j.contains("answer")) {
      if (j["answer"].is_string()) r.answer = j["answer"].get<std::string>();
      else if (j["answer"].is_number()) r.answer = j["answer"].dump();
      else fail(name, ":", line, ": field 'answer' must be a string or a number");
    }
    r.ids = encode(r.prompt, true);
    if (r.ids.empty()) fail(name, ":", line, ": the prompt tokenises to nothing (and no BOS): nothing to generate from");
    if (context > 0 && int64_t(r.ids.size()) + max_new_tokens > context)
      fail(name, ":", line, ": the prompt is ", r.ids.size(), " tokens; with max_completion_length ", max_new_tokens,
           " it exceeds the model's context of ", context,
           " tokens: shorten the prompt, lower max_completion_length or drop the line");
    rows.push_back(std::move(r));
  }
  if (rows.empty()) fail(name, ": no prompts");
  return rows;
}

std::vector<PromptRow> load_prompt_rows(const std::string& path, const EncodeFn& encode, int64_t context,
                                        int64_t max_new_tokens) {
  return parse_prompt_rows(read_file(path), path, encode, context, max_new_tokens);
}

int64_t grpo_max_steps(const GrpoArgs& args, int64_t num_prompts) {
  if (args.max_steps > 0) return args.max_steps;
  const int64_t P = std::max<int64_t>(args.prompts_per_step, 1);
  return int64_t(std::ceil(args.num_train_epochs * double(num_prompts) / double(P)));
}

namespace {

std::vector<float> ref_token_logps(Model& policy, Model* ref, Workspace& ws, const PackedBatch& pb, float temperature) {
  if (ref) return forward_token_logps(*ref, ws, pb, nullptr, temperature);
  AdaptersOff adapters_off(policy);
  return forward_token_logps(policy, ws, pb, nullptr, temperature);
}

}  // namespace

GrpoTrainResult grpo_train(Model& policy, Model* ref, const std::vector<PromptRow>& prompts,
                           const std::vector<RewardSpec>& rewards, const GrpoArgs& args, const GrpoHooks& hooks) {
  const double t0 = now_seconds();
  const int64_t G = args.num_generations, P = args.prompts_per_step;
  if (G < 2) fail("num_generations must be >= 2 (a group of one has no relative advantage)");
  if (P < 1) fail("prompts_per_step must be >= 1");
  if (args.max_new_tokens < 1) fail("max_completion_length must be >= 1");
  if (prompts.empty()) fail("grpo: no prompts");
  if (rewards.empty()) fail("grpo: no reward given (--reward keyword:WORD | regex:RE | length:MIN:MAX | gsm8k | command:CMD | model:DIR)");
  if (!hooks.decode) fail("grpo_train: a decode hook is required");
  const int64_t max_steps = grpo_max_steps(args, int64_t(prompts.size()));
  if (max_steps < 1) fail("grpo: nothing to train (max_steps / num_train_epochs give 0 steps)");
  for (const RewardSpec& r : rewards)
    if (r.kind == RewardKind::gsm8k)
      for (const PromptRow& p : prompts)
        if (p.answer.empty())
          fail("reward 'gsm8k': prompt line ", p.line, " has no \"answer\" field: give every prompt row the "
               "expected answer");
  if (args.loss.beta != 0 && !ref && lora_modules(policy).empty())
    fail("grpo: beta ", args.loss.beta, " needs a reference model: train with LoRA (the reference is the base "
         "with the adapters off) or pass a frozen reference copy");

  policy.sync_grad_buffers();
  policy.zero_grads();
  Optimizer opt = rl_policy_optimizer(policy, args, "grpo");
  LrScheduler sched = rl_scheduler(args, max_steps);

  PromptSampler sampler(prompts.size(), args.seed);
  Rng dropout_rng(args.seed ^ 0x9e3779b97f4a7c15ULL);
  GrpoTrainResult result;

  // Checkpoints / resume (before metrics.jsonl is opened: a refused output_dir stays untouched).
  RlCheckpointParts parts =
      rl_checkpoint_parts("grpo", policy, opt, sched, hooks.save_model, hooks.load_model_weights);
  parts.rngs = {{"order", &sampler.rng}, {"dropout", &dropout_rng}};
  RlCheckpointer ck(rl_checkpoint_options(args), parts, rl_run_info(args, max_steps, P * G));
  std::optional<RlState> resumed = ck.begin();
  int64_t first_step = 1;
  if (resumed) {
    const nlohmann::json& t = resumed->trainer;
    try {
      sampler.from_json(t, "");
      result.reward_mean = t.at("reward_mean").get<std::vector<double>>();
    } catch (const nlohmann::json::exception& e) {
      fail("cannot resume grpo: the checkpoint's llmtune_state.json trainer_state is incomplete (", e.what(), ")");
    }
    sampler.check_prompt_count("grpo");
    first_step = resumed->global_step + 1;
  }

  MetricsLog metrics(args.output_dir, result.log_history, hooks.on_log);
  auto emit = [&](const json& e) { metrics.emit(e); };
  // metrics.jsonl restarts from the checkpoint's history (later lines were the failed run's).
  if (resumed) metrics.replay(resumed->log_history);
  auto state_at = [&](int64_t step) {
    RlState st;
    st.global_step = step;
    st.epoch = double(step * P) / double(prompts.size());
    st.log_history = result.log_history;
    st.trainer = {{"reward_mean", result.reward_mean}};
    sampler.to_json(st.trainer, "");
    return st;
  };

  Workspace ws, ws_ref;
  GrpoLossOptions lo = args.loss;
  lo.max_completion_length = args.max_new_tokens;
  lo.gradient_accumulation_steps = 1;

  for (int64_t step = first_step; step <= max_steps; step++) {
    const double lr = sched.current_lr();
    // Prompts of this step (reshuffled each pass over the data).
    std::vector<const PromptRow*> batch;
    while (int64_t(batch.size()) < P) batch.push_back(&prompts[sampler.next()]);
    std::vector<std::vector<int32_t>> gen_prompts;
    for (const PromptRow* p : batch)
      for (int64_t g = 0; g < G; g++) gen_prompts.push_back(p->ids);
    GenerateOptions go;
    go.max_new_tokens = args.max_new_tokens;
    go.sampling.do_sample = true;
    go.sampling.temperature = args.temperature;
    go.sampling.top_k = args.top_k;
    go.sampling.top_p = args.top_p;
    go.seed = args.seed * 1000003ULL + uint64_t(step);
    go.eos_ids = args.eos_ids;
    std::vector<std::vector<int32_t>> completions = generate(policy, gen_prompts, go);

    std::vector<RewardInput> rin;
    std::vector<ScoredSeq> seqs;
    int64_t Tc = 1, clipped = 0;
    for (size_t i = 0; i < completions.size(); i++) {
      const PromptRow* p = batch[i / size_t(G)];
      rin.push_back({p->prompt, hooks.decode(completions[i]), p->answer});
      ScoredSeq s;
      s.ids = p->ids;
      s.ids.insert(s.ids.end(), completions[i].begin(), completions[i].end());
      s.prompt_len = int64_t(p->ids.size());
      seqs.push_back(std::move(s));
      Tc = std::max<int64_t>(Tc, int64_t(completions[i].size()));
      const bool ended = !completions[i].empty() &&
                         std::find(args.eos_ids.begin(), args.eos_ids.end(), completions[i].back()) != args.eos_ids.end();
      clipped += !ended;
    }
    const std::vector<std::vector<float>> terms = compute_reward_terms(rewards, rin);
    std::vector<float> r(rin.size(), 0.f);
    for (size_t k = 0; k < rewards.size(); k++)
      for (size_t i = 0; i < r.size(); i++)
        r[i] += rewards[k].weight == 1.0 ? terms[k][i] : float(rewards[k].weight * double(terms[k][i]));
    for (size_t i = 0; i < r.size(); i++)
      if (!std::isfinite(r[i]))
        fail("grpo: the weighted total reward of completion ", i, " at step ", step, " is ", r[i],
             ": rewards must be finite");
    const GrpoAdvantages adv = grpo_advantages(r, G, args.scale_rewards);

    const PackedBatch pb = pack_sequences(seqs, policy, "GRPO batch");
    const int64_t B = pb.B;
    auto to_completion_layout = [&](const std::vector<float>& full) {
      std::vector<float> c(size_t(B * Tc), 0.f);
      for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < pb.completion_len[size_t(b)]; j++) c[size_t(b * Tc + j)] = full[size_t(pb.pos(b, j))];
      return c;
    };
    std::vector<float> ref_c;
    if (lo.beta != 0) ref_c = to_completion_layout(ref_token_logps(policy, ref, ws_ref, pb, args.temperature));
    const std::vector<float> logp = forward_token_logps(policy, ws, pb, &dropout_rng, args.temperature);
    const std::vector<float> logp_c = to_completion_layout(logp);
    std::vector<uint8_t> mask(size_t(B * Tc), 0);
    int64_t tokens = 0;
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < pb.completion_len[size_t(b)]; j++, tokens++) mask[size_t(b * Tc + j)] = 1;
    std::vector<float> d_c(size_t(B * Tc), 0.f);
    GrpoLossStats st = grpo_loss(lo, logp_c, {}, ref_c, adv.advantages, mask, B, Tc, d_c);
    if (!std::isfinite(st.loss))
      fail("grpo: the loss became ", st.loss, " at step ", step,
           ": lower learning_rate (the last checkpoint, if any, is intact)");
    std::vector<float> d_full(logp.size(), 0.f);
    for (int64_t b = 0; b < B; b++)
      for (int64_t j = 0; j < pb.completion_len[size_t(b)]; j++) d_full[size_t(pb.pos(b, j))] = d_c[size_t(b * Tc + j)];
    backward_token_weights(policy, ws, pb, d_full, &dropout_rng, args.temperature);
    const double gn = args.max_grad_norm > 0 ? clip_grad_norm(policy, args.max_grad_norm) : global_grad_norm(policy);
    opt.step(lr);
    sched.step();
    policy.zero_grads();

    double mean = 0, var = 0;
    for (float x : r) mean += x;
    mean /= double(r.size());
    for (float x : r) var += (x - mean) * (x - mean);
    var /= double(std::max<size_t>(r.size() - 1, 1));
    result.reward_mean.push_back(mean);
    int64_t zero_std_groups = 0;
    for (int64_t g = 0; g < P; g++) {
      bool same = true;
      for (int64_t i = 1; i < G; i++) same = same && r[size_t(g * G + i)] == r[size_t(g * G)];
      zero_std_groups += same;
    }
    if (hooks.on_step) hooks.on_step(step, max_steps, st.loss, mean);
    if (step % std::max<int64_t>(args.logging_steps, 1) == 0 || step == max_steps) {
      json e{{"type", "train"},
             {"step", step},
             {"epoch", double(step * P) / double(prompts.size())},
             {"loss", st.loss},
             {"learning_rate", lr},
             {"grad_norm", gn},
             {"reward", mean},
             {"reward_std", std::sqrt(var)},
             {"frac_reward_zero_std", double(zero_std_groups) / double(P)},
             {"kl", st.mean_kl},
             {"clip_ratio/region_mean", st.region_clip},
             {"clip_ratio/low_mean", st.low_clip},
             {"clip_ratio/high_mean", st.high_clip},
             {"completions/mean_length", double(tokens) / double(B)},
             {"completions/clipped_ratio", double(clipped) / double(B)},
             {"elapsed_seconds", now_seconds() - t0}};
      for (size_t k = 0; k < rewards.size(); k++) {
        double m = 0;
        for (float x : terms[k]) m += x;
        e["rewards/" + rewards[k].source + "/mean"] = m / double(terms[k].size());
      }
      emit(e);
    }
    ck.maybe_save(state_at(step));
  }
  result.steps = max_steps;
  result.runtime_s = now_seconds() - t0;
  emit(json{{"type", "summary"},
            {"step", max_steps},
            {"train_runtime", result.runtime_s},
            {"peak_rss_bytes", peak_rss_bytes()}});
  ck.write_final_state(state_at(max_steps));
  return result;
}

}  // namespace llmtune::rl
