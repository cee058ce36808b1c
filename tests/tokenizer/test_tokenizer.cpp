// Tokenizer behaviour: split regexes vs Python `regex`, NFC, special tokens and BOS, decoding, the
// SentencePiece backend vs libsentencepiece, small hand-written tokenizer.json features, and bad-input errors.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/split_regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using llmtune::Tokenizer;
using json = nlohmann::json;

namespace {

const std::string kData = std::string(LLMTUNE_TEST_DATA) + "/tokenizers/";

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> vector_inputs() {
  std::string all = read_all(kData + "llama.cpp-vocab-tests/ggml-vocab.gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t hit; (hit = all.find(sep, pos)) != std::string::npos; pos = hit + sep.size()) out.push_back(all.substr(pos, hit - pos));
  return out;
}

const Tokenizer& gpt2() {
  static const Tokenizer tok = Tokenizer::from_gpt2_files(kData + "gpt2/encoder.json", kData + "gpt2/vocab.bpe");
  return tok;
}
const Tokenizer& neox() {
  static const Tokenizer tok = Tokenizer::from_tokenizer_json(kData + "gpt-neox-20b/tokenizer.json");
  return tok;
}
const Tokenizer& tinyllama() {
  static const Tokenizer tok = Tokenizer::load(kData + "tinyllama-1.1b-chat-v1.0");
  return tok;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("llmtune_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string p = (path / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  static int& counter() { static int n = 0; return n; }
};

// Expects fn() to throw llmtune::Error whose message contains every needle.
template <typename Fn>
void expect_error(Fn fn, std::vector<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "no llmtune::Error thrown (expected: " << needles[0] << ")";
  } catch (const llmtune::Error& e) {
    for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << "\n  missing: " << n;
  }
}

// A small byte-fallback BPE tokenizer.json with <unk>, <0x..> tokens and a few merges.
json tiny_spm_json() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int next = 259;
  for (const char* t : {"\xE2\x96\x81", "a", "b", "c", "ab", "\xE2\x96\x81" "ab", "abc", "\xE2\x96\x81" "c"}) vocab[t] = next++;
  return {
      {"version", "1.0"},
      {"added_tokens",
       json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
                    {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", {{"type", "Sequence"},
                      {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                                                   {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
                                             {{"type", "ByteFallback"}},
                                             {{"type", "Fuse"}},
                                             {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"vocab", vocab},
                 {"merges", json::array({json::array({"a", "b"}), json::array({"\xE2\x96\x81", "ab"}), json::array({"ab", "c"}),
                                         json::array({"\xE2\x96\x81", "c"})})}}},
  };
}

}  // namespace

// ------------------------------------------------------------------------------------------------ split regexes

TEST(TokenizerSplitRegex, MatchesPythonRegexModule) {
  json data = json::parse(read_all(kData + "split_regex_vectors.json"));
  const auto& texts = data["texts"];
  std::vector<std::pair<std::string, llmtune::SplitPattern>> patterns = {
      {"gpt2", llmtune::SplitPattern::Gpt2}, {"llama3", llmtune::SplitPattern::Llama3}, {"qwen2", llmtune::SplitPattern::Qwen2}};
  for (const auto& [name, pattern] : patterns) {
    const auto& expected = data["splits"][name];
    ASSERT_EQ(expected.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) {
      std::string text = texts[i];
      std::vector<std::string> got;
      for (auto [b, e] : llmtune::split_regex_matches(pattern, text)) got.push_back(text.substr(b, e - b));
      EXPECT_EQ(got, expected[i].get<std::vector<std::string>>()) << name << " text #" << i << ": " << text;
    }
  }
}

TEST(TokenizerSplitRegex, RecognizesPatternsAsWrittenInTokenizerJson) {
  EXPECT_EQ(llmtune::recognize_split_pattern(llmtune::kGpt2SplitRegex), llmtune::SplitPattern::Gpt2);
  EXPECT_EQ(llmtune::recognize_split_pattern(
                R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"),
            llmtune::SplitPattern::Llama3);
  EXPECT_FALSE(llmtune::recognize_split_pattern(R"(\w+)").has_value());
}

// ------------------------------------------------------------------------------------------------ unicode

TEST(TokenizerUnicode, CategoriesAndNfc) {
  EXPECT_TRUE(llmtune::is_letter(U'é'));
  EXPECT_TRUE(llmtune::is_letter(U'中'));
  EXPECT_FALSE(llmtune::is_letter(U'🦙'));
  EXPECT_TRUE(llmtune::is_number(U'½'));
  EXPECT_TRUE(llmtune::is_number(0x0663));  // Arabic-Indic three
  EXPECT_TRUE(llmtune::is_whitespace(0x3000));
  EXPECT_TRUE(llmtune::is_whitespace(0x85));
  EXPECT_FALSE(llmtune::is_whitespace(0x200B));  // zero-width space is Cf, not \s
  EXPECT_FALSE(llmtune::is_whitespace(0x1C));    // Python's isspace() says yes; regex \s says no
  EXPECT_EQ(llmtune::nfc_normalize("e\xCC\x81"), "\xC3\xA9");                 // e + acute -> é
  EXPECT_EQ(llmtune::nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");              // Angstrom sign -> Å
  EXPECT_EQ(llmtune::nfc_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // Hangul L V T -> 각
  EXPECT_EQ(llmtune::nfc_normalize("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");  // reorder below before above
  EXPECT_EQ(llmtune::nfc_normalize("a\xCC\xA3\xCC\x82"), "\xE1\xBA\xAD");       // a + dot below + circumflex -> ậ
  EXPECT_EQ(llmtune::nfc_normalize("\xE0\xA4\x95\xE0\xA4\xBC"), "\xE0\xA4\x95\xE0\xA4\xBC");  // excluded composite stays
  EXPECT_EQ(llmtune::utf8_sanitize("a\xC3(b\xF0\x9F\xA6"), "a\xEF\xBF\xBD(b\xEF\xBF\xBD");
}

TEST(TokenizerUnicode, NeoxAppliesNfcBeforeBpe) {
  EXPECT_EQ(neox().encode("caf\x65\xCC\x81", false), neox().encode("caf\xC3\xA9", false));
}

// ------------------------------------------------------------------------------------------------ special tokens

TEST(TokenizerSpecial, Gpt2AndNeoxEndOfText) {
  EXPECT_EQ(gpt2().encode("<|endoftext|>", false), std::vector<int32_t>{50256});
  EXPECT_EQ(gpt2().encode("Hello<|endoftext|> world", false), (std::vector<int32_t>{15496, 50256, 995}));
  EXPECT_EQ(gpt2().encode("Hello world", true), (std::vector<int32_t>{15496, 995}));  // no BOS for GPT-2
  EXPECT_EQ(gpt2().bos_id(), 50256);
  EXPECT_EQ(gpt2().eos_id(), 50256);
  EXPECT_EQ(gpt2().pad_id(), -1);
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().decode(std::vector<int32_t>{15496, 50256, 995}), "Hello<|endoftext|> world");
  EXPECT_EQ(gpt2().decode(std::vector<int32_t>{15496, 50256, 995}, true), "Hello world");
  EXPECT_EQ(neox().encode("a<|endoftext|>", false), (std::vector<int32_t>{66, 0}));
  EXPECT_EQ(neox().vocab_size(), 50277);
  EXPECT_EQ(neox().token_text(50276), "  ");
  EXPECT_TRUE(neox().is_special(0));
  EXPECT_FALSE(neox().is_special(50276));  // the multi-space added tokens are not special
  EXPECT_EQ(neox().decode(neox().encode("x    y", false), true), "x    y");
}

TEST(TokenizerSpecial, TinyLlamaBosAndSpecials) {
  const Tokenizer& tok = tinyllama();
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 2);  // pad_token "</s>" in tokenizer_config.json
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.vocab_size(), 32000);
  EXPECT_EQ(tok.encode("Hello world", true), (std::vector<int32_t>{1, 15043, 3186}));
  EXPECT_EQ(tok.encode("Hello world", false), (std::vector<int32_t>{15043, 3186}));
  // "</s>" in text is the special token, and the normalizer re-prepends "▁" to the text after it.
  std::vector<int32_t> ids = tok.encode("Hello</s>world", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{15043, 2, 3186}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 15043, 3186}), "<s> Hello world");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 15043, 3186}, true), "Hello world");
  EXPECT_FALSE(tok.chat_template().empty());
  // Byte fallback: invalid UTF-8 from a lone byte token becomes U+FFFD (one per byte, as HF ByteFallback does).
  EXPECT_EQ(tok.decode(std::vector<int32_t>{15043, 3 + 0xF0, 3 + 0x9F}), "Hello\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99}), "\xF0\x9F\xA6\x99");
}

