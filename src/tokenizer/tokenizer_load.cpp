// Loaders: tokenizer.json (validated field by field), GPT-2 encoder.json + vocab.bpe, SentencePiece .model,
// and a model folder with tokenizer_config.json / special_tokens_map.json / config.json for the special ids.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace llmtune {

using json = nlohmann::json;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
}

// Reads an optional field with a type check; a wrong type is a user error naming file and field.
template <typename T>
T get_or(const json& obj, const char* key, T fallback, const std::string& path, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(path, ": field '", where, key, "' has the wrong type (", it->type_name(), ")");
  }
}

std::string type_of(const json& obj, const std::string& path, const std::string& where) {
  if (!obj.is_object()) fail(path, ": '", where, "' must be an object");
  auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) fail(path, ": '", where, "' has no \"type\" string");
  return it->get<std::string>();
}

// Replace/Split patterns: {"String": s} or {"Regex": r}.
std::pair<bool, std::string> read_pattern(const json& obj, const std::string& path, const std::string& where) {
  auto it = obj.find("pattern");
  if (it == obj.end() || !it->is_object()) fail(path, ": '", where, ".pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  if (it->contains("String") && (*it)["String"].is_string()) return {false, (*it)["String"].get<std::string>()};
  if (it->contains("Regex") && (*it)["Regex"].is_string()) return {true, (*it)["Regex"].get<std::string>()};
  fail(path, ": '", where, ".pattern' must be {\"String\": ...} or {\"Regex\": ...}");
}

void read_normalizer(const json& n, TokenizerImpl& t, const std::string& path, const std::string& where) {
  if (n.is_null()) return;
  std::string type = type_of(n, path, where);
  if (type == "Sequence") {
    const json& list = n.value("normalizers", json::array());
    if (!list.is_array()) fail(path, ": '", where, ".normalizers' must be an array");
    for (size_t i = 0; i < list.size(); ++i) read_normalizer(list[i], t, path, where + ".normalizers[" + std::to_string(i) + "]");
  } else if (type == "NFC") {
    t.normalizers.push_back({NormalizerStep::Kind::Nfc, {}, {}});
  } else if (type == "Prepend") {
    t.normalizers.push_back({NormalizerStep::Kind::Prepend, get_or<std::string>(n, "prepend", "", path, where + "."), {}});
  } else if (type == "Replace") {
    auto [regex, text] = read_pattern(n, path, where);
    if (regex) fail(path, ": '", where, "': Replace with a Regex pattern is not supported (only {\"String\": ...})");
    t.normalizers.push_back({NormalizerStep::Kind::Replace, text, get_or<std::string>(n, "content", "", path, where + ".")});
  } else if (type == "Strip") {
    NormalizerStep s{NormalizerStep::Kind::Strip, {}, {}};
    s.strip_left = get_or<bool>(n, "strip_left", true, path, where + ".");
    s.strip_right = get_or<bool>(n, "strip_right", true, path, where + ".");
    t.normalizers.push_back(s);
  } else {
    fail(path, ": '", where, "': normalizer type '", type,
         "' is not supported (supported: NFC, Prepend, Replace, Strip, Sequence)");
  }
}

PreTokenizerStep::Prepend read_prepend_scheme(const json& p, const std::string& path, const std::string& where) {
  if (p.contains("prepend_scheme") && p["prepend_scheme"].is_string()) {
    std::string s = p["prepend_scheme"];
    if (s == "always") return PreTokenizerStep::Prepend::Always;
    if (s == "first") return PreTokenizerStep::Prepend::First;
    if (s == "never") return PreTokenizerStep::Prepend::Never;
    fail(path, ": '", where, ".prepend_scheme' must be always, first or never (got '", s, "')");
  }
  return get_or<bool>(p, "add_prefix_space", true, path, where + ".") ? PreTokenizerStep::Prepend::Always
                                                                       : PreTokenizerStep::Prepend::Never;
}

void read_pre_tokenizer(const json& p, TokenizerImpl& t, const std::string& path, const std::string& where) {
  if (p.is_null()) return;
  std::string type = type_of(p, path, where);
  PreTokenizerStep step{};
  if (type == "Sequence") {
    const json& list = p.value("pretokenizers", json::array());
    if (!list.is_array()) fail(path, ": '", where, ".pretokenizers' must be an array");
    for (size_t i = 0; i < list.size(); ++i)
      read_pre_tokenizer(list[i], t, path, where + ".pretokenizers[" + std::to_string(i) + "]");
    return;
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::ByteLevel;
    step.add_prefix_space = get_or<bool>(p, "add_prefix_space", false, path, where + ".");
    step.use_regex = get_or<bool>(p, "use_regex", true, path, where + ".");
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::Split;
    auto [regex, text] = read_pattern(p, path, where);
    if (regex) {
      auto known = recognize_split_pattern(text);
      if (!known) fail(path, ": '", where, ".pattern': this Split regex is not supported (only the GPT-2, Llama-3 and Qwen2 patterns are): ", text);
      step.regex = true;
      step.pattern = *known;
    } else {
      step.literal = text;
    }
    std::string behavior = get_or<std::string>(p, "behavior", "Isolated", path, where + ".");
    if (behavior == "Isolated") step.behavior = SplitBehavior::Isolated;
    else if (behavior == "Removed") step.behavior = SplitBehavior::Removed;
    else if (behavior == "MergedWithPrevious") step.behavior = SplitBehavior::MergedWithPrevious;
    else if (behavior == "MergedWithNext") step.behavior = SplitBehavior::MergedWithNext;
    else if (behavior == "Contiguous") step.behavior = SplitBehavior::Contiguous;
    else fail(path, ": '", where, ".behavior' is unknown: '", behavior, "'");
    step.invert = get_or<bool>(p, "invert", false, path, where + ".");
  } else if (type == "Digits") {
    step.kind = PreTokenizerStep::Kind::Digits;
    step.individual_digits = get_or<bool>(p, "individual_digits", false, path, where + ".");
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::Metaspace;
    step.literal = get_or<std::string>(p, "replacement", "\xE2\x96\x81", path, where + ".");
    step.prepend = read_prepend_scheme(p, path, where);
    step.split = get_or<bool>(p, "split", true, path, where + ".");
  } else {
    fail(path, ": '", where, "': pre-tokenizer type '", type,
         "' is not supported (supported: ByteLevel, Split, Digits, Metaspace, Sequence)");
  }
  t.pre_tokenizers.push_back(step);
}

void read_decoder(const json& d, TokenizerImpl& t, const std::string& path, const std::string& where) {
  if (d.is_null()) return;
  t.has_decoder = true;
  std::string type = type_of(d, path, where);
  DecoderStep step{};
  if (type == "Sequence") {
    const json& list = d.value("decoders", json::array());
    if (!list.is_array()) fail(path, ": '", where, ".decoders' must be an array");
    for (size_t i = 0; i < list.size(); ++i) read_decoder(list[i], t, path, where + ".decoders[" + std::to_string(i) + "]");
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::ByteLevel;
  } else if (type == "Replace") {
    auto [regex, text] = read_pattern(d, path, where);
    if (regex) fail(path, ": '", where, "': Replace with a Regex pattern is not supported");
    step.kind = DecoderStep::Kind::Replace;
    step.text = text;
    step.replacement = get_or<std::string>(d, "content", "", path, where + ".");
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::ByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::Fuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::Strip;
    step.text = get_or<std::string>(d, "content", " ", path, where + ".");
    step.start = get_or<int>(d, "start", 0, path, where + ".");
    step.stop = get_or<int>(d, "stop", 0, path, where + ".");
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::Metaspace;
    step.text = get_or<std::string>(d, "replacement", "\xE2\x96\x81", path, where + ".");
    step.prepend = read_prepend_scheme(d, path, where) != PreTokenizerStep::Prepend::Never;
  } else {
    fail(path, ": '", where, "': decoder type '", type,
         "' is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)");
  }
  t.decoders.push_back(step);
}

int32_t special_token_id(const json& special_tokens, const std::string& name, const std::string& path, const std::string& where) {
  auto it = special_tokens.find(name);
  if (it == special_tokens.end()) fail(path, ": '", where, "' names special token '", name, "', which is not in special_tokens");
  const json& ids = it->value("ids", json::array());
  if (!ids.is_array() || ids.size() != 1 || !ids[0].is_number_integer())
    fail(path, ": '", where, "': special token '", name, "' must have exactly one id");
  return ids[0].get<int32_t>();
}

void read_post_processor(const json& p, TokenizerImpl& t, const std::string& path, const std::string& where) {
  if (p.is_null()) return;
  std::string type = type_of(p, path, where);
  if (type == "Sequence") {
    const json& list = p.value("processors", json::array());
    if (!list.is_array()) fail(path, ": '", where, ".processors' must be an array");
    for (size_t i = 0; i < list.size(); ++i) read_post_processor(list[i], t, path, where + ".processors[" + std::to_string(i) + "]");
  } else if (type == "ByteLevel") {
    // Only adjusts offsets.
  } else if (type == "TemplateProcessing") {
    const json& single = p.value("single", json::array());
    const json& special_tokens = p.value("special_tokens", json::object());
    if (!single.is_array()) fail(path, ": '", where, ".single' must be an array");
    t.prefix.clear();
    t.suffix.clear();
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      std::string item = where + ".single[" + std::to_string(i) + "]";
      const json& piece = single[i];
      if (piece.contains("Sequence")) {
        seen_sequence = true;
      } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id")) {
        int32_t id = special_token_id(special_tokens, piece["SpecialToken"]["id"].get<std::string>(), path, item);
        (seen_sequence ? t.suffix : t.prefix).push_back(id);
      } else {
        fail(path, ": '", item, "' must be {\"Sequence\": ...} or {\"SpecialToken\": {\"id\": ...}}");
      }
    }
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    auto read = [&](const char* key) -> int32_t {
      const json& v = p.value(key, json());
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer()) fail(path, ": '", where, ".", key, "' must be [token, id]");
      return v[1].get<int32_t>();
    };
    t.prefix = {read("cls")};
    t.suffix = {read("sep")};
  } else {
    fail(path, ": '", where, "': post-processor type '", type,
         "' is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)");
  }
}

