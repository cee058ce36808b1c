// Datasets for sequence classification ({"text", "label"} JSONL) and reward modelling (preference JSONL
// {"prompt"?, "chosen", "rejected", "margin"?}), tokenised through an EncodeFn (data/dataset.h).
//
// Choices and deliberate differences from Hugging Face / TRL (hf-semantics §5.5, §7.6):
//  * Labels are integers (class ids) or strings (class names), never both in one file. Names get ids in
//    order of first appearance unless a label list is given (then a name must be in it); the returned
//    id2label is what a seq-cls config.json stores (id2label / label2id). With `regression` every label
//    must be a number (targets for the MSE head, num_labels 1).
//  * Classification rows: encode(text, add_special_tokens); NO EOS by default (HF's text-classification
//    scripts tokenise the text only). Our head pools at the last real token from the attention mask, so
//    whether an EOS is there never shifts the pooled position onto the wrong token (see model/heads.h).
//  * Preference rows: TRL prepends the prompt to chosen and rejected and appends EOS when it is not already
//    the last token; we do the same, but encode prompt and response SEPARATELY and concatenate the ids
//    (as data/dataset.h does for prompt/completion), so a BPE merge across the junction may differ from
//    encoding the joined string. EOS is appended before truncation, so an over-long row loses its EOS.
//  * Truncation keeps the start (truncation_side "right") to max_length tokens. Current TRL instead DROPS
//    pairs where either side is longer than max_length: set drop_too_long for that (counted).
//  * Rows that tokenise to nothing are an error (a classifier needs at least one token to pool).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"

namespace llmtune {

struct ClassificationOptions {
  int64_t max_length = 512;
  bool add_special_tokens = true;
  bool append_eos = false;               // see above; needs the tokenizer's EOS
  int64_t num_labels = 0;                // 0 = from the data (max id + 1, or the number of names)
  std::vector<std::string> label_names;  // optional fixed list: name → its index; also implies num_labels
  bool regression = false;               // labels are real numbers (num_labels 1)
};

struct ClassificationSample {
  std::vector<int32_t> ids;
  int32_t label = -1;   // class id (classification)
  float target = 0.f;   // regression target
  int64_t line = 0;     // 1-based JSONL line
};

struct ClassificationDataset {
  std::string source;
  std::vector<ClassificationSample> samples;
  int64_t num_labels = 0;
  std::vector<std::string> id2label;  // names (string labels / given list), or "0".."n-1" for integer labels
  bool named_labels = false;          // labels were strings
  bool regression = false;
  int64_t num_truncated = 0;
  std::vector<int64_t> label_counts;  // rows per class (classification)
};

// Parses + tokenises; `name` (usually the path) prefixes every error as "name:LINE: ...".
ClassificationDataset parse_classification_jsonl(std::string_view content, std::string_view name,
                                                 const EncodeFn& encode, const TokenIds& ids,
                                                 const ClassificationOptions& opt);
ClassificationDataset load_classification_dataset(const std::string& path, const EncodeFn& encode,
                                                  const TokenIds& ids, const ClassificationOptions& opt);

struct PreferenceOptions {
  int64_t max_length = 1024;       // TRL RewardConfig default
  bool add_special_tokens = true;  // for the prompt (or the response when there is no prompt)
  bool append_eos = true;          // TRL: EOS appended when absent
  bool drop_too_long = false;      // TRL: drop pairs over max_length instead of truncating
};

struct PreferenceSample {
  std::vector<int32_t> chosen, rejected;  // prompt ⊕ response (⊕ EOS), each
  float margin = 0.f;                     // "margin" field (0 when absent)
  int64_t line = 0;
};

struct PreferenceDataset {
  std::string source;
  std::vector<PreferenceSample> samples;
  bool has_margin = false;  // some row had "margin"
  int64_t num_truncated = 0, num_dropped = 0;
};

PreferenceDataset parse_preference_jsonl(std::string_view content, std::string_view name, const EncodeFn& encode,
                                         const TokenIds& ids, const PreferenceOptions& opt);
PreferenceDataset load_preference_dataset(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                                          const PreferenceOptions& opt);

}  // namespace llmtune
