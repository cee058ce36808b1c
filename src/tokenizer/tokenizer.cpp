// Encoding and decoding: added-token extraction, normalizers, pre-tokenizers, BPE, post-processor, and the
// HF decoder chain; the SentencePiece backend delegates to libsentencepiece between special tokens.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace llmtune {

// ---------------------------------------------------------------------------------------------- tables

const std::array<std::string, 256>& byte_to_unicode_table() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      utf8_append(t[b], cp);
    }
    return t;
  }();
  return table;
}

int byte_from_unicode(uint32_t cp) {
  static const std::vector<int> reverse = [] {
    std::vector<int> r(512, -1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      r[printable ? b : 256 + n++] = b;
    }
    return r;
  }();
  return cp < reverse.size() ? reverse[cp] : -1;
}

void AddedMatcher::build(const std::vector<const AddedToken*>& tokens) {
  for (auto& list : by_first_byte) list.clear();
  empty = true;
  for (const AddedToken* t : tokens) {
    if (t->content.empty()) continue;
    by_first_byte[(unsigned char)t->content[0]].push_back(t);
    empty = false;
  }
  for (auto& list : by_first_byte)
    std::stable_sort(list.begin(), list.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
}

void TokenizerImpl::index_added_tokens() {
  std::vector<const AddedToken*> raw, normalized;
  for (const AddedToken& t : added) {
    if (t.id < 0) continue;
    if (size_t(t.id) >= id_to_token.size()) id_to_token.resize(size_t(t.id) + 1);
    id_to_token[t.id] = t.content;
    token_to_id[t.content] = t.id;
    // Special tokens are always matched on the raw text.
    (t.normalized && !t.special ? normalized : raw).push_back(&t);
  }
  raw_matcher.build(raw);
  normalized_matcher.build(normalized);
  special.assign(id_to_token.size(), 0);
  for (const AddedToken& t : added)
    if (t.id >= 0 && t.special) special[t.id] = 1;
}

// ---------------------------------------------------------------------------------------------- encode helpers

namespace {

struct Segment {
  std::string text;
  int32_t token = -1;  // an added token's id, or -1 for text
  bool at_start = false;  // begins at byte 0 of the input (Metaspace prepend_scheme "first")
};

bool is_word_char(uint32_t cp) { return cp == '_' || is_letter(cp) || is_number(cp); }

// Splits text around added tokens (leftmost-longest), honouring single_word / lstrip / rstrip.
std::vector<Segment> split_added(std::string_view text, const AddedMatcher& matcher, bool at_start) {
  std::vector<Segment> out;
  if (matcher.empty) {
    if (!text.empty()) out.push_back({std::string(text), -1, at_start});
    return out;
  }
  std::vector<size_t> offsets;
  std::vector<uint32_t> cps = utf8_decode(text, &offsets);
  auto index_of = [&](size_t byte) { return size_t(std::lower_bound(offsets.begin(), offsets.end(), byte) - offsets.begin()); };
  size_t last = 0;  // byte end of the previous match
  for (size_t c = 0; c < cps.size();) {
    size_t pos = offsets[c];
    const AddedToken* found = nullptr;
    for (const AddedToken* t : matcher.by_first_byte[(unsigned char)text[pos]]) {
      if (text.compare(pos, t->content.size(), t->content) == 0) { found = t; break; }
    }
    if (!found) { ++c; continue; }
    size_t begin_cp = c, end_cp = index_of(pos + found->content.size());
    if (found->single_word) {
      bool left_ok = begin_cp == 0 || !is_word_char(cps[begin_cp - 1]);
      bool right_ok = end_cp >= cps.size() || !is_word_char(cps[end_cp]);
      if (!left_ok || !right_ok) { ++c; continue; }
    }
    size_t last_cp = index_of(last);
    if (found->lstrip)
      while (begin_cp > last_cp && is_whitespace(cps[begin_cp - 1])) --begin_cp;
    if (found->rstrip)
      while (end_cp < cps.size() && is_whitespace(cps[end_cp])) ++end_cp;
    size_t begin = offsets[begin_cp], end = offsets[end_cp];
    if (begin > last) out.push_back({std::string(text.substr(last, begin - last)), -1, at_start && last == 0});
    out.push_back({{}, found->id, false});
    last = end;
    c = end_cp;
  }
  if (last < text.size()) out.push_back({std::string(text.substr(last)), -1, at_start && last == 0});
  return out;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  while (true) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string normalize(const std::vector<NormalizerStep>& steps, std::string text) {
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::Nfc: text = nfc_normalize(text); break;
      case NormalizerStep::Kind::Prepend:
        if (!text.empty()) text = step.text + text;
        break;
      case NormalizerStep::Kind::Replace: replace_all(text, step.text, step.replacement); break;
      case NormalizerStep::Kind::Strip: {
        std::vector<size_t> offsets;
        std::vector<uint32_t> cps = utf8_decode(text, &offsets);
        size_t b = 0, e = cps.size();
        if (step.strip_left) while (b < e && is_whitespace(cps[b])) ++b;
        if (step.strip_right) while (e > b && is_whitespace(cps[e - 1])) --e;
        text = text.substr(offsets[b], offsets[e] - offsets[b]);
        break;
      }
    }
  }
  return text;
}

struct Piece {
  std::string text;
  bool at_start;
};

// Cuts a piece at the match spans according to the Split behaviour.
void split_by_spans(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
                    bool invert, std::vector<Piece>& out) {
  struct Part { size_t b, e; bool match; };
  std::vector<Part> parts;
  size_t last = 0;
  for (auto [b, e] : matches) {
    if (b > last) parts.push_back({last, b, invert});
    if (e > b) parts.push_back({b, e, !invert});
    last = e;
  }
  if (last < piece.text.size()) parts.push_back({last, piece.text.size(), invert});
  std::vector<std::pair<size_t, size_t>> spans;
  bool attach_next = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& p = parts[i];
    switch (behavior) {
      case SplitBehavior::Isolated: spans.push_back({p.b, p.e}); break;
      case SplitBehavior::Removed:
        if (!p.match) spans.push_back({p.b, p.e});
        break;
      case SplitBehavior::MergedWithPrevious:
        if (p.match && !spans.empty()) spans.back().second = p.e;
        else spans.push_back({p.b, p.e});
        break;
      case SplitBehavior::MergedWithNext:
        if (attach_next) spans.back().second = p.e;
        else spans.push_back({p.b, p.e});
        attach_next = p.match;
        break;
      case SplitBehavior::Contiguous:
        if (p.match && i > 0 && parts[i - 1].match) spans.back().second = p.e;
        else spans.push_back({p.b, p.e});
        break;
    }
  }
  for (auto [b, e] : spans)
    if (e > b) out.push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
}

