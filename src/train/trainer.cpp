// The Trainer loop: windows of micro-batches → gradients → clip → optimizer/scheduler step, then
// logging, evaluation, checkpointing and resume.
#include "train/trainer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/sysinfo.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "train/clip.h"

namespace llmtune {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Python's round(x, digits) for the magnitudes logged here.
double round_to(double x, int digits) {
  if (!std::isfinite(x)) return x;
  const double scale = std::pow(10.0, digits);
  return std::nearbyint(x * scale) / scale;
}

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

int64_t count_non_padding(const Batch& b) {
  int64_t n = 0;
  for (int32_t a : b.attention_mask) n += a != 0;
  return n;
}

int64_t non_embedding_params(const Model& m) {
  int64_t n = m.num_params();
  if (m.embed) n -= m.embed->value.numel();
  if (m.pos_embed) n -= m.pos_embed->value.numel();
  return n;
}

}  // namespace

int64_t resolve_interval(double value, int64_t max_steps, const char* what) {
  LLMTUNE_CHECK(std::isfinite(value) && value > 0, what, " must be > 0 (got ", value, ")");
  if (value < 1) return std::max<int64_t>(1, int64_t(std::ceil(double(max_steps) * value)));
  return int64_t(value);
}

Batch batch_in_order(const DataLoader& loader, const std::vector<int64_t>& order, int64_t index) {
  const int64_t begin = index * loader.options.batch_size;
  LLMTUNE_CHECK(index >= 0 && begin < loader.num_rows() && int64_t(order.size()) == loader.num_rows(),
                "data loader: batch ", index, " does not exist");
  const int64_t end = std::min(begin + loader.options.batch_size, loader.num_rows());
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(size_t(end - begin));
  for (int64_t k = begin; k < end; ++k) rows.push_back(loader.rows[size_t(order[size_t(k)])]);
  return collate_rows(loader.samples, rows, loader.options.pad_id, loader.options.pad_to_multiple_of);
}

// ---- one window ----

double WindowLoss::loss() const {
  return tokens > 0 ? loss_sum / double(tokens) : std::numeric_limits<double>::quiet_NaN();
}

WindowLoss accumulate_window_gradients(Model& m, Workspace& ws, std::span<const Batch> window, Rng* dropout_rng) {
  WindowLoss w;
  const double non_embed = double(non_embedding_params(m));
  for (const Batch& b : window) {
    w.tokens += b.num_predicted_tokens;
    w.input_tokens += count_non_padding(b);
    w.samples += b.num_samples;
    w.flos += 6.0 * non_embed * double(b.B * b.T);
  }
  if (w.tokens == 0) return w;
  const float grad_scale = float(1.0 / double(w.tokens));
  for (const Batch& b : window) {
    if (b.num_predicted_tokens == 0) continue;  // contributes neither loss nor gradient
    const std::vector<int32_t> targets = shift_labels(b);
    DecoderInput in;
    in.B = b.B;
    in.T = b.T;
    in.ids = b.input_ids.data();
    in.positions = b.positions.data();
    in.segments = b.segment_ids.data();
    in.dropout_rng = dropout_rng;
    decoder_forward(m, ws, in);
    const LossSum ls = decoder_lm_loss(m, ws, targets.data(), grad_scale, true);
    w.loss_sum += ls.sum;
    decoder_backward(m, ws, in);
  }
  return w;
}

StepResult train_step_on_window(Model& m, Workspace& ws, std::span<const Batch> window, Optimizer& opt, double lr,
                                double max_grad_norm, Rng* dropout_rng, const WindowLossFn& window_loss) {
  StepResult r;
  m.zero_grads();
  r.window = window_loss ? window_loss(m, ws, window, dropout_rng)
                         : accumulate_window_gradients(m, ws, window, dropout_rng);
  r.grad_norm = clip_grad_norm(m, max_grad_norm);
  r.learning_rate = lr;
  opt.step(lr);
  m.zero_grads();
  return r;
}

