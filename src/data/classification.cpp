// Classification ({"text","label"}) and preference ({"prompt"?,"chosen","rejected"}) JSONL → token ids,
// with file:line errors (choices and HF differences: classification.h).
#include "data/classification.h"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"

namespace llmtune {

namespace {

using nlohmann::json;

// Calls f(row, line) for every non-blank line, parsed as a JSON object.
template <typename F>
void for_each_row(std::string_view content, std::string_view name, const char* shape, F&& f) {
  int64_t line_no = 0, rows = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;
    json row;
    try {
      row = json::parse(line);
    } catch (const json::parse_error&) {
      fail(name, ":", line_no, ": not valid JSON — each line must be one JSON object, expected ", shape);
    }
    if (!row.is_object()) fail(name, ":", line_no, ": row is not a JSON object, expected ", shape);
    f(row, line_no);
    rows++;
  }
  if (rows == 0) fail(name, ": the dataset is empty (no non-blank lines); expected one JSON object per line, ", shape);
}

std::string string_field(const json& row, const char* field, std::string_view name, int64_t line, const char* shape) {
  auto it = row.find(field);
  if (it == row.end() || it->is_null()) fail(name, ":", line, ": row has no \"", field, "\" field (expected ", shape, ")");
  if (!it->is_string()) fail(name, ":", line, ": field \"", field, "\" must be a string, got ", it->dump());
  return it->get<std::string>();
}

std::string names_list(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); i++) s += (i ? ", " : "") + ("\"" + names[i] + "\"");
  return s;
}

const char* kClsShape = "{\"text\": \"...\", \"label\": 0 | \"name\"}";
const char* kRegShape = "{\"text\": \"...\", \"label\": 0.5}";
const char* kPrefShape = "{\"prompt\": \"...\" (optional), \"chosen\": \"...\", \"rejected\": \"...\"}";

}  // namespace

ClassificationDataset parse_classification_jsonl(std::string_view content, std::string_view name,
                                                 const EncodeFn& encode, const TokenIds& ids,
                                                 const ClassificationOptions& opt) {
  if (opt.max_length < 1) fail("max_length must be at least 1 (got ", opt.max_length, ")");
  if (opt.append_eos && ids.eos < 0)
    fail("append_eos is on but the tokenizer has no EOS token: turn it off or use a tokenizer with an eos_token");
  if (!opt.label_names.empty() && opt.num_labels > 0 && int64_t(opt.label_names.size()) != opt.num_labels)
    fail("num_labels is ", opt.num_labels, " but ", opt.label_names.size(), " label names were given");
  if (opt.regression && (!opt.label_names.empty() || opt.num_labels > 1))
    fail("regression labels are real numbers (num_labels 1): do not give label names or num_labels > 1");

  ClassificationDataset ds;
  ds.source = std::string(name);
  ds.regression = opt.regression;
  const int64_t fixed_n = !opt.label_names.empty() ? int64_t(opt.label_names.size()) : opt.num_labels;
  std::map<std::string, int32_t> name_to_id;
  for (size_t i = 0; i < opt.label_names.size(); i++)
    if (!name_to_id.emplace(opt.label_names[i], int32_t(i)).second)
      fail("label name \"", opt.label_names[i], "\" is listed twice");
  std::vector<std::string> names = opt.label_names;
  int kind = 0;  // 0 unknown, 1 integer labels, 2 string labels
  int64_t kind_line = 0, max_id = -1;

  const char* shape = opt.regression ? kRegShape : kClsShape;
  for_each_row(content, name, shape, [&](const json& row, int64_t line) {
    ClassificationSample s;
    s.line = line;
    const std::string text = string_field(row, "text", name, line, shape);
    auto it = row.find("label");
    if (it == row.end() || it->is_null()) fail(name, ":", line, ": row has no \"label\" field (expected ", shape, ")");
    const json& lab = *it;
    if (opt.regression) {
      if (!lab.is_number())
        fail(name, ":", line, ": label ", lab.dump(), " must be a number (regression head, num_labels 1)",
             lab.is_string() ? ": class names need a classification head (num_labels >= 2)" : "");
      s.target = lab.get<float>();
      if (!std::isfinite(s.target)) fail(name, ":", line, ": label ", lab.dump(), " is not a finite number");
    } else {
      const int this_kind = lab.is_number_integer() ? 1 : lab.is_string() ? 2 : 0;
      if (this_kind == 0)
        fail(name, ":", line, ": label ", lab.dump(), " must be an integer class id or a string class name",
             lab.is_number() ? " (real-valued labels need a regression head: num_labels 1, e.g. --num_labels 1)" : "");
      if (kind != 0 && this_kind != kind)
        fail(name, ":", line, ": label ", lab.dump(), " is ", this_kind == 1 ? "an integer" : "a string",
             " but line ", kind_line, " had ", kind == 1 ? "an integer" : "a string",
             ": use either class ids or class names in one file, not both");
      if (kind == 0) {
        kind = this_kind;
        kind_line = line;
      }
      if (this_kind == 1) {
        const int64_t v = lab.get<int64_t>();
        if (v < 0) fail(name, ":", line, ": label ", v, " is negative: class ids are 0..num_labels-1");
        if (fixed_n > 0 && v >= fixed_n)
          fail(name, ":", line, ": label ", v, " is outside the ", fixed_n, " labels (0..", fixed_n - 1, ")");
        if (v > INT32_MAX) fail(name, ":", line, ": label ", v, " is too large");
        s.label = int32_t(v);
        max_id = std::max(max_id, v);
      } else {
        const std::string nm = lab.get<std::string>();
        auto f = name_to_id.find(nm);
        if (f == name_to_id.end()) {
          if (!opt.label_names.empty())
            fail(name, ":", line, ": label \"", nm, "\" is not one of the given labels (", names_list(names), ")");
          if (fixed_n > 0 && int64_t(names.size()) >= fixed_n)
            fail(name, ":", line, ": label \"", nm, "\" would be label number ", names.size() + 1, " but num_labels is ",
                 fixed_n, " (labels so far: ", names_list(names), ")");
          f = name_to_id.emplace(nm, int32_t(names.size())).first;
          names.push_back(nm);
        }
        s.label = f->second;
      }
    }
    s.ids = encode(text, opt.add_special_tokens);
    if (opt.append_eos) s.ids.push_back(ids.eos);
    if (s.ids.empty()) fail(name, ":", line, ": the text tokenises to no tokens; a classifier needs at least one");
    if (int64_t(s.ids.size()) > opt.max_length) {
      s.ids.resize(size_t(opt.max_length));
      ds.num_truncated++;
    }
    ds.samples.push_back(std::move(s));
  });

  if (opt.regression) {
    ds.num_labels = 1;
    ds.id2label = {"LABEL_0"};
    return ds;
  }
  ds.named_labels = kind == 2;
  if (kind == 2) {
    ds.id2label = names;
  } else {
    const int64_t n = fixed_n > 0 ? fixed_n : max_id + 1;
    if (!opt.label_names.empty()) ds.id2label = opt.label_names;
    else
      for (int64_t i = 0; i < n; i++) ds.id2label.push_back(std::to_string(i));
  }
  ds.num_labels = fixed_n > 0 ? fixed_n : int64_t(ds.id2label.size());
  if (ds.num_labels < 2 && fixed_n == 0)
    fail(name, ": every row has the same label: classification needs at least 2 classes (give num_labels, or use "
               "regression for real-valued labels)");
  ds.label_counts.assign(size_t(ds.num_labels), 0);
  for (auto& s : ds.samples) ds.label_counts[size_t(s.label)]++;
  return ds;
}

