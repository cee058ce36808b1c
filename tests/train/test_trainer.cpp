// The Trainer: gradient accumulation equivalence, bit-exact resume, checkpoint folders and rotation,
// trainer_state.json / metrics.jsonl, eval loss weighting, output_dir refusal, argument errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/collator.h"
#include "data/loader.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "train/trainer.h"
#include "train_test_util.h"

using namespace llmtune;
using namespace llmtune::testing;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int64_t kVocab = 128;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TrainerHooks hooks_for(Model& m) {
  TrainerHooks h;
  h.save_model = [&m](const std::string& dir) { llmtune::save_model(m, dir); };
  h.load_model_weights = [&m](const std::string& dir) {
    Model loaded = load_model(dir);
    copy_weights(m, loaded);
  };
  return h;
}

LoaderOptions loader_options(int64_t batch_size) {
  LoaderOptions lo;
  lo.batch_size = batch_size;
  lo.seed = 5;
  lo.shuffle = true;
  lo.pad_id = 0;
  return lo;
}

std::vector<json> read_json_lines(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(json::parse(line));  // throws if a line does not parse
  return out;
}

std::vector<json> of_type(const std::vector<json>& lines, const std::string& type) {
  std::vector<json> out;
  for (const json& j : lines)
    if (j.value("type", "") == type) out.push_back(j);
  return out;
}

// Gradient accumulation: GA micro-batches of 1 sample == one batch of GA samples (token mean over the window).
void check_accumulation(int64_t min_len, int64_t max_len) {
  const std::vector<Sample> samples = random_samples(4, min_len, max_len, kVocab, 21);
  std::vector<Batch> singles;
  for (const Sample& s : samples) singles.push_back(collate(std::span<const Sample>(&s, 1), 0));
  const Batch whole = collate(samples, 0);

  Model a = tiny_model(), b = tiny_model();
  Workspace wa, wb;
  const WindowLoss la = accumulate_window_gradients(a, wa, singles, nullptr);
  const WindowLoss lb = accumulate_window_gradients(b, wb, std::span<const Batch>(&whole, 1), nullptr);
  EXPECT_EQ(la.tokens, lb.tokens);
  EXPECT_EQ(la.tokens, whole.num_predicted_tokens);
  EXPECT_NEAR(la.loss(), lb.loss(), 1e-6 * lb.loss());
  for (const Param& p : a.params)
    EXPECT_LE(max_rel_err(p.grad.f32(), b.find(p.name)->grad.f32(), p.grad.numel()), 2e-6) << p.name;

  // Three SGD steps each: same losses, same parameters.
  a.zero_grads();
  b.zero_grads();
  OptimizerConfig oc;
  oc.kind = OptimizerKind::SGD;
  Optimizer oa = make_optimizer(a, oc), ob = make_optimizer(b, oc);
  for (int k = 0; k < 3; k++) {
    const StepResult ra = train_step_on_window(a, wa, singles, oa, 0.1, 1.0, nullptr);
    const StepResult rb = train_step_on_window(b, wb, std::span<const Batch>(&whole, 1), ob, 0.1, 1.0, nullptr);
    EXPECT_NEAR(ra.window.loss(), rb.window.loss(), 1e-6 * rb.window.loss()) << k;
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 2e-6 * rb.grad_norm) << k;
  }
  for (const Param& p : a.params)
    EXPECT_LE(max_rel_err(p.value.f32(), b.find(p.name)->value.f32(), p.value.numel()), 1e-6) << p.name;
}

}  // namespace

TEST(TrainAccumulation, EqualLengths) { check_accumulation(7, 7); }
TEST(TrainAccumulation, MixedLengths) { check_accumulation(3, 12); }

TEST(TrainAccumulation, WindowWithoutPredictedTokensGivesNoGradient) {
  Sample s;
  s.ids = {5, 6, 7};
  s.labels = {kLabelIgnore, kLabelIgnore, kLabelIgnore};
  const Batch batch = collate(std::span<const Sample>(&s, 1), 0);
  Model m = tiny_model();
  Workspace ws;
  const WindowLoss w = accumulate_window_gradients(m, ws, std::span<const Batch>(&batch, 1), nullptr);
  EXPECT_EQ(w.tokens, 0);
  EXPECT_TRUE(std::isnan(w.loss()));
  for (const Param& p : m.params)
    for (int64_t i = 0; i < p.grad.numel(); i++) ASSERT_EQ(p.grad.f32()[i], 0.f) << p.name;
}

