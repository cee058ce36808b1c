// Text <-> token ids for the models llmtune trains: HF tokenizer.json (byte-level BPE and
// SentencePiece-style BPE), SentencePiece .model files (via libsentencepiece), and GPT-2 encoder.json + vocab.bpe.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmtune {

struct TokenizerImpl;
struct TokenizerFactory;

struct Tokenizer {
  // Loads from a model folder: tokenizer.json (preferred) or tokenizer.model (SentencePiece), plus
  // tokenizer_config.json / special_tokens_map.json / config.json for bos/eos/pad and add_bos_token/add_eos_token.
  static Tokenizer load(const std::string& dir);
  static Tokenizer from_tokenizer_json(const std::string& path);
  static Tokenizer from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe);
  static Tokenizer from_sentencepiece(const std::string& model_path);

  // Special/added tokens written in the text are matched and become their ids (HF behaviour).
  // add_special_tokens: apply the post-processor (e.g. BOS for Llama; nothing for GPT-2/NeoX).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Invalid UTF-8 in the decoded bytes becomes U+FFFD, as HF does.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  std::string token_text(int32_t id) const;  // raw vocab string ("Ġhello", "▁the", "<0x0A>")
  int32_t token_id(std::string_view token_text) const;  // -1 if not in the vocab
  int64_t vocab_size() const;  // model vocab plus added tokens (HF len(tokenizer))
  bool is_special(int32_t id) const;

  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  const std::string& chat_template() const;  // from tokenizer_config.json; empty if none
  const std::string& source() const;  // file it was loaded from, for messages

 private:
  friend struct TokenizerFactory;
  const TokenizerImpl& state() const;  // fails on a default-constructed Tokenizer
  std::shared_ptr<TokenizerImpl> impl_;
};

}  // namespace llmtune
