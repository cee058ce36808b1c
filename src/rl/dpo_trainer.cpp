// DPO: preference pairs → cached reference log-probs → steps of (forward 2B rows, dpo_loss, weighted
// backward, clip, optimizer, schedule), logging TRL's rewards/* metrics to metrics.jsonl.
#include "rl/metrics_log.h"
#include "rl/dpo_trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"
#include "core/sysinfo.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "peft/lora.h"
#include "train/clip.h"
#include "train/optimizer.h"
#include "train/scheduler.h"
#include "train/trainer.h"
#include "rl/rl_checkpoint.h"
#include "rl/rl_optim.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmtune::rl {

namespace {

std::string text_field(const json& row, const char* key, std::string_view name, int64_t line, bool required) {
  auto it = row.find(key);
  if (it == row.end() || it->is_null()) {
    if (required) fail(name, ":", line, ": missing field '", key, "' (DPO rows are {\"prompt\",\"chosen\",\"rejected\"})");
    return "";
  }
  if (!it->is_string()) fail(name, ":", line, ": field '", key, "' must be a string, got ", it->type_name());
  return it->get<std::string>();
}

}  // namespace

PreferencePairs parse_preference_pairs(std::string_view content, std::string_view name, const EncodeFn& encode,
                                       const TokenIds& ids, int64_t max_length, bool add_special_tokens) {
  if (max_length < 2) fail(name, ": max_length must be at least 2, got ", max_length);
  PreferencePairs out;
  int64_t line = 0;
  size_t start = 0;
  while (start <= content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string_view::npos) end = content.size();
    std::string_view text = content.substr(start, end - start);
    start = end + 1;
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string_view::npos) {
      if (end == content.size()) break;
      continue;
    }
    json row;
    try {
      row = json::parse(text);
    } catch (const json::exception& e) {
      fail(name, ":", line, ": not valid JSON (", e.what(), ")");
    }
    if (!row.is_object()) fail(name, ":", line, ": each line must be a JSON object");
    const std::string prompt = text_field(row, "prompt", name, line, false);
    const std::string chosen = text_field(row, "chosen", name, line, true);
    const std::string rejected = text_field(row, "rejected", name, line, true);
    std::vector<int32_t> p = encode(prompt, add_special_tokens);
    if (p.empty())
      fail(name, ":", line, ": the prompt tokenises to nothing and the tokenizer adds no BOS: DPO needs at least "
           "one prompt token to predict the completion from");
    if (int64_t(p.size()) >= max_length) {  // TRL drops rows whose prompt fills max_length
      ++out.num_dropped;
      continue;
    }
    PreferencePair pair;
    pair.line = line;
    bool truncated = false;
    auto make = [&](const std::string& completion, ScoredSeq& seq) {
      std::vector<int32_t> c = encode(completion, false);
      if (ids.eos >= 0 && (c.empty() || c.back() != ids.eos)) c.push_back(ids.eos);
      if (c.empty()) fail(name, ":", line, ": a completion is empty and the tokenizer has no EOS to score");
      seq.ids = p;
      seq.ids.insert(seq.ids.end(), c.begin(), c.end());
      seq.prompt_len = int64_t(p.size());
      if (int64_t(seq.ids.size()) > max_length) {
        seq.ids.resize(static_cast<size_t>(max_length));
        truncated = true;
      }
    };
    make(chosen, pair.chosen);
    make(rejected, pair.rejected);
    out.num_truncated += truncated;
    out.pairs.push_back(std::move(pair));
    if (end == content.size()) break;
  }
  if (out.pairs.empty()) fail(name, ": no usable preference pairs (", out.num_dropped, " dropped as too long)");
  return out;
}

PreferencePairs load_preference_pairs(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                                      int64_t max_length, bool add_special_tokens) {
  return parse_preference_pairs(read_file(path), path, encode, ids, max_length, add_special_tokens);
}

namespace {

// Rows [chosen of pairs idx..., rejected of pairs idx...] (TRL's concatenated batch).
PackedBatch pack_pairs(const Model& m, const std::vector<PreferencePair>& pairs, std::span<const int64_t> idx) {
  std::vector<ScoredSeq> rows;
  rows.reserve(idx.size() * 2);
  for (int64_t i : idx) rows.push_back(pairs[size_t(i)].chosen);
  for (int64_t i : idx) rows.push_back(pairs[size_t(i)].rejected);
  return pack_sequences(rows, m, "DPO batch");
}

}  // namespace