std::vector<std::pair<size_t, size_t>> literal_matches(std::string_view text, std::string_view literal) {
  std::vector<std::pair<size_t, size_t>> spans;
  if (literal.empty()) return spans;
  for (size_t pos = text.find(literal); pos != std::string_view::npos; pos = text.find(literal, pos + literal.size()))
    spans.emplace_back(pos, pos + literal.size());
  return spans;
}

std::string to_byte_level(std::string_view text) {
  const auto& table = byte_to_unicode_table();
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char b : text) out += table[b];
  return out;
}

void apply_pre_tokenizer(const PreTokenizerStep& step, const Piece& piece, std::vector<Piece>& out) {
  switch (step.kind) {
    case PreTokenizerStep::Kind::ByteLevel: {
      std::string text = piece.text;
      if (step.add_prefix_space && !text.starts_with(' ')) text = " " + text;
      if (!step.use_regex) {
        out.push_back({to_byte_level(text), piece.at_start});
        return;
      }
      bool first = true;
      for (auto [b, e] : split_regex_matches(SplitPattern::Gpt2, text)) {
        out.push_back({to_byte_level(std::string_view(text).substr(b, e - b)), piece.at_start && first});
        first = false;
      }
      return;
    }
    case PreTokenizerStep::Kind::Split: {
      auto spans = step.regex ? split_regex_matches(step.pattern, piece.text) : literal_matches(piece.text, step.literal);
      split_by_spans(piece, spans, step.behavior, step.invert, out);
      return;
    }
    case PreTokenizerStep::Kind::Digits: {
      std::vector<size_t> offsets;
      std::vector<uint32_t> cps = utf8_decode(piece.text, &offsets);
      std::vector<std::pair<size_t, size_t>> spans;
      for (size_t i = 0; i < cps.size();) {
        if (!is_number(cps[i])) { ++i; continue; }
        size_t j = i + 1;
        if (!step.individual_digits) while (j < cps.size() && is_number(cps[j])) ++j;
        spans.emplace_back(offsets[i], offsets[j]);
        i = j;
      }
      split_by_spans(piece, spans, SplitBehavior::Isolated, false, out);
      return;
    }
    case PreTokenizerStep::Kind::Metaspace: {
      std::string text = piece.text;
      replace_all(text, " ", step.literal);
      bool prepend = step.prepend == PreTokenizerStep::Prepend::Always ||
                     (step.prepend == PreTokenizerStep::Prepend::First && piece.at_start);
      if (prepend && !text.starts_with(step.literal)) text = step.literal + text;
      Piece replaced{std::move(text), piece.at_start};
      if (!step.split) {
        out.push_back(std::move(replaced));
        return;
      }
      split_by_spans(replaced, literal_matches(replaced.text, step.literal), SplitBehavior::MergedWithNext, false, out);
      return;
    }
  }
}

