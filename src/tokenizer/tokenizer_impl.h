// Internal state shared by the tokenizer loaders (tokenizer.cpp, tokenizer_load.cpp): the HF pipeline
// description (added tokens, normalizers, pre-tokenizers, BPE model, decoders, post-processor) or a SentencePiece model.
#pragma once
#include <sentencepiece_processor.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/split_regex.h"

namespace llmtune {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

struct NormalizerStep {
  enum class Kind { Nfc, Prepend, Replace, Strip };
  Kind kind;
  std::string text, replacement;  // Prepend: text; Replace: text -> replacement
  bool strip_left = false, strip_right = false;
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizerStep {
  enum class Kind { ByteLevel, Split, Digits, Metaspace };
  enum class Prepend { Always, First, Never };
  Kind kind;
  bool add_prefix_space = false, use_regex = true;   // ByteLevel
  bool regex = false;                                // Split: regex pattern (else literal)
  SplitPattern pattern = SplitPattern::Gpt2;
  std::string literal;                               // Split literal / Metaspace replacement
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool individual_digits = false;                    // Digits
  Prepend prepend = Prepend::Always;                 // Metaspace
  bool split = true;                                 // Metaspace
};

struct DecoderStep {
  enum class Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace };
  Kind kind;
  std::string text, replacement;  // Replace: text -> replacement; Strip: content; Metaspace: replacement
  int start = 0, stop = 0;        // Strip
  bool prepend = true;            // Metaspace: drop the first token's leading space
};

// Added tokens grouped by first byte, longest first, for leftmost-longest matching.
struct AddedMatcher {
  std::array<std::vector<const AddedToken*>, 256> by_first_byte;
  bool empty = true;
  void build(const std::vector<const AddedToken*>& tokens);
};

struct TokenizerImpl {
  enum class Backend { Bpe, SentencePiece };
  Backend backend = Backend::Bpe;
  std::string source;

  BpeModel bpe;
  std::vector<std::string> id_to_token;  // model vocab and added tokens
  std::unordered_map<std::string, int32_t> token_to_id;
  std::vector<char> special;             // per id
  std::vector<AddedToken> added;
  AddedMatcher raw_matcher, normalized_matcher;
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  bool has_decoder = false;
  std::vector<DecoderStep> decoders;
  std::vector<int32_t> prefix, suffix;   // post-processor for one sequence

  int32_t bos = -1, eos = -1, pad = -1, unk = -1;
  std::string chat_template;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;

  void index_added_tokens();  // fills matchers, special flags, token_to_id/id_to_token for added tokens
};

// bytes_to_unicode of GPT-2: the UTF-8 text of the char each byte maps to, and the reverse.
const std::array<std::string, 256>& byte_to_unicode_table();
int byte_from_unicode(uint32_t cp);  // -1 if cp is not in the table

}  // namespace llmtune