// Position of the separating space in a legacy "a b" merge. Some converted Llama files hold tokens that
// contain spaces ("   " = " " + " "); then the split is the one whose parts and result are all in the vocab.
size_t split_legacy_merge(const std::string& s, const BpeModel& bpe) {
  size_t first = s.find(' ');
  if (first == std::string::npos || s.find(' ', first + 1) == std::string::npos) return first;
  for (size_t pos = first; pos != std::string::npos; pos = s.find(' ', pos + 1)) {
    std::string left = s.substr(0, pos), right = s.substr(pos + 1);
    if (!left.empty() && !right.empty() && bpe.vocab.count(left) && bpe.vocab.count(right) && bpe.vocab.count(left + right))
      return pos;
  }
  return std::string::npos;
}

void read_bpe_model(const json& m, TokenizerImpl& t, const std::string& path) {
  if (!m.is_object()) fail(path, ": 'model' must be an object");
  std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>()
                     : m.contains("merges")                     ? "BPE"
                                                                : "";
  if (type != "BPE")
    fail(path, ": model type '", type.empty() ? "(missing)" : type, "' is not supported (supported: BPE)");
  BpeModel& bpe = t.bpe;
  const json& vocab = m.value("vocab", json());
  if (!vocab.is_object()) fail(path, ": 'model.vocab' must be an object {token: id}");
  int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
      fail(path, ": 'model.vocab' entry '", it.key(), "' must have a non-negative integer id");
    int32_t id = it.value().get<int32_t>();
    bpe.vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  t.id_to_token.assign(size_t(max_id + 1), std::string());
  for (const auto& [token, id] : bpe.vocab) {
    t.id_to_token[id] = token;
    t.token_to_id[token] = id;
  }
  bpe.fuse_unk = get_or<bool>(m, "fuse_unk", false, path, "model.");
  bpe.byte_fallback = get_or<bool>(m, "byte_fallback", false, path, "model.");
  bpe.ignore_merges = get_or<bool>(m, "ignore_merges", false, path, "model.");
  bpe.continuing_subword_prefix = get_or<std::string>(m, "continuing_subword_prefix", "", path, "model.");
  bpe.end_of_word_suffix = get_or<std::string>(m, "end_of_word_suffix", "", path, "model.");
  if (get_or<double>(m, "dropout", 0.0, path, "model.") != 0.0)
    fail(path, ": 'model.dropout' is set; BPE dropout is not supported (use null)");
  std::string unk = get_or<std::string>(m, "unk_token", "", path, "model.");
  if (!unk.empty()) {
    auto it = bpe.vocab.find(unk);
    if (it == bpe.vocab.end()) fail(path, ": 'model.unk_token' '", unk, "' is not in the vocab");
    bpe.unk_id = it->second;
    t.unk = it->second;
  }
  const json& merges = m.value("merges", json::array());
  if (!merges.is_array()) fail(path, ": 'model.merges' must be an array");
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& merge = merges[i];
    std::string left, right;
    if (merge.is_string()) {
      const std::string& s = merge.get_ref<const std::string&>();
      size_t space = split_legacy_merge(s, bpe);
      if (space == std::string::npos)
        fail(path, ": 'model.merges[", i, "]' = '", s, "' must be two vocab tokens separated by one space");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail(path, ": 'model.merges[", i, "]' must be \"a b\" or [\"a\", \"b\"]");
    }
    std::string error = bpe.add_merge(left, right);
    if (!error.empty()) fail(path, ": 'model.merges[", i, "]': ", error);
  }
  bpe.finish_setup();
}

