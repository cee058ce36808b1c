// `llmtune train --task_type SEQ_CLS / --task reward`, `llmtune eval` on classifiers and `llmtune classify`,
// run as the built binary: a SEQ_CLS LoRA adapter is saved with PEFT's names INCLUDING the score head and,
// reloaded, predicts exactly what the trained model did; freeze/full write a seq-cls folder; regression
// (num_labels 1) trains on float labels and evaluates to MSE/RMSE/Pearson r; bad labels and bad preference
// rows end in one "error:" line naming file:line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_test_util.h"

#include "cli/cmd_train_seqcls.h"
#include "core/threads.h"
#include "data/classification.h"
#include "data/loader.h"
#include "io/safetensors.h"
#include "train/seqcls.h"

namespace fs = std::filesystem;
using namespace llmtune;
using nlohmann::json;

namespace {

using llmtune::cli_test::CliRun;
using llmtune::cli_test::expect_one_error_line;
using llmtune::cli_test::run_llmtune;
using llmtune::cli_test::slurp;

// This file's scratch folders.
struct Scratch : llmtune::cli_test::Scratch {
  Scratch() : llmtune::cli_test::Scratch("llmtune_seqcls_") {}
};

const std::string kModel = std::string(LLMTUNE_SOURCE_DIR) + "/models/stories260K";
const std::string kSentiment = std::string(LLMTUNE_SOURCE_DIR) + "/data/sentiment/";

// The first `n` lines of a sentiment file, labels turned into names ("neg"/"pos") when `named`.
std::string sentiment_head(const std::string& file, size_t n, bool named) {
  std::istringstream in(slurp(kSentiment + file));
  std::string out, line;
  for (size_t i = 0; i < n && std::getline(in, line); i++) {
    json j = json::parse(line);
    json row = {{"text", j["text"]}};
    row["label"] = named ? json(j["label"].get<int>() ? "pos" : "neg") : j["label"];
    out += row.dump() + "\n";
  }
  return out;
}

// eval prints a readable report, then the metrics as one JSON object on its last line.
json last_json_line(const std::string& out) {
  size_t end = out.find_last_not_of('\n');
  if (end == std::string::npos) return json();
  size_t start = out.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  return json::parse(out.substr(start, end + 1 - start));
}

// Rows of the sentiment file as regression data: positive → +0.75, negative → −1.25 (real-valued targets).
std::string sentiment_regression(const std::string& file, size_t n) {
  std::istringstream in(slurp(kSentiment + file));
  std::string out, line;
  for (size_t i = 0; i < n && std::getline(in, line); i++) {
    json j = json::parse(line);
    out += json{{"text", j["text"]}, {"label", j["label"].get<int>() ? 0.75 : -1.25}}.dump() + "\n";
  }
  return out;
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// The confusion matrix as printed in eval's readable report (the lines after its header).
std::vector<std::vector<std::string>> printed_confusion_matrix(const std::string& out, size_t labels) {
  std::istringstream in(out);
  std::vector<std::vector<std::string>> rows;
  bool inside = false;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("confusion matrix (rows = true label, columns = predicted):", 0) == 0) {
      inside = true;
      continue;
    }
    if (inside && rows.size() < labels + 1) rows.push_back(words(line));
  }
  return rows;
}

std::vector<std::string> train_args(const std::string& train, const std::string& eval, const std::string& out,
                                    const std::string& method, int steps) {
  return {"train", "--task_type", "SEQ_CLS", "--model", kModel, "--train_file", train, "--eval_file", eval,
          "--output_dir", out, "--method", method, "--max_steps", std::to_string(steps), "--learning_rate", "0.003",
          "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64", "--eval_steps",
          std::to_string(steps), "--logging_steps", "10", "--save_steps", "1000", "--num_threads", "1"};
}

json last_eval_entry(const std::string& out_dir) {
  json last;
  std::istringstream in(slurp(fs::path(out_dir) / "metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    if (j.value("type", "") == "eval") last = j;
  }
  return last;
}

}  // namespace

