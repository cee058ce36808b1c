// `llmtune train --task_type SEQ_CLS | --task reward`, and loading a classifier (a seq-cls folder, or a
// causal-LM base + a SEQ_CLS adapter) for `eval` / `classify`.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "cli/model_loading.h"
#include "cli/train_options.h"

namespace llmtune::cli {

int run_seqcls_train(const ResolvedOptions& o, const TrainPlan& plan);

// The file written next to a seq-cls model or SEQ_CLS adapter: {"task": "classification"|"regression"|"reward",
// "num_labels", "id2label", "label2id", "problem_type"}. A PEFT adapter folder has no config.json, so this
// is where its label names live.
constexpr const char* kSeqClsInfoFile = "seq_cls_config.json";

struct LoadedClassifier {
  LoadedModel lm;
  std::string task;            // "classification" | "regression" | "reward"
  bool task_recorded = false;  // task came from seq_cls_config.json (else from config.json: 1 output → regression)
};

// True when `model_dir` (or the adapter) describes a classifier: a *ForSequenceClassification config, or
// an adapter_config.json with task_type SEQ_CLS.
bool is_classifier(const std::string& model_dir, const std::string& adapter_dir);
// model_dir: a seq-cls folder, or a causal-LM base when adapter_dir holds a SEQ_CLS adapter (then the head
// is created with the adapter's score.weight shape and filled from the adapter). adapter_dir may be "".
LoadedClassifier load_classifier(const std::string& model_dir, const std::string& adapter_dir);

}  // namespace llmtune::cli
