// Sequence-classification and reward-model training (`llmtune train --task_type SEQ_CLS` / `--task reward`)
// with the Trainer, plus loading such models back for `eval` and `classify`.
//
// The head is created before LoRA is attached (add_classification_head), so with LoRA it is a
// modules_to_save module: trained in full and saved in the adapter as base_model.model.score.weight.
// method freeze trains the last trainable_layers blocks, the final norm and the head; full trains all.
#include "cli/cmd_train_seqcls.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

#include "cli/model_loading.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/sysinfo.h"
#include "core/threads.h"
#include "data/classification.h"
#include "data/collator.h"
#include "data/loader.h"
#include "io/json_file.h"
#include "model/heads.h"
#include "peft/adapter_io.h"
#include "peft/freeze.h"
#include "peft/lora.h"
#include "report/report.h"
#include "rl/reward_model.h"
#include "train/seqcls.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

namespace {

nlohmann::json seq_cls_info(const ModelConfig& c, const std::string& task) {
  nlohmann::json id2label = nlohmann::json::object(), label2id = nlohmann::json::object();
  for (size_t i = 0; i < c.id2label.size(); i++) {
    id2label[std::to_string(i)] = c.id2label[i];
    label2id[c.id2label[i]] = int64_t(i);
  }
  return {{"task", task},
          {"num_labels", c.num_labels},
          {"id2label", id2label},
          {"label2id", label2id},
          {"problem_type", resolve_problem_type(c)}};
}

double number_or_nan(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : NAN;
}

// One eval log line's metrics, by task.
std::string eval_summary(const nlohmann::json& e, const std::string& task) {
  auto num = [&](const char* k) {
    const double v = number_or_nan(e, k);
    return std::isnan(v) ? std::string("n/a") : cat(v);
  };
  std::string s = cat("eval_loss ", num("eval_loss"));
  if (task == "reward") return s + cat(" | eval_accuracy (pairwise) ", num("eval_accuracy"), " | eval_mean_margin ",
                                       num("eval_mean_margin"));
  if (task == "regression")
    return s + cat(" | eval_rmse ", num("eval_rmse"), " | eval_mae ", num("eval_mae"), " | eval_pearson_r ",
                   num("eval_pearson_r"));
  return s + cat(" | eval_accuracy ", num("eval_accuracy"), " | eval_macro_f1 ", num("eval_macro_f1"));
}

std::string read_task(const std::string& dir) {
  const std::string path = (fs::path(dir) / kSeqClsInfoFile).string();
  if (!fs::exists(path)) return "";
  const nlohmann::json j = read_json_file(path);
  if (!j.contains("task") || !j["task"].is_string()) fail(path, ": field 'task' is missing or not a string");
  return j["task"].get<std::string>();
}

}  // namespace

bool is_classifier(const std::string& model_dir, const std::string& adapter_dir) {
  if (load_model_config(model_dir).is_seq_cls) return true;
  if (adapter_dir.empty()) return false;
  const std::string cfg = (fs::path(adapter_dir) / "adapter_config.json").string();
  if (!fs::exists(cfg)) return false;
  const nlohmann::json j = read_json_file(cfg);
  return j.value("task_type", std::string()) == "SEQ_CLS";
}

