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
Command report_command();
Command train_command();
Command merge_command();
Command convert_command();
Command quantize_command();
Command dpo_command();
Command grpo_command();
Command ppo_command();
Command classify_command();

}  // namespace llmtune::cli
