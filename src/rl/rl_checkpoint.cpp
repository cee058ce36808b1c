// RL checkpoints: checkpoint-N folders in the Trainer's layout, written atomically and rotated, and the
// validated, all-or-nothing load of one for a bit-exact resume.
#include "rl/rl_checkpoint.h"

#include <array>
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "train/checkpoint_files.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace llmtune::rl {

namespace {

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

std::string extra_optimizer_file(const std::string& name) { return name + "_optimizer.safetensors"; }

// Leftovers of an interrupted atomic write: "checkpoint-N.tmp.<pid>" / "checkpoint-N.old.<pid>".
bool is_stale_checkpoint_dir(const std::string& name) {
  return name.rfind("checkpoint-", 0) == 0 &&
         (name.find(".tmp.") != std::string::npos || name.find(".old.") != std::string::npos);
}

}  // namespace

RlCheckpointParts rl_checkpoint_parts(std::string trainer, const Model& policy, Optimizer& optimizer,
                                      LrScheduler& scheduler, std::function<void(const std::string&)> save_model,
                                      std::function<void(const std::string&)> load_model_weights) {
  RlCheckpointParts parts;
  parts.trainer = std::move(trainer);
  parts.fingerprint = model_fingerprint(policy);
  parts.optimizer = &optimizer;
  parts.scheduler = &scheduler;
  parts.save_model = std::move(save_model);
  parts.load_model_weights = std::move(load_model_weights);
  return parts;
}

void check_rl_output_dir(const RlCheckpointOptions& opt) {
  const std::string& out = opt.output_dir;
  if (out.empty() || opt.overwrite_output_dir || !resolve_resume_checkpoint(opt).empty()) return;
  const std::string entries = previous_run_entries(out);
  if (!entries.empty()) fail_output_dir_in_use(out, entries);
}

std::string resolve_resume_checkpoint(const RlCheckpointOptions& opt) {
  const std::string& r = opt.resume_from_checkpoint;
  if (r.empty() || r == "false" || r == "False") return "";
  if (r == "true" || r == "True") {
    if (opt.output_dir.empty()) fail("resume_from_checkpoint=true needs an output_dir to look in");
    auto cks = list_checkpoints(opt.output_dir);
    if (cks.empty())
      fail("resume_from_checkpoint=true but output_dir ", opt.output_dir,
           " has no checkpoint-N folder (pass a checkpoint folder, or drop resume_from_checkpoint)");
    return cks.back().second;
  }
  return r;
}

RlCheckpointer::RlCheckpointer(RlCheckpointOptions o, RlCheckpointParts p, RlRunInfo i)
    : options(std::move(o)), parts(std::move(p)), info(i) {
  LLMTUNE_CHECK(info.max_steps >= 1, "RL checkpoints: max_steps must be >= 1");
  LLMTUNE_CHECK(options.save_steps >= 0, "save_steps must be >= 0 (0 = no checkpoints), got ", options.save_steps);
  LLMTUNE_CHECK(!options.save_total_limit || *options.save_total_limit >= 1, "save_total_limit must be >= 1 (got ",
                options.save_total_limit.value_or(0), "); leave it unset to keep every checkpoint");
  if (!options.output_dir.empty() && options.save_steps > 0 && parts.save_model)
    save_every_ = resolve_interval(options.save_steps, info.max_steps, "save_steps");
}

bool RlCheckpointer::due(int64_t step) const {
  return save_every_ > 0 && (step % save_every_ == 0 || step == info.max_steps);
}

json RlCheckpointer::trainer_state_json(const RlState& s, bool final_step) const {
  HfTrainerStateFields f;
  f.epoch = s.epoch;
  f.global_step = s.global_step;
  f.eval_steps = info.eval_steps;
  f.logging_steps = info.logging_steps;
  f.max_steps = info.max_steps;
  f.num_train_epochs = info.num_train_epochs;
  f.save_steps = save_every_;
  f.train_batch_size = info.train_batch_size;
  f.final_step = final_step;
  return hf_trainer_state_json(f, s.log_history);
}

void RlCheckpointer::save(const RlState& s) {
  if (!enabled()) return;
  const std::string dir = join_path(options.output_dir, cat("checkpoint-", s.global_step));
  fs::create_directories(options.output_dir);
  write_dir_atomic(dir, [&](const std::string& tmp) {
    parts.save_model(tmp);
    if (parts.optimizer) save_optimizer_state(*parts.optimizer, join_path(tmp, kOptimizerFile));
    for (const auto& [name, o] : parts.extra_optimizers) save_optimizer_state(*o, join_path(tmp, extra_optimizer_file(name)));
    if (parts.scheduler) write_json_file(join_path(tmp, kSchedulerFile), parts.scheduler->to_json());
    json rngs = json::object();
    for (const auto& [name, rng] : parts.rngs) rngs[name] = rng->s;
    write_json_file(join_path(tmp, kRngFile), {{"rngs", rngs}, {"global_step", s.global_step}});
    write_json_file(join_path(tmp, kTrainerStateFile), trainer_state_json(s, s.global_step >= info.max_steps));
    write_json_file(join_path(tmp, kLlmtuneStateFile),
                    {{"format_version", 1},
                     {"trainer", parts.trainer},
                     {"model_fingerprint", parts.fingerprint},
                     {"trainer_state", s.trainer}});
  });
  remove_oldest_checkpoints(options.output_dir, options.save_total_limit);
}