EvalLoss evaluate_loss(Model& m, Workspace& ws, const DataLoader& loader) {
  EvalLoss e;
  double weighted = 0.0;
  int64_t weight = 0;
  const int64_t n = loader.num_batches_per_epoch();
  for (int64_t i = 0; i < n; i++) {
    const Batch b = loader.get(0, i);
    e.batches++;
    e.samples += b.num_samples;
    if (b.num_predicted_tokens == 0) continue;
    const std::vector<int32_t> targets = shift_labels(b);
    DecoderInput in;
    in.B = b.B;
    in.T = b.T;
    in.ids = b.input_ids.data();
    in.positions = b.positions.data();
    in.segments = b.segment_ids.data();
    decoder_forward(m, ws, in);
    const LossSum ls = decoder_lm_loss(m, ws, targets.data(), 0.f, false);
    weighted += ls.sum / double(ls.count) * double(b.num_samples);
    weight += b.num_samples;
  }
  e.loss = weight > 0 ? weighted / double(weight) : std::numeric_limits<double>::quiet_NaN();
  return e;
}

// ---- helpers ----

std::string model_fingerprint(const Model& m) {
  const ModelConfig& c = m.cfg;
  std::string s = cat("model_type=", c.model_type, " vocab_size=", c.vocab_size, " hidden_size=", c.hidden_size,
                      " num_layers=", c.num_layers, " num_heads=", c.num_heads, " num_kv_heads=", c.num_kv_heads,
                      " head_dim=", c.head_dim, " intermediate_size=", c.intermediate_size,
                      " tie_word_embeddings=", c.tie_word_embeddings, "\n");
  for (const Param& p : m.params)
    if (p.trainable) s += cat("trainable ", p.name, " ", shape_str(p.value.shape), "\n");
  return s;
}

void Trainer::FileCloser::operator()(std::FILE* f) const {
  if (f) std::fclose(f);
}

// ---- Trainer ----

