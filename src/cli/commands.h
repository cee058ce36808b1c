// The llmtune subcommands: each registers its options and runs from the resolved options.
#pragma once
#include "cli/options.h"

namespace llmtune::cli {

struct Command {
  CommandSpec spec;
  int (*run)(const ResolvedOptions& opts);
};

Command tokenize_command();
Command generate_command();
Command eval_command();
Command info_command();

}  // namespace llmtune::cli
