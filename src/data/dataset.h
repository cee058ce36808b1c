// Training / eval data: reads JSONL ({"text"} or {"prompt","completion"} rows) and plain .txt files,
// and tokenises them into Samples (ids + unshifted labels, -100 = no loss) through a tokenizer callable.
//
// The data layer never sees the tokenizer implementation: it takes an EncodeFn and the special ids.
//
// Choices and deliberate differences from Hugging Face (hf-semantics §4.15, §9.4), in one place:
//  * File kind is detected from the FIRST row of a JSONL file: {"prompt","completion"} (both present)
//    wins over {"text"}; every later row must have the same field(s) — mixing kinds is an error.
//    Other fields (e.g. "label", "source") are ignored.
//  * Prompt/completion rows are tokenised as encode(prompt, add_special_tokens) ⊕ encode(completion,
//    false), i.e. the two parts are encoded SEPARATELY and the ids concatenated. TRL encodes the joined
//    string prompt+completion, so a BPE merge across the junction can give different ids there; encoding
//    separately makes the prompt/completion boundary (the loss mask) exact.
//  * EOS: append_eos_to_text defaults to false, as the plain HF Trainer path (tokenizer(text) +
//    DataCollatorForLanguageModeling) adds no EOS; append_eos_to_completion defaults to true, as TRL's
//    SFTTrainer does for prompt/completion data, so the model learns to stop. EOS is appended before
//    truncation (as TRL does), so an over-long row loses its EOS.
//  * Truncation keeps the START of each sample (HF truncation_side="right").
//  * A .txt file is ONE text: encoded once (so only the first chunk starts with BOS when
//    add_special_tokens adds one) and cut into consecutive chunks of max_seq_length tokens (the last
//    chunk may be shorter), like HF's run_clm group_texts but without dropping the remainder. No token
//    is trained to predict across a chunk boundary.
//  * Rows that tokenise to zero ids are skipped (counted in num_empty_skipped); rows whose labels are all
//    -100 (prompt fills max_seq_length) are kept, as HF keeps them, and counted in num_without_labels.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace llmtune {

// The label value that contributes no loss (PyTorch CrossEntropyLoss ignore_index). Same value as
// kernels' kIgnoreIndex; a separate name so the data layer does not include kernel headers.
constexpr int32_t kLabelIgnore = -100;

using EncodeFn = std::function<std::vector<int32_t>(std::string_view text, bool add_special_tokens)>;

// Special token ids; -1 = the tokenizer has none.
struct TokenIds {
  int32_t bos = -1, eos = -1, pad = -1;
};

// One training example: ids and UNSHIFTED labels of the same length (labels[t] = ids[t] or -100).
struct Sample {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;
};

struct DatasetOptions {
  int64_t max_seq_length = 1024;       // TRL SFTConfig max_length default; must be >= 1
  bool completion_only_loss = true;    // prompt/completion rows: labels -100 over the prompt
  bool add_special_tokens = true;      // passed to encode() for the text / the prompt
  bool append_eos_to_text = false;     // {"text"} rows and .txt files (plain HF Trainer: no EOS)
  bool append_eos_to_completion = true;  // {"prompt","completion"} rows (TRL SFTTrainer: EOS)
};

enum class DatasetKind { Text, PromptCompletion, PlainText };
const char* dataset_kind_name(DatasetKind kind);  // "text", "prompt/completion", "plain text"

// One JSONL row before tokenisation; `line` is the 1-based line in the file (for messages).
struct RawRow {
  std::string text;        // DatasetKind::Text
  std::string prompt;      // DatasetKind::PromptCompletion
  std::string completion;  // DatasetKind::PromptCompletion
  int64_t line = 0;
};

struct RawRows {
  DatasetKind kind = DatasetKind::Text;
  std::vector<RawRow> rows;
};

struct Dataset {
  DatasetKind kind = DatasetKind::Text;
  std::string source;  // the path it came from
  std::vector<Sample> samples;
  int64_t num_rows = 0;            // rows (JSONL) or 1 (.txt) read from the file
  int64_t num_truncated = 0;       // samples cut to max_seq_length (.txt: chunks beyond the first)
  int64_t num_empty_skipped = 0;   // rows that tokenised to nothing
  int64_t num_without_labels = 0;  // samples whose labels are all -100
  int64_t num_tokens = 0;          // Σ sample lengths
};

// Parses JSONL text; `name` (usually the path) prefixes every error as "name:LINE: ...".
// Blank lines are skipped but still counted for line numbers. Fails on an empty result.
RawRows parse_jsonl(std::string_view content, std::string_view name);
RawRows read_jsonl(const std::string& path);

// Tokenises one row as described at the top of this file.
Sample tokenize_text(std::string_view text, const EncodeFn& encode, const TokenIds& ids,
                     const DatasetOptions& opt);
Sample tokenize_prompt_completion(std::string_view prompt, std::string_view completion,
                                  const EncodeFn& encode, const TokenIds& ids,
                                  const DatasetOptions& opt);

// Tokenised rows of a parsed JSONL file.
Dataset tokenize_rows(const RawRows& rows, const EncodeFn& encode, const TokenIds& ids,
                      const DatasetOptions& opt, std::string_view source);
// One whole text cut into max_seq_length chunks (labels = ids).
Dataset tokenize_plain_text(std::string_view text, const EncodeFn& encode, const TokenIds& ids,
                            const DatasetOptions& opt, std::string_view source);

// By extension: ".jsonl" → JSONL rows, ".txt" → one text chunked; anything else is an error.
Dataset load_dataset(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                     const DatasetOptions& opt);

}  // namespace llmtune
