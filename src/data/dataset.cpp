// JSONL / .txt reading with file:line errors, and tokenisation into Samples (see dataset.h for the
// choices made and where they differ from Hugging Face).
#include "data/dataset.h"

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

namespace llmtune {

namespace {

using nlohmann::json;

const char* kExpectedShape =
    "expected {\"text\": ...} or {\"prompt\": ..., \"completion\": ...}";

const char* json_type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "an unsupported value";
  }
}

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, "; we parse
// one line at a time, so that prefix says nothing the file:line prefix does not already say.
std::string short_parse_message(const std::string& what) {
  std::string msg = what;
  if (auto p = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && p != std::string::npos)
    msg = msg.substr(p + 2);
  if (msg.rfind("parse error at line 1, ", 0) == 0) msg = msg.substr(23);
  return msg;
}

std::string read_string_field(const json& row, const char* field, std::string_view name,
                              int64_t line) {
  auto it = row.find(field);
  if (it == row.end())
    fail(name, ":", line, ": row has no \"", field, "\" field (", kExpectedShape,
         "; the kind of a file is set by its first row and cannot change)");
  if (!it->is_string())
    fail(name, ":", line, ": field \"", field, "\" is ", json_type_name(*it),
         ", expected a string");
  return it->get<std::string>();
}

void truncate_sample(Sample& s, int64_t max_len) {
  if (int64_t(s.ids.size()) > max_len) {
    s.ids.resize(size_t(max_len));
    s.labels.resize(size_t(max_len));
  }
}

void check_options(const DatasetOptions& opt) {
  LLMTUNE_CHECK(opt.max_seq_length >= 1, "max_seq_length must be at least 1 (got ",
                opt.max_seq_length, ")");
}

int32_t required_eos(const TokenIds& ids, const char* option) {
  LLMTUNE_CHECK(ids.eos >= 0, option,
                " is on but the tokenizer has no EOS token: turn the option off or use a tokenizer "
                "with an eos_token");
  return ids.eos;
}

bool all_ignored(const std::vector<int32_t>& labels) {
  for (int32_t l : labels)
    if (l != kLabelIgnore) return false;
  return true;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LLMTUNE_CHECK(f.good(), path, ": cannot open the file (does it exist and is it readable?)");
  std::ostringstream ss;
  ss << f.rdbuf();
  LLMTUNE_CHECK(!f.bad(), path, ": read error");
  return ss.str();
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

const char* dataset_kind_name(DatasetKind kind) {
  switch (kind) {
    case DatasetKind::Text: return "text";
    case DatasetKind::PromptCompletion: return "prompt/completion";
    case DatasetKind::PlainText: return "plain text";
  }
  return "?";
}

RawRows parse_jsonl(std::string_view content, std::string_view name) {
  RawRows out;
  bool kind_known = false;
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;  // blank line

    json row;
    try {
      row = json::parse(line);
    } catch (const json::parse_error& e) {
      std::string hint;
      if (!kind_known && line.find_first_not_of(" \t") != std::string_view::npos &&
          line[line.find_first_not_of(" \t")] == '[')
        hint = "; a JSON array file is not JSONL: write one object per line";
      fail(name, ":", line_no, ": not valid JSON (", short_parse_message(e.what()), ")", hint,
           " — each line must be one JSON object, ", kExpectedShape);
    }
    if (!row.is_object())
      fail(name, ":", line_no, ": row is ", json_type_name(row), ", expected a JSON object (",
           kExpectedShape, ")");

    if (!kind_known) {
      if (row.contains("prompt") && row.contains("completion"))
        out.kind = DatasetKind::PromptCompletion;
      else if (row.contains("text"))
        out.kind = DatasetKind::Text;
      else if (row.contains("chosen") && row.contains("rejected"))
        fail(name, ":", line_no, ": this is a preference row ({\"prompt\", \"chosen\", "
             "\"rejected\"}), which is for DPO / reward training, not supervised fine-tuning (",
             kExpectedShape, ")");
      else if (row.contains("prompt") || row.contains("completion"))
        fail(name, ":", line_no, ": row has \"", row.contains("prompt") ? "prompt" : "completion",
             "\" but no \"", row.contains("prompt") ? "completion" : "prompt", "\" field (",
             kExpectedShape, ")");
      else
        fail(name, ":", line_no, ": row has no \"text\" field (", kExpectedShape, ")");
      kind_known = true;
    }

    RawRow r;
    r.line = line_no;
    if (out.kind == DatasetKind::Text) {
      r.text = read_string_field(row, "text", name, line_no);
    } else {
      r.prompt = read_string_field(row, "prompt", name, line_no);
      r.completion = read_string_field(row, "completion", name, line_no);
    }
    out.rows.push_back(std::move(r));
  }
  LLMTUNE_CHECK(!out.rows.empty(), name,
                ": the dataset is empty (no non-blank lines); a JSONL dataset needs one JSON object "
                "per line, ",
                kExpectedShape);
  return out;
}