TEST(TokenizerSpecial, SmolLmConfigIds) {
  Tokenizer tok = Tokenizer::load(kData + "smollm2-360m-instruct-modified");
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.pad_id(), 49152);
  EXPECT_EQ(tok.vocab_size(), 49153);
  EXPECT_EQ(tok.encode("<|im_start|>user\nHi<|im_end|>", true), tok.encode("<|im_start|>user\nHi<|im_end|>", false));
  EXPECT_EQ(tok.encode("<|im_start|>user", false).front(), 1);
  EXPECT_EQ(tok.decode(tok.encode("<|im_start|>user\nHi<|im_end|>", false), true), "user\nHi");
}

TEST(TokenizerDecode, ByteLevelInvalidUtf8BecomesReplacementChar) {
  // "Ã" alone is byte 0xC3, the first half of a two-byte sequence.
  int32_t lone = gpt2().token_id("\xC3\x83");
  ASSERT_GE(lone, 0);
  EXPECT_EQ(gpt2().decode(std::vector<int32_t>{lone, 15496}), "\xEF\xBF\xBDHello");
  EXPECT_THROW(gpt2().decode(std::vector<int32_t>{50257}), llmtune::Error);
}

TEST(TokenizerDecode, RoundTripsOnVectorStrings) {
  for (const std::string& text : vector_inputs()) {
    EXPECT_EQ(tinyllama().decode(tinyllama().encode(text, false)), text);
    EXPECT_EQ(tinyllama().decode(tinyllama().encode(text, true), true), text);
  }
}

