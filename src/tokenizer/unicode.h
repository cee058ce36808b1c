// Unicode helpers for the tokenizers: UTF-8 decode/encode (lossy, HF-compatible), the code-point classes
// the pre-tokenizer regexes need (\p{L}, \p{N}, \s), and NFC normalization.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmtune {

struct CodeRange { uint32_t lo, hi; };
struct CombiningRange { uint32_t lo, hi; uint8_t ccc; };
struct Decomposition { uint32_t cp, first, second; };  // second == 0: singleton
struct Composition { uint32_t first, second, composite; };

namespace unicode_tables {
extern const char* const kUnicodeVersion;
extern const CodeRange kLetterRanges[];
extern const size_t kLetterRangesCount;
extern const CodeRange kNumberRanges[];
extern const size_t kNumberRangesCount;
extern const CodeRange kSpaceRanges[];
extern const size_t kSpaceRangesCount;
extern const CombiningRange kCombiningRanges[];
extern const size_t kCombiningRangesCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionsCount;
extern const Composition kCompositions[];
extern const size_t kCompositionsCount;
}  // namespace unicode_tables

bool is_letter(uint32_t cp);      // general category L*
bool is_number(uint32_t cp);      // general category N*
bool is_whitespace(uint32_t cp);  // regex \s (White_Space)

// Decodes UTF-8 into code points; each invalid sequence (maximal subpart) becomes U+FFFD.
// byte_offsets (optional) receives the start byte of each code point plus a final entry = text size.
std::vector<uint32_t> utf8_decode(std::string_view text, std::vector<size_t>* byte_offsets = nullptr);
void utf8_append(std::string& out, uint32_t cp);
std::string utf8_encode(const std::vector<uint32_t>& cps);
// Valid UTF-8 stays as is; invalid sequences become U+FFFD (like Rust's String::from_utf8_lossy).
std::string utf8_sanitize(std::string_view bytes);
bool utf8_is_valid(std::string_view bytes);

std::string nfc_normalize(std::string_view text);

}  // namespace llmtune