RefLogps sequence_logps(Model& m, const std::vector<PreferencePair>& pairs, int64_t batch_pairs) {
  RefLogps out;
  Workspace ws;
  const int64_t n = int64_t(pairs.size());
  batch_pairs = std::max<int64_t>(batch_pairs, 1);
  for (int64_t b0 = 0; b0 < n; b0 += batch_pairs) {
    std::vector<int64_t> idx(size_t(std::min(batch_pairs, n - b0)));
    std::iota(idx.begin(), idx.end(), b0);
    PackedBatch pb = pack_pairs(m, pairs, idx);
    std::vector<float> lp = forward_token_logps(m, ws, pb, nullptr);
    std::vector<float> sums = completion_sums(pb, lp);
    const size_t k = idx.size();
    out.chosen.insert(out.chosen.end(), sums.begin(), sums.begin() + long(k));
    out.rejected.insert(out.rejected.end(), sums.begin() + long(k), sums.end());
  }
  return out;
}

RefLogps reference_logps(Model& policy, Model* ref, const std::vector<PreferencePair>& pairs, int64_t batch_pairs) {
  if (ref) return sequence_logps(*ref, pairs, batch_pairs);
  AdaptersOff adapters_off(policy);
  return sequence_logps(policy, pairs, batch_pairs);
}

json DpoEval::to_json(int64_t step) const {
  return json{{"type", "eval"},
              {"step", step},
              {"eval_loss", loss},
              {"eval_rewards/chosen", reward_chosen},
              {"eval_rewards/rejected", reward_rejected},
              {"eval_rewards/accuracies", accuracy},
              {"eval_rewards/margins", margin},
              {"eval_policy_accuracy", policy_accuracy}};
}

namespace {

std::vector<int64_t> lens_of(const PackedBatch& pb, size_t from, size_t count) {
  return {pb.completion_len.begin() + long(from), pb.completion_len.begin() + long(from + count)};
}

double mean_of(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
}

}  // namespace

DpoEval dpo_evaluate(Model& policy, const std::vector<PreferencePair>& pairs, const RefLogps& ref,
                     const DpoOptions& opt, int64_t batch_pairs) {
  RefLogps pol = sequence_logps(policy, pairs, batch_pairs);
  std::vector<int64_t> cl, rl;
  for (const auto& p : pairs) {
    cl.push_back(int64_t(p.chosen.ids.size()) - p.chosen.prompt_len);
    rl.push_back(int64_t(p.rejected.ids.size()) - p.rejected.prompt_len);
  }
  DpoBatch b{pol.chosen, pol.rejected, ref.chosen, ref.rejected, cl, rl};
  rl::DpoResult r = dpo_loss(opt, b);
  DpoEval e;
  e.loss = r.mean_loss;
  e.accuracy = mean_of(r.accuracies);
  e.margin = mean_of(r.margins);
  e.reward_chosen = mean_of(r.rewards_chosen);
  e.reward_rejected = mean_of(r.rewards_rejected);
  double pa = 0;
  for (size_t i = 0; i < pairs.size(); i++) pa += pol.chosen[i] > pol.rejected[i];
  e.policy_accuracy = pairs.empty() ? 0 : pa / double(pairs.size());
  return e;
}