// ------------------------------------------------------------------------------------------------ sentencepiece

TEST(TokenizerSentencePiece, TinyLlamaJsonAgreesWithItsSentencePieceModel) {
  // Two independent implementations of the same Llama-2 vocab: our BPE on tokenizer.json and libsentencepiece.
  Tokenizer sp = Tokenizer::from_sentencepiece(kData + "tinyllama-1.1b-chat-v1.0/tokenizer.model");
  EXPECT_EQ(sp.vocab_size(), 32000);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  std::vector<std::string> texts = vector_inputs();
  json npm = json::parse(read_all(kData + "gpt2_npm_vectors.json"));
  texts.push_back(npm["cases"][0]["text"].get<std::string>().substr(0, 4000));
  // This tokenizer.json stores piece 30081 (U+00A0 in the .model) as a plain space, so NBSP takes byte fallback
  // there (as it does in HF tokenizers with this file); leave NBSP out of the comparison.
  std::string unicode = npm["cases"][1]["text"];
  unicode.replace(unicode.find("\xC2\xA0"), 2, "~");
  texts.push_back(unicode);
  EXPECT_EQ(tinyllama().encode("\xC2\xA0", false), (std::vector<int32_t>{29871, 3 + 0xC2, 3 + 0xA0}));
  for (const std::string& text : texts) {
    if (text.empty()) continue;
    EXPECT_EQ(tinyllama().encode(text, true), sp.encode(text, true)) << text;
    std::vector<int32_t> ids = sp.encode(text, false);
    EXPECT_EQ(sp.decode(ids), tinyllama().decode(ids)) << text;
  }
}

TEST(TokenizerSentencePiece, Tok512MatchesLibraryAndLlama2cReference) {
  std::string path = kData + "stories260K/tok512.model";
  Tokenizer tok = Tokenizer::from_sentencepiece(path);
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(path).ok());
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  json ref = json::parse(read_all(kData + "stories260K/reference_greedy_200.json"));
  std::string text = ref["encode_example"]["text"];
  std::vector<int32_t> expected = ref["encode_example"]["ids_without_bos"].get<std::vector<int32_t>>();
  EXPECT_EQ(tok.encode(text, false), expected);
  std::vector<int> lib_ids;
  ASSERT_TRUE(sp.Encode(text, &lib_ids).ok());
  EXPECT_EQ(tok.encode(text, false), std::vector<int32_t>(lib_ids.begin(), lib_ids.end()));
  std::vector<int32_t> with_bos = tok.encode(text, true);
  ASSERT_EQ(with_bos.size(), expected.size() + 1);
  EXPECT_EQ(with_bos[0], 1);
  EXPECT_EQ(tok.decode(with_bos, true), text);
  EXPECT_EQ(tok.token_text(expected[0]), sp.IdToPiece(expected[0]));
  // Byte fallback inside the tiny vocab: non-ASCII text still round-trips.
  std::string unicode = "Lily saw a bird: \xF0\x9F\x90\xA6 caf\xC3\xA9!";
  std::vector<int32_t> ids = tok.encode(unicode, false);
  std::vector<int> lib;
  ASSERT_TRUE(sp.Encode(unicode, &lib).ok());
  EXPECT_EQ(ids, std::vector<int32_t>(lib.begin(), lib.end()));
  EXPECT_EQ(tok.decode(ids), unicode);
  // The greedy generation decodes to the documented llama2.c story text.
  std::vector<int32_t> generated = ref["generated_ids"].get<std::vector<int32_t>>();
  std::string decoded = tok.decode(generated, true);
  std::string expected_text = ref["generated_text"];
  EXPECT_EQ(decoded.substr(0, 60), expected_text.substr(0, 60));
}

