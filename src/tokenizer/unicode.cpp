// Unicode helpers: UTF-8 with lossy decoding, category lookups over generated range tables, and NFC
// (canonical decomposition, canonical ordering, canonical composition; Hangul handled algorithmically).
#include "tokenizer/unicode.h"

#include <algorithm>
#include <unordered_map>

namespace llmtune {
namespace ut = unicode_tables;

namespace {

bool in_ranges(const CodeRange* ranges, size_t count, uint32_t cp) {
  const CodeRange* end = ranges + count;
  const CodeRange* it = std::upper_bound(ranges, end, cp, [](uint32_t v, const CodeRange& r) { return v < r.lo; });
  return it != ranges && cp <= (it - 1)->hi;
}

// Length of the maximal well-formed prefix of a UTF-8 sequence starting at s[0] (Unicode 3.9 "maximal subpart"),
// or the full length when valid. Returns {length, valid}.
std::pair<size_t, bool> utf8_step(const unsigned char* s, size_t n, uint32_t* cp) {
  unsigned char c = s[0];
  if (c < 0x80) { *cp = c; return {1, true}; }
  size_t need;
  uint32_t value;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) { need = 1; value = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2; value = c & 0x0F;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3; value = c & 0x07;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return {1, false};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (k >= n) return {k, false};
    unsigned char b = s[k];
    if (b < lo || b > hi) return {k, false};
    lo = 0x80; hi = 0xBF;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return {need + 1, true};
}

uint8_t combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const CombiningRange* begin = ut::kCombiningRanges;
  const CombiningRange* end = begin + ut::kCombiningRangesCount;
  const CombiningRange* it = std::upper_bound(begin, end, cp, [](uint32_t v, const CombiningRange& r) { return v < r.lo; });
  if (it != begin && cp <= (it - 1)->hi) return (it - 1)->ccc;
  return 0;
}

const Decomposition* find_decomposition(uint32_t cp) {
  const Decomposition* begin = ut::kDecompositions;
  const Decomposition* end = begin + ut::kDecompositionsCount;
  const Decomposition* it = std::lower_bound(begin, end, cp, [](const Decomposition& d, uint32_t v) { return d.cp < v; });
  return (it != end && it->cp == cp) ? it : nullptr;
}

constexpr uint32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr uint32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr uint32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
    uint32_t index = cp - kHangulS;
    out.push_back(kHangulL + index / kHangulNCount);
    out.push_back(kHangulV + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out.push_back(kHangulT + index % kHangulTCount);
    return;
  }
  if (const Decomposition* d = find_decomposition(cp)) {
    decompose(d->first, out);
    if (d->second) decompose(d->second, out);
    return;
  }
  out.push_back(cp);
}

uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kHangulL && a < kHangulL + kHangulLCount && b >= kHangulV && b < kHangulV + kHangulVCount)
    return kHangulS + ((a - kHangulL) * kHangulVCount + (b - kHangulV)) * kHangulTCount;
  if (a >= kHangulS && a < kHangulS + kHangulSCount && (a - kHangulS) % kHangulTCount == 0 && b > kHangulT &&
      b < kHangulT + kHangulTCount)
    return a + (b - kHangulT);
  const Composition* begin = ut::kCompositions;
  const Composition* end = begin + ut::kCompositionsCount;
  const Composition* it = std::lower_bound(begin, end, std::make_pair(a, b), [](const Composition& c, std::pair<uint32_t, uint32_t> v) {
    return std::make_pair(c.first, c.second) < v;
  });
  return (it != end && it->first == a && it->second == b) ? it->composite : 0;
}

}  // namespace

bool is_letter(uint32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(ut::kLetterRanges, ut::kLetterRangesCount, cp);
}
bool is_number(uint32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(ut::kNumberRanges, ut::kNumberRangesCount, cp);
}
bool is_whitespace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return in_ranges(ut::kSpaceRanges, ut::kSpaceRangesCount, cp);
}

std::vector<uint32_t> utf8_decode(std::string_view text, std::vector<size_t>* byte_offsets) {
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  if (byte_offsets) { byte_offsets->clear(); byte_offsets->reserve(text.size() + 1); }
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    uint32_t cp = 0xFFFD;
    auto [len, valid] = utf8_step(s + i, text.size() - i, &cp);
    if (byte_offsets) byte_offsets->push_back(i);
    cps.push_back(valid ? cp : 0xFFFD);
    i += len;
  }
  if (byte_offsets) byte_offsets->push_back(text.size());
  return cps;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) utf8_append(out, cp);
  return out;
}

bool utf8_is_valid(std::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  while (i < bytes.size()) {
    if (s[i] < 0x80) { ++i; continue; }
    uint32_t cp;
    auto [len, valid] = utf8_step(s + i, bytes.size() - i, &cp);
    if (!valid) return false;
    i += len;
  }
  return true;
}

std::string utf8_sanitize(std::string_view bytes) {
  if (utf8_is_valid(bytes)) return std::string(bytes);
  return utf8_encode(utf8_decode(bytes));
}

std::string nfc_normalize(std::string_view text) {
  bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return (unsigned char)c < 0x80; });
  if (ascii) return std::string(text);
  std::vector<uint32_t> input = utf8_decode(text);
  std::vector<uint32_t> cps;
  cps.reserve(input.size() + 8);
  for (uint32_t cp : input) decompose(cp, cps);
  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition (UAX #15): a character combines with the last starter unless blocked.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  long starter = -1;
  int last_class = -1;  // class of the last character appended after the starter
  for (uint32_t cp : cps) {
    int cls = combining_class(cp);
    if (starter >= 0) {
      bool blocked = !(last_class == -1 || (last_class != 0 && last_class < cls));
      // last_class == -1: cp directly follows the starter.
      if (!blocked) {
        if (uint32_t composite = compose_pair(out[starter], cp)) {
          out[starter] = composite;
          continue;
        }
      }
    }
    if (cls == 0) {
      starter = long(out.size());
      last_class = -1;
    } else {
      last_class = cls;
    }
    out.push_back(cp);
  }
  return utf8_encode(out);
}

}  // namespace llmtune