TEST(TrainEval, SampleWeightedMeanOfBatchTokenMeans) {
  Model m = tiny_model();
  Workspace ws;
  const std::vector<Sample> samples = random_samples(5, 3, 12, kVocab, 8);
  LoaderOptions lo = loader_options(1);
  lo.shuffle = false;
  // Per-sample token means and token counts.
  std::vector<double> sums;
  std::vector<int64_t> counts;
  for (const Sample& s : samples) {
    DataLoader one(std::vector<Sample>{s}, lo);
    const EvalLoss e = evaluate_loss(m, ws, one);
    counts.push_back(int64_t(s.ids.size()) - 1);
    sums.push_back(e.loss * double(counts.back()));
  }
  lo.batch_size = 2;  // batches {0,1}, {2,3}, {4}
  DataLoader loader(samples, lo);
  const EvalLoss e = evaluate_loss(m, ws, loader);
  auto mean = [&](std::initializer_list<int> idx) {
    double s = 0;
    int64_t c = 0;
    for (int i : idx) s += sums[size_t(i)], c += counts[size_t(i)];
    return s / double(c);
  };
  const double expected = (2 * mean({0, 1}) + 2 * mean({2, 3}) + 1 * mean({4})) / 5;
  EXPECT_NEAR(e.loss, expected, 1e-6 * expected);
  EXPECT_EQ(e.batches, 3);
  EXPECT_EQ(e.samples, 5);
}

TEST(TrainerData, BatchInOrderEqualsLoaderGet) {
  const std::vector<Sample> samples = random_samples(11, 2, 9, kVocab, 17);
  for (bool packing : {false, true}) {
    LoaderOptions lo = loader_options(3);
    lo.packing = packing;
    lo.max_seq_length = 16;
    DataLoader loader(samples, lo);
    for (int64_t epoch = 0; epoch < 2; epoch++) {
      const std::vector<int64_t> order = loader.epoch_order(epoch);
      for (int64_t i = 0; i < loader.num_batches_per_epoch(); i++) {
        const Batch a = batch_in_order(loader, order, i), b = loader.get(epoch, i);
        EXPECT_EQ(a.input_ids, b.input_ids);
        EXPECT_EQ(a.labels, b.labels);
        EXPECT_EQ(a.positions, b.positions);
        EXPECT_EQ(a.segment_ids, b.segment_ids);
        EXPECT_EQ(a.num_samples, b.num_samples);
      }
    }
  }
}

TEST(TrainerEval, EvaluateBeforeAndAfterTrain) {
  const std::vector<Sample> samples = random_samples(6, 4, 8, kVocab, 3);
  const std::vector<Sample> eval(samples.begin(), samples.begin() + 3);  // seen data: its loss must drop
  DataLoader loader(samples, loader_options(2));
  TempDir out("evalbefore");
  TrainingArguments args;
  args.output_dir = out.path;
  args.max_steps = 2;
  args.per_device_train_batch_size = 2;
  args.learning_rate = 1e-2;
  args.logging_steps = 1;
  args.eval_strategy = "steps";
  args.eval_steps = 2;
  Model m = tiny_model();
  Trainer t(m, loader, &eval, args, hooks_for(m));
  ASSERT_TRUE(t.eval_enabled);
  const json before = t.evaluate();
  EXPECT_EQ(before["step"], 0);
  t.train();
  const json after = t.evaluate();
  EXPECT_LT(after["eval_loss"].get<double>(), before["eval_loss"].get<double>());
  std::vector<std::string> types;
  for (const json& j : read_json_lines(out.path + "/metrics.jsonl")) types.push_back(j["type"]);
  EXPECT_EQ(types, (std::vector<std::string>{"eval", "train", "train", "eval", "summary", "eval"}));
  const json st = read_json_file(out.path + "/checkpoint-2/trainer_state.json");
  ASSERT_EQ(st["log_history"].size(), 4u);
  EXPECT_EQ(st["log_history"][0]["step"], 0);
  EXPECT_TRUE(st["log_history"][0].contains("eval_loss"));
}