Trainer::Trainer(Model& model_in, const DataLoader& loader, const std::vector<Sample>* eval_samples,
                 TrainingArguments args_in, TrainerHooks hooks_in)
    : model(model_in), train_loader(loader), args(std::move(args_in)), hooks(std::move(hooks_in)) {
  const TrainingArguments& a = args;
  LLMTUNE_CHECK(!a.output_dir.empty(), "output_dir must be set");
  LLMTUNE_CHECK(a.per_device_train_batch_size >= 1, "per_device_train_batch_size must be >= 1 (got ",
                a.per_device_train_batch_size, ")");
  LLMTUNE_CHECK(a.per_device_eval_batch_size >= 1, "per_device_eval_batch_size must be >= 1 (got ",
                a.per_device_eval_batch_size, ")");
  LLMTUNE_CHECK(loader.options.batch_size == a.per_device_train_batch_size,
                "the train data loader batches ", loader.options.batch_size,
                " rows but per_device_train_batch_size is ", a.per_device_train_batch_size,
                " (build the loader with the same batch size)");
  LLMTUNE_CHECK(a.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1 (got ",
                a.gradient_accumulation_steps, ")");
  LLMTUNE_CHECK(std::isfinite(a.learning_rate) && a.learning_rate >= 0, "learning_rate must be >= 0 (got ",
                a.learning_rate, ")");
  LLMTUNE_CHECK(!a.save_total_limit || *a.save_total_limit >= 1, "save_total_limit must be >= 1 (got ",
                a.save_total_limit.value_or(0), "); leave it unset to keep every checkpoint");
  LLMTUNE_CHECK(a.max_steps > 0 || a.max_steps == -1 || a.max_steps == 0,
                "max_steps must be a positive number of steps or -1 (got ", a.max_steps, ")");
  LLMTUNE_CHECK(bool(hooks.save_model), "Trainer: the save_model callback is required");

  // Step arithmetic (§4.2).
  len_dl = loader.num_batches_per_epoch();
  steps_per_epoch = num_update_steps_per_epoch(len_dl, a.gradient_accumulation_steps);
  max_steps = total_max_steps(a.num_train_epochs, a.max_steps, steps_per_epoch);
  LLMTUNE_CHECK(max_steps >= 1, "training would take 0 steps (num_train_epochs ", a.num_train_epochs,
                ", max_steps ", a.max_steps, ")");
  num_epochs = num_epochs_to_run(a.num_train_epochs, a.max_steps, steps_per_epoch);
  logging_steps = resolve_interval(a.logging_steps, max_steps, "logging_steps");
  save_steps = resolve_interval(a.save_steps, max_steps, "save_steps");
  eval_steps = a.eval_steps ? resolve_interval(*a.eval_steps, max_steps, "eval_steps") : logging_steps;

  // Evaluation (see the top of trainer.h).
  if (a.eval_strategy == "epoch") fail("eval_strategy 'epoch' is not supported yet; use 'steps' or 'no'");
  LLMTUNE_CHECK(a.eval_strategy == "no" || a.eval_strategy == "steps", "unknown eval_strategy '",
                a.eval_strategy, "'; valid: no, steps");
  const bool have_eval = eval_samples != nullptr && !eval_samples->empty();
  if (a.eval_strategy == "steps" && !have_eval)
    fail("eval_strategy is 'steps' but no evaluation data was given");
  eval_enabled = have_eval && (a.eval_strategy == "steps" || a.eval_steps.has_value());
  if (have_eval) {
    LoaderOptions eo;
    eo.batch_size = a.per_device_eval_batch_size;
    eo.shuffle = false;
    eo.packing = false;
    eo.pad_id = loader.options.pad_id;
    eo.pad_to_multiple_of = loader.options.pad_to_multiple_of;
    eval_loader.emplace(*eval_samples, eo);
  }

  // Optimizer and schedule (§4.3–4.5).
  OptimizerConfig oc;
  oc.kind = parse_optimizer_name(a.optim);
  oc.weight_decay = a.weight_decay;
  oc.beta1 = a.adam_beta1;
  oc.beta2 = a.adam_beta2;
  oc.eps = a.adam_epsilon;
  oc.momentum = a.sgd_momentum;
  optimizer = make_optimizer(model, oc);
  ws.gradient_checkpointing = a.gradient_checkpointing;
  scheduler.kind = parse_scheduler_name(a.lr_scheduler_type);
  scheduler.base_lr = a.learning_rate;
  scheduler.num_training_steps = max_steps;
  scheduler.warmup_steps = resolve_warmup_steps(a.warmup_steps, a.warmup_ratio, max_steps);

  // Its own stream: seeding with `seed` itself would repeat the stream callers use for LoRA init.
  dropout_rng = Rng(a.seed ^ 0x64726f706f7574ull);
  fingerprint_ = hooks.model_fingerprint.empty() ? model_fingerprint(model) : hooks.model_fingerprint;
  non_embedding_params_ = non_embedding_params(model);
  begin_run();
}

Trainer::~Trainer() = default;

std::FILE* Trainer::metrics_file() {
  if (!metrics_file_) {
    std::error_code ec;
    fs::create_directories(args.output_dir, ec);
    if (ec) fail("cannot create output_dir ", args.output_dir, ": ", ec.message());
    const std::string path = join_path(args.output_dir, kMetricsFile);
    std::FILE* f = std::fopen(path.c_str(), "a");
    if (!f) fail("cannot open ", path, " for appending: ", std::strerror(errno));
    metrics_file_.reset(f);
  }
  return metrics_file_.get();
}

void Trainer::emit(const std::string& type, json entry) {
  state.log_history.push_back(entry);
  entry["type"] = type;
  const std::string line = entry.dump() + "\n";
  std::FILE* f = metrics_file();
  if (std::fwrite(line.data(), 1, line.size(), f) != line.size() || std::fflush(f) != 0)
    fail("cannot write ", join_path(args.output_dir, kMetricsFile), ": ", std::strerror(errno));
  if (hooks.on_log) hooks.on_log(entry);
}

void Trainer::prepare_output_dir() {
  const std::string& out = args.output_dir;
  const std::string entries = previous_run_entries(out);
  if (entries.empty()) return;
  if (!args.overwrite_output_dir) fail_output_dir_in_use(out, entries);
  std::error_code ec;
  for (auto& [n, path] : list_checkpoints(out)) {
    fs::remove_all(path, ec);
    if (ec) fail("cannot remove ", path, ": ", ec.message());
  }
  for (const char* f : {kMetricsFile, kTrainerStateFile}) fs::remove(join_path(out, f), ec);
}

json hf_trainer_state_json(const HfTrainerStateFields& f, const std::vector<json>& log_history) {
  json control = {{"args",
                   {{"should_epoch_stop", false},
                    {"should_evaluate", false},
                    {"should_log", false},
                    {"should_save", true},
                    {"should_training_stop", f.final_step}}},
                  {"attributes", json::object()}};
  return {{"best_global_step", nullptr},
          {"best_metric", nullptr},
          {"best_model_checkpoint", nullptr},
          {"epoch", f.epoch},
          {"eval_steps", f.eval_steps},
          {"global_step", f.global_step},
          {"is_hyper_param_search", false},
          {"is_local_process_zero", true},
          {"is_world_process_zero", true},
          {"log_history", log_history},
          {"logging_steps", f.logging_steps},
          {"max_steps", f.max_steps},
          {"num_input_tokens_seen", f.num_input_tokens_seen},
          {"num_train_epochs", f.num_train_epochs},
          {"save_steps", f.save_steps},
          {"stateful_callbacks", {{"TrainerControl", control}}},
          {"total_flos", f.total_flos},
          {"train_batch_size", f.train_batch_size},
          {"trial_name", nullptr},
          {"trial_params", nullptr}};
}

json Trainer::trainer_state_json(bool final_step) const {
  HfTrainerStateFields f;
  f.epoch = state.epoch;
  f.global_step = state.global_step;
  f.eval_steps = eval_steps;
  f.logging_steps = logging_steps;
  f.max_steps = max_steps;
  f.num_input_tokens_seen = state.num_input_tokens_seen;
  f.num_train_epochs = num_epochs;
  f.save_steps = save_steps;
  f.total_flos = state.total_flos;
  f.train_batch_size = train_loader.options.batch_size;
  f.final_step = final_step;
  return hf_trainer_state_json(f, state.log_history);
}

void Trainer::save_checkpoint(bool final_step) {
  const std::string dir = join_path(args.output_dir, cat("checkpoint-", state.global_step));
  const ResumePoint next = resume_point(state.global_step, steps_per_epoch, args.gradient_accumulation_steps);
  write_dir_atomic(dir, [&](const std::string& tmp) {
    hooks.save_model(tmp);
    save_optimizer_state(optimizer, join_path(tmp, kOptimizerFile));
    write_json_file(join_path(tmp, kSchedulerFile), scheduler.to_json());
    write_json_file(join_path(tmp, kRngFile),
                    {{"dropout_rng", dropout_rng.s},
                     {"seed", args.seed},
                     {"global_step", state.global_step},
                     {"data_epoch", next.epoch},
                     {"data_micro_step", next.micro_step}});
    write_json_file(join_path(tmp, kTrainerStateFile), trainer_state_json(final_step));
    write_json_file(join_path(tmp, kLlmtuneStateFile),
                    {{"format_version", 1},
                     {"model_fingerprint", fingerprint_},
                     {"optim", args.optim},
                     {"total_loss_sum", state.total_loss_sum},
                     {"loss_since_last_log", state.loss_since_last_log},
                     {"last_logged_step", state.last_logged_step}});
  });
  remove_oldest_checkpoints(args.output_dir, args.save_total_limit);
}

void Trainer::resume_from(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail("resume_from_checkpoint: ", dir, " is not a folder");
  const json ls = read_checkpoint_json(dir, kLlmtuneStateFile);
  check_checkpoint_fingerprint(dir, ls, fingerprint_);
  if (!hooks.load_model_weights) fail("Trainer: resuming needs the load_model_weights callback");

  const json ts = read_checkpoint_trainer_state(dir);
  const json rng = read_checkpoint_json(dir, kRngFile);
  if (!rng.contains("dropout_rng") || !rng["dropout_rng"].is_array() || rng["dropout_rng"].size() != 4)
    fail(join_path(dir, kRngFile), ": field 'dropout_rng' must be a list of 4 unsigned integers");
  const json sched = read_checkpoint_json(dir, kSchedulerFile);

  hooks.load_model_weights(dir);
  load_optimizer_state(optimizer, join_path(dir, kOptimizerFile));
  load_scheduler_state(scheduler, sched, join_path(dir, kSchedulerFile));
  for (size_t i = 0; i < 4; i++) {
    if (!rng["dropout_rng"][i].is_number_unsigned())
      fail(join_path(dir, kRngFile), ": field 'dropout_rng' must be a list of 4 unsigned integers");
    dropout_rng.s[i] = rng["dropout_rng"][i].get<uint64_t>();
  }

  state.global_step = ts["global_step"].get<int64_t>();
  state.epoch = ts.value("epoch", 0.0);
  state.num_input_tokens_seen = ts.value("num_input_tokens_seen", int64_t(0));
  state.total_flos = ts.value("total_flos", 0.0);
  state.log_history.assign(ts["log_history"].begin(), ts["log_history"].end());
  state.total_loss_sum = ls.value("total_loss_sum", 0.0);
  state.loss_since_last_log = ls.value("loss_since_last_log", 0.0);
  state.last_logged_step = ls.value("last_logged_step", state.global_step);

  // metrics.jsonl restarts from the checkpoint's history (lines after it belong to the interrupted run).
  std::string lines;
  for (const json& e : state.log_history) {
    json line = e;
    line["type"] = e.contains("eval_loss") ? "eval" : e.contains("train_runtime") ? "summary" : "train";
    lines += line.dump() + "\n";
  }
  metrics_file_.reset();
  fs::create_directories(args.output_dir, ec);
  write_file_atomic(join_path(args.output_dir, kMetricsFile), lines);
}

json Trainer::evaluate() {
  LLMTUNE_CHECK(eval_loader.has_value(), "evaluate(): no evaluation data was given");
  const double t0 = now_seconds();
  json entry;
  int64_t samples = 0, batches = eval_loader->num_batches_per_epoch();
  if (hooks.eval_metrics) {
    entry = hooks.eval_metrics(model, ws, *eval_loader);
    LLMTUNE_CHECK(entry.is_object() && entry.contains("eval_loss"), "Trainer: eval_metrics must return eval_loss");
    for (const Sample& s : eval_loader->samples) samples += s.ids.empty() ? 0 : 1;
  } else {
    const EvalLoss e = evaluate_loss(model, ws, *eval_loader);
    entry = {{"eval_loss", e.loss}, {"perplexity", std::exp(e.loss)}};
    samples = e.samples;
    batches = e.batches;
  }
  const double runtime = std::max(now_seconds() - t0, 1e-9);
  entry["eval_runtime"] = round_to(runtime, 4);
  entry["eval_samples_per_second"] = round_to(double(samples) / runtime, 3);
  entry["eval_steps_per_second"] = round_to(double(batches) / runtime, 3);
  entry["epoch"] = state.epoch;
  entry["step"] = state.global_step;
  emit("eval", entry);
  return entry;
}

void Trainer::begin_run() {
  std::string resume = args.resume_from_checkpoint;
  if (resume == "false") resume.clear();
  if (resume == "true") {
    auto cks = list_checkpoints(args.output_dir);
    if (cks.empty())
      fail("resume_from_checkpoint=true but output_dir ", args.output_dir, " has no checkpoint-N folder");
    resume = cks.back().second;
  }
  if (resume.empty())
    prepare_output_dir();
  else
    resume_from(resume);
}

json Trainer::train() {
  const double t_start = now_seconds();

  const int64_t GA = args.gradient_accumulation_steps;
  const ResumePoint start = resume_point(state.global_step, steps_per_epoch, GA);
  int64_t last_saved_step = state.global_step;  // a resumed checkpoint already exists
  int64_t steps_this_run = 0, samples_this_run = 0;
  int64_t tokens_since_log = 0;
  double t_last_log = now_seconds();
  std::vector<Batch> window;

  for (int64_t epoch = start.epoch; epoch < num_epochs && state.global_step < max_steps; epoch++) {
    const std::vector<int64_t> order = train_loader.epoch_order(epoch);
    const int64_t first_step = epoch == start.epoch ? start.micro_step / GA : 0;
    for (int64_t s = first_step; s < steps_per_epoch && state.global_step < max_steps; s++) {
      const double t_step = now_seconds();
      const MicroBatchWindow mw = accumulation_window(s, len_dl, GA);
      window.clear();
      for (int64_t i = mw.begin; i < mw.end; i++) window.push_back(batch_in_order(train_loader, order, i));

      const StepResult r = train_step_on_window(model, ws, window, optimizer, scheduler.current_lr(),
                                                args.max_grad_norm, &dropout_rng, hooks.window_loss);
      scheduler.step();
      state.global_step++;
      state.epoch = epoch_after_micro_step(epoch, mw.end - 1, len_dl);
      state.num_input_tokens_seen += r.window.input_tokens;
      state.total_flos += r.window.flos;
      steps_this_run++;
      samples_this_run += r.window.samples;
      tokens_since_log += r.window.input_tokens;

      // HF's logging_nan_inf_filter: a non-finite (or token-less) loss counts as the recent mean.
      double loss = r.window.loss();
      if (!std::isfinite(loss)) {
        const int64_t since = state.global_step - 1 - state.last_logged_step;
        loss = since > 0 ? state.loss_since_last_log / double(since) : 0.0;
      }
      state.loss_since_last_log += loss;
      state.total_loss_sum += loss;

      const double now = now_seconds();
      if (hooks.on_step) {
        StepMetrics sm;
        sm.loss = loss;
        sm.grad_norm = r.grad_norm;
        sm.learning_rate = r.learning_rate;
        sm.epoch = state.epoch;
        sm.tokens_per_second = double(r.window.input_tokens) / std::max(now - t_step, 1e-9);
        sm.elapsed_seconds = now - t_start;
        hooks.on_step(state.global_step, max_steps, sm);
      }

      const int64_t S = state.global_step;
      if ((S == 1 && args.logging_first_step) || S % logging_steps == 0) {
        json entry = {{"loss", round_to(state.loss_since_last_log / double(S - state.last_logged_step), 4)},
                      {"grad_norm", r.grad_norm},
                      {"learning_rate", r.learning_rate},
                      {"epoch", state.epoch},
                      {"step", S},
                      {"tokens_per_second", double(tokens_since_log) / std::max(now - t_last_log, 1e-9)},
                      {"peak_rss_bytes", peak_rss_bytes()},
                      {"elapsed_seconds", now - t_start}};
        state.loss_since_last_log = 0.0;
        state.last_logged_step = S;
        tokens_since_log = 0;
        t_last_log = now;
        emit("train", entry);
      }
      if (eval_enabled && S % eval_steps == 0) evaluate();
      const bool final_step = S >= max_steps;
      if (S % save_steps == 0 || final_step) {
        save_checkpoint(final_step);
        last_saved_step = S;
      }
    }
  }
  if (last_saved_step != state.global_step) save_checkpoint(true);  // ran out of data before max_steps

  const double runtime = std::max(now_seconds() - t_start, 1e-9);
  json summary = {{"train_runtime", round_to(runtime, 4)},
                  {"train_samples_per_second", round_to(double(samples_this_run) / runtime, 3)},
                  {"train_steps_per_second", round_to(double(steps_this_run) / runtime, 3)},
                  {"total_flos", state.total_flos},
                  {"train_loss", state.global_step > 0 ? state.total_loss_sum / double(state.global_step) : 0.0},
                  {"epoch", state.epoch},
                  {"step", state.global_step}};
  emit("summary", summary);
  write_json_file(join_path(args.output_dir, kTrainerStateFile), trainer_state_json(true));
  metrics_file_.reset();
  return summary;
}

}  // namespace llmtune
