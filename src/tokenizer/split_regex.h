// Hand-written matchers for the pre-tokenizer split regexes of GPT-2 and Llama-3/Qwen2 (std::regex cannot do
// \p{L}/\p{N}); each behaves like the backtracking regex's find-all (leftmost match, first alternative wins).
#pragma once
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace llmtune {

enum class SplitPattern {
  Gpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Llama3,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Qwen2,   // as Llama3 with \p{N} (one digit at a time)
};

// Recognizes one of the known patterns written as in a tokenizer.json (exact text), else nullopt.
std::optional<SplitPattern> recognize_split_pattern(std::string_view regex);
// The GPT-2 pattern text (as written in tokenizer.json files that spell it out in a Split).
extern const char* const kGpt2SplitRegex;

// Byte spans [begin, end) of all non-overlapping matches, left to right.
std::vector<std::pair<size_t, size_t>> split_regex_matches(SplitPattern pattern, std::string_view text);

}  // namespace llmtune