// ------------------------------------------------------------------------------------------------ small tokenizer.json

TEST(TokenizerJson, ByteFallbackUnkAndTemplate) {
  TempDir dir;
  Tokenizer tok = Tokenizer::from_tokenizer_json(dir.write("tokenizer.json", tiny_spm_json().dump()));
  int32_t sp_ab = tok.token_id("\xE2\x96\x81" "ab"), abc = tok.token_id("abc"), c = tok.token_id("c");
  // "ab c": ▁ab ▁c ; "abc" after ▁ab: ▁ab + c (ab+c has a higher rank than ▁+ab).
  EXPECT_EQ(tok.encode("ab c", false), (std::vector<int32_t>{sp_ab, tok.token_id("\xE2\x96\x81" "c")}));
  EXPECT_EQ(tok.encode("abc", true), (std::vector<int32_t>{1, sp_ab, c}));
  EXPECT_GE(abc, 0);
  // 'é' is not in the vocab: byte fallback gives <0xC3><0xA9>.
  EXPECT_EQ(tok.encode("\xC3\xA9", false), (std::vector<int32_t>{tok.token_id("\xE2\x96\x81"), 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok.decode(tok.encode("ab \xC3\xA9", true), true), "ab \xC3\xA9");
  // Without byte fallback, unknown chars become <unk>, fused when consecutive.
  json j = tiny_spm_json();
  j["model"]["byte_fallback"] = false;
  Tokenizer unk = Tokenizer::from_tokenizer_json(dir.write("unk.json", j.dump()));
  EXPECT_EQ(unk.encode("a\xC3\xA9\xC3\xA8" "b", false), (std::vector<int32_t>{tok.token_id("\xE2\x96\x81"), tok.token_id("a"), 0, tok.token_id("b")}));
  j["model"]["fuse_unk"] = false;
  Tokenizer unfused = Tokenizer::from_tokenizer_json(dir.write("unfused.json", j.dump()));
  EXPECT_EQ(unfused.encode("\xC3\xA9\xC3\xA8", false), (std::vector<int32_t>{tok.token_id("\xE2\x96\x81"), 0, 0}));
}

TEST(TokenizerJson, LegacyMetaspaceAndIgnoreMerges) {
  TempDir dir;
  json j = tiny_spm_json();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"add_prefix_space", true}};
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"add_prefix_space", true}};
  Tokenizer meta = Tokenizer::from_tokenizer_json(dir.write("meta.json", j.dump()));
  Tokenizer prepend = Tokenizer::from_tokenizer_json(dir.write("prepend.json", tiny_spm_json().dump()));
  for (std::string text : {"ab c", "abc ab", "c  ab"}) {
    EXPECT_EQ(meta.encode(text, false), prepend.encode(text, false)) << text;
    EXPECT_EQ(meta.decode(meta.encode(text, false)), text);
  }
  // ignore_merges: a word that is itself in the vocab is emitted whole even if merges would not build it.
  json k = tiny_spm_json();
  k["model"]["merges"] = json::array();
  Tokenizer no_merges = Tokenizer::from_tokenizer_json(dir.write("nm.json", k.dump()));
  k["model"]["ignore_merges"] = true;
  k["normalizer"] = nullptr;
  Tokenizer ignore = Tokenizer::from_tokenizer_json(dir.write("ig.json", k.dump()));
  EXPECT_EQ(ignore.encode("abc", false), std::vector<int32_t>{ignore.token_id("abc")});
  EXPECT_EQ(no_merges.encode("abc", false).size(), 4u);  // ▁ a b c
}