ClassificationDataset load_classification_dataset(const std::string& path, const EncodeFn& encode,
                                                  const TokenIds& ids, const ClassificationOptions& opt) {
  return parse_classification_jsonl(read_file(path), path, encode, ids, opt);
}

PreferenceDataset parse_preference_jsonl(std::string_view content, std::string_view name, const EncodeFn& encode,
                                         const TokenIds& ids, const PreferenceOptions& opt) {
  if (opt.max_length < 1) fail("max_length must be at least 1 (got ", opt.max_length, ")");
  if (opt.append_eos && ids.eos < 0)
    fail("append_eos is on but the tokenizer has no EOS token: turn it off or use a tokenizer with an eos_token");
  PreferenceDataset ds;
  ds.source = std::string(name);
  for_each_row(content, name, kPrefShape, [&](const json& row, int64_t line) {
    for (const char* f : {"chosen", "rejected"})
      if (!row.contains(f) || row[f].is_null())
        fail(name, ":", line, ": row has no \"", f, "\" field (expected ", kPrefShape, ")");
    PreferenceSample s;
    s.line = line;
    std::vector<int32_t> prompt;
    bool has_prompt = row.contains("prompt") && !row["prompt"].is_null();
    if (has_prompt) prompt = encode(string_field(row, "prompt", name, line, kPrefShape), opt.add_special_tokens);
    if (auto m = row.find("margin"); m != row.end() && !m->is_null()) {
      if (!m->is_number()) fail(name, ":", line, ": field \"margin\" must be a number, got ", m->dump());
      s.margin = m->get<float>();
      ds.has_margin = true;
    }
    bool too_long = false;
    for (auto [field, out] : {std::pair{"chosen", &s.chosen}, std::pair{"rejected", &s.rejected}}) {
      *out = prompt;
      std::vector<int32_t> resp = encode(string_field(row, field, name, line, kPrefShape), !has_prompt && opt.add_special_tokens);
      out->insert(out->end(), resp.begin(), resp.end());
      if (opt.append_eos && (out->empty() || out->back() != ids.eos)) out->push_back(ids.eos);
      if (out->empty()) fail(name, ":", line, ": \"", field, "\" tokenises to no tokens");
      if (int64_t(out->size()) > opt.max_length) too_long = true;
    }
    if (too_long && opt.drop_too_long) {
      ds.num_dropped++;
      return;
    }
    if (too_long) {
      ds.num_truncated++;
      for (auto* v : {&s.chosen, &s.rejected})
        if (int64_t(v->size()) > opt.max_length) v->resize(size_t(opt.max_length));
    }
    ds.samples.push_back(std::move(s));
  });
  if (ds.samples.empty())
    fail(name, ": every pair is longer than max_length ", opt.max_length, " and was dropped: raise max_length");
  return ds;
}

PreferenceDataset load_preference_dataset(const std::string& path, const EncodeFn& encode, const TokenIds& ids,
                                          const PreferenceOptions& opt) {
  return parse_preference_jsonl(read_file(path), path, encode, ids, opt);
}

}  // namespace llmtune
