// Shared by the commands that load a model (+ optional adapter) and its tokenizer.
#pragma once
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

}  // namespace llmtune::cli
