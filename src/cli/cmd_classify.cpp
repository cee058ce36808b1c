// `llmtune classify --model DIR [--adapter DIR] (--text S | --file F.jsonl)`: one JSON line per input with
// the predicted label and every class probability (a regression head prints its score, a reward model its
// reward). Also the classifier metrics of `llmtune eval` (accuracy, macro-F1, per-class counts, confusion
// matrix; MSE / RMSE / MAE / Pearson r for regression; pairwise accuracy and mean margin for a reward
// model), printed as a readable report followed by one JSON line.
#include "cli/cmd_classify.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/cmd_train_seqcls.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/classification.h"
#include "data/collator.h"
#include "data/loader.h"
#include "io/atomic_file.h"
#include "model/heads.h"
#include "train/seqcls.h"

namespace llmtune::cli {

namespace {

std::string adapter_of(const ResolvedOptions& o) { return o.has("adapter") ? o.get_string("adapter") : ""; }

// The texts of --text or of --file's {"text"} rows.
std::vector<std::string> input_texts(const ResolvedOptions& o) {
  const bool has_text = o.has("text"), has_file = o.has("file");
  if (has_text == has_file) fail("give exactly one of --text and --file");
  if (has_text) return {o.get_string("text")};
  const std::string path = o.get_string("file");
  std::istringstream in(read_file(path));
  std::vector<std::string> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); n++) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      fail(path, ":", n, ": not valid JSON — expected one {\"text\": ...} object per line");
    }
    if (!row.is_object() || !row.contains("text") || !row["text"].is_string())
      fail(path, ":", n, ": row has no string \"text\" field (expected {\"text\": ...})");
    out.push_back(row["text"].get<std::string>());
  }
  if (out.empty()) fail(path, ": no rows");
  return out;
}

// True when the first non-blank row of a JSONL file is a preference pair ({"chosen", ...}).
bool first_row_is_preference(const std::string& path) {
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
    return row.is_object() && row.contains("chosen");
  }
  return false;
}

std::string fixed(double v, int digits = 4) {
  if (!std::isfinite(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}
std::string num_or_na(const nlohmann::json& v) { return v.is_number() ? fixed(v.get<double>()) : "n/a"; }

// Right-aligns each column of `rows` (first column left-aligned).
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (auto& r : rows)
    for (size_t c = 0; c < r.size(); c++) {
      if (width.size() <= c) width.push_back(0);
      width[c] = std::max(width[c], r[c].size());
    }
  std::string out;
  for (auto& r : rows) {
    std::string line = "  ";
    for (size_t c = 0; c < r.size(); c++) {
      const std::string pad(width[c] - r[c].size(), ' ');
      line += c == 0 ? r[c] + pad : "  " + pad + r[c];
    }
    out += line + "\n";
  }
  return out;
}

// Human-readable accuracy / macro-F1 / per-class counts / confusion matrix from classification_metrics().
std::string classification_report(const nlohmann::json& j, const std::string& data) {
  std::string out = cat("classification eval: ", data, " — ", j["samples"].get<int64_t>(), " samples, ",
                        j["per_class"].size(), " labels\n");
  out += cat("accuracy ", fixed(j["accuracy"].get<double>()), "   macro-F1 ", fixed(j["macro_f1"].get<double>()),
             "   loss ", num_or_na(j["loss"]), "\n\nper class:\n");
  std::vector<std::vector<std::string>> rows = {{"label", "support", "predicted", "correct", "precision", "recall", "f1"}};
  std::vector<std::string> names;
  for (auto& c : j["per_class"]) {
    names.push_back(c["label"].get<std::string>());
    rows.push_back({names.back(), cat(c["support"].get<int64_t>()), cat(c["predicted"].get<int64_t>()),
                    cat(c["correct"].get<int64_t>()), fixed(c["precision"].get<double>()),
                    fixed(c["recall"].get<double>()), fixed(c["f1"].get<double>())});
  }
  out += table(rows);
  out += "\nconfusion matrix (rows = true label, columns = predicted):\n";
  rows = {{""}};
  for (auto& n : names) rows[0].push_back(n);
  for (size_t r = 0; r < names.size(); r++) {
    rows.push_back({names[r]});
    for (auto& v : j["confusion_matrix"][r]) rows.back().push_back(cat(v.get<int64_t>()));
  }
  return out + table(rows);
}

std::string regression_report(const nlohmann::json& j, const std::string& data) {
  return cat("regression eval: ", data, " — ", j["samples"].get<int64_t>(), " samples\n", "mse ", num_or_na(j["mse"]),
             "   rmse ", num_or_na(j["rmse"]), "   mae ", num_or_na(j["mae"]), "   pearson r ", num_or_na(j["pearson_r"]),
             "\n", "targets: mean ", num_or_na(j["target_mean"]), ", std ", num_or_na(j["target_std"]),
             " (predicting the mean everywhere would give mse ", num_or_na(j["baseline_mse"]), ")\n");
}

int run_classify(const ResolvedOptions& o) {
  set_num_threads(int(o.get_int("num_threads")));
  LoadedClassifier lc = load_classifier(o.get_string("model"), adapter_of(o));
  Model& m = lc.lm.model;
  const Tokenizer& tok = lc.lm.tokenizer;
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  const int32_t pad = resolve_pad_id(tids);
  const int64_t L = m.cfg.num_labels, max_len = o.get_int("max_seq_length"), bs = o.get_int("batch_size");
  const std::vector<std::string> texts = input_texts(o);
  Workspace ws;
  for (size_t start = 0; start < texts.size(); start += size_t(bs)) {
    const size_t n = std::min(texts.size() - start, size_t(bs));
    std::vector<Sample> samples(n);
    for (size_t i = 0; i < n; i++) {
      samples[i].ids = tok.encode(texts[start + i], true);
      if (int64_t(samples[i].ids.size()) > max_len) samples[i].ids.resize(size_t(max_len));
      if (samples[i].ids.empty()) fail("input ", start + i + 1, " tokenises to no tokens: nothing to classify");
      samples[i].labels.assign(samples[i].ids.size(), -100);
    }
    const Batch b = collate(samples, pad);
    const std::vector<float> logits = batch_logits(m, ws, b);
    for (size_t i = 0; i < n; i++) {
      const float* z = logits.data() + i * size_t(L);
      nlohmann::json j;
      j["text"] = texts[start + i];
      if (lc.task == "reward") {
        j["reward"] = z[0];
      } else if (lc.task == "regression") {
        j["score"] = z[0];  // the regression head's output (HF: logits[:, 0])
      } else {
        double mx = z[0];
        for (int64_t l = 1; l < L; l++) mx = std::max(mx, double(z[l]));
        double se = 0;
        for (int64_t l = 0; l < L; l++) se += std::exp(double(z[l]) - mx);
        nlohmann::json probs = nlohmann::json::object();
        int64_t best = 0;
        for (int64_t l = 0; l < L; l++) {
          probs[m.cfg.id2label[size_t(l)]] = std::exp(double(z[l]) - mx) / se;
          if (z[l] > z[best]) best = l;
        }
        j["label"] = m.cfg.id2label[size_t(best)];
        j["label_id"] = best;
        j["probabilities"] = probs;
      }
      std::printf("%s\n", j.dump().c_str());
    }
  }
  return 0;
}

}  // namespace