LoadedClassifier load_classifier(const std::string& model_dir, const std::string& adapter_dir) {
  // The model (+ SEQ_CLS adapter and its head) is loaded by the library, as for an RL reward model.
  std::vector<std::string> warnings;
  LoadedClassifier out{
      {rl::load_model_with_seq_cls_adapter(model_dir, adapter_dir, &warnings), Tokenizer::load(model_dir)}, "", false};
  for (auto& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  Model& m = out.lm.model;
  out.task = read_task(adapter_dir.empty() ? model_dir : adapter_dir);
  if (!m.cfg.is_seq_cls) fail(model_dir, " is not a sequence-classification model (and no SEQ_CLS adapter was given)");
  out.task_recorded = !out.task.empty();
  // No seq_cls_config.json (a folder written by HF): what its config implies — one output is regression.
  if (out.task.empty()) out.task = resolve_problem_type(m.cfg) == "regression" ? "regression" : "classification";
  if (out.task != "classification" && out.task != "regression" && out.task != "reward")
    fail(adapter_dir.empty() ? model_dir : adapter_dir, "/", kSeqClsInfoFile, ": field 'task' is '", out.task,
         "' (expected classification, regression or reward)");
  if ((out.task == "regression" || out.task == "reward") && m.cfg.num_labels != 1)
    fail(adapter_dir.empty() ? model_dir : adapter_dir, ": a ", out.task, " model has one output but this one has ",
         m.cfg.num_labels);
  return out;
}

int run_seqcls_train(const ResolvedOptions& o, const TrainPlan& plan) {
  set_num_threads(int(o.get_int("num_threads")));
  const std::string out_dir = plan.args.output_dir;
  const bool reward = plan.task == "reward";
  if (plan.packing) fail("--packing is not supported with task_type SEQ_CLS / task reward (one sample per row)");
  std::printf("llmtune train (%s) — resolved configuration:\n%s\n", reward ? "reward model" : "sequence classification",
              o.to_json().dump(2).c_str());

  Tokenizer tok = Tokenizer::load(plan.model_dir);
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  const int32_t pad_id = resolve_pad_id(tids);
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };

  // Data → Samples that carry their labels (train/seqcls.h).
  std::vector<Sample> train_samples, eval_samples;
  SeqClsOptions so;
  so.seed = plan.args.seed;
  so.pad_token_id = pad_id;
  // Regression as HF infers it: num_labels 1 (asked for, or a seq-cls base with one output and no other
  // problem_type), or a base whose config says problem_type "regression".
  const ModelConfig base_cfg = load_model_config(plan.model_dir);
  const bool base_regression = base_cfg.is_seq_cls && resolve_problem_type(base_cfg) == "regression";
  const bool regression = !reward && (plan.num_labels == 1 || (plan.num_labels == 0 && base_regression));
  if (reward) {
    PreferenceOptions po;
    po.max_length = plan.max_seq_length;
    PreferenceDataset tr = load_preference_dataset(plan.train_file, enc, tids, po);
    std::printf("train data: %s — %zu pairs\n", plan.train_file.c_str(), tr.samples.size());
    train_samples = preference_samples(tr);
    if (!plan.eval_file.empty()) {
      PreferenceDataset ev = load_preference_dataset(plan.eval_file, enc, tids, po);
      std::printf("eval data:  %s — %zu pairs\n", plan.eval_file.c_str(), ev.samples.size());
      eval_samples = preference_samples(ev);
    }
    so.num_labels = 1;
    so.id2label = {"reward"};
  } else if (regression) {
    ClassificationOptions co;
    co.max_length = plan.max_seq_length;
    co.regression = true;
    ClassificationDataset tr = load_classification_dataset(plan.train_file, enc, tids, co);
    double mean = 0, sq = 0;
    for (auto& smp : tr.samples) mean += smp.target / double(tr.samples.size());
    for (auto& smp : tr.samples) sq += (smp.target - mean) * (smp.target - mean) / double(tr.samples.size());
    std::printf("train data: %s — %zu samples, regression targets (mean %.4g, std %.4g)\n", plan.train_file.c_str(),
                tr.samples.size(), mean, std::sqrt(sq));
    train_samples = classification_samples(tr);
    if (!plan.eval_file.empty()) {
      ClassificationDataset ev = load_classification_dataset(plan.eval_file, enc, tids, co);
      std::printf("eval data:  %s — %zu samples\n", plan.eval_file.c_str(), ev.samples.size());
      eval_samples = classification_samples(ev);
    }
    so.num_labels = 1;
    so.problem_type = "regression";  // what HF's config holds after training a num_labels-1 head
  } else {
    ClassificationOptions co;
    co.max_length = plan.max_seq_length;
    co.num_labels = plan.num_labels;
    ClassificationDataset tr = load_classification_dataset(plan.train_file, enc, tids, co);
    std::string counts;
    for (size_t i = 0; i < tr.label_counts.size(); i++)
      counts += cat(i ? ", " : "", tr.id2label[i], ": ", tr.label_counts[i]);
    std::printf("train data: %s — %zu samples, %lld labels (%s)\n", plan.train_file.c_str(), tr.samples.size(),
                (long long)tr.num_labels, counts.c_str());
    train_samples = classification_samples(tr);
    if (!plan.eval_file.empty()) {
      ClassificationOptions eo = co;
      eo.num_labels = tr.num_labels;
      if (tr.named_labels) eo.label_names = tr.id2label;
      ClassificationDataset ev = load_classification_dataset(plan.eval_file, enc, tids, eo);
      if (ev.named_labels != tr.named_labels)
        fail(plan.eval_file, ": labels are ", ev.named_labels ? "names" : "integers", " but the training file's are ",
             tr.named_labels ? "names" : "integers", ": use the same kind in both files");
      std::printf("eval data:  %s — %zu samples\n", plan.eval_file.c_str(), ev.samples.size());
      eval_samples = classification_samples(ev);
    }
    so.num_labels = tr.num_labels;
    if (tr.named_labels) so.id2label = tr.id2label;
    so.problem_type = "single_label_classification";  // as HF's config after training with integer labels
  }

  // Model: the head first, then what trains.
  Model m = load_model_for_classification(plan.model_dir, so);
  if (reward && m.cfg.num_labels != 1) fail(plan.model_dir, ": a reward model needs a one-output head");
  if (regression && m.cfg.num_labels != 1)
    fail(plan.model_dir, ": regression needs a one-output head (num_labels 1) but this model has ", m.cfg.num_labels);
  if (!reward && !regression && base_regression)
    fail(plan.model_dir, ": this model is a regression head (problem_type \"regression\"): train it on real-valued "
         "labels, or start from the base causal-LM model for classification");
  LoraConfig lora;
  Rng init_rng(plan.args.seed);
  if (plan.method == "lora") {
    lora = apply_lora(m, plan.lora, init_rng);
    std::printf("LoRA (SEQ_CLS): r=%lld, lora_alpha=%g, targets %s; head trained in full (modules_to_save)\n",
                (long long)lora.r, lora.lora_alpha, lora.target_modules.describe().c_str());
  } else {
    FreezeOptions fo = plan.freeze;
    fo.train_lm_head = false;  // there is no LM head any more: the score head below is what trains
    std::string what = apply_freeze_policy(m, fo);
    classification_head(m).weight->trainable = true;  // the new head always trains
    m.sync_grad_buffers();
    std::printf("%s + score head\n", what.c_str());
  }
  std::printf("%s\n", trainable_parameters_string(m).c_str());
  const nlohmann::json info = seq_cls_info(m.cfg, reward ? "reward" : regression ? "regression" : "classification");

  auto save_model_to = [&](const std::string& dir) {
    if (plan.method == "lora") {
      save_adapter(m, lora, dir);
    } else {
      save_model(m, dir);
      copy_tokenizer_files(plan.model_dir, dir, /*generation_config=*/false);
    }
    write_json_file((fs::path(dir) / kSeqClsInfoFile).string(), info);
  };

  std::unique_ptr<Progress> progress;
  auto log_line = [&](const std::string& text) {
    if (progress) progress->log_line(text);
    else std::printf("%s\n", text.c_str());
  };
  TrainerHooks hooks;
  hooks.save_model = save_model_to;
  hooks.load_model_weights = [&](const std::string& dir) { load_trained_weights(m, plan.method == "lora", dir); };
  if (reward) {
    hooks.window_loss = reward_window_loss(pad_id);
    hooks.eval_metrics = reward_eval_entry;
  } else if (regression) {
    hooks.window_loss = regression_window_loss;
    hooks.eval_metrics = regression_eval_entry;
  } else {
    hooks.window_loss = classification_window_loss;
    hooks.eval_metrics = classification_eval_entry;
  }
  nlohmann::json last_eval;
  hooks.on_log = [&](const nlohmann::json& e) {
    const std::string type = e.value("type", "");
    if (type == "train")
      log_line(cat("step ", e.value("step", 0), " | loss ", e.value("loss", 0.0), " | lr ", e.value("learning_rate", 0.0),
                   " | grad_norm ", e.value("grad_norm", 0.0)));
    else if (type == "eval") {
      last_eval = e;
      log_line(cat("eval @ step ", e.value("step", 0), " | ", eval_summary(e, info["task"].get<std::string>())));
    }
  };
  hooks.on_step = [&](int64_t step, int64_t, const StepMetrics& sm) {
    if (progress) progress->update(step, {{"loss", sm.loss}, {"lr", sm.learning_rate}});
  };

  LoaderOptions lo;
  lo.batch_size = plan.args.per_device_train_batch_size;
  lo.seed = plan.args.seed;
  lo.max_seq_length = reward ? 2 * plan.max_seq_length : plan.max_seq_length;
  lo.pad_id = pad_id;
  DataLoader loader(std::move(train_samples), lo);
  Trainer trainer(m, loader, eval_samples.empty() ? nullptr : &eval_samples, plan.args, hooks);
  fs::create_directories(out_dir);
  write_json_file(out_dir + "/run_config.json", o.to_json());

  const double t0 = now_seconds();
  std::printf("\ntraining: %lld steps (%lld per epoch), batch %lld x GA %lld\n", (long long)trainer.max_steps,
              (long long)trainer.steps_per_epoch, (long long)plan.args.per_device_train_batch_size,
              (long long)plan.args.gradient_accumulation_steps);
  nlohmann::json before;
  if (trainer.eval_enabled) before = trainer.evaluate();
  progress = std::make_unique<Progress>(trainer.max_steps, stdout);
  const nlohmann::json summary = trainer.train();
  progress->finish();
  progress.reset();
  if (trainer.eval_enabled && last_eval.value("step", int64_t(-1)) != trainer.state.global_step) trainer.evaluate();

  save_model_to(out_dir);
  try {
    write_report(out_dir);
  } catch (const Error& err) {
    std::printf("warning: report not written: %s\n", err.what());
  }
  std::printf("done in %.1f s: train_loss %.4f", now_seconds() - t0, summary.value("train_loss", NAN));
  if (trainer.eval_enabled) {
    const char* key = regression ? "eval_rmse" : "eval_accuracy";
    std::printf(", %s %.4f → %.4f%s", key, number_or_nan(before, key), number_or_nan(last_eval, key),
                reward ? " (pairwise)" : "");
  }
  std::printf("\n%s written to %s/\n", plan.method == "lora" ? "SEQ_CLS adapter (with score head)" : "seq-cls model",
              out_dir.c_str());
  return 0;
}

}  // namespace llmtune::cli