// ---------------------------------------------------------------------------------------------- decode helpers

bool parse_byte_token(std::string_view token, unsigned char* byte) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(token[3]), lo = hex(token[4]);
  if (hi < 0 || lo < 0) return false;
  *byte = (unsigned char)(hi * 16 + lo);
  return true;
}

std::vector<std::string> apply_decoder(const DecoderStep& step, std::vector<std::string> tokens) {
  switch (step.kind) {
    case DecoderStep::Kind::ByteLevel: {
      std::string bytes;
      for (const std::string& t : tokens) {
        std::string mapped;
        bool all = true;
        for (uint32_t cp : utf8_decode(t)) {
          int b = byte_from_unicode(cp);
          if (b < 0) { all = false; break; }
          mapped += char(b);
        }
        bytes += all ? mapped : t;
      }
      return {utf8_sanitize(bytes)};
    }
    case DecoderStep::Kind::Replace:
      for (std::string& t : tokens) replace_all(t, step.text, step.replacement);
      return tokens;
    case DecoderStep::Kind::ByteFallback: {
      std::vector<std::string> out;
      std::string pending;
      auto flush = [&] {
        if (pending.empty()) return;
        if (utf8_is_valid(pending)) out.push_back(pending);
        else for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
        pending.clear();
      };
      for (std::string& t : tokens) {
        unsigned char b;
        if (parse_byte_token(t, &b)) { pending += char(b); continue; }
        flush();
        out.push_back(std::move(t));
      }
      flush();
      return out;
    }
    case DecoderStep::Kind::Fuse: {
      std::string all;
      for (const std::string& t : tokens) all += t;
      return {all};
    }
    case DecoderStep::Kind::Strip:
      for (std::string& t : tokens) {
        for (int i = 0; i < step.start && t.starts_with(step.text); ++i) t.erase(0, step.text.size());
        for (int i = 0; i < step.stop && t.ends_with(step.text); ++i) t.erase(t.size() - step.text.size());
      }
      return tokens;
    case DecoderStep::Kind::Metaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        replace_all(tokens[i], step.text, " ");
        if (i == 0 && step.prepend && tokens[i].starts_with(' ')) tokens[i].erase(0, 1);
      }
      return tokens;
  }
  return tokens;
}

}  // namespace

