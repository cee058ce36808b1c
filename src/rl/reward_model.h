// A trained reward model as an RL reward function (the `model:DIR` reward spec): a sequence-classification
// model with a one-output head, as `llmtune train --task reward` writes it — either a full seq-cls model
// folder, or a SEQ_CLS LoRA adapter folder whose adapter_config.json names its base model. It is loaded
// once and scores prompt ⊕ response: the head's output at the last real token (hf-semantics §5.5, §7.6).
//
// Text → ids exactly as the reward trainer's data (data/classification.h, PreferenceOptions defaults):
// encode(prompt, add_special_tokens) ⊕ encode(response, false) ⊕ EOS when absent (no prompt: the response
// is encoded with special tokens). A sequence longer than the model's context is an error (TRL does not
// truncate reward inputs either).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::rl {

struct RewardInput;

// `model_dir`'s weights and, when adapter_dir is not "", a SEQ_CLS adapter on top, frozen (inference). On a
// causal-LM base the head is created first with the adapter's score.weight shape, and the label names /
// problem_type of the adapter's seq_cls_config.json when llmtune wrote one. Does not check that the result
// is a classifier (the callers word that failure). load_adapter's warnings go to *warnings (null: dropped).
// Also what `llmtune classify` / `eval` load a classifier with (cli::load_classifier).
Model load_model_with_seq_cls_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                      std::vector<std::string>* warnings = nullptr);

// A classifier (any number of labels): `model_dir` a *ForSequenceClassification folder, or a causal-LM
// base when `adapter_dir` holds a SEQ_CLS adapter (the head gets the adapter's score.weight shape and
// values). adapter_dir may be "". The adapters are frozen (inference). Fails when it is no classifier.
Model load_seq_cls_model(const std::string& model_dir, const std::string& adapter_dir);

// base_model_name_or_path of an adapter folder, resolved: as written when it exists (absolute or from the
// current folder), else relative to the llmtune source tree (the bundled models). Fails naming the file.
std::string adapter_base_model_dir(const std::string& adapter_dir);

struct RewardModel {
  Model model;
  Tokenizer tokenizer;
  std::string dir;           // as given in the spec
  std::string base_dir;      // the base model folder for an adapter, else dir
  int64_t batch_size = 8;    // rows per forward
  Workspace ws;              // reused across batches
};

// `dir` is a seq-cls model folder or a SEQ_CLS adapter folder (has adapter_config.json). The head must
// have one output.
std::unique_ptr<RewardModel> load_reward_model(const std::string& dir);

// The ids scored for one (prompt, response).
std::vector<int32_t> reward_model_ids(const RewardModel& rm, const std::string& prompt, const std::string& response);

// One reward per input (the head's scalar at each row's last real token), batch_size rows per forward.
// `spec` names the reward in error messages.
std::vector<float> score_with_reward_model(RewardModel& rm, const std::vector<RewardInput>& inputs,
                                           const std::string& spec);

}  // namespace llmtune::rl