void read_added_tokens(const json& list, TokenizerImpl& t, const std::string& path) {
  if (list.is_null()) return;
  if (!list.is_array()) fail(path, ": 'added_tokens' must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const json& a = list[i];
    std::string where = "added_tokens[" + std::to_string(i) + "].";
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
        !a.contains("content") || !a["content"].is_string())
      fail(path, ": '", where, "' must have an integer 'id' >= 0 and a string 'content'");
    AddedToken tok;
    tok.id = a["id"].get<int32_t>();
    tok.content = a["content"].get<std::string>();
    tok.special = get_or<bool>(a, "special", false, path, where);
    tok.lstrip = get_or<bool>(a, "lstrip", false, path, where);
    tok.rstrip = get_or<bool>(a, "rstrip", false, path, where);
    tok.single_word = get_or<bool>(a, "single_word", false, path, where);
    tok.normalized = get_or<bool>(a, "normalized", !tok.special, path, where);
    t.added.push_back(tok);
  }
}

// Well-known names, for when no config file says which tokens are BOS/EOS.
void guess_special_ids(TokenizerImpl& t) {
  auto id_of = [&](const char* name) {
    auto it = t.token_to_id.find(name);
    return it == t.token_to_id.end() ? -1 : it->second;
  };
  if (t.prefix.size() == 1) t.bos = t.prefix[0];
  for (const char* name : {"<s>", "<|begin_of_text|>", "<|endoftext|>"})
    if (t.bos < 0) t.bos = id_of(name);
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
    if (t.eos < 0) t.eos = id_of(name);
}

}  // namespace