// The PEFT "head not saved" bug must be impossible: the adapter holds base_model.model.score.weight, the
// label names travel with it, and eval on the reloaded base + adapter reproduces the trained model's
// final in-training evaluation exactly.
TEST(SeqClsCli, LoraAdapterSavesTheHeadAndReloadsToIdenticalPredictions) {
  REQUIRE_BINARY();
  Scratch s;
  const std::string train = s.file("train.jsonl", sentiment_head("train.jsonl", 320, true));
  const std::string eval = s.file("eval.jsonl", sentiment_head("test.jsonl", 120, true));
  const std::string out = (s.path / "out").string();
  std::vector<std::string> args = train_args(train, eval, out, "lora", 20);
  for (const char* a : {"--target_modules", "all-linear", "--r", "8", "--lora_alpha", "16"}) args.push_back(a);
  CliRun r = run_llmtune(args, s.path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  SafetensorsFile f = open_safetensors(out + "/adapter_model.safetensors");
  ASSERT_TRUE(f.has("base_model.model.score.weight"));
  EXPECT_EQ(f.info("base_model.model.score.weight").shape, (Shape{2, 64}));
  json cfg = json::parse(slurp(out + "/adapter_config.json"));
  EXPECT_EQ(cfg["task_type"], "SEQ_CLS");
  json info = json::parse(slurp(out + "/seq_cls_config.json"));
  EXPECT_EQ(info["id2label"], (json{{"0", "neg"}, {"1", "pos"}}));

  const json trained = last_eval_entry(out);
  ASSERT_TRUE(trained.contains("eval_accuracy")) << trained.dump();
  CliRun e = run_llmtune({"eval", "--model", kModel, "--adapter", out, "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  json m = last_json_line(e.out);
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), trained["eval_accuracy"].get<double>());
  EXPECT_NEAR(m["loss"].get<double>(), trained["eval_loss"].get<double>(), 1e-9);
  EXPECT_EQ(m["samples"], 120);
  EXPECT_EQ(m["per_class"][0]["label"], "neg");

  // merge folds the adapter into a LlamaForSequenceClassification folder that evaluates the same.
  const std::string merged = (s.path / "merged").string();
  CliRun mg = run_llmtune({"merge", "--model", kModel, "--adapter", out, "--output", merged}, s.path);
  ASSERT_EQ(mg.exit_code, 0) << mg.out << mg.err;
  json merged_cfg = json::parse(slurp(merged + "/config.json"));
  EXPECT_EQ(merged_cfg["architectures"], json::array({"LlamaForSequenceClassification"}));
  EXPECT_EQ(merged_cfg["id2label"], (json{{"0", "neg"}, {"1", "pos"}}));
  EXPECT_TRUE(open_safetensors(merged + "/model.safetensors").has("score.weight"));
  EXPECT_TRUE(fs::exists(merged + "/seq_cls_config.json"));
  CliRun me = run_llmtune({"eval", "--model", merged, "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(me.exit_code, 0) << me.err;
  const json mm = last_json_line(me.out);
  EXPECT_DOUBLE_EQ(mm["accuracy"].get<double>(), m["accuracy"].get<double>());
  EXPECT_NEAR(mm["loss"].get<double>(), m["loss"].get<double>(), 1e-6);
  int64_t total = 0;
  for (auto& row : m["confusion_matrix"])
    for (auto& c : row) total += c.get<int64_t>();
  EXPECT_EQ(total, 120);
  // The readable report above the JSON line: accuracy, macro-F1, per-class counts, the confusion matrix.
  char acc[64];
  std::snprintf(acc, sizeof acc, "accuracy %.4f   macro-F1 %.4f", m["accuracy"].get<double>(), m["macro_f1"].get<double>());
  EXPECT_NE(e.out.find(acc), std::string::npos) << e.out;
  {
    std::istringstream report(e.out);
    std::vector<std::vector<std::string>> per_class;
    for (std::string line; std::getline(report, line);) {
      std::vector<std::string> w = words(line);
      if (!w.empty() && (w[0] == "label" || ((w[0] == "neg" || w[0] == "pos") && w.size() == 7))) per_class.push_back(w);
    }
    ASSERT_EQ(per_class.size(), 3u) << e.out;
    EXPECT_EQ(per_class[0], (std::vector<std::string>{"label", "support", "predicted", "correct", "precision", "recall", "f1"}));
    for (size_t c = 0; c < 2; c++) {
      const json& pc = m["per_class"][c];
      EXPECT_EQ(per_class[c + 1][0], pc["label"].get<std::string>());
      EXPECT_EQ(per_class[c + 1][1], std::to_string(pc["support"].get<int64_t>()));
      EXPECT_EQ(per_class[c + 1][2], std::to_string(pc["predicted"].get<int64_t>()));
      EXPECT_EQ(per_class[c + 1][3], std::to_string(pc["correct"].get<int64_t>()));
    }
  }
  const auto cm = printed_confusion_matrix(e.out, 2);
  ASSERT_EQ(cm.size(), 3u) << e.out;
  EXPECT_EQ(cm[0], (std::vector<std::string>{"neg", "pos"}));
  for (size_t r = 0; r < 2; r++) {
    ASSERT_EQ(cm[r + 1].size(), 3u) << e.out;
    EXPECT_EQ(cm[r + 1][0], r ? "pos" : "neg");
    for (size_t c = 0; c < 2; c++) EXPECT_EQ(cm[r + 1][c + 1], std::to_string(m["confusion_matrix"][r][c].get<int64_t>()));
  }
  // PEFT's SEQ_CLS config: the head modules are listed in modules_to_save (PeftModelForSequenceClassification
  // appends "classifier" and "score"), so PEFT itself loads the head back.
  EXPECT_NE(std::find(cfg["modules_to_save"].begin(), cfg["modules_to_save"].end(), "score"), cfg["modules_to_save"].end());
  EXPECT_NE(std::find(cfg["modules_to_save"].begin(), cfg["modules_to_save"].end(), "classifier"),
            cfg["modules_to_save"].end());

  // In-process reload gives the same predictions as the CLI's.
  set_num_threads(1);
  cli::LoadedClassifier lc = cli::load_classifier(kModel, out);
  EXPECT_EQ(lc.lm.model.cfg.id2label, (std::vector<std::string>{"neg", "pos"}));
  Tokenizer& tok = lc.lm.tokenizer;
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  EncodeFn enc = [&](std::string_view t, bool sp) { return tok.encode(t, sp); };
  ClassificationOptions co;
  co.label_names = {"neg", "pos"};
  LoaderOptions lo;
  lo.batch_size = 7;
  lo.shuffle = false;
  lo.pad_id = resolve_pad_id(tids);
  DataLoader loader(classification_samples(load_classification_dataset(eval, enc, tids, co)), lo);
  Workspace ws;
  json again = classification_metrics(evaluate_classification(lc.lm.model, ws, loader), lc.lm.model.cfg.id2label);
  EXPECT_EQ(again["confusion_matrix"], m["confusion_matrix"]);

  // The head under PEFT's in-memory name (base_model.model.score.modules_to_save.default.weight, what a
  // state_dict() of the PeftModel shows) loads to the same predictions.
  const fs::path inmem = s.path / "inmem";
  fs::create_directories(inmem);
  fs::copy_file(out + "/adapter_config.json", inmem / "adapter_config.json");
  fs::copy_file(out + "/seq_cls_config.json", inmem / "seq_cls_config.json");
  std::vector<std::pair<std::string, Tensor>> renamed;
  for (const std::string& n : f.names())
    renamed.emplace_back(n == "base_model.model.score.weight" ? "base_model.model.score.modules_to_save.default.weight" : n,
                         f.get(n));
  write_safetensors((inmem / "adapter_model.safetensors").string(), renamed);
  CliRun e2 = run_llmtune({"eval", "--model", kModel, "--adapter", inmem.string(), "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(e2.exit_code, 0) << e2.err;
  EXPECT_EQ(last_json_line(e2.out), m);

  // An adapter whose head was not saved is refused with a clear message, never silently re-initialised.
  const fs::path broken = s.path / "broken";
  fs::create_directories(broken);
  fs::copy_file(out + "/adapter_config.json", broken / "adapter_config.json");
  std::vector<std::pair<std::string, Tensor>> kept;
  for (const std::string& n : f.names())
    if (n.find("score") == std::string::npos) kept.emplace_back(n, f.get(n));
  write_safetensors((broken / "adapter_model.safetensors").string(), kept);
  CliRun b = run_llmtune({"eval", "--model", kModel, "--adapter", broken.string(), "--data", eval}, s.path);
  expect_one_error_line(b, {"score.weight"});
}

// method freeze writes a complete *ForSequenceClassification folder that eval and classify load directly.
TEST(SeqClsCli, FreezeWritesASeqClsFolderThatEvalAndClassifyLoad) {
  REQUIRE_BINARY();
  Scratch s;
  const std::string train = s.file("train.jsonl", sentiment_head("train.jsonl", 160, false));
  const std::string eval = s.file("eval.jsonl", sentiment_head("test.jsonl", 60, false));
  const std::string out = (s.path / "out").string();
  CliRun r = run_llmtune(train_args(train, eval, out, "freeze", 10), s.path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json cfg = json::parse(slurp(out + "/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "LlamaForSequenceClassification");
  EXPECT_EQ(cfg["id2label"].size(), 2u);
  CliRun e = run_llmtune({"eval", "--model", out, "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  json m = last_json_line(e.out);
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), last_eval_entry(out)["eval_accuracy"].get<double>());

  // Eval data whose labels do not fit the model's head: one error naming file:line.
  const std::string bad = s.file("bad_eval.jsonl", "{\"text\":\"fine\",\"label\":1}\n{\"text\":\"odd\",\"label\":2}\n");
  expect_one_error_line(run_llmtune({"eval", "--model", out, "--data", bad}, s.path),
                        {"bad_eval.jsonl:2: label 2 is outside the 2 labels"});

  CliRun c = run_llmtune({"classify", "--model", out, "--text", "Great phone, works well.", "--num_threads", "1"}, s.path);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  json j = json::parse(c.out);
  double psum = 0;
  for (auto& [k, v] : j["probabilities"].items()) psum += v.get<double>();
  EXPECT_NEAR(psum, 1.0, 1e-6);
  EXPECT_TRUE(j["probabilities"].contains(j["label"].get<std::string>()));
}

TEST(SeqClsCli, RewardTrainingAndPairwiseEval) {
  REQUIRE_BINARY();
  Scratch s;
  std::istringstream in(slurp(kSentiment + "train.jsonl"));
  std::vector<std::string> pos, neg;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line);
    (j["label"].get<int>() ? pos : neg).push_back(j["text"]);
  }
  std::string tr, te;
  for (size_t i = 0; i < 200; i++)
    (i < 160 ? tr : te) += json{{"prompt", "Review: "}, {"chosen", pos[i]}, {"rejected", neg[i]}}.dump() + "\n";
  const std::string train = s.file("train.jsonl", tr), eval = s.file("eval.jsonl", te);
  const std::string out = (s.path / "out").string();
  CliRun r = run_llmtune({"train", "--task", "reward", "--model", kModel, "--train_file", train, "--eval_file", eval,
                          "--output_dir", out, "--method", "full", "--max_steps", "10", "--learning_rate", "0.002",
                          "--per_device_train_batch_size", "16", "--eval_steps", "10", "--save_steps", "1000",
                          "--num_threads", "1"},
                         s.path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(json::parse(slurp(out + "/seq_cls_config.json"))["task"], "reward");
  CliRun e = run_llmtune({"eval", "--model", out, "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  json m = last_json_line(e.out);
  EXPECT_EQ(m["pairs"], 40);
  EXPECT_DOUBLE_EQ(m["pairwise_accuracy"].get<double>(), last_eval_entry(out)["eval_accuracy"].get<double>());
  EXPECT_TRUE(m.contains("mean_margin"));
  EXPECT_NEAR(m["mean_margin"].get<double>(), last_eval_entry(out)["eval_mean_margin"].get<double>(), 1e-6);
  EXPECT_NE(e.out.find("pairwise accuracy "), std::string::npos) << e.out;
}

// HF's rule: num_labels 1 means regression (MSELoss on the single logit). Float labels train, the config says
// problem_type "regression", eval prints MSE / RMSE / MAE / Pearson r (equal to the in-training evaluation)
// and classify prints the score.
TEST(SeqClsCli, RegressionWithOneLabelTrainsOnFloatTargets) {
  REQUIRE_BINARY();
  Scratch s;
  const std::string train = s.file("train.jsonl", sentiment_regression("train.jsonl", 320));
  const std::string eval = s.file("eval.jsonl", sentiment_regression("test.jsonl", 120));
  const std::string out = (s.path / "out").string();
  std::vector<std::string> args = train_args(train, eval, out, "freeze", 40);
  for (const char* a : {"--num_labels", "1", "--trainable_layers", "3", "--learning_rate", "0.001"}) args.push_back(a);
  CliRun r = run_llmtune(args, s.path);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("regression targets (mean"), std::string::npos) << r.out;
  json cfg = json::parse(slurp(out + "/config.json"));
  EXPECT_EQ(cfg["architectures"][0], "LlamaForSequenceClassification");
  EXPECT_EQ(cfg["problem_type"], "regression");
  EXPECT_EQ(cfg["id2label"].size(), 1u);
  EXPECT_EQ(json::parse(slurp(out + "/seq_cls_config.json"))["task"], "regression");

  const json trained = last_eval_entry(out);
  ASSERT_TRUE(trained.contains("eval_rmse")) << trained.dump();
  CliRun e = run_llmtune({"eval", "--model", out, "--data", eval, "--num_threads", "1"}, s.path);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  json m = last_json_line(e.out);
  EXPECT_EQ(m["task"], "regression");
  EXPECT_EQ(m["samples"], 120);
  EXPECT_NEAR(m["mse"].get<double>(), trained["eval_loss"].get<double>(), 1e-9);
  EXPECT_NEAR(m["rmse"].get<double>(), trained["eval_rmse"].get<double>(), 1e-9);
  EXPECT_NEAR(m["pearson_r"].get<double>(), trained["eval_pearson_r"].get<double>(), 1e-9);
  EXPECT_NEAR(m["rmse"].get<double>(), std::sqrt(m["mse"].get<double>()), 1e-12);
  EXPECT_NE(e.out.find("pearson r "), std::string::npos) << e.out;
  // It learned something: clearly better than predicting the mean target everywhere, and positively
  // correlated (measured: mse 0.818 vs baseline 0.966, r 0.467; before training mse 1.475, r −0.18).
  std::printf("regression (freeze 3 of 5 blocks, 40 steps): eval mse %.4f vs baseline %.4f, pearson r %.4f\n",
              m["mse"].get<double>(), m["baseline_mse"].get<double>(), m["pearson_r"].get<double>());
  EXPECT_LT(m["mse"].get<double>(), 0.9 * m["baseline_mse"].get<double>());
  EXPECT_GT(m["pearson_r"].get<double>(), 0.3);

  CliRun c = run_llmtune({"classify", "--model", out, "--text", "Great phone, works well.", "--num_threads", "1"}, s.path);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  json j = json::parse(c.out);
  ASSERT_TRUE(j.contains("score")) << c.out;
  EXPECT_TRUE(j["score"].is_number());
  EXPECT_FALSE(j.contains("label"));
}

TEST(SeqClsCli, BadLabelsAndBadPairsAreClearErrors) {
  REQUIRE_BINARY();
  Scratch s;
  const std::string out = (s.path / "out").string();
  auto train_on = [&](const std::string& file, std::vector<std::string> extra) {
    std::vector<std::string> a = {"train", "--model", kModel, "--train_file", file, "--output_dir", out,
                                  "--max_steps", "1", "--num_threads", "1"};
    a.insert(a.end(), extra.begin(), extra.end());
    return run_llmtune(a, s.path);
  };
  const std::string outside = s.file("outside.jsonl", "{\"text\":\"good\",\"label\":0}\n{\"text\":\"bad\",\"label\":2}\n");
  expect_one_error_line(train_on(outside, {"--task_type", "SEQ_CLS", "--num_labels", "2"}),
                        {"outside.jsonl:2: label 2 is outside the 2 labels (0..1)"});
  const std::string mixed = s.file("mixed.jsonl", "{\"text\":\"good\",\"label\":1}\n{\"text\":\"bad\",\"label\":\"neg\"}\n");
  expect_one_error_line(train_on(mixed, {"--task_type", "SEQ_CLS"}), {"mixed.jsonl:2: label \"neg\" is a string but line 1"});
  // Float labels for a classifier: point at regression instead of truncating them to class ids.
  const std::string floats = s.file("floats.jsonl", "{\"text\":\"good\",\"label\":1}\n{\"text\":\"bad\",\"label\":0.25}\n");
  CliRun fr = train_on(floats, {"--task_type", "SEQ_CLS"});
  expect_one_error_line(fr, {"floats.jsonl:2: label 0.25 must be an integer class id"});
  EXPECT_NE(fr.err.find("--num_labels 1"), std::string::npos) << fr.err;
  // Regression (num_labels 1) with a label that is not a number.
  const std::string nonnum = s.file("nonnum.jsonl", "{\"text\":\"a\",\"label\":0.5}\n{\"text\":\"b\",\"label\":1}\n"
                                                    "{\"text\":\"c\",\"label\":\"high\"}\n");
  expect_one_error_line(train_on(nonnum, {"--task_type", "SEQ_CLS", "--num_labels", "1"}),
                        {"nonnum.jsonl:3: label \"high\" must be a number"});
  const std::string no_rej = s.file("norej.jsonl", "{\"prompt\":\"Q\",\"chosen\":\"yes\",\"rejected\":\"no\"}\n"
                                                   "{\"prompt\":\"Q\",\"chosen\":\"yes\"}\n");
  expect_one_error_line(train_on(no_rej, {"--task", "reward"}), {"norej.jsonl:2: row has no \"rejected\" field"});
  const std::string no_cho = s.file("nocho.jsonl", "{\"prompt\":\"Q\",\"rejected\":\"no\"}\n");
  expect_one_error_line(train_on(no_cho, {"--task", "reward"}), {"nocho.jsonl:1: row has no \"chosen\" field"});
}
