// `llmtune tokenize`: text → JSON array of ids, or --decode ids → text.
#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

namespace {
int run(const ResolvedOptions& o) {
  Tokenizer tok = Tokenizer::load(o.get_string("model"));
  if (o.get_bool("decode")) {
    std::string src = o.has("text") ? o.get_string("text") : read_file(o.get_string("file"));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(src);
    } catch (const nlohmann::json::parse_error& e) {
      fail("--decode expects a JSON array of token ids, e.g. [15496, 995] (", e.what(), ")");
    }
    if (!j.is_array()) fail("--decode expects a JSON array of token ids, e.g. [15496, 995]");
    std::vector<int32_t> ids;
    for (auto& v : j) {
      if (!v.is_number_integer()) fail("--decode: every element must be an integer token id, got ", v.dump());
      int64_t id = v.get<int64_t>();
      if (id < 0 || id >= tok.vocab_size())
        fail("--decode: token id ", id, " is outside the vocabulary (0..", tok.vocab_size() - 1, ")");
      ids.push_back(int32_t(id));
    }
    std::string text = tok.decode(ids, o.get_bool("skip_special_tokens"));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  if (o.has("text") == o.has("file")) fail("tokenize: give exactly one of --text or --file");
  std::string text = o.has("text") ? o.get_string("text") : read_file(o.get_string("file"));
  std::vector<int32_t> ids = tok.encode(text, o.get_bool("add_special_tokens"));
  std::string out = nlohmann::json(ids).dump();
  std::printf("%s\n", out.c_str());
  return 0;
}
}  // namespace

Command tokenize_command() {
  CommandSpec s;
  s.name = "tokenize";
  s.summary = "Encode text to token ids (JSON array), or decode ids with --decode";
  s.add_string("model", std::nullopt, "model folder holding tokenizer.json or tokenizer.model").required = true;
  s.add_string("text", std::nullopt, "text to encode (with --decode: a JSON array of ids)");
  s.add_string("file", std::nullopt, "read the text (or the ids) from this file");
  s.add_bool("add_special_tokens", false, "add BOS/EOS as the tokenizer's post-processor says");
  s.add_bool("decode", false, "decode a JSON array of ids back to text");
  s.add_bool("skip_special_tokens", false, "with --decode: drop special tokens");
  return {s, run};
}

}  // namespace llmtune::cli
