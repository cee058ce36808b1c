// `llmtune merge`: fold a LoRA adapter into its base model and write a plain HF model folder.
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "peft/lora.h"

namespace fs = std::filesystem;

namespace llmtune::cli {

namespace {
int run(const ResolvedOptions& o) {
  if (!o.has("adapter")) fail("merge: --adapter is required (the LoRA adapter folder to merge)");
  LoadedModel lm = load_for_cli(o);
  merge_and_unload(lm.model);
  const std::string out = o.get_string("output");
  const std::string src = o.get_string("model");
  write_dir_atomic(out, [&](const std::string& tmp) {
    save_model(lm.model, tmp);
    copy_tokenizer_files(src, tmp);
  });
  std::printf("merged %s + %s → %s\n", src.c_str(), o.get_string("adapter").c_str(), out.c_str());
  return 0;
}
}  // namespace

Command merge_command() {
  CommandSpec s;
  s.name = "merge";
  s.summary = "Merge a LoRA adapter into its base model and save a Hugging Face model folder";
  add_model_options(s);
  s.add_string("output", std::nullopt, "folder for the merged model").required = true;
  return {s, run};
}

}  // namespace llmtune::cli