struct TokenizerFactory {
  static Tokenizer wrap(std::shared_ptr<TokenizerImpl> impl) {
    Tokenizer tok;
    tok.impl_ = std::move(impl);
    return tok;
  }
};

namespace {
Tokenizer make(std::shared_ptr<TokenizerImpl> impl) { return TokenizerFactory::wrap(std::move(impl)); }
}  // namespace

Tokenizer Tokenizer::from_tokenizer_json(const std::string& path) {
  json root = parse_json_file(path);
  if (!root.is_object()) fail(path, ": expected a JSON object at the top level");
  if (!root.contains("model")) fail(path, ": missing field 'model' (is this a tokenizer.json?)");
  auto t = std::make_shared<TokenizerImpl>();
  t->source = path;
  read_bpe_model(root["model"], *t, path);
  read_added_tokens(root.value("added_tokens", json()), *t, path);
  read_normalizer(root.value("normalizer", json()), *t, path, "normalizer");
  read_pre_tokenizer(root.value("pre_tokenizer", json()), *t, path, "pre_tokenizer");
  read_post_processor(root.value("post_processor", json()), *t, path, "post_processor");
  read_decoder(root.value("decoder", json()), *t, path, "decoder");
  t->index_added_tokens();
  for (int32_t id : t->prefix)
    if (id < 0 || id >= int32_t(t->id_to_token.size())) fail(path, ": post_processor uses token id ", id, ", outside the vocab");
  for (int32_t id : t->suffix)
    if (id < 0 || id >= int32_t(t->id_to_token.size())) fail(path, ": post_processor uses token id ", id, ", outside the vocab");
  guess_special_ids(*t);
  return make(std::move(t));
}