// ---------------------------------------------------------------------------------------------- Tokenizer

const TokenizerImpl& Tokenizer::state() const {
  if (!impl_) fail("Tokenizer: used before loading (create it with Tokenizer::load or a from_* function)");
  return *impl_;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const TokenizerImpl& t = state();
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = t.prefix;
  if (t.backend == TokenizerImpl::Backend::SentencePiece) {
    for (const Segment& seg : split_added(text, t.raw_matcher, true)) {
      if (seg.token >= 0) { ids.push_back(seg.token); continue; }
      std::vector<int> piece_ids;
      auto status = t.sp->Encode(seg.text, &piece_ids);
      if (!status.ok()) fail(t.source, ": sentencepiece could not encode the text: ", status.ToString());
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
    }
  } else {
    std::vector<Piece> pieces, next;
    for (const Segment& seg : split_added(text, t.raw_matcher, true)) {
      if (seg.token >= 0) { ids.push_back(seg.token); continue; }
      std::string normalized = normalize(t.normalizers, seg.text);
      for (const Segment& sub : split_added(normalized, t.normalized_matcher, seg.at_start)) {
        if (sub.token >= 0) { ids.push_back(sub.token); continue; }
        pieces.assign(1, Piece{sub.text, sub.at_start});
        for (const PreTokenizerStep& step : t.pre_tokenizers) {
          next.clear();
          for (const Piece& p : pieces) apply_pre_tokenizer(step, p, next);
          pieces.swap(next);
        }
        for (const Piece& p : pieces) t.bpe.encode_word(p.text, ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), t.suffix.begin(), t.suffix.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const TokenizerImpl& t = state();
  for (int32_t id : ids)
    if (id < 0 || id >= int32_t(t.id_to_token.size()))
      fail(t.source, ": cannot decode token id ", id, " (vocab size ", t.id_to_token.size(), ")");
  if (t.backend == TokenizerImpl::Backend::SentencePiece) {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      std::string piece;
      auto status = t.sp->Decode(run, &piece);
      if (!status.ok()) fail(t.source, ": sentencepiece could not decode: ", status.ToString());
      out += piece;
      run.clear();
    };
    for (int32_t id : ids) {
      if (t.special[id]) {
        flush();
        if (!skip_special_tokens) out += t.id_to_token[id];
      } else {
        run.push_back(id);
      }
    }
    flush();
    return utf8_sanitize(out);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids)
    if (!(skip_special_tokens && t.special[id])) tokens.push_back(t.id_to_token[id]);
  if (!t.has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return utf8_sanitize(out);
  }
  for (const DecoderStep& step : t.decoders) tokens = apply_decoder(step, std::move(tokens));
  std::string out;
  for (const std::string& s : tokens) out += s;
  return utf8_sanitize(out);
}

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= int32_t(state().id_to_token.size())) fail(state().source, ": token id ", id, " is out of range");
  return state().id_to_token[id];
}

int32_t Tokenizer::token_id(std::string_view token_text) const {
  auto it = state().token_to_id.find(std::string(token_text));
  return it == state().token_to_id.end() ? -1 : it->second;
}

int64_t Tokenizer::vocab_size() const { return int64_t(state().id_to_token.size()); }
bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < int32_t(state().special.size()) && state().special[id];
}
int32_t Tokenizer::bos_id() const { return state().bos; }
int32_t Tokenizer::eos_id() const { return state().eos; }
int32_t Tokenizer::pad_id() const { return state().pad; }
int32_t Tokenizer::unk_id() const { return state().unk; }
const std::string& Tokenizer::chat_template() const { return state().chat_template; }
const std::string& Tokenizer::source() const { return state().source; }

}  // namespace llmtune