RawRows read_jsonl(const std::string& path) { return parse_jsonl(read_file(path), path); }

Sample tokenize_text(std::string_view text, const EncodeFn& encode, const TokenIds& ids,
                     const DatasetOptions& opt) {
  check_options(opt);
  Sample s;
  s.ids = encode(text, opt.add_special_tokens);
  if (opt.append_eos_to_text) s.ids.push_back(required_eos(ids, "append_eos_to_text"));
  s.labels = s.ids;
  truncate_sample(s, opt.max_seq_length);
  return s;
}

Sample tokenize_prompt_completion(std::string_view prompt, std::string_view completion,
                                  const EncodeFn& encode, const TokenIds& ids,
                                  const DatasetOptions& opt) {
  check_options(opt);
  Sample s;
  s.ids = encode(prompt, opt.add_special_tokens);
  const size_t prompt_len = s.ids.size();
  std::vector<int32_t> completion_ids = encode(completion, false);
  s.ids.insert(s.ids.end(), completion_ids.begin(), completion_ids.end());
  if (opt.append_eos_to_completion) s.ids.push_back(required_eos(ids, "append_eos_to_completion"));
  s.labels = s.ids;
  if (opt.completion_only_loss)
    std::fill(s.labels.begin(), s.labels.begin() + std::ptrdiff_t(prompt_len), kLabelIgnore);
  truncate_sample(s, opt.max_seq_length);
  return s;
}

Dataset tokenize_rows(const RawRows& rows, const EncodeFn& encode, const TokenIds& ids,
                      const DatasetOptions& opt, std::string_view source) {
  check_options(opt);
  Dataset d;
  d.kind = rows.kind;
  d.source = std::string(source);
  d.num_rows = int64_t(rows.rows.size());
  d.samples.reserve(rows.rows.size());
  for (const RawRow& r : rows.rows) {
    // Measure the untruncated length to count truncations: tokenise with an unlimited length first.
    DatasetOptions full = opt;
    full.max_seq_length = INT64_MAX;
    Sample s = rows.kind == DatasetKind::PromptCompletion
                   ? tokenize_prompt_completion(r.prompt, r.completion, encode, ids, full)
                   : tokenize_text(r.text, encode, ids, full);
    if (s.ids.empty()) {
      ++d.num_empty_skipped;
      continue;
    }
    if (int64_t(s.ids.size()) > opt.max_seq_length) {
      ++d.num_truncated;
      truncate_sample(s, opt.max_seq_length);
    }
    if (all_ignored(s.labels)) ++d.num_without_labels;
    d.num_tokens += int64_t(s.ids.size());
    d.samples.push_back(std::move(s));
  }
  LLMTUNE_CHECK(!d.samples.empty(), source, ": all ", d.num_rows,
                " rows tokenised to zero tokens; the dataset is empty");
  return d;
}

Dataset tokenize_plain_text(std::string_view text, const EncodeFn& encode, const TokenIds& ids,
                            const DatasetOptions& opt, std::string_view source) {
  check_options(opt);
  Dataset d;
  d.kind = DatasetKind::PlainText;
  d.source = std::string(source);
  d.num_rows = 1;
  std::vector<int32_t> all = encode(text, opt.add_special_tokens);
  if (opt.append_eos_to_text) all.push_back(required_eos(ids, "append_eos_to_text"));
  LLMTUNE_CHECK(!all.empty(), source, ": the text file is empty (nothing to train on)");
  const int64_t n = int64_t(all.size());
  for (int64_t start = 0; start < n; start += opt.max_seq_length) {
    const int64_t end = std::min(n, start + opt.max_seq_length);
    Sample s;
    s.ids.assign(all.begin() + start, all.begin() + end);
    s.labels = s.ids;
    d.samples.push_back(std::move(s));
  }
  d.num_truncated = int64_t(d.samples.size()) - 1;
  d.num_tokens = n;
  return d;
}

Dataset load_dataset(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                     const DatasetOptions& opt) {
  check_options(opt);
  if (ends_with(path, ".jsonl")) return tokenize_rows(read_jsonl(path), encode, ids, opt, path);
  if (ends_with(path, ".txt")) {
    std::string text = read_file(path);
    LLMTUNE_CHECK(text.find_first_not_of(" \t\r\n\f\v") != std::string::npos, path,
                  ": the text file is empty (nothing to train on)");
    return tokenize_plain_text(text, encode, ids, opt, path);
  }
  fail(path, ": unsupported dataset file; use .jsonl (one {\"text\": ...} or {\"prompt\": ..., "
             "\"completion\": ...} object per line) or .txt (one plain text)");
}

}  // namespace llmtune