Tokenizer Tokenizer::from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe) {
  json encoder = parse_json_file(encoder_json);
  if (!encoder.is_object()) fail(encoder_json, ": expected a JSON object {token: id}");
  auto t = std::make_shared<TokenizerImpl>();
  t->source = encoder_json;
  json model = {{"type", "BPE"}, {"vocab", std::move(encoder)}, {"merges", json::array()}};
  read_bpe_model(model, *t, encoder_json);
  std::istringstream lines(read_file(vocab_bpe));
  std::string line;
  size_t line_no = 0;
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
      fail(vocab_bpe, ": line ", line_no, ": expected two tokens separated by one space");
    std::string error = t->bpe.add_merge(line.substr(0, space), line.substr(space + 1));
    if (!error.empty()) fail(vocab_bpe, ": line ", line_no, ": ", error, " of ", encoder_json);
  }
  if (auto it = t->bpe.vocab.find("<|endoftext|>"); it != t->bpe.vocab.end()) {
    t->added.push_back({it->second, "<|endoftext|>", true, false, false, false, false});
    t->bos = t->eos = it->second;
  }
  PreTokenizerStep byte_level{};
  byte_level.kind = PreTokenizerStep::Kind::ByteLevel;
  t->pre_tokenizers.push_back(byte_level);
  DecoderStep byte_level_decoder{};
  byte_level_decoder.kind = DecoderStep::Kind::ByteLevel;
  t->has_decoder = true;
  t->decoders.push_back(byte_level_decoder);
  t->index_added_tokens();
  return make(std::move(t));
}

Tokenizer Tokenizer::from_sentencepiece(const std::string& model_path) {
  auto t = std::make_shared<TokenizerImpl>();
  t->source = model_path;
  t->backend = TokenizerImpl::Backend::SentencePiece;
  t->sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  std::string bytes = read_file(model_path);
  auto status = t->sp->LoadFromSerializedProto(bytes);
  if (!status.ok()) fail(model_path, ": not a SentencePiece model: ", status.ToString());
  int n = t->sp->GetPieceSize();
  t->id_to_token.resize(size_t(n));
  for (int id = 0; id < n; ++id) {
    t->id_to_token[id] = t->sp->IdToPiece(id);
    t->token_to_id[t->id_to_token[id]] = id;
    // Control symbols (<s>, </s>) are matched in the text like HF added tokens.
    if (t->sp->IsControl(id)) t->added.push_back({id, t->id_to_token[id], true, false, false, false, false});
  }
  t->index_added_tokens();
  for (int id = 0; id < n; ++id)
    if (t->sp->IsUnknown(id)) t->special[id] = 1;
  t->bos = t->sp->bos_id();
  t->eos = t->sp->eos_id();
  t->pad = t->sp->pad_id();
  t->unk = t->sp->unk_id();
  if (t->bos >= 0) t->prefix = {t->bos};  // LlamaTokenizer: add_bos_token=True, add_eos_token=False
  return make(std::move(t));
}

