// Model + tokenizer loading for the CLI commands.
#include "cli/model_loading.h"

#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/threads.h"
#include "peft/adapter_io.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

void add_model_options(CommandSpec& s) {
  s.add_string("model", std::nullopt, "Hugging Face model folder (config.json, *.safetensors, tokenizer)").required =
      true;
  s.add_string("adapter", std::nullopt, "LoRA adapter folder (PEFT format) to apply on top of the model");
  s.add_int("num_threads", 0, "threads for the kernels (0 = all cores)").min = 0;
}

LoadedModel load_for_cli(const ResolvedOptions& o) {
  set_num_threads(int(o.get_int("num_threads")));
  const std::string dir = o.get_string("model");
  LoadedModel lm{load_model(dir), Tokenizer::load(dir)};
  if (o.has("adapter")) {
    std::vector<std::string> warnings;
    load_adapter(lm.model, o.get_string("adapter"), false, &warnings);
    for (auto& w : warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  }
  return lm;
}

void copy_tokenizer_files(const std::string& from, const std::string& to, bool generation_config) {
  for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    if (!generation_config && std::string(f) == "generation_config.json") continue;
    const fs::path src = fs::path(from) / f;
    if (fs::exists(src)) fs::copy_file(src, fs::path(to) / f, fs::copy_options::overwrite_existing);
  }
}

}  // namespace llmtune::cli
