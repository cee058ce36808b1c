// Shared by the commands that load a model (+ optional adapter) and its tokenizer.
#pragma once
#include <string>

#include "cli/options.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace llmtune::cli {

struct LoadedModel {
  Model model;
  Tokenizer tokenizer;
};

// Adds --model (required), --adapter, --num_threads.
void add_model_options(CommandSpec& s);
// Loads --model's weights and tokenizer (and --adapter when given); sets the thread count.
LoadedModel load_for_cli(const ResolvedOptions& o);

// Copies the tokenizer files (and generation_config.json, which a causal LM's folder carries) that
// exist in the model folder `from` into a saved model folder `to`, so it is a complete HF model.
void copy_tokenizer_files(const std::string& from, const std::string& to, bool generation_config = true);

}  // namespace llmtune::cli
