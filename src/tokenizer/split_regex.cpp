// Hand-written equivalents of the GPT-2 / Llama-3 / Qwen2 split regexes, working on code points.
// Each function returns the end of the match starting at i (or i when no alternative matches there).
#include "tokenizer/split_regex.h"

#include "tokenizer/unicode.h"

namespace llmtune {

const char* const kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
namespace {
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_other(uint32_t c) { return !is_whitespace(c) && !is_letter(c) && !is_number(c); }
bool is_newline(uint32_t c) { return c == '\r' || c == '\n'; }
uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, 0 if none.
size_t contraction(const std::vector<uint32_t>& t, size_t i, bool ignore_case) {
  if (t[i] != '\'' || i + 1 >= t.size()) return 0;
  auto at = [&](size_t k) -> uint32_t {
    if (k >= t.size()) return 0;
    return ignore_case ? lower_ascii(t[k]) : t[k];
  };
  uint32_t a = at(i + 1), b = at(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

template <typename Pred>
size_t run(const std::vector<uint32_t>& t, size_t i, Pred pred) {
  while (i < t.size() && pred(t[i])) ++i;
  return i;
}

// \s+(?!\S) then \s+ : a whitespace run, leaving its last char when a non-space follows (unless it is the only one).
size_t whitespace_tail(const std::vector<uint32_t>& t, size_t i) {
  size_t j = run(t, i, is_whitespace);
  if (j == t.size() || j - i == 1) return j;
  return j - 1;
}

size_t match_gpt2(const std::vector<uint32_t>& t, size_t i) {
  if (size_t n = contraction(t, i, false)) return i + n;
  size_t k = (t[i] == ' ' && i + 1 < t.size()) ? i + 1 : i;  // optional leading space
  if (is_letter(t[k])) return run(t, k, is_letter);
  if (is_number(t[k])) return run(t, k, is_number);
  if (is_other(t[k])) return run(t, k, is_other);
  if (is_whitespace(t[i])) return whitespace_tail(t, i);
  return i + 1;  // unreachable: every char is a letter, number, other or space
}

size_t match_llama3(const std::vector<uint32_t>& t, size_t i, size_t max_digits) {
  if (size_t n = contraction(t, i, true)) return i + n;
  uint32_t c = t[i];
  if (is_letter(c)) return run(t, i, is_letter);
  if (!is_newline(c) && !is_number(c) && i + 1 < t.size() && is_letter(t[i + 1])) return run(t, i + 1, is_letter);
  if (is_number(c)) {
    size_t j = i;
    while (j < t.size() && j - i < max_digits && is_number(t[j])) ++j;
    return j;
  }
  size_t k = (c == ' ' && i + 1 < t.size()) ? i + 1 : i;
  if (is_other(t[k])) return run(t, run(t, k, is_other), is_newline);
  if (is_whitespace(c)) {
    // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
    size_t j = run(t, i, is_whitespace);
    for (size_t m = j; m > i; --m)
      if (is_newline(t[m - 1])) return m;
    return whitespace_tail(t, i);
  }
  return i + 1;
}

}  // namespace

std::optional<SplitPattern> recognize_split_pattern(std::string_view regex) {
  if (regex == kGpt2SplitRegex) return SplitPattern::Gpt2;
  if (regex == kLlama3Regex) return SplitPattern::Llama3;
  if (regex == kQwen2Regex) return SplitPattern::Qwen2;
  return std::nullopt;
}

std::vector<std::pair<size_t, size_t>> split_regex_matches(SplitPattern pattern, std::string_view text) {
  std::vector<size_t> offsets;
  std::vector<uint32_t> t = utf8_decode(text, &offsets);
  std::vector<std::pair<size_t, size_t>> spans;
  size_t i = 0;
  while (i < t.size()) {
    size_t j = pattern == SplitPattern::Gpt2     ? match_gpt2(t, i)
               : pattern == SplitPattern::Llama3 ? match_llama3(t, i, 3)
                                                 : match_llama3(t, i, 1);
    if (j <= i) j = i + 1;
    spans.emplace_back(offsets[i], offsets[j]);
    i = j;
  }
  return spans;
}

}  // namespace llmtune