DpoTrainResult dpo_train(Model& policy, Model* ref, const std::vector<PreferencePair>& train_pairs,
                    const std::vector<PreferencePair>& eval_pairs, const DpoArgs& args, const DpoHooks& hooks) {
  const double t0 = now_seconds();
  if (train_pairs.empty()) fail("dpo: the training set has no pairs");
  if (args.per_device_train_batch_size < 1) fail("per_device_train_batch_size must be >= 1");
  if (args.gradient_accumulation_steps < 1) fail("gradient_accumulation_steps must be >= 1");
  if (args.loss.beta <= 0) fail("beta must be > 0, got ", args.loss.beta);
  const int64_t n = int64_t(train_pairs.size());
  const int64_t bs = args.per_device_train_batch_size, ga = args.gradient_accumulation_steps;
  const int64_t micro_per_epoch = (n + bs - 1) / bs;
  const int64_t steps_per_epoch = std::max<int64_t>(micro_per_epoch / ga, 1);
  const int64_t max_steps =
      args.max_steps > 0 ? args.max_steps : int64_t(std::ceil(args.num_train_epochs * double(steps_per_epoch)));
  if (max_steps < 1) fail("dpo: nothing to train (max_steps / num_train_epochs give 0 steps)");

  policy.sync_grad_buffers();
  policy.zero_grads();
  Optimizer opt = rl_policy_optimizer(policy, args, "dpo");
  LrScheduler sched = rl_scheduler(args, max_steps);

  Rng shuffle_rng(args.seed);
  Rng dropout_rng(args.seed ^ 0x5eedd0d0ULL);
  std::vector<int64_t> order;
  int64_t cursor = micro_per_epoch;  // forces a shuffle at the start
  int64_t epoch = -1;
  Workspace ws;
  struct Acc {
    double loss = 0, rc = 0, rr = 0, acc = 0, margin = 0, lpc = 0, lpr = 0, gn = 0;
    int64_t steps = 0;
    json to_json() const {
      return {{"loss", loss}, {"rc", rc}, {"rr", rr}, {"acc", acc}, {"margin", margin},
              {"lpc", lpc}, {"lpr", lpr}, {"gn", gn}, {"steps", steps}};
    }
    static Acc from_json(const json& j) {
      Acc a;
      const std::pair<const char*, double*> fields[] = {{"loss", &a.loss}, {"rc", &a.rc},   {"rr", &a.rr},
                                                         {"acc", &a.acc},   {"margin", &a.margin}, {"lpc", &a.lpc},
                                                         {"lpr", &a.lpr},   {"gn", &a.gn}};
      for (const auto& [key, field] : fields) *field = j.at(key).get<double>();
      a.steps = j.at("steps").get<int64_t>();
      return a;
    }
  } acc;
  double total_loss = 0;
  DpoTrainResult result;

  // Checkpoints / resume (before metrics.jsonl is opened: a refused output_dir stays untouched).
  const RlCheckpointOptions co = rl_checkpoint_options(args);
  RlCheckpointParts parts = rl_checkpoint_parts("dpo", policy, opt, sched, hooks.save_model, hooks.load_model_weights);
  parts.rngs = {{"shuffle", &shuffle_rng}, {"dropout", &dropout_rng}};
  RlRunInfo info = rl_run_info(args, max_steps, bs);
  info.eval_steps = args.eval_steps;
  if (!resolve_resume_checkpoint(co).empty() && !ref && lora_modules(policy).empty())
    fail("cannot resume dpo without a reference: the policy has no LoRA adapters to switch off, so pass the "
         "frozen reference copy (full / freeze fine-tuning)");
  RlCheckpointer ck(co, parts, info);
  std::optional<RlState> resumed = ck.begin();
  int64_t first_step = 1;
  if (resumed) {
    const json& t = resumed->trainer;
    try {
      epoch = t.at("epoch_index").get<int64_t>();
      cursor = t.at("cursor").get<int64_t>();
      order = t.at("order").get<std::vector<int64_t>>();
      acc = Acc::from_json(t.at("acc"));
      total_loss = t.at("total_loss").get<double>();
    } catch (const json::exception& e) {
      fail("cannot resume dpo: the checkpoint's llmtune_state.json trainer_state is incomplete (", e.what(), ")");
    }
    if (!order.empty() && int64_t(order.size()) != n)
      fail("cannot resume dpo: the checkpoint was made with ", order.size(), " training pairs, this run has ", n,
           " (use the same --train_file and max_seq_length)");
    first_step = resumed->global_step + 1;
  }

  // Reference log-probs, once. They depend only on the reference weights (the base with the adapters
  // off, or the frozen copy), never on the policy's updates, so a resumed run gets the same values.
  const RefLogps ref_train = reference_logps(policy, ref, train_pairs, args.per_device_eval_batch_size);
  RefLogps ref_eval;
  if (!eval_pairs.empty()) ref_eval = reference_logps(policy, ref, eval_pairs, args.per_device_eval_batch_size);

  MetricsLog metrics(args.output_dir, result.log_history, hooks.on_log);
  auto emit = [&](const json& e) { metrics.emit(e); };
  // metrics.jsonl restarts from the checkpoint's history (later lines were the failed run's).
  if (resumed) metrics.replay(resumed->log_history);
  auto run_eval = [&](int64_t step) {
    if (eval_pairs.empty()) return;
    emit(dpo_evaluate(policy, eval_pairs, ref_eval, args.loss, args.per_device_eval_batch_size).to_json(step));
  };
  auto state_at = [&](int64_t step) {
    RlState st;
    st.global_step = step;
    st.epoch = double(epoch) + double(cursor) / double(micro_per_epoch);
    st.log_history = result.log_history;
    st.trainer = {{"epoch_index", epoch}, {"cursor", cursor}, {"order", order}, {"acc", acc.to_json()},
                  {"total_loss", total_loss}};
    return st;
  };

  if (!resumed) run_eval(0);

  for (int64_t step = first_step; step <= max_steps; step++) {
    const double lr = sched.current_lr();
    double step_loss = 0;
    Acc s;
    for (int64_t micro = 0; micro < ga; micro++) {
      if (cursor >= micro_per_epoch) {
        ++epoch;
        order.resize(static_cast<size_t>(n));
        std::iota(order.begin(), order.end(), 0);
        for (int64_t i = n - 1; i > 0; i--) std::swap(order[size_t(i)], order[size_t(shuffle_rng.below(uint64_t(i + 1)))]);
        cursor = 0;
      }
      const int64_t b0 = cursor * bs;
      std::span<const int64_t> idx(order.data() + b0, size_t(std::min(bs, n - b0)));
      ++cursor;
      const size_t k = idx.size();
      PackedBatch pb = pack_pairs(policy, train_pairs, idx);
      std::vector<float> lp = forward_token_logps(policy, ws, pb, &dropout_rng);
      std::vector<float> sums = completion_sums(pb, lp);
      std::vector<float> rc, rr;
      for (int64_t i : idx) {
        rc.push_back(ref_train.chosen[size_t(i)]);
        rr.push_back(ref_train.rejected[size_t(i)]);
      }
      std::vector<int64_t> cl = lens_of(pb, 0, k), rl = lens_of(pb, k, k);
      DpoBatch db{std::span<const float>(sums.data(), k), std::span<const float>(sums.data() + k, k), rc, rr, cl, rl};
      rl::DpoResult r = dpo_loss(args.loss, db);
      if (!std::isfinite(r.mean_loss))
        fail("dpo: the loss became ", r.mean_loss, " at step ", step,
             " (log-probs diverged): lower learning_rate or beta; no checkpoint was written for this step");
      // dL/dlogp of every completion token of a row = dL/d(its sum) (ipo's 1/len is inside), / GA.
      std::vector<float> dlogp(lp.size(), 0.f);
      for (size_t row = 0; row < 2 * k; row++) {
        const double d = (row < k ? r.d_policy_chosen[row] : r.d_policy_rejected[row - k]) / double(ga);
        for (int64_t j = 0; j < pb.completion_len[row]; j++) dlogp[size_t(pb.pos(int64_t(row), j))] = float(d);
      }
      backward_token_weights(policy, ws, pb, dlogp, &dropout_rng);
      step_loss += r.mean_loss / double(ga);
      s.rc += mean_of(r.rewards_chosen) / double(ga);
      s.rr += mean_of(r.rewards_rejected) / double(ga);
      s.acc += mean_of(r.accuracies) / double(ga);
      s.margin += mean_of(r.margins) / double(ga);
      s.lpc += std::accumulate(sums.begin(), sums.begin() + long(k), 0.0) / double(k) / double(ga);
      s.lpr += std::accumulate(sums.begin() + long(k), sums.end(), 0.0) / double(k) / double(ga);
    }
    const double gn = args.max_grad_norm > 0 ? clip_grad_norm(policy, args.max_grad_norm) : global_grad_norm(policy);
    opt.step(lr);
    sched.step();
    policy.zero_grads();
    total_loss += step_loss;
    acc.loss += step_loss;
    acc.rc += s.rc;
    acc.rr += s.rr;
    acc.acc += s.acc;
    acc.margin += s.margin;
    acc.lpc += s.lpc;
    acc.lpr += s.lpr;
    acc.gn += gn;
    acc.steps++;
    if (hooks.on_step) hooks.on_step(step, max_steps, step_loss);
    const bool last = step == max_steps;
    if ((args.logging_steps > 0 && step % args.logging_steps == 0) || last) {
      const double c = double(acc.steps);
      emit(json{{"type", "train"},
                {"step", step},
                {"epoch", double(epoch) + double(cursor) / double(micro_per_epoch)},
                {"loss", acc.loss / c},
                {"learning_rate", lr},
                {"grad_norm", acc.gn / c},
                {"rewards/chosen", acc.rc / c},
                {"rewards/rejected", acc.rr / c},
                {"rewards/accuracies", acc.acc / c},
                {"rewards/margins", acc.margin / c},
                {"logps/chosen", acc.lpc / c},
                {"logps/rejected", acc.lpr / c},
                {"elapsed_seconds", now_seconds() - t0}});
      acc = Acc{};
    }
    if ((args.eval_steps > 0 && step % args.eval_steps == 0) || last) run_eval(step);
    ck.maybe_save(state_at(step));
  }
  result.steps = max_steps;
  result.train_loss = total_loss / double(max_steps);
  result.runtime_s = now_seconds() - t0;
  emit(json{{"type", "summary"},
            {"step", max_steps},
            {"train_loss", result.train_loss},
            {"train_runtime", result.runtime_s},
            {"peak_rss_bytes", peak_rss_bytes()}});
  ck.write_final_state(state_at(max_steps));
  return result;
}

}  // namespace llmtune::rl