void RlCheckpointer::write_final_state(const RlState& s) const {
  if (options.output_dir.empty()) return;
  fs::create_directories(options.output_dir);
  write_json_file(join_path(options.output_dir, kTrainerStateFile), trainer_state_json(s, true));
}

std::optional<RlState> RlCheckpointer::begin() {
  const std::string dir = resolve_resume_checkpoint(options);
  if (dir.empty()) {
    check_rl_output_dir(options);
    const std::string& out = options.output_dir;
    std::error_code ec;
    if (out.empty() || !options.overwrite_output_dir || !fs::is_directory(out, ec)) return std::nullopt;
    for (const auto& e : fs::directory_iterator(out, ec)) {
      const std::string name = e.path().filename().string();
      const bool checkpoint = e.is_directory(ec) && (name.rfind("checkpoint-", 0) == 0);
      if (checkpoint || is_stale_checkpoint_dir(name)) {
        fs::remove_all(e.path(), ec);
        if (ec) fail("cannot remove ", e.path().string(), ": ", ec.message());
      }
    }
    for (const char* f : {kMetricsFile, kTrainerStateFile}) fs::remove(join_path(out, f), ec);
    return std::nullopt;
  }

  // Resume: read and check everything before changing anything.
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("resume_from_checkpoint: ", dir, " is not a folder");
  const json ls = read_checkpoint_json(dir, kLlmtuneStateFile);
  const std::string ls_name = join_path(dir, kLlmtuneStateFile);
  if (!ls.contains("trainer") || !ls["trainer"].is_string())
    fail("cannot resume ", parts.trainer, " from ", dir, ": it is not an RL checkpoint (",
         ls_name, " names no trainer; `llmtune train` checkpoints resume with `llmtune train`)");
  if (ls["trainer"].get<std::string>() != parts.trainer)
    fail("cannot resume ", parts.trainer, " from ", dir, ": it is a ", ls["trainer"].get<std::string>(),
         " checkpoint");
  check_checkpoint_fingerprint(dir, ls, parts.fingerprint);
  if (!parts.load_model_weights) fail("resuming ", parts.trainer, " needs the load_model_weights hook");

  const json ts = read_checkpoint_trainer_state(dir);
  RlState s;
  s.global_step = ts["global_step"].get<int64_t>();
  if (s.global_step > info.max_steps)
    fail("cannot resume from ", dir, ": it is at step ", s.global_step, ", beyond max_steps ", info.max_steps,
         " (raise max_steps)");
  s.epoch = ts.value("epoch", 0.0);
  s.log_history.assign(ts["log_history"].begin(), ts["log_history"].end());
  s.trainer = ls.value("trainer_state", json::object());

  const json rng = read_checkpoint_json(dir, kRngFile);
  const std::string rng_name = join_path(dir, kRngFile);
  std::vector<std::array<uint64_t, 4>> rng_states;
  for (const auto& [name, r] : parts.rngs) {
    const json* v = rng.contains("rngs") && rng["rngs"].contains(name) ? &rng["rngs"][name] : nullptr;
    if (!v || !v->is_array() || v->size() != 4)
      fail(rng_name, ": field 'rngs.", name, "' must be a list of 4 unsigned integers");
    std::array<uint64_t, 4> st{};
    for (size_t i = 0; i < 4; i++) {
      if (!(*v)[i].is_number_unsigned() && !((*v)[i].is_number_integer() && (*v)[i].get<int64_t>() >= 0))
        fail(rng_name, ": field 'rngs.", name, "' must be a list of 4 unsigned integers");
      st[i] = (*v)[i].get<uint64_t>();
    }
    rng_states.push_back(st);
  }
  json sched;
  if (parts.scheduler) sched = read_checkpoint_json(dir, kSchedulerFile);
  std::vector<std::pair<Optimizer*, std::string>> optimizer_files;
  if (parts.optimizer) optimizer_files.emplace_back(parts.optimizer, kOptimizerFile);
  for (const auto& [name, o] : parts.extra_optimizers) optimizer_files.emplace_back(o, extra_optimizer_file(name));
  for (const auto& [o, file] : optimizer_files)
    if (!fs::exists(join_path(dir, file)))
      fail("checkpoint ", dir, " has no ", file, " (not a complete llmtune checkpoint)");

  parts.load_model_weights(dir);
  for (const auto& [o, file] : optimizer_files) load_optimizer_state(*o, join_path(dir, file));
  if (parts.scheduler) load_scheduler_state(*parts.scheduler, sched, join_path(dir, kSchedulerFile));
  for (size_t i = 0; i < parts.rngs.size(); i++) parts.rngs[i].second->s = rng_states[i];
  return s;
}

}  // namespace llmtune::rl