namespace {

// A special-token entry in tokenizer_config.json / special_tokens_map.json: "text", {"content": "text"} or null.
// Returns false when the entry is absent; id -1 when null or unknown.
bool config_token(const json& cfg, const char* key, const Tokenizer& tok, int32_t* id) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return false;
  if (it->is_null()) { *id = -1; return true; }
  std::string text;
  if (it->is_string()) text = it->get<std::string>();
  else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) text = (*it)["content"];
  else return false;
  int32_t found = tok.token_id(text);
  if (found < 0) return false;  // transformers would add it as a new token; we keep what we have
  *id = found;
  return true;
}

bool config_id(const json& cfg, const char* key, int32_t* id) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return false;
  if (it->is_number_integer()) { *id = it->get<int32_t>(); return true; }
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) { *id = (*it)[0].get<int32_t>(); return true; }
  return false;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path d(dir);
  if (!fs::is_directory(d)) fail(dir, ": not a directory (expected a model folder with tokenizer.json or tokenizer.model)");
  Tokenizer tok;
  if (fs::exists(d / "tokenizer.json")) tok = from_tokenizer_json((d / "tokenizer.json").string());
  else if (fs::exists(d / "tokenizer.model")) tok = from_sentencepiece((d / "tokenizer.model").string());
  else if (fs::exists(d / "vocab.json") && fs::exists(d / "merges.txt"))
    tok = from_gpt2_files((d / "vocab.json").string(), (d / "merges.txt").string());
  else fail(dir, ": no tokenizer.json, tokenizer.model or vocab.json + merges.txt in this folder");
  TokenizerImpl& t = *tok.impl_;

  // Lowest priority first: config.json ids, then special_tokens_map.json, then tokenizer_config.json.
  if (fs::exists(d / "config.json")) {
    json cfg = parse_json_file((d / "config.json").string());
    if (cfg.is_object()) {
      config_id(cfg, "bos_token_id", &t.bos);
      config_id(cfg, "eos_token_id", &t.eos);
      config_id(cfg, "pad_token_id", &t.pad);
    }
  }
  for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
    if (!fs::exists(d / name)) continue;
    json cfg = parse_json_file((d / name).string());
    if (!cfg.is_object()) fail((d / name).string(), ": expected a JSON object");
    config_token(cfg, "bos_token", tok, &t.bos);
    config_token(cfg, "eos_token", tok, &t.eos);
    config_token(cfg, "pad_token", tok, &t.pad);
    config_token(cfg, "unk_token", tok, &t.unk);
    if (std::string(name) == "tokenizer_config.json") {
      std::string path = (d / name).string();
      if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) t.chat_template = cfg["chat_template"];
      // transformers rebuilds the Llama post-processor from these flags.
      bool has_bos_flag = cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean();
      bool has_eos_flag = cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean();
      if (has_bos_flag || has_eos_flag) {
        bool add_bos = has_bos_flag ? cfg["add_bos_token"].get<bool>() : (!t.prefix.empty() && t.prefix[0] == t.bos);
        bool add_eos = has_eos_flag ? cfg["add_eos_token"].get<bool>() : (!t.suffix.empty() && t.suffix.back() == t.eos);
        t.prefix.clear();
        t.suffix.clear();
        if (add_bos && t.bos >= 0) t.prefix.push_back(t.bos);
        if (add_eos && t.eos >= 0) t.suffix.push_back(t.eos);
      }
    }
  }
  for (int32_t* id : {&t.bos, &t.eos, &t.pad, &t.unk})
    if (*id >= int32_t(t.id_to_token.size())) *id = -1;
  return tok;
}

}  // namespace llmtune