TEST(TrainerResume, TenStepsEqualFivePlusResumePlusFiveBitForBit) {
  const std::vector<Sample> samples = random_samples(22, 4, 12, kVocab, 11);
  DataLoader loader(samples, loader_options(3));  // 8 micro-batches per epoch
  TrainingArguments args;
  args.max_steps = 10;
  args.per_device_train_batch_size = 3;
  args.gradient_accumulation_steps = 2;  // 4 steps per epoch: the resume point is mid-epoch
  args.learning_rate = 1e-3;
  args.weight_decay = 0.01;
  args.warmup_steps = 2;
  args.logging_steps = 1;
  args.save_steps = 5;

  TempDir straight_dir("resume_a"), resumed_dir("resume_b");
  Model straight = tiny_model();
  args.output_dir = straight_dir.path;
  Trainer ta(straight, loader, nullptr, args, hooks_for(straight));
  ta.train();

  // Interrupted run: dies during step 6, after checkpoint-5 was written.
  struct Interrupted {};
  Model first = tiny_model();
  args.output_dir = resumed_dir.path;
  TrainerHooks h1 = hooks_for(first);
  h1.on_step = [](int64_t step, int64_t, const StepMetrics&) {
    if (step == 6) throw Interrupted{};
  };
  {
    Trainer t1(first, loader, nullptr, args, h1);
    EXPECT_THROW(t1.train(), Interrupted);
  }
  EXPECT_EQ(list_checkpoints(resumed_dir.path).size(), 1u);
  EXPECT_EQ(of_type(read_json_lines(resumed_dir.path + "/metrics.jsonl"), "train").size(), 5u);

  Model second = tiny_model(1234);  // different initial weights: everything must come from the checkpoint
  args.resume_from_checkpoint = "true";
  Trainer t2(second, loader, nullptr, args, hooks_for(second));
  t2.train();

  std::string diff;
  EXPECT_TRUE(same_weights(straight, second, &diff)) << "first differing param: " << diff;
  const auto la = of_type(read_json_lines(straight_dir.path + "/metrics.jsonl"), "train");
  const auto lb = of_type(read_json_lines(resumed_dir.path + "/metrics.jsonl"), "train");
  ASSERT_EQ(la.size(), 10u);
  ASSERT_EQ(lb.size(), 10u);
  for (size_t i = 0; i < la.size(); i++) {
    EXPECT_EQ(la[i]["step"], lb[i]["step"]);
    EXPECT_EQ(la[i]["loss"].get<double>(), lb[i]["loss"].get<double>()) << i;
    EXPECT_EQ(la[i]["learning_rate"].get<double>(), lb[i]["learning_rate"].get<double>()) << i;
    EXPECT_EQ(la[i]["grad_norm"].get<double>(), lb[i]["grad_norm"].get<double>()) << i;
    EXPECT_EQ(la[i]["epoch"].get<double>(), lb[i]["epoch"].get<double>()) << i;
  }
  // The schedule really was warmup + linear decay, and training moved the loss.
  EXPECT_DOUBLE_EQ(la[0]["learning_rate"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(la[1]["learning_rate"].get<double>(), 0.5e-3);
  EXPECT_DOUBLE_EQ(la[2]["learning_rate"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(la[9]["learning_rate"].get<double>(), 1e-3 * 1.0 / 8.0);  // λ(9) = (10 − 9)/(10 − 2)
  EXPECT_DOUBLE_EQ(la[9]["epoch"].get<double>(), 2.5);
  // Same final checkpoint state, incl. the (unused here) dropout RNG and the data position.
  const json ra = read_json_file(straight_dir.path + "/checkpoint-10/rng_state.json");
  const json rb = read_json_file(resumed_dir.path + "/checkpoint-10/rng_state.json");
  EXPECT_EQ(ra, rb);
  EXPECT_EQ(ra["data_epoch"], 2);
  EXPECT_EQ(ra["data_micro_step"], 4);
  EXPECT_EQ(ra["dropout_rng"].size(), 4u);
  EXPECT_EQ(t2.state.total_loss_sum, ta.state.total_loss_sum);
  EXPECT_EQ(read_json_file(straight_dir.path + "/trainer_state.json")["log_history"].size(),
            read_json_file(resumed_dir.path + "/trainer_state.json")["log_history"].size());
}

TEST(TrainerCheckpoints, FolderContentsRotationStateAndMetrics) {
  const std::vector<Sample> samples = random_samples(12, 4, 10, kVocab, 3);
  const std::vector<Sample> eval = random_samples(5, 4, 10, kVocab, 4);
  DataLoader loader(samples, loader_options(4));  // 3 batches per epoch
  TempDir out("ckpt");
  TrainingArguments args;
  args.output_dir = out.path;
  args.max_steps = 6;
  args.per_device_train_batch_size = 4;
  args.per_device_eval_batch_size = 2;
  args.learning_rate = 1e-2;
  args.warmup_ratio = 0.5;  // ceil(3) warmup steps
  args.logging_steps = 2;
  args.eval_steps = 3;      // set with an eval set: evaluation runs although eval_strategy is "no"
  args.save_steps = 2;
  args.save_total_limit = 2;
  Model m = tiny_model();
  TrainerHooks hooks = hooks_for(m);
  std::vector<json> logged;
  int64_t last_step = 0;
  hooks.on_log = [&](const json& e) { logged.push_back(e); };
  hooks.on_step = [&](int64_t step, int64_t max_steps, const StepMetrics& sm) {
    EXPECT_EQ(step, last_step + 1);
    EXPECT_EQ(max_steps, 6);
    EXPECT_GT(sm.loss, 0);
    last_step = step;
  };
  Trainer t(m, loader, &eval, args, hooks);
  EXPECT_TRUE(t.eval_enabled);
  EXPECT_EQ(t.scheduler.warmup_steps, 3);
  const json summary = t.train();
  EXPECT_EQ(last_step, 6);

  // Rotation keeps the newest two.
  auto cks = list_checkpoints(out.path);
  ASSERT_EQ(cks.size(), 2u);
  EXPECT_EQ(cks[0].first, 4);
  EXPECT_EQ(cks[1].first, 6);
  const std::string ck = cks[1].second;
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "scheduler.json",
                        "rng_state.json", "trainer_state.json", "llmtune_state.json"})
    EXPECT_TRUE(fs::exists(ck + "/" + f)) << f;
  for (const auto& e : fs::directory_iterator(out.path))  // no temporary folders left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();

  // trainer_state.json: HF fields, indent 2, sorted keys, trailing newline.
  const std::string text = read_file(ck + "/trainer_state.json");
  EXPECT_EQ(text.rfind("{\n  \"best_global_step\": null,\n", 0), 0u) << text.substr(0, 80);
  EXPECT_EQ(text.substr(text.size() - 2), "}\n");
  const json st = json::parse(text);
  for (const char* f : {"best_global_step", "best_metric", "best_model_checkpoint", "epoch", "eval_steps",
                        "global_step", "is_hyper_param_search", "is_local_process_zero", "is_world_process_zero",
                        "log_history", "logging_steps", "max_steps", "num_input_tokens_seen", "num_train_epochs",
                        "save_steps", "stateful_callbacks", "total_flos", "train_batch_size", "trial_name",
                        "trial_params"})
    EXPECT_TRUE(st.contains(f)) << f;
  EXPECT_EQ(st.size(), 20u);
  EXPECT_EQ(st["global_step"], 6);
  EXPECT_EQ(st["max_steps"], 6);
  EXPECT_EQ(st["logging_steps"], 2);
  EXPECT_EQ(st["eval_steps"], 3);
  EXPECT_EQ(st["save_steps"], 2);
  EXPECT_EQ(st["num_train_epochs"], 2);
  EXPECT_EQ(st["train_batch_size"], 4);
  EXPECT_DOUBLE_EQ(st["epoch"].get<double>(), 2.0);
  EXPECT_EQ(st["stateful_callbacks"]["TrainerControl"]["args"]["should_training_stop"], true);
  EXPECT_GT(st["num_input_tokens_seen"].get<int64_t>(), 0);
  EXPECT_GT(st["total_flos"].get<double>(), 0);
  // checkpoint-4's state says training was not over.
  EXPECT_EQ(read_json_file(cks[0].second + "/trainer_state.json")["stateful_callbacks"]["TrainerControl"]["args"]
                ["should_training_stop"],
            false);

  // log_history: train entries at 2, 4, 6 and eval entries at 3, 6 (log first, then eval, as HF).
  const json& hist = st["log_history"];
  ASSERT_EQ(hist.size(), 5u);
  EXPECT_EQ(hist[0]["step"], 2);
  EXPECT_EQ(hist[1]["step"], 3);
  EXPECT_TRUE(hist[1].contains("eval_loss"));
  EXPECT_EQ(hist[2]["step"], 4);
  EXPECT_EQ(hist[3]["step"], 6);
  EXPECT_TRUE(hist[3].contains("loss"));
  EXPECT_TRUE(hist[4].contains("eval_loss"));
  EXPECT_FALSE(hist[0].contains("type"));
  // learning_rate = lr of the step just taken: step k uses lr·λ(k−1), warmup 3, N 6.
  EXPECT_DOUBLE_EQ(hist[0]["learning_rate"].get<double>(), 1e-2 * (1.0 / 3.0));
  EXPECT_DOUBLE_EQ(hist[2]["learning_rate"].get<double>(), 1e-2 * 1.0);
  EXPECT_DOUBLE_EQ(hist[3]["learning_rate"].get<double>(), 1e-2 * (1.0 / 3.0));
  for (const char* f : {"loss", "grad_norm", "learning_rate", "epoch", "step", "tokens_per_second",
                        "peak_rss_bytes", "elapsed_seconds"})
    EXPECT_TRUE(hist[0].contains(f)) << f;
  const double loss = hist[0]["loss"].get<double>();
  EXPECT_DOUBLE_EQ(loss, std::nearbyint(loss * 1e4) / 1e4);  // rounded to 4 decimals
  for (const char* f : {"eval_loss", "perplexity", "eval_runtime", "eval_samples_per_second",
                        "eval_steps_per_second", "epoch", "step"})
    EXPECT_TRUE(hist[1].contains(f)) << f;
  EXPECT_NEAR(hist[1]["perplexity"].get<double>(), std::exp(hist[1]["eval_loss"].get<double>()), 1e-9);

  // metrics.jsonl: every line parses; 3 train + 2 eval + 1 summary, the same as on_log saw.
  const auto lines = read_json_lines(out.path + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(of_type(lines, "train").size(), 3u);
  EXPECT_EQ(of_type(lines, "eval").size(), 2u);
  ASSERT_EQ(of_type(lines, "summary").size(), 1u);
  EXPECT_EQ(json(lines), json(logged));
  for (const char* f : {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
                        "epoch", "total_flos"})
    EXPECT_TRUE(summary.contains(f)) << f;
  EXPECT_GT(summary["train_loss"].get<double>(), 0);
  EXPECT_EQ(read_json_file(out.path + "/trainer_state.json")["log_history"].size(), 6u);

  // Another run into the same folder is refused …
  Model m2 = tiny_model();
  TrainingArguments again = args;
  again.max_steps = 2;
  again.eval_steps.reset();
  std::string e = error_of([&] { Trainer(m2, loader, nullptr, again, hooks_for(m2)).train(); });
  EXPECT_NE(e.find("already holds another run"), std::string::npos) << e;
  EXPECT_NE(e.find("checkpoint-4"), std::string::npos) << e;
  EXPECT_EQ(list_checkpoints(out.path).size(), 2u);
  // … unless overwrite_output_dir, which clears the old run's checkpoints and metrics.
  again.overwrite_output_dir = true;
  Trainer(m2, loader, nullptr, again, hooks_for(m2)).train();
  cks = list_checkpoints(out.path);
  ASSERT_EQ(cks.size(), 1u);
  EXPECT_EQ(cks[0].first, 2);
  EXPECT_EQ(read_json_lines(out.path + "/metrics.jsonl").size(), 2u);  // the new run's step-2 log + summary
}

TEST(TrainerCheckpoints, ResumeRefusesAnotherModel) {
  const std::vector<Sample> samples = random_samples(6, 4, 8, kVocab, 3);
  DataLoader loader(samples, loader_options(2));
  TempDir out("othermodel");
  TrainingArguments args;
  args.output_dir = out.path;
  args.max_steps = 2;
  args.per_device_train_batch_size = 2;
  Model m = tiny_model();
  Trainer(m, loader, nullptr, args, hooks_for(m)).train();

  Model frozen = tiny_model();
  for (auto& p : frozen.params) p.trainable = p.name.find("layers.0.") == std::string::npos;
  frozen.sync_grad_buffers();
  args.resume_from_checkpoint = "true";
  std::string e = error_of([&] { Trainer(frozen, loader, nullptr, args, hooks_for(frozen)).train(); });
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  EXPECT_NE(e.find("gpt_neox.layers.0."), std::string::npos) << e;

  // An explicit path works the same; a folder without checkpoints is a clear error.
  args.resume_from_checkpoint = out.path + "/checkpoint-2";
  e = error_of([&] { Trainer(frozen, loader, nullptr, args, hooks_for(frozen)).train(); });
  EXPECT_NE(e.find("different model"), std::string::npos) << e;
  TempDir empty("emptyresume");
  args.output_dir = empty.path;
  args.resume_from_checkpoint = "true";
  e = error_of([&] { Trainer(m, loader, nullptr, args, hooks_for(m)).train(); });
  EXPECT_NE(e.find("has no checkpoint-N folder"), std::string::npos) << e;
}

TEST(TrainerArgs, ClearErrors) {
  const std::vector<Sample> samples = random_samples(4, 4, 8, kVocab, 3);
  DataLoader loader(samples, loader_options(2));
  Model m = tiny_model();
  TrainingArguments args;
  args.output_dir = "/tmp/llmtune_never_written";
  args.per_device_train_batch_size = 2;
  auto err = [&](TrainingArguments a) { return error_of([&] { Trainer(m, loader, nullptr, a, hooks_for(m)); }); };

  TrainingArguments a = args;
  a.optim = "adafactor";
  EXPECT_NE(err(a).find("unknown optim 'adafactor'; valid: adamw_torch"), std::string::npos);
  a = args;
  a.lr_scheduler_type = "polynomial";
  EXPECT_NE(err(a).find("unknown lr_scheduler_type 'polynomial'; valid: linear"), std::string::npos);
  a = args;
  a.eval_strategy = "steps";
  EXPECT_NE(err(a).find("no evaluation data"), std::string::npos);
  a = args;
  a.per_device_train_batch_size = 8;
  EXPECT_NE(err(a).find("per_device_train_batch_size is 8"), std::string::npos);
  a = args;
  a.logging_steps = 0;
  EXPECT_NE(err(a).find("logging_steps must be > 0"), std::string::npos);
  a = args;
  a.save_total_limit = 0;
  EXPECT_NE(err(a).find("save_total_limit"), std::string::npos);
  EXPECT_FALSE(fs::exists(args.output_dir));  // construction creates nothing

  // Step arithmetic (§4.2): 4 samples / batch 2 = 2 micro-batches, GA 3 → 1 step per epoch.
  a = args;
  a.gradient_accumulation_steps = 3;
  a.num_train_epochs = 2.5;
  a.logging_steps = 0.5;  // ratio of max_steps
  Trainer t(m, loader, nullptr, a, hooks_for(m));
  EXPECT_EQ(t.len_dl, 2);
  EXPECT_EQ(t.steps_per_epoch, 1);
  EXPECT_EQ(t.max_steps, 3);
  EXPECT_EQ(t.num_epochs, 3);
  EXPECT_EQ(t.logging_steps, 2);
  EXPECT_EQ(t.eval_steps, 2);
  EXPECT_FALSE(t.eval_enabled);
  EXPECT_EQ(resolve_interval(500, 10, "save_steps"), 500);
  EXPECT_EQ(resolve_interval(0.25, 10, "save_steps"), 3);
}
