// `llmtune convert --from llama2c MODEL.bin --tokenizer tok.model --output DIR`: imports a foreign
// checkpoint (today: llama2.c fp32 exports) into a Hugging Face model folder that every command loads.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "io/llama2c.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

namespace {

std::string model_path(const ResolvedOptions& o) {
  std::optional<std::string> pos = o.positional("checkpoint");
  std::optional<std::string> opt = o.get_optional_string("model_file");
  if (pos && opt && *pos != *opt)
    fail("convert: the checkpoint is given twice ('", *pos, "' and --model_file '", *opt, "'); give it once");
  if (!pos && !opt) fail("convert: give the checkpoint to convert, e.g. `llmtune convert --from llama2c stories15M.bin ...`");
  return pos ? *pos : *opt;
}

int run(const ResolvedOptions& o) {
  const std::string from = o.get_string("from");  // choices restrict it to "llama2c"
  const std::string bin = model_path(o);
  const std::string out = o.get_string("output");
  const std::optional<std::string> tok_path = o.get_optional_string("tokenizer");

  std::error_code ec;
  if (std::filesystem::exists(out, ec) && !o.get_bool("overwrite")) {
    if (!std::filesystem::is_directory(out, ec)) fail("convert: --output '", out, "' exists and is not a folder");
    if (!std::filesystem::is_empty(out, ec))
      fail("convert: --output folder '", out, "' is not empty; pass --overwrite to replace it");
  }

  Llama2cHeader h = read_llama2c_header(bin);
  if (tok_path) {
    // The tokenizer must not produce ids the embedding does not have.
    Tokenizer tok = Tokenizer::from_sentencepiece(*tok_path);
    if (tok.vocab_size() > h.vocab_size)
      fail(*tok_path, ": tokenizer has ", tok.vocab_size(), " tokens but ", bin, " has a vocabulary of ", h.vocab_size,
           "; is it the tokenizer this model was trained with?");
    if (tok.vocab_size() != h.vocab_size)
      std::fprintf(stderr, "warning: tokenizer has %lld tokens, the model %lld (ids past the tokenizer are unused)\n",
                   (long long)tok.vocab_size(), (long long)h.vocab_size);
  } else {
    std::fprintf(stderr, "warning: no --tokenizer given; %s will hold no tokenizer files\n", out.c_str());
  }

  convert_llama2c_to_hf(bin, tok_path.value_or(""), out);
  std::printf("converted %s (llama2.c v%d: %s) from %s to %s\n", bin.c_str(), h.version, h.describe().c_str(),
              from.c_str(), out.c_str());
  return 0;
}

}  // namespace

Command convert_command() {
  CommandSpec s;
  s.name = "convert";
  s.summary = "Import a llama2.c checkpoint into a Hugging Face Llama folder";
  s.add_positional("checkpoint", "checkpoint file to convert (or --model_file)", false);
  OptionSpec& from = s.add_string("from", std::nullopt, "format of the checkpoint");
  from.choices = {"llama2c"};
  from.required = true;
  s.add_string("model_file", std::nullopt, "checkpoint file to convert (instead of the positional argument)");
  s.add_string("tokenizer", std::nullopt, "SentencePiece tokenizer.model of the checkpoint (copied into the folder)");
  s.add_string("output", std::nullopt, "Hugging Face model folder to write").required = true;
  s.add_bool("overwrite", false, "replace --output if it already holds files");
  return {s, run};
}

}  // namespace llmtune::cli