TEST(TokenizerJson, AddedTokenOptions) {
  TempDir dir;
  json j = tiny_spm_json();
  j["normalizer"] = nullptr;
  j["model"]["vocab"]["<x>"] = 300;
  j["model"]["vocab"]["<w>"] = 301;
  j["added_tokens"].push_back({{"id", 300}, {"content", "<x>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}, {"normalized", false}});
  j["added_tokens"].push_back({{"id", 301}, {"content", "<w>"}, {"special", false}, {"single_word", true}, {"normalized", false}});
  Tokenizer tok = Tokenizer::from_tokenizer_json(dir.write("t.json", j.dump()));
  int32_t a = tok.token_id("a"), b = tok.token_id("b");
  EXPECT_EQ(tok.encode("a  <x>  b", false), (std::vector<int32_t>{a, 300, b}));  // spaces swallowed
  int32_t space = 3 + ' ';  // no normalizer here: a space falls back to <0x20>
  EXPECT_EQ(tok.encode("a <w> b", false), (std::vector<int32_t>{a, space, 301, space, b}));
  std::vector<int32_t> glued = tok.encode("a<w>b", false);  // not a single word: no match
  EXPECT_EQ(std::count(glued.begin(), glued.end(), 301), 0);
}

TEST(TokenizerJson, SplitBehavioursAndDigits) {
  TempDir dir;
  json j = tiny_spm_json();
  j["normalizer"] = nullptr;
  j["model"]["vocab"]["1"] = 302;
  j["model"]["vocab"]["2"] = 303;
  j["model"]["vocab"]["12"] = 304;
  j["model"]["merges"].push_back(json::array({"1", "2"}));
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"String", "c"}}}, {"behavior", "Removed"}, {"invert", false}},
                                                       {{"type", "Digits"}, {"individual_digits", true}}})}};
  Tokenizer tok = Tokenizer::from_tokenizer_json(dir.write("t.json", j.dump()));
  EXPECT_EQ(tok.encode("abcab12", false), (std::vector<int32_t>{tok.token_id("ab"), tok.token_id("ab"), 302, 303}));
  j["pre_tokenizer"]["pretokenizers"][1]["individual_digits"] = false;
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious";
  Tokenizer tok2 = Tokenizer::from_tokenizer_json(dir.write("t2.json", j.dump()));
  EXPECT_EQ(tok2.encode("abcab12", false), (std::vector<int32_t>{tok.token_id("abc"), tok.token_id("ab"), 304}));
}

// ------------------------------------------------------------------------------------------------ bad input

TEST(TokenizerErrors, BadTokenizerJsonNamesFileAndProblem) {
  TempDir dir;
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("a.json", "{not json")); }, {"a.json", "not valid JSON"});
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("b.json", R"({"version": "1.0"})")); }, {"b.json", "'model'"});
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("c.json", R"({"model": {"type": "WordPiece", "vocab": {}}})")); },
               {"c.json", "WordPiece", "not supported"});
  json j = tiny_spm_json();
  j["model"]["merges"].push_back(json::array({"a", "zz"}));
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("d.json", j.dump())); }, {"d.json", "merges[4]", "'zz'", "not in the vocab"});
  j = tiny_spm_json();
  j["model"]["merges"].push_back("b c");  // "bc" is not in the vocab
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("e.json", j.dump())); }, {"e.json", "merges[4]", "'bc'"});
  j = tiny_spm_json();
  j["model"]["vocab"] = json::array();
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("f.json", j.dump())); }, {"f.json", "model.vocab"});
  j = tiny_spm_json();
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("g.json", j.dump())); }, {"g.json", "BertPreTokenizer"});
  j = tiny_spm_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}};
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("h.json", j.dump())); }, {"h.json", "Split regex"});
  j = tiny_spm_json();
  j["model"]["unk_token"] = "<nope>";
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("i.json", j.dump())); }, {"i.json", "unk_token"});
  j = tiny_spm_json();
  j["added_tokens"].push_back({{"content", "<y>"}});
  expect_error([&] { Tokenizer::from_tokenizer_json(dir.write("j.json", j.dump())); }, {"j.json", "added_tokens[3]"});
  expect_error([&] { Tokenizer::from_tokenizer_json((dir.path / "missing.json").string()); }, {"missing.json", "cannot open"});
  expect_error([&] { Tokenizer::from_sentencepiece(dir.write("bad.model", "garbage")); }, {"bad.model"});
  expect_error([&] { Tokenizer::from_gpt2_files(kData + "gpt2/encoder.json", dir.write("vocab.bpe", "#version: 0.2\nĠ t\nfoo\n")); },
               {"vocab.bpe", "line 3"});
  expect_error([&] { Tokenizer::load(dir.path.string()); }, {dir.path.string(), "tokenizer.json"});
}

// ------------------------------------------------------------------------------------------------ speed

TEST(TokenizerSpeed, LongWordsAreNotQuadratic) {
  // Llama-2 treats a whole line as one BPE word; 100 KB without spaces must still be quick, and equal libsentencepiece.
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "ab\xC3\xA9z";
  Tokenizer sp = Tokenizer::from_sentencepiece(kData + "tinyllama-1.1b-chat-v1.0/tokenizer.model");
  auto start = std::chrono::steady_clock::now();
  std::vector<int32_t> ids = tinyllama().encode(text, false);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 2.0);
  EXPECT_EQ(ids, sp.encode(text, false));
  EXPECT_EQ(tinyllama().decode(ids), text);
}