int run_classifier_eval(const ResolvedOptions& o) {
  set_num_threads(int(o.get_int("num_threads")));
  LoadedClassifier lc = load_classifier(o.get_string("model"), adapter_of(o));
  Model& m = lc.lm.model;
  const Tokenizer& tok = lc.lm.tokenizer;
  TokenIds tids{tok.bos_id(), tok.eos_id(), tok.pad_id()};
  EncodeFn enc = [&](std::string_view s, bool special) { return tok.encode(s, special); };
  const std::string data = o.get_string("data");
  LoaderOptions lo;
  lo.batch_size = o.get_int("batch_size");
  lo.shuffle = false;
  lo.pad_id = resolve_pad_id(tids);
  Workspace ws;
  // A one-output folder from elsewhere (no seq_cls_config.json) may be a reward model: preference rows say so.
  std::string task = lc.task;
  if (!lc.task_recorded && task == "regression" && first_row_is_preference(data)) task = "reward";
  nlohmann::json j;
  if (task == "reward") {
    PreferenceOptions po;
    po.max_length = o.get_int("max_seq_length");
    PreferenceDataset ds = load_preference_dataset(data, enc, tids, po);
    DataLoader loader(preference_samples(ds), lo);
    const RewardEval e = evaluate_reward(m, ws, loader);
    j = {{"task", "reward"}, {"pairs", e.pairs}, {"pairwise_accuracy", e.accuracy}, {"mean_margin", e.mean_margin},
         {"loss", e.loss}};
    std::printf("reward model eval: %s — %lld pairs\n", data.c_str(), (long long)e.pairs);
    std::printf("pairwise accuracy %.4f (share of pairs with r_chosen > r_rejected)   mean margin %.4f   "
                "Bradley-Terry loss %.4f\n",
                e.accuracy, e.mean_margin, e.loss);
  } else if (task == "regression") {
    ClassificationOptions co;
    co.max_length = o.get_int("max_seq_length");
    co.regression = true;
    ClassificationDataset ds = load_classification_dataset(data, enc, tids, co);
    DataLoader loader(classification_samples(ds), lo);
    j = regression_metrics(evaluate_regression(m, ws, loader));
    j["task"] = "regression";
    std::printf("%s", regression_report(j, data).c_str());
  } else {
    ClassificationOptions co;
    co.max_length = o.get_int("max_seq_length");
    co.num_labels = m.cfg.num_labels;
    co.label_names = m.cfg.id2label;  // integer labels are ids; names must be the model's
    ClassificationDataset ds = load_classification_dataset(data, enc, tids, co);
    DataLoader loader(classification_samples(ds), lo);
    j = classification_metrics(evaluate_classification(m, ws, loader), m.cfg.id2label);
    j["task"] = "classification";
    std::printf("%s", classification_report(j, data).c_str());
  }
  // The last line is the same metrics as one JSON object, for scripts (`| tail -n 1`).
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

Command classify_command() {
  CommandSpec s;
  s.name = "classify";
  s.summary = "Label + class probabilities (or reward) per text with a sequence-classification model";
  add_model_options(s);
  s.add_string("text", std::nullopt, "one text to classify");
  s.add_string("file", std::nullopt, "JSONL with {\"text\"} rows (other fields are ignored)");
  s.add_int("max_seq_length", 1024, "truncate inputs to this many tokens").min = 1;
  s.add_int("batch_size", 8, "texts per forward pass").min = 1;
  return {s, run_classify};
}

}  // namespace llmtune::cli
